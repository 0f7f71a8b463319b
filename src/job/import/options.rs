//! The options of `import` (`--mode`, `--on-conflict`, `--via`, sizes) and the rules they
//! set: where a key goes (db, rename, connection) and which RDB types a target loads.

use std::hash::{Hash, Hasher};

use serde::Serialize;

use super::fullsync::Via;
use crate::net::RedisUrl;
use crate::rdb::Dialect;

/// Input records bigger than this are rebuilt without MULTI (see the module doc).
pub const MULTI_MAX: u64 = 64 << 20;

/// Default [`ImportOptions::stream_min`]: collections bigger than this are sent in parts.
pub const DEFAULT_STREAM_MIN: u64 = 8 << 20;

/// About how many bytes of commands go in one part of a big key.
pub const PART_BYTES: usize = 4 << 20;

/// `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Restore what the target can load, rewrite the rest.
    Auto,
    /// RESTORE every key.
    Restore,
    /// Commands for every key.
    Rewrite,
}

pub use crate::sink::writer::OnConflict;

/// Options of `import`.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The target.
    pub to: RedisUrl,
    /// How keys are written.
    pub mode: Mode,
    /// What an existing key gets.
    pub on_conflict: OnConflict,
    /// Stop at the first refused key (else skip it, counted).
    pub stop_on_error: bool,
    /// Prepare everything, write nothing.
    pub dry_run: bool,
    /// Go on despite a failed precheck.
    pub force: bool,
    /// Collections and streams whose input record is bigger than this are rewritten in
    /// parts of about `part_bytes`, never held whole ([`DEFAULT_STREAM_MIN`]).
    pub stream_min: u64,
    /// Size of those parts ([`PART_BYTES`]).
    pub part_bytes: usize,
    /// Connections.
    pub connections: usize,
    /// Commands in flight per connection.
    pub pipeline: usize,
    /// How long to keep reconnecting and resending after a fault (`--retry-timeout`).
    pub retry_for: std::time::Duration,
    /// `--via`: full sync when the target allows it, or commands.
    pub via: Via,
    /// Only the RDB part of an input (an AOF's preamble): its commands are left out (the
    /// base of `follow`, whose commands come through the applier).
    pub rdb_only: bool,
}

/// The lowest RDB version whose loader knows value type `t` (`None`: no Redis loads it).
pub fn min_rdb_version(t: u8, dialect: Dialect) -> Option<u32> {
    use crate::rdb::types::type_id::*;
    Some(match t {
        STRING..=HASH | HASH_ZIPMAP..=HASH_ZIPLIST => 1,
        ZSET_2 | MODULE_PRE_GA | MODULE_2 => 8,
        LIST_QUICKLIST => 7,
        STREAM_LISTPACKS => 9,
        HASH_LISTPACK..=STREAM_LISTPACKS_2 => 10,
        SET_LISTPACK | STREAM_LISTPACKS_3 => 11,
        HASH_METADATA_PRE_GA..=HASH_LISTPACK_EX if dialect == Dialect::Redis => 12,
        _ => return None,
    })
}

pub(crate) fn route(db: u64, key: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    db.hash(&mut h);
    key.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::import::encode::tmp_key;
    use crate::sink::writer::library_name;
    #[test]
    fn renames_and_tmp_keys() {
        assert_eq!(tmp_key(b"k"), b"{k}.rdbferry-tmp");
        assert_eq!(tmp_key(b"{t}k"), b"{t}k.rdbferry-tmp");
        assert_eq!(library_name(b"#!lua name=mylib\nredis..."), b"mylib");
    }
    #[test]
    fn type_versions() {
        assert_eq!(min_rdb_version(0, Dialect::Redis), Some(1));
        assert_eq!(min_rdb_version(14, Dialect::Redis), Some(7));
        assert_eq!(min_rdb_version(16, Dialect::Redis), Some(10));
        assert_eq!(min_rdb_version(20, Dialect::Redis), Some(11));
        assert_eq!(min_rdb_version(25, Dialect::Redis), Some(12));
        assert_eq!(min_rdb_version(22, Dialect::Valkey), None);
    }
}
