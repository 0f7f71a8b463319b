//! `check`: a full structural walk of every value plus the checksum, with a short report.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use super::Common;
use super::batch::{self, Pieces};
use crate::error::{Error, Result};
use crate::input::{Event, Input, server_version};
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
    let mut checker = Checker {
        rep: CheckReport {
            input: name.to_string(),
            ..Default::default()
        },
        progress: Progress::new(input.size, name, common.quiet),
        common,
        name,
    };
    let walked = match input.rdb_bytes() {
        Some(data) => {
            let work = |recs: &[Record<'_>], t: &mut Tally| t.count(recs, common, name);
            let parallel = batch::parallel_for(data.len() as u64);
            batch::walk_pieces(&input, data, common, parallel, work, &mut checker)
        }
        None => batch::walk_events(&input, common, &mut |ev, pos| checker.event(ev, pos)),
    };
    checker.progress.finish();
    let walked = walked?;
    let mut rep = checker.rep;
    rep.rdb_version = walked.rdb_version;
    rep.redis_ver = rep.redis_ver.or(walked.redis_ver);
    rep.bytes = walked.bytes;
    rep.truncated_at = walked.truncated_at;
    rep.ignored_tail = walked.ignored_tail;
    rep.elapsed_s = start.elapsed().as_secs_f64();
    Ok(rep)
}

/// What a worker found in one piece of records: every value walked, and the counts, so that
/// the calling thread only adds them up.
#[derive(Default)]
struct Tally {
    keys: u64,
    with_ttl: u64,
    /// Keys per db, in the order the dbs come.
    per_db: Vec<(u64, u64)>,
    functions: u64,
    /// The last `redis-ver` (or `valkey-ver`) AUX field of the piece.
    redis_ver: Option<String>,
    /// The first key whose value is corrupt; nothing after it was counted.
    failed: Option<Error>,
}

impl Tally {
    /// Walk and count `recs`, replacing what the tally held.
    fn count(&mut self, recs: &[Record<'_>], common: &Common, name: &str) {
        let mut per_db = std::mem::take(&mut self.per_db);
        per_db.clear();
        *self = Tally {
            per_db,
            ..Default::default()
        };
        for rec in recs {
            match rec {
                Record::Key(k) => {
                    if let Err(e) = k.validate() {
                        self.failed = Some(RdbError::from_decode(name, Some(&k.key), e).into());
                        return;
                    }
                    if common.map.keep(k.db, &k.key, k.data_type()) {
                        self.keys += 1;
                        self.with_ttl += k.expire_ms.is_some() as u64;
                        match self.per_db.last_mut() {
                            Some((db, n)) if *db == k.db => *n += 1,
                            _ => self.per_db.push((k.db, 1)),
                        }
                    }
                }
                Record::Function { .. } => self.functions += 1,
                Record::Aux { .. } => {
                    if let Some(v) = server_version(rec) {
                        self.redis_ver = Some(v);
                    }
                }
                _ => {}
            }
        }
    }
}

/// The calling thread's side of `check`: adds up what workers found, or counts the events of
/// inputs that are not walked in pieces (AOF, JSONL, stdin).
struct Checker<'c> {
    rep: CheckReport,
    progress: Progress,
    common: &'c Common,
    name: &'c str,
}

impl Checker<'_> {
    fn key(&mut self, db: u64, ttl: bool, n: u64) {
        self.rep.keys += n;
        *self.rep.keys_per_db.entry(db).or_default() += n;
        if ttl {
            self.rep.keys_with_ttl += n;
        }
    }

    /// One event, in order.
    fn event(&mut self, ev: Event<'_, '_>, pos: u64) -> Result<()> {
        match ev {
            Event::Rdb(Record::Key(k)) => {
                k.validate()
                    .map_err(|e| RdbError::from_decode(self.name, Some(&k.key), e))?;
                if self.common.map.keep(k.db, &k.key, k.data_type()) {
                    self.key(k.db, k.expire_ms.is_some(), 1);
                }
                self.progress.tick(pos, 1);
            }
            Event::Rdb(Record::Function { .. }) => self.rep.functions += 1,
            Event::Rdb(_) => {}
            Event::Command { .. } => {
                self.rep.commands += 1;
                self.progress.tick(pos, 1);
            }
        }
        Ok(())
    }
}

impl<'a> Pieces<'a, Tally> for Checker<'_> {
    fn piece(&mut self, recs: &[Record<'a>], t: &mut Tally, pos: u64) -> Result<()> {
        for &(db, n) in &t.per_db {
            self.key(db, false, n);
        }
        self.rep.keys_with_ttl += t.with_ttl;
        self.rep.functions += t.functions;
        if let Some(v) = t.redis_ver.take() {
            self.rep.redis_ver = Some(v);
        }
        self.progress.tick(pos, recs.len() as u64);
        t.failed.take().map_or(Ok(()), Err)
    }

    fn event(&mut self, ev: Event<'_, '_>, pos: u64) -> Result<()> {
        Checker::event(self, ev, pos)
    }
}
