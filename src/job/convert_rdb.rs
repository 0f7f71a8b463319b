//! `convert --format rdb`: an input written again as an RDB file for a chosen version
//! (`--rdb-version N`, default the input's), loadable by that version's server at start-up.
//!
//! Where it sits: an RDB input is walked in pieces (`batch::walk_pieces`): workers check each
//! key, let `rdb::reencode` decide between a byte copy and a re-encoding, and write the whole
//! key record into the piece's buffer ([`RdbPiece`]); the calling thread, in file order, only
//! notes each key's hash and hands the bytes to `sink::rdb::RdbCopy` (CRC-64 trailer). Other
//! inputs (JSON lines) go key by key. Filters, renames and db mapping apply as everywhere.
//! [`RdbOut`] is the writing half, shared with `split` and `--merge`, which feed one or
//! several of them.
//!
//! What the target version cannot hold (a stream below RDB 9, a function below 10, hash-field
//! TTLs below 12...) is an error naming the key, before the output is committed; with
//! `--lossy` it is left out and reported, key by key ([`ConvertReport::dropped`]).
//!
//! Valkey 9 is a target too (`--rdb-version valkey9`, header `VALKEY080`): Redis RDB 11 plus
//! Valkey's own field-TTL hash (`rdb::reencode`).
//!
//! Not done: AOF commands (they would have to be executed; import them into a server and
//! `fetch` its snapshot instead).

use std::collections::HashSet;
use std::hash::BuildHasherDefault;
use std::io::Write;

use super::convert::{ConvertOptions, ConvertReport};
use super::{Common, batch};
use crate::error::{Error, Result};
use crate::input::{Event, Input, Kind};
use crate::progress::Progress;
use crate::rdb::reencode::{self, Plan};
use crate::rdb::{DataType, KeyRecord, RdbReader, Record, Version};
use crate::sink::rdb::RdbCopy;
use crate::sink::stats::now_ms;
use crate::text::quoted;
use rayon::slice::ParallelSliceMut;

/// The oldest and newest RDB versions `--rdb-version` takes.
pub const VERSIONS: std::ops::RangeInclusive<u32> = 6..=12;

/// `--rdb-version valkey9`: Valkey 9's RDB (`VALKEY080`), kept among the numbers by the one
/// its header carries.
pub const VALKEY_9: u32 = 80;

/// An `--rdb-version` value: `6` to `12` (Redis), or `valkey9` (also `valkey-9`,
/// `VALKEY080`, `80`: Valkey 9's RDB, see [`VALKEY_9`]).
pub fn parse_rdb_version(s: &str) -> std::result::Result<u32, String> {
    let low = s.trim().to_ascii_lowercase();
    if ["valkey9", "valkey-9", "valkey080", "80"].contains(&low.as_str()) {
        return Ok(VALKEY_9);
    }
    match low.parse::<u32>() {
        Ok(n) if VERSIONS.contains(&n) => Ok(n),
        _ => Err(format!(
            "rdbferry writes RDB {} to {} (Redis), and valkey9 (Valkey 9's VALKEY080)",
            VERSIONS.start(),
            VERSIONS.end()
        )),
    }
}

/// The version written for an `--rdb-version` number.
fn version_of(n: u32) -> Version {
    match n {
        VALKEY_9 => Version {
            dialect: crate::rdb::Dialect::Valkey,
            number: VALKEY_9,
        },
        n => reencode::redis(n),
    }
}

/// How the written version is named in messages: `RDB 10`, `Valkey 9 (VALKEY080)`.
pub fn version_name(v: Version) -> String {
    match v.dialect {
        crate::rdb::Dialect::Valkey => format!("Valkey 9 (VALKEY{:03})", v.number),
        crate::rdb::Dialect::Redis => format!("RDB {}", v.number),
    }
}

/// What a key (or function library) present twice gets (`--on-conflict`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Conflict {
    /// An error (a loader refuses a duplicate key).
    #[default]
    Error,
    /// The first one is kept.
    Skip,
    /// The last one is kept (`--merge` writes the inputs last first and keeps the first).
    Replace,
}

/// What one key becomes, decided on a worker thread.
#[derive(Debug)]
pub enum Prep {
    /// Left out by the filters.
    Filtered,
    /// Left out because expired (`--skip-expired`).
    Expired,
    /// An empty collection: left out, as every loader drops one (and 6.0's stops on it).
    Empty,
    /// Written as `name` in `db`.
    Write {
        /// Target db.
        db: u64,
        /// Target name.
        name: Vec<u8>,
        /// How its value goes.
        plan: Plan,
    },
}

/// The version to write for `input`: `--rdb-version`, else the input's own.
pub fn target_version(input: &Input, wanted: Option<u32>) -> Result<Version> {
    if let Some(n) = wanted {
        if !VERSIONS.contains(&n) && n != VALKEY_9 {
            return Err(Error::Usage(format!(
                "--rdb-version {n}: rdbferry writes RDB {} to {} (Redis), and valkey9",
                VERSIONS.start(),
                VERSIONS.end()
            )));
        }
        return Ok(version_of(n));
    }
    let own = match (input.rdb_bytes(), input.kind) {
        (Some(data), _) => Version::parse_header(data).ok(),
        (None, Kind::Jsonl) => Some(crate::input::jsonl::VERSION),
        _ => None,
    };
    match own {
        Some(v) if v.dialect == crate::rdb::Dialect::Redis && VERSIONS.contains(&v.number) => Ok(v),
        Some(v) if v == version_of(VALKEY_9) => Ok(v),
        Some(v) => Err(Error::Usage(format!(
            "{}: the input is RDB {v}; give --rdb-version {}..{} or valkey9",
            input.name,
            VERSIONS.start(),
            VERSIONS.end()
        ))),
        None => Err(Error::Usage(format!(
            "{}: give --rdb-version for this kind of input",
            input.name
        ))),
    }
}

/// Decide what `k` becomes for `target`: filtered, expired, empty, or its plan. Every value
/// is walked first (corrupt: an error) and checked for a member twice (a loader stops the
/// server on that), so that a bad input stops here and not in a loader.
pub fn prepare(
    k: &KeyRecord<'_>,
    common: &Common,
    target: Version,
    skip_expired: bool,
    now: i64,
) -> std::result::Result<Prep, crate::rdb::DecodeError> {
    if let Some(left_out) = screen(k, common, skip_expired, now)? {
        return Ok(left_out);
    }
    let plan = reencode::reencode(k, target)?;
    Ok(Prep::Write {
        db: common.map.db(k.db),
        name: common.map.key(&k.key).into_owned(),
        plan,
    })
}

/// The checks of [`prepare`] before the value is planned: `Some` when the key is left out
/// (filtered, expired, empty), `None` when it goes on.
fn screen(
    k: &KeyRecord<'_>,
    common: &Common,
    skip_expired: bool,
    now: i64,
) -> std::result::Result<Option<Prep>, crate::rdb::DecodeError> {
    if !common.map.keep(k.db, &k.key, k.data_type()) {
        return Ok(Some(Prep::Filtered));
    }
    if skip_expired && k.expire_ms.is_some_and(|ms| ms <= now) {
        return Ok(Some(Prep::Expired));
    }
    let elements = k.validate()?;
    let coll = !matches!(
        k.data_type(),
        DataType::String | DataType::Stream | DataType::Module
    );
    if coll && elements == 0 {
        return Ok(Some(Prep::Empty));
    }
    if let Some(what) = crate::job::import::loadable::duplicate_member(k, elements) {
        let msg = format!("{what} appears twice in the value, which a loader refuses");
        return Err(crate::rdb::DecodeError::invalid(k.value_offset, msg));
    }
    Ok(None)
}

/// What a worker made of one piece of an RDB input for an [`RdbOut`]: the key records that
/// go, encoded whole (modifiers, type, name, value) back to back, and one [`Made`] per record.
/// The writing thread then only checks each key's hash against those written and hands the
/// bytes on: the per-key work (validation, re-encoding, hashing the name) is on the workers.
#[derive(Default)]
pub struct RdbPiece {
    bytes: Vec<u8>,
    made: Vec<Made>,
}

/// What became of one record of an [`RdbPiece`].
enum Made {
    /// Not a key: the writing thread handles the record itself.
    Record,
    /// Left out (filtered, expired, empty).
    Left(Prep),
    /// A key record, the piece's bytes up to `end` (from the previous one's end); `lost`:
    /// what it goes without (`--lossy`).
    Write {
        db: u64,
        hash: u64,
        end: usize,
        lost: Option<String>,
    },
    /// A key the target cannot hold (why).
    Unloadable { db: u64, hash: u64, why: String },
    /// A corrupt value: the walk stops here.
    Failed(Error),
}

/// What the workers of [`write_input`] need.
struct PieceCtx<'c> {
    common: &'c Common,
    target: Version,
    skip_expired: bool,
    now: i64,
    source: &'c str,
}

impl RdbPiece {
    /// Encode `recs` (on a worker), replacing what the piece held; stops after a failure.
    fn fill(&mut self, recs: &[Record<'_>], ctx: &PieceCtx<'_>) {
        self.bytes.clear();
        self.made.clear();
        for rec in recs {
            let made = match rec {
                Record::Key(k) => self.key(k, ctx).unwrap_or_else(|e| {
                    Made::Failed(Error::Rdb(crate::rdb::Error::from_decode(
                        ctx.source,
                        Some(&k.key),
                        e,
                    )))
                }),
                _ => Made::Record,
            };
            let failed = matches!(made, Made::Failed(_));
            self.made.push(made);
            if failed {
                break;
            }
        }
    }

    fn key(
        &mut self,
        k: &KeyRecord<'_>,
        ctx: &PieceCtx<'_>,
    ) -> std::result::Result<Made, crate::rdb::DecodeError> {
        if let Some(left_out) = screen(k, ctx.common, ctx.skip_expired, ctx.now)? {
            return Ok(Made::Left(left_out));
        }
        let db = ctx.common.map.db(k.db);
        let name = ctx.common.map.key(&k.key);
        let hash = key_hash(db, &name);
        let mark = self.bytes.len();
        let at = crate::sink::rdb::put_key_head(&mut self.bytes, ctx.target, k, &name, k.type_id);
        let done = reencode::reencode_into(k, ctx.target, &mut self.bytes);
        let (type_id, lost) = match done {
            Ok(reencode::Done::Copy) => {
                self.bytes.extend_from_slice(k.raw);
                (k.type_id, None)
            }
            Ok(reencode::Done::Written(t)) => (t, None),
            Ok(reencode::Done::Lossy(t, why)) => (t, Some(why)),
            Ok(reencode::Done::Unloadable(why)) => {
                self.bytes.truncate(mark);
                return Ok(Made::Unloadable { db, hash, why });
            }
            Err(e) => {
                self.bytes.truncate(mark);
                return Err(e);
            }
        };
        self.bytes[at] = type_id;
        Ok(Made::Write {
            db,
            hash,
            end: self.bytes.len(),
            lost,
        })
    }
}

/// One RDB output: the file's writer, the target version, and what was left out.
pub struct RdbOut<W: Write> {
    out: RdbCopy<W>,
    /// The version written.
    pub target: Version,
    lossy: bool,
    /// Where the file goes (for I/O errors).
    name: String,
    /// The input being written (for errors about what it holds).
    pub source: String,
    /// Hashes of the (db, key) pairs written: a loader stops on a duplicate key (an input
    /// may hold one, as cut Cluster dumps do; renames and merges can make one), so a second
    /// one is an error here first. Two keys sharing a 64-bit hash look like a duplicate too:
    /// a spurious error about once in 10^7 files of 2 million keys, never a bad file.
    seen: KeySet,
    /// Instead of `seen`, for one RDB input with no `--on-conflict`: the hashes in write
    /// order, checked for a repeat once the input is read ([`RdbOut::check_deferred`]). A
    /// sort of 16 MB for 2 million keys costs a tenth of the cache misses of a set that
    /// size; the file is not finished (no EOF, no checksum) if a key comes twice.
    deferred: Option<Vec<u64>>,
    /// Names and code hashes of the function libraries written (a loader refuses a library
    /// loaded twice).
    libraries: std::collections::HashMap<String, u64>,
    /// What a second key of the same name gets.
    pub on_conflict: Conflict,
    /// Keys and libraries not written because written already (`on_conflict`).
    pub skipped: u64,
    /// Keys written.
    pub keys: u64,
    /// Functions written.
    pub functions: u64,
    /// What was left out or written without a part (`--lossy`), one line per key.
    pub dropped: Vec<String>,
}

impl<W: Write> RdbOut<W> {
    /// Start the file: header and the AUX fields a server of `target` writes.
    pub fn new(w: W, name: &str, target: Version, lossy: bool) -> Result<Self> {
        let io = |e| Error::io(name, e);
        let mut out = RdbCopy::new(w, target).map_err(io)?;
        // AUX fields came in RDB 7; older loaders stop at them. Valkey writes `valkey-ver`
        // instead of `redis-ver` (8.0 on; a 9.0.1 dump in the corpus has no `redis-ver`).
        if target.redis_equivalent() >= 7 {
            let ctime = (now_ms() / 1000).to_string();
            let ver: (&[u8], &str) = match target.dialect {
                crate::rdb::Dialect::Valkey => (b"valkey-ver", "9.0.0"),
                crate::rdb::Dialect::Redis => (b"redis-ver", reencode::redis_ver(target.number)),
            };
            out.aux(ver.0, ver.1.as_bytes())
                .and_then(|()| out.aux(b"redis-bits", b"64"))
                .and_then(|()| out.aux(b"ctime", ctime.as_bytes()))
                .map_err(io)?;
        }
        Ok(RdbOut {
            out,
            target,
            lossy,
            name: name.into(),
            source: String::new(),
            seen: KeySet::default(),
            deferred: None,
            libraries: Default::default(),
            on_conflict: Conflict::Error,
            skipped: 0,
            keys: 0,
            functions: 0,
            dropped: Vec::new(),
        })
    }

    /// Whether (db, name) was written already (or one with the same 64-bit hash).
    pub fn has(&self, db: u64, name: &[u8]) -> bool {
        self.seen.contains(&key_hash(db, name))
    }

    /// Leave something out: an error without `--lossy`, a line of the report with it.
    fn drop_or_fail(&mut self, what: String, why: &str) -> Result<()> {
        if !self.lossy {
            return Err(Error::Input {
                path: self.source.clone(),
                msg: format!(
                    "{what}: {why}; {} cannot hold it (--lossy leaves it out)",
                    version_name(self.target)
                ),
            });
        }
        self.dropped.push(format!("{what}: {why}"));
        Ok(())
    }

    /// Note (db, key) as written: `Ok(false)` when it was already (kept once, as
    /// `--on-conflict` says), an error naming the key without `--on-conflict`. `hint`: the
    /// db's key count, when known, sizes the set once.
    fn first_time(
        &mut self,
        db: u64,
        hash: u64,
        hint: Option<(u64, u64)>,
        name: impl FnOnce() -> Vec<u8>,
    ) -> Result<bool> {
        if let Some(d) = &mut self.deferred {
            d.push(hash);
            return Ok(true);
        }
        if let Some((keys, _)) = hint {
            self.seen
                .reserve(usize::try_from(keys).unwrap_or(0).min(1 << 26));
        }
        if self.seen.insert(hash) {
            return Ok(true);
        }
        if self.on_conflict != Conflict::Error {
            self.skipped += 1;
            return Ok(false);
        }
        Err(Error::Input {
            path: self.source.clone(),
            msg: format!(
                "key {} (db {db}) appears twice (or shares its 64-bit hash with another key); a \
                 server would refuse the file (with --merge, --on-conflict replace|skip keeps one)",
                quoted(&name())
            ),
        })
    }

    /// The deferred check of an RDB input (see `deferred`): a hash twice is an error naming
    /// the key and where it is, found by reading the input again.
    fn check_deferred(&mut self, hashes: Vec<u64>, input: &Input, common: &Common) -> Result<()> {
        let mut sorted = hashes;
        sorted.par_sort_unstable();
        let Some(h) = sorted.windows(2).find(|w| w[0] == w[1]).map(|w| w[0]) else {
            return Ok(());
        };
        let mut at = Vec::new();
        if let Some(data) = input.rdb_bytes() {
            for rec in RdbReader::with_options(data, &input.name, common.read.clone())? {
                if let Record::Key(k) = rec?
                    && common.map.keep(k.db, &k.key, k.data_type())
                {
                    let (db, name) = (common.map.db(k.db), common.map.key(&k.key));
                    if key_hash(db, &name) == h {
                        at.push((db, name.into_owned(), k.offset));
                    }
                }
            }
        }
        let (db, name) = at.first().map_or((0, &b"?"[..]), |a| (a.0, &a.1[..]));
        let offsets: Vec<String> = at.iter().map(|a| format!("{:#x}", a.2)).collect();
        Err(Error::Input {
            path: self.source.clone(),
            msg: format!(
                "key {} (db {db}) appears twice (records at {}; or shares its 64-bit hash with \
                 another key); a server would refuse the file",
                quoted(name),
                offsets.join(", ")
            ),
        })
    }

    /// Write key `k` as `prep` says, into db `db` with the sizing `hint` when it is the
    /// first key there.
    pub fn key(&mut self, k: &KeyRecord<'_>, prep: Prep, hint: Option<(u64, u64)>) -> Result<()> {
        let Prep::Write { db, name, plan } = prep else {
            return Ok(());
        };
        let what = || format!("key {} (db {db})", quoted(&name));
        if !self.first_time(db, key_hash(db, &name), hint, || name.clone())? {
            return Ok(());
        }
        let name_out = self.name.clone();
        let io = |e| Error::io(name_out.clone(), e);
        match plan {
            Plan::Unloadable(why) => return self.drop_or_fail(what(), &why),
            Plan::Lossy(enc, why) => {
                self.drop_or_fail(what(), &why)?;
                self.out.select_db(db, hint).map_err(io)?;
                self.out.key_encoded(k, &name, &enc).map_err(io)?;
            }
            Plan::Encoded(enc) => {
                self.out.select_db(db, hint).map_err(io)?;
                self.out.key_encoded(k, &name, &enc).map_err(io)?;
            }
            Plan::Copy => {
                self.out.select_db(db, hint).map_err(io)?;
                self.out.key_raw(k, &name, k.raw).map_err(io)?;
            }
        }
        self.keys += 1;
        Ok(())
    }

    /// A key a worker encoded whole ([`RdbPiece`]): `made` says how, `bytes` are its record.
    fn key_made(
        &mut self,
        k: &KeyRecord<'_>,
        made: Made,
        bytes: &[u8],
        ctx: (&Common, Option<(u64, u64)>),
    ) -> Result<()> {
        let (common, hint) = ctx;
        let name = || common.map.key(&k.key).into_owned();
        let what = |db: u64| format!("key {} (db {db})", quoted(&name()));
        match made {
            Made::Write { db, hash, lost, .. } => {
                if !self.first_time(db, hash, hint, name)? {
                    return Ok(());
                }
                if let Some(why) = lost {
                    self.drop_or_fail(what(db), &why)?;
                }
                let name_out = self.name.clone();
                let io = |e| Error::io(name_out.clone(), e);
                self.out.select_db(db, hint).map_err(io)?;
                self.out.key_records(bytes).map_err(io)?;
                self.keys += 1;
                Ok(())
            }
            Made::Unloadable { db, hash, why } => {
                if self.first_time(db, hash, hint, name)? {
                    self.drop_or_fail(what(db), &why)?;
                }
                Ok(())
            }
            Made::Left(Prep::Empty) => {
                self.empty(k);
                Ok(())
            }
            Made::Failed(e) => Err(e),
            Made::Left(_) | Made::Record => Ok(()),
        }
    }

    /// A record other than a key: functions and module aux data go on when the target holds
    /// them; the rest (AUX, sizing hints) is the writer's own.
    pub fn record(&mut self, rec: &Record<'_>) -> Result<()> {
        let n = self.target.redis_equivalent();
        let name_out = self.name.clone();
        let io = |e| Error::io(name_out.clone(), e);
        match rec {
            Record::Function { code } => match reencode::function_unloadable(code, n) {
                None => {
                    if self.library_written(code)? {
                        return Ok(());
                    }
                    self.out.function(code).map_err(io)?;
                    self.functions += 1;
                }
                Some(why) => {
                    let (engine, lib) = crate::sink::jsonl::function_meta(code);
                    let what = format!("function library {lib} ({engine})");
                    self.drop_or_fail(what, why)?;
                }
            },
            Record::ModuleAux { raw, .. } if n >= 9 => self.out.module_aux(raw).map_err(io)?,
            Record::ModuleAux { id, .. } => {
                let what = format!("module aux data (module type {})", id.0);
                self.drop_or_fail(what, "module aux records came in RDB 9")?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Note an empty collection left out (a report line, not a loss).
    pub fn empty(&mut self, k: &KeyRecord<'_>) {
        self.dropped.push(format!(
            "key {} (db {}): an empty collection, which loaders drop",
            quoted(&k.key),
            k.db
        ));
    }

    /// Whether a library of this name was written already: the same code is written once,
    /// other code under the same name is a conflict.
    fn library_written(&mut self, code: &[u8]) -> Result<bool> {
        let (_, lib) = crate::sink::jsonl::function_meta(code);
        let h = crate::hash::hash64(code);
        match self.libraries.insert(lib.clone(), h) {
            None => Ok(false),
            Some(old) if old == h => Ok(true),
            Some(old) if self.on_conflict != Conflict::Error => {
                self.libraries.insert(lib, old);
                self.skipped += 1;
                Ok(true)
            }
            Some(_) => Err(Error::Input {
                path: self.source.clone(),
                msg: format!("function library {lib} appears twice, with different code"),
            }),
        }
    }

    /// [`RdbOut::finish`], with the report of a conversion of `input` into this file.
    pub fn finish_report(
        mut self,
        input: String,
        filtered: u64,
        expired: u64,
    ) -> Result<ConvertReport> {
        let rep = ConvertReport {
            input,
            output: self.name.clone(),
            keys: self.keys,
            filtered,
            expired,
            commands: 0,
            functions: self.functions,
            dropped: std::mem::take(&mut self.dropped),
        };
        self.finish()?;
        Ok(rep)
    }

    /// End the file (EOF and CRC-64); returns the writer.
    pub fn finish(self) -> Result<W> {
        self.out.finish().map_err(|e| Error::io(self.name, e))
    }
}

/// The hash [`RdbOut`] remembers a written key by.
fn key_hash(db: u64, key: &[u8]) -> u64 {
    crate::hash::hash64(key) ^ crate::hash::fmix64(db.wrapping_add(1))
}

/// The set of [`key_hash`]es written: they are well mixed already, so the set uses them as
/// they are instead of hashing them again.
type KeySet = HashSet<u64, BuildHasherDefault<Prehashed>>;

/// A `Hasher` for values that are hashes already ([`KeySet`]).
#[derive(Default)]
struct Prehashed(u64);

impl std::hash::Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = crate::hash::hash64(bytes) ^ self.0.rotate_left(5);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The sizing hints of an RDB input, per input db, as it declares them (RESIZEDB).
#[derive(Debug, Default)]
pub struct Hints {
    db: u64,
    per_db: std::collections::BTreeMap<u64, (u64, u64)>,
}

impl Hints {
    /// Note a record.
    pub fn note(&mut self, rec: &Record<'_>) {
        match rec {
            Record::SelectDb(db) => self.db = *db,
            Record::ResizeDb {
                db_size,
                expires_size,
            } => {
                self.per_db.insert(self.db, (*db_size, *expires_size));
            }
            _ => {}
        }
    }

    /// The hint for keys of input db `db`, once (`None` after).
    pub fn take(&mut self, db: u64) -> Option<(u64, u64)> {
        self.per_db.remove(&db)
    }
}

/// Convert one input into `w` as an RDB file.
pub fn convert_rdb(
    name: &str,
    w: Box<dyn Write + Send>,
    out_name: &str,
    common: &Common,
    opts: &ConvertOptions,
) -> Result<ConvertReport> {
    let input = Input::open(name)?;
    let target = target_version(&input, opts.rdb_version)?;
    let mut out = RdbOut::new(w, out_name, target, opts.lossy)?;
    let (filtered, expired) = write_input(&input, &mut out, common, opts.skip_expired, true)?;
    out.finish_report(name.into(), filtered, expired)
}

/// Write every key and record of `input` to `out`; returns the keys (filtered, expired).
/// `hints`: one input, whose RESIZEDB sizes go on (when every key is kept) and whose keys
/// are checked for a repeat once read (`RdbOut::deferred`). An RDB file is encoded in pieces
/// on workers ([`RdbPiece`]); other inputs key by key.
pub fn write_input<W: Write>(
    input: &Input,
    out: &mut RdbOut<W>,
    common: &Common,
    skip_expired: bool,
    hints: bool,
) -> Result<(u64, u64)> {
    out.source = input.name.clone();
    let mut w = PieceWriter {
        out,
        common,
        // A hint only helps when every key of the db goes on into one db.
        use_hints: hints && common.map.is_identity(),
        sizes: Hints::default(),
        filtered: 0,
        expired: 0,
        progress: Progress::new(input.size, &input.name, common.quiet),
        source: &input.name,
    };
    let res = match input.rdb_bytes() {
        Some(data) => {
            let defer = hints && w.out.on_conflict == Conflict::Error;
            w.out.deferred = defer.then(Vec::new);
            let ctx = PieceCtx {
                common,
                target: w.out.target,
                skip_expired,
                now: now_ms(),
                source: &input.name,
            };
            let work = |recs: &[Record<'_>], piece: &mut RdbPiece| piece.fill(recs, &ctx);
            let parallel = batch::parallel_for(data.len() as u64);
            batch::walk_pieces(input, data, common, parallel, work, &mut w).and_then(|_| {
                match w.out.deferred.take() {
                    Some(hashes) => w.out.check_deferred(hashes, input, common),
                    None => Ok(()),
                }
            })
        }
        None => w.events(input, skip_expired),
    };
    w.progress.finish();
    res?;
    Ok((w.filtered, w.expired))
}

/// The writing thread's side of [`write_input`].
struct PieceWriter<'o, 'c, W: Write> {
    out: &'o mut RdbOut<W>,
    common: &'c Common,
    use_hints: bool,
    sizes: Hints,
    filtered: u64,
    expired: u64,
    progress: Progress,
    source: &'c str,
}

impl<W: Write> PieceWriter<'_, '_, W> {
    /// A key, as a worker made it.
    fn key(&mut self, k: &KeyRecord<'_>, made: Made, bytes: &[u8], pos: u64) -> Result<()> {
        self.progress.tick(pos, 1);
        match made {
            Made::Left(Prep::Filtered) => self.filtered += 1,
            Made::Left(Prep::Expired) => self.expired += 1,
            made => {
                let hint = self.sizes.take(k.db).filter(|_| self.use_hints);
                self.out.key_made(k, made, bytes, (self.common, hint))?;
            }
        }
        Ok(())
    }

    /// An input that is not an RDB file (JSON lines), key by key on workers.
    fn events(&mut self, input: &Input, skip_expired: bool) -> Result<()> {
        let (common, target, name) = (self.common, self.out.target, self.source);
        let now = now_ms();
        let work = |k: &KeyRecord<'_>| {
            prepare(k, common, target, skip_expired, now)
                .map_err(|e| Error::Rdb(crate::rdb::Error::from_decode(name, Some(&k.key), e)))
        };
        batch::walk(input, common, work, |ev, prep, pos| match (ev, prep) {
            (Event::Rdb(Record::Key(k)), Some(prep)) => {
                self.progress.tick(pos, 1);
                match prep {
                    Prep::Filtered => self.filtered += 1,
                    Prep::Expired => self.expired += 1,
                    Prep::Empty => self.out.empty(k),
                    prep => {
                        let hint = self.sizes.take(k.db).filter(|_| self.use_hints);
                        self.out.key(k, prep, hint)?;
                    }
                }
                Ok(())
            }
            (ev, _) => self.other(ev, pos),
        })
        .map(|_| ())
    }
}

impl<'a, W: Write> batch::Pieces<'a, RdbPiece> for PieceWriter<'_, '_, W> {
    fn piece(&mut self, recs: &[Record<'a>], piece: &mut RdbPiece, pos: u64) -> Result<()> {
        let mut start = 0;
        for (rec, made) in recs.iter().zip(piece.made.drain(..)) {
            let end = match &made {
                Made::Write { end, .. } => *end,
                _ => start,
            };
            match rec {
                Record::Key(k) => self.key(k, made, &piece.bytes[start..end], pos)?,
                rec => {
                    self.sizes.note(rec);
                    self.out.record(rec)?;
                }
            }
            start = end;
        }
        Ok(())
    }

    fn event(&mut self, ev: Event<'_, '_>, pos: u64) -> Result<()> {
        self.other(ev, pos)
    }
}

impl<W: Write> PieceWriter<'_, '_, W> {
    /// An event other than a key: a record for the writer, or an AOF command (refused).
    fn other(&mut self, ev: Event<'_, '_>, pos: u64) -> Result<()> {
        match ev {
            Event::Rdb(rec) => {
                self.sizes.note(rec);
                self.out.record(rec)
            }
            Event::Command { .. } => Err(Error::Input {
                path: self.source.into(),
                msg: format!(
                    "AOF commands at byte {pos} cannot be written to an RDB file \
                     (import them into a server, then `rdbferry fetch` its snapshot)"
                ),
            }),
        }
    }
}

/// `--merge`: every input into one RDB file `w`, for the newest version among them (or
/// `--rdb-version`). A key in two inputs is an error, or with `--on-conflict skip` the first
/// one is kept, with `replace` the last one: the inputs are then written last first, each key
/// kept the first time it is seen, so that one pass suffices.
pub fn merge_rdb(
    inputs: &[String],
    w: Box<dyn Write + Send>,
    out_name: &str,
    common: &Common,
    opts: &ConvertOptions,
) -> Result<ConvertReport> {
    let mut opened = Vec::new();
    let mut target: Option<Version> = None;
    for name in inputs {
        let input = Input::open(name)?;
        let v = target_version(&input, opts.rdb_version)?;
        if target.is_some_and(|t| t.dialect != v.dialect) {
            return Err(Error::Usage(format!(
                "{name}: Redis and Valkey dumps merged: say which to write (--rdb-version)"
            )));
        }
        target = Some(target.map_or(v, |t| if v.number > t.number { v } else { t }));
        opened.push(input);
    }
    let Some(target) = target else {
        return Err(Error::Usage("--merge needs inputs".into()));
    };
    if opts.on_conflict == Conflict::Replace {
        opened.reverse();
    }
    let mut out = RdbOut::new(w, out_name, target, opts.lossy)?;
    out.on_conflict = opts.on_conflict;
    let (mut filtered, mut expired) = (0, 0);
    for input in &opened {
        let (f, e) = write_input(input, &mut out, common, opts.skip_expired, false)?;
        filtered += f;
        expired += e;
    }
    if out.skipped > 0 {
        out.dropped.push(format!(
            "{} key(s) or libraries present in several inputs, kept once (--on-conflict)",
            out.skipped
        ));
    }
    out.finish_report(inputs.join(" + "), filtered, expired)
}

/// [`merge_rdb`] into the file `output` (written whole or not at all; an input is refused)
/// or standard output.
pub fn merge(
    inputs: &[String],
    output: Option<&std::path::Path>,
    common: &Common,
    opts: &ConvertOptions,
) -> Result<ConvertReport> {
    if opts.format != crate::sink::Format::Rdb {
        return Err(Error::Usage("--merge goes with --format rdb".into()));
    }
    let Some(path) = output else {
        return merge_rdb(
            inputs,
            Box::new(std::io::stdout()),
            "<stdout>",
            common,
            opts,
        );
    };
    crate::sink::file::refuse_input(path, inputs)?;
    let file = crate::sink::file::AtomicFile::create(path)?;
    let w = Box::new(file.writer()?);
    let rep = merge_rdb(inputs, w, &path.display().to_string(), common, opts)?;
    file.commit()?;
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rdb_version_values() {
        for (s, n) in [
            ("6", 6),
            ("12", 12),
            ("valkey9", 80),
            ("VALKEY080", 80),
            ("80", 80),
        ] {
            assert_eq!(parse_rdb_version(s), Ok(n), "{s}");
        }
        for bad in ["5", "13", "79", "valkey8", "valkey", ""] {
            assert!(parse_rdb_version(bad).is_err(), "{bad}");
        }
        assert_eq!(version_name(version_of(80)), "Valkey 9 (VALKEY080)");
        assert_eq!(version_name(version_of(10)), "RDB 10");
    }
}
