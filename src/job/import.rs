//! `import`: replay RDB and AOF inputs into a live standalone Redis or Redis Cluster.
//!
//! First choice, for an empty standalone target and one RDB input: the full sync of
//! `job::fullsync` (the target loads the file itself). Everything below is the command path,
//! taken when that is ruled out (`--via commands`, or its preconditions) or given up.
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
//! Module values go as RESTORE payloads (the rewrite path wraps the same RESTORE). The
//! precheck asks the target's `MODULE LIST` (every master of a Cluster); a key whose module
//! the target surely lacks is refused before sending, naming its module type, and a "Bad
//! data format" reply to a module value names the type too (`job::modules` says how types are
//! matched to modules, and when it cannot tell).
//!
//! AOF commands go in groups of up to 256 inside one `MULTI`/`EXEC` with a marker, parts of
//! big keys likewise, so the writer can send them again after a fault without doubling them
//! (`sink::writer` says how each kind of unit survives a dropped connection or a restart).
//!
//! JSONL input (what `convert --format jsonl` writes) arrives as synthetic key records
//! (`input::jsonl`): auto mode rebuilds them by the rewrite path, since their payload is no
//! bytes a Redis wrote; `--mode restore` sends that payload all the same. Function and command
//! lines go as functions and AOF commands do.
//!
//! A Cluster target (detected) gets each unit at its slot's master (`sink::writer`).
//!
//! TLS targets (`rediss://`) need nothing here: the connections come from `net/`.
//!
//! Not here yet: renaming keys inside AOF commands (refused).

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::time::Instant;

use serde::Serialize;

pub use super::fullsync::Via;
use super::modules::{self, Needs, RowStatus, TargetModules};
use super::{Common, batch, fullsync};
use crate::error::{Error, Result};
use crate::input::{Event, Input, Kind};
use crate::net::cluster::{SlotMap, show_ranges};
use crate::net::{Conn, RedisUrl, ServerInfo as TargetInfo};
use crate::progress::Progress;
use crate::rdb::{Dialect, KeyRecord, Record, Value};
use crate::resp::write_command;
use crate::sink::Sink;
use crate::sink::resp::RespSink;
use crate::sink::stats::now_ms;
use crate::sink::writer::{
    ConflictRule, Marker, Unit, UnitKind, WriteStats, Writer, WriterOptions, library_name,
    marker_value,
};
use crate::text::quoted as show;

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
    pub to: RedisUrl,
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
    /// How long to keep reconnecting and resending after a fault (`--retry-timeout`).
    pub retry_for: std::time::Duration,
    /// `--via`: full sync when the target allows it, or commands.
    pub via: Via,
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
    pub(super) info: Option<TargetInfo>,
    /// What `MODULE LIST` said on each node, for refusing module keys at import time.
    #[serde(skip)]
    modules: TargetModules,
    /// What the scan of the inputs found (for the full sync's sizing hints).
    #[serde(skip)]
    pub(super) scan: Scan,
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
    /// How the keys went: `full-sync` (the target loaded them as a replica of rdbferry) or
    /// `commands`.
    pub via: String,
    /// Why a full sync was not used (`--via auto`), when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_sync_declined: Option<String>,
    /// Keys the target loaded by full sync.
    pub synced: u64,
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
    /// Units sent again after a fault (dropped connection, target busy or loading).
    pub resent: u64,
    /// What may have been lost without an error to show for it (a Cluster failover during
    /// the import): the exit status is 1 when any.
    pub warnings: Vec<String>,
    /// Reconnections to the target.
    pub reconnects: u64,
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
        let via = match &self.full_sync_declined {
            Some(why) => format!("{} (no full sync: {why})", self.via),
            None => self.via.clone(),
        };
        let written = if self.via == "full-sync" {
            format!(
                "{} ({} by full sync, {} functions)",
                self.written, self.synced, self.functions
            )
        } else {
            format!(
                "{} ({} restored, {} rewritten, {} commands, {} functions){}",
                self.written,
                self.restored,
                self.rewritten,
                self.commands,
                self.functions,
                if self.dry_run { " [dry run]" } else { "" }
            )
        };
        let rows: [(&str, String); 13] = [
            ("target", self.target.clone()),
            ("via", via),
            ("keys read", self.keys_read.to_string()),
            ("written", written),
            ("filtered", self.filtered.to_string()),
            ("expired", self.expired.to_string()),
            ("conflicts", self.conflicts.to_string()),
            ("errors", self.errors.to_string()),
            (
                "retries",
                format!("{} resent, {} reconnects", self.resent, self.reconnects),
            ),
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

pub(super) fn apply_rename<'k>(
    rename: &[(Vec<u8>, Vec<u8>)],
    key: &'k [u8],
) -> std::borrow::Cow<'k, [u8]> {
    for (old, new) in rename {
        if let Some(rest) = key.strip_prefix(old.as_slice()) {
            let mut k = new.clone();
            k.extend_from_slice(rest);
            return k.into();
        }
    }
    key.into()
}

pub(super) fn route(db: u64, key: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    db.hash(&mut h);
    key.hash(&mut h);
    h.finish()
}

pub use crate::keyslot::tmp_key_for as tmp_key;

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
    /// A string without TTL, for an `MSET` / `MSETNX` of many (db, key, value).
    Plain(u64, Vec<u8>, Vec<u8>),
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
    /// This import's id, in the markers it writes.
    run: u64,
    /// The target is a Cluster: units carry their slot, only db 0 exists.
    cluster: bool,
    /// Where function libraries go: a slot of each master (`[None]` when standalone).
    function_slots: Vec<Option<u16>>,
    /// The target's modules, from the precheck.
    modules: &'o TargetModules,
}

impl Ctx<'_> {
    fn map_db(&self, db: u64) -> u64 {
        self.opts.target_db(db)
    }

    /// A key's Cluster slot (None on a standalone target).
    fn slot_of(&self, key: &[u8]) -> Option<u16> {
        self.cluster.then(|| crate::keyslot::key_slot(key))
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
        if self.cluster && db != 0 {
            return Ok(Prepared::Refused(format!(
                "a Cluster has only db 0; map db {} there with --db-map {}=0",
                rec.db, rec.db
            )));
        }
        // A module value the target surely cannot load: refused before sending, naming the
        // type (RESTORE would only say "Bad data format").
        let module = modules::module_type(rec);
        if let Some(why) = module.and_then(|id| self.modules.refusal(id)) {
            return Ok(Prepared::Refused(why));
        }
        if let Some(v) = self.plain_value(rec)? {
            if !self.cluster && rec.expire_ms.is_none() {
                return Ok(Prepared::Plain(db, key.into_owned(), v.into_owned()));
            }
            let mut u = self.plain_set(rec, db, &key, &v);
            u.slot = self.slot_of(&key);
            return Ok(Prepared::Unit(u, false));
        }
        let payload_len = rec.raw.len() as u64 + 11;
        let known = min_rdb_version(rec.type_id, rec.version.dialect);
        let restore = match self.opts.mode {
            Mode::Restore => true,
            Mode::Rewrite => false,
            // A synthetic value (from JSONL) is no payload a Redis wrote: rebuild it.
            // Values bigger than a part go by the rewrite path in parts: a RESTORE payload is
            // built whole, and memory must not grow with the biggest value.
            Mode::Auto => {
                !rec.synthetic
                    && known.is_some_and(|v| v <= self.target_rdb)
                    && payload_len <= self.proto_max
                    && rec.serialized_len() <= self.opts.stream_min
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
            // Strings by their decoded length (an LZF string may be much bigger than its
            // record), the rest by their record.
            let len = if rec.type_id == crate::rdb::types::type_id::STRING {
                match rec
                    .value()
                    .map_err(|e| crate::rdb::Error::from_decode("", Some(&rec.key), e))?
                {
                    Value::String(s) => s.len() as u64,
                    Value::BigString(l) => l.len,
                    _ => 0,
                }
            } else {
                rec.serialized_len()
            };
            if len > self.opts.stream_min {
                if rec.type_id == crate::rdb::types::type_id::STRING && len > self.proto_max {
                    return Ok(Prepared::Refused(format!(
                        "string of {len} bytes exceeds the target's proto-max-bulk-len ({}): \
                         no command can build it there",
                        self.proto_max
                    )));
                }
                return Ok(Prepared::Big);
            }
            match self.rewrite(rec, &key)? {
                Ok(x) => x,
                Err(msg) => return Ok(Prepared::Refused(msg)),
            }
        };
        let route = route(db, &key);
        let mut u = Unit::new(db, key.into_owned(), bytes, replies, kind, route);
        u.slot = self.slot_of(&u.label);
        u.module = module.map(|id| format!("{} (encver {})", id.name(), id.encver()));
        Ok(Prepared::Unit(u, restore))
    }

    /// The value of a string key that goes as one `SET key value [NX] [PXAT ms]` (or, without
    /// TTL, in an `MSET`): one atomic command, cheaper for the target than RESTORE (which checks a CRC and parses a payload). Not in `--mode
    /// restore`, not when the record carries LRU/LFU data (only RESTORE sets them), not on
    /// targets before 6.2 (no PXAT), not for strings longer than a chunk.
    fn plain_value<'r>(&self, rec: &KeyRecord<'r>) -> Result<Option<std::borrow::Cow<'r, [u8]>>> {
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
        Ok((v.len() <= self.chunk).then_some(v))
    }

    /// `SET key value [NX] [PXAT ms]` for a value [`Ctx::plain_value`] gave.
    fn plain_set(&self, rec: &KeyRecord<'_>, db: u64, key: &[u8], v: &[u8]) -> Unit {
        let nx = self.opts.on_conflict != OnConflict::Replace;
        let ms;
        let mut args: Vec<&[u8]> = vec![b"SET", key, v];
        if nx {
            args.push(b"NX");
        }
        if let Some(e) = rec.expire_ms {
            ms = e.to_string();
            args.extend_from_slice(&[b"PXAT", ms.as_bytes()]);
        }
        let mut bytes = Vec::with_capacity(v.len() + key.len() + 64);
        write_command(&mut bytes, &args);
        Unit::new(
            db,
            key.to_vec(),
            bytes,
            1,
            UnitKind::Set { nx },
            route(db, key),
        )
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
#[derive(Debug, Clone, Default)]
pub(super) struct Scan {
    bytes: u64,
    keys: u64,
    dbs: BTreeSet<u64>,
    /// (input db, target db) pairs, for the Cluster rule (only db 0 there).
    db_pairs: BTreeSet<(u64, u64)>,
    biggest: u64,
    biggest_key: Vec<u8>,
    rdb_versions: BTreeSet<String>,
    /// Some input is JSON lines (no RDB version).
    jsonl: bool,
    needs_rewrite: u64,
    /// Module types of the keys that will be sent (not expired).
    modules: Needs,
    /// Module types with aux data (MODULE_AUX records), which is not imported.
    module_aux: BTreeSet<String>,
    scanned: bool,
    /// Keys that will be written (kept, not expired) per target db: (keys, keys with a TTL).
    pub(super) per_db: BTreeMap<u64, (u64, u64)>,
    /// Function libraries.
    pub(super) functions: u64,
}

impl Scan {
    /// Keys that will be written.
    pub(super) fn keys(&self) -> u64 {
        self.keys
    }
    /// Whether every input was read (stdin is not scanned).
    pub(super) fn scanned(&self) -> bool {
        self.scanned
    }
    /// Whether any key has a module value, or the input module aux data.
    pub(super) fn has_modules(&self) -> bool {
        !self.modules.is_empty() || !self.module_aux.is_empty()
    }
}

fn scan(inputs: &[String], common: &Common, opts: &ImportOptions, target_rdb: u32) -> Result<Scan> {
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
            match ev {
                Event::Rdb(Record::Key(k)) if common.filter.keep(k.db, &k.key, k.data_type()) => {
                    s.keys += 1;
                    s.dbs.insert(opts.target_db(k.db));
                    s.db_pairs.insert((k.db, opts.target_db(k.db)));
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
                        let e = s.per_db.entry(opts.target_db(k.db)).or_default();
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
                    s.dbs.insert(opts.target_db(db));
                    s.db_pairs.insert((db, opts.target_db(db)));
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

fn conflict_rule(c: OnConflict) -> &'static str {
    match c {
        OnConflict::Fail => "fail",
        OnConflict::Replace => "replace",
        OnConflict::Skip => "skip",
    }
}

/// The "empty" row from the non-empty dbs found (`db0: 12 keys`, ...).
fn empty_row(busy: &[String], opts: &ImportOptions) -> Check {
    if busy.is_empty() {
        return row(
            "empty",
            Status::Ok,
            "the target dbs written to are empty".into(),
        );
    }
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
            conflict_rule(opts.on_conflict)
        ),
    )
}

/// Whether `input` bytes fit in what `maxmemory` leaves free; `None` when CONFIG GET was
/// refused or there is no limit.
fn memory_fits(maxmemory: Option<u64>, used: u64, input: u64) -> Option<(bool, String)> {
    let m = maxmemory.filter(|&m| m > 0)?;
    let free = m.saturating_sub(used);
    Some((
        input <= free,
        format!("input {} vs {} free of {}", mb(input), mb(free), mb(m)),
    ))
}

/// The rows of a standalone target: its dbs written to are empty, and the input fits in
/// `maxmemory`.
fn standalone_data_rows(
    conn: &mut Conn,
    info: &TargetInfo,
    opts: &ImportOptions,
    sc: &Scan,
) -> Result<Vec<Check>> {
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
    let memory = match info.maxmemory {
        None => row(
            "maxmemory",
            Status::Warn,
            "CONFIG GET refused: not checked".into(),
        ),
        Some(0) => row("maxmemory", Status::Ok, "no limit".into()),
        Some(_) => match memory_fits(info.maxmemory, info.used_memory, sc.bytes) {
            Some((fits, detail)) => row(
                "maxmemory",
                if fits { Status::Ok } else { Status::Fail },
                detail,
            ),
            None => row("maxmemory", Status::Ok, "no limit".into()),
        },
    };
    Ok(vec![empty_row(&busy, opts), memory])
}

/// The rows that only a Cluster has: its masters, and every slot served.
fn cluster_rows(map: &SlotMap) -> Vec<Check> {
    let masters: Vec<String> = map.masters().iter().map(|m| m.to_string()).collect();
    let uncovered = map.uncovered();
    let slots = if uncovered.is_empty() {
        row(
            "slots covered",
            Status::Ok,
            format!("all {} slots have a master", crate::keyslot::SLOTS),
        )
    } else {
        let n: u32 = uncovered.iter().map(|&(a, b)| u32::from(b - a) + 1).sum();
        row(
            "slots covered",
            Status::Fail,
            format!(
                "{n} slots have no master (a write there fails with CLUSTERDOWN): {}",
                show_ranges(&uncovered)
            ),
        )
    };
    vec![
        row(
            "cluster",
            Status::Ok,
            format!("{} masters: {}", masters.len(), masters.join(", ")),
        ),
        slots,
    ]
}

/// The data rows of a Cluster: only db 0 exists (every input db must map there), every
/// master is empty, and each master's share of the input (by the slots it owns) fits in its
/// `maxmemory`.
fn cluster_data_rows(map: &SlotMap, opts: &ImportOptions, sc: &Scan) -> Result<Vec<Check>> {
    let mut checks = Vec::new();
    let other: Vec<String> = sc
        .db_pairs
        .iter()
        .filter(|(_, to)| *to != 0)
        .map(|(from, to)| {
            if from == to {
                format!("db{from}")
            } else {
                format!("db{from} (mapped to db{to})")
            }
        })
        .collect();
    checks.push(if !sc.scanned {
        row(
            "dbs",
            Status::Warn,
            "standard input is not scanned: keys of dbs other than 0 will be refused".into(),
        )
    } else if other.is_empty() {
        row("dbs", Status::Ok, "every key goes to db 0".into())
    } else {
        let first = sc.db_pairs.iter().find(|(_, to)| *to != 0).map(|p| p.0);
        row(
            "dbs",
            Status::Fail,
            format!(
                "a Cluster has only db 0, but the input has keys of {}: map them with --db-map {}=0",
                other.join(", "),
                first.unwrap_or(0)
            ),
        )
    });
    let mut busy = Vec::new();
    let mut keys = 0u64;
    let mut memory = Vec::new();
    let (mut refused, mut over) = (false, false);
    for (i, m) in map.masters().iter().enumerate() {
        let mut c = Conn::open(&m.url(&opts.to))?;
        let n = c.dbsize(0)?;
        if n > 0 {
            keys += n;
            busy.push(format!("{m}: {n}"));
        }
        let info = TargetInfo::query(&mut c)?;
        let owned = (0..crate::keyslot::SLOTS)
            .filter(|&s| map.owner(s) == Some(i))
            .count() as u64;
        let share = sc.bytes * owned / u64::from(crate::keyslot::SLOTS);
        match (
            info.maxmemory,
            memory_fits(info.maxmemory, info.used_memory, share),
        ) {
            (None, _) => refused = true,
            (_, Some((fits, detail))) => {
                over |= !fits;
                memory.push(format!("{m}: {detail}"));
            }
            (Some(_), None) => {}
        }
    }
    let busy = if busy.is_empty() {
        busy
    } else {
        vec![format!(
            "db0: {keys} keys over {} masters ({})",
            busy.len(),
            busy.join(", ")
        )]
    };
    checks.push(empty_row(&busy, opts));
    checks.push(if refused {
        row(
            "maxmemory",
            Status::Warn,
            "CONFIG GET refused: not checked".into(),
        )
    } else if memory.is_empty() {
        row("maxmemory", Status::Ok, "no limit on any master".into())
    } else {
        row(
            "maxmemory",
            if over { Status::Fail } else { Status::Ok },
            format!(
                "input share per master (by slots owned): {}",
                memory.join("; ")
            ),
        )
    });
    Ok(checks)
}

/// Connect to the target and check it against the inputs (see the module doc). An
/// unreachable target or a refused password is an error, not a row.
pub fn precheck(inputs: &[String], common: &Common, opts: &ImportOptions) -> Result<Precheck> {
    let mut conn = Conn::open(&opts.to)?;
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
    let cluster = if info.cluster {
        let map = SlotMap::discover(&opts.to)?;
        checks.extend(cluster_rows(&map));
        Some(map)
    } else {
        checks.push(row("cluster", Status::Ok, "standalone".into()));
        None
    };
    let mut vers: Vec<String> = sc.rdb_versions.iter().map(|v| format!("RDB {v}")).collect();
    if sc.jsonl {
        vers.push("JSONL".into());
    }
    let (st, detail) = if sc.needs_rewrite == 0 {
        (
            Status::Ok,
            format!(
                "target {} (RDB {}), input {}",
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
    let target_modules = query_modules(&mut conn, &opts.to, cluster.as_ref())?;
    let (st, detail) = target_modules.row(&sc.modules, &sc.module_aux, sc.scanned);
    checks.push(row(
        "modules",
        match st {
            RowStatus::Ok => Status::Ok,
            RowStatus::Warn => Status::Warn,
            RowStatus::Fail => Status::Fail,
        },
        detail,
    ));
    if info.info_refused {
        checks.push(row(
            "info",
            Status::Warn,
            "INFO refused (ACL): version from HELLO, memory not checked".into(),
        ));
    }
    checks.extend(match &cluster {
        Some(map) => cluster_data_rows(map, opts, &sc)?,
        None => standalone_data_rows(&mut conn, &info, opts, &sc)?,
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
    let mut pre = Precheck {
        checks,
        target_version: info.version.clone(),
        target_rdb_version: info.rdb_version,
        info: Some(info),
        modules: target_modules,
        scan: sc,
    };
    let via = match (opts.via, fullsync::precondition(inputs, opts, &pre)) {
        (Via::Commands, _) => "commands (--via commands)".to_string(),
        (_, None) => "full sync: the target loads the file itself as a replica of rdbferry, then is detached (if it still allows it)".into(),
        (Via::FullSync, Some(why)) => {
            pre.checks.push(row("via", Status::Fail, format!("--via full-sync is ruled out: {why}")));
            return Ok(pre);
        }
        (Via::Auto, Some(why)) => format!("commands (no full sync: {why})"),
    };
    pre.checks.push(row("via", Status::Ok, via));
    Ok(pre)
}

/// `MODULE LIST` of a standalone target, or of every master of a Cluster (a key's module
/// must be on the master of its slot).
fn query_modules(
    conn: &mut Conn,
    to: &RedisUrl,
    cluster: Option<&SlotMap>,
) -> Result<TargetModules> {
    let mut t = TargetModules::default();
    match cluster {
        None => t.query(conn, &to.addr())?,
        Some(map) => {
            for m in map.masters() {
                let mut c = Conn::open(&m.url(to))?;
                t.query(&mut c, &m.to_string())?;
            }
        }
    }
    Ok(t)
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
    let mut declined = None;
    if opts.via != Via::Commands {
        match fullsync::import(inputs, common, opts, pre, start)? {
            Ok(rep) => return Ok(rep),
            Err(why) if opts.via == Via::FullSync => {
                return Err(Error::Usage(format!("--via full-sync: {why}")));
            }
            Err(why) => declined = Some(why),
        }
    }
    let info = pre.info.clone().unwrap_or_default();
    // A Cluster: the writer sends each key to its slot's master and follows MOVED/ASK.
    let map = if info.cluster && !opts.dry_run {
        Some(SlotMap::discover(&opts.to)?)
    } else {
        None
    };
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
        run: run_id(),
        cluster: info.cluster,
        function_slots: match &map {
            Some(m) => (0..m.masters().len())
                .filter_map(|i| (0..crate::keyslot::SLOTS).find(|&s| m.owner(s) == Some(i)))
                .map(Some)
                .collect(),
            None => vec![None],
        },
        modules: &pre.modules,
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
                retry_for: opts.retry_for,
            },
            map.clone(),
        )?)
    };
    let mut rep = ImportReport {
        target: opts.to.redacted(),
        via: "commands".into(),
        full_sync_declined: declined,
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
    rep.resent = stats.resent;
    rep.warnings = stats.warnings;
    rep.reconnects = stats.reconnects;
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

pub(super) fn refuse(local: &mut WriteStats, what: &str, label: &[u8], db: u64, msg: &str) {
    local.errors += 1;
    if local.messages.len() < crate::sink::writer::MAX_MESSAGES {
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
    let mut group = AofGroup::new(ctx.run, ctx.cluster);
    let mut msets = MsetGroup::new(ctx.opts.on_conflict != OnConflict::Replace);
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
                        if let Some(u) = group.take(true) {
                            send(u)?;
                        }
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
                        Some(Prepared::Plain(db, key, value)) => {
                            rep.rewritten += 1;
                            if let Some(u) = msets.push(db, &key, &value) {
                                send(u)?;
                            }
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
                    // On a Cluster every master gets the library (a slot it owns routes there).
                    for slot in &ctx.function_slots {
                        rep.functions += 1;
                        let mut u = Unit::new(
                            0,
                            library_name(code).to_vec(),
                            bytes.clone(),
                            1,
                            UnitKind::Function,
                            0,
                        );
                        u.slot = *slot;
                        send(u)?;
                    }
                }
                Event::Rdb(_) => {}
                Event::Command { db, args } => {
                    progress.tick(pos, 1);
                    if !ctx.common.filter.keep_command(db, args) {
                        rep.filtered += 1;
                        return Ok(());
                    }
                    if !ctx.opts.rename.is_empty()
                        && crate::transform::commands::command_key(args).is_some()
                    {
                        return Err(Error::Usage(
                            "--rename does not apply to AOF commands yet; import the AOF without --rename".into(),
                        ));
                    }
                    if !in_commands {
                        if let Some(u) = msets.take() {
                            send(u)?;
                        }
                        if let Some(w) = writer {
                            w.barrier()?;
                        }
                        in_commands = true;
                    }
                    let tdb = ctx.map_db(db);
                    if ctx.cluster {
                        let name = args.first().copied().unwrap_or_default();
                        let control = name.eq_ignore_ascii_case(b"MULTI")
                            || name.eq_ignore_ascii_case(b"EXEC");
                        let why = match crate::transform::commands::command_slot(args) {
                            _ if control => None,
                            _ if tdb != 0 => Some(format!(
                                "a Cluster has only db 0; map db {db} there with --db-map {db}=0"
                            )),
                            Ok(Some(s)) => {
                                if let Some(u) = group.switch_slot(s) {
                                    send(u)?;
                                }
                                None
                            }
                            Ok(None) => Some(
                                "a command without a key cannot be routed to a Cluster node".into(),
                            ),
                            Err(e) => Some(e.to_string()),
                        };
                        if let Some(msg) = why {
                            let label =
                                args.iter().take(2).copied().collect::<Vec<_>>().join(&b' ');
                            refuse(local, "command", &label, tdb, &msg);
                            return Ok(());
                        }
                    }
                    if group.push(tdb, args) {
                        rep.commands += 1;
                    }
                    if let Some(u) = group.take(false) {
                        send(u)?;
                    }
                }
            }
            Ok(())
        },
    );
    if walked.is_ok()
        && let Some(u) = group.take(true)
    {
        send(u)?;
    }
    if walked.is_ok()
        && let Some(u) = msets.take()
    {
        send(u)?;
    }
    progress.finish();
    let walked = walked?;
    rep.bytes += walked.bytes;
    if let Some(w) = writer {
        w.barrier()?;
    }
    Ok(())
}

/// Most keys, and bytes, in one `MSET`.
const MSET_KEYS: usize = 512;
const MSET_BYTES: usize = 1 << 20;

/// Strings without TTL gathered into one `MSET` (`MSETNX` with `--on-conflict fail|skip`):
/// one command for many keys costs the target far less than a `SET` each. When `MSETNX`
/// sets nothing (a key exists), the writer sends its keys again one by one as `SET NX`, so
/// each conflict is told apart.
struct MsetGroup {
    nx: bool,
    db: u64,
    body: Vec<u8>,
    first: Vec<u8>,
    n: usize,
    /// Hashes of the keys in the group: a key seen twice (an input with a duplicated key)
    /// starts a new group, or `MSETNX` would set the second value over the first unseen.
    keys: std::collections::HashSet<u64>,
}

impl MsetGroup {
    fn new(nx: bool) -> MsetGroup {
        MsetGroup {
            nx,
            db: 0,
            body: Vec::new(),
            first: Vec::new(),
            n: 0,
            keys: Default::default(),
        }
    }

    /// Add a key; the group so far when it is full or of another db.
    fn push(&mut self, db: u64, key: &[u8], value: &[u8]) -> Option<Unit> {
        let h = route(db, key);
        let out = if self.n > 0 && (db != self.db || self.keys.contains(&h)) {
            self.take()
        } else {
            None
        };
        self.keys.insert(h);
        if self.n == 0 {
            self.db = db;
            self.first = key.to_vec();
        }
        for a in [key, value] {
            self.body.push(b'$');
            self.body
                .extend_from_slice(itoa::Buffer::new().format(a.len()).as_bytes());
            self.body.extend_from_slice(b"\r\n");
            self.body.extend_from_slice(a);
            self.body.extend_from_slice(b"\r\n");
        }
        self.n += 1;
        if out.is_none() && (self.n >= MSET_KEYS || self.body.len() >= MSET_BYTES) {
            return self.take();
        }
        out
    }

    /// The group as one unit.
    fn take(&mut self) -> Option<Unit> {
        if self.n == 0 {
            return None;
        }
        let name: &[u8] = if self.nx { b"MSETNX" } else { b"MSET" };
        let mut bytes = Vec::with_capacity(self.body.len() + 32);
        bytes.push(b'*');
        bytes.extend_from_slice(itoa::Buffer::new().format(self.n * 2 + 1).as_bytes());
        bytes.extend_from_slice(b"\r\n$");
        bytes.extend_from_slice(itoa::Buffer::new().format(name.len()).as_bytes());
        bytes.extend_from_slice(b"\r\n");
        bytes.extend_from_slice(name);
        bytes.extend_from_slice(b"\r\n");
        bytes.append(&mut self.body);
        let route = route(self.db, &self.first);
        let mut u = Unit::new(
            self.db,
            std::mem::take(&mut self.first),
            bytes,
            1,
            UnitKind::MultiSet { nx: self.nx },
            route,
        );
        u.count = self.n as u64;
        self.n = 0;
        self.keys.clear();
        Some(u)
    }
}

/// A number for this import, in the markers it writes, so that markers left by an earlier
/// import that was cut off are never taken for ours.
fn run_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 40)
}

/// The key the marker of AOF command groups lives under (one per db).
pub const AOF_MARKER: &[u8] = b"rdbferry:import-marker";

/// Most AOF commands in one group (one `MULTI`/`EXEC`), and most bytes, unless a
/// transaction of the AOF is longer: it is never split.
const GROUP_COMMANDS: u64 = 256;
const GROUP_BYTES: usize = 1 << 20;

/// AOF commands gathered into one `MULTI`/`EXEC` with a marker, so that a group sent again
/// after a dropped connection runs at most once (see `sink::writer`). The AOF's own
/// transactions lose their `MULTI`/`EXEC` and are kept whole inside one group.
struct AofGroup {
    run: u64,
    seq: u64,
    /// The db the group starts (and ends) in, and the one selected inside it.
    db: u64,
    cur: u64,
    bytes: Vec<u8>,
    count: u64,
    replies: usize,
    label: Vec<u8>,
    in_tx: bool,
    /// On a Cluster: the slot of the group's commands (a group never spans two).
    cluster: bool,
    slot: Option<u16>,
}

impl AofGroup {
    fn new(run: u64, cluster: bool) -> AofGroup {
        AofGroup {
            cluster,
            slot: None,
            run,
            seq: 0,
            db: 0,
            cur: 0,
            bytes: Vec::new(),
            count: 0,
            replies: 0,
            label: Vec::new(),
            in_tx: false,
        }
    }

    /// Add a command for target db `db`; false for the AOF's MULTI/EXEC (dropped).
    fn push(&mut self, db: u64, args: &[&[u8]]) -> bool {
        let name = args.first().copied().unwrap_or_default();
        if name.eq_ignore_ascii_case(b"MULTI") {
            self.in_tx = true;
            return false;
        }
        if name.eq_ignore_ascii_case(b"EXEC") {
            self.in_tx = false;
            return false;
        }
        if self.count == 0 {
            self.bytes.clear();
            write_command(&mut self.bytes, &[b"MULTI"]);
            self.replies = 1;
            self.db = db;
            self.cur = db;
            self.label = args.iter().take(2).copied().collect::<Vec<_>>().join(&b' ');
        }
        if db != self.cur {
            write_command(&mut self.bytes, &[b"SELECT", db.to_string().as_bytes()]);
            self.replies += 1;
            self.cur = db;
        }
        write_command(&mut self.bytes, args);
        self.replies += 1;
        self.count += 1;
        true
    }

    /// On a Cluster, before a command of slot `slot`: the group so far, when it was of
    /// another slot. (A transaction of the AOF whose keys span slots cannot run on a Cluster
    /// as one: it is split there.)
    fn switch_slot(&mut self, slot: u16) -> Option<Unit> {
        let out = if self.count > 0 && self.slot != Some(slot) {
            if self.in_tx {
                tracing::warn!("an AOF transaction spans Cluster slots: applied in parts");
            }
            let in_tx = self.in_tx;
            let u = self.take(true);
            self.in_tx = in_tx;
            u
        } else {
            None
        };
        self.slot = Some(slot);
        out
    }

    /// The marker key: one per db, or per slot on a Cluster.
    fn marker_key(&self) -> Vec<u8> {
        match (self.cluster, self.slot.and_then(crate::keyslot::slot_tag)) {
            (true, Some(tag)) => [AOF_MARKER, b":{", tag.as_bytes(), b"}"].concat(),
            _ => AOF_MARKER.to_vec(),
        }
    }

    /// The group as a unit when it is full (or `end`), never inside a transaction.
    fn take(&mut self, end: bool) -> Option<Unit> {
        if self.count == 0
            || self.in_tx && !end
            || !end && self.count < GROUP_COMMANDS && self.bytes.len() < GROUP_BYTES
        {
            return None;
        }
        if self.cur != self.db {
            write_command(
                &mut self.bytes,
                &[b"SELECT", self.db.to_string().as_bytes()],
            );
            self.replies += 1;
        }
        self.seq += 1;
        let value = marker_value(self.run, self.seq);
        let marker = self.marker_key();
        write_command(&mut self.bytes, &[b"SET", &marker, value.as_bytes()]);
        write_command(&mut self.bytes, &[b"EXEC"]);
        let mut u = Unit::new(
            self.db,
            std::mem::take(&mut self.label),
            std::mem::take(&mut self.bytes),
            self.replies + 2,
            UnitKind::Commands,
            0,
        );
        u.count = self.count;
        u.slot = self.slot;
        u.marker = Some(Marker {
            key: marker,
            run: self.run,
            seq: self.seq,
        });
        self.count = 0;
        self.replies = 0;
        self.in_tx = false;
        Some(u)
    }
}

/// Sends the commands of a big key in parts as they are produced, so neither the whole
/// value nor its commands are ever in memory. Each part ends at a command boundary and is
/// one `MULTI`/`EXEC` that also sets the key's marker to the part's number, so a part sent
/// again after a dropped connection is applied at most once.
struct PartSender<'w> {
    writer: &'w Writer,
    buf: Vec<u8>,
    /// Bytes of whole commands at the start of `buf`, and how many.
    scanned: usize,
    commands: usize,
    db: u64,
    route: u64,
    key: Vec<u8>,
    tmp: Vec<u8>,
    marker: Vec<u8>,
    run: u64,
    seq: u64,
    nx: bool,
    limit: usize,
    err: Option<Error>,
    slot: Option<u16>,
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
        let body = std::mem::replace(&mut self.buf, rest);
        self.seq += 1;
        let mut bytes = Vec::with_capacity(body.len() + 256);
        write_command(&mut bytes, &[b"MULTI"]);
        bytes.extend_from_slice(&body);
        let value = marker_value(self.run, self.seq);
        write_command(&mut bytes, &[b"SET", &self.marker, value.as_bytes()]);
        let mut replies = self.commands + 3;
        if last {
            if self.nx {
                write_command(&mut bytes, &[b"RENAMENX", &self.tmp, &self.key]);
                write_command(&mut bytes, &[b"DEL", &self.tmp]);
                replies += 2;
            } else {
                write_command(&mut bytes, &[b"RENAME", &self.tmp, &self.key]);
                replies += 1;
            }
        }
        write_command(&mut bytes, &[b"EXEC"]);
        let mut unit = Unit::new(
            self.db,
            self.key.clone(),
            bytes,
            replies,
            UnitKind::Part { last, nx: self.nx },
            self.route,
        );
        unit.count = u64::from(last);
        unit.slot = self.slot;
        unit.marker = Some(Marker {
            key: self.marker.clone(),
            run: self.run,
            seq: self.seq,
        });
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
/// commands on `tmp` sent in parts as they come, the last part renaming it into place.
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
        key: key.clone(),
        marker: [&tmp[..], b".part"].concat(),
        tmp: tmp.clone(),
        run: ctx.run,
        seq: 0,
        nx,
        limit: ctx.opts.part_bytes.max(1),
        err: None,
        slot: ctx.slot_of(&key),
    };
    write_command(&mut ps.buf, &[b"DEL", &tmp]);
    let mut r = rec.clone();
    r.key = std::borrow::Cow::Owned(tmp.clone());
    let res = if rec.type_id == crate::rdb::types::type_id::STRING {
        // SET and APPENDs of at most a chunk each, decoded as they go.
        stream_string(ctx, rec, &tmp, &mut ps)
    } else {
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
    ps.ship(true)
}

/// A big string as `SETRANGE tmp len-1 "\0"`, `SETRANGE tmp offset chunk`...,
/// `[PEXPIREAT tmp ms]` into the part sender: never more than a chunk of it in memory.
fn stream_string(
    ctx: &Ctx<'_>,
    rec: &KeyRecord<'_>,
    tmp: &[u8],
    ps: &mut PartSender<'_>,
) -> Result<()> {
    use std::io::Write as _;
    let value = rec
        .value()
        .map_err(|e| crate::rdb::Error::from_decode("", Some(&rec.key), e))?;
    let chunk = ctx.chunk.max(1);
    let total = match &value {
        Value::String(s) => s.len() as u64,
        Value::BigString(l) => l.len,
        _ => 0,
    };
    // The whole string is allocated once (SETRANGE at its last byte), then each chunk is
    // written in place at its offset: no reallocation as it grows (APPEND would copy it again
    // and again), and a chunk written twice gives the same bytes.
    let offset = std::cell::Cell::new(0u64);
    let mut cmd = Vec::with_capacity(chunk + 128);
    let mut put = |c: &[u8], ps: &mut PartSender<'_>| -> std::io::Result<()> {
        cmd.clear();
        if total == 0 {
            write_command(&mut cmd, &[b"SET", tmp, b""]);
        } else {
            if offset.get() == 0 {
                let last = (total - 1).to_string();
                write_command(&mut cmd, &[b"SETRANGE", tmp, last.as_bytes(), b"\0"]);
            }
            let at = offset.get().to_string();
            write_command(&mut cmd, &[b"SETRANGE", tmp, at.as_bytes(), c]);
        }
        offset.set(offset.get() + c.len() as u64);
        ps.write_all(&cmd)
    };
    let stopped = |ps: &mut PartSender<'_>, e: std::io::Error| -> Error {
        ps.err.take().unwrap_or_else(|| Error::io("<memory>", e))
    };
    match value {
        Value::String(s) => {
            if s.is_empty() {
                put(b"", ps).map_err(|e| stopped(ps, e))?;
            }
            for c in s.chunks(chunk) {
                put(c, ps).map_err(|e| stopped(ps, e))?;
            }
        }
        Value::BigString(l) => {
            let mut buf = Vec::with_capacity(chunk);
            let mut failed = None;
            let r = l.for_each_chunk(&mut |mut c| {
                while !c.is_empty() {
                    let take = (chunk - buf.len()).min(c.len());
                    buf.extend_from_slice(&c[..take]);
                    c = &c[take..];
                    if buf.len() == chunk {
                        if let Err(e) = put(&buf, ps) {
                            failed = Some(e);
                            return Err(std::io::Error::other("import stopped"));
                        }
                        buf.clear();
                    }
                }
                Ok(())
            });
            if let Some(e) = failed {
                return Err(stopped(ps, e));
            }
            r.map_err(|e| match e {
                crate::rdb::cursor::StreamError::Decode(e) => {
                    Error::from(crate::rdb::Error::from_decode("", Some(&rec.key), e))
                }
                crate::rdb::cursor::StreamError::Io(e) => Error::io("<memory>", e),
            })?;
            if !buf.is_empty() || offset.get() == 0 {
                put(&buf, ps).map_err(|e| stopped(ps, e))?;
            }
        }
        _ => {}
    }
    if let Some(ms) = rec.expire_ms {
        cmd.clear();
        write_command(&mut cmd, &[b"PEXPIREAT", tmp, ms.to_string().as_bytes()]);
        ps.write_all(&cmd).map_err(|e| stopped(ps, e))?;
    }
    Ok(())
}

/// Whether a `major.minor.patch` version is at least `major.minor`.
pub(super) fn version_at_least(v: &str, major: u32, minor: u32) -> bool {
    let mut it = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0)) >= (major, minor)
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
