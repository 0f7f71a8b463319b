//! JSON lines: one object per key, function or AOF command.
//!
//! Key lines: `{"db":0,"key":"k","type":"hash","expire_at_ms":1700000000000,"value":...}`.
//! Values: string → string; list/set → array; zset → `[member, score]` pairs (infinite scores as
//! `"inf"`/`"-inf"`); hash → `[field, value]` pairs, `[field, value, expire_at_ms]` for fields
//! with a TTL; stream → `{entries, length, last_id, ..., groups}`; module → `{module, encver,
//! raw}` (raw payload in base64). Bytes that are not valid UTF-8 become `{"base64": "..."}`.
//! Function lines: `{"function": code, "engine": "lua", "library": name}`. AOF lines:
//! `{"db": N, "command": [args...]}`. Values are written as they are walked, never built.

use std::io::Write;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use super::Sink;
use crate::error::{Error, Result};
use crate::rdb::cursor::{LzfData, StreamError};
use crate::rdb::stream::StreamValue;
use crate::rdb::value::Tuples;
use crate::rdb::{Coll, DataType, DecodeError, Elem, KeyRecord, Value};

/// Writes JSON lines to `W`.
pub struct JsonlSink<W: Write> {
    w: W,
    path: String,
}

/// Write bytes as a JSON string, or `{"base64": ...}` when not UTF-8.
pub fn write_bytes<W: Write + ?Sized>(w: &mut W, b: &[u8]) -> std::io::Result<()> {
    // Fast path: printable ASCII without quotes or backslashes needs no escaping.
    if b.iter()
        .all(|&c| (0x20..0x7f).contains(&c) && c != b'"' && c != b'\\')
    {
        w.write_all(b"\"")?;
        w.write_all(b)?;
        return w.write_all(b"\"");
    }
    match std::str::from_utf8(b) {
        Ok(s) => serde_json::to_writer(&mut *w, s).map_err(std::io::Error::other),
        Err(_) => {
            // Streamed, so a huge binary value is never held twice in memory.
            w.write_all(b"{\"base64\":\"")?;
            write_base64(w, b)?;
            w.write_all(b"\"}")
        }
    }
}

/// Write `b` as base64 in bounded chunks (multiples of 3 bytes, so no padding in between).
pub fn write_base64<W: Write + ?Sized>(w: &mut W, b: &[u8]) -> std::io::Result<()> {
    let mut buf = String::new();
    for chunk in b.chunks(3 * 16384) {
        buf.clear();
        B64.encode_string(chunk, &mut buf);
        w.write_all(buf.as_bytes())?;
    }
    Ok(())
}

/// Write a large LZF string as JSON in two streamed passes: one to learn whether it is UTF-8,
/// one to write it (escaped text, or base64), never holding it whole.
pub fn write_big_string<W: Write + ?Sized>(w: &mut W, l: &LzfData<'_>) -> Result<(), StreamError> {
    // Pass 1: UTF-8 validation across chunk boundaries (a character may straddle two chunks).
    let mut carry: Vec<u8> = Vec::new();
    let mut utf8 = true;
    l.for_each_chunk(&mut |c| {
        if !utf8 {
            return Ok(());
        }
        carry.extend_from_slice(c);
        match std::str::from_utf8(&carry) {
            Ok(_) => carry.clear(),
            Err(e) if e.error_len().is_none() => {
                let keep = carry.len() - e.valid_up_to();
                carry.drain(..carry.len() - keep);
            }
            Err(_) => utf8 = false,
        }
        Ok(())
    })?;
    let utf8 = utf8 && carry.is_empty();
    carry.clear();
    let io = StreamError::Io;
    if utf8 {
        w.write_all(b"\"").map_err(io)?;
        l.for_each_chunk(&mut |c| {
            carry.extend_from_slice(c);
            let valid = match std::str::from_utf8(&carry) {
                Ok(_) => carry.len(),
                Err(e) => e.valid_up_to(),
            };
            let text = std::str::from_utf8(&carry[..valid]).map_err(std::io::Error::other)?;
            // serde_json escapes a whole string with its quotes; drop them for this piece.
            let quoted = serde_json::to_vec(text).map_err(std::io::Error::other)?;
            w.write_all(&quoted[1..quoted.len() - 1])?;
            carry.drain(..valid);
            Ok(())
        })?;
        w.write_all(b"\"").map_err(io)
    } else {
        w.write_all(b"{\"base64\":\"").map_err(io)?;
        l.for_each_chunk(&mut |c| {
            carry.extend_from_slice(c);
            let whole = carry.len() / 3 * 3;
            write_base64(w, &carry[..whole])?;
            carry.drain(..whole);
            Ok(())
        })?;
        write_base64(w, &carry).map_err(io)?;
        w.write_all(b"\"}").map_err(io)
    }
}

fn write_elem<W: Write + ?Sized>(w: &mut W, e: &Elem<'_>) -> std::io::Result<()> {
    match e {
        Elem::Bytes(b) => write_bytes(w, b),
        // Digits, a sign, a dot, an exponent, `inf` or `nan`: nothing to escape.
        number => number.with_text(|t| {
            w.write_all(b"\"")?;
            w.write_all(t)?;
            w.write_all(b"\"")
        }),
    }
}

fn write_score<W: Write + ?Sized>(w: &mut W, d: f64) -> std::io::Result<()> {
    if d.is_finite() {
        let mut b = ryu::Buffer::new();
        w.write_all(b.format_finite(d).as_bytes())
    } else if d > 0.0 {
        w.write_all(b"\"inf\"")
    } else {
        w.write_all(b"\"-inf\"")
    }
}

/// Library name and engine from a function's shebang line (`#!lua name=mylib`).
pub fn function_meta(code: &[u8]) -> (String, String) {
    let first = code.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(first);
    let mut parts = line.trim_start_matches("#!").split_whitespace();
    let engine = parts.next().unwrap_or_default().to_string();
    let name = parts
        .find_map(|p| p.strip_prefix("name="))
        .unwrap_or_default()
        .to_string();
    (engine, name)
}

impl<W: Write> JsonlSink<W> {
    /// Write to `w`; `path` names it in errors.
    pub fn new(w: W, path: &str) -> Self {
        JsonlSink {
            w,
            path: path.to_string(),
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

    /// Turn a write failure into the crate error, naming the output or the key.
    fn fail(&self, key: &[u8], e: StreamError) -> Error {
        match e {
            StreamError::Io(e) => self.io(e),
            StreamError::Decode(e) => crate::rdb::Error::from_decode("", Some(key), e).into(),
        }
    }
}

fn write_value<W: Write>(w: &mut W, v: &Value<'_>) -> Result<(), StreamError> {
    match v {
        Value::String(s) => Ok(write_bytes(w, s)?),
        Value::BigString(l) => write_big_string(w, l),
        Value::Module(m) => {
            write!(
                w,
                "{{\"module\":\"{}\",\"encver\":{},\"raw\":\"",
                m.id.name(),
                m.id.encver()
            )?;
            write_base64(w, m.raw)?;
            Ok(w.write_all(b"\"}")?)
        }
        Value::Coll(c) => write_coll(w, c),
        Value::Stream(s) => write_stream(w, s),
    }
}

/// Writes `,` before every item but the first.
struct Sep(bool);

impl Sep {
    fn next<W: Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        if std::mem::replace(&mut self.0, true) {
            w.write_all(b",")?;
        }
        Ok(())
    }
}

fn write_coll<W: Write>(w: &mut W, c: &Coll<'_>) -> Result<(), StreamError> {
    let mut sep = Sep(false);
    w.write_all(b"[")?;
    match c.stride() {
        1 => {
            for e in c.elements() {
                sep.next(w)?;
                write_elem(w, &e?)?;
            }
        }
        2 if c.data_type() == DataType::ZSet => {
            for t in Tuples::<'_, 2>(c.elements()) {
                let [m, s] = t?;
                let d = s
                    .as_f64()
                    .ok_or_else(|| DecodeError::invalid(0, "zset score is not a number"))?;
                sep.next(w)?;
                w.write_all(b"[")?;
                write_elem(w, &m)?;
                w.write_all(b",")?;
                write_score(w, d)?;
                w.write_all(b"]")?;
            }
        }
        2 => {
            for t in Tuples::<'_, 2>(c.elements()) {
                let [f, v] = t?;
                sep.next(w)?;
                w.write_all(b"[")?;
                write_elem(w, &f)?;
                w.write_all(b",")?;
                write_elem(w, &v)?;
                w.write_all(b"]")?;
            }
        }
        _ => {
            // Hashes with field TTLs: [field, value] or [field, value, expire_at_ms].
            for t in Tuples::<'_, 3>(c.elements()) {
                let [f, v, x] = t?;
                sep.next(w)?;
                w.write_all(b"[")?;
                write_elem(w, &f)?;
                w.write_all(b",")?;
                write_elem(w, &v)?;
                if let Some(ms) = x.as_i64().filter(|&ms| ms > 0) {
                    w.write_all(b",")?;
                    w.write_all(itoa::Buffer::new().format(ms).as_bytes())?;
                }
                w.write_all(b"]")?;
            }
        }
    }
    Ok(w.write_all(b"]")?)
}

fn write_stream<W: Write>(w: &mut W, s: &StreamValue<'_>) -> Result<(), StreamError> {
    w.write_all(b"{\"entries\":[")?;
    let mut sep = Sep(false);
    let mut failed = None;
    s.for_each_entry(|entry| {
        let r = (|| -> std::io::Result<()> {
            sep.next(w)?;
            write!(w, "{{\"id\":\"{}\",\"fields\":[", entry.id)?;
            let mut fsep = Sep(false);
            for (f, v) in &entry.fields {
                fsep.next(w)?;
                w.write_all(b"[")?;
                write_bytes(w, f)?;
                w.write_all(b",")?;
                write_bytes(w, v)?;
                w.write_all(b"]")?;
            }
            w.write_all(b"]}")
        })();
        r.map_err(|e| {
            failed = Some(e);
            DecodeError::invalid(0, "output failed")
        })
    })
    .map_err(|e| match failed.take() {
        Some(io) => StreamError::Io(io),
        None => StreamError::Decode(e),
    })?;
    write!(w, "],\"length\":{},\"last_id\":\"{}\"", s.length, s.last_id)?;
    if let Some(id) = s.first_id {
        write!(w, ",\"first_id\":\"{id}\"")?;
    }
    if let Some(id) = s.max_deleted_id {
        write!(w, ",\"max_deleted_id\":\"{id}\"")?;
    }
    if let Some(n) = s.entries_added {
        write!(w, ",\"entries_added\":{n}")?;
    }
    w.write_all(b",\"groups\":[")?;
    let mut gsep = Sep(false);
    for g in &s.groups {
        gsep.next(w)?;
        w.write_all(b"{\"name\":")?;
        write_bytes(w, &g.name)?;
        write!(w, ",\"last_id\":\"{}\"", g.last_id)?;
        if let Some(n) = g.entries_read {
            // -1 (stored as u64::MAX) means "unknown", as XINFO shows it.
            write!(w, ",\"entries_read\":{}", n as i64)?;
        }
        w.write_all(b",\"pending\":[")?;
        let mut psep = Sep(false);
        for pe in &g.pending {
            psep.next(w)?;
            write!(
                w,
                "{{\"id\":\"{}\",\"delivery_time\":{},\"delivery_count\":{}",
                pe.id, pe.delivery_time, pe.delivery_count
            )?;
            if let Some(c) = g.consumers.iter().find(|c| c.pending.contains(&pe.id)) {
                w.write_all(b",\"consumer\":")?;
                write_bytes(w, &c.name)?;
            }
            w.write_all(b"}")?;
        }
        w.write_all(b"],\"consumers\":[")?;
        let mut csep = Sep(false);
        for c in &g.consumers {
            csep.next(w)?;
            w.write_all(b"{\"name\":")?;
            write_bytes(w, &c.name)?;
            write!(w, ",\"seen_time\":{}", c.seen_time)?;
            if let Some(t) = c.active_time {
                write!(w, ",\"active_time\":{t}")?;
            }
            w.write_all(b",\"pending\":[")?;
            let mut isep = Sep(false);
            for id in &c.pending {
                isep.next(w)?;
                write!(w, "\"{id}\"")?;
            }
            w.write_all(b"]}")?;
        }
        w.write_all(b"]}")?;
    }
    Ok(w.write_all(b"]}")?)
}

impl<W: Write> Sink for JsonlSink<W> {
    fn key(&mut self, rec: &KeyRecord<'_>) -> Result<()> {
        let v = rec
            .value()
            .map_err(|e| crate::rdb::Error::from_decode("", Some(&rec.key), e))?;
        let head = (|| -> std::io::Result<()> {
            let w = &mut self.w;
            w.write_all(b"{\"db\":")?;
            w.write_all(itoa::Buffer::new().format(rec.db).as_bytes())?;
            w.write_all(b",\"key\":")?;
            write_bytes(w, &rec.key)?;
            w.write_all(b",\"type\":\"")?;
            w.write_all(rec.data_type().name().as_bytes())?;
            w.write_all(b"\"")?;
            if let Some(ms) = rec.expire_ms {
                w.write_all(b",\"expire_at_ms\":")?;
                w.write_all(itoa::Buffer::new().format(ms).as_bytes())?;
            }
            w.write_all(b",\"value\":")
        })();
        head.map_err(|e| self.io(e))?;
        write_value(&mut self.w, &v).map_err(|e| self.fail(&rec.key, e))?;
        self.w.write_all(b"}\n").map_err(|e| self.io(e))
    }

    fn function(&mut self, code: &[u8]) -> Result<()> {
        let (engine, name) = function_meta(code);
        let r = (|| -> std::io::Result<()> {
            self.w.write_all(b"{\"function\":")?;
            write_bytes(&mut self.w, code)?;
            self.w.write_all(b",\"engine\":")?;
            serde_json::to_writer(&mut self.w, &engine).map_err(std::io::Error::other)?;
            self.w.write_all(b",\"library\":")?;
            serde_json::to_writer(&mut self.w, &name).map_err(std::io::Error::other)?;
            self.w.write_all(b"}\n")
        })();
        r.map_err(|e| self.io(e))
    }

    fn encoded(&mut self, _first_db: u64, _last_db: u64, bytes: &[u8]) -> Result<()> {
        self.w.write_all(bytes).map_err(|e| self.io(e))
    }

    fn command(&mut self, db: u64, args: &[&[u8]]) -> Result<()> {
        let r = (|| -> std::io::Result<()> {
            write!(self.w, "{{\"db\":{db},\"command\":[")?;
            for (i, a) in args.iter().enumerate() {
                if i > 0 {
                    self.w.write_all(b",")?;
                }
                write_bytes(&mut self.w, a)?;
            }
            self.w.write_all(b"]}\n")
        })();
        r.map_err(|e| self.io(e))
    }

    fn finish(&mut self) -> Result<()> {
        self.w.flush().map_err(|e| self.io(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn chunked_base64_equals_one_shot() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut out = Vec::new();
        write_base64(&mut out, &data).unwrap();
        assert_eq!(out, B64.encode(&data).into_bytes());
    }
    #[test]
    fn function_names() {
        let (e, n) = function_meta(b"#!lua name=mylib\nredis.register_function('f', ...)");
        assert_eq!((e.as_str(), n.as_str()), ("lua", "mylib"));
    }
}
