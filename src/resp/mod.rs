//! RESP, the Redis serialization protocol: parsing commands and replies, writing commands.
//!
//! Shared by sources and sinks. AOF files and the replication stream are sequences of RESP
//! commands (`src/aof/`, `src/repl/`); sinks that talk to a server write commands and read
//! replies. Parsing is incremental: [`parse_command`] and [`parse_reply`] return `Ok(None)`
//! when the buffer does not hold a whole item yet, so the same code serves a memory-mapped
//! file and a socket buffer (see `FORMATS.md` §10.1 and §11.3); [`ReplyDecoder`] keeps a
//! reply's partial aggregates between reads, so a socket's bytes are parsed once, and caps
//! the size of a reply.
//!
//! Not here: connections, retries, pipelining policy, or anything that knows what a command
//! means (`SELECT`, `MULTI`), which belongs to the layer reading the stream.

pub mod error;
pub mod parser;
pub mod writer;

pub use error::{RespError, RespErrorKind};
pub use parser::{Decoded, Reply, ReplyDecoder, parse_command, parse_reply, unknown_command};
pub use writer::{CommandWriter, encoded_len, write_command};
