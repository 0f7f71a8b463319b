//! rdbferry moves Redis data: it reads RDB snapshots and AOF files, transforms the entries, and
//! writes them into Redis or into files.
//!
//! # Layout
//!
//! The code is a one-way pipeline, source → transform → sink, one folder per stage:
//!
//! - `rdb/`: RDB reader (zero-copy, pull-based) and encoder; CRC-64, LZF, every inner encoding.
//! - `resp/`: the RESP protocol: command parser and writer.
//! - `aof/`: AOF files: plain, with an RDB preamble, and multi-part directories.
//! - `input/`: recognises an input (RDB, AOF, appendonlydir, JSONL, stdin) and walks it as
//!   events.
//! - `transform/`: filters (db, key globs and regexes, types).
//! - `sink/`: outputs: JSON lines, RESP commands, RDB streams, statistics, a live Redis target
//!   (pipelined commands, or a full sync where rdbferry plays the master).
//! - `cluster/`: Redis Cluster key slots, slot map and `MOVED`/`ASK` redirections.
//! - `net/`: connections to a live Redis, plain TCP or TLS (rustls), for `sink/` and `verify/`.
//! - `job/`: the loops behind each command (`check`, `inspect`, `convert`, `import`, and
//!   `fullsync`, import's fast path for an empty target).
//! - `sigsafe.rs`: tables a signal handler may read (mapped inputs, temporary output files).
//! - `hash.rs`: fast hashes for digests and repeat checks (not cryptographic).
//! - `verify/`: compares a source (a file, or a live server read with `SCAN` + `DUMP`) with a
//!   live Redis target (`verify`): by digest against the target's own snapshot first, else
//!   over pipelined reads key by key.
//! - `cli/` (in the binary): flags to configuration; nothing else.

pub mod aof;
pub mod cluster;
pub mod error;
pub mod hash;
pub mod input;
pub mod job;
pub mod net;
pub mod progress;
pub mod rdb;
pub mod resp;
pub mod sigsafe;
pub mod sink;
pub mod transform;
pub mod verify;
