//! RESP output: the commands that rebuild the dataset, ready for `redis-cli --pipe`.
//!
//! Collections are split into commands of at most `max_elems` elements or about `max_bytes`
//! bytes, so no command exceeds what a server accepts by default. Elements are written from
//! the input as they are decoded; an element bigger than the batch limit goes out in a command
//! of its own straight from the memory map. Streams are rebuilt the way Redis rewrites them in
//! an AOF (XADD, XSETID with ENTRIESADDED/MAXDELETEDID, XGROUP CREATE with ENTRIESREAD, XCLAIM
//! ... JUSTID FORCE, XGROUP CREATECONSUMER). Module values go out as RESTORE payloads.

use std::io::Write;

use super::Sink;
use crate::error::{Error, Result};
use crate::rdb::elem::double_text;
use crate::rdb::value::Tuples;
use crate::rdb::{DataType, Elem, KeyRecord, Value};

/// Writes Redis commands to `W`.
pub struct RespSink<W: Write> {
    w: W,
    path: String,
    db: Option<u64>,
    batch: Vec<u8>,
    batch_args: usize,
    /// Most elements (arguments after the key) per command.
    pub max_elems: usize,
    /// Approximate byte limit of one command.
    pub max_bytes: usize,
    /// Emit `FUNCTION LOAD REPLACE` instead of `FUNCTION LOAD`.
    pub replace_functions: bool,
    /// Rebuild streams with the commands of Redis before 7.0: `XSETID` without
    /// `ENTRIESADDED`/`MAXDELETEDID` and `XGROUP CREATE` without `ENTRIESREAD` (which 6.x
    /// refuses as a wrong number of arguments). Those counters are lost, as they are when 7.0
    /// itself loads an RDB 9 stream.
    pub legacy_streams: bool,
}

/// Append one RESP bulk string.
pub fn push_bulk(out: &mut Vec<u8>, a: &[u8]) {
    out.push(b'$');
    out.extend_from_slice(itoa::Buffer::new().format(a.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(a);
    out.extend_from_slice(b"\r\n");
}

fn bulk_header<W: Write + ?Sized>(w: &mut W, len: usize) -> std::io::Result<()> {
    w.write_all(b"$")?;
    w.write_all(itoa::Buffer::new().format(len).as_bytes())?;
    w.write_all(b"\r\n")
}

/// Write a whole command.
pub fn write_command<W: Write + ?Sized>(w: &mut W, args: &[&[u8]]) -> std::io::Result<()> {
    w.write_all(b"*")?;
    w.write_all(itoa::Buffer::new().format(args.len()).as_bytes())?;
    w.write_all(b"\r\n")?;
    for a in args {
        bulk_header(w, a.len())?;
        w.write_all(a)?;
        w.write_all(b"\r\n")?;
    }
    Ok(())
}

impl<W: Write> RespSink<W> {
    /// Write to `w`; `path` names it in errors.
    pub fn new(w: W, path: &str) -> Self {
        RespSink {
            w,
            path: path.to_string(),
            db: None,
            batch: Vec::new(),
            batch_args: 0,
            max_elems: 128,
            max_bytes: 1 << 20,
            replace_functions: false,
            legacy_streams: false,
        }
    }

    fn io(&self, e: std::io::Error) -> Error {
        Error::io(self.path.clone(), e)
    }

    /// The writer back.
    pub fn into_inner(self) -> W {
        self.w
    }

    /// The writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.w
    }

    /// Take `db` as already selected (for encoding one key on its own).
    pub fn assume_db(&mut self, db: u64) {
        self.db = Some(db);
    }

    /// Drop the arguments a collection that failed halfway left in the batch.
    pub fn reset(&mut self) {
        self.batch.clear();
        self.batch_args = 0;
    }

    fn select(&mut self, db: u64) -> Result<()> {
        if self.db != Some(db) {
            let n = db.to_string();
            write_command(&mut self.w, &[b"SELECT", n.as_bytes()]).map_err(|e| self.io(e))?;
            self.db = Some(db);
        }
        Ok(())
    }

    fn cmd(&mut self, args: &[&[u8]]) -> Result<()> {
        write_command(&mut self.w, args).map_err(|e| self.io(e))
    }

    /// Flush the pending batch as `cmd key <batch...>`.
    fn flush_batch(&mut self, cmd: &[u8], key: &[u8]) -> Result<()> {
        if self.batch_args == 0 {
            return Ok(());
        }
        let r = (|| -> std::io::Result<()> {
            self.w.write_all(b"*")?;
            self.w
                .write_all(itoa::Buffer::new().format(self.batch_args + 2).as_bytes())?;
            self.w.write_all(b"\r\n")?;
            bulk_header(&mut self.w, cmd.len())?;
            self.w.write_all(cmd)?;
            self.w.write_all(b"\r\n")?;
            bulk_header(&mut self.w, key.len())?;
            self.w.write_all(key)?;
            self.w.write_all(b"\r\n")?;
            self.w.write_all(&self.batch)
        })();
        self.batch.clear();
        self.batch_args = 0;
        r.map_err(|e| self.io(e))
    }

    /// Add one group of arguments (an element, a pair...) to the batch of `cmd key`.
    fn add(&mut self, cmd: &[u8], key: &[u8], group: &[&Elem<'_>]) -> Result<()> {
        let size: usize = group.iter().map(|e| e.text_len()).sum();
        if self.batch_args + group.len() > self.max_elems
            || (self.batch_args > 0 && self.batch.len() + size > self.max_bytes)
        {
            self.flush_batch(cmd, key)?;
        }
        if size > self.max_bytes {
            // A huge element: write it straight out, without copying it into the batch.
            let r = (|| -> std::io::Result<()> {
                self.w.write_all(b"*")?;
                self.w
                    .write_all(itoa::Buffer::new().format(group.len() + 2).as_bytes())?;
                self.w.write_all(b"\r\n")?;
                for a in [cmd, key] {
                    bulk_header(&mut self.w, a.len())?;
                    self.w.write_all(a)?;
                    self.w.write_all(b"\r\n")?;
                }
                for e in group {
                    bulk_header(&mut self.w, e.text_len())?;
                    e.write_to(&mut self.w)?;
                    self.w.write_all(b"\r\n")?;
                }
                Ok(())
            })();
            return r.map_err(|e| self.io(e));
        }
        for e in group {
            e.with_text(|t| push_bulk(&mut self.batch, t));
        }
        self.batch_args += group.len();
        Ok(())
    }

    fn collection(&mut self, rec: &KeyRecord<'_>, c: &crate::rdb::Coll<'_>) -> Result<()> {
        let key: &[u8] = &rec.key;
        let dec = |e| -> Error { crate::rdb::Error::from_decode("", Some(key), e).into() };
        match (c.data_type(), c.stride()) {
            (DataType::List, _) | (DataType::Set, _) => {
                let cmd: &[u8] = if c.data_type() == DataType::List {
                    b"RPUSH"
                } else {
                    b"SADD"
                };
                for e in c.elements() {
                    let e = e.map_err(dec)?;
                    self.add(cmd, key, &[&e])?;
                }
                self.flush_batch(cmd, key)
            }
            (DataType::ZSet, _) => {
                for t in Tuples::<'_, 2>(c.elements()) {
                    let [m, s] = t.map_err(dec)?;
                    // Most scores are written as the file has them; the others as doubles.
                    let (mut num, mut text) = (itoa::Buffer::new(), ryu::Buffer::new());
                    let score = match s.score_text(&mut num) {
                        Some((t, _)) => Elem::borrowed(t),
                        None => {
                            let d = s.as_f64().ok_or_else(|| {
                                dec(crate::rdb::DecodeError::invalid(
                                    rec.value_offset,
                                    "zset score is not a number",
                                ))
                            })?;
                            Elem::borrowed(double_text(d, &mut text).as_bytes())
                        }
                    };
                    self.add(b"ZADD", key, &[&score, &m])?;
                }
                self.flush_batch(b"ZADD", key)
            }
            (_, 2) => {
                for t in Tuples::<'_, 2>(c.elements()) {
                    let [f, v] = t.map_err(dec)?;
                    self.add(b"HSET", key, &[&f, &v])?;
                }
                self.flush_batch(b"HSET", key)
            }
            _ => {
                // Hash with field TTLs: HSET everything, then HPEXPIREAT per field (7.4+).
                for t in Tuples::<'_, 3>(c.elements()) {
                    let [f, v, _] = t.map_err(dec)?;
                    self.add(b"HSET", key, &[&f, &v])?;
                }
                self.flush_batch(b"HSET", key)?;
                for t in Tuples::<'_, 3>(c.elements()) {
                    let [f, _, x] = t.map_err(dec)?;
                    if let Some(ms) = x.as_i64().filter(|&ms| ms > 0) {
                        let mut ms_text = itoa::Buffer::new();
                        let ms = ms_text.format(ms).as_bytes();
                        f.with_text(|f| self.cmd(&[b"HPEXPIREAT", key, ms, b"FIELDS", b"1", f]))?;
                    }
                }
                Ok(())
            }
        }
    }

    fn stream(
        &mut self,
        rec: &KeyRecord<'_>,
        s: &crate::rdb::stream::StreamValue<'_>,
    ) -> Result<()> {
        let key: &[u8] = &rec.key;
        let mut werr = None;
        let mut entries = 0u64;
        let w = &mut self.w;
        s.for_each_entry(|e| {
            entries += 1;
            let id = e.id.to_string();
            let mut args: Vec<&[u8]> = vec![b"XADD", key, id.as_bytes()];
            for (f, v) in &e.fields {
                args.push(f);
                args.push(v);
            }
            if let Err(err) = write_command(w, &args) {
                werr = Some(err);
                return Err(crate::rdb::DecodeError::invalid(0, "write failed"));
            }
            Ok(())
        })
        .map_err(|e| match werr.take() {
            Some(io) => Error::io(self.path.clone(), io),
            None => crate::rdb::Error::from_decode("", Some(key), e).into(),
        })?;
        if entries == 0 {
            // An empty stream still exists: create it, then trim it to nothing (as Redis does).
            self.cmd(&[b"XADD", key, b"MAXLEN", b"0", b"0-1", b"x", b"y"])?;
        }
        let last = s.last_id.to_string();
        match (s.entries_added, s.max_deleted_id) {
            (Some(added), Some(maxdel)) if !self.legacy_streams => {
                let (added, maxdel) = (added.to_string(), maxdel.to_string());
                self.cmd(&[
                    b"XSETID",
                    key,
                    last.as_bytes(),
                    b"ENTRIESADDED",
                    added.as_bytes(),
                    b"MAXDELETEDID",
                    maxdel.as_bytes(),
                ])?;
            }
            _ => self.cmd(&[b"XSETID", key, last.as_bytes()])?,
        }
        for g in &s.groups {
            let gid = g.last_id.to_string();
            match g.entries_read.filter(|_| !self.legacy_streams) {
                Some(n) => {
                    let n = (n as i64).to_string();
                    self.cmd(&[
                        b"XGROUP",
                        b"CREATE",
                        key,
                        &g.name,
                        gid.as_bytes(),
                        b"ENTRIESREAD",
                        n.as_bytes(),
                    ])?;
                }
                None => self.cmd(&[b"XGROUP", b"CREATE", key, &g.name, gid.as_bytes()])?,
            }
            for c in &g.consumers {
                if c.pending.is_empty() {
                    self.cmd(&[b"XGROUP", b"CREATECONSUMER", key, &g.name, &c.name])?;
                }
                for id in &c.pending {
                    let Some(pe) = g.pending.iter().find(|p| p.id == *id) else {
                        continue;
                    };
                    let (ids, time, count) = (
                        id.to_string(),
                        pe.delivery_time.to_string(),
                        pe.delivery_count.to_string(),
                    );
                    self.cmd(&[
                        b"XCLAIM",
                        key,
                        &g.name,
                        &c.name,
                        b"0",
                        ids.as_bytes(),
                        b"TIME",
                        time.as_bytes(),
                        b"RETRYCOUNT",
                        count.as_bytes(),
                        b"JUSTID",
                        b"FORCE",
                    ])?;
                }
            }
        }
        Ok(())
    }
}

impl<W: Write> Sink for RespSink<W> {
    fn key(&mut self, rec: &KeyRecord<'_>) -> Result<()> {
        let v = rec
            .value()
            .map_err(|e| crate::rdb::Error::from_decode("", Some(&rec.key), e))?;
        self.select(rec.db)?;
        let key: &[u8] = &rec.key;
        match &v {
            Value::String(s) => self.cmd(&[b"SET", key, s])?,
            Value::BigString(l) => {
                // Header, then the value decoded chunk by chunk straight into the output.
                let r = (|| -> Result<(), crate::rdb::cursor::StreamError> {
                    let io = crate::rdb::cursor::StreamError::Io;
                    self.w.write_all(b"*3\r\n$3\r\nSET\r\n").map_err(io)?;
                    bulk_header(&mut self.w, key.len()).map_err(io)?;
                    self.w.write_all(key).map_err(io)?;
                    self.w.write_all(b"\r\n").map_err(io)?;
                    bulk_header(&mut self.w, l.len as usize).map_err(io)?;
                    l.for_each_chunk(&mut |c| self.w.write_all(c))?;
                    self.w.write_all(b"\r\n").map_err(io)
                })();
                r.map_err(|e| match e {
                    crate::rdb::cursor::StreamError::Io(e) => self.io(e),
                    crate::rdb::cursor::StreamError::Decode(e) => {
                        crate::rdb::Error::from_decode("", Some(key), e).into()
                    }
                })?;
            }
            Value::Coll(c) => self.collection(rec, c)?,
            Value::Stream(s) => self.stream(rec, s)?,
            Value::Module(_) => {
                let p = crate::rdb::dump::payload(rec.type_id, rec.raw, rec.version.number as u16);
                self.cmd(&[b"RESTORE", key, b"0", &p])?;
            }
        }
        if let Some(ms) = rec.expire_ms {
            self.cmd(&[b"PEXPIREAT", key, itoa::Buffer::new().format(ms).as_bytes()])?;
        }
        Ok(())
    }

    fn function(&mut self, code: &[u8]) -> Result<()> {
        if self.replace_functions {
            self.cmd(&[b"FUNCTION", b"LOAD", b"REPLACE", code])
        } else {
            self.cmd(&[b"FUNCTION", b"LOAD", code])
        }
    }

    fn encoded(&mut self, first_db: u64, last_db: u64, bytes: &[u8]) -> Result<()> {
        self.select(first_db)?;
        self.w.write_all(bytes).map_err(|e| self.io(e))?;
        self.db = Some(last_db);
        Ok(())
    }

    fn command(&mut self, db: u64, args: &[&[u8]]) -> Result<()> {
        self.select(db)?;
        self.cmd(args)
    }

    fn finish(&mut self) -> Result<()> {
        self.w.flush().map_err(|e| self.io(e))
    }
}
