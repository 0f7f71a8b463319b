//! An RDB encoder, for tests and tools: writes files in encodings no installed server writes
//! any more (zipmap, ziplist, intset-era files, RDB v1–v6, set listpacks, hash field TTLs).
//!
//! It writes the canonical forms Redis writes (smallest length prefix, integer entries for
//! canonical decimal integers), so a real server can load what it produces. It is not on the
//! hot path of any command.

use super::crc::crc64;
use super::types::{opcode, type_id};

/// An encoded value: a type id and its serialized bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    /// Type id.
    pub type_id: u8,
    /// Serialized value.
    pub bytes: Vec<u8>,
}

/// Append an RDB length in its smallest form.
pub fn put_length(out: &mut Vec<u8>, n: u64) {
    if n < 64 {
        out.push(n as u8);
    } else if n < 16384 {
        out.push(0x40 | (n >> 8) as u8);
        out.push(n as u8);
    } else if n <= u32::MAX as u64 {
        out.push(0x80);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(0x81);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

/// Parse `s` as Redis does for integer encoding (`string2ll`): canonical decimal (no sign
/// but `-`, no leading zero, not `-0`), fits in i64. Digit by digit: this runs per element
/// when re-encoding, and most elements fail at their first byte.
pub fn canonical_int(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, s),
    };
    match digits {
        [b'0'] if !neg => return Some(0),
        [b'1'..=b'9', ..] if digits.len() <= 19 => {}
        _ => return None,
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        // 19 digits fit in a u64: no overflow before the range check below.
        v = v * 10 + u64::from(d - b'0');
    }
    if neg {
        (v <= 1 << 63).then(|| (v as i64).wrapping_neg())
    } else {
        i64::try_from(v).ok()
    }
}

/// Append an RDB string: integer-encoded when Redis would, LZF when `compress` and it pays.
pub fn put_string(out: &mut Vec<u8>, s: &[u8], compress: bool) {
    if let Some(v) = canonical_int(s) {
        if let Ok(v) = i8::try_from(v) {
            out.push(0xc0);
            out.push(v as u8);
            return;
        }
        if let Ok(v) = i16::try_from(v) {
            out.push(0xc1);
            out.extend_from_slice(&v.to_le_bytes());
            return;
        }
        if let Ok(v) = i32::try_from(v) {
            out.push(0xc2);
            out.extend_from_slice(&v.to_le_bytes());
            return;
        }
    }
    if compress
        && s.len() > 20
        && let Ok(c) = lzf::compress(s)
        && c.len() + 4 < s.len()
    {
        out.push(0xc3);
        put_length(out, c.len() as u64);
        put_length(out, s.len() as u64);
        out.extend_from_slice(&c);
        return;
    }
    put_length(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// Append a raw (never integer-encoded) RDB string, for blobs.
pub fn put_blob(out: &mut Vec<u8>, s: &[u8], compress: bool) {
    if compress
        && s.len() > 20
        && let Ok(c) = lzf::compress(s)
        && c.len() + 4 < s.len()
    {
        out.push(0xc3);
        put_length(out, c.len() as u64);
        put_length(out, s.len() as u64);
        out.extend_from_slice(&c);
        return;
    }
    put_length(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// Append a type-3 "string double".
pub fn put_string_double(out: &mut Vec<u8>, d: f64) {
    if d.is_nan() {
        out.push(253);
    } else if d == f64::INFINITY {
        out.push(254);
    } else if d == f64::NEG_INFINITY {
        out.push(255);
    } else {
        let s = super::elem::format_double(d);
        out.push(s.len() as u8);
        out.extend_from_slice(s.as_bytes());
    }
}

/// A ziplist of `items` (integers encoded as integers, as Redis does).
pub fn ziplist(items: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut zl = ZiplistBuilder::begin(&mut out);
    for it in items {
        zl.push_bytes(&mut out, it);
    }
    zl.finish(&mut out);
    out
}

/// A ziplist written entry by entry at the end of a caller's buffer (Redis 6.2's layout:
/// header, entries with their previous entry's length, 0xFF), so that a re-encoding writes
/// no element twice and allocates nothing: [`ZiplistBuilder::begin`], `push_*`,
/// [`ZiplistBuilder::finish`].
#[derive(Debug)]
pub struct ZiplistBuilder {
    /// Where the ziplist starts in the buffer.
    start: usize,
    /// Bytes of the last entry written.
    prev_len: usize,
    /// Offset of the last entry from `start`.
    tail: usize,
    count: usize,
}

impl ZiplistBuilder {
    const HEADER: usize = 10;

    /// Start a ziplist at the end of `out` (its header is written by `finish`).
    pub fn begin(out: &mut Vec<u8>) -> Self {
        let start = out.len();
        out.extend_from_slice(&[0; Self::HEADER]);
        ZiplistBuilder {
            start,
            prev_len: 0,
            tail: Self::HEADER,
            count: 0,
        }
    }

    /// Entries so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Bytes of the ziplist so far, its end byte included.
    pub fn bytes(&self, out: &[u8]) -> usize {
        out.len() - self.start + 1
    }

    fn entry_head(&mut self, out: &mut Vec<u8>) -> usize {
        let at = out.len();
        self.tail = at - self.start;
        if self.prev_len < 254 {
            out.push(self.prev_len as u8);
        } else {
            out.push(0xfe);
            out.extend_from_slice(&(self.prev_len as u32).to_le_bytes());
        }
        at
    }

    fn entry_end(&mut self, out: &[u8], at: usize) {
        self.prev_len = out.len() - at;
        self.count += 1;
    }

    /// An integer entry, in the smallest encoding.
    pub fn push_int(&mut self, out: &mut Vec<u8>, v: i64) {
        let at = self.entry_head(out);
        match v {
            0..=12 => out.push(0xf1 + v as u8),
            _ if i8::try_from(v).is_ok() => out.extend_from_slice(&[0xfe, v as i8 as u8]),
            _ if i16::try_from(v).is_ok() => {
                out.push(0xc0);
                out.extend_from_slice(&(v as i16).to_le_bytes());
            }
            _ if (-(1 << 23)..(1 << 23)).contains(&v) => {
                out.push(0xf0);
                out.extend_from_slice(&(v as i32).to_le_bytes()[..3]);
            }
            _ if i32::try_from(v).is_ok() => {
                out.push(0xd0);
                out.extend_from_slice(&(v as i32).to_le_bytes());
            }
            _ => {
                out.push(0xe0);
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        self.entry_end(out, at);
    }

    /// A string entry; a canonical decimal integer goes as an integer, as Redis stores it.
    pub fn push_bytes(&mut self, out: &mut Vec<u8>, b: &[u8]) {
        if let Some(v) = canonical_int(b) {
            return self.push_int(out, v);
        }
        let at = self.entry_head(out);
        let n = b.len();
        if n < 64 {
            out.push(n as u8);
        } else if n < 16384 {
            out.extend_from_slice(&[0x40 | (n >> 8) as u8, n as u8]);
        } else {
            out.push(0x80);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        out.extend_from_slice(b);
        self.entry_end(out, at);
    }

    /// An element as decoded from another encoding (a binary double as its text).
    pub fn push(&mut self, out: &mut Vec<u8>, e: &super::elem::Elem<'_>) {
        match e {
            super::elem::Elem::Int(v) => self.push_int(out, *v),
            other => other.with_text(|t| self.push_bytes(out, t)),
        }
    }

    /// End the ziplist: the end byte, and the header (total bytes, offset of the last entry,
    /// entry count or 65535 for "count them").
    pub fn finish(self, out: &mut Vec<u8>) {
        out.push(0xff);
        let total = (out.len() - self.start) as u32;
        let count = self.count.min(u16::MAX as usize) as u16;
        let h = &mut out[self.start..self.start + Self::HEADER];
        h[..4].copy_from_slice(&total.to_le_bytes());
        h[4..8].copy_from_slice(&(self.tail as u32).to_le_bytes());
        h[8..].copy_from_slice(&count.to_le_bytes());
    }
}

fn backlen(out: &mut Vec<u8>, l: usize) {
    let l = l as u64;
    if l <= 127 {
        out.push(l as u8);
    } else if l < 16383 {
        out.push((l >> 7) as u8);
        out.push(((l & 127) as u8) | 128);
    } else if l < 2097151 {
        out.push((l >> 14) as u8);
        out.push((((l >> 7) & 127) as u8) | 128);
        out.push(((l & 127) as u8) | 128);
    } else if l < 268435455 {
        out.push((l >> 21) as u8);
        out.push((((l >> 14) & 127) as u8) | 128);
        out.push((((l >> 7) & 127) as u8) | 128);
        out.push(((l & 127) as u8) | 128);
    } else {
        out.push((l >> 28) as u8);
        out.push((((l >> 21) & 127) as u8) | 128);
        out.push((((l >> 14) & 127) as u8) | 128);
        out.push((((l >> 7) & 127) as u8) | 128);
        out.push(((l & 127) as u8) | 128);
    }
}

/// A listpack of `items` (integers encoded as integers, as Redis does).
pub fn listpack(items: &[&[u8]]) -> Vec<u8> {
    let mut body = Vec::new();
    for it in items {
        let start = body.len();
        match canonical_int(it) {
            Some(v) if (0..=127).contains(&v) => body.push(v as u8),
            Some(v) if (-4096..4096).contains(&v) => {
                let u = (v as u16) & 0x1fff;
                body.push(0xc0 | (u >> 8) as u8);
                body.push(u as u8);
            }
            Some(v) if i16::try_from(v).is_ok() => {
                body.push(0xf1);
                body.extend_from_slice(&(v as i16).to_le_bytes());
            }
            Some(v) if (-(1 << 23)..(1 << 23)).contains(&v) => {
                body.push(0xf2);
                body.extend_from_slice(&(v as i32).to_le_bytes()[..3]);
            }
            Some(v) if i32::try_from(v).is_ok() => {
                body.push(0xf3);
                body.extend_from_slice(&(v as i32).to_le_bytes());
            }
            Some(v) => {
                body.push(0xf4);
                body.extend_from_slice(&v.to_le_bytes());
            }
            None => {
                let n = it.len();
                if n < 64 {
                    body.push(0x80 | n as u8);
                } else if n < 4096 {
                    body.push(0xe0 | (n >> 8) as u8);
                    body.push(n as u8);
                } else {
                    body.push(0xf0);
                    body.extend_from_slice(&(n as u32).to_le_bytes());
                }
                body.extend_from_slice(it);
            }
        }
        let l = body.len() - start;
        backlen(&mut body, l);
    }
    let total = 6 + body.len() + 1;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_le_bytes());
    let n = if items.len() < u16::MAX as usize {
        items.len() as u16
    } else {
        u16::MAX
    };
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&body);
    out.push(0xff);
    out
}

/// An intset of `ints` (sorted and de-duplicated here, width chosen as Redis would).
pub fn intset(ints: &[i64]) -> Vec<u8> {
    let mut v = ints.to_vec();
    v.sort_unstable();
    v.dedup();
    let width: u32 = if v.iter().all(|&x| i16::try_from(x).is_ok()) {
        2
    } else if v.iter().all(|&x| i32::try_from(x).is_ok()) {
        4
    } else {
        8
    };
    let mut out = Vec::new();
    out.extend_from_slice(&width.to_le_bytes());
    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    for x in v {
        match width {
            2 => out.extend_from_slice(&(x as i16).to_le_bytes()),
            4 => out.extend_from_slice(&(x as i32).to_le_bytes()),
            _ => out.extend_from_slice(&x.to_le_bytes()),
        }
    }
    out
}

/// A zipmap of field/value pairs (Redis 2.4 hashes).
pub fn zipmap(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = vec![pairs.len().min(254) as u8];
    let len = |out: &mut Vec<u8>, n: usize| {
        if n < 254 {
            out.push(n as u8);
        } else {
            out.push(254);
            out.extend_from_slice(&(n as u32).to_le_bytes());
        }
    };
    for (f, v) in pairs {
        len(&mut out, f.len());
        out.extend_from_slice(f);
        len(&mut out, v.len());
        out.push(0); // free bytes
        out.extend_from_slice(v);
    }
    out.push(0xff);
    out
}

fn flat<'x>(pairs: &[(&'x [u8], &'x [u8])]) -> Vec<&'x [u8]> {
    pairs.iter().flat_map(|(a, b)| [*a, *b]).collect()
}

/// Value builders, one per type id.
pub mod value {
    use super::*;
    use crate::rdb::stream::{Group, StreamEntry, StreamId};

    fn blob(t: u8, b: &[u8]) -> Encoded {
        let mut bytes = Vec::new();
        put_blob(&mut bytes, b, false);
        Encoded { type_id: t, bytes }
    }

    /// Type 0.
    pub fn string(s: &[u8], compress: bool) -> Encoded {
        let mut bytes = Vec::new();
        put_string(&mut bytes, s, compress);
        Encoded {
            type_id: type_id::STRING,
            bytes,
        }
    }
    /// Types 1 (list) and 2 (set): plain strings.
    pub fn plain_list(t: u8, items: &[&[u8]]) -> Encoded {
        let mut bytes = Vec::new();
        put_length(&mut bytes, items.len() as u64);
        for i in items {
            put_string(&mut bytes, i, false);
        }
        Encoded { type_id: t, bytes }
    }
    /// Type 4: plain hash.
    pub fn hash(pairs: &[(&[u8], &[u8])]) -> Encoded {
        let mut bytes = Vec::new();
        put_length(&mut bytes, pairs.len() as u64);
        for (f, v) in pairs {
            put_string(&mut bytes, f, false);
            put_string(&mut bytes, v, false);
        }
        Encoded {
            type_id: type_id::HASH,
            bytes,
        }
    }
    /// Types 3 (string scores) and 5 (binary scores).
    pub fn zset(binary: bool, items: &[(&[u8], f64)]) -> Encoded {
        let mut bytes = Vec::new();
        put_length(&mut bytes, items.len() as u64);
        for (m, s) in items {
            put_string(&mut bytes, m, false);
            if binary {
                bytes.extend_from_slice(&s.to_le_bytes());
            } else {
                put_string_double(&mut bytes, *s);
            }
        }
        Encoded {
            type_id: if binary {
                type_id::ZSET_2
            } else {
                type_id::ZSET
            },
            bytes,
        }
    }
    /// Type 9.
    pub fn hash_zipmap(pairs: &[(&[u8], &[u8])]) -> Encoded {
        blob(type_id::HASH_ZIPMAP, &zipmap(pairs))
    }
    /// Type 10.
    pub fn list_ziplist(items: &[&[u8]]) -> Encoded {
        blob(type_id::LIST_ZIPLIST, &ziplist(items))
    }
    /// Type 11.
    pub fn set_intset(ints: &[i64]) -> Encoded {
        blob(type_id::SET_INTSET, &intset(ints))
    }
    /// Type 12 (scores as text, sorted by score as Redis keeps them).
    pub fn zset_ziplist(items: &[(&[u8], f64)]) -> Encoded {
        let (flat, _keep) = zset_flat(items);
        let refs: Vec<&[u8]> = flat.iter().map(|v| v.as_slice()).collect();
        blob(type_id::ZSET_ZIPLIST, &ziplist(&refs))
    }
    fn zset_flat(items: &[(&[u8], f64)]) -> (Vec<Vec<u8>>, ()) {
        let mut sorted: Vec<(&[u8], f64)> = items.to_vec();
        sorted.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(b.0)));
        let mut flat = Vec::new();
        for (m, s) in sorted {
            flat.push(m.to_vec());
            flat.push(crate::rdb::elem::format_double(s).into_bytes());
        }
        (flat, ())
    }
    /// Type 13.
    pub fn hash_ziplist(pairs: &[(&[u8], &[u8])]) -> Encoded {
        blob(type_id::HASH_ZIPLIST, &ziplist(&flat(pairs)))
    }
    /// Type 14: nodes of ziplists.
    pub fn list_quicklist(nodes: &[Vec<&[u8]>], compress: bool) -> Encoded {
        let mut bytes = Vec::new();
        put_length(&mut bytes, nodes.len() as u64);
        for n in nodes {
            put_blob(&mut bytes, &ziplist(n), compress);
        }
        Encoded {
            type_id: type_id::LIST_QUICKLIST,
            bytes,
        }
    }
    /// A quicklist-2 node.
    pub enum Node<'x> {
        /// A listpack of several elements.
        Packed(Vec<&'x [u8]>),
        /// One raw element.
        Plain(&'x [u8]),
    }
    /// Type 18.
    pub fn list_quicklist2(nodes: &[Node<'_>], compress: bool) -> Encoded {
        let mut bytes = Vec::new();
        put_length(&mut bytes, nodes.len() as u64);
        for n in nodes {
            match n {
                Node::Packed(items) => {
                    put_length(&mut bytes, 2);
                    put_blob(&mut bytes, &listpack(items), compress);
                }
                Node::Plain(e) => {
                    put_length(&mut bytes, 1);
                    put_blob(&mut bytes, e, compress);
                }
            }
        }
        Encoded {
            type_id: type_id::LIST_QUICKLIST_2,
            bytes,
        }
    }
    /// Type 16.
    pub fn hash_listpack(pairs: &[(&[u8], &[u8])]) -> Encoded {
        blob(type_id::HASH_LISTPACK, &listpack(&flat(pairs)))
    }
    /// Type 17.
    pub fn zset_listpack(items: &[(&[u8], f64)]) -> Encoded {
        let (flat, _) = zset_flat(items);
        let refs: Vec<&[u8]> = flat.iter().map(|v| v.as_slice()).collect();
        blob(type_id::ZSET_LISTPACK, &listpack(&refs))
    }
    /// Type 20.
    pub fn set_listpack(items: &[&[u8]]) -> Encoded {
        blob(type_id::SET_LISTPACK, &listpack(items))
    }
    /// Types 24 (GA, relative TTLs after a min-expire) and 22 (pre-GA, absolute TTLs):
    /// field, value, expiry ms (0 = none).
    pub fn hash_metadata(ga: bool, items: &[(&[u8], &[u8], u64)]) -> Encoded {
        let mut bytes = Vec::new();
        let min = items
            .iter()
            .map(|i| i.2)
            .filter(|&t| t > 0)
            .min()
            .unwrap_or(0);
        if ga {
            bytes.extend_from_slice(&min.to_le_bytes());
        }
        put_length(&mut bytes, items.len() as u64);
        for (f, v, t) in items {
            let ttl = match (*t, ga) {
                (0, _) => 0,
                (t, true) => t - min + 1,
                (t, false) => t,
            };
            put_length(&mut bytes, ttl);
            put_string(&mut bytes, f, false);
            put_string(&mut bytes, v, false);
        }
        Encoded {
            type_id: if ga {
                type_id::HASH_METADATA
            } else {
                type_id::HASH_METADATA_PRE_GA
            },
            bytes,
        }
    }
    /// Valkey 9's type 22 (`HASH_2`, under a `VALKEY` header): field, value, 8-byte LE
    /// expiry in ms, -1 for none (here 0 = none, as elsewhere).
    pub fn valkey_hash_2(items: &[(&[u8], &[u8], u64)]) -> Encoded {
        let mut bytes = Vec::new();
        put_length(&mut bytes, items.len() as u64);
        for (f, v, t) in items {
            put_string(&mut bytes, f, false);
            put_string(&mut bytes, v, false);
            let at = i64::try_from(*t).ok().filter(|&t| t > 0).unwrap_or(-1);
            bytes.extend_from_slice(&at.to_le_bytes());
        }
        Encoded {
            type_id: type_id::VALKEY_HASH_2,
            bytes,
        }
    }
    /// Types 25 (GA, with min-expire) and 23 (pre-GA): listpack of field, value, expiry.
    pub fn hash_listpack_ex(ga: bool, items: &[(&[u8], &[u8], u64)]) -> Encoded {
        let mut owned: Vec<Vec<u8>> = Vec::new();
        for (f, v, t) in items {
            owned.push(f.to_vec());
            owned.push(v.to_vec());
            owned.push(t.to_string().into_bytes());
        }
        let refs: Vec<&[u8]> = owned.iter().map(|v| v.as_slice()).collect();
        let mut bytes = Vec::new();
        if ga {
            let min = items
                .iter()
                .map(|i| i.2)
                .filter(|&t| t > 0)
                .min()
                .unwrap_or(0);
            bytes.extend_from_slice(&min.to_le_bytes());
        }
        put_blob(&mut bytes, &listpack(&refs), false);
        Encoded {
            type_id: if ga {
                type_id::HASH_LISTPACK_EX
            } else {
                type_id::HASH_LISTPACK_EX_PRE_GA
            },
            bytes,
        }
    }

    /// Stream metadata that types 19 and 21 add to type 15: first live id, highest deleted
    /// id, entries ever added.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct StreamMeta {
        /// First live id.
        pub first_id: StreamId,
        /// Highest deleted id.
        pub max_deleted_id: StreamId,
        /// Entries ever added.
        pub entries_added: u64,
    }

    /// Entries per node, as Redis's default `stream-node-max-entries`.
    const STREAM_NODE_ENTRIES: usize = 100;

    /// Types 15, 19 and 21: the live `entries` (ids strictly increasing: the caller checks)
    /// in nodes of up to 100, then the metadata and the groups. The type is the oldest that
    /// holds what is given: 21 when a consumer has an active time, 19 with `meta` or a
    /// group's `entries_read`, 15 otherwise. Each node's master fields are its first entry's
    /// fields, and entries with the same fields are written with the SAMEFIELDS flag, as
    /// Redis does.
    pub fn stream(
        entries: &[StreamEntry],
        length: u64,
        last_id: StreamId,
        meta: Option<StreamMeta>,
        groups: &[Group<'_>],
    ) -> Encoded {
        let v3 = groups
            .iter()
            .any(|g| g.consumers.iter().any(|c| c.active_time.is_some()));
        let v2 = v3 || meta.is_some() || groups.iter().any(|g| g.entries_read.is_some());
        let mut bytes = Vec::new();
        let nodes: Vec<&[StreamEntry]> = entries.chunks(STREAM_NODE_ENTRIES).collect();
        put_length(&mut bytes, nodes.len() as u64);
        for node in &nodes {
            let master = node[0].id;
            let mut key = Vec::with_capacity(16);
            key.extend_from_slice(&master.ms.to_be_bytes());
            key.extend_from_slice(&master.seq.to_be_bytes());
            put_blob(&mut bytes, &key, false);
            let master_fields: Vec<&[u8]> =
                node[0].fields.iter().map(|(f, _)| f.as_slice()).collect();
            let mut items: Vec<Vec<u8>> = Vec::new();
            let num = |n: i64| n.to_string().into_bytes();
            items.push(num(node.len() as i64));
            items.push(num(0));
            items.push(num(master_fields.len() as i64));
            items.extend(master_fields.iter().map(|f| f.to_vec()));
            items.push(num(0));
            for e in node.iter() {
                let same = e.fields.len() == master_fields.len()
                    && e.fields.iter().zip(&master_fields).all(|(f, m)| f.0 == *m);
                let n = e.fields.len() as i64;
                items.push(num(if same { 2 } else { 0 }));
                items.push(num(e.id.ms.wrapping_sub(master.ms) as i64));
                items.push(num(e.id.seq.wrapping_sub(master.seq) as i64));
                if same {
                    items.extend(e.fields.iter().map(|(_, v)| v.clone()));
                    items.push(num(n + 3));
                } else {
                    items.push(num(n));
                    for (f, v) in &e.fields {
                        items.push(f.clone());
                        items.push(v.clone());
                    }
                    items.push(num(2 * n + 4));
                }
            }
            let refs: Vec<&[u8]> = items.iter().map(|i| i.as_slice()).collect();
            put_blob(&mut bytes, &listpack(&refs), false);
        }
        put_length(&mut bytes, length);
        put_length(&mut bytes, last_id.ms);
        put_length(&mut bytes, last_id.seq);
        if v2 {
            let m = meta.unwrap_or(StreamMeta {
                first_id: entries.first().map(|e| e.id).unwrap_or_default(),
                max_deleted_id: StreamId::default(),
                entries_added: length,
            });
            for n in [
                m.first_id.ms,
                m.first_id.seq,
                m.max_deleted_id.ms,
                m.max_deleted_id.seq,
                m.entries_added,
            ] {
                put_length(&mut bytes, n);
            }
        }
        let raw_id = |out: &mut Vec<u8>, id: &StreamId| {
            out.extend_from_slice(&id.ms.to_be_bytes());
            out.extend_from_slice(&id.seq.to_be_bytes());
        };
        put_length(&mut bytes, groups.len() as u64);
        for g in groups {
            put_string(&mut bytes, &g.name, false);
            put_length(&mut bytes, g.last_id.ms);
            put_length(&mut bytes, g.last_id.seq);
            if v2 {
                // u64::MAX is how Redis stores "unknown" (-1).
                put_length(&mut bytes, g.entries_read.unwrap_or(u64::MAX));
            }
            put_length(&mut bytes, g.pending.len() as u64);
            for p in &g.pending {
                raw_id(&mut bytes, &p.id);
                bytes.extend_from_slice(&p.delivery_time.to_le_bytes());
                put_length(&mut bytes, p.delivery_count);
            }
            put_length(&mut bytes, g.consumers.len() as u64);
            for c in &g.consumers {
                put_string(&mut bytes, &c.name, false);
                bytes.extend_from_slice(&c.seen_time.to_le_bytes());
                if v3 {
                    // Redis 7.2 gives consumers of older files their seen time.
                    let t = c.active_time.unwrap_or(c.seen_time);
                    bytes.extend_from_slice(&t.to_le_bytes());
                }
                put_length(&mut bytes, c.pending.len() as u64);
                for id in &c.pending {
                    raw_id(&mut bytes, id);
                }
            }
        }
        Encoded {
            type_id: if v3 {
                type_id::STREAM_LISTPACKS_3
            } else if v2 {
                type_id::STREAM_LISTPACKS_2
            } else {
                type_id::STREAM_LISTPACKS
            },
            bytes,
        }
    }
}

/// Writes a whole RDB file.
pub struct RdbWriter {
    out: Vec<u8>,
    version: u32,
}

impl RdbWriter {
    /// Start a Redis RDB of `version` (1–12).
    pub fn new(version: u32) -> Self {
        let mut out = Vec::new();
        out.extend_from_slice(format!("REDIS{version:04}").as_bytes());
        RdbWriter { out, version }
    }
    /// Start a Valkey RDB (`VALKEY080`).
    pub fn valkey(version: u32) -> Self {
        let mut out = Vec::new();
        out.extend_from_slice(format!("VALKEY{version:03}").as_bytes());
        RdbWriter { out, version }
    }
    /// An AUX field.
    pub fn aux(&mut self, name: &str, value: &[u8]) -> &mut Self {
        self.out.push(opcode::AUX);
        put_string(&mut self.out, name.as_bytes(), false);
        put_string(&mut self.out, value, false);
        self
    }
    /// SELECTDB.
    pub fn select_db(&mut self, db: u64) -> &mut Self {
        self.out.push(opcode::SELECTDB);
        put_length(&mut self.out, db);
        self
    }
    /// RESIZEDB.
    pub fn resize_db(&mut self, size: u64, expires: u64) -> &mut Self {
        self.out.push(opcode::RESIZEDB);
        put_length(&mut self.out, size);
        put_length(&mut self.out, expires);
        self
    }
    /// A key with an optional expiry (seconds form before v3, ms after).
    pub fn key(&mut self, key: &[u8], expire_ms: Option<i64>, v: &Encoded) -> &mut Self {
        if let Some(ms) = expire_ms {
            if self.version < 3 {
                self.out.push(opcode::EXPIRETIME);
                self.out
                    .extend_from_slice(&((ms / 1000) as i32).to_le_bytes());
            } else {
                self.out.push(opcode::EXPIRETIME_MS);
                self.out.extend_from_slice(&ms.to_le_bytes());
            }
        }
        self.out.push(v.type_id);
        put_string(&mut self.out, key, false);
        self.out.extend_from_slice(&v.bytes);
        self
    }
    /// A function library (FUNCTION2).
    pub fn function(&mut self, code: &[u8]) -> &mut Self {
        self.out.push(opcode::FUNCTION2);
        put_string(&mut self.out, code, false);
        self
    }
    /// Raw bytes (for hand-made corrupt files).
    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.out.extend_from_slice(b);
        self
    }
    /// EOF and, from v5, the checksum.
    pub fn finish(mut self) -> Vec<u8> {
        self.out.push(opcode::EOF);
        if self.version >= 5 {
            let c = crc64(&self.out);
            self.out.extend_from_slice(&c.to_le_bytes());
        }
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The digit-by-digit parse agrees with parse-then-format on the edge cases.
    #[test]
    fn canonical_int_is_string2ll() {
        let slow = |s: &[u8]| -> Option<i64> {
            let v: i64 = std::str::from_utf8(s).ok()?.parse().ok()?;
            (v.to_string().as_bytes() == s).then_some(v)
        };
        for s in [
            "0",
            "-0",
            "00",
            "01",
            "-01",
            "1",
            "-1",
            "+1",
            " 1",
            "1 ",
            "",
            "-",
            "12a",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "-9223372036854775809",
            "99999999999999999999",
            "18446744073709551616",
            "1e3",
        ] {
            assert_eq!(canonical_int(s.as_bytes()), slow(s.as_bytes()), "{s:?}");
        }
        for i in -5000i64..5000 {
            let s = (i * 7919).to_string();
            assert_eq!(canonical_int(s.as_bytes()), Some(i * 7919));
        }
    }
}
