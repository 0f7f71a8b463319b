//! Key filters: `--db`, `--key GLOB`, `--key-regex RE`, `--exclude-key GLOB`, `--type T`,
//! `--shard I/N`.
//!
//! A key is kept when its db is listed (or no `--db` was given), its type is listed (or no
//! `--type`), it matches at least one `--key`/`--key-regex` (or none was given), and it
//! matches no `--exclude-key`. Globs follow Redis `KEYS` syntax (`*`, `?`, `[...]`), matched
//! over the raw key bytes. `--shard I/N` keeps the keys whose Cluster slot lies in the I-th of
//! N equal slot ranges, so that N runs (on N machines) share one job and together see every
//! key once.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use regex::bytes::RegexSet;

use crate::error::{Error, Result};
use crate::rdb::DataType;
use crate::transform::commands::command_key;

/// Filter flags as the user gave them.
#[derive(Debug, Clone, Default)]
pub struct FilterSpec {
    /// Databases to keep.
    pub dbs: Vec<u64>,
    /// Key globs to keep.
    pub keys: Vec<String>,
    /// Key regexes to keep.
    pub key_regexes: Vec<String>,
    /// Key globs to drop.
    pub exclude_keys: Vec<String>,
    /// Types to keep.
    pub types: Vec<String>,
    /// `--shard I/N`: (I, N).
    pub shard: Option<(u32, u32)>,
}

/// The slots of shard `i` of `n`: the i-th of n equal ranges of the 16384 slots, cut where
/// `redis-cli --cluster create` cuts them for n masters (0-5460, 5461-10922, 10923-16383).
pub fn shard_slots(i: u32, n: u32) -> Result<(u16, u16)> {
    if n == 0 || n > 16384 || i >= n {
        return Err(Error::Usage(format!(
            "--shard {i}/{n}: wants I/N with 0 <= I < N <= 16384"
        )));
    }
    // redis-cli: last = lround((i + 1) * 16384 / n - 1), in integers.
    let last = |i: u64| (2 * (i + 1) * 16384 + n as u64) / (2 * n as u64) - 1;
    let lo = if i == 0 { 0 } else { last(i as u64 - 1) + 1 };
    Ok((lo as u16, last(i as u64).min(16383) as u16))
}

/// Parse `--shard I/N`.
pub fn parse_shard(s: &str) -> Result<(u32, u32)> {
    let bad = || Error::Usage(format!("--shard wants I/N (e.g. 0/3), got {s:?}"));
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let (i, n) = (
        i.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    shard_slots(i, n)?;
    Ok((i, n))
}

/// A compiled filter.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    dbs: Vec<u64>,
    include: Option<GlobSet>,
    include_re: Option<RegexSet>,
    exclude: Option<GlobSet>,
    types: Vec<DataType>,
    /// `--shard`: the slot range kept.
    slots: Option<(u16, u16)>,
}

fn globs(patterns: &[String]) -> Result<Option<GlobSet>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let g = GlobBuilder::new(p)
            .literal_separator(false)
            .backslash_escape(true)
            .build()
            .map_err(|e| Error::Usage(format!("bad key pattern {p:?}: {e}")))?;
        b.add(g);
    }
    b.build()
        .map(Some)
        .map_err(|e| Error::Usage(format!("bad key patterns: {e}")))
}

impl Filter {
    /// Whether every key passes (no filter flag was given).
    pub fn keeps_all(&self) -> bool {
        self.dbs.is_empty()
            && self.include.is_none()
            && self.include_re.is_none()
            && self.exclude.is_none()
            && self.types.is_empty()
            && self.slots.is_none()
    }

    /// Compile the flags.
    pub fn new(spec: &FilterSpec) -> Result<Filter> {
        let include_re = if spec.key_regexes.is_empty() {
            None
        } else {
            Some(
                RegexSet::new(&spec.key_regexes)
                    .map_err(|e| Error::Usage(format!("bad --key-regex: {e}")))?,
            )
        };
        let mut types = Vec::new();
        for t in &spec.types {
            types.push(
                DataType::from_name(t)
                    .ok_or_else(|| Error::Usage(format!("unknown type {t:?} in --type")))?,
            );
        }
        Ok(Filter {
            dbs: spec.dbs.clone(),
            include: globs(&spec.keys)?,
            include_re,
            exclude: globs(&spec.exclude_keys)?,
            types,
            slots: match spec.shard {
                Some((i, n)) => Some(shard_slots(i, n)?),
                None => None,
            },
        })
    }

    /// Whether this filter keeps everything.
    pub fn is_pass_all(&self) -> bool {
        self.dbs.is_empty()
            && self.include.is_none()
            && self.include_re.is_none()
            && self.exclude.is_none()
            && self.types.is_empty()
            && self.slots.is_none()
    }

    /// Whether the db passes.
    pub fn keep_db(&self, db: u64) -> bool {
        self.dbs.is_empty() || self.dbs.contains(&db)
    }

    /// Whether a key name passes the key patterns.
    pub fn keep_name(&self, key: &[u8]) -> bool {
        if let Some((lo, hi)) = self.slots
            && !(lo..=hi).contains(&crate::keyslot::key_slot(key))
        {
            return false;
        }
        if self.include.is_none() && self.include_re.is_none() && self.exclude.is_none() {
            return true;
        }
        let key_path = globset::Candidate::from_bytes(key);
        let included = match (&self.include, &self.include_re) {
            (None, None) => true,
            (g, r) => {
                g.as_ref().is_some_and(|g| g.is_match_candidate(&key_path))
                    || r.as_ref().is_some_and(|r| r.is_match(key))
            }
        };
        included
            && !self
                .exclude
                .as_ref()
                .is_some_and(|g| g.is_match_candidate(&key_path))
    }

    /// Whether a key passes.
    pub fn keep(&self, db: u64, key: &[u8], t: DataType) -> bool {
        self.keep_db(db)
            && (self.types.is_empty() || self.types.contains(&t))
            && self.keep_name(key)
    }

    /// Whether an AOF command passes: its db, and its first key when it has one. Commands
    /// carry no type, so `--type` applies to RDB entries only.
    pub fn keep_command(&self, db: u64, args: &[&[u8]]) -> bool {
        if !self.keep_db(db) {
            return false;
        }
        match command_key(args) {
            Some(k) => self.keep_name(k),
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn f(spec: FilterSpec) -> Filter {
        Filter::new(&spec).unwrap()
    }
    #[test]
    fn globs_regexes_excludes() {
        let flt = f(FilterSpec {
            keys: vec!["user:*".into()],
            key_regexes: vec!["^session:[0-9]+$".into()],
            exclude_keys: vec!["user:admin*".into()],
            ..Default::default()
        });
        assert!(flt.keep(0, b"user:1", DataType::String));
        assert!(flt.keep(0, b"session:42", DataType::Hash));
        assert!(!flt.keep(0, b"session:x", DataType::Hash));
        assert!(!flt.keep(0, b"user:admin", DataType::String));
        assert!(!flt.keep(0, b"other", DataType::String));
        // glob over non-UTF-8 bytes
        let flt = f(FilterSpec {
            keys: vec!["bin:*".into()],
            ..Default::default()
        });
        assert!(flt.keep(0, b"bin:\xff\x00", DataType::String));
    }
    #[test]
    fn db_and_type() {
        let flt = f(FilterSpec {
            dbs: vec![1],
            types: vec!["zset".into()],
            ..Default::default()
        });
        assert!(flt.keep(1, b"a", DataType::ZSet));
        assert!(!flt.keep(0, b"a", DataType::ZSet));
        assert!(!flt.keep(1, b"a", DataType::Set));
        assert!(
            Filter::new(&FilterSpec {
                types: vec!["nope".into()],
                ..Default::default()
            })
            .is_err()
        );
    }
    #[test]
    fn shards_cover_every_slot_once() {
        assert_eq!(shard_slots(0, 3).unwrap(), (0, 5460));
        assert_eq!(shard_slots(1, 3).unwrap(), (5461, 10922));
        assert_eq!(shard_slots(2, 3).unwrap(), (10923, 16383));
        assert_eq!(shard_slots(0, 1).unwrap(), (0, 16383));
        assert_eq!(shard_slots(16383, 16384).unwrap(), (16383, 16383));
        for n in [2, 5, 7, 1000] {
            let mut next = 0;
            for i in 0..n {
                let (lo, hi) = shard_slots(i, n).unwrap();
                assert!(lo == next && hi >= lo, "{i}/{n}");
                next = hi + 1;
            }
            assert_eq!(next, 16384);
        }
        assert!(shard_slots(3, 3).is_err() && parse_shard("1-3").is_err());
        let shards: Vec<Filter> = (0..3)
            .map(|i| {
                f(FilterSpec {
                    shard: Some((i, 3)),
                    ..Default::default()
                })
            })
            .collect();
        for k in 0..500 {
            let key = format!("key:{k}");
            let n = shards
                .iter()
                .filter(|s| s.keep(0, key.as_bytes(), DataType::String))
                .count();
            assert_eq!(n, 1, "{key}");
        }
        assert!(!shards[0].keeps_all());
    }
    #[test]
    fn commands() {
        let flt = f(FilterSpec {
            keys: vec!["a*".into()],
            ..Default::default()
        });
        assert!(flt.keep_command(0, &[b"SET", b"abc", b"1"]));
        assert!(!flt.keep_command(0, &[b"SET", b"xyz", b"1"]));
        assert!(flt.keep_command(0, &[b"MULTI"]));
    }
}
