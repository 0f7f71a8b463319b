//! `check`: a full structural walk of every value plus the checksum, with a short report.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use super::{Common, batch};
use crate::error::Result;
use crate::input::{Event, Input};
use crate::progress::Progress;
use crate::rdb::{Error as RdbError, Record};

/// What `check` found in one input.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    /// Input name.
    pub input: String,
    /// RDB version of the RDB part.
    pub rdb_version: Option<String>,
    /// `redis-ver` AUX field.
    pub redis_ver: Option<String>,
    /// Keys per db.
    pub keys_per_db: BTreeMap<u64, u64>,
    /// Total keys.
    pub keys: u64,
    /// Keys with a TTL.
    pub keys_with_ttl: u64,
    /// Function libraries.
    pub functions: u64,
    /// AOF commands.
    pub commands: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Seconds taken.
    pub elapsed_s: f64,
    /// Where a truncated AOF tail was cut.
    pub truncated_at: Option<u64>,
    /// Bytes after the RDB's EOF that were ignored (offset, length).
    pub ignored_tail: Option<(u64, u64)>,
}

impl CheckReport {
    /// Throughput in MB/s.
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed_s.max(1e-9)
    }
}

/// Check one input: every record decoded, every value walked, checksum verified.
pub fn check(name: &str, common: &Common) -> Result<CheckReport> {
    let start = Instant::now();
    let input = Input::open(name)?;
    let mut rep = CheckReport {
        input: name.to_string(),
        ..Default::default()
    };
    let mut progress = Progress::new(input.size, name, common.quiet);
    let validate = |k: &crate::rdb::KeyRecord<'_>| -> Result<()> {
        k.validate()
            .map_err(|e| RdbError::from_decode(name, Some(&k.key), e))?;
        Ok(())
    };
    let walked = batch::walk(&input, common, validate, |ev, _, pos| {
        match ev {
            Event::Rdb(Record::Key(k)) => {
                if common.map.keep(k.db, &k.key, k.data_type()) {
                    rep.keys += 1;
                    *rep.keys_per_db.entry(k.db).or_default() += 1;
                    if k.expire_ms.is_some() {
                        rep.keys_with_ttl += 1;
                    }
                }
                progress.tick(pos, 1);
            }
            Event::Rdb(Record::Function { .. }) => rep.functions += 1,
            Event::Rdb(_) => {}
            Event::Command { .. } => {
                rep.commands += 1;
                progress.tick(pos, 1);
            }
        }
        Ok(())
    });
    progress.finish();
    let walked = walked?;
    rep.rdb_version = walked.rdb_version;
    rep.redis_ver = walked.redis_ver;
    rep.bytes = walked.bytes;
    rep.truncated_at = walked.truncated_at;
    rep.ignored_tail = walked.ignored_tail;
    rep.elapsed_s = start.elapsed().as_secs_f64();
    Ok(rep)
}
