//! Lazy views of values: a [`Value`] is opened from a record's raw bytes, and its elements are
//! decoded only when someone iterates them.
//!
//! Design: the record exposes `raw` (the serialized value, for RESTORE) and `value()` (this
//! view). Elements borrow from the view, which borrows from the input; only LZF-compressed blobs
//! and quicklist nodes are decompressed, one at a time. Nothing here builds a whole collection.

use std::borrow::Cow;

use super::cursor::{Cursor, LzfData, RStr, StreamError};
use super::elem::Elem;
use super::error::{DecodeError, DecodeResult};
use super::intset::IntsetIter;
use super::listpack::ListpackIter;
use super::module::{ModuleId, skip_module_data};
use super::stream::StreamValue;
use super::types::{DataType, Dialect, type_id::*};
use super::ziplist::ZiplistIter;

/// A decoded value.
#[derive(Debug, Clone)]
pub enum Value<'a> {
    /// A string value.
    String(RStr<'a>),
    /// A string over 16 MiB stored LZF-compressed: decoded in chunks, never whole.
    BigString(LzfData<'a>),
    /// A list, set, sorted set or hash; see [`Coll`].
    Coll(Coll<'a>),
    /// A stream.
    Stream(Box<StreamValue<'a>>),
    /// A module value, kept raw.
    Module(ModuleValue<'a>),
}

/// A module value: its type and the raw serialized payload (for RESTORE on a target that has
/// the module).
#[derive(Debug, Clone)]
pub struct ModuleValue<'a> {
    /// Module type id.
    pub id: ModuleId,
    /// The raw value bytes (including the id).
    pub raw: &'a [u8],
}

/// A collection value, in whatever encoding the file used.
#[derive(Debug, Clone)]
pub struct Coll<'a> {
    /// Type id from the file.
    pub type_id: u8,
    body: Body<'a>,
    base: u64,
    dialect: Dialect,
}

#[derive(Debug, Clone)]
enum Body<'a> {
    /// Types parsed from the raw value bytes (plain, quicklist, hash metadata).
    Raw(&'a [u8]),
    /// A single blob (ziplist, listpack, intset, zipmap), possibly decompressed.
    Blob(Cow<'a, [u8]>),
}

impl<'a> Value<'a> {
    /// Open the value of type `t` stored in `raw` (which starts at offset `base`).
    pub fn open(t: u8, raw: &'a [u8], base: u64, dialect: Dialect) -> DecodeResult<Value<'a>> {
        let mut c = Cursor::new(raw, base);
        Ok(match t {
            STRING => match c.string_or_big()? {
                Ok(s) => Value::String(s),
                Err(big) => Value::BigString(big),
            },
            STREAM_LISTPACKS | STREAM_LISTPACKS_2 | STREAM_LISTPACKS_3 => {
                Value::Stream(Box::new(StreamValue::parse(&mut c, t)?))
            }
            MODULE_2 => Value::Module(ModuleValue {
                id: ModuleId(c.length()?),
                raw,
            }),
            HASH_ZIPMAP | LIST_ZIPLIST | SET_INTSET | ZSET_ZIPLIST | HASH_ZIPLIST
            | HASH_LISTPACK | ZSET_LISTPACK | SET_LISTPACK => Value::Coll(Coll {
                type_id: t,
                base: c.offset(),
                body: Body::Blob(c.string()?),
                dialect,
            }),
            HASH_LISTPACK_EX => {
                c.skip(8, "min expire")?;
                Value::Coll(Coll {
                    type_id: t,
                    base: c.offset(),
                    body: Body::Blob(c.string()?),
                    dialect,
                })
            }
            HASH_LISTPACK_EX_PRE_GA if dialect == Dialect::Redis => Value::Coll(Coll {
                type_id: t,
                base: c.offset(),
                body: Body::Blob(c.string()?),
                dialect,
            }),
            _ => Value::Coll(Coll {
                type_id: t,
                body: Body::Raw(raw),
                base,
                dialect,
            }),
        })
    }

    /// Decode every element, to prove the value is well-formed. Returns the element count
    /// (stream: live entries; string: 1).
    pub fn validate(&self) -> DecodeResult<u64> {
        match self {
            Value::String(_) => Ok(1),
            Value::BigString(l) => match l.for_each_chunk(&mut |_| Ok(())) {
                Ok(()) => Ok(1),
                Err(StreamError::Decode(e)) => Err(e),
                Err(StreamError::Io(e)) => Err(DecodeError::invalid(l.offset, e.to_string())),
            },
            Value::Module(_) => Ok(1),
            Value::Stream(s) => {
                let mut n = 0;
                s.for_each_entry(|_| {
                    n += 1;
                    Ok(())
                })?;
                Ok(n)
            }
            Value::Coll(c) => match c.validate_fast()? {
                Some(n) => Ok(n),
                None => self.validate_elements(),
            },
        }
    }

    /// [`Value::validate`] through the general element iterators only, without the fast
    /// walks. Both must agree; the fuzz target `rdb_reader` checks that they do.
    pub fn validate_elements(&self) -> DecodeResult<u64> {
        match self {
            Value::Coll(c) => {
                let mut n = 0u64;
                for e in c.elements() {
                    let e = e?;
                    n += 1;
                    if c.data_type() == DataType::ZSet && n % 2 == 0 && e.as_f64().is_none() {
                        return Err(DecodeError::invalid(c.base, "zset score is not a number"));
                    }
                }
                let stride = c.stride();
                if n % stride != 0 {
                    return Err(DecodeError::invalid(
                        c.base,
                        format!("{} elements do not make whole {}-tuples", n, stride),
                    ));
                }
                Ok(n / stride)
            }
            other => other.validate(),
        }
    }
}

thread_local! {
    /// Decompression buffer reused by validation on each thread.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Check a string value without keeping it (LZF data followed, not written out).
pub fn validate_string(raw: &[u8], base: u64) -> DecodeResult<()> {
    Cursor::new(raw, base).check_string_only()
}

/// Check that a listpack or ziplist blob is well-formed; returns its element count. For zsets
/// (`zset`), every second element must be a number.
fn count_blob<'x, I>(it: I, zset: bool, base: u64) -> DecodeResult<u64>
where
    I: Iterator<Item = DecodeResult<Elem<'x>>>,
{
    let mut n = 0u64;
    for e in it {
        let e = e?;
        n += 1;
        if zset && n % 2 == 0 && e.as_f64().is_none() {
            return Err(DecodeError::invalid(base, "zset score is not a number"));
        }
    }
    Ok(n)
}

impl<'a> Coll<'a> {
    /// The structural walk behind [`Value::validate`] for the common encodings, without
    /// building elements: plain strings are skipped (LZF ones decompressed into one reused
    /// buffer), compressed quicklist nodes are decompressed into a reused buffer. Returns
    /// `None` for encodings it leaves to the general path.
    fn validate_fast(&self) -> DecodeResult<Option<u64>> {
        SCRATCH.with_borrow_mut(|scratch| self.validate_fast_with(scratch))
    }

    fn validate_fast_with(&self, scratch: &mut Vec<u8>) -> DecodeResult<Option<u64>> {
        let zset = self.data_type() == DataType::ZSet;
        let stride = self.stride();
        let n = match (&self.body, self.type_id) {
            (Body::Blob(b), LIST_ZIPLIST | ZSET_ZIPLIST | HASH_ZIPLIST) => {
                count_blob(ZiplistIter::new(b, self.base)?, zset, self.base)?
            }
            (Body::Blob(b), HASH_LISTPACK | ZSET_LISTPACK | SET_LISTPACK) => {
                count_blob(ListpackIter::new(b, self.base)?, zset, self.base)?
            }
            (Body::Blob(b), SET_INTSET) => IntsetIter::new(b, self.base)?.len(),
            (Body::Raw(raw), LIST | SET | HASH) => {
                let mut c = Cursor::new(raw, self.base);
                let n = c.count("element count", 1)?;
                let strings = if self.type_id == HASH { n * 2 } else { n };
                for _ in 0..strings {
                    c.check_string(scratch)?;
                }
                strings
            }
            (Body::Raw(raw), ZSET | ZSET_2) => {
                let mut c = Cursor::new(raw, self.base);
                let n = c.count("member count", 2)?;
                for _ in 0..n {
                    c.check_string(scratch)?;
                    let d = if self.type_id == ZSET_2 {
                        c.f64_le()?
                    } else {
                        c.string_double()?
                    };
                    if d.is_nan() {
                        return Err(c.invalid("zset score is NaN"));
                    }
                }
                n * 2
            }
            (Body::Raw(raw), LIST_QUICKLIST | LIST_QUICKLIST_2) => {
                let v2 = self.type_id == LIST_QUICKLIST_2;
                let mut c = Cursor::new(raw, self.base);
                let nodes = c.count("quicklist node count", 1)?;
                let mut n = 0u64;
                for _ in 0..nodes {
                    let container = if v2 { c.length()? } else { 2 };
                    let at = c.offset();
                    let plain = c.check_string(scratch)?;
                    let data: &[u8] = match plain {
                        Some(b) => b,
                        None => scratch,
                    };
                    n += match container {
                        1 => 1,
                        2 if v2 => count_blob(ListpackIter::new(data, at)?, false, at)?,
                        2 => count_blob(ZiplistIter::new(data, at)?, false, at)?,
                        k => {
                            return Err(DecodeError::invalid(
                                at,
                                format!("bad quicklist container type {k}"),
                            ));
                        }
                    };
                }
                n
            }
            _ => return Ok(None),
        };
        if n % stride != 0 {
            return Err(DecodeError::invalid(
                self.base,
                format!("{n} elements do not make whole {stride}-tuples"),
            ));
        }
        Ok(Some(n / stride))
    }

    /// list, set, zset or hash.
    pub fn data_type(&self) -> DataType {
        DataType::of(self.type_id)
    }

    /// Elements per item: 1 for lists and sets, 2 for zsets (member, score) and hashes (field,
    /// value), 3 for hashes with field TTLs (field, value, expire-ms or 0).
    pub fn stride(&self) -> u64 {
        match self.type_id {
            22..=25 => 3,
            _ => match self.data_type() {
                DataType::ZSet | DataType::Hash => 2,
                _ => 1,
            },
        }
    }

    /// Whether this hash carries per-field TTLs (types 22–25).
    pub fn has_field_ttls(&self) -> bool {
        self.stride() == 3
    }

    /// Item count when the encoding records it cheaply (plain types and blobs with a known
    /// header count); `None` when counting needs a walk.
    pub fn len_hint(&self) -> Option<u64> {
        let stride = self.stride();
        match &self.body {
            Body::Raw(raw) => {
                let mut c = Cursor::new(raw, self.base);
                if self.type_id == HASH_METADATA {
                    c.skip(8, "min expire").ok()?;
                }
                let n = c.length().ok()?;
                match self.type_id {
                    LIST_QUICKLIST | LIST_QUICKLIST_2 => None,
                    _ => Some(n),
                }
            }
            Body::Blob(b) => match self.type_id {
                SET_INTSET => IntsetIter::new(b, self.base).ok().map(|i| i.len()),
                LIST_ZIPLIST | ZSET_ZIPLIST | HASH_ZIPLIST => ZiplistIter::new(b, self.base)
                    .ok()?
                    .declared_len()
                    .map(|n| n / stride),
                HASH_ZIPMAP => None,
                _ => ListpackIter::new(b, self.base)
                    .ok()?
                    .declared_len()
                    .map(|n| n / stride),
            },
        }
    }

    /// Iterate all elements flat (see [`Coll::stride`]).
    pub fn elements(&self) -> ElemIter<'_> {
        let inner = match self.open_inner() {
            Ok(i) => i,
            Err(e) => Inner::Failed(Some(e)),
        };
        ElemIter { inner }
    }

    fn open_inner(&self) -> DecodeResult<Inner<'_>> {
        let base = self.base;
        Ok(match &self.body {
            Body::Blob(b) => match self.type_id {
                SET_INTSET => Inner::Intset(IntsetIter::new(b, base)?),
                LIST_ZIPLIST | ZSET_ZIPLIST | HASH_ZIPLIST => {
                    Inner::Ziplist(ZiplistIter::new(b, base)?)
                }
                HASH_ZIPMAP => Inner::Zipmap(super::zipmap::ZipmapIter::new(b, base)?),
                _ => Inner::Listpack(ListpackIter::new(b, base)?),
            },
            Body::Raw(raw) => {
                let mut c = Cursor::new(raw, base);
                match self.type_id {
                    LIST | SET => {
                        let left = c.count("element count", 1)?;
                        Inner::Strings { c, left }
                    }
                    HASH => {
                        let n = c.count("field count", 2)?;
                        Inner::Strings { c, left: n * 2 }
                    }
                    ZSET | ZSET_2 => {
                        let left = c.count("member count", 2)?;
                        Inner::Zset {
                            c,
                            left,
                            binary: self.type_id == ZSET_2,
                            score_next: None,
                        }
                    }
                    LIST_QUICKLIST | LIST_QUICKLIST_2 => {
                        let nodes = c.count("quicklist node count", 1)?;
                        Inner::Quicklist {
                            c,
                            nodes,
                            v2: self.type_id == LIST_QUICKLIST_2,
                            node: Node::None,
                        }
                    }
                    HASH_METADATA | HASH_METADATA_PRE_GA => {
                        let valkey = self.dialect == Dialect::Valkey;
                        let min_expire = if self.type_id == HASH_METADATA {
                            Some(c.i64_le()?)
                        } else {
                            None
                        };
                        let left = c.count("field count", 3)?;
                        Inner::HashTtl {
                            c,
                            left,
                            min_expire,
                            valkey,
                            pending: Vec::new(),
                        }
                    }
                    t => return Err(c.invalid(format!("type {t} has no collection view"))),
                }
            }
        })
    }
}

/// Iterator over a collection's elements, flat.
pub struct ElemIter<'s> {
    inner: Inner<'s>,
}

enum Node<'s> {
    None,
    Zl(ZiplistIter<'s>),
    Lp(ListpackIter<'s>),
    Owned(std::vec::IntoIter<Elem<'static>>),
    Single(Option<Elem<'s>>),
}

enum Inner<'s> {
    Failed(Option<DecodeError>),
    Strings {
        c: Cursor<'s>,
        left: u64,
    },
    Zset {
        c: Cursor<'s>,
        left: u64,
        binary: bool,
        score_next: Option<()>,
    },
    HashTtl {
        c: Cursor<'s>,
        left: u64,
        min_expire: Option<i64>,
        valkey: bool,
        pending: Vec<Elem<'s>>,
    },
    Quicklist {
        c: Cursor<'s>,
        nodes: u64,
        v2: bool,
        node: Node<'s>,
    },
    Ziplist(ZiplistIter<'s>),
    Listpack(ListpackIter<'s>),
    Intset(IntsetIter<'s>),
    Zipmap(super::zipmap::ZipmapIter<'s>),
}

impl<'s> Iterator for ElemIter<'s> {
    type Item = DecodeResult<Elem<'s>>;

    fn next(&mut self) -> Option<Self::Item> {
        let r = self.step();
        if let Some(Err(_)) = &r {
            self.inner = Inner::Failed(None);
        }
        r
    }
}

/// 48-bit ceiling of hash-field expiry times (`EB_EXPIRE_TIME_MAX`).
const EXPIRE_MAX: i64 = 0x0000_FFFF_FFFF_FFFF;

impl<'s> ElemIter<'s> {
    fn step(&mut self) -> Option<DecodeResult<Elem<'s>>> {
        match &mut self.inner {
            Inner::Failed(e) => e.take().map(Err),
            Inner::Ziplist(i) => i.next(),
            Inner::Listpack(i) => i.next(),
            Inner::Intset(i) => i.next(),
            Inner::Zipmap(i) => i.next(),
            Inner::Strings { c, left } => {
                if *left == 0 {
                    return None;
                }
                *left -= 1;
                Some(c.string().map(Elem::Bytes))
            }
            Inner::Zset {
                c,
                left,
                binary,
                score_next,
            } => {
                if score_next.take().is_some() {
                    let s = if *binary {
                        c.f64_le()
                    } else {
                        c.string_double()
                    };
                    return Some(s.and_then(|d| {
                        if d.is_nan() {
                            Err(c.invalid("zset score is NaN"))
                        } else {
                            Ok(Elem::Double(d))
                        }
                    }));
                }
                if *left == 0 {
                    return None;
                }
                *left -= 1;
                *score_next = Some(());
                Some(c.string().map(Elem::Bytes))
            }
            Inner::HashTtl {
                c,
                left,
                min_expire,
                valkey,
                pending,
            } => {
                if let Some(e) = pending.pop() {
                    return Some(Ok(e));
                }
                if *left == 0 {
                    return None;
                }
                *left -= 1;
                Some((|| {
                    let at = c.offset();
                    let (field, value, exp);
                    if *valkey {
                        // Valkey 9 HASH_2: field, value, 8-byte LE expiry (-1 = none).
                        field = c.string()?;
                        value = c.string()?;
                        let e = c.i64_le()?;
                        exp = if e < 0 { 0 } else { e };
                    } else {
                        let ttl = c.length()?;
                        field = c.string()?;
                        value = c.string()?;
                        exp = match (ttl, *min_expire) {
                            (0, _) => 0,
                            (t, Some(min)) => (t as i64).wrapping_add(min).wrapping_sub(1),
                            (t, None) => t as i64,
                        };
                    }
                    if !(0..=EXPIRE_MAX).contains(&exp) {
                        return Err(DecodeError::invalid(
                            at,
                            format!("hash field expiry {exp} out of range"),
                        ));
                    }
                    pending.push(Elem::Int(exp));
                    pending.push(Elem::Bytes(value));
                    Ok(Elem::Bytes(field))
                })())
            }
            Inner::Quicklist { c, nodes, v2, node } => loop {
                let item = match node {
                    Node::None => None,
                    Node::Zl(i) => i.next(),
                    Node::Lp(i) => i.next(),
                    Node::Owned(i) => i.next().map(Ok),
                    Node::Single(e) => e.take().map(Ok),
                };
                if let Some(item) = item {
                    return Some(item);
                }
                if *nodes == 0 {
                    return None;
                }
                *nodes -= 1;
                match open_node(c, *v2) {
                    Ok(n) => *node = n,
                    Err(e) => return Some(Err(e)),
                }
            },
        }
    }
}

fn open_node<'s>(c: &mut Cursor<'s>, v2: bool) -> DecodeResult<Node<'s>> {
    let container = if v2 { c.length()? } else { 2 };
    let at = c.offset();
    let data = c.string()?;
    match container {
        // A plain node is one element stored raw: hand it on as it is (no copy when borrowed;
        // 7.0-7.2 only make plain nodes for elements over 1 GB).
        1 => Ok(Node::Single(Some(Elem::Bytes(data)))),
        2 => match data {
            Cow::Borrowed(b) => {
                if v2 {
                    Ok(Node::Lp(ListpackIter::new(b, at)?))
                } else {
                    Ok(Node::Zl(ZiplistIter::new(b, at)?))
                }
            }
            Cow::Owned(v) => {
                let elems: DecodeResult<Vec<Elem<'static>>> = if v2 {
                    ListpackIter::new(&v, at)?
                        .map(|e| e.map(Elem::into_owned))
                        .collect()
                } else {
                    ZiplistIter::new(&v, at)?
                        .map(|e| e.map(Elem::into_owned))
                        .collect()
                };
                Ok(Node::Owned(elems?.into_iter()))
            }
        },
        n => Err(DecodeError::invalid(
            at,
            format!("bad quicklist container type {n}"),
        )),
    }
}

/// Skip over a value of type `t`, leaving the cursor after it. Walks only lengths; blobs are
/// skipped whole. Module values are skipped through their sub-opcodes.
pub fn skip_value(c: &mut Cursor<'_>, t: u8, dialect: Dialect) -> DecodeResult<()> {
    match t {
        STRING | HASH_ZIPMAP | LIST_ZIPLIST | SET_INTSET | ZSET_ZIPLIST | HASH_ZIPLIST
        | HASH_LISTPACK | ZSET_LISTPACK | SET_LISTPACK => {
            c.skip_string()?;
        }
        LIST | SET => {
            let n = c.count("element count", 1)?;
            for _ in 0..n {
                c.skip_string()?;
            }
        }
        HASH => {
            let n = c.count("field count", 2)?;
            for _ in 0..n * 2 {
                c.skip_string()?;
            }
        }
        ZSET | ZSET_2 => {
            let n = c.count("member count", 2)?;
            for _ in 0..n {
                c.skip_string()?;
                if t == ZSET_2 {
                    c.skip(8, "score")?;
                } else {
                    let l = c.u8()?;
                    if l < 253 {
                        c.skip(l as u64, "score")?;
                    }
                }
            }
        }
        LIST_QUICKLIST | LIST_QUICKLIST_2 => {
            let n = c.count("quicklist node count", 1)?;
            for _ in 0..n {
                if t == LIST_QUICKLIST_2 {
                    let at = c.offset();
                    let container = c.length()?;
                    if container != 1 && container != 2 {
                        return Err(DecodeError::invalid(
                            at,
                            format!("bad quicklist container type {container}"),
                        ));
                    }
                }
                c.skip_string()?;
            }
        }
        STREAM_LISTPACKS | STREAM_LISTPACKS_2 | STREAM_LISTPACKS_3 => {
            StreamValue::parse(c, t)?;
        }
        MODULE_2 => {
            c.length()?;
            skip_module_data(c)?;
        }
        HASH_METADATA | HASH_METADATA_PRE_GA if dialect == Dialect::Redis => {
            if t == HASH_METADATA {
                c.skip(8, "min expire")?;
            }
            let n = c.count("field count", 3)?;
            for _ in 0..n {
                c.length()?;
                c.skip_string()?;
                c.skip_string()?;
            }
        }
        VALKEY_HASH_2 => {
            let n = c.count("field count", 10)?;
            for _ in 0..n {
                c.skip_string()?;
                c.skip_string()?;
                c.skip(8, "field expiry")?;
            }
        }
        HASH_LISTPACK_EX | HASH_LISTPACK_EX_PRE_GA => {
            if t == HASH_LISTPACK_EX {
                c.skip(8, "min expire")?;
            }
            c.skip_string()?;
        }
        _ => return Err(c.invalid(format!("cannot skip value type {t}"))),
    }
    Ok(())
}

/// A typed view of a zset's items: member and score.
pub fn zset_pairs<'s>(
    it: ElemIter<'s>,
) -> impl Iterator<Item = DecodeResult<(Elem<'s>, f64)>> + 's {
    Tuples::<'_, 2>(it).map(|r| {
        r.and_then(|[m, s]| {
            let d = s
                .as_f64()
                .ok_or_else(|| DecodeError::invalid(0, "zset score is not a number"))?;
            Ok((m, d))
        })
    })
}

/// Groups a flat element iterator into N-tuples; a short last tuple is an error.
pub struct Tuples<'s, const N: usize>(pub ElemIter<'s>);

impl<'s, const N: usize> Iterator for Tuples<'s, N> {
    type Item = DecodeResult<[Elem<'s>; N]>;
    fn next(&mut self) -> Option<Self::Item> {
        let first = match self.0.next()? {
            Ok(e) => e,
            Err(e) => return Some(Err(e)),
        };
        let mut out: [Elem<'s>; N] = std::array::from_fn(|_| Elem::Int(0));
        out[0] = first;
        for slot in out.iter_mut().skip(1) {
            match self.0.next() {
                Some(Ok(e)) => *slot = e,
                Some(Err(e)) => return Some(Err(e)),
                None => {
                    return Some(Err(DecodeError::invalid(
                        0,
                        "collection ends inside a field/value group",
                    )));
                }
            }
        }
        Some(Ok(out))
    }
}
