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
use crate::rdb::value::Tuples;
use crate::rdb::{Elem, KeyRecord, Value};

/// Writes JSON lines to `W`.
pub struct JsonlSink<W: Write> {
    w: W,
    path: String,
}

/// Write bytes as a JSON string, or `{"base64": ...}` when not UTF-8.
pub fn write_bytes<W: Write + ?Sized>(w: &mut W, b: &[u8]) -> std::io::Result<()> {
    match std::str::from_utf8(b) {
        Ok(s) => serde_json::to_writer(&mut *w, s).map_err(std::io::Error::other),
        Err(_) => {
            w.write_all(b"{\"base64\":\"")?;
            write_base64(w, b)?;
            w.write_all(b"\"}")
        }
    }
}

/// Write `b` in base64, a chunk at a time. Encoding it whole into a `String` made a 1 GiB
/// binary value cost 1.4 GB of heap (scripts/bench.sh, huge-values). Chunks are a multiple
/// of 3 bytes, so each encodes without padding and their concatenation is the whole encoding.
fn write_base64<W: Write + ?Sized>(w: &mut W, b: &[u8]) -> std::io::Result<()> {
    const CHUNK: usize = 3 * 4096;
    let mut out = [0u8; CHUNK / 3 * 4];
    for c in b.chunks(CHUNK) {
        let n = B64
            .encode_slice(c, &mut out)
            .map_err(std::io::Error::other)?;
        w.write_all(&out[..n])?;
    }
    Ok(())
}

fn write_elem<W: Write + ?Sized>(w: &mut W, e: &Elem<'_>) -> std::io::Result<()> {
    match e {
        Elem::Bytes(b) => write_bytes(w, b),
        Elem::Int(_) | Elem::Double(_) => write_bytes(w, &e.to_bytes()),
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

    fn value(&mut self, rec: &KeyRecord<'_>, v: &Value<'_>) -> Result<()> {
        let w = &mut self.w;
        let dec = |e| crate::rdb::Error::from_decode("", Some(&rec.key), e);
        match v {
            Value::String(s) => write_bytes(w, s).map_err(|e| Error::io(self.path.clone(), e)),
            Value::Module(m) => {
                let r = write!(
                    w,
                    "{{\"module\":\"{}\",\"encver\":{},\"raw\":\"",
                    m.id.name(),
                    m.id.encver(),
                )
                .and_then(|()| write_base64(w, m.raw))
                .and_then(|()| w.write_all(b"\"}"));
                r.map_err(|e| Error::io(self.path.clone(), e))
            }
            Value::Coll(c) => {
                let stride = c.stride();
                let is_zset = c.data_type() == crate::rdb::DataType::ZSet;
                let mut io = || -> Result<()> {
                    let p = |e| Error::io(String::new(), e);
                    w.write_all(b"[").map_err(p)?;
                    let mut first = true;
                    let mut sep = |w: &mut W| -> std::io::Result<()> {
                        if !first {
                            w.write_all(b",")?;
                        }
                        first = false;
                        Ok(())
                    };
                    match stride {
                        1 => {
                            for e in c.elements() {
                                let e = e.map_err(dec)?;
                                sep(w).map_err(p)?;
                                write_elem(w, &e).map_err(p)?;
                            }
                        }
                        2 => {
                            for t in Tuples::<'_, 2>(c.elements()) {
                                let [a, b] = t.map_err(dec)?;
                                sep(w).map_err(p)?;
                                w.write_all(b"[").map_err(p)?;
                                write_elem(w, &a).map_err(p)?;
                                w.write_all(b",").map_err(p)?;
                                if is_zset {
                                    let d = b.as_f64().ok_or_else(|| {
                                        dec(crate::rdb::DecodeError::invalid(
                                            rec.value_offset,
                                            "zset score is not a number",
                                        ))
                                    })?;
                                    write_score(w, d).map_err(p)?;
                                } else {
                                    write_elem(w, &b).map_err(p)?;
                                }
                                w.write_all(b"]").map_err(p)?;
                            }
                        }
                        _ => {
                            for t in Tuples::<'_, 3>(c.elements()) {
                                let [f, v, x] = t.map_err(dec)?;
                                sep(w).map_err(p)?;
                                w.write_all(b"[").map_err(p)?;
                                write_elem(w, &f).map_err(p)?;
                                w.write_all(b",").map_err(p)?;
                                write_elem(w, &v).map_err(p)?;
                                match x.as_i64() {
                                    Some(ms) if ms > 0 => write!(w, ",{ms}").map_err(p)?,
                                    _ => {}
                                }
                                w.write_all(b"]").map_err(p)?;
                            }
                        }
                    }
                    w.write_all(b"]").map_err(p)?;
                    Ok(())
                };
                io().map_err(|e| match e {
                    Error::Io { err, .. } => Error::io(self.path.clone(), err),
                    other => other,
                })
            }
            Value::Stream(s) => {
                let path = self.path.clone();
                let p = |e| Error::io(path.clone(), e);
                w.write_all(b"{\"entries\":[").map_err(p)?;
                let mut first = true;
                let mut werr = None;
                s.for_each_entry(|entry| {
                    let r = (|| -> std::io::Result<()> {
                        if !first {
                            w.write_all(b",")?;
                        }
                        first = false;
                        write!(w, "{{\"id\":\"{}\",\"fields\":[", entry.id)?;
                        for (i, (f, v)) in entry.fields.iter().enumerate() {
                            if i > 0 {
                                w.write_all(b",")?;
                            }
                            w.write_all(b"[")?;
                            write_bytes(w, f)?;
                            w.write_all(b",")?;
                            write_bytes(w, v)?;
                            w.write_all(b"]")?;
                        }
                        w.write_all(b"]}")
                    })();
                    if let Err(e) = r {
                        werr = Some(e);
                        return Err(crate::rdb::DecodeError::invalid(0, "write failed"));
                    }
                    Ok(())
                })
                .map_err(|e| match werr.take() {
                    Some(io) => p(io),
                    None => dec(e).into(),
                })?;
                write!(w, "],\"length\":{},\"last_id\":\"{}\"", s.length, s.last_id).map_err(p)?;
                if let Some(id) = s.first_id {
                    write!(w, ",\"first_id\":\"{id}\"").map_err(p)?;
                }
                if let Some(id) = s.max_deleted_id {
                    write!(w, ",\"max_deleted_id\":\"{id}\"").map_err(p)?;
                }
                if let Some(n) = s.entries_added {
                    write!(w, ",\"entries_added\":{n}").map_err(p)?;
                }
                w.write_all(b",\"groups\":[").map_err(p)?;
                for (gi, g) in s.groups.iter().enumerate() {
                    if gi > 0 {
                        w.write_all(b",").map_err(p)?;
                    }
                    w.write_all(b"{\"name\":").map_err(p)?;
                    write_bytes(w, &g.name).map_err(p)?;
                    write!(w, ",\"last_id\":\"{}\"", g.last_id).map_err(p)?;
                    if let Some(n) = g.entries_read {
                        write!(w, ",\"entries_read\":{}", n as i64).map_err(p)?;
                    }
                    w.write_all(b",\"pending\":[").map_err(p)?;
                    for (i, pe) in g.pending.iter().enumerate() {
                        if i > 0 {
                            w.write_all(b",").map_err(p)?;
                        }
                        let owner = g.consumers.iter().find(|c| c.pending.contains(&pe.id));
                        write!(
                            w,
                            "{{\"id\":\"{}\",\"delivery_time\":{},\"delivery_count\":{}",
                            pe.id, pe.delivery_time, pe.delivery_count
                        )
                        .map_err(p)?;
                        if let Some(c) = owner {
                            w.write_all(b",\"consumer\":").map_err(p)?;
                            write_bytes(w, &c.name).map_err(p)?;
                        }
                        w.write_all(b"}").map_err(p)?;
                    }
                    w.write_all(b"],\"consumers\":[").map_err(p)?;
                    for (ci, c) in g.consumers.iter().enumerate() {
                        if ci > 0 {
                            w.write_all(b",").map_err(p)?;
                        }
                        w.write_all(b"{\"name\":").map_err(p)?;
                        write_bytes(w, &c.name).map_err(p)?;
                        write!(w, ",\"seen_time\":{}", c.seen_time).map_err(p)?;
                        if let Some(t) = c.active_time {
                            write!(w, ",\"active_time\":{t}").map_err(p)?;
                        }
                        w.write_all(b",\"pending\":[").map_err(p)?;
                        for (i, id) in c.pending.iter().enumerate() {
                            if i > 0 {
                                w.write_all(b",").map_err(p)?;
                            }
                            write!(w, "\"{id}\"").map_err(p)?;
                        }
                        w.write_all(b"]}").map_err(p)?;
                    }
                    w.write_all(b"]}").map_err(p)?;
                }
                w.write_all(b"]}").map_err(p)
            }
        }
    }
}

impl<W: Write> Sink for JsonlSink<W> {
    fn key(&mut self, rec: &KeyRecord<'_>) -> Result<()> {
        let v = rec
            .value()
            .map_err(|e| crate::rdb::Error::from_decode("", Some(&rec.key), e))?;
        let head = (|| -> std::io::Result<()> {
            write!(self.w, "{{\"db\":{},\"key\":", rec.db)?;
            write_bytes(&mut self.w, &rec.key)?;
            write!(self.w, ",\"type\":\"{}\"", rec.data_type().name())?;
            if let Some(ms) = rec.expire_ms {
                write!(self.w, ",\"expire_at_ms\":{ms}")?;
            }
            self.w.write_all(b",\"value\":")
        })();
        head.map_err(|e| self.io(e))?;
        self.value(rec, &v)?;
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
mod base64_tests {
    use super::*;

    #[test]
    fn chunked_base64_matches_whole() {
        for len in [
            0,
            1,
            2,
            3,
            4,
            3 * 4096 - 1,
            3 * 4096,
            3 * 4096 + 1,
            3 * 4096 * 2 + 2,
        ] {
            let b: Vec<u8> = (0..len).map(|i| (i * 7 + 0x80) as u8).collect();
            let mut out = Vec::new();
            write_base64(&mut out, &b).unwrap();
            assert_eq!(out, B64.encode(&b).into_bytes(), "len {len}");
        }
    }
}
