//! Values in chunks: a value of the source is walked into [`Chunk`]s small enough for one
//! pipelined batch (a big one in many), each read back from the target with the commands that
//! fetch exactly that part (`push_chunk`), and compared (`eval_chunk`).

use super::check::*;
use crate::error::{Error, Result};
use crate::net::{Pipe, Version as Caps};
use crate::rdb::stream::StreamEntry;
use crate::rdb::value::{Tuples, zset_pairs};
use crate::rdb::{DataType, DecodeError, Value};
use crate::resp::Reply;
use crate::text::excerpt;

/// Size limits of a chunk of source elements.
#[derive(Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) elems: usize,
    pub(crate) bytes: usize,
}

/// A value small enough for this joins a batch of keys.
pub(crate) const SMALL: Limits = Limits {
    elems: 512,
    bytes: 256 << 10,
};

/// Chunks of a big value.
pub(crate) const BIG: Limits = Limits {
    elems: 2000,
    bytes: 1 << 20,
};

/// Source elements to compare in one go.
#[derive(Debug)]
pub(crate) enum Chunk {
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
pub(crate) struct Count {
    pub(crate) n: u64,
    pub(crate) slack: u64,
}

pub(crate) type Emit<'f> = dyn FnMut(Chunk, bool) -> Result<bool> + 'f;

/// Group items into chunks; `f(chunk, last)` returns false to stop. `None` when stopped.
pub(crate) fn feed<T>(
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
pub(crate) fn walk_chunks(
    v: &Value<'_>,
    now: i64,
    lim: Limits,
    dec: &dyn Fn(DecodeError) -> Error,
    f: &mut Emit<'_>,
) -> Result<Option<Count>> {
    match v {
        Value::String(s) => string_chunks(s, lim, f),
        Value::BigString(l) => big_string_chunks(l, lim, dec, f),
        Value::Module(_) => Ok(Some(Count::default())),
        Value::Coll(c) => coll_chunks(c, now, lim, dec, f),
        Value::Stream(s) => stream_chunks(s, lim, dec, f),
    }
}

/// A string held whole: one chunk, or several of `lim.bytes`.
fn string_chunks(s: &[u8], lim: Limits, f: &mut Emit<'_>) -> Result<Option<Count>> {
    if s.len() <= lim.bytes {
        let whole = Chunk::Str {
            off: 0,
            bytes: s.to_vec(),
            whole: true,
        };
        f(whole, true)?;
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

/// An LZF string too big to decompress whole: always in chunks, decompressed as they go.
fn big_string_chunks(
    l: &crate::rdb::cursor::LzfData<'_>,
    lim: Limits,
    dec: &dyn Fn(DecodeError) -> Error,
    f: &mut Emit<'_>,
) -> Result<Option<Count>> {
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
            let chunk = Chunk::Str {
                off,
                bytes: part,
                whole: false,
            };
            match f(chunk, false) {
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
    let last = Chunk::Str {
        off,
        bytes: buf,
        whole: false,
    };
    f(last, true)?;
    Ok(Some(Count {
        n: off + n,
        slack: 0,
    }))
}

/// A list, set, zset or hash, in chunks of at most `lim` elements or bytes. Hash fields whose
/// own TTL has run out at `now` are left out and counted as slack (the target may have
/// dropped them or not yet).
fn coll_chunks(
    c: &crate::rdb::Coll<'_>,
    now: i64,
    lim: Limits,
    dec: &dyn Fn(DecodeError) -> Error,
    f: &mut Emit<'_>,
) -> Result<Option<Count>> {
    let elems = c.elements();
    let exact = |n: Option<u64>| Ok(n.map(|n| Count { n, slack: 0 }));
    match c.data_type() {
        DataType::List | DataType::Set => {
            let it = elems.map(|e| {
                let b = e.map_err(dec)?.to_bytes().into_owned();
                let n = b.len();
                Ok((b, n))
            });
            exact(if c.data_type() == DataType::List {
                feed(it, |start, items| Chunk::List { start, items }, lim, f)?
            } else {
                feed(it, |_, items| Chunk::Set(items), lim, f)?
            })
        }
        DataType::ZSet => {
            let it = zset_pairs(elems).map(|p| {
                let (m, s) = p.map_err(dec)?;
                let b = m.to_bytes().into_owned();
                let n = b.len();
                Ok(((b, s), n))
            });
            exact(feed(it, |_, items| Chunk::ZSet(items), lim, f)?)
        }
        _ if c.has_field_ttls() => {
            let mut slack = 0u64;
            let it = Tuples::<'_, 3>(elems).filter_map(|t| {
                let r = t.map_err(dec).map(|[k, v, x]| {
                    let x = x.as_i64().filter(|&ms| ms > 0);
                    if x.is_some_and(|ms| ms <= now) {
                        return None;
                    }
                    let (k, v) = (k.to_bytes().into_owned(), v.to_bytes().into_owned());
                    let n = k.len() + v.len();
                    Some(((k, v, x), n))
                });
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
            exact(feed(it, |_, items| Chunk::Hash(items), lim, f)?)
        }
    }
}

/// A stream's entries, in chunks of at most `lim` entries or bytes.
fn stream_chunks(
    s: &crate::rdb::stream::StreamValue<'_>,
    lim: Limits,
    dec: &dyn Fn(DecodeError) -> Error,
    f: &mut Emit<'_>,
) -> Result<Option<Count>> {
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

pub(crate) fn push_chunk(p: &mut Pipe, key: &[u8], c: &Chunk, caps: Caps) -> usize {
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

pub(crate) fn bulk(r: &Reply) -> Option<&[u8]> {
    match r {
        Reply::Bulk(b) => Some(b),
        _ => None,
    }
}

/// Compare a chunk with its replies: `Ok(Some(detail))` for the first difference, `Err` for an
/// error reply.
pub(crate) fn eval_chunk(
    c: &Chunk,
    r: &[Reply],
    tol: i64,
) -> std::result::Result<Option<String>, String> {
    if let Some(Reply::Error(e)) = r.iter().find(|x| x.is_error()) {
        return Err(String::from_utf8_lossy(e).into_owned());
    }
    Ok(match c {
        Chunk::Str { off, bytes, .. } => eval_str(*off, bytes, r),
        Chunk::List { start, items } if !items.is_empty() => eval_list(*start, items, r)?,
        Chunk::Set(items) if !items.is_empty() => eval_set(items, r)?,
        Chunk::ZSet(items) if !items.is_empty() => eval_zset(items, r, false)?,
        Chunk::ZSetWhole(items) if !items.is_empty() => eval_zset(items, r, true)?,
        Chunk::Hash(items) if !items.is_empty() => eval_hash(items, r, tol)?,
        Chunk::Stream(items) if !items.is_empty() => eval_stream(items, r)?,
        _ => None,
    })
}

/// The `i`-th reply as an array, or why not.
fn arr(r: &[Reply], i: usize) -> std::result::Result<&[Reply], String> {
    match r.get(i) {
        Some(Reply::Array(a)) => Ok(a),
        other => Err(format!(
            "unexpected reply {}",
            other.map(reply_text).unwrap_or_default()
        )),
    }
}

/// One array reply, or one reply per item (`SMISMEMBER` vs `SISMEMBER` each).
fn per_item(r: &[Reply]) -> std::result::Result<&[Reply], String> {
    if r.len() == 1 && matches!(r[0], Reply::Array(_)) {
        arr(r, 0)
    } else {
        Ok(r)
    }
}

fn eval_str(off: u64, bytes: &[u8], r: &[Reply]) -> Option<String> {
    let found = r.first().and_then(bulk).unwrap_or_default();
    if found == bytes {
        return None;
    }
    let i = bytes
        .iter()
        .zip(found)
        .position(|(a, b)| a != b)
        .unwrap_or(bytes.len().min(found.len()));
    Some(if off == 0 && bytes.len() <= 64 && found.len() <= 64 {
        format!("expected {}, found {}", excerpt(bytes), excerpt(found))
    } else {
        format!("string differs from byte {}", off + i as u64)
    })
}

fn eval_list(
    start: u64,
    items: &[Vec<u8>],
    r: &[Reply],
) -> std::result::Result<Option<String>, String> {
    let a = arr(r, 0)?;
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
    Ok(None)
}

fn eval_set(items: &[Vec<u8>], r: &[Reply]) -> std::result::Result<Option<String>, String> {
    let flags: Vec<i64> = per_item(r)?
        .iter()
        .map(|x| if let Reply::Integer(n) = x { *n } else { 0 })
        .collect();
    Ok(items
        .iter()
        .zip(flags.iter().chain(std::iter::repeat(&0)))
        .find(|(_, f)| **f != 1)
        .map(|(m, _)| format!("member {} missing", excerpt(m))))
}

/// Scores read back per member (`ZMSCORE`, `ZSCORE` each), or the whole zset (`whole`:
/// `ZRANGE ... WITHSCORES`, matched by member).
fn eval_zset(
    items: &[(Vec<u8>, f64)],
    r: &[Reply],
    whole: bool,
) -> std::result::Result<Option<String>, String> {
    let scores: Vec<Option<&[u8]>> = if whole {
        let map: std::collections::HashMap<&[u8], &[u8]> = arr(r, 0)?
            .chunks(2)
            .filter_map(|p| Some((p.first()?.as_bytes()?, p.get(1)?.as_bytes()?)))
            .collect();
        items
            .iter()
            .map(|(m, _)| map.get(m.as_slice()).copied())
            .collect()
    } else {
        per_item(r)?.iter().map(Reply::as_bytes).collect()
    };
    for (i, (m, want)) in items.iter().enumerate() {
        let Some(got) = scores.get(i).copied().flatten() else {
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
    Ok(None)
}

/// Field values (`HMGET`), then their TTLs (`HPEXPIRETIME`) when the second reply is there.
fn eval_hash(
    items: &[(Vec<u8>, Vec<u8>, Option<i64>)],
    r: &[Reply],
    tol: i64,
) -> std::result::Result<Option<String>, String> {
    let vals = arr(r, 0)?;
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
    if r.len() < 2 {
        return Ok(None);
    }
    let ttls = arr(r, 1)?;
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
    Ok(None)
}

fn eval_stream(items: &[StreamEntry], r: &[Reply]) -> std::result::Result<Option<String>, String> {
    let a = arr(r, 0)?;
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
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::Reply;

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
}
