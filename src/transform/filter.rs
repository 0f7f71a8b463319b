//! Key filters: `--db`, `--key GLOB`, `--key-regex RE`, `--exclude-key GLOB`, `--type T`.
//!
//! A key is kept when its db is listed (or no `--db` was given), its type is listed (or no
//! `--type`), it matches at least one `--key`/`--key-regex` (or none was given), and it
//! matches no `--exclude-key`. Globs follow Redis `KEYS` syntax (`*`, `?`, `[...]`), matched
//! over the raw key bytes.

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
}

/// A compiled filter.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    dbs: Vec<u64>,
    include: Option<GlobSet>,
    include_re: Option<RegexSet>,
    exclude: Option<GlobSet>,
    types: Vec<DataType>,
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
        })
    }

    /// Whether this filter keeps everything.
    pub fn is_pass_all(&self) -> bool {
        self.dbs.is_empty()
            && self.include.is_none()
            && self.include_re.is_none()
            && self.exclude.is_none()
            && self.types.is_empty()
    }

    /// Whether the db passes.
    pub fn keep_db(&self, db: u64) -> bool {
        self.dbs.is_empty() || self.dbs.contains(&db)
    }

    /// Whether a key name passes the key patterns.
    pub fn keep_name(&self, key: &[u8]) -> bool {
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
