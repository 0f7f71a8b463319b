//! The Redis replication protocol, both sides, in one place:
//!
//! - [`master`]: rdbferry as a master: a listener that serves one expected replica its
//!   handshake and a full sync (`import`'s full sync);
//! - [`replica`]: rdbferry as a replica: the handshake (`SYNC`, `PSYNC`, resumable), the RDB
//!   payload of a full sync and the command stream after it (`verify`'s snapshot, `fetch`,
//!   `sync`); announced so that Sentinel never takes it for a replica to promote.
//!
//! Where it sits: beside `net/`, whose connections it uses; the sinks and jobs use it.

pub mod master;
pub mod replica;
