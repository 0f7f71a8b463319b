//! [`KeyMap`]: the whole key mapping of a run in one value: which entries go on (filters),
//! under which name (`--rename`) and into which db (`--db-map`, and a target URL's `/N`), for
//! keys and for commands alike. The CLI builds it once; `convert`, `import`, `verify` and
//! the applier of incremental sync all take it, so they agree on every key.
//!
//! Commands are judged by every key they have (the command-key table, `commands`): a
//! multi-key command whose keys all pass goes on, renamed; one whose keys all fail is
//! dropped; a mixed one is split where the command allows it (`DEL`, `UNLINK`, `EXISTS`,
//! `TOUCH` keep their passing keys; `MSET` its passing pairs) and reported otherwise
//! (`MSETNX`, `RENAME`, `SMOVE`, a script with keys on both sides...): never guessed.

use std::borrow::Cow;
use std::collections::BTreeMap;

use super::commands::key_positions;
use super::filter::Filter;
use crate::rdb::DataType;
use crate::text::quoted;

/// Filters, renames and db mapping.
#[derive(Debug, Clone, Default)]
pub struct KeyMap {
    /// Which keys go on.
    pub filter: Filter,
    /// `--rename OLD=NEW`: key prefixes replaced, first match wins.
    renames: Vec<(Vec<u8>, Vec<u8>)>,
    /// `--db-map SRC=DST`.
    db_map: BTreeMap<u64, u64>,
    /// Where input db 0 goes when `--db-map` does not say (a target URL's `/N`).
    db0: Option<u64>,
}

/// What becomes of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandFate<'a> {
    /// It goes on, in target db `db`, as `args` (keys renamed, or the passing part of a
    /// split command).
    Keep {
        /// Target db.
        db: u64,
        /// The command as it goes.
        args: Vec<Cow<'a, [u8]>>,
    },
    /// Its db or every key of it is filtered out.
    Drop,
    /// Some keys pass and some do not, and the command cannot be split: why.
    Refuse(String),
}

impl KeyMap {
    /// A map of `filter`, `renames` and `db_map`.
    pub fn new(
        filter: Filter,
        renames: Vec<(Vec<u8>, Vec<u8>)>,
        db_map: BTreeMap<u64, u64>,
    ) -> KeyMap {
        KeyMap {
            filter,
            renames,
            db_map,
            db0: None,
        }
    }

    /// The same map writing input db 0 to `db` unless `--db-map` says otherwise (the target
    /// URL names a db: `redis://host/4`).
    pub fn with_db0(mut self, db: Option<u64>) -> KeyMap {
        self.db0 = db;
        self
    }

    /// Whether keys keep their names and dbs (nothing renamed or moved).
    pub fn keeps_names(&self) -> bool {
        self.renames.is_empty() && self.db_map.is_empty() && self.db0.is_none_or(|d| d == 0)
    }

    /// Whether every entry goes on as it is: no filter, rename or db mapping.
    pub fn is_identity(&self) -> bool {
        self.filter.keeps_all() && self.keeps_names()
    }

    /// Whether `--rename` was given.
    pub fn renames(&self) -> bool {
        !self.renames.is_empty()
    }

    /// Whether a key goes on.
    pub fn keep(&self, db: u64, key: &[u8], t: DataType) -> bool {
        self.filter.keep(db, key, t)
    }

    /// The target db of input db `db`: `--db-map`, else the URL's `/N` for db 0, else the
    /// same.
    pub fn db(&self, db: u64) -> u64 {
        match self.db_map.get(&db) {
            Some(&d) => d,
            None if db == 0 => self.db0.unwrap_or(0),
            None => db,
        }
    }

    /// The target name of `key`: the first `--rename` prefix that matches, replaced.
    pub fn key<'k>(&self, key: &'k [u8]) -> Cow<'k, [u8]> {
        for (old, new) in &self.renames {
            if let Some(rest) = key.strip_prefix(old.as_slice()) {
                let mut k = new.clone();
                k.extend_from_slice(rest);
                return k.into();
            }
        }
        key.into()
    }

    /// What becomes of a command of input db `db` (see the module doc).
    pub fn command<'a>(&self, db: u64, args: &[&'a [u8]]) -> CommandFate<'a> {
        if !self.filter.keep_db(db) {
            return CommandFate::Drop;
        }
        let keys = key_positions(args);
        let pass: Vec<bool> = keys
            .iter()
            .map(|&i| self.filter.keep_name(args[i]))
            .collect();
        let kept = pass.iter().filter(|&&p| p).count();
        let tdb = self.db(db);
        if keys.is_empty() || kept == keys.len() {
            return CommandFate::Keep {
                db: tdb,
                args: self.rename_args(args, &keys),
            };
        }
        if kept == 0 {
            return CommandFate::Drop;
        }
        let name = args[0];
        let splittable = ["del", "unlink", "exists", "touch", "mset"]
            .iter()
            .any(|c| name.eq_ignore_ascii_case(c.as_bytes()));
        if !splittable {
            let (k, d) = (
                keys.iter()
                    .zip(&pass)
                    .find(|(_, p)| **p)
                    .map(|(&i, _)| args[i]),
                keys.iter()
                    .zip(&pass)
                    .find(|(_, p)| !**p)
                    .map(|(&i, _)| args[i]),
            );
            return CommandFate::Refuse(format!(
                "{} touches key {} that the filters keep and key {} that they drop, and cannot \
                 be split",
                String::from_utf8_lossy(&name[..name.len().min(32)]),
                quoted(k.unwrap_or_default()),
                quoted(d.unwrap_or_default())
            ));
        }
        // A key and, for MSET, its value go on; the rest of the command stays as it was.
        let pair = name.eq_ignore_ascii_case(b"mset");
        let mut out: Vec<Cow<'a, [u8]>> = vec![Cow::Borrowed(name)];
        for (&i, &p) in keys.iter().zip(&pass) {
            if p {
                out.push(self.key(args[i]));
                if pair && let Some(&v) = args.get(i + 1) {
                    out.push(Cow::Borrowed(v));
                }
            }
        }
        CommandFate::Keep { db: tdb, args: out }
    }

    /// The command as borrowed slices (for writers that take `&[&[u8]]`).
    pub fn refs<'b>(args: &'b [Cow<'_, [u8]>]) -> Vec<&'b [u8]> {
        args.iter().map(|a| a.as_ref()).collect()
    }

    /// `args` with the keys at `keys` renamed.
    fn rename_args<'a>(&self, args: &[&'a [u8]], keys: &[usize]) -> Vec<Cow<'a, [u8]>> {
        args.iter()
            .enumerate()
            .map(|(i, &a)| {
                if keys.contains(&i) {
                    self.key(a)
                } else {
                    Cow::Borrowed(a)
                }
            })
            .collect()
    }
}

/// The filters' view of a `MULTI`/`EXEC` transaction, command by command: one whose
/// commands are partly kept and partly dropped cannot be applied as the source applied it,
/// so it is reported, not guessed.
#[derive(Debug, Default)]
pub struct Transaction {
    open: bool,
    kept: bool,
    dropped: bool,
    reported: bool,
}

impl Transaction {
    /// Note a command (`name`) and whether it was kept; returns a report the first time a
    /// transaction turns out mixed.
    pub fn note(&mut self, name: &[u8], kept: bool) -> Option<String> {
        if name.eq_ignore_ascii_case(b"MULTI") {
            *self = Transaction {
                open: true,
                ..Default::default()
            };
            return None;
        }
        if name.eq_ignore_ascii_case(b"EXEC") || name.eq_ignore_ascii_case(b"DISCARD") {
            *self = Transaction::default();
            return None;
        }
        if !self.open {
            return None;
        }
        if kept {
            self.kept = true;
        } else {
            self.dropped = true;
        }
        (self.kept && self.dropped && !std::mem::replace(&mut self.reported, true)).then(|| {
            "a MULTI/EXEC transaction has commands the filters keep and commands they drop: \
             it is applied without the dropped ones"
                .to_string()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::FilterSpec;

    fn map(keys: &[&str], renames: &[(&str, &str)]) -> KeyMap {
        let filter = Filter::new(&FilterSpec {
            keys: keys.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .unwrap();
        KeyMap::new(
            filter,
            renames
                .iter()
                .map(|(a, b)| (a.as_bytes().to_vec(), b.as_bytes().to_vec()))
                .collect(),
            BTreeMap::from([(1, 9)]),
        )
    }

    fn fate(m: &KeyMap, args: &[&str]) -> Option<Vec<String>> {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        match m.command(0, &a) {
            CommandFate::Keep { args, .. } => Some(
                args.iter()
                    .map(|x| String::from_utf8_lossy(x).into_owned())
                    .collect(),
            ),
            CommandFate::Drop => None,
            CommandFate::Refuse(why) => Some(vec![format!("refused: {why}")]),
        }
    }

    /// Issue 9: `--key 'b*'` judged `MSET a 1 b 2` by `a` alone.
    #[test]
    fn issue9_multi_key_commands_are_judged_by_every_key() {
        let m = map(&["b*"], &[("b", "B")]);
        assert_eq!(
            fate(&m, &["MSET", "a", "1", "b", "2"]).unwrap(),
            ["MSET", "B", "2"]
        );
        assert_eq!(
            fate(&m, &["DEL", "a", "b1", "b2"]).unwrap(),
            ["DEL", "B1", "B2"]
        );
        assert_eq!(fate(&m, &["DEL", "a", "c"]), None);
        assert_eq!(fate(&m, &["SET", "b", "x"]).unwrap(), ["SET", "B", "x"]);
        for refused in [
            &["MSETNX", "a", "1", "b", "2"][..],
            &["RENAME", "a", "b"],
            &["SMOVE", "b", "a", "m"],
            &["EVAL", "s", "2", "a", "b"],
        ] {
            let f = fate(&m, refused).unwrap();
            assert!(f[0].starts_with("refused:"), "{refused:?}: {f:?}");
        }
        // Keyless commands pass; a key elsewhere than first is found.
        assert_eq!(fate(&m, &["FLUSHDB"]).unwrap(), ["FLUSHDB"]);
        assert_eq!(
            fate(&m, &["XGROUP", "CREATE", "bs", "g", "$"]).unwrap(),
            ["XGROUP", "CREATE", "Bs", "g", "$"]
        );
        assert_eq!(fate(&m, &["XGROUP", "CREATE", "as", "g", "$"]), None);
    }

    #[test]
    fn mixed_transactions_are_reported_once() {
        let mut t = Transaction::default();
        assert_eq!(t.note(b"SET", false), None);
        assert_eq!(t.note(b"MULTI", true), None);
        assert_eq!(t.note(b"SET", true), None);
        assert!(t.note(b"DEL", false).is_some());
        assert_eq!(t.note(b"DEL", false), None);
        assert_eq!(t.note(b"EXEC", true), None);
        assert_eq!(t.note(b"SET", false), None);
    }

    #[test]
    fn dbs_and_names() {
        let m = map(&[], &[("a:", "b:")]).with_db0(Some(4));
        assert_eq!((m.db(0), m.db(1), m.db(2)), (4, 9, 2));
        assert_eq!(m.key(b"a:x").as_ref(), b"b:x");
        assert_eq!(m.key(b"c:x").as_ref(), b"c:x");
        assert!(!m.keeps_names());
        assert!(KeyMap::default().is_identity());
    }
}
