//! rdbferry moves Redis data: it reads RDB snapshots and AOF files, transforms the entries, and
//! writes them into Redis or into files.
//!
//! # Layout
//!
//! The code is a one-way pipeline, source → transform → sink, one folder per stage:
//!
//! - `rdb/`: RDB reader (zero-copy, pull-based) and encoder; CRC-64, LZF, every inner encoding.
//! - `aof/`: AOF reader (commands borrowed from the mapped file, `SELECT`/`MULTI` tracking,
//!   truncated tails) and the Redis 7 multi-part manifest.
//! - `resp/`: the RESP protocol: incremental command and reply parser, command writer.
//! - `cli/`: turns flags into configuration and calls the library; nothing else.

pub mod aof;
pub mod rdb;
pub mod resp;
