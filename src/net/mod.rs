//! The one live-Redis layer: everything that talks to a server goes through here.
//!
//! - [`url`]: `redis://` / `rediss://` URLs, the password rule, redaction;
//! - `stream` and [`tls`]: the transport, TCP or TLS (rustls);
//! - [`conn`]: [`Conn`], one connection: AUTH, commands and pipelines, replies parsed once
//!   with a size cap, a deadline on every read and write ([`NetOptions`]);
//! - [`info`]: what a server says about itself (version, INFO, keyspace, limits);
//! - [`cluster`]: Redis Cluster topology (`CLUSTER SLOTS`, `CLUSTER SHARDS`) and `MOVED` / `ASK`;
//! - [`error`]: [`NetError`], typed, so callers decide by kind, never by message text.
//!
//! Where it sits: above the formats (`resp/`), beside `input/` and `transform/`; the
//! replication protocol (`repl/`), the sinks, `verify/` and the jobs use it, and none of them
//! opens a socket to a server itself.

pub mod cluster;
pub mod conn;
pub mod error;
pub mod info;
mod stream;
pub mod tls;
pub mod url;

pub use conn::{Conn, NetOptions, Pipe};
pub use error::{NetError, NetErrorKind};
pub use info::{ServerInfo, Version};
pub use stream::Stream;
pub use tls::{TlsConfig, TlsOptions};
pub use url::RedisUrl;
