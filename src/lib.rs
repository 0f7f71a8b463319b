//! rdbferry moves Redis data: it reads RDB snapshots and AOF files, transforms the entries, and
//! writes them into Redis or into files.
//!
//! # Layout
//!
//! The code is a one-way pipeline, source → transform → sink, in layers that only point
//! down (a module uses the ones above it in this list, never one below):
//!
//! - bottom, the formats and pure helpers: `rdb/` (RDB reader, zero-copy and pull-based, and
//!   encoder; CRC-64, LZF, every inner encoding; `reencode`, a value for another version;
//!   `spill`, the stream reader's buffer, in a temporary file for a huge record), `resp/`
//!   (RESP commands and replies, the incremental reply decoder), `aof/` (plain, RDB preamble, multi-part directories),
//!   `keyslot.rs` (Cluster key slots), `hash.rs` (fast non-cryptographic hashes), `text.rs`
//!   (how keys appear in messages), `time.rs` (the wall clock), `cancel.rs` (the stop token
//!   every long loop checks), `sigsafe.rs` (tables a signal handler may read: mapped inputs,
//!   temporary output files);
//! - `input/`: recognises an input (RDB, AOF, appendonlydir, JSONL, stdin) and walks it as
//!   events; `input::tail` follows an AOF as Redis writes and rewrites it; `input::live`
//!   reads a live server key by key (`SCAN` + `DUMP`: `verify` of a live source, `sync --via
//!   scan`);
//! - `transform/`: the whole key mapping of a run (`KeyMap`: filters, `--shard` among them,
//!   renames, db mapping), and the command-key table that judges a command by every key it
//!   names;
//! - `net/`: the one live-Redis layer: URLs, TCP/TLS, AUTH, one connection type with
//!   deadlines and capped replies, `INFO`/`CONFIG` helpers, Cluster topology and
//!   `MOVED`/`ASK`;
//! - `repl/`: the replication protocol, master side (the full sync `import` serves) and
//!   replica side (the snapshot `verify` reads and `fetch` writes, the command stream after
//!   it, `PSYNC` to resume);
//! - `sink/`: outputs: JSON lines, RESP commands, RDB streams, statistics, the pipelined
//!   writer into a live Redis, and the applier (`sink::applier`) that applies an incremental
//!   command stream in checkpointed batches, at least once or exactly once;
//! - `job/`: the loops behind each command (`check`, `inspect`, `convert` with
//!   `convert_rdb` for RDB output and `--merge`, `split`, `import`, and `fullsync`, import's
//!   fast path for an empty target; `fetch`; `follow`, an AOF tail into the applier; `sync`,
//!   a live source's snapshot into the import and its replication stream into the applier,
//!   with `sync/cluster`, one such sync per master of a Cluster source, and `sync/scan`,
//!   a copy by SCAN + DUMP of a source that refuses replication),
//!   with `changes` (what rdbferry changes on a server, and `recover` to put it back after a
//!   `kill -9`) and `metrics` (the Prometheus endpoint); `verify/`: compares a source (a
//!   file, or a live server read with `SCAN` + `DUMP`) with a live target, by digest against
//!   the target's own snapshot first, else key by key;
//! - `cli/` (in the binary): flags to configuration; nothing else.

pub mod aof;
pub mod cancel;
pub mod error;
pub mod hash;
pub mod input;
pub mod job;
pub mod keyslot;
pub mod net;
pub mod progress;
pub mod rdb;
pub mod repl;
pub mod resp;
pub mod sigsafe;
pub mod sink;
pub mod text;
pub mod time;
pub mod transform;
pub mod verify;
