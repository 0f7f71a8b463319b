//! `inspect`: what a user asks before a migration — sizes per db, type and encoding, TTLs,
//! the biggest keys, and the key-prefix breakdown.

use std::fmt::Write as _;

use serde_json::json;

use super::Common;
use super::batch::{self, Pieces};
use crate::error::{Error, Result};
use crate::input::{Event, Input, server_version};
use crate::progress::Progress;
use crate::rdb::{Error as RdbError, Record};
use crate::sink::stats::Stats;

/// Options of `inspect`.
#[derive(Debug, Clone)]
pub struct InspectOptions {
    /// Rows in the top lists.
    pub top: usize,
    /// Prefix depth (parts split on `:`).
    pub prefix_depth: usize,
}

/// The result of `inspect` on one input.
#[derive(Debug, Clone)]
pub struct InspectReport {
    /// Input name.
    pub input: String,
    /// RDB version.
    pub rdb_version: Option<String>,
    /// `redis-ver`.
    pub redis_ver: Option<String>,
    /// The counters.
    pub stats: Stats,
    /// Rows to show.
    pub top: usize,
}

/// Inspect one input.
pub fn inspect(name: &str, common: &Common, opts: &InspectOptions) -> Result<InspectReport> {
    let input = Input::open(name)?;
    let mut inspector = Inspector {
        stats: Stats::new(opts.top, opts.prefix_depth),
        redis_ver: None,
        progress: Progress::new(input.size, name, common.quiet),
        common,
        name,
    };
    let walked = match input.rdb_bytes() {
        Some(data) => {
            // What each piece's counters start from: the same prefix depth and clock.
            let like = inspector.stats.clone();
            let work = |recs: &[Record<'_>], p: &mut PieceStats| p.count(recs, &like, common, name);
            let parallel = batch::parallel_for(data.len() as u64);
            batch::walk_pieces(&input, data, common, parallel, work, &mut inspector)
        }
        None => batch::walk_events(&input, common, &mut |ev, pos| inspector.event(ev, pos)),
    };
    inspector.progress.finish();
    let walked = walked?;
    Ok(InspectReport {
        input: name.to_string(),
        rdb_version: walked.rdb_version,
        redis_ver: inspector.redis_ver.or(walked.redis_ver),
        stats: inspector.stats,
        top: opts.top,
    })
}

/// What a worker counted in one piece of records: the sums of its keys (which add up in any
/// order), and each key's element count for the top lists (which depend on the order, so the
/// calling thread ranks the keys itself).
#[derive(Default)]
struct PieceStats {
    stats: Stats,
    /// Per record: the element count of a key the filter keeps.
    elems: Vec<Option<u64>>,
    redis_ver: Option<String>,
    /// The first key whose value is corrupt; nothing after it was counted.
    failed: Option<Error>,
}

impl PieceStats {
    /// Validate and count `recs`, replacing what the piece held.
    fn count(&mut self, recs: &[Record<'_>], like: &Stats, common: &Common, name: &str) {
        self.stats.reset_like(like);
        self.elems.clear();
        self.redis_ver = None;
        self.failed = None;
        for rec in recs {
            let mut elems = None;
            match rec {
                // Keys the filter drops are still validated: inspect reports on a sound file.
                Record::Key(k) => match k.validate() {
                    Ok(n) if common.map.keep(k.db, &k.key, k.data_type()) => {
                        self.stats.count_key(k);
                        elems = Some(n);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        self.failed = Some(RdbError::from_decode(name, Some(&k.key), e).into());
                        return;
                    }
                },
                Record::Function { .. } => self.stats.functions += 1,
                Record::ModuleAux { .. } => self.stats.module_aux += 1,
                Record::Aux { .. } => {
                    if let Some(v) = server_version(rec) {
                        self.redis_ver = Some(v);
                    }
                }
                _ => {}
            }
            self.elems.push(elems);
        }
    }
}

/// The calling thread's side of `inspect`: adds up what workers counted and ranks the keys,
/// or counts the events of inputs that are not walked in pieces (AOF, JSONL, stdin).
struct Inspector<'c> {
    stats: Stats,
    redis_ver: Option<String>,
    progress: Progress,
    common: &'c Common,
    name: &'c str,
}

impl Inspector<'_> {
    /// One event, in order.
    fn event(&mut self, ev: Event<'_, '_>, pos: u64) -> Result<()> {
        match ev {
            Event::Rdb(Record::Key(k)) => {
                let n = k
                    .validate()
                    .map_err(|e| RdbError::from_decode(self.name, Some(&k.key), e))?;
                if self.common.map.keep(k.db, &k.key, k.data_type()) {
                    self.stats.add_key(k, Some(n));
                }
                self.progress.tick(pos, 1);
            }
            Event::Rdb(Record::Function { .. }) => self.stats.functions += 1,
            Event::Rdb(Record::ModuleAux { .. }) => self.stats.module_aux += 1,
            Event::Rdb(_) => {}
            Event::Command { .. } => self.stats.commands += 1,
        }
        Ok(())
    }
}

impl<'a> Pieces<'a, PieceStats> for Inspector<'_> {
    fn piece(&mut self, recs: &[Record<'a>], p: &mut PieceStats, pos: u64) -> Result<()> {
        let rows = self.stats.merge(&p.stats);
        for (rec, n) in recs.iter().zip(&p.elems) {
            if let (Record::Key(k), Some(n)) = (rec, n) {
                self.stats.rank_key(k, Some(*n));
                if !rows {
                    self.stats.prefixes.add(&k.key, k.serialized_len());
                }
            }
        }
        if let Some(v) = p.redis_ver.take() {
            self.redis_ver = Some(v);
        }
        self.progress.tick(pos, recs.len() as u64);
        p.failed.take().map_or(Ok(()), Err)
    }

    fn event(&mut self, ev: Event<'_, '_>, pos: u64) -> Result<()> {
        Inspector::event(self, ev, pos)
    }
}

fn human(bytes: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

impl InspectReport {
    /// The report as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let s = &self.stats;
        let prefixes: Vec<_> = s
            .prefixes
            .sorted(self.top.max(20))
            .into_iter()
            .map(|(p, c)| json!({"prefix": p, "keys": c.keys, "bytes": c.bytes}))
            .collect();
        json!({
            "input": self.input,
            "rdb_version": self.rdb_version,
            "redis_ver": self.redis_ver,
            "keys": s.keys,
            "bytes": s.bytes,
            "keys_with_ttl": s.expires,
            "keys_expired": s.expired,
            "functions": s.functions,
            "commands": s.commands,
            "dbs": s.dbs,
            "types": s.types(),
            "encodings": s.encodings(),
            "top_by_bytes": s.top_bytes.sorted(),
            "top_by_elements": s.top_elems.sorted(),
            "prefixes": prefixes,
        })
    }

    /// The report as a table for people.
    pub fn to_table(&self) -> String {
        let s = &self.stats;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "{}: RDB {} (redis-ver {})",
            self.input,
            self.rdb_version.as_deref().unwrap_or("-"),
            self.redis_ver.as_deref().unwrap_or("-")
        );
        let _ = writeln!(
            o,
            "{} keys, {} serialized; {} with a TTL, {} already expired; {} functions{}",
            s.keys,
            human(s.bytes),
            s.expires,
            s.expired,
            s.functions,
            if s.commands > 0 {
                format!("; {} AOF commands", s.commands)
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            o,
            "\n{:<10} {:>12} {:>12} {:>10} {:>10}",
            "db", "keys", "bytes", "ttl", "expired"
        );
        for (db, c) in &s.dbs {
            let _ = writeln!(
                o,
                "{:<10} {:>12} {:>12} {:>10} {:>10}",
                db,
                c.keys,
                human(c.bytes),
                c.expires,
                c.expired
            );
        }
        let _ = writeln!(o, "\n{:<14} {:>12} {:>12}", "type", "keys", "bytes");
        for (t, c) in &s.types() {
            let _ = writeln!(o, "{:<14} {:>12} {:>12}", t, c.keys, human(c.bytes));
        }
        let _ = writeln!(o, "\n{:<14} {:>12} {:>12}", "encoding", "keys", "bytes");
        for (t, c) in &s.encodings() {
            let _ = writeln!(o, "{:<14} {:>12} {:>12}", t, c.keys, human(c.bytes));
        }
        for (title, rows) in [
            ("biggest keys by serialized size", s.top_bytes.sorted()),
            ("biggest keys by element count", s.top_elems.sorted()),
        ] {
            let _ = writeln!(o, "\n{title}:");
            for r in rows {
                let v = if title.contains("size") {
                    human(r.value)
                } else {
                    r.value.to_string()
                };
                let _ = writeln!(o, "  {:>12}  db{:<3} {:<8} {}", v, r.db, r.type_name, r.key);
            }
        }
        let _ = writeln!(o, "\nkey prefixes:");
        for (p, c) in s.prefixes.sorted(self.top.max(20)) {
            let _ = writeln!(o, "  {:>10} keys {:>12}  {}", c.keys, human(c.bytes), p);
        }
        o
    }
}
