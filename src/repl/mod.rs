//! The Redis replication protocol, both sides, in one place:
//!
//! - [`master`]: rdbferry as a master: a listener that serves one expected replica its
//!   handshake and a full sync (`import`'s full sync);
//! - [`replica`]: rdbferry as a replica: the handshake and the RDB payload of a full sync
//!   from a server (`verify`'s snapshot; `fetch` and `sync` next).
//!
//! Where it sits: beside `net/`, whose connections it uses; the sinks and jobs use it.

pub mod master;
pub mod replica;
