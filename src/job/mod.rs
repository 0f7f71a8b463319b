//! The jobs behind the commands: `check`, `inspect`, `convert`, `import`. Each walks its inputs through
//! the filters into a sink; the CLI only builds their configuration and prints their reports.
//! `fetch` copies a live server's snapshot to a file, as a replica takes it; `sync` copies it
//! into a target, then (`--follow`) applies the source's replication stream. `split` writes
//! one RDB file per Cluster slot range.

pub mod batch;
pub mod changes;
pub mod check;
pub mod convert;
pub mod convert_rdb;
pub mod fetch;
pub mod follow;
pub mod import;
pub mod inspect;
pub mod metrics;
pub mod split;
pub mod sync;

use crate::cancel::Cancel;
use crate::rdb::ReadOptions;
use crate::transform::KeyMap;

/// Options every job shares.
#[derive(Debug, Clone, Default)]
pub struct Common {
    /// Which entries go on, under which name and db (filters, `--rename`, `--db-map`).
    pub map: KeyMap,
    /// Reader options (`--ignore-checksum`).
    pub read: ReadOptions,
    /// No progress bar.
    pub quiet: bool,
    /// Set when the run must stop (the binary's signal handler).
    pub cancel: Cancel,
}
