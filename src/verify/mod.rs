//! `verify`: compare every key of a source (RDB, AOF, appendonlydir, JSONL, stdin, or a live
//! `redis://` server) with a live Redis target, after filters, renames and db mapping.
//!
//! First, for one RDB file without filters and a standalone target: the target's own snapshot
//! (`snapshot`: rdbferry asks for it as a replica does) is compared with the file by an
//! order-independent digest; when they agree, that is the answer. When they differ, or no
//! snapshot can be had, the keys are compared one by one as below, which names every
//! difference and applies the TTL tolerance.
//!
//! A sink-side stage of the pipeline, but one that reads: source values are decoded with the
//! library (so encodings may differ between source and target) and compared with what the
//! target answers to pipelined, batched commands over one connection ([`target::Conn`]) per
//! server. A live source ([`verify_live`], module `source`) is read with `SCAN`, then `DUMP`
//! and the TTL of each key; each payload becomes a [`KeyRecord`] like a file's record, so the
//! comparison below is the same for every source. The target is read with:
//!
//! - every key: `TYPE`, `PEXPIRETIME` (7.0+; `PTTL` before), and its size (`STRLEN`, `LLEN`,
//!   `SCARD`, `ZCARD`, `HLEN`, `XLEN`);
//! - strings: `GET` (`GETRANGE` in chunks when big); lists: `LRANGE` in chunks, in order;
//!   sets: `SMISMEMBER` (`SISMEMBER` before 6.2); zsets: `ZMSCORE` (`ZSCORE` before 6.2),
//!   scores compared as exact `f64`s; hashes: `HMGET`, and `HPEXPIRETIME` for field TTLs on
//!   7.4+; streams: `XRANGE` in chunks, `XLEN`, the last id (`XINFO STREAM`), groups (`XINFO
//!   GROUPS`: name, last-delivered-id, pending count) and the `XPENDING` summary per group;
//! - module values: presence and type (the module's type name) only.
//!
//! Values that fit in one chunk are batched, many keys per round trip; a bigger value is
//! compared chunk by chunk on its own, so at most one big value's chunk is held at a time.
//!
//! A Cluster target (`cluster_enabled:1`, detected) gets one connection per master, each key's
//! reads batched to the master of its slot, and `MOVED` / `ASK` followed (`route`), so a verify
//! during or after a resharding works; only db 0 exists there.
//!
//! Not here: a consistent snapshot of a live source (a key that changes there during the run
//! is compared as `DUMP` returned it; one deleted after `SCAN` is counted as vanished), and
//! replicas. AOF commands are not replayed:
//! for AOF inputs (and JSONL files with command lines) only the keys of the RDB part (preamble
//! or base) that no later command mentions are compared, and the report says so. Keys whose
//! TTL has run out by the time they
//! are compared are counted as expired, never as differences.

mod route;
pub mod snapshot;
mod source;

use std::collections::{BTreeMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::input::{Event, Input, Kind};
use crate::job::Common;
use crate::net::cluster::Redirect;
use crate::net::{Conn, Pipe, RedisUrl, Version as Caps};
use crate::progress::Progress;
use crate::rdb::stream::{StreamEntry, StreamId, StreamValue};
use crate::rdb::value::{Tuples, zset_pairs};
use crate::rdb::{DataType, DecodeError, KeyRecord, Record, Value};
use crate::resp::Reply;
use crate::text::{excerpt, printable};
use route::{Dest, Router, find_redirect};

/// What to compare against, and how.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The target.
    pub target: RedisUrl,
    /// `--rename OLD=NEW`: key prefixes replaced, first match wins.
    pub renames: Vec<(Vec<u8>, Vec<u8>)>,
    /// `--db-map SRC=DST`.
    pub db_map: Vec<(u64, u64)>,
    /// Allowed TTL difference, ms.
    pub ttl_tolerance_ms: i64,
    /// Differences listed in the report (the rest are only counted).
    pub max_diffs: usize,
    /// `--via`: a snapshot of the target first, or key by key only.
    pub via: snapshot::Via,
    /// How long the target may take to start sending its snapshot (`--save-timeout`).
    pub save_within: std::time::Duration,
}

impl VerifyOptions {
    /// The target db for a source db: `--db-map`, else the URL's db for source db 0, else the
    /// same number.
    pub fn map_db(&self, db: u64) -> u64 {
        if let Some((_, d)) = self.db_map.iter().find(|(s, _)| *s == db) {
            return *d;
        }
        match (db, self.target.url_db()) {
            (0, Some(d)) => d,
            _ => db,
        }
    }

    /// The target key name for a source key (`--rename`).
    pub fn map_key(&self, key: &[u8]) -> Vec<u8> {
        for (old, new) in &self.renames {
            if let Some(rest) = key.strip_prefix(old.as_slice()) {
                let mut k = new.clone();
                k.extend_from_slice(rest);
                return k;
            }
        }
        key.to_vec()
    }
}

/// One difference between source and target.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    /// Source db.
    pub db: u64,
    /// Source key, printable (non-printable bytes as `\xNN`).
    pub key: String,
    /// Target db.
    pub target_db: u64,
    /// Target key, printable.
    pub target_key: String,
    /// `missing`, `type`, `value` or `ttl`.
    pub kind: &'static str,
    /// What differs (for values: the first differing element).
    pub detail: String,
}

/// What `verify` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// Input name.
    pub input: String,
    /// Target URL, password redacted.
    pub target: String,
    /// Target server version.
    pub target_version: String,
    /// How the target was read: `snapshot` (one RDB from the target, compared by digest) or
    /// `commands` (key by key).
    pub via: String,
    /// Why no snapshot was used, or that it differed (then keys were compared one by one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// Keys compared.
    pub keys_checked: u64,
    /// Keys with at least one difference.
    pub keys_differing: u64,
    /// Keys missing on the target.
    pub missing: u64,
    /// Keys of another type on the target.
    pub type_diffs: u64,
    /// Keys whose value differs.
    pub value_diffs: u64,
    /// Keys whose TTL differs by more than the tolerance.
    pub ttl_diffs: u64,
    /// Keys whose TTL had run out: not compared.
    pub expired_skipped: u64,
    /// Module keys: only presence and type were compared.
    pub modules_type_only: u64,
    /// Hashes whose field TTLs were not compared (target older than 7.4).
    pub field_ttls_unchecked: u64,
    /// AOF commands in the input (not replayed, not verified).
    pub aof_commands: u64,
    /// RDB-part keys not compared because an AOF command mentions them.
    pub aof_keys_skipped: u64,
    /// Cluster `MOVED` and `ASK` redirections followed (the key was read again there).
    pub redirects: u64,
    /// Live source: its server version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_version: Option<String>,
    /// Live source: keys `SCAN` listed that were gone when read (deleted or expired since):
    /// not compared.
    pub source_vanished: u64,
    /// Live Cluster source: keys read again on another node after `MOVED` / `ASK` (their
    /// slot moved after `SCAN`).
    pub source_redirects: u64,
    /// The listed differences (at most `--max-diffs`).
    pub differences: Vec<Difference>,
    /// Differences found but not listed.
    pub more_differences: u64,
    /// Seconds taken.
    pub elapsed_s: f64,
    /// Caveats about what was not compared.
    pub notes: Vec<String>,
}

impl VerifyReport {
    /// Whether source and target agree on everything compared.
    pub fn identical(&self) -> bool {
        self.keys_differing == 0
    }

    /// Human-readable report: the differences, then a summary line.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for d in &self.differences {
            let target = if d.db != d.target_db || d.key != d.target_key {
                format!(" (target db{} {})", d.target_db, d.target_key)
            } else {
                String::new()
            };
            s += &format!("db{} {}{target}: {}", d.db, d.key, d.kind);
            if !d.detail.is_empty() {
                s += &format!(": {}", d.detail);
            }
            s.push('\n');
        }
        if self.more_differences > 0 {
            s += &format!("... and {} more differences\n", self.more_differences);
        }
        for n in &self.notes {
            s += &format!("note: {n}\n");
        }
        if let Some(n) = &self.snapshot {
            s += &format!("note: no snapshot comparison: {n}\n");
        }
        s += &format!(
            "{}: {} against {} (redis {}): {} keys checked, {} differing ({} missing, {} type, {} value, {} ttl), {} expired skipped, {:.3} s\n",
            if self.identical() {
                "IDENTICAL"
            } else {
                "DIFFERENT"
            },
            self.input,
            self.target,
            self.target_version,
            self.keys_checked,
            self.keys_differing,
            self.missing,
            self.type_diffs,
            self.value_diffs,
            self.ttl_diffs,
            self.expired_skipped,
            self.elapsed_s
        );
        s
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Size limits of a chunk of source elements.
#[derive(Clone, Copy)]
struct Limits {
    elems: usize,
    bytes: usize,
}

/// A value small enough for this joins a batch of keys.
const SMALL: Limits = Limits {
    elems: 512,
    bytes: 256 << 10,
};
/// Chunks of a big value.
const BIG: Limits = Limits {
    elems: 2000,
    bytes: 1 << 20,
};
/// A batch is sent when it holds this many keys or command bytes.
const BATCH_KEYS: usize = 1024;
const BATCH_BYTES: usize = 4 << 20;

/// Source elements to compare in one go.
#[derive(Debug)]
enum Chunk {
    /// String bytes from `off`; `whole` means the entire string (`GET`).
    Str {
        off: u64,
        bytes: Vec<u8>,
        whole: bool,
    },
    List {
        start: u64,
        items: Vec<Vec<u8>>,
    },
    Set(Vec<Vec<u8>>),
    ZSet(Vec<(Vec<u8>, f64)>),
    /// A whole small zset: read with one `ZRANGE ... WITHSCORES` and compared as a map,
    /// since `ZMSCORE` scans a listpack zset once per member.
    ZSetWhole(Vec<(Vec<u8>, f64)>),
    /// Field, value, field expire-at ms.
    Hash(Vec<(Vec<u8>, Vec<u8>, Option<i64>)>),
    Stream(Vec<StreamEntry>),
}

/// Count of source items, and how many more the target may hold (hash fields whose TTL ran
/// out but that the target has not reaped yet).
#[derive(Debug, Clone, Copy, Default)]
struct Count {
    n: u64,
    slack: u64,
}

type Emit<'f> = dyn FnMut(Chunk, bool) -> Result<bool> + 'f;

/// Group items into chunks; `f(chunk, last)` returns false to stop. `None` when stopped.
fn feed<T>(
    it: impl Iterator<Item = Result<(T, usize)>>,
    mk: impl Fn(u64, Vec<T>) -> Chunk,
    lim: Limits,
    f: &mut Emit<'_>,
) -> Result<Option<u64>> {
    let mut items = Vec::new();
    let (mut bytes, mut start, mut count) = (0usize, 0u64, 0u64);
    for r in it {
        let (t, sz) = r?;
        if !items.is_empty() && (items.len() >= lim.elems || bytes >= lim.bytes) {
            if !f(mk(start, std::mem::take(&mut items)), false)? {
                return Ok(None);
            }
            start = count;
            bytes = 0;
        }
        items.push(t);
        bytes += sz + 16;
        count += 1;
    }
    f(mk(start, items), true)?;
    Ok(Some(count))
}

/// Walk a source value as chunks. `None` when `f` stopped the walk.
fn walk_chunks(
    v: &Value<'_>,
    now: i64,
    lim: Limits,
    dec: &dyn Fn(DecodeError) -> Error,
    f: &mut Emit<'_>,
) -> Result<Option<Count>> {
    match v {
        Value::String(s) => {
            if s.len() <= lim.bytes {
                f(
                    Chunk::Str {
                        off: 0,
                        bytes: s.to_vec(),
                        whole: true,
                    },
                    true,
                )?;
                return Ok(Some(Count {
                    n: s.len() as u64,
                    slack: 0,
                }));
            }
            let mut off = 0u64;
            let parts: Vec<&[u8]> = s.chunks(lim.bytes).collect();
            let last = parts.len() - 1;
            for (i, p) in parts.into_iter().enumerate() {
                let c = Chunk::Str {
                    off,
                    bytes: p.to_vec(),
                    whole: false,
                };
                off += p.len() as u64;
                if !f(c, i == last)? && i != last {
                    return Ok(None);
                }
            }
            Ok(Some(Count { n: off, slack: 0 }))
        }
        Value::BigString(l) => {
            // Always chunked: a big string never fits a batch.
            let mut buf = Vec::new();
            let mut off = 0u64;
            let mut failed: Option<Error> = None;
            let mut stopped = false;
            let r = l.for_each_chunk(&mut |c| {
                buf.extend_from_slice(c);
                while buf.len() >= lim.bytes {
                    let rest = buf.split_off(lim.bytes);
                    let part = std::mem::replace(&mut buf, rest);
                    let n = part.len() as u64;
                    match f(
                        Chunk::Str {
                            off,
                            bytes: part,
                            whole: false,
                        },
                        false,
                    ) {
                        Ok(true) => off += n,
                        Ok(false) => {
                            stopped = true;
                            return Err(std::io::Error::other("stop"));
                        }
                        Err(e) => {
                            failed = Some(e);
                            return Err(std::io::Error::other("stop"));
                        }
                    }
                }
                Ok(())
            });
            if let Some(e) = failed {
                return Err(e);
            }
            if stopped {
                return Ok(None);
            }
            match r {
                Ok(()) => {}
                Err(crate::rdb::cursor::StreamError::Decode(e)) => return Err(dec(e)),
                Err(crate::rdb::cursor::StreamError::Io(e)) => {
                    return Err(dec(DecodeError::invalid(l.offset, e.to_string())));
                }
            }
            let n = buf.len() as u64;
            f(
                Chunk::Str {
                    off,
                    bytes: buf,
                    whole: false,
                },
                true,
            )?;
            Ok(Some(Count {
                n: off + n,
                slack: 0,
            }))
        }
        Value::Module(_) => Ok(Some(Count::default())),
        Value::Coll(c) => {
            let elems = c.elements();
            match c.data_type() {
                DataType::List | DataType::Set => {
                    let it = elems.map(|e| {
                        let b = e.map_err(dec)?.to_bytes().into_owned();
                        let n = b.len();
                        Ok((b, n))
                    });
                    let n = if c.data_type() == DataType::List {
                        feed(it, |start, items| Chunk::List { start, items }, lim, f)?
                    } else {
                        feed(it, |_, items| Chunk::Set(items), lim, f)?
                    };
                    Ok(n.map(|n| Count { n, slack: 0 }))
                }
                DataType::ZSet => {
                    let it = zset_pairs(elems).map(|p| {
                        let (m, s) = p.map_err(dec)?;
                        let b = m.to_bytes().into_owned();
                        let n = b.len();
                        Ok(((b, s), n))
                    });
                    let n = feed(it, |_, items| Chunk::ZSet(items), lim, f)?;
                    Ok(n.map(|n| Count { n, slack: 0 }))
                }
                _ if c.has_field_ttls() => {
                    let mut slack = 0u64;
                    let it = Tuples::<'_, 3>(elems).filter_map(|t| {
                        let r = (|| {
                            let [k, v, x] = t.map_err(dec)?;
                            let x = x.as_i64().filter(|&ms| ms > 0);
                            if x.is_some_and(|ms| ms <= now) {
                                return Ok(None);
                            }
                            let (k, v) = (k.to_bytes().into_owned(), v.to_bytes().into_owned());
                            let n = k.len() + v.len();
                            Ok(Some(((k, v, x), n)))
                        })();
                        match r {
                            Ok(None) => {
                                slack += 1;
                                None
                            }
                            Ok(Some(x)) => Some(Ok(x)),
                            Err(e) => Some(Err(e)),
                        }
                    });
                    let n = feed(it, |_, items| Chunk::Hash(items), lim, f)?;
                    Ok(n.map(|n| Count { n, slack }))
                }
                _ => {
                    let it = Tuples::<'_, 2>(elems).map(|t| {
                        let [k, v] = t.map_err(dec)?;
                        let (k, v) = (k.to_bytes().into_owned(), v.to_bytes().into_owned());
                        let n = k.len() + v.len();
                        Ok(((k, v, None), n))
                    });
                    let n = feed(it, |_, items| Chunk::Hash(items), lim, f)?;
                    Ok(n.map(|n| Count { n, slack: 0 }))
                }
            }
        }
        Value::Stream(s) => {
            let mut items = Vec::new();
            let mut bytes = 0usize;
            let mut count = 0u64;
            let mut failed: Option<Error> = None;
            let mut stopped = false;
            let r = s.for_each_entry(|e| {
                if !items.is_empty() && (items.len() >= lim.elems || bytes >= lim.bytes) {
                    match f(Chunk::Stream(std::mem::take(&mut items)), false) {
                        Ok(true) => bytes = 0,
                        Ok(false) => {
                            stopped = true;
                            return Err(DecodeError::invalid(0, "stop"));
                        }
                        Err(err) => {
                            failed = Some(err);
                            return Err(DecodeError::invalid(0, "stop"));
                        }
                    }
                }
                bytes += e
                    .fields
                    .iter()
                    .map(|(a, b)| a.len() + b.len() + 16)
                    .sum::<usize>();
                items.push(e);
                count += 1;
                Ok(())
            });
            if let Some(e) = failed {
                return Err(e);
            }
            if stopped {
                return Ok(None);
            }
            r.map_err(dec)?;
            f(Chunk::Stream(items), true)?;
            Ok(Some(Count { n: count, slack: 0 }))
        }
    }
}

/// Expected stream metadata.
#[derive(Debug)]
struct GroupExp {
    name: Vec<u8>,
    last_id: StreamId,
    pending: u64,
    min: Option<StreamId>,
    max: Option<StreamId>,
    consumers: BTreeMap<Vec<u8>, u64>,
}

#[derive(Debug)]
struct StreamMeta {
    last_id: StreamId,
    groups: Vec<GroupExp>,
}

impl StreamMeta {
    fn of(s: &StreamValue<'_>) -> StreamMeta {
        let groups = s
            .groups
            .iter()
            .map(|g| GroupExp {
                name: g.name.to_vec(),
                last_id: g.last_id,
                pending: g.pending.len() as u64,
                min: g.pending.iter().map(|p| p.id).min(),
                max: g.pending.iter().map(|p| p.id).max(),
                consumers: g
                    .consumers
                    .iter()
                    .filter(|c| !c.pending.is_empty())
                    .map(|c| (c.name.to_vec(), c.pending.len() as u64))
                    .collect(),
            })
            .collect();
        StreamMeta {
            last_id: s.last_id,
            groups,
        }
    }
}

/// One key to compare.
#[derive(Debug)]
struct Check {
    src_db: u64,
    src_key: Vec<u8>,
    db: u64,
    key: Vec<u8>,
    expire_ms: Option<i64>,
    ty: DataType,
    /// Module type name, for module values.
    module: Option<String>,
    stream: Option<StreamMeta>,
    /// Whether the head asks for the size (not for a string read whole with `GET`).
    sized: bool,
}

/// What the head replies said.
struct Head {
    /// Present with the right type: the value can be compared.
    comparable: bool,
    size: Option<i64>,
}

fn reply_text(r: &Reply) -> String {
    match r {
        Reply::Simple(b) | Reply::Bulk(b) | Reply::Error(b) => String::from_utf8_lossy(b).into(),
        Reply::Integer(i) => i.to_string(),
        Reply::Nil => "nil".into(),
        other => format!("{other:?}"),
    }
}

/// Flat RESP2 key/value array (XINFO) as pairs.
fn kv(r: &Reply) -> Vec<(String, &Reply)> {
    match r {
        Reply::Array(a) => a
            .chunks(2)
            .filter_map(|p| match p {
                [k, v] => Some((reply_text(k), v)),
                _ => None,
            })
            .collect(),
        Reply::Map(m) => m.iter().map(|(k, v)| (reply_text(k), v)).collect(),
        _ => Vec::new(),
    }
}

fn field<'r>(pairs: &[(String, &'r Reply)], name: &str) -> Option<&'r Reply> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
}

fn show_ttl(ms: Option<i64>) -> String {
    match ms {
        None => "none".into(),
        Some(ms) => format!("expire at {ms} ms"),
    }
}

impl Check {
    fn type_name(&self) -> String {
        match &self.module {
            Some(m) => m.clone(),
            None => self.ty.name().to_string(),
        }
    }

    /// The head: the TTL (`-2` also says the key is missing), `TYPE` for module values only
    /// (other types show a mismatch as a `WRONGTYPE` error on their own commands, which saves a
    /// command per key), the size, and stream metadata.
    fn push_head(&self, p: &mut Pipe, caps: Caps) {
        let k = self.key.as_slice();
        if caps.has_pexpiretime() {
            p.push(&[b"PEXPIRETIME", k]);
        } else {
            p.push(&[b"PTTL", k]);
        }
        if self.module.is_some() {
            p.push(&[b"TYPE", k]);
            return;
        }
        let size: &[u8] = match self.ty {
            DataType::String => b"STRLEN",
            DataType::List => b"LLEN",
            DataType::Set => b"SCARD",
            DataType::ZSet => b"ZCARD",
            DataType::Hash => b"HLEN",
            DataType::Stream | DataType::Module => b"XLEN",
        };
        if self.sized {
            p.push(&[size, k]);
        }
        if let Some(m) = &self.stream {
            p.push(&[b"XINFO", b"STREAM", k]);
            p.push(&[b"XINFO", b"GROUPS", k]);
            for g in &m.groups {
                p.push(&[b"XPENDING", k, &g.name]);
            }
        }
    }

    fn head_len(&self) -> usize {
        if self.module.is_some() {
            return 2;
        }
        1 + usize::from(self.sized)
            + self
                .stream
                .as_ref()
                .map(|m| 2 + m.groups.len())
                .unwrap_or(0)
    }

    /// Read the head replies (`all` are every reply of the key, head and chunk, searched for
    /// `WRONGTYPE`); differences go to `out` as (kind, detail).
    fn eval_head(
        &self,
        r: &[Reply],
        all: &[Reply],
        caps: Caps,
        tol: i64,
        out: &mut Vec<(&'static str, String)>,
    ) -> std::result::Result<Head, String> {
        let none = Head {
            comparable: false,
            size: None,
        };
        if let Some(Reply::Integer(-2)) = r.first() {
            out.push(("missing", String::new()));
            return Ok(none);
        }
        let want = self.type_name();
        let wrongtype = all
            .iter()
            .any(|x| matches!(x, Reply::Error(e) if e.starts_with(b"WRONGTYPE")));
        if wrongtype {
            // The actual type is looked up at the end, for the listed differences only.
            out.push(("type", format!("expected {want}, found another type")));
            return Ok(none);
        }
        if self.module.is_some() {
            let ty = r.get(1).map(reply_text).unwrap_or_default();
            if ty != want {
                out.push(("type", format!("expected {want}, found {ty}")));
                return Ok(none);
            }
        }
        let now = now_ms();
        let found = match r.first() {
            Some(Reply::Integer(-1)) => None,
            Some(Reply::Integer(t)) if caps.has_pexpiretime() => Some(*t),
            Some(Reply::Integer(t)) => Some(now + *t),
            other => {
                return Err(format!(
                    "TTL: {}",
                    other.map(reply_text).unwrap_or_default()
                ));
            }
        };
        let ttl_ok = match (self.expire_ms, found) {
            (None, None) => true,
            (Some(a), Some(b)) => (a - b).abs() <= tol,
            _ => false,
        };
        if !ttl_ok {
            out.push((
                "ttl",
                format!(
                    "expected {}, found {}",
                    show_ttl(self.expire_ms),
                    show_ttl(found)
                ),
            ));
        }
        let size = match r.get(1) {
            _ if !self.sized || self.module.is_some() => None,
            Some(Reply::Integer(n)) => Some(*n),
            Some(Reply::Error(e)) => return Err(String::from_utf8_lossy(e).into_owned()),
            _ => None,
        };
        if let Some(m) = &self.stream
            && let Some(d) = eval_stream_meta(m, &r[1 + usize::from(self.sized)..])
        {
            out.push(("value", d));
        }
        Ok(Head {
            comparable: true,
            size,
        })
    }
}

fn parse_id(r: Option<&Reply>) -> Option<String> {
    match r? {
        Reply::Bulk(b) | Reply::Simple(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

fn eval_stream_meta(m: &StreamMeta, r: &[Reply]) -> Option<String> {
    let info = kv(r.first()?);
    let last = parse_id(field(&info, "last-generated-id"));
    if last.as_deref() != Some(&m.last_id.to_string()) {
        return Some(format!(
            "stream last id: expected {}, found {}",
            m.last_id,
            last.unwrap_or_else(|| "none".into())
        ));
    }
    let groups: Vec<Vec<(String, &Reply)>> = match r.get(1) {
        Some(Reply::Array(a)) => a.iter().map(kv).collect(),
        other => {
            return Some(format!(
                "XINFO GROUPS: {}",
                other.map(reply_text).unwrap_or_default()
            ));
        }
    };
    if groups.len() != m.groups.len() {
        return Some(format!(
            "consumer groups: expected {}, found {}",
            m.groups.len(),
            groups.len()
        ));
    }
    for (i, g) in m.groups.iter().enumerate() {
        let name = excerpt(&g.name);
        let Some(t) = groups
            .iter()
            .find(|t| field(t, "name").and_then(Reply::as_bytes) == Some(&g.name[..]))
        else {
            return Some(format!("consumer group {name} missing"));
        };
        let last = parse_id(field(t, "last-delivered-id"));
        if last.as_deref() != Some(&g.last_id.to_string()) {
            return Some(format!(
                "group {name} last-delivered-id: expected {}, found {}",
                g.last_id,
                last.unwrap_or_default()
            ));
        }
        let pending = match field(t, "pending") {
            Some(Reply::Integer(n)) => *n,
            _ => -1,
        };
        if pending != g.pending as i64 {
            return Some(format!(
                "group {name} pending: expected {}, found {pending}",
                g.pending
            ));
        }
        // XPENDING summary: [count, min id, max id, [[consumer, count], ...]].
        let Some(Reply::Array(x)) = r.get(2 + i) else {
            return Some(format!(
                "XPENDING for group {name}: {}",
                r.get(2 + i).map(reply_text).unwrap_or_default()
            ));
        };
        let min = parse_id(x.get(1));
        let max = parse_id(x.get(2));
        if min != g.min.map(|i| i.to_string()) || max != g.max.map(|i| i.to_string()) {
            return Some(format!(
                "group {name} pending ids: expected {:?}..{:?}, found {min:?}..{max:?}",
                g.min.map(|i| i.to_string()),
                g.max.map(|i| i.to_string())
            ));
        }
        let mut found = BTreeMap::new();
        if let Some(Reply::Array(cs)) = x.get(3) {
            for c in cs {
                if let Reply::Array(p) = c
                    && let (Some(n), Some(k)) = (p.first().and_then(Reply::as_bytes), p.get(1))
                {
                    let k = reply_text(k).parse::<u64>().unwrap_or(0);
                    found.insert(n.to_vec(), k);
                }
            }
        }
        if found != g.consumers {
            return Some(format!("group {name}: pending entries per consumer differ"));
        }
    }
    None
}

fn push_chunk(p: &mut Pipe, key: &[u8], c: &Chunk, caps: Caps) -> usize {
    let n0 = p.len();
    match c {
        Chunk::Str { off, bytes, whole } => {
            if *whole {
                p.push(&[b"GET", key]);
            } else {
                let a = off.to_string();
                let b = (off + bytes.len() as u64).saturating_sub(1).to_string();
                p.push(&[b"GETRANGE", key, a.as_bytes(), b.as_bytes()]);
            }
        }
        Chunk::List { start, items } if !items.is_empty() => {
            let a = start.to_string();
            let b = (start + items.len() as u64 - 1).to_string();
            p.push(&[b"LRANGE", key, a.as_bytes(), b.as_bytes()]);
        }
        Chunk::Set(items) if !items.is_empty() => {
            if caps.has_multi_member() {
                let mut args: Vec<&[u8]> = vec![b"SMISMEMBER", key];
                args.extend(items.iter().map(|m| m.as_slice()));
                p.push(&args);
            } else {
                for m in items {
                    p.push(&[b"SISMEMBER", key, m]);
                }
            }
        }
        Chunk::ZSet(items) if !items.is_empty() => {
            if caps.has_multi_member() {
                let mut args: Vec<&[u8]> = vec![b"ZMSCORE", key];
                args.extend(items.iter().map(|(m, _)| m.as_slice()));
                p.push(&args);
            } else {
                for (m, _) in items {
                    p.push(&[b"ZSCORE", key, m]);
                }
            }
        }
        Chunk::ZSetWhole(items) if !items.is_empty() => {
            // One more than expected, to see an extra member without reading a huge zset.
            let n = items.len().to_string();
            p.push(&[b"ZRANGE", key, b"0", n.as_bytes(), b"WITHSCORES"]);
        }
        Chunk::Hash(items) if !items.is_empty() => {
            let mut args: Vec<&[u8]> = vec![b"HMGET", key];
            args.extend(items.iter().map(|(f, _, _)| f.as_slice()));
            p.push(&args);
            if caps.has_field_ttls() && items.iter().any(|(_, _, x)| x.is_some()) {
                let n = items.len().to_string();
                let mut args: Vec<&[u8]> = vec![b"HPEXPIRETIME", key, b"FIELDS", n.as_bytes()];
                args.extend(items.iter().map(|(f, _, _)| f.as_slice()));
                p.push(&args);
            }
        }
        Chunk::Stream(items) if !items.is_empty() => {
            let a = items[0].id.to_string();
            let n = items.len().to_string();
            p.push(&[b"XRANGE", key, a.as_bytes(), b"+", b"COUNT", n.as_bytes()]);
        }
        _ => {}
    }
    p.len() - n0
}

fn bulk(r: &Reply) -> Option<&[u8]> {
    match r {
        Reply::Bulk(b) => Some(b),
        _ => None,
    }
}

/// Compare a chunk with its replies: `Ok(Some(detail))` for the first difference, `Err` for an
/// error reply.
fn eval_chunk(c: &Chunk, r: &[Reply], tol: i64) -> std::result::Result<Option<String>, String> {
    if let Some(Reply::Error(e)) = r.iter().find(|x| x.is_error()) {
        return Err(String::from_utf8_lossy(e).into_owned());
    }
    let arr = |i: usize| -> std::result::Result<&[Reply], String> {
        match r.get(i) {
            Some(Reply::Array(a)) => Ok(a),
            other => Err(format!(
                "unexpected reply {}",
                other.map(reply_text).unwrap_or_default()
            )),
        }
    };
    Ok(match c {
        Chunk::Str { off, bytes, .. } => {
            let found = r.first().and_then(bulk).unwrap_or_default();
            if found == bytes.as_slice() {
                None
            } else {
                let i = bytes
                    .iter()
                    .zip(found)
                    .position(|(a, b)| a != b)
                    .unwrap_or(bytes.len().min(found.len()));
                Some(if *off == 0 && bytes.len() <= 64 && found.len() <= 64 {
                    format!("expected {}, found {}", excerpt(bytes), excerpt(found))
                } else {
                    format!("string differs from byte {}", off + i as u64)
                })
            }
        }
        Chunk::List { start, items } if !items.is_empty() => {
            let a = arr(0)?;
            for (i, want) in items.iter().enumerate() {
                let got = a.get(i).and_then(bulk);
                if got != Some(want.as_slice()) {
                    return Ok(Some(format!(
                        "element {}: expected {}, found {}",
                        start + i as u64,
                        excerpt(want),
                        got.map(excerpt).unwrap_or_else(|| "none".into())
                    )));
                }
            }
            None
        }
        Chunk::Set(items) if !items.is_empty() => {
            let flags: Vec<i64> = if r.len() == 1 && matches!(r[0], Reply::Array(_)) {
                arr(0)?
                    .iter()
                    .map(|x| if let Reply::Integer(n) = x { *n } else { 0 })
                    .collect()
            } else {
                r.iter()
                    .map(|x| if let Reply::Integer(n) = x { *n } else { 0 })
                    .collect()
            };
            items
                .iter()
                .zip(flags.iter().chain(std::iter::repeat(&0)))
                .find(|(_, f)| **f != 1)
                .map(|(m, _)| format!("member {} missing", excerpt(m)))
        }
        Chunk::ZSet(items) | Chunk::ZSetWhole(items) if !items.is_empty() => {
            let scores: Vec<Option<&[u8]>> = if let Chunk::ZSetWhole(_) = c {
                let flat = arr(0)?;
                let map: std::collections::HashMap<&[u8], &[u8]> = flat
                    .chunks(2)
                    .filter_map(|p| Some((p.first()?.as_bytes()?, p.get(1)?.as_bytes()?)))
                    .collect();
                items
                    .iter()
                    .map(|(m, _)| map.get(m.as_slice()).copied())
                    .collect()
            } else if r.len() == 1 && matches!(r[0], Reply::Array(_)) {
                arr(0)?.iter().map(Reply::as_bytes).collect()
            } else {
                r.iter().map(Reply::as_bytes).collect()
            };
            for (i, (m, want)) in items.iter().enumerate() {
                let got = scores.get(i).copied().flatten();
                let Some(got) = got else {
                    return Ok(Some(format!("member {} missing", excerpt(m))));
                };
                let g = std::str::from_utf8(got)
                    .ok()
                    .and_then(|s| s.parse::<f64>().ok());
                if g != Some(*want) {
                    return Ok(Some(format!(
                        "member {}: score expected {}, found {}",
                        excerpt(m),
                        crate::rdb::elem::format_double(*want),
                        String::from_utf8_lossy(got)
                    )));
                }
            }
            None
        }
        Chunk::Hash(items) if !items.is_empty() => {
            let vals = arr(0)?;
            for (i, (f, want, _)) in items.iter().enumerate() {
                match vals.get(i).and_then(bulk) {
                    None => return Ok(Some(format!("field {} missing", excerpt(f)))),
                    Some(got) if got != want.as_slice() => {
                        return Ok(Some(format!(
                            "field {}: expected {}, found {}",
                            excerpt(f),
                            excerpt(want),
                            excerpt(got)
                        )));
                    }
                    _ => {}
                }
            }
            if r.len() > 1 {
                let ttls = arr(1)?;
                for (i, (f, _, want)) in items.iter().enumerate() {
                    let got = match ttls.get(i) {
                        Some(Reply::Integer(t)) if *t > 0 => Some(*t),
                        _ => None,
                    };
                    let ok = match (want, got) {
                        (None, None) => true,
                        (Some(a), Some(b)) => (a - b).abs() <= tol,
                        _ => false,
                    };
                    if !ok {
                        return Ok(Some(format!(
                            "field {} TTL: expected {}, found {}",
                            excerpt(f),
                            show_ttl(*want),
                            show_ttl(got)
                        )));
                    }
                }
            }
            None
        }
        Chunk::Stream(items) if !items.is_empty() => {
            let a = arr(0)?;
            for (i, want) in items.iter().enumerate() {
                let id = want.id.to_string();
                let Some(Reply::Array(e)) = a.get(i) else {
                    return Ok(Some(format!("entry {id} missing")));
                };
                let got_id = e.first().and_then(Reply::as_bytes).unwrap_or_default();
                if got_id != id.as_bytes() {
                    return Ok(Some(format!(
                        "entry {i}: expected id {id}, found {}",
                        String::from_utf8_lossy(got_id)
                    )));
                }
                let fields: Vec<&[u8]> = match e.get(1) {
                    Some(Reply::Array(f)) => f.iter().filter_map(Reply::as_bytes).collect(),
                    _ => Vec::new(),
                };
                let same = fields.len() == want.fields.len() * 2
                    && want
                        .fields
                        .iter()
                        .zip(fields.chunks(2))
                        .all(|((f, v), g)| g[0] == f.as_slice() && g[1] == v.as_slice());
                if !same {
                    return Ok(Some(format!("entry {id}: fields differ")));
                }
            }
            None
        }
        _ => None,
    })
}

/// A batched key: its check, its single chunk, its item count, and whether a SELECT went
/// before it in the pipeline.
struct Queued {
    check: Check,
    /// Commands its chunk took in the pipeline.
    chunk_cmds: usize,
    chunk: Chunk,
    count: Count,
    selected: bool,
}

/// RDB-part keys that AOF commands mention, by hash of every command argument (a key name
/// colliding with some other argument is only skipped, never misreported).
#[derive(Default)]
struct Touched {
    args: HashSet<u64>,
    all: bool,
}

fn hash_of(b: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}

impl Touched {
    fn add(&mut self, args: &[&[u8]]) {
        let Some(name) = args.first() else { return };
        if ["flushall", "flushdb", "swapdb"]
            .iter()
            .any(|c| name.eq_ignore_ascii_case(c.as_bytes()))
        {
            self.all = true;
        }
        for a in &args[1..] {
            self.args.insert(hash_of(a));
        }
    }
    fn contains(&self, key: &[u8]) -> bool {
        self.all || self.args.contains(&hash_of(key))
    }
}

/// A batch sent and not yet read.
struct Sent {
    queued: Vec<Queued>,
    count: usize,
}

/// One connection and its batches: the only one for a standalone target, one per master for
/// a Cluster.
struct Lane {
    conn: Conn,
    pipe: Pipe,
    pipe_db: u64,
    queued: Vec<Queued>,
    inflight: Option<Sent>,
}

impl Lane {
    fn new(conn: Conn) -> Lane {
        Lane {
            pipe_db: conn.db,
            conn,
            pipe: Pipe::default(),
            queued: Vec::new(),
            inflight: None,
        }
    }
}

struct Verifier<'o> {
    /// Lane 0 is the standalone target; on a Cluster, the lanes of [`Router`].
    lanes: Vec<Lane>,
    /// Set for a Cluster target.
    router: Option<Router>,
    /// What the target supports (the first node's, on a Cluster).
    caps: Caps,
    /// The target, redacted, for messages.
    target: String,
    opts: &'o VerifyOptions,
    name: String,
    rep: VerifyReport,
    touched: Option<Touched>,
    /// Keys of a sent batch that a Cluster node redirected: compared again, one at a time,
    /// where the redirection says.
    retry: Vec<(Queued, Redirect)>,
    /// Listed type differences whose actual type is looked up at the end: (index in the
    /// report's differences, target db, target key).
    type_lookups: Vec<(usize, u64, Vec<u8>)>,
}

impl Verifier<'_> {
    fn target_err(&self, msg: String) -> Error {
        Error::Input {
            path: self.target.clone(),
            msg,
        }
    }

    fn record(&mut self, c: &Check, diffs: Vec<(&'static str, String)>) {
        if diffs.is_empty() {
            return;
        }
        self.rep.keys_differing += 1;
        let mut kinds: Vec<&str> = Vec::new();
        for (kind, detail) in diffs {
            if !kinds.contains(&kind) {
                kinds.push(kind);
                match kind {
                    "missing" => self.rep.missing += 1,
                    "type" => self.rep.type_diffs += 1,
                    "value" => self.rep.value_diffs += 1,
                    _ => self.rep.ttl_diffs += 1,
                }
            }
            if self.rep.differences.len() < self.opts.max_diffs {
                if kind == "type" && detail.ends_with("found another type") {
                    self.type_lookups
                        .push((self.rep.differences.len(), c.db, c.key.clone()));
                }
                self.rep.differences.push(Difference {
                    db: c.src_db,
                    key: printable(&c.src_key),
                    target_db: c.db,
                    target_key: printable(&c.key),
                    kind,
                    detail,
                });
            } else {
                self.rep.more_differences += 1;
            }
        }
    }

    fn select(&mut self, lane: usize, db: u64) -> bool {
        let l = &mut self.lanes[lane];
        if db == l.pipe_db {
            return false;
        }
        let d = db.to_string();
        l.pipe.push(&[b"SELECT", d.as_bytes()]);
        l.pipe_db = db;
        true
    }

    fn check_select(&self, r: &Reply, db: u64) -> Result<()> {
        match r {
            Reply::Error(e) => {
                Err(self.target_err(format!("SELECT {db}: {}", String::from_utf8_lossy(e))))
            }
            _ => Ok(()),
        }
    }

    fn size_diff(head: &Head, count: Count, ty: DataType) -> Option<String> {
        let size = head.size?;
        if ty == DataType::Module {
            return None;
        }
        let (lo, hi) = (count.n as i64, (count.n + count.slack) as i64);
        (size < lo || size > hi).then(|| format!("length: expected {lo}, found {size}"))
    }

    fn key(&mut self, k: &KeyRecord<'_>, common: &Common) -> Result<()> {
        if !common.filter.keep(k.db, &k.key, k.data_type()) {
            return Ok(());
        }
        let now = now_ms();
        if k.expire_ms.is_some_and(|ms| ms <= now) {
            self.rep.expired_skipped += 1;
            return Ok(());
        }
        if self.touched.as_ref().is_some_and(|t| t.contains(&k.key)) {
            self.rep.aof_keys_skipped += 1;
            return Ok(());
        }
        let name = self.name.clone();
        let key_bytes = k.key.to_vec();
        let dec = move |e: DecodeError| -> Error {
            crate::rdb::Error::from_decode(&name, Some(&key_bytes), e).into()
        };
        let v = k.value().map_err(&dec)?;
        let check = Check {
            src_db: k.db,
            src_key: k.key.to_vec(),
            db: self.opts.map_db(k.db),
            key: self.opts.map_key(&k.key),
            expire_ms: k.expire_ms,
            ty: k.data_type(),
            module: match &v {
                Value::Module(m) => Some(m.id.name()),
                _ => None,
            },
            stream: match &v {
                Value::Stream(s) => Some(StreamMeta::of(s)),
                _ => None,
            },
            sized: true,
        };
        let mut check = check;
        self.rep.keys_checked += 1;
        if check.module.is_some() {
            self.rep.modules_type_only += 1;
        }
        if let Value::Coll(c) = &v
            && c.has_field_ttls()
            && !self.caps.has_field_ttls()
        {
            self.rep.field_ttls_unchecked += 1;
        }
        let mut small = None;
        let count = if matches!(v, Value::BigString(_)) {
            None
        } else {
            walk_chunks(&v, now, SMALL, &dec, &mut |c, last| {
                if last {
                    small = Some(c);
                }
                Ok(false)
            })?
        };
        match (small, count) {
            (Some(chunk), Some(count)) => {
                let chunk = match chunk {
                    Chunk::ZSet(items) => Chunk::ZSetWhole(items),
                    c => c,
                };
                check.sized = !matches!(chunk, Chunk::Str { whole: true, .. });
                let lane = self.route(&check)?;
                let selected = self.select(lane, check.db);
                let caps = self.caps;
                let l = &mut self.lanes[lane];
                check.push_head(&mut l.pipe, caps);
                let chunk_cmds = push_chunk(&mut l.pipe, &check.key, &chunk, caps);
                l.queued.push(Queued {
                    chunk_cmds,
                    check,
                    chunk,
                    count,
                    selected,
                });
                if l.queued.len() >= BATCH_KEYS || l.pipe.bytes() >= BATCH_BYTES {
                    self.flush(lane)?;
                }
                Ok(())
            }
            _ => {
                if self.router.is_some() {
                    self.route(&check)?;
                    return self.big_cluster(check, &v, now, &dec);
                }
                self.drain()?;
                self.big(check, &v, now, &dec, None).map(|_| ())
            }
        }
    }

    /// Send a lane's batch, then compare the keys of the batch sent before it: two batches
    /// are in flight per lane, so the server works on one while the next is built.
    fn flush(&mut self, lane: usize) -> Result<()> {
        let l = &mut self.lanes[lane];
        if l.pipe.is_empty() {
            return Ok(());
        }
        let pipe = std::mem::take(&mut l.pipe);
        l.conn.send_pipe(&pipe)?;
        l.conn.db = l.pipe_db;
        let sent = Sent {
            queued: std::mem::take(&mut l.queued),
            count: pipe.len(),
        };
        if let Some(prev) = l.inflight.replace(sent) {
            self.evaluate(lane, prev)?;
        }
        self.run_retries()
    }

    /// Send what is queued and compare everything in flight, on every lane.
    fn drain(&mut self) -> Result<()> {
        for lane in 0..self.lanes.len() {
            self.flush(lane)?;
            if let Some(prev) = self.lanes[lane].inflight.take() {
                self.evaluate(lane, prev)?;
            }
        }
        self.run_retries()
    }

    /// Fill in the actual type of the listed type differences (one round trip, at the end,
    /// when nothing else is in flight).
    fn resolve_types(&mut self) -> Result<()> {
        let lookups = std::mem::take(&mut self.type_lookups);
        if lookups.is_empty() {
            return Ok(());
        }
        if self.router.is_some() {
            // One key at a time, each on its slot's master.
            for (i, _, key) in &lookups {
                let (r, _) = self.exec_key(key, None, &|p: &mut Pipe| p.push(&[b"TYPE", key]))?;
                if let (Some(d), Some(t)) = (self.rep.differences.get_mut(*i), r.first()) {
                    d.detail = d.detail.replace("another type", &reply_text(t));
                }
            }
            return Ok(());
        }
        let mut slots = Vec::new();
        for (_, db, key) in &lookups {
            self.select(0, *db);
            let l = &mut self.lanes[0];
            slots.push(l.pipe.len());
            l.pipe.push(&[b"TYPE", key]);
        }
        let l = &mut self.lanes[0];
        let pipe = std::mem::take(&mut l.pipe);
        let r = l.conn.exec(&pipe)?;
        l.conn.db = l.pipe_db;
        for ((i, _, _), slot) in lookups.iter().zip(slots) {
            if let (Some(d), Some(t)) = (self.rep.differences.get_mut(*i), r.get(slot)) {
                d.detail = d.detail.replace("another type", &reply_text(t));
            }
        }
        Ok(())
    }

    /// Read a sent batch's replies and compare its keys. On a Cluster, a key that was
    /// redirected (`MOVED`, `ASK`) goes to [`Verifier::retry`] instead.
    fn evaluate(&mut self, lane: usize, sent: Sent) -> Result<()> {
        let replies = self.lanes[lane].conn.recv(sent.count)?;
        let mut at = 0usize;
        for q in sent.queued {
            if q.selected {
                self.check_select(&replies[at], q.check.db)?;
                at += 1;
            }
            let n = q.check.head_len() + q.chunk_cmds;
            let r = &replies[at..at + n];
            at += n;
            if self.router.is_some()
                && let Some(rd) = find_redirect(r)
            {
                self.retry.push((q, rd));
                continue;
            }
            self.eval_queued(&q, r)?;
        }
        Ok(())
    }

    /// Compare one batched key with its replies (head, then chunk).
    fn eval_queued(&mut self, q: &Queued, replies: &[Reply]) -> Result<()> {
        let tol = self.opts.ttl_tolerance_ms;
        let hl = q.check.head_len();
        let cl = q.chunk_cmds;
        let mut diffs = Vec::new();
        let head = q
            .check
            .eval_head(
                &replies[..hl],
                &replies[..hl + cl],
                self.caps,
                tol,
                &mut diffs,
            )
            .map_err(|e| self.key_err(&q.check, e))?;
        if head.comparable {
            let d = eval_chunk(&q.chunk, &replies[hl..hl + cl], tol)
                .map_err(|e| self.key_err(&q.check, e))?;
            if let Some(d) = d.or_else(|| Self::size_diff(&head, q.count, q.check.ty)) {
                diffs.push(("value", d));
            }
        }
        self.settle(&q.check, diffs);
        Ok(())
    }

    /// Record a key's differences, unless it is missing because its TTL ran out meanwhile.
    fn settle(&mut self, c: &Check, diffs: Vec<(&'static str, String)>) {
        if diffs.iter().any(|(k, _)| *k == "missing")
            && c.expire_ms.is_some_and(|ms| ms <= now_ms())
        {
            self.rep.keys_checked -= 1;
            self.rep.expired_skipped += 1;
            return;
        }
        self.record(c, diffs);
    }

    fn key_err(&self, c: &Check, e: String) -> Error {
        self.target_err(format!("key {}: {e}", excerpt(&c.key)))
    }

    /// Compare a value too big for a batch: head first, then chunk by chunk. On a Cluster,
    /// `dest` is the node (its head replies already read, in `head`); a redirection of a
    /// chunk stops the comparison and is returned, the key not settled.
    fn big(
        &mut self,
        check: Check,
        v: &Value<'_>,
        now: i64,
        dec: &dyn Fn(DecodeError) -> Error,
        dest: Option<(Dest, Vec<Reply>)>,
    ) -> Result<Option<(Check, Redirect)>> {
        let caps = self.caps;
        let tol = self.opts.ttl_tolerance_ms;
        let (r, dest) = match dest {
            Some((d, head)) => (head, Some(d)),
            None => {
                let selected = self.select(0, check.db);
                let l = &mut self.lanes[0];
                check.push_head(&mut l.pipe, caps);
                let pipe = std::mem::take(&mut l.pipe);
                let mut r = l.conn.exec(&pipe)?;
                l.conn.db = l.pipe_db;
                if selected {
                    self.check_select(&r[0], check.db)?;
                    r.remove(0);
                }
                (r, None)
            }
        };
        let r = &r[..];
        let mut diffs = Vec::new();
        let head = check
            .eval_head(r, r, caps, tol, &mut diffs)
            .map_err(|e| self.key_err(&check, e))?;
        if head.comparable {
            // One chunk in flight while the next is decoded; a chunk's replies are always
            // read, even after a difference, so the connection stays in step.
            let mut found: Option<String> = None;
            let mut failed: Option<String> = None;
            let mut moved: Option<Redirect> = None;
            let mut prev: Option<(Chunk, usize)> = None;
            let asking = dest.as_ref().is_some_and(|d| d.asking);
            let conn = match &dest {
                Some(d) => self.side(&d.addr)?,
                None => &mut self.lanes[0].conn,
            };
            let key = check.key.clone();
            let cluster = dest.is_some();
            let mut settle_prev = |prev: Option<(Chunk, usize)>,
                                   conn: &mut Conn,
                                   found: &mut Option<String>,
                                   failed: &mut Option<String>|
             -> Result<()> {
                let Some((pc, n)) = prev else { return Ok(()) };
                if n == 0 {
                    return Ok(());
                }
                let r = conn.recv_replies(n, asking)?;
                if found.is_some() || failed.is_some() || moved.is_some() {
                    return Ok(());
                }
                if cluster && let Some(rd) = find_redirect(&r) {
                    moved = Some(rd);
                    // Stops the walk like a difference would; not reported as one.
                    *failed = Some(String::new());
                    return Ok(());
                }
                match eval_chunk(&pc, &r, tol) {
                    Ok(d) => *found = d,
                    Err(e) => *failed = Some(e),
                }
                Ok(())
            };
            let count = walk_chunks(v, now, BIG, dec, &mut |c: Chunk, _last: bool| {
                let mut p = if asking {
                    Pipe::asking()
                } else {
                    Pipe::default()
                };
                let n = push_chunk(&mut p, &key, &c, caps);
                if n > 0 {
                    conn.send_pipe(&p)?;
                }
                settle_prev(prev.replace((c, n)), conn, &mut found, &mut failed)?;
                Ok(found.is_none() && failed.is_none())
            });
            // Read what is still in flight before anything else, error or not.
            settle_prev(prev.take(), conn, &mut found, &mut failed)?;
            let count = count?;
            if let Some(rd) = moved {
                return Ok(Some((check, rd)));
            }
            if let Some(e) = failed {
                return Err(self.key_err(&check, e));
            }
            let d = found.or_else(|| count.and_then(|n| Self::size_diff(&head, n, check.ty)));
            if let Some(d) = d {
                diffs.push(("value", d));
            }
        }
        self.settle(&check, diffs);
        Ok(None)
    }
}

/// Connect to the target and open a verifier for the source named `name`.
fn open_verifier<'o>(name: &str, opts: &'o VerifyOptions) -> Result<Verifier<'o>> {
    let mut conn = Conn::open(&opts.target)?;
    let caps = conn.version()?;
    let target = opts.target.redacted();
    let rep = VerifyReport {
        input: name.to_string(),
        target: target.clone(),
        target_version: caps.to_string(),
        via: "commands".into(),
        ..Default::default()
    };
    // A Cluster is detected, never asked: one lane per master then.
    let (lanes, router) = if route::is_cluster(&mut conn)? {
        let (lanes, router) = Router::open(&opts.target)?;
        (lanes, Some(router))
    } else {
        (vec![Lane::new(conn)], None)
    };
    Ok(Verifier {
        lanes,
        router,
        caps,
        target,
        opts,
        name: name.to_string(),
        rep,
        touched: None,
        retry: Vec::new(),
        type_lookups: Vec::new(),
    })
}

/// Compare what is still in flight, then write the report's notes.
fn finish(mut ver: Verifier<'_>, start: Instant) -> Result<VerifyReport> {
    ver.drain()?;
    ver.resolve_types()?;
    let mut rep = ver.rep;
    if rep.aof_commands > 0 {
        rep.notes.push(format!(
            "{} AOF commands were not replayed or verified; {} RDB-part keys they mention were skipped",
            rep.aof_commands, rep.aof_keys_skipped
        ));
    }
    if rep.modules_type_only > 0 {
        rep.notes.push(format!(
            "{} module keys: only presence and type compared",
            rep.modules_type_only
        ));
    }
    if rep.field_ttls_unchecked > 0 {
        rep.notes.push(format!(
            "{} hashes with field TTLs: field TTLs not compared (target older than 7.4)",
            rep.field_ttls_unchecked
        ));
    }
    if rep.source_vanished > 0 {
        rep.notes.push(format!(
            "{} keys listed by SCAN were gone from the source when read (deleted or expired since): not compared",
            rep.source_vanished
        ));
    }
    rep.elapsed_s = start.elapsed().as_secs_f64();
    Ok(rep)
}

/// Compare `input` with the target in `opts`. Differences are in the report, not errors; an
/// error is a failure to read the input or to talk to the target.
///
/// A `redis://` or `rediss://` input is a live source, read by [`verify_live`] (with the
/// default TLS settings and no password from the environment: build the URL with
/// [`RedisUrl::parse_as`] and call [`verify_live`] for more).
pub fn verify(input_name: &str, common: &Common, opts: &VerifyOptions) -> Result<VerifyReport> {
    if input_name.starts_with("redis://") || input_name.starts_with("rediss://") {
        let src = RedisUrl::parse_as(input_name, None, crate::net::url::Role::Source)?;
        return verify_live(&src, common, opts);
    }
    let start = Instant::now();
    let input = Input::open(input_name)?;
    let mut snapshot_note = None;
    if opts.via != snapshot::Via::Commands {
        let compared = snapshot::compare(&input, common, opts);
        // Interrupted: the run stops (exit 130), it does not go on key by key.
        common.cancel.check()?;
        match compared {
            snapshot::Compared::Same(src) => {
                let mut rep = open_verifier(input_name, opts)?.rep;
                rep.via = "snapshot".into();
                rep.keys_checked = src.keys;
                rep.expired_skipped = src.expired;
                rep.elapsed_s = start.elapsed().as_secs_f64();
                return Ok(rep);
            }
            snapshot::Compared::Unavailable(w) if opts.via == snapshot::Via::Snapshot => {
                return Err(Error::Usage(format!("--via snapshot: {w}")));
            }
            snapshot::Compared::Differs(w) | snapshot::Compared::Unavailable(w) => {
                snapshot_note = Some(w);
            }
        }
    }
    let mut ver = open_verifier(input_name, opts)?;
    ver.rep.snapshot = snapshot_note;
    // AOF inputs: first learn which keys the commands touch, so that only the RDB part's
    // untouched keys are compared (replaying the commands is not done here).
    if matches!(input.kind, Kind::Aof | Kind::AofDir | Kind::Jsonl) {
        let mut t = Touched::default();
        input.walk(&common.read, &mut |ev, _| {
            common.cancel.check()?;
            if let Event::Command { args, .. } = ev {
                t.add(args);
            }
            Ok(())
        })?;
        ver.touched = Some(t);
    }
    let stdin = input.kind == Kind::Stdin;
    let mut progress = Progress::new(input.size, input_name, common.quiet);
    let walked = input.walk(&common.read, &mut |ev, pos| {
        common.cancel.check()?;
        match ev {
            Event::Rdb(Record::Key(k)) => {
                ver.key(k, common)?;
                progress.tick(pos, 1);
            }
            Event::Command { .. } => {
                if stdin {
                    return Err(Error::Usage(
                        "verify cannot compare an AOF read from stdin; give its path".into(),
                    ));
                }
                ver.rep.aof_commands += 1;
            }
            _ => {}
        }
        Ok(())
    });
    progress.finish();
    walked?;
    finish(ver, start)
}

/// Compare a live source (a standalone server, or every master of a Cluster) with the target
/// in `opts`: every key `SCAN` finds there, read with `DUMP` and its TTL and decoded like a
/// record of a file (see `source`), then compared as [`verify`] compares a file's keys. Keys
/// gone from the source by the time they are read are counted (`source_vanished`), not
/// reported.
pub fn verify_live(
    source: &RedisUrl,
    common: &Common,
    opts: &VerifyOptions,
) -> Result<VerifyReport> {
    let start = Instant::now();
    let mut src = source::LiveSource::open(source)?;
    let mut ver = open_verifier(&src.name, opts)?;
    ver.rep.source_version = Some(src.version.clone());
    let mut progress = Progress::new(None, &src.name, common.quiet);
    let walked = src.walk(common, &mut |rec, bytes| {
        ver.key(rec, common)?;
        progress.tick(bytes, 1);
        Ok(())
    });
    progress.finish();
    let scanned = walked?;
    ver.rep.source_vanished = scanned.vanished;
    ver.rep.source_redirects = scanned.redirects;
    finish(ver, start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(b: &str) -> Reply {
        Reply::Bulk(b.as_bytes().to_vec())
    }

    #[test]
    fn zset_scores_compare_exactly_with_infinities() {
        let c = Chunk::ZSet(vec![
            (b"a".to_vec(), f64::INFINITY),
            (b"b".to_vec(), f64::NEG_INFINITY),
            (b"c".to_vec(), 0.1),
        ]);
        let ok = [Reply::Array(vec![
            bulk("inf"),
            bulk("-inf"),
            bulk("0.10000000000000001"),
        ])];
        assert_eq!(eval_chunk(&c, &ok, 0), Ok(None));
        let off = [Reply::Array(vec![
            bulk("inf"),
            bulk("-inf"),
            bulk("0.1000000000000001"),
        ])];
        let d = eval_chunk(&c, &off, 0).unwrap().unwrap();
        assert!(d.contains("member \"c\""), "{d}");
        let missing = [Reply::Array(vec![bulk("inf"), Reply::Nil, bulk("0.1")])];
        assert!(
            eval_chunk(&c, &missing, 0)
                .unwrap()
                .unwrap()
                .contains("\"b\" missing")
        );
    }

    #[test]
    fn hash_field_ttls_within_tolerance() {
        let c = Chunk::Hash(vec![
            (b"f".to_vec(), b"1".to_vec(), Some(10_000)),
            (b"g".to_vec(), b"2".to_vec(), None),
        ]);
        let vals = Reply::Array(vec![bulk("1"), bulk("2")]);
        let ttls = |a: i64, b: i64| Reply::Array(vec![Reply::Integer(a), Reply::Integer(b)]);
        assert_eq!(
            eval_chunk(&c, &[vals.clone(), ttls(12_000, -1)], 5000),
            Ok(None)
        );
        let d = eval_chunk(&c, &[vals.clone(), ttls(20_000, -1)], 5000)
            .unwrap()
            .unwrap();
        assert!(d.starts_with("field \"f\" TTL"), "{d}");
        let d = eval_chunk(&c, &[vals, ttls(10_000, 99)], 5000)
            .unwrap()
            .unwrap();
        assert!(d.starts_with("field \"g\" TTL"), "{d}");
        // Only values when the target has no field TTLs (older than 7.4).
        let vals = Reply::Array(vec![bulk("1"), bulk("3")]);
        let d = eval_chunk(&c, &[vals], 5000).unwrap().unwrap();
        assert!(d.contains("expected \"2\", found \"3\""), "{d}");
    }

    #[test]
    fn renames_and_db_map() {
        let o = VerifyOptions {
            target: RedisUrl::parse("redis://h/4", None).unwrap(),
            renames: vec![(b"a:".to_vec(), b"b:".to_vec())],
            db_map: vec![(1, 9)],
            ttl_tolerance_ms: 0,
            max_diffs: 1,
            via: snapshot::Via::Commands,
            save_within: std::time::Duration::from_secs(1),
        };
        assert_eq!(o.map_key(b"a:x"), b"b:x");
        assert_eq!(o.map_key(b"c:x"), b"c:x");
        assert_eq!((o.map_db(0), o.map_db(1), o.map_db(2)), (4, 9, 2));
    }

    #[test]
    fn printable_keys() {}
}
