//! Keys too big to prepare whole: rewritten in parts of about `--part-bytes` as they are
//! decoded, each part a `MULTI`/`EXEC` with a marker, so memory never grows with the value.

use super::encode::*;
use super::options::*;
use crate::error::{Error, Result};
use crate::rdb::{KeyRecord, Value};
use crate::resp::write_command;
use crate::sink::Sink;
use crate::sink::resp::RespSink;
use crate::sink::writer::{Marker, Unit, UnitKind, Writer, marker_value};

/// Sends the commands of a big key in parts as they are produced, so neither the whole
/// value nor its commands are ever in memory. Each part ends at a command boundary and is
/// one `MULTI`/`EXEC` that also sets the key's marker to the part's number, so a part sent
/// again after a dropped connection is applied at most once.
pub(crate) struct PartSender<'w> {
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
    pub(crate) fn ship(&mut self, last: bool) -> Result<()> {
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
pub(crate) fn stream_rewrite(ctx: &Ctx<'_>, rec: &KeyRecord<'_>, writer: &Writer) -> Result<()> {
    let db = ctx.map_db(rec.db);
    let key = ctx.common.map.key(&rec.key).into_owned();
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
            .map_err(|e| e.in_input(&ctx.input, Some(&rec.key)))
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
    // The last part may be refused too (the import stopped meanwhile): the parts before it
    // built part of `tmp`.
    let shipped = ps.ship(true);
    if shipped.is_err() {
        writer.abandon(db, key);
    }
    shipped
}

/// A big string as `SETRANGE tmp len-1 "\0"`, `SETRANGE tmp offset chunk`...,
/// `[PEXPIREAT tmp ms]` into the part sender: never more than a chunk of it in memory.
pub(crate) fn stream_string(
    ctx: &Ctx<'_>,
    rec: &KeyRecord<'_>,
    tmp: &[u8],
    ps: &mut PartSender<'_>,
) -> Result<()> {
    use std::io::Write as _;
    let value = rec.value().map_err(|e| ctx.decode_error(&rec.key, e))?;
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
                    Error::from(ctx.decode_error(&rec.key, e))
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
