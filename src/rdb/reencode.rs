//! Re-encoding a value for another RDB version: what `convert --format rdb --rdb-version N`
//! does to each key.
//!
//! A value whose type id the target version's loader accepts is copied byte for byte (the
//! loader converts old encodings itself, and a same-version copy is then as fast as a file
//! copy). Any other value is decoded and written again in the most compact encoding the
//! target writes itself, with that version's default size thresholds (`hash-max-*-entries`
//! and the like, the same in 6.x and 7.x; `list-max-*-size -2`, 8 KB nodes): listpacks from
//! RDB 10 (7.0), ziplists before, intsets for integer sets, plain encodings above the
//! thresholds. Stream nodes are listpacks in every version and are copied as they are; only the
//! stream's tail (metadata, consumer groups) is rewritten.
//!
//! Speed: what a 7.0 dump holds and RDB 7-9 does not (listpack hashes and zsets, quicklists of
//! listpacks) is converted element by element into ziplists in reused buffers
//! ([`reencode_into`]): the entry layouts are close, a zset's listpack is sorted already and its
//! scores keep their text, so nothing is decoded into owned elements, sorted or formatted
//! again. Nothing is LZF-compressed: a re-encoded value is small, and compressing costs more
//! than writing it. The rest goes through decoded elements, which is fine for the rarer types.
//!
//! What the target cannot hold is reported, never dropped silently: [`Plan::Lossy`] (written
//! without a part: hash-field TTLs below 12, stream lag metadata below 10, consumers' active
//! times below 11) and [`Plan::Unloadable`] (a stream below 9, a module value below 8). The
//! caller decides whether that is an error (`--lossy` not given) or a report.
//!
//! Valkey 9 (`VALKEY080`) as a target is Redis RDB 11 plus its own type 22 (`HASH_2`, a
//! hash with field TTLs): Redis 7.4's field-TTL hashes (types 24 and 25) become that, with
//! nothing lost.
//!
//! Not done here: the file around the values (`sink::rdb::RdbCopy`), functions and module aux
//! records (the caller checks the version).

use super::elem::Elem;
use super::encoder::{self, Encoded, put_length, put_string, value};
use super::error::{DecodeError, DecodeResult};
use super::reader::KeyRecord;
use super::stream::{StreamId, StreamValue};
use super::types::{DataType, Dialect, Version, type_id::*};
use super::value::{Coll, Tuples, Value, zset_pairs};

/// What becomes of one value for the target version.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// The target loads the value as it is: copy the record's raw bytes.
    Copy,
    /// Re-encoded, nothing lost.
    Encoded(Encoded),
    /// Re-encoded without something the target cannot hold (what, in words).
    Lossy(Encoded, String),
    /// The target version cannot hold this type at all (why, in words).
    Unloadable(String),
}

/// Default thresholds of Redis 6.x and 7.x (`redis.conf`).
const HASH_ENTRIES: usize = 512;
const ZSET_ENTRIES: usize = 128;
const SET_INTSET_ENTRIES: usize = 512;
const SET_LISTPACK_ENTRIES: usize = 128;
/// `*-max-*-value`: the longest element kept in a listpack or ziplist.
const MAX_VALUE: usize = 64;
/// `list-max-*-size -2`: 8 KB per quicklist node.
const LIST_NODE_BYTES: usize = 8192;
/// Entries of a listpack-encoded list Redis 7.2+ keeps; irrelevant to the RDB.
const ZIPLIST_LIST_ENTRIES: usize = 512;

/// The oldest Redis RDB version whose loader accepts type `t` (`u32::MAX`: none we write).
pub fn min_version(t: u8) -> u32 {
    match t {
        STRING..=HASH => 1,
        // No version we write writes zipmaps, and 7.0 rejects some that older servers wrote
        // and we read (corpus: HDT3213 zipmap_big_len.rdb): always re-encoded.
        HASH_ZIPMAP => u32::MAX,
        LIST_ZIPLIST..=HASH_ZIPLIST => 2,
        ZSET_2 | MODULE_2 => 8,
        LIST_QUICKLIST => 7,
        STREAM_LISTPACKS => 9,
        HASH_LISTPACK..=STREAM_LISTPACKS_2 => 10,
        SET_LISTPACK | STREAM_LISTPACKS_3 => 11,
        22..=25 => 12,
        _ => u32::MAX,
    }
}

/// Whether `target` loads `rec`'s value as it is stored.
pub fn loads_as_is(rec: &KeyRecord<'_>, target: Version) -> bool {
    // Type ids above 21 mean different things to Redis and Valkey.
    let same_meaning = rec.type_id <= STREAM_LISTPACKS_3 || rec.version.dialect == target.dialect;
    let valkey_own = target.dialect == Dialect::Valkey && rec.type_id == VALKEY_HASH_2;
    same_meaning && (valkey_own || min_version(rec.type_id) <= target.redis_equivalent())
}

/// Plan `rec`'s value for `target` (a Redis version). Decoding errors carry the value's offset.
pub fn reencode(rec: &KeyRecord<'_>, target: Version) -> DecodeResult<Plan> {
    let mut bytes = Vec::new();
    Ok(match reencode_into(rec, target, &mut bytes)? {
        Done::Copy => Plan::Copy,
        Done::Written(type_id) => Plan::Encoded(Encoded { type_id, bytes }),
        Done::Lossy(type_id, why) => Plan::Lossy(Encoded { type_id, bytes }, why),
        Done::Unloadable(why) => Plan::Unloadable(why),
    })
}

/// What [`reencode_into`] did with a value.
#[derive(Debug, Clone, PartialEq)]
pub enum Done {
    /// Nothing written: the target loads the record's raw bytes.
    Copy,
    /// The value, of this type id, was appended.
    Written(u8),
    /// The value, of this type id, was appended without something (what, in words).
    Lossy(u8, String),
    /// Nothing written: the target cannot hold the value (why, in words).
    Unloadable(String),
}

/// [`reencode`] appending to `out` (left as it was on an error or when nothing is written).
/// The encodings a 7.0 dump holds and RDB 7-9 does not (listpack hashes and zsets,
/// quicklists of listpacks) go element by element into ziplists through reused buffers:
/// the conversion `import`'s full sync into a 6.x target does per key, and
/// `convert --rdb-version 9` of a 7.0 dump.
pub fn reencode_into(
    rec: &KeyRecord<'_>,
    target: Version,
    out: &mut Vec<u8>,
) -> DecodeResult<Done> {
    if loads_as_is(rec, target) {
        return Ok(Done::Copy);
    }
    let n = target.redis_equivalent();
    let mark = out.len();
    let fast = match rec.type_id {
        HASH_LISTPACK if n < 10 => packed_to_ziplist(rec, HASH_ZIPLIST, HASH_ENTRIES * 2, out),
        ZSET_LISTPACK if n < 10 => packed_to_ziplist(rec, ZSET_ZIPLIST, ZSET_ENTRIES * 2, out),
        LIST_QUICKLIST_2 if (7..10).contains(&n) => quicklist_to_ziplists(rec, out),
        _ => Ok(None),
    };
    match fast {
        Ok(Some(t)) => return Ok(Done::Written(t)),
        Ok(None) => out.truncate(mark),
        Err(e) => {
            out.truncate(mark);
            return Err(e);
        }
    }
    Ok(match plan(rec, n, target.dialect)? {
        Plan::Copy => Done::Copy,
        Plan::Encoded(e) => {
            out.extend_from_slice(&e.bytes);
            Done::Written(e.type_id)
        }
        Plan::Lossy(e, why) => {
            out.extend_from_slice(&e.bytes);
            Done::Lossy(e.type_id, why)
        }
        Plan::Unloadable(why) => Done::Unloadable(why),
    })
}

/// Buffers reused by the element-by-element conversions, one set per thread.
#[derive(Default)]
struct Scratch {
    /// The ziplist being written.
    zl: Vec<u8>,
    /// Finished quicklist nodes, each as an RDB string.
    nodes: Vec<u8>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Run `f` with this thread's [`Scratch`], emptied; buffers grown for a huge value are not
/// kept for the next one.
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with_borrow_mut(|s| {
        s.zl.clear();
        s.nodes.clear();
        let r = f(s);
        for b in [&mut s.zl, &mut s.nodes] {
            if b.capacity() > 8 << 20 {
                *b = Vec::new();
            }
        }
        r
    })
}

/// A listpack hash or zset (`type_id` LP) as the ziplist of the same elements, in the same
/// order (a zset's listpack is sorted already; scores keep their text or integer form), when
/// it is small enough for a ziplist (at most `max_elements`, none over 64 bytes).
/// `Ok(None)`: too big, nothing written (the caller writes a plain encoding).
fn packed_to_ziplist(
    rec: &KeyRecord<'_>,
    zl_type: u8,
    max_elements: usize,
    out: &mut Vec<u8>,
) -> DecodeResult<Option<u8>> {
    let mut cur = super::cursor::Cursor::new(rec.raw, rec.value_offset);
    let base = cur.offset();
    let blob = cur.string()?;
    let items = super::listpack::ListpackIter::new(&blob, base)?;
    with_scratch(|s| {
        let mut zl = encoder::ZiplistBuilder::begin(&mut s.zl);
        for e in items {
            let e = e?;
            if zl.count() == max_elements || e.text_len() > MAX_VALUE {
                return Ok(None);
            }
            zl.push(&mut s.zl, &e);
        }
        zl.finish(&mut s.zl);
        put_length(out, s.zl.len() as u64);
        out.extend_from_slice(&s.zl);
        Ok(Some(zl_type))
    })
}

/// A quicklist of listpacks (RDB 10+) as a quicklist of ziplists (RDB 7-9): the elements in
/// order, in nodes of up to 8 KB as Redis 6 cuts them (a bigger element alone in its node).
fn quicklist_to_ziplists(rec: &KeyRecord<'_>, out: &mut Vec<u8>) -> DecodeResult<Option<u8>> {
    let mut cur = super::cursor::Cursor::new(rec.raw, rec.value_offset);
    let nodes = cur.count("quicklist node count", 1)?;
    with_scratch(|s| {
        let mut w = NodeWriter::default();
        for _ in 0..nodes {
            let container = cur.length()?;
            let at = cur.offset();
            let data = cur.string()?;
            match container {
                1 => w.push(s, &Elem::Bytes(data)),
                2 => {
                    for e in super::listpack::ListpackIter::new(&data, at)? {
                        w.push(s, &e?);
                    }
                }
                k => {
                    return Err(DecodeError::invalid(
                        at,
                        format!("bad quicklist container type {k}"),
                    ));
                }
            }
        }
        let written = w.finish(s);
        put_length(out, written);
        out.extend_from_slice(&s.nodes);
        Ok(Some(LIST_QUICKLIST))
    })
}

/// Cuts a list into ziplist nodes in [`Scratch`]: the open one in `zl`, finished ones in
/// `nodes`.
#[derive(Default)]
struct NodeWriter {
    open: Option<encoder::ZiplistBuilder>,
    written: u64,
}

impl NodeWriter {
    fn push(&mut self, s: &mut Scratch, e: &Elem<'_>) {
        // Entry header and end byte: at most 11 bytes over the element.
        let add = e.text_len() + 11;
        if let Some(zl) = self
            .open
            .take_if(|zl| zl.count() > 0 && zl.bytes(&s.zl) + add > LIST_NODE_BYTES)
        {
            self.close(s, zl);
        }
        self.open
            .get_or_insert_with(|| encoder::ZiplistBuilder::begin(&mut s.zl))
            .push(&mut s.zl, e);
    }

    /// Append the ziplist to `s.nodes` as an RDB string.
    fn close(&mut self, s: &mut Scratch, zl: encoder::ZiplistBuilder) {
        zl.finish(&mut s.zl);
        put_length(&mut s.nodes, s.zl.len() as u64);
        s.nodes.extend_from_slice(&s.zl);
        s.zl.clear();
        self.written += 1;
    }

    /// Close the last node; returns the node count.
    fn finish(mut self, s: &mut Scratch) -> u64 {
        if let Some(zl) = self.open.take() {
            self.close(s, zl);
        }
        self.written
    }
}

/// [`reencode`] through decoded, owned elements: every type and version.
fn plan(rec: &KeyRecord<'_>, n: u32, dialect: Dialect) -> DecodeResult<Plan> {
    match rec.value()? {
        Value::String(_) | Value::BigString(_) => Ok(Plan::Copy),
        Value::Module(_) => Ok(Plan::Unloadable(format!(
            "a module value (type {}) cannot be loaded by RDB {n}",
            rec.type_id
        ))),
        Value::Stream(_) if n < 9 => Ok(Plan::Unloadable(format!(
            "a stream cannot be loaded by RDB {n} (streams came in RDB 9, Redis 5.0)"
        ))),
        Value::Stream(s) => stream(&s, n),
        Value::Coll(c) => match c.data_type() {
            DataType::List => list(&c, n).map(Plan::Encoded),
            DataType::Set => set(&c, n).map(Plan::Encoded),
            DataType::ZSet => zset(&c, n).map(Plan::Encoded),
            DataType::Hash => hash(&c, n, dialect),
            other => Err(DecodeError::invalid(
                rec.value_offset,
                format!("no re-encoding for {}", other.name()),
            )),
        },
    }
}

fn owned(c: &Coll<'_>) -> DecodeResult<Vec<Vec<u8>>> {
    c.elements()
        .map(|e| e.map(|e| e.to_bytes().into_owned()))
        .collect()
}

fn refs(v: &[Vec<u8>]) -> Vec<&[u8]> {
    v.iter().map(|e| e.as_slice()).collect()
}

fn small(items: &[&[u8]], entries: usize) -> bool {
    items.len() <= entries && items.iter().all(|e| e.len() <= MAX_VALUE)
}

/// Lists: quicklist nodes of up to 8 KB (listpacks from RDB 10, ziplists from 7); before
/// quicklists (RDB 6), a ziplist when small, else a plain list.
fn list(c: &Coll<'_>, n: u32) -> DecodeResult<Encoded> {
    let items = owned(c)?;
    let items = refs(&items);
    if n < 7 {
        return Ok(if small(&items, ZIPLIST_LIST_ENTRIES) {
            value::list_ziplist(&items)
        } else {
            value::plain_list(LIST, &items)
        });
    }
    let mut nodes: Vec<Vec<&[u8]>> = Vec::new();
    let mut size = 0usize;
    for it in items {
        // Header, element header and backlen: at most 11 bytes over the element.
        let add = it.len() + 11;
        match nodes.last_mut() {
            Some(node) if size + add <= LIST_NODE_BYTES => node.push(it),
            _ => {
                nodes.push(vec![it]);
                size = 0;
            }
        }
        size += add;
    }
    Ok(if n >= 10 {
        let nodes: Vec<value::Node<'_>> = nodes.into_iter().map(value::Node::Packed).collect();
        value::list_quicklist2(&nodes, false)
    } else {
        value::list_quicklist(&nodes, false)
    })
}

/// Sets: an intset when every member is an integer and there are few; a listpack (RDB 11+)
/// when small; a plain set otherwise.
fn set(c: &Coll<'_>, n: u32) -> DecodeResult<Encoded> {
    let items = owned(c)?;
    let items = refs(&items);
    let ints: Option<Vec<i64>> = items.iter().map(|e| encoder::canonical_int(e)).collect();
    if let Some(ints) = ints
        && ints.len() <= SET_INTSET_ENTRIES
    {
        return Ok(value::set_intset(&ints));
    }
    Ok(if n >= 11 && small(&items, SET_LISTPACK_ENTRIES) {
        value::set_listpack(&items)
    } else {
        value::plain_list(SET, &items)
    })
}

/// Sorted sets: a listpack (RDB 10+) or ziplist when small; binary scores (RDB 8+) or text
/// scores otherwise.
fn zset(c: &Coll<'_>, n: u32) -> DecodeResult<Encoded> {
    let pairs: Vec<(Vec<u8>, f64)> = zset_pairs(c.elements())
        .map(|p| p.map(|(m, s)| (m.to_bytes().into_owned(), s)))
        .collect::<DecodeResult<_>>()?;
    let items: Vec<(&[u8], f64)> = pairs.iter().map(|(m, s)| (m.as_slice(), *s)).collect();
    let members: Vec<&[u8]> = items.iter().map(|i| i.0).collect();
    Ok(match (small(&members, ZSET_ENTRIES), n) {
        (true, 10..) => value::zset_listpack(&items),
        (true, _) => value::zset_ziplist(&items),
        (false, 8..) => value::zset(true, &items),
        (false, _) => value::zset(false, &items),
    })
}

/// Hashes: a listpack (RDB 10+) or ziplist when small, a plain hash otherwise; field TTLs
/// only from RDB 12 (Valkey 9: its own type 22, `HASH_2`), dropped (and said so) below.
fn hash(c: &Coll<'_>, n: u32, dialect: Dialect) -> DecodeResult<Plan> {
    let mut fields: Vec<(Vec<u8>, Vec<u8>, u64)> = Vec::new();
    if c.has_field_ttls() {
        for t in Tuples::<'_, 3>(c.elements()) {
            let [f, v, e] = t?;
            let exp = e.as_i64().and_then(|i| u64::try_from(i).ok()).unwrap_or(0);
            fields.push((f.to_bytes().into_owned(), v.to_bytes().into_owned(), exp));
        }
    } else {
        for t in Tuples::<'_, 2>(c.elements()) {
            let [f, v] = t?;
            fields.push((f.to_bytes().into_owned(), v.to_bytes().into_owned(), 0));
        }
    }
    let ttls = fields.iter().filter(|f| f.2 > 0).count();
    if ttls > 0 && (n >= 12 || dialect == Dialect::Valkey) {
        let items: Vec<(&[u8], &[u8], u64)> = fields
            .iter()
            .map(|(f, v, t)| (f.as_slice(), v.as_slice(), *t))
            .collect();
        return Ok(Plan::Encoded(match dialect {
            Dialect::Valkey => value::valkey_hash_2(&items),
            Dialect::Redis => value::hash_metadata(true, &items),
        }));
    }
    let pairs: Vec<(&[u8], &[u8])> = fields
        .iter()
        .map(|(f, v, _)| (f.as_slice(), v.as_slice()))
        .collect();
    let flat: Vec<&[u8]> = pairs.iter().flat_map(|(f, v)| [*f, *v]).collect();
    let enc = match (small(&flat, HASH_ENTRIES * 2), n) {
        (true, 10..) => value::hash_listpack(&pairs),
        (true, _) => value::hash_ziplist(&pairs),
        (false, _) => value::hash(&pairs),
    };
    Ok(if ttls > 0 {
        Plan::Lossy(
            enc,
            format!("{ttls} hash field TTL(s) dropped (field TTLs came in RDB 12, Redis 7.4)"),
        )
    } else {
        Plan::Encoded(enc)
    })
}

/// Streams for RDB 9 (type 15) or 10 (type 19): the nodes copied, the tail rewritten without
/// what the older type has no place for.
fn stream(s: &StreamValue<'_>, n: u32) -> DecodeResult<Plan> {
    let t = if n >= 10 {
        STREAM_LISTPACKS_2
    } else {
        STREAM_LISTPACKS
    };
    let mut lost = Vec::new();
    if t == STREAM_LISTPACKS {
        let deleted = s.max_deleted_id.is_some_and(|d| d != StreamId::default());
        let added = s.entries_added.is_some_and(|a| a != s.length);
        let read = s
            .groups
            .iter()
            .any(|g| g.entries_read.is_some_and(|r| r != u64::MAX));
        if deleted || added || read {
            lost.push("entries-added, max-deleted-id and consumer groups' entries-read (RDB 10)");
        }
    }
    let active = s.groups.iter().any(|g| {
        g.consumers
            .iter()
            .any(|c| c.active_time.is_some_and(|a| a != c.seen_time))
    });
    if active {
        lost.push("consumers' active-time (RDB 11)");
    }
    let mut bytes = Vec::with_capacity(s.nodes_raw().len() + 64);
    bytes.extend_from_slice(s.nodes_raw());
    put_length(&mut bytes, s.length);
    put_length(&mut bytes, s.last_id.ms);
    put_length(&mut bytes, s.last_id.seq);
    if t == STREAM_LISTPACKS_2 {
        let first = s.first_id.unwrap_or_default();
        let deleted = s.max_deleted_id.unwrap_or_default();
        for v in [first.ms, first.seq, deleted.ms, deleted.seq] {
            put_length(&mut bytes, v);
        }
        put_length(&mut bytes, s.entries_added.unwrap_or(s.length));
    }
    stream_groups(&mut bytes, s, t);
    let enc = Encoded { type_id: t, bytes };
    Ok(if lost.is_empty() {
        Plan::Encoded(enc)
    } else {
        Plan::Lossy(enc, format!("stream {} dropped", lost.join(" and ")))
    })
}

fn stream_groups(bytes: &mut Vec<u8>, s: &StreamValue<'_>, t: u8) {
    let raw_id = |out: &mut Vec<u8>, id: &StreamId| {
        out.extend_from_slice(&id.ms.to_be_bytes());
        out.extend_from_slice(&id.seq.to_be_bytes());
    };
    put_length(bytes, s.groups.len() as u64);
    for g in &s.groups {
        put_string(bytes, &g.name, false);
        put_length(bytes, g.last_id.ms);
        put_length(bytes, g.last_id.seq);
        if t == STREAM_LISTPACKS_2 {
            // u64::MAX is how Redis stores "unknown" (-1).
            put_length(bytes, g.entries_read.unwrap_or(u64::MAX));
        }
        put_length(bytes, g.pending.len() as u64);
        for p in &g.pending {
            raw_id(bytes, &p.id);
            bytes.extend_from_slice(&p.delivery_time.to_le_bytes());
            put_length(bytes, p.delivery_count);
        }
        put_length(bytes, g.consumers.len() as u64);
        for c in &g.consumers {
            put_string(bytes, &c.name, false);
            bytes.extend_from_slice(&c.seen_time.to_le_bytes());
            put_length(bytes, c.pending.len() as u64);
            for id in &c.pending {
                raw_id(bytes, id);
            }
        }
    }
}

/// Why a function library cannot go into a file of RDB `n`, if it cannot.
pub fn function_unloadable(code: &[u8], n: u32) -> Option<&'static str> {
    if n < 10 {
        Some("functions came in RDB 10 (Redis 7.0)")
    } else if !code.starts_with(b"#!") {
        // 7.0 release candidates stored engine and name apart from the code; 7.0 GA
        // loads only code that names them in its `#!` line.
        Some("a 7.0 release-candidate library without a #! line, which 7.0 GA cannot load")
    } else {
        None
    }
}

/// The Redis version of RDB `n` (header of the output: `redis-ver`).
pub fn redis_ver(n: u32) -> &'static str {
    match n {
        ..=6 => "3.0.0",
        7 => "3.2.0",
        8 => "4.0.0",
        9 => "6.2.0",
        10 => "7.0.0",
        11 => "7.2.0",
        _ => "7.4.0",
    }
}

/// A Redis RDB version number as a [`Version`].
pub fn redis(n: u32) -> Version {
    Version {
        dialect: Dialect::Redis,
        number: n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rdb::encoder::RdbWriter;
    use crate::rdb::{RdbReader, Record};

    fn keys(data: &[u8]) -> Vec<KeyRecord<'_>> {
        RdbReader::new(data, "t")
            .unwrap()
            .filter_map(|r| match r.unwrap() {
                Record::Key(k) => Some(k),
                _ => None,
            })
            .collect()
    }

    fn text(rec: &KeyRecord<'_>) -> Vec<Vec<u8>> {
        match rec.value().unwrap() {
            Value::Coll(c) => owned(&c).unwrap(),
            _ => panic!("not a collection"),
        }
    }

    /// Re-encode `data`'s keys for `n` and read them back: same elements, loadable types.
    fn round(data: &[u8], n: u32) -> Vec<(u8, Vec<Vec<u8>>)> {
        let mut w = RdbWriter::new(n);
        w.select_db(0);
        for k in keys(data) {
            let enc = match reencode(&k, redis(n)).unwrap() {
                Plan::Copy => Encoded {
                    type_id: k.type_id,
                    bytes: k.raw.to_vec(),
                },
                Plan::Encoded(e) | Plan::Lossy(e, _) => e,
                Plan::Unloadable(why) => panic!("{why}"),
            };
            assert!(min_version(enc.type_id) <= n, "type {}", enc.type_id);
            w.key(&k.key, None, &enc);
        }
        let out = w.finish();
        keys(&out)
            .iter()
            .map(|k| {
                k.validate().unwrap();
                (k.type_id, text(k))
            })
            .collect()
    }

    #[test]
    fn newer_encodings_go_down_to_6() {
        let mut w = RdbWriter::new(11);
        w.select_db(0)
            .key(
                b"h",
                None,
                &value::hash_listpack(&[(b"f", b"1"), (b"g", b"x")]),
            )
            .key(
                b"z",
                None,
                &value::zset_listpack(&[(b"m", 1.5), (b"n", -2.0)]),
            )
            .key(b"s", None, &value::set_listpack(&[b"a", b"b"]))
            .key(b"i", None, &value::set_listpack(&[b"1", b"2"]))
            .key(
                b"l",
                None,
                &value::list_quicklist2(&[value::Node::Packed(vec![b"a", b"7"])], false),
            );
        let data = w.finish();
        let got = round(&data, 9);
        let types: Vec<u8> = got.iter().map(|g| g.0).collect();
        assert_eq!(
            types,
            [HASH_ZIPLIST, ZSET_ZIPLIST, SET, SET_INTSET, LIST_QUICKLIST]
        );
        assert_eq!(
            got[0].1,
            [b"f".to_vec(), b"1".into(), b"g".into(), b"x".into()]
        );
        assert_eq!(
            got[1].1,
            [b"n".to_vec(), b"-2".into(), b"m".into(), b"1.5".into()]
        );
        let got = round(&data, 6);
        assert_eq!(got[4].0, LIST_ZIPLIST);
        let got = round(&data, 10);
        assert_eq!(got[2].0, SET);
        assert_eq!(got[3].0, SET_INTSET);
    }

    #[test]
    fn big_values_use_plain_encodings_and_nodes() {
        let many: Vec<Vec<u8>> = (0..3000)
            .map(|i| format!("member-{i}").into_bytes())
            .collect();
        let items = refs(&many);
        let mut w = RdbWriter::new(11);
        w.select_db(0)
            .key(
                b"l",
                None,
                &value::list_quicklist2(&[value::Node::Packed(items.clone())], false),
            )
            .key(b"s", None, &value::set_listpack(&items));
        let data = w.finish();
        let got = round(&data, 10);
        assert_eq!(got[0].0, LIST_QUICKLIST_2);
        assert_eq!(got[0].1, many);
        assert_eq!(got[1].0, SET);
        let k = keys(&data);
        let Plan::Encoded(e) = reencode(&k[0], redis(9)).unwrap() else {
            panic!()
        };
        // 3000 short elements: several 8 KB nodes.
        assert!(e.bytes[0] > 1);
    }

    #[test]
    fn hash_ttls_and_streams_report_what_they_lose() {
        let mut w = RdbWriter::new(12);
        w.select_db(0)
            .key(
                b"t",
                None,
                &value::hash_metadata(true, &[(b"f", b"v", 4_102_444_800_000)]),
            )
            .key(b"u", None, &value::hash_metadata(true, &[(b"f", b"v", 0)]));
        let data = w.finish();
        let k = keys(&data);
        assert!(matches!(
            reencode(&k[0], redis(11)).unwrap(),
            Plan::Lossy(..)
        ));
        assert!(matches!(
            reencode(&k[1], redis(11)).unwrap(),
            Plan::Encoded(_)
        ));
        assert_eq!(reencode(&k[0], redis(12)).unwrap(), Plan::Copy);
    }

    #[test]
    fn field_ttls_go_to_valkey_9_as_its_hash_2() {
        let valkey = Version {
            dialect: Dialect::Valkey,
            number: 80,
        };
        let items: [(&[u8], &[u8], u64); 2] = [(b"f", b"v", 4_102_444_800_000), (b"g", b"w", 0)];
        let mut w = RdbWriter::new(12);
        w.select_db(0)
            .key(b"t", None, &value::hash_metadata(true, &items))
            .key(b"h", None, &value::hash_listpack(&[(b"f", b"v")]));
        let data = w.finish();
        let k = keys(&data);
        let Plan::Encoded(e) = reencode(&k[0], valkey).unwrap() else {
            panic!("not re-encoded")
        };
        assert_eq!(e, value::valkey_hash_2(&items));
        assert_eq!(reencode(&k[1], valkey).unwrap(), Plan::Copy);
        // Valkey's own type 22 goes to Valkey as it is, and to Redis 12 as Redis's type 24.
        let mut w = RdbWriter::valkey(80);
        w.select_db(0).key(b"t", None, &e);
        let data = w.finish();
        let k = keys(&data);
        let want: Vec<Vec<u8>> = ["f", "v", "4102444800000", "g", "w", "0"]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        assert_eq!(text(&k[0]), want);
        assert_eq!(reencode(&k[0], valkey).unwrap(), Plan::Copy);
        let Plan::Encoded(r) = reencode(&k[0], redis(12)).unwrap() else {
            panic!("not re-encoded")
        };
        assert_eq!(r, value::hash_metadata(true, &items));
    }
}
