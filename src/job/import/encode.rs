//! How one key becomes a [`Unit`] on a rayon worker: `RESTORE` with the value's raw bytes,
//! or the rewrite path's commands under a temporary key (see the `import` module doc).

use super::modules::{self, TargetModules};
use super::options::*;
use crate::error::{Error, Result};
use crate::job::Common;
use crate::rdb::{Dialect, KeyRecord, Value};
use crate::resp::write_command;
use crate::sink::Sink;
use crate::sink::resp::RespSink;
use crate::sink::writer::{Unit, UnitKind};

pub use crate::keyslot::tmp_key_for as tmp_key;

pub(crate) fn count_commands(buf: &[u8]) -> Result<usize> {
    let mut n = 0;
    let mut pos = 0;
    let mut args = Vec::new();
    while pos < buf.len() {
        match crate::resp::parse_command(&buf[pos..], &mut args) {
            Ok(Some(used)) => {
                pos += used;
                n += 1;
            }
            _ => return Err(Error::Internal("bad rewrite encoding".into())),
        }
    }
    Ok(n)
}

/// A rewrite unit (bytes, replies, kind), or why the key cannot be sent.
pub(crate) type Rewritten = std::result::Result<(Vec<u8>, usize, UnitKind), String>;

/// What a key became on a worker thread.
pub(crate) enum Prepared {
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
#[derive(Clone)]
pub(crate) struct Ctx<'o> {
    /// The input being imported (its name in decode errors).
    pub(crate) input: String,
    pub(crate) common: &'o Common,
    pub(crate) opts: &'o ImportOptions,
    pub(crate) target_rdb: u32,
    pub(crate) proto_max: u64,
    pub(crate) chunk: usize,
    pub(crate) now: i64,
    /// `SET ... PXAT` exists (6.2+).
    pub(crate) set_pxat: bool,
    /// This import's id, in the markers it writes.
    pub(crate) run: u64,
    /// The target is a Cluster: units carry their slot, only db 0 exists.
    pub(crate) cluster: bool,
    /// Where function libraries go: a slot of each master (`[None]` when standalone).
    pub(crate) function_slots: Vec<Option<u16>>,
    /// The target's modules, from the precheck.
    pub(crate) modules: &'o TargetModules,
}

impl Ctx<'_> {
    /// A decode error of `key`'s value, naming the input, its byte offset and the key.
    pub(crate) fn decode_error(&self, key: &[u8], e: crate::rdb::DecodeError) -> crate::rdb::Error {
        crate::rdb::Error::from_decode(&self.input, Some(key), e)
    }

    pub(crate) fn map_db(&self, db: u64) -> u64 {
        self.common.map.db(db)
    }

    /// A key's Cluster slot (None on a standalone target).
    pub(crate) fn slot_of(&self, key: &[u8]) -> Option<u16> {
        self.cluster.then(|| crate::keyslot::key_slot(key))
    }

    pub(crate) fn prepare(&self, rec: &KeyRecord<'_>) -> Result<Prepared> {
        if !self.common.map.keep(rec.db, &rec.key, rec.data_type()) {
            return Ok(Prepared::Filtered);
        }
        if rec.expire_ms.is_some_and(|ms| ms <= self.now) {
            return Ok(Prepared::Expired);
        }
        let db = self.map_db(rec.db);
        let key = self.common.map.key(&rec.key);
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
                match rec.value().map_err(|e| self.decode_error(&rec.key, e))? {
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
    pub(crate) fn plain_value<'r>(
        &self,
        rec: &KeyRecord<'r>,
    ) -> Result<Option<std::borrow::Cow<'r, [u8]>>> {
        if rec.type_id != crate::rdb::types::type_id::STRING
            || self.opts.mode == Mode::Restore
            || !self.set_pxat
            || rec.idle.is_some()
            || rec.freq.is_some()
            || rec.raw.len() > self.chunk
        {
            return Ok(None);
        }
        let value = rec.value().map_err(|e| self.decode_error(&rec.key, e))?;
        let Value::String(v) = value else {
            return Ok(None);
        };
        Ok((v.len() <= self.chunk).then_some(v))
    }

    /// `SET key value [NX] [PXAT ms]` for a value [`Ctx::plain_value`] gave.
    pub(crate) fn plain_set(&self, rec: &KeyRecord<'_>, db: u64, key: &[u8], v: &[u8]) -> Unit {
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
    pub(crate) fn rewrite(&self, rec: &KeyRecord<'_>, key: &[u8]) -> Result<Rewritten> {
        let value = rec.value().map_err(|e| self.decode_error(&rec.key, e))?;
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
                            self.decode_error(&rec.key, e).into()
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
                s.key(&r)
                    .map_err(|e| e.in_input(&self.input, Some(&rec.key)))?;
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

    pub(crate) fn string(&self, out: &mut Vec<u8>, tmp: &[u8], s: &[u8], expire: Option<i64>) {
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
