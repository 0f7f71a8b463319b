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
///
/// Escaped exactly as `serde_json` escapes a string (`\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`,
/// `\u00XX` for the other control characters; DEL and non-ASCII characters as they are), so
/// that the output stays byte for byte what earlier versions wrote.
pub fn write_bytes<W: Write + ?Sized>(w: &mut W, b: &[u8]) -> std::io::Result<()> {
    let Some(i) = first_special(b) else {
        // The common case: nothing to escape, one copy.
        w.write_all(b"\"")?;
        w.write_all(b)?;
        return w.write_all(b"\"");
    };
    // b[..i] is plain ASCII, so b is UTF-8 exactly when b[i..] is.
    let rest = &b[i..];
    if !rest.is_ascii() && std::str::from_utf8(rest).is_err() {
        // Streamed, so a huge binary value is never held twice in memory.
        w.write_all(b"{\"base64\":\"")?;
        write_base64(w, b)?;
        return w.write_all(b"\"}");
    }
    w.write_all(b"\"")?;
    w.write_all(&b[..i])?;
    write_escaped(w, rest)?;
    w.write_all(b"\"")
}

/// Whether byte `c` needs a look before it goes into a JSON string: a control character, a
/// quote, a backslash, or part of a multi-byte (or invalid) UTF-8 sequence.
#[inline]
fn special(c: u8) -> bool {
    c < 0x20 || c == b'"' || c == b'\\' || c >= 0x80
}

/// The index of the first [`special`] byte of `b`, if any.
///
/// Values are mostly plain text, so the scan tests 16 bytes per step with vector compares
/// (SSE2, which every x86-64 CPU has) and only looks for the exact byte once a block has one.
#[inline]
fn first_special(b: &[u8]) -> Option<usize> {
    let mut blocks = b.chunks_exact(16);
    let mut at = 0;
    for block in &mut blocks {
        if let Some(p) = block_special(block) {
            return Some(at + p);
        }
        at += 16;
    }
    // The last bytes, padded with a byte that is not special to make a whole block.
    let rest = blocks.remainder();
    let mut last = [b'.'; 16];
    last.get_mut(..rest.len())?.copy_from_slice(rest);
    block_special(&last).map(|p| at + p)
}

/// [`first_special`] within one block of 16 bytes.
#[cfg(target_arch = "x86_64")]
#[inline]
fn block_special(block: &[u8]) -> Option<usize> {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    if block.len() != 16 {
        return block.iter().position(|&c| special(c));
    }
    // SAFETY: SSE2 is part of every x86-64 CPU, and the unaligned load reads exactly the 16
    // bytes of `block` (its length was just checked).
    let mask = unsafe {
        let v = _mm_loadu_si128(block.as_ptr().cast::<__m128i>());
        // Signed compare: bytes 0x80..=0xff are negative, so one test finds controls and
        // non-ASCII bytes.
        let low = _mm_cmplt_epi8(v, _mm_set1_epi8(0x20));
        let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        _mm_movemask_epi8(_mm_or_si128(low, _mm_or_si128(quote, backslash)))
    };
    (mask != 0).then(|| mask.trailing_zeros() as usize)
}

/// [`first_special`] within one block of 16 bytes.
#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn block_special(block: &[u8]) -> Option<usize> {
    block.iter().position(|&c| special(c))
}

/// Write valid UTF-8 `b` escaped for a JSON string, without the quotes.
fn write_escaped<W: Write + ?Sized>(w: &mut W, b: &[u8]) -> std::io::Result<()> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        let short = match c {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x0c => b'f',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0..0x20 => b'u',
            _ => continue,
        };
        w.write_all(&b[start..i])?;
        start = i + 1;
        if short == b'u' {
            w.write_all(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(c >> 4) as usize],
                HEX[(c & 0xf) as usize],
            ])?;
        } else {
            w.write_all(&[b'\\', short])?;
        }
    }
    w.write_all(&b[start..])
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
            // carry[..valid] is UTF-8: the first pass said so, and `valid` ends on a boundary.
            write_escaped(w, &carry[..valid])?;
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
                // Most scores are written as the file has them; the others as doubles.
                let mut num = itoa::Buffer::new();
                let text = s.score_text(&mut num);
                let d = match text {
                    Some(_) => 0.0,
                    None => s
                        .as_f64()
                        .ok_or_else(|| DecodeError::invalid(0, "zset score is not a number"))?,
                };
                sep.next(w)?;
                w.write_all(b"[")?;
                write_elem(w, &m)?;
                w.write_all(b",")?;
                match text {
                    Some((t, integral)) => {
                        w.write_all(t)?;
                        if integral {
                            w.write_all(b".0")?;
                        }
                    }
                    None => write_score(w, d)?,
                }
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
    /// Every byte value at every place of a block and of the tail, alone and next to a
    /// multi-byte character: written as serde_json writes the string, or as base64 when the
    /// bytes are not UTF-8.
    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let expected = |b: &[u8]| match std::str::from_utf8(b) {
            Ok(s) => serde_json::to_vec(s).unwrap(),
            Err(_) => format!("{{\"base64\":\"{}\"}}", B64.encode(b)).into_bytes(),
        };
        for len in 1..40 {
            for at in 0..len {
                for c in 0..=255u8 {
                    let mut b = vec![b'x'; len];
                    b[at] = c;
                    let mut out = Vec::new();
                    write_bytes(&mut out, &b).unwrap();
                    assert_eq!(out, expected(&b), "{b:?}");
                    b.splice(len / 2..len / 2, "é€".bytes());
                    out.clear();
                    write_bytes(&mut out, &b).unwrap();
                    assert_eq!(out, expected(&b), "{b:?}");
                }
            }
        }
    }

    #[test]
    fn function_names() {
        let (e, n) = function_meta(b"#!lua name=mylib\nredis.register_function('f', ...)");
        assert_eq!((e.as_str(), n.as_str()), ("lua", "mylib"));
    }
}
