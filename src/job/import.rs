//! `import`: replay RDB and AOF inputs into a live standalone Redis.
//!
//! Pipeline: each input is walked with [`batch::walk`]; rayon workers turn every key into a
//! [`Unit`] (a `RESTORE`, or the commands of the rewrite path) in parallel, and the units go,
//! in file order, to the pipelined [`Writer`] (`sink::redis`). AOF commands are sent in order
//! on one connection, after everything queued before them has been acknowledged.
//!
//! How a key is written:
//! - restore: `RESTORE key ttl payload [REPLACE] ABSTTL [IDLETIME s | FREQ f]`; the payload is
//!   the value's raw bytes with a footer stamped with the lower of the file's and the target's
//!   RDB version (FORMATS §9: a plain string from a v10 file restores into 6.2 with footer 9).
//! - rewrite (`--mode rewrite`, encodings the target cannot load, payloads over
//!   `proto-max-bulk-len`): the key is built under a temporary name and renamed into place:
//!   `MULTI, DEL tmp, <commands on tmp>, [PEXPIREAT tmp], RENAME tmp key | RENAMENX tmp key +
//!   DEL tmp, EXEC`. A key is therefore never visible half-built and never doubled when the
//!   unit is sent again; with `--on-conflict fail|skip` a 0 from `RENAMENX` is the conflict.
//!   Strings longer than the chunk size go as `SET` + `APPEND`s. Values whose input record
//!   exceeds [`MULTI_MAX`] are built without MULTI (the server would queue them whole): the
//!   temporary key is deleted first, so a retry starts clean, and only the final rename makes
//!   the key visible.
//!
//! TLS targets (`rediss://`) need nothing here: the connections come from `net/`.
//!
//! Not here yet: Cluster targets, JSONL input, retries after a dropped connection, and
//! renaming keys inside AOF commands (refused).

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::time::Instant;

use serde::Serialize;

use super::{Common, batch};
use crate::error::{Error, Result};
use crate::input::{Event, Input, Kind};
use crate::progress::Progress;
use crate::rdb::{Dialect, KeyRecord, Record, Value};
use crate::resp::write_command;
use crate::sink::Sink;
use crate::sink::redis::{
    ConflictRule, Conn, TargetInfo, TargetUrl, Unit, UnitKind, WriteStats, Writer, WriterOptions,
    show,
};
use crate::sink::resp::RespSink;
use crate::sink::stats::now_ms;

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

/// `--on-conflict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnConflict {
    /// An existing key is an error.
    Fail,
    /// An existing key is overwritten.
    Replace,
    /// An existing key is left alone and counted.
    Skip,
}

/// Options of `import`.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The target.
    pub to: TargetUrl,
    /// How keys are written.
    pub mode: Mode,
    /// What an existing key gets.
    pub on_conflict: OnConflict,
    /// Stop at the first refused key (else skip it, counted).
    pub stop_on_error: bool,
    /// `--rename OLD_PREFIX=NEW_PREFIX`, applied in order, first match wins.
    pub rename: Vec<(Vec<u8>, Vec<u8>)>,
    /// `--db-map SRC=DST`.
    pub db_map: BTreeMap<u64, u64>,
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
}

impl ImportOptions {
    /// Where keys of input db `db` go: `--db-map`, else the URL's `/N` for input db 0, else
    /// the same db (the rule `verify` follows too, so the two agree).
    pub fn target_db(&self, db: u64) -> u64 {
        match self.db_map.get(&db) {
            Some(&d) => d,
            None if db == 0 && self.to.explicit_db => self.to.db,
            None => db,
        }
    }
}

/// Status of one precheck row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Worth knowing; does not stop the import.
    Warn,
    /// Stops the import unless `--force`.
    Fail,
}

/// One precheck row.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub check: String,
    /// Outcome.
    pub status: Status,
    /// Details.
    pub detail: String,
}

/// The precheck: the target's facts and the rows.
#[derive(Debug, Clone, Serialize)]
pub struct Precheck {
    /// Rows, in order.
    pub checks: Vec<Check>,
    /// Target version (empty when unreachable).
    pub target_version: String,
    /// Target RDB version.
    pub target_rdb_version: u32,
    #[serde(skip)]
    info: Option<TargetInfo>,
}

impl Precheck {
    /// Whether any row failed.
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.status == Status::Fail)
    }

    /// The rows as a text table.
    pub fn to_table(&self) -> String {
        let w = self
            .checks
            .iter()
            .map(|c| c.check.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let mut s = format!("{:<w$}  {:<6}  detail\n", "check", "status");
        for c in &self.checks {
            let st = match c.status {
                Status::Ok => "ok",
                Status::Warn => "warn",
                Status::Fail => "FAIL",
            };
            s += &format!("{:<w$}  {:<6}  {}\n", c.check, st, c.detail);
        }
        s
    }
}

/// The summary of an import.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportReport {
    /// Target (redacted URL).
    pub target: String,
    /// Keys read from the inputs.
    pub keys_read: u64,
    /// Keys, commands and functions written.
    pub written: u64,
    /// Keys written with RESTORE.
    pub restored: u64,
    /// Keys written by the rewrite path.
    pub rewritten: u64,
    /// AOF commands sent.
    pub commands: u64,
    /// Function libraries sent.
    pub functions: u64,
    /// Keys left out by filters.
    pub filtered: u64,
    /// Keys left out because already expired.
    pub expired: u64,
    /// Keys (or libraries) that already existed and were left alone.
    pub conflicts: u64,
    /// Keys, commands or libraries refused (by the target or before sending).
    pub errors: u64,
    /// The first error messages, each naming its key.
    pub error_messages: Vec<String>,
    /// Input bytes read.
    pub bytes: u64,
    /// Wall time, seconds.
    pub elapsed_s: f64,
    /// Nothing was written.
    pub dry_run: bool,
}

impl ImportReport {
    /// Keys per second (read).
    pub fn keys_per_s(&self) -> f64 {
        self.keys_read as f64 / self.elapsed_s.max(1e-9)
    }
    /// Input MB per second.
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed_s.max(1e-9)
    }
    /// The summary as a text table.
    pub fn to_table(&self) -> String {
        let mut s = String::new();
        let rows: [(&str, String); 11] = [
            ("target", self.target.clone()),
            ("keys read", self.keys_read.to_string()),
            (
                "written",
                format!(
                    "{} ({} restored, {} rewritten, {} commands, {} functions){}",
                    self.written,
                    self.restored,
                    self.rewritten,
                    self.commands,
                    self.functions,
                    if self.dry_run { " [dry run]" } else { "" }
                ),
            ),
            ("filtered", self.filtered.to_string()),
            ("expired", self.expired.to_string()),
            ("conflicts", self.conflicts.to_string()),
            ("errors", self.errors.to_string()),
            ("elapsed", format!("{:.3} s", self.elapsed_s)),
            ("keys/s", format!("{:.0}", self.keys_per_s())),
            ("MB/s", format!("{:.1}", self.mb_per_s())),
            ("bytes", self.bytes.to_string()),
        ];
        for (k, v) in &rows {
            s += &format!("{k:<10}  {v}\n");
        }
        s
    }
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

fn apply_rename<'k>(rename: &[(Vec<u8>, Vec<u8>)], key: &'k [u8]) -> std::borrow::Cow<'k, [u8]> {
    for (old, new) in rename {
        if let Some(rest) = key.strip_prefix(old.as_slice()) {
            let mut k = new.clone();
            k.extend_from_slice(rest);
            return k.into();
        }
    }
    key.into()
}

fn route(db: u64, key: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    db.hash(&mut h);
    key.hash(&mut h);
    h.finish()
}

pub use crate::sink::redis::tmp_key;

fn count_commands(buf: &[u8]) -> Result<usize> {
    let mut n = 0;
    let mut pos = 0;
    let mut args = Vec::new();
    while pos < buf.len() {
        match crate::resp::parse_command(&buf[pos..], &mut args) {
            Ok(Some(used)) => {
                pos += used;
                n += 1;
            }
            _ => return Err(Error::Usage("internal: bad rewrite encoding".into())),
        }
    }
    Ok(n)
}

/// A rewrite unit (bytes, replies, kind), or why the key cannot be sent.
type Rewritten = std::result::Result<(Vec<u8>, usize, UnitKind), String>;

/// What a key became on a worker thread.
enum Prepared {
    Filtered,
    Expired,
    Unit(Unit, bool),
    Refused(String),
    /// Too big to prepare whole: rewritten in parts on the calling thread
    /// ([`stream_rewrite`]).
    Big,
}

/// Everything a worker needs to prepare a key.
struct Ctx<'o> {
    common: &'o Common,
    opts: &'o ImportOptions,
    target_rdb: u32,
    proto_max: u64,
    chunk: usize,
    now: i64,
    /// `SET ... PXAT` exists (6.2+).
    set_pxat: bool,
}

impl Ctx<'_> {
    fn map_db(&self, db: u64) -> u64 {
        self.opts.target_db(db)
    }

    fn prepare(&self, rec: &KeyRecord<'_>) -> Result<Prepared> {
        if !self.common.filter.keep(rec.db, &rec.key, rec.data_type()) {
            return Ok(Prepared::Filtered);
        }
        if rec.expire_ms.is_some_and(|ms| ms <= self.now) {
            return Ok(Prepared::Expired);
        }
        let db = self.map_db(rec.db);
        let key = apply_rename(&self.opts.rename, &rec.key);
        if let Some(u) = self.plain_set(rec, db, &key)? {
            return Ok(Prepared::Unit(u, false));
        }
        let payload_len = rec.raw.len() as u64 + 11;
        let known = min_rdb_version(rec.type_id, rec.version.dialect);
        let restore = match self.opts.mode {
            Mode::Restore => true,
            Mode::Rewrite => false,
            Mode::Auto => {
                known.is_some_and(|v| v <= self.target_rdb) && payload_len <= self.proto_max
            }
        };
        let (bytes, replies, kind) = if restore {
            if payload_len > self.proto_max {
                return Ok(Prepared::Refused(format!(
                    "RESTORE payload of {payload_len} bytes exceeds the target's \
                     proto-max-bulk-len ({}); use --mode auto or rewrite",
                    self.proto_max
                )));
            }
            if known.is_none_or(|v| v > self.target_rdb) {
                return Ok(Prepared::Refused(format!(
                    "the target (RDB {}) cannot load encoding {} (type {}); use --mode auto or rewrite",
                    self.target_rdb,
                    crate::rdb::types::encoding_name(rec.type_id),
                    rec.type_id
                )));
            }
            let footer = match rec.version.dialect {
                Dialect::Redis => rec.version.number.min(self.target_rdb),
                Dialect::Valkey => self.target_rdb,
            } as u16;
            let payload = crate::rdb::dump::payload(rec.type_id, rec.raw, footer);
            let ttl = rec.expire_ms.unwrap_or(0).max(0).to_string();
            let mut args: Vec<&[u8]> = vec![b"RESTORE", &key, ttl.as_bytes(), &payload];
            if self.opts.on_conflict == OnConflict::Replace {
                args.push(b"REPLACE");
            }
            args.push(b"ABSTTL");
            let (idle, freq);
            if let Some(f) = rec.freq {
                freq = f.to_string();
                args.extend_from_slice(&[b"FREQ", freq.as_bytes()]);
            } else if let Some(i) = rec.idle {
                idle = i.to_string();
                args.extend_from_slice(&[b"IDLETIME", idle.as_bytes()]);
            }
            let mut out = Vec::with_capacity(payload.len() + 128);
            write_command(&mut out, &args);
            (out, 1, UnitKind::Restore)
        } else {
            if rec.type_id != crate::rdb::types::type_id::STRING
                && rec.serialized_len() > self.opts.stream_min
            {
                return Ok(Prepared::Big);
            }
            match self.rewrite(rec, &key)? {
                Ok(x) => x,
                Err(msg) => return Ok(Prepared::Refused(msg)),
            }
        };
        Ok(Prepared::Unit(
            Unit {
                db,
                route: route(db, &key),
                label: key.into_owned(),
                bytes,
                replies,
                kind,
            },
            restore,
        ))
    }

    /// A string key as one `SET key value [NX] [PXAT ms]`: one atomic command, cheaper for
    /// the target than RESTORE (which checks a CRC and parses a payload). Not in `--mode
    /// restore`, not when the record carries LRU/LFU data (only RESTORE sets them), not on
    /// targets before 6.2 (no PXAT), not for strings longer than a chunk.
    fn plain_set(&self, rec: &KeyRecord<'_>, db: u64, key: &[u8]) -> Result<Option<Unit>> {
        if rec.type_id != crate::rdb::types::type_id::STRING
            || self.opts.mode == Mode::Restore
            || !self.set_pxat
            || rec.idle.is_some()
            || rec.freq.is_some()
            || rec.raw.len() > self.chunk
        {
            return Ok(None);
        }
        let value = rec
            .value()
            .map_err(|e| crate::rdb::Error::from_decode("", Some(&rec.key), e))?;
        let Value::String(v) = value else {
            return Ok(None);
        };
        if v.len() > self.chunk {
            return Ok(None);
        }
        let nx = self.opts.on_conflict != OnConflict::Replace;
        let ms;
        let mut args: Vec<&[u8]> = vec![b"SET", key, &v];
        if nx {
            args.push(b"NX");
        }
        if let Some(e) = rec.expire_ms {
            ms = e.to_string();
            args.extend_from_slice(&[b"PXAT", ms.as_bytes()]);
        }
        let mut bytes = Vec::with_capacity(v.len() + key.len() + 64);
        write_command(&mut bytes, &args);
        Ok(Some(Unit {
            db,
            route: route(db, key),
            label: key.to_vec(),
            bytes,
            replies: 1,
            kind: UnitKind::Set { nx },
        }))
    }

    /// The rewrite path: see the module doc. `Ok(Err(why))` refuses the key before sending.
    fn rewrite(&self, rec: &KeyRecord<'_>, key: &[u8]) -> Result<Rewritten> {
        let value = rec
            .value()
            .map_err(|e| crate::rdb::Error::from_decode("", Some(&rec.key), e))?;
        // Redis checks SET, APPEND and SETRANGE results against proto-max-bulk-len: such a
        // string cannot exist on this target, and sending it would leave a half-built key
        // (an error inside EXEC does not undo the commands before it).
        let len = match &value {
            Value::String(s) => s.len() as u64,
            Value::BigString(l) => l.len,
            _ => 0,
        };
        if len > self.proto_max {
            return Ok(Err(format!(
                "string of {len} bytes exceeds the target's proto-max-bulk-len ({}): \
                 no command can build it there",
                self.proto_max
            )));
        }
        let tmp = tmp_key(key);
        let multi = rec.serialized_len() <= MULTI_MAX;
        let nx = self.opts.on_conflict != OnConflict::Replace;
        let mut out = Vec::with_capacity(rec.raw.len() * 2 + 256);
        if multi {
            write_command(&mut out, &[b"MULTI"]);
        }
        write_command(&mut out, &[b"DEL", &tmp]);
        match value {
            Value::String(s) => self.string(&mut out, &tmp, &s, rec.expire_ms),
            Value::BigString(l) => {
                let mut first = true;
                let mut buf = Vec::with_capacity(self.chunk);
                let flush = |buf: &mut Vec<u8>, out: &mut Vec<u8>, first: &mut bool| {
                    let cmd: &[u8] = if *first { b"SET" } else { b"APPEND" };
                    write_command(out, &[cmd, &tmp, buf]);
                    buf.clear();
                    *first = false;
                };
                let chunk = self.chunk;
                let r = l.for_each_chunk(&mut |c| {
                    let mut c = c;
                    while !c.is_empty() {
                        let take = (chunk - buf.len()).min(c.len());
                        buf.extend_from_slice(&c[..take]);
                        c = &c[take..];
                        if buf.len() == chunk {
                            flush(&mut buf, &mut out, &mut first);
                        }
                    }
                    Ok(())
                });
                if let Err(e) = r {
                    return Err(match e {
                        crate::rdb::cursor::StreamError::Decode(e) => {
                            crate::rdb::Error::from_decode("", Some(&rec.key), e).into()
                        }
                        crate::rdb::cursor::StreamError::Io(e) => Error::io("<memory>", e),
                    });
                }
                if !buf.is_empty() || first {
                    flush(&mut buf, &mut out, &mut first);
                }
                if let Some(ms) = rec.expire_ms {
                    write_command(&mut out, &[b"PEXPIREAT", &tmp, ms.to_string().as_bytes()]);
                }
            }
            _ => {
                // Collections, streams, modules: the RESP sink's bounded commands, on `tmp`.
                let mut r = rec.clone();
                r.key = std::borrow::Cow::Owned(tmp.clone());
                let mut s = RespSink::new(std::mem::take(&mut out), "");
                s.assume_db(r.db);
                s.legacy_streams = self.target_rdb < 10;
                s.key(&r)?;
                out = s.into_inner();
            }
        }
        if nx {
            write_command(&mut out, &[b"RENAMENX", &tmp, key]);
            write_command(&mut out, &[b"DEL", &tmp]);
        } else {
            write_command(&mut out, &[b"RENAME", &tmp, key]);
        }
        if multi {
            write_command(&mut out, &[b"EXEC"]);
        }
        let n = count_commands(&out)?;
        Ok(Ok((out, n, UnitKind::Rewrite { nx, multi })))
    }

    fn string(&self, out: &mut Vec<u8>, tmp: &[u8], s: &[u8], expire: Option<i64>) {
        let mut parts = s.chunks(self.chunk.max(1));
        write_command(out, &[b"SET", tmp, parts.next().unwrap_or_default()]);
        for p in parts {
            write_command(out, &[b"APPEND", tmp, p]);
        }
        if let Some(ms) = expire {
            write_command(out, &[b"PEXPIREAT", tmp, ms.to_string().as_bytes()]);
        }
    }
}

/// What a scan of the inputs found, for the precheck.
#[derive(Debug, Default)]
struct Scan {
    bytes: u64,
    keys: u64,
    dbs: BTreeSet<u64>,
    biggest: u64,
    biggest_key: Vec<u8>,
    rdb_versions: BTreeSet<String>,
    needs_rewrite: u64,
    scanned: bool,
}

fn scan(inputs: &[String], common: &Common, opts: &ImportOptions, target_rdb: u32) -> Result<Scan> {
    let mut s = Scan {
        scanned: true,
        ..Default::default()
    };
    for name in inputs {
        let input = Input::open(name)?;
        if input.kind == Kind::Stdin {
            s.scanned = false;
            continue;
        }
        s.bytes += input.size.unwrap_or(0);
        let w = input.walk(&common.read, &mut |ev, _| {
            match ev {
                Event::Rdb(Record::Key(k)) if common.filter.keep(k.db, &k.key, k.data_type()) => {
                    s.keys += 1;
                    s.dbs.insert(opts.target_db(k.db));
                    let len = k.raw.len() as u64 + 11;
                    if len > s.biggest {
                        s.biggest = len;
                        s.biggest_key = k.key.to_vec();
                    }
                    if min_rdb_version(k.type_id, k.version.dialect).is_none_or(|v| v > target_rdb)
                    {
                        s.needs_rewrite += 1;
                    }
                }
                Event::Command { db, .. } => {
                    s.dbs.insert(opts.target_db(db));
                }
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

fn row(check: &str, status: Status, detail: String) -> Check {
    Check {
        check: check.into(),
        status,
        detail,
    }
}

fn mb(n: u64) -> String {
    format!("{:.1} MB", n as f64 / 1e6)
}

/// Connect to the target and check it against the inputs (see the module doc). An
/// unreachable target or a refused password is an error, not a row.
pub fn precheck(inputs: &[String], common: &Common, opts: &ImportOptions) -> Result<Precheck> {
    let mut conn = Conn::open(&opts.to, std::time::Duration::from_secs(10))?;
    let info = TargetInfo::query(&mut conn)?;
    let mut checks = vec![row(
        "connect",
        Status::Ok,
        format!(
            "{} ({}authenticated)",
            opts.to.redacted(),
            if opts.to.has_password() { "" } else { "not " }
        ),
    )];
    let sc = scan(inputs, common, opts, info.rdb_version)?;
    checks.push(row(
        "cluster",
        if info.cluster {
            Status::Fail
        } else {
            Status::Ok
        },
        if info.cluster {
            "the target is a Cluster: not supported yet".into()
        } else {
            "standalone".into()
        },
    ));
    let vers: Vec<String> = sc.rdb_versions.iter().cloned().collect();
    let (st, detail) = if sc.needs_rewrite == 0 {
        (
            Status::Ok,
            format!(
                "target {} (RDB {}), input RDB {}",
                info.version,
                info.rdb_version,
                if vers.is_empty() {
                    "-".into()
                } else {
                    vers.join(", ")
                }
            ),
        )
    } else {
        (
            if opts.mode == Mode::Restore {
                Status::Fail
            } else {
                Status::Warn
            },
            format!(
                "target {} (RDB {}) cannot load the encoding of {} keys: {}",
                info.version,
                info.rdb_version,
                sc.needs_rewrite,
                if opts.mode == Mode::Restore {
                    "--mode restore will fail them"
                } else {
                    "they go by the rewrite path"
                }
            ),
        )
    };
    checks.push(row("version", st, detail));
    let dbs: Vec<u64> = if sc.scanned {
        sc.dbs.iter().copied().collect()
    } else {
        info.keyspace.keys().copied().collect()
    };
    // DBSIZE per db written to (INFO keyspace may be refused, and leaves out empty dbs).
    let mut busy = Vec::new();
    for &db in &dbs {
        let n = conn.dbsize(db)?;
        if n > 0 {
            busy.push(format!("db{db}: {n} keys"));
        }
    }
    checks.push(if busy.is_empty() {
        row(
            "empty",
            Status::Ok,
            "the target dbs written to are empty".into(),
        )
    } else {
        row(
            "empty",
            if opts.on_conflict == OnConflict::Fail {
                Status::Fail
            } else {
                Status::Warn
            },
            format!(
                "{} (--on-conflict {})",
                busy.join(", "),
                match opts.on_conflict {
                    OnConflict::Fail => "fail",
                    OnConflict::Replace => "replace",
                    OnConflict::Skip => "skip",
                }
            ),
        )
    });
    if info.info_refused {
        checks.push(row(
            "info",
            Status::Warn,
            "INFO refused (ACL): version from HELLO, memory not checked".into(),
        ));
    }
    checks.push(match info.maxmemory {
        None => row(
            "maxmemory",
            Status::Warn,
            "CONFIG GET refused: not checked".into(),
        ),
        Some(0) => row("maxmemory", Status::Ok, "no limit".into()),
        Some(m) => {
            let free = m.saturating_sub(info.used_memory);
            row(
                "maxmemory",
                if sc.bytes > free {
                    Status::Fail
                } else {
                    Status::Ok
                },
                format!("input {} vs {} free of {}", mb(sc.bytes), mb(free), mb(m)),
            )
        }
    });
    checks.push(match info.proto_max_bulk_len {
        None => row(
            "proto-max-bulk-len",
            Status::Warn,
            "CONFIG GET refused: 512 MB assumed".into(),
        ),
        Some(p) if sc.biggest > p => row(
            "proto-max-bulk-len",
            if opts.mode == Mode::Restore {
                Status::Fail
            } else {
                Status::Ok
            },
            format!(
                "biggest value {} ({}) is over {}: {}",
                mb(sc.biggest),
                show(&sc.biggest_key),
                mb(p),
                if opts.mode == Mode::Restore {
                    "RESTORE cannot send it (--mode auto rewrites it)"
                } else {
                    "rewritten in chunks (a string that big cannot exist there)"
                }
            ),
        ),
        Some(p) => row(
            "proto-max-bulk-len",
            Status::Ok,
            format!("biggest value {} within {}", mb(sc.biggest), mb(p)),
        ),
    });
    Ok(Precheck {
        checks,
        target_version: info.version.clone(),
        target_rdb_version: info.rdb_version,
        info: Some(info),
    })
}

/// Import every input into the target. `pre` is the precheck already run (its failures
/// are the caller's to judge, with `--force`).
pub fn import(
    inputs: &[String],
    common: &Common,
    opts: &ImportOptions,
    pre: &Precheck,
) -> Result<ImportReport> {
    let start = Instant::now();
    let info = pre.info.clone().unwrap_or_default();
    if info.cluster {
        // Not even with --force: every key of another slot would be a MOVED error.
        return Err(Error::Target {
            target: opts.to.addr(),
            msg: "the target is a Redis Cluster: cluster import is not supported yet".into(),
        });
    }
    let proto_max = info.proto_max_bulk_len.unwrap_or(512 << 20);
    let ctx = Ctx {
        common,
        opts,
        target_rdb: info.rdb_version,
        proto_max,
        // Chunks well under the limit, so SET/APPEND commands always fit.
        chunk: (proto_max / 2).clamp(1, 8 << 20) as usize,
        now: now_ms(),
        set_pxat: version_at_least(&info.version, 6, 2),
    };
    let writer = if opts.dry_run {
        None
    } else {
        Some(Writer::open(
            &opts.to,
            WriterOptions {
                connections: opts.connections,
                pipeline: opts.pipeline,
                conflict: match opts.on_conflict {
                    OnConflict::Fail => ConflictRule::Fail,
                    OnConflict::Skip => ConflictRule::Skip,
                    OnConflict::Replace => ConflictRule::Replace,
                },
                stop_on_error: opts.stop_on_error,
            },
        )?)
    };
    let mut rep = ImportReport {
        target: opts.to.redacted(),
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let mut local = WriteStats::default();
    let mut res = Ok(());
    for name in inputs {
        res = import_one(name, &ctx, writer.as_ref(), &info, &mut rep, &mut local);
        if res.is_err() {
            break;
        }
    }
    let (stats, fatal) = match writer {
        Some(w) => w.finish(),
        None => (
            WriteStats {
                written: rep.restored + rep.rewritten + rep.commands + rep.functions,
                ..Default::default()
            },
            None,
        ),
    };
    rep.written = stats.written;
    rep.conflicts = stats.conflicts;
    rep.errors = stats.errors + local.errors;
    rep.error_messages = local.messages;
    rep.error_messages.extend(stats.messages);
    rep.elapsed_s = start.elapsed().as_secs_f64();
    if let Some(e) = fatal {
        return Err(e);
    }
    match res {
        // A stop after a refused key is reported through the counts and messages.
        Err(Error::Usage(m)) if m.contains("--on-error stop") && rep.errors > 0 => Ok(rep),
        Err(e) => Err(e),
        Ok(()) => Ok(rep),
    }
}

fn refuse(local: &mut WriteStats, what: &str, label: &[u8], db: u64, msg: &str) {
    local.errors += 1;
    if local.messages.len() < crate::sink::redis::MAX_MESSAGES {
        local
            .messages
            .push(format!("{what} {} (db {db}): {msg}", show(label)));
    }
}

fn import_one(
    name: &str,
    ctx: &Ctx<'_>,
    writer: Option<&Writer>,
    info: &TargetInfo,
    rep: &mut ImportReport,
    local: &mut WriteStats,
) -> Result<()> {
    let input = Input::open(name)?;
    let mut progress = Progress::new(input.size, name, ctx.common.quiet);
    let stop = |local: &WriteStats| {
        ctx.opts.stop_on_error && local.errors > 0 || writer.is_some_and(|w| w.stopped())
    };
    let stopped = || Error::Usage("import stopped after an error (--on-error stop)".into());
    let send = |u: Unit| -> Result<()> {
        match writer {
            Some(w) => w.send(u),
            None => Ok(()),
        }
    };
    // Whether the last thing sent was an ordered command (then keys wait for it, and the
    // reverse).
    let mut in_commands = false;
    let walked = batch::walk(
        &input,
        &ctx.common.read,
        |k| ctx.prepare(k),
        |ev, prepared, pos| {
            if stop(local) {
                return Err(stopped());
            }
            match ev {
                Event::Rdb(Record::Key(k)) => {
                    progress.tick(pos, 1);
                    rep.keys_read += 1;
                    if in_commands {
                        if let Some(w) = writer {
                            w.barrier()?;
                        }
                        in_commands = false;
                    }
                    match prepared {
                        Some(Prepared::Filtered) => rep.filtered += 1,
                        Some(Prepared::Expired) => rep.expired += 1,
                        Some(Prepared::Refused(msg)) => {
                            let key = apply_rename(&ctx.opts.rename, &k.key);
                            refuse(local, "key", &key, ctx.map_db(k.db), &msg);
                        }
                        Some(Prepared::Big) => {
                            rep.rewritten += 1;
                            if let Some(w) = writer {
                                stream_rewrite(ctx, k, w)?;
                            }
                        }
                        Some(Prepared::Unit(u, restored)) => {
                            if restored {
                                rep.restored += 1;
                            } else {
                                rep.rewritten += 1;
                            }
                            send(u)?;
                        }
                        None => {}
                    }
                }
                Event::Rdb(Record::Function { code }) => {
                    if info.rdb_version < 10 {
                        refuse(
                            local,
                            "function library",
                            library_name(code),
                            0,
                            &format!(
                                "the target (Redis {}) has no functions (7.0+)",
                                info.version
                            ),
                        );
                        return Ok(());
                    }
                    let mut args: Vec<&[u8]> = vec![b"FUNCTION", b"LOAD"];
                    if ctx.opts.on_conflict == OnConflict::Replace {
                        args.push(b"REPLACE");
                    }
                    args.push(code);
                    let mut bytes = Vec::new();
                    write_command(&mut bytes, &args);
                    rep.functions += 1;
                    send(Unit {
                        db: 0,
                        label: library_name(code).to_vec(),
                        bytes,
                        replies: 1,
                        kind: UnitKind::Function,
                        route: 0,
                    })?;
                }
                Event::Rdb(_) => {}
                Event::Command { db, args } => {
                    progress.tick(pos, 1);
                    if !ctx.common.filter.keep_command(db, args) {
                        rep.filtered += 1;
                        return Ok(());
                    }
                    if !ctx.opts.rename.is_empty()
                        && crate::transform::filter::command_key(args).is_some()
                    {
                        return Err(Error::Usage(
                            "--rename does not apply to AOF commands yet; import the AOF without --rename".into(),
                        ));
                    }
                    if !in_commands {
                        if let Some(w) = writer {
                            w.barrier()?;
                        }
                        in_commands = true;
                    }
                    let mut bytes = Vec::new();
                    write_command(&mut bytes, args);
                    rep.commands += 1;
                    send(Unit {
                        db: ctx.map_db(db),
                        label: args.iter().take(2).copied().collect::<Vec<_>>().join(&b' '),
                        bytes,
                        replies: 1,
                        kind: UnitKind::Command,
                        route: 0,
                    })?;
                }
            }
            Ok(())
        },
    );
    progress.finish();
    let walked = walked?;
    rep.bytes += walked.bytes;
    if let Some(w) = writer {
        w.barrier()?;
    }
    Ok(())
}

/// Sends the commands of a big key in parts as they are produced, so neither the whole
/// value nor its commands are ever in memory. Each part ends at a command boundary.
struct PartSender<'w> {
    writer: &'w Writer,
    buf: Vec<u8>,
    /// Bytes of whole commands at the start of `buf`, and how many.
    scanned: usize,
    commands: usize,
    db: u64,
    route: u64,
    label: Vec<u8>,
    nx: bool,
    limit: usize,
    err: Option<Error>,
}

impl PartSender<'_> {
    fn ship(&mut self, last: bool) -> Result<()> {
        let mut args = Vec::new();
        while let Ok(Some(n)) = crate::resp::parse_command(&self.buf[self.scanned..], &mut args) {
            self.scanned += n;
            self.commands += 1;
        }
        if self.commands == 0 && !last {
            return Ok(());
        }
        let rest = self.buf.split_off(self.scanned);
        let bytes = std::mem::replace(&mut self.buf, rest);
        let unit = Unit {
            db: self.db,
            route: self.route,
            label: self.label.clone(),
            bytes,
            replies: self.commands,
            kind: UnitKind::Part { last, nx: self.nx },
        };
        self.scanned = 0;
        self.commands = 0;
        self.writer.send(unit)
    }
}

impl std::io::Write for PartSender<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= self.limit
            && let Err(e) = self.ship(false)
        {
            self.err = Some(e);
            return Err(std::io::Error::other("import stopped"));
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The rewrite path for a key too big to prepare whole: `DEL tmp`, the RESP sink's bounded
/// commands on `tmp` sent in parts as they come, then the rename (no MULTI).
fn stream_rewrite(ctx: &Ctx<'_>, rec: &KeyRecord<'_>, writer: &Writer) -> Result<()> {
    let db = ctx.map_db(rec.db);
    let key = apply_rename(&ctx.opts.rename, &rec.key).into_owned();
    let tmp = tmp_key(&key);
    let nx = ctx.opts.on_conflict != OnConflict::Replace;
    let mut ps = PartSender {
        writer,
        buf: Vec::with_capacity(ctx.opts.part_bytes + (64 << 10)),
        scanned: 0,
        commands: 0,
        db,
        route: route(db, &key),
        label: key.clone(),
        nx,
        limit: ctx.opts.part_bytes.max(1),
        err: None,
    };
    write_command(&mut ps.buf, &[b"DEL", &tmp]);
    let mut r = rec.clone();
    r.key = std::borrow::Cow::Owned(tmp.clone());
    let res = {
        let mut s = RespSink::new(&mut ps, "");
        s.assume_db(r.db);
        s.legacy_streams = ctx.target_rdb < 10;
        s.key(&r)
    };
    if let Some(e) = ps.err.take() {
        // Parts already sent built part of `tmp`: the writer deletes it at the end.
        writer.abandon(db, key);
        return Err(e);
    }
    if let Err(e) = res {
        writer.abandon(db, key);
        return Err(e);
    }
    if nx {
        write_command(&mut ps.buf, &[b"RENAMENX", &tmp, &key]);
        write_command(&mut ps.buf, &[b"DEL", &tmp]);
    } else {
        write_command(&mut ps.buf, &[b"RENAME", &tmp, &key]);
    }
    ps.ship(true)
}

/// Whether a `major.minor.patch` version is at least `major.minor`.
fn version_at_least(v: &str, major: u32, minor: u32) -> bool {
    let mut it = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0)) >= (major, minor)
}

/// The library name from `#!lua name=NAME` on the code's first line, for messages.
fn library_name(code: &[u8]) -> &[u8] {
    let line = code.split(|&b| b == b'\n').next().unwrap_or_default();
    line.split(|&b| b == b' ')
        .find_map(|w| w.strip_prefix(b"name="))
        .unwrap_or(b"?")
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn renames_and_tmp_keys() {
        let r = vec![(b"a:".to_vec(), b"b:".to_vec())];
        assert_eq!(&*apply_rename(&r, b"a:1"), b"b:1");
        assert_eq!(&*apply_rename(&r, b"c:1"), b"c:1");
        assert_eq!(tmp_key(b"k"), b"{k}.rdbferry-tmp");
        assert_eq!(tmp_key(b"{t}k"), b"{t}k.rdbferry-tmp");
        assert_eq!(library_name(b"#!lua name=mylib\nredis..."), b"mylib");
        assert!(version_at_least("6.2.14", 6, 2));
        assert!(version_at_least("7.0.0", 6, 2));
        assert!(!version_at_least("6.0.9", 6, 2));
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
