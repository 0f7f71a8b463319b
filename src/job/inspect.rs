//! `inspect`: what a user asks before a migration — sizes per db, type and encoding, TTLs,
//! the biggest keys, and the key-prefix breakdown.

use std::fmt::Write as _;

use serde_json::json;

use super::{Common, batch};
use crate::error::Result;
use crate::input::{Event, Input};
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
    let mut stats = Stats::new(opts.top, opts.prefix_depth);
    let mut progress = Progress::new(input.size, name, common.quiet);
    // Keys the filter drops are still validated: inspect reports on a sound file only.
    let count = |k: &crate::rdb::KeyRecord<'_>| -> Result<u64> {
        Ok(k.validate()
            .map_err(|e| RdbError::from_decode(name, Some(&k.key), e))?)
    };
    let walked = batch::walk(&input, common, count, |ev, n, pos| {
        match ev {
            Event::Rdb(Record::Key(k)) => {
                if common.map.keep(k.db, &k.key, k.data_type()) {
                    stats.add_key(k, n);
                }
                progress.tick(pos, 1);
            }
            Event::Rdb(Record::Function { .. }) => stats.functions += 1,
            Event::Rdb(Record::ModuleAux { .. }) => stats.module_aux += 1,
            Event::Rdb(_) => {}
            Event::Command { .. } => stats.commands += 1,
        }
        Ok(())
    });
    progress.finish();
    let walked = walked?;
    Ok(InspectReport {
        input: name.to_string(),
        rdb_version: walked.rdb_version,
        redis_ver: walked.redis_ver,
        stats,
        top: opts.top,
    })
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
            "types": s.types,
            "encodings": s.encodings,
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
        for (t, c) in &s.types {
            let _ = writeln!(o, "{:<14} {:>12} {:>12}", t, c.keys, human(c.bytes));
        }
        let _ = writeln!(o, "\n{:<14} {:>12} {:>12}", "encoding", "keys", "bytes");
        for (t, c) in &s.encodings {
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
