//! The scan of the inputs before anything is written: sizes, dbs, versions, module types and
//! key counts, for the precheck and the full sync.

use std::collections::{BTreeMap, BTreeSet};

use super::modules::{self, Needs};
use super::options::*;
use crate::error::Result;
use crate::input::{Event, Input, Kind};
use crate::job::Common;
use crate::rdb::Record;
use crate::time::now_ms;

/// What a scan of the inputs found, for the precheck.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    pub(crate) bytes: u64,
    pub(crate) keys: u64,
    pub(crate) dbs: BTreeSet<u64>,
    /// (input db, target db) pairs, for the Cluster rule (only db 0 there).
    pub(crate) db_pairs: BTreeSet<(u64, u64)>,
    pub(crate) biggest: u64,
    pub(crate) biggest_key: Vec<u8>,
    pub(crate) rdb_versions: BTreeSet<String>,
    /// Some input is JSON lines (no RDB version).
    pub(crate) jsonl: bool,
    pub(crate) needs_rewrite: u64,
    /// Module types of the keys that will be sent (not expired).
    pub(crate) modules: Needs,
    /// Module types with aux data (MODULE_AUX records), which is not imported.
    pub(crate) module_aux: BTreeSet<String>,
    pub(crate) scanned: bool,
    /// Keys that will be written (kept, not expired) per target db: (keys, keys with a TTL).
    pub(crate) per_db: BTreeMap<u64, (u64, u64)>,
    /// Function libraries.
    pub(crate) functions: u64,
}

impl Scan {
    /// Keys that will be written.
    pub(crate) fn keys(&self) -> u64 {
        self.keys
    }
    /// Whether every input was read (stdin is not scanned).
    pub(crate) fn scanned(&self) -> bool {
        self.scanned
    }
    /// Whether any key has a module value, or the input module aux data.
    pub(crate) fn has_modules(&self) -> bool {
        !self.modules.is_empty() || !self.module_aux.is_empty()
    }
}

pub(crate) fn scan(
    inputs: &[String],
    common: &Common,
    opts: &ImportOptions,
    target_rdb: u32,
) -> Result<Scan> {
    let mut s = Scan {
        scanned: true,
        ..Default::default()
    };
    let now = now_ms();
    for name in inputs {
        let input = Input::open(name)?;
        if input.kind == Kind::Stdin {
            s.scanned = false;
            continue;
        }
        s.bytes += input.size.unwrap_or(0);
        let w = input.walk(&common.read, &mut |ev, _| {
            // A signal during the scan stops the run here, before the target is touched.
            common.cancel.check()?;
            match ev {
                Event::Rdb(Record::Key(k)) if common.map.keep(k.db, &k.key, k.data_type()) => {
                    s.keys += 1;
                    s.dbs.insert(common.map.db(k.db));
                    s.db_pairs.insert((k.db, common.map.db(k.db)));
                    let len = k.raw.len() as u64 + 11;
                    if len > s.biggest {
                        s.biggest = len;
                        s.biggest_key = k.key.to_vec();
                    }
                    if k.synthetic {
                        s.jsonl = true;
                    }
                    // What will be written: keys not expired yet.
                    if k.expire_ms.is_none_or(|ms| ms > now) {
                        if let Some(id) = modules::module_type(k) {
                            modules::add_need(&mut s.modules, id);
                        }
                        let e = s.per_db.entry(common.map.db(k.db)).or_default();
                        e.0 += 1;
                        e.1 += k.expire_ms.is_some() as u64;
                    }
                    // JSONL keys take the rewrite path anyway, but in --mode restore.
                    let restored = !k.synthetic || opts.mode == Mode::Restore;
                    if restored
                        && min_rdb_version(k.type_id, k.version.dialect)
                            .is_none_or(|v| v > target_rdb)
                    {
                        s.needs_rewrite += 1;
                    }
                }
                Event::Command { db, .. } => {
                    s.dbs.insert(common.map.db(db));
                    s.db_pairs.insert((db, common.map.db(db)));
                }
                Event::Rdb(Record::ModuleAux { id, .. }) => {
                    s.module_aux.insert(id.name());
                }
                Event::Rdb(Record::Function { .. }) => s.functions += 1,
                _ => {}
            }
            Ok(())
        })?;
        if let Some(v) = w.rdb_version {
            s.rdb_versions.insert(v);
        }
    }
    Ok(s)
}
