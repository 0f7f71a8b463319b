//! Counters behind `check` and `inspect`: keys and bytes per db, type and encoding, TTLs, the
//! biggest keys, and a key-prefix breakdown. Memory stays bounded: top lists keep N keys, and
//! the prefix table folds its smallest rows into `(other)` when it grows past a cap.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::hash::BuildHasherDefault;

use serde::Serialize;

use crate::rdb::KeyRecord;
use crate::rdb::types::{DataType, encoding_name};

/// Keys and bytes of one group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Count {
    /// Keys.
    pub keys: u64,
    /// Serialized bytes.
    pub bytes: u64,
}

impl Count {
    fn add(&mut self, bytes: u64) {
        self.keys += 1;
        self.bytes += bytes;
    }
}

/// Per-db counters.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct DbCount {
    /// Keys.
    pub keys: u64,
    /// Serialized bytes.
    pub bytes: u64,
    /// Keys with a TTL.
    pub expires: u64,
    /// Keys whose TTL has already passed.
    pub expired: u64,
}

/// One row of a top-N list.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct BigKey {
    /// The measure (bytes or elements).
    pub value: u64,
    /// Db.
    pub db: u64,
    /// Key (lossy UTF-8 for display; JSON shows it the same way).
    pub key: String,
    /// Type name.
    #[serde(rename = "type")]
    pub type_name: &'static str,
}

/// Keeps the N largest rows.
#[derive(Debug, Clone, Default)]
pub struct TopN {
    n: usize,
    heap: BinaryHeap<Reverse<BigKey>>,
}

impl TopN {
    /// Keep `n` rows.
    pub fn new(n: usize) -> Self {
        TopN {
            n,
            heap: BinaryHeap::new(),
        }
    }
    /// Whether a row of `value` would make the list (what [`TopN::offer`] checks first).
    #[inline]
    pub fn takes(&self, value: u64) -> bool {
        self.n > 0
            && (self.heap.len() < self.n || self.heap.peek().is_some_and(|m| m.0.value < value))
    }

    /// Offer a row; `key` is only built when it makes the list.
    pub fn offer(&mut self, value: u64, db: u64, key: &[u8], type_name: &'static str) {
        if self.n == 0 {
            return;
        }
        if self.heap.len() == self.n {
            match self.heap.peek() {
                Some(Reverse(min)) if min.value >= value => return,
                _ => {}
            }
            self.heap.pop();
        }
        self.heap.push(Reverse(BigKey {
            value,
            db,
            key: String::from_utf8_lossy(key).into_owned(),
            type_name,
        }));
    }
    /// The rows, largest first.
    pub fn sorted(&self) -> Vec<BigKey> {
        let mut v: Vec<BigKey> = self.heap.iter().map(|r| r.0.clone()).collect();
        v.sort_by(|a, b| b.cmp(a));
        v
    }
}

/// Key-prefix breakdown, bounded.
///
/// Rows are keyed by the prefix without its `*` (`a:b:` for `a:b:*`), so that a key is counted
/// with a lookup of a slice of it and no allocation; a stored row with `depth` separators is a
/// prefix and gets its `*` back in [`Prefixes::sorted`], one with fewer is a whole key.
#[derive(Debug, Clone, Default)]
pub struct Prefixes {
    depth: usize,
    cap: usize,
    /// Rows of up to 16 bytes (nearly all prefixes), hashed and compared as two words.
    short: HashMap<Short, Count, BuildHasherDefault<BytesHasher>>,
    /// Longer rows.
    rows: HashMap<Vec<u8>, Count, BuildHasherDefault<BytesHasher>>,
    other: Count,
}

/// A row of up to 16 bytes in two words and its length: a lookup once per key of a dump costs
/// a multiply and two compares, with no call to `memcmp`. The words are loaded straight from
/// the key (two loads that may overlap; the length makes them unique), not through a buffer,
/// which would stall each load behind the bytes just stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Short {
    len: u8,
    a: u64,
    b: u64,
}

fn word(b: &[u8]) -> u64 {
    b.try_into().map_or(0, u64::from_le_bytes)
}

fn half(b: &[u8]) -> u64 {
    b.try_into().map_or(0, |w| u64::from(u32::from_le_bytes(w)))
}

impl Short {
    fn new(row: &[u8]) -> Option<Short> {
        let n = row.len();
        let (a, b) = match n {
            8..=16 => (word(&row[..8]), word(&row[n - 8..])),
            4..=7 => (half(&row[..4]) | half(&row[n - 4..]) << 32, 0),
            0..=3 => (row.iter().rev().fold(0, |w, &x| w << 8 | u64::from(x)), 0),
            _ => return None,
        };
        Some(Short { len: n as u8, a, b })
    }

    fn bytes(&self) -> Vec<u8> {
        let n = usize::from(self.len);
        let mut v = vec![0u8; n];
        match n {
            8..=16 => {
                v[n - 8..].copy_from_slice(&self.b.to_le_bytes());
                v[..8].copy_from_slice(&self.a.to_le_bytes());
            }
            4..=7 => {
                v[n - 4..].copy_from_slice(&(self.a >> 32).to_le_bytes()[..4]);
                v[..4].copy_from_slice(&self.a.to_le_bytes()[..4]);
            }
            _ => v.copy_from_slice(&self.a.to_le_bytes()[..n]),
        }
        v
    }
}

impl std::hash::Hash for Short {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.a ^ self.b.rotate_left(29) ^ u64::from(self.len) << 56);
    }
}

/// A [`std::hash::Hasher`] over [`crate::hash::hash64`]: key prefixes are hashed once per key
/// of a dump, and SipHash's resistance to chosen collisions buys nothing for a report.
#[derive(Debug, Default)]
pub struct BytesHasher(u64);

impl std::hash::Hasher for BytesHasher {
    fn write(&mut self, b: &[u8]) {
        self.0 = crate::hash::fmix64(self.0 ^ crate::hash::hash64(b));
    }
    fn write_usize(&mut self, n: usize) {
        self.0 ^= n as u64;
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = crate::hash::fmix64(self.0 ^ n);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

impl Prefixes {
    /// Split keys on `:` up to `depth` parts; keep at most `cap` rows.
    pub fn new(depth: usize, cap: usize) -> Self {
        Prefixes {
            depth,
            cap,
            ..Default::default()
        }
    }

    /// The row of `key`: up to and with its `depth`-th `:`, or the whole key when it has fewer.
    fn row_of<'k>(&self, key: &'k [u8]) -> &'k [u8] {
        let mut seps = 0;
        for (i, &b) in key.iter().enumerate() {
            if b == b':' {
                seps += 1;
                if seps == self.depth {
                    return &key[..=i];
                }
            }
        }
        key
    }

    /// The prefix of `key` at this depth (`a:b:*` for `a:b:c` at depth 2, the key itself
    /// when it has fewer parts).
    pub fn prefix_of(&self, key: &[u8]) -> Vec<u8> {
        self.name(self.row_of(key))
    }

    /// The name of a stored row (see the type's documentation).
    fn name(&self, row: &[u8]) -> Vec<u8> {
        let mut p = row.to_vec();
        if row.iter().filter(|&&b| b == b':').count() == self.depth {
            p.push(b'*');
        }
        p
    }

    /// Count a key.
    pub fn add(&mut self, key: &[u8], bytes: u64) {
        if self.depth == 0 {
            return;
        }
        let row = self.row_of(key);
        self.add_row(row, Count { keys: 1, bytes });
    }

    /// Add `n` to the row `row`, making room first if it is new and the table is full.
    fn add_row(&mut self, row: &[u8], n: Count) {
        let short = Short::new(row);
        let known = match short {
            Some(s) => self.short.get_mut(&s),
            None => self.rows.get_mut(row),
        };
        if let Some(c) = known {
            c.keys += n.keys;
            c.bytes += n.bytes;
            return;
        }
        if self.len() >= self.cap {
            self.fold();
        }
        match short {
            Some(s) => self.short.insert(s, n),
            None => self.rows.insert(row.to_vec(), n),
        };
    }

    /// Rows held.
    fn len(&self) -> usize {
        self.short.len() + self.rows.len()
    }

    /// Every row and its count.
    fn all(&self) -> impl Iterator<Item = (Vec<u8>, Count)> + '_ {
        let short = self.short.iter().map(|(s, c)| (s.bytes(), *c));
        short.chain(self.rows.iter().map(|(r, c)| (r.clone(), *c)))
    }

    /// Fold the smaller half of the rows into (other), so that the table stays bounded.
    fn fold(&mut self) {
        let mut v: Vec<(Vec<u8>, Count)> = self.all().collect();
        v.sort_by_key(|(_, c)| Reverse(c.keys));
        for (_, c) in v.split_off(self.cap / 2) {
            self.other.keys += c.keys;
            self.other.bytes += c.bytes;
        }
        self.short.clear();
        self.rows.clear();
        for (row, c) in v {
            match Short::new(&row) {
                Some(s) => self.short.insert(s, c),
                None => self.rows.insert(row, c),
            };
        }
    }

    /// Add the rows of `other` (counted from later keys), if that gives what counting its keys
    /// one by one would: no row can be folded on the way. Returns whether it did.
    pub fn merge(&mut self, other: &Prefixes) -> bool {
        if other.other.keys > 0 || self.len() + other.len() > self.cap {
            return false;
        }
        for (row, n) in other.all() {
            self.add_row(&row, n);
        }
        true
    }

    /// Forget every row.
    pub fn clear(&mut self) {
        self.short.clear();
        self.rows.clear();
        self.other = Count::default();
    }

    /// Rows with most keys first, then `(other)` if anything was folded.
    pub fn sorted(&self, limit: usize) -> Vec<(String, Count)> {
        let mut v: Vec<(String, Count)> = self
            .all()
            .map(|(k, c)| (String::from_utf8_lossy(&self.name(&k)).into_owned(), c))
            .collect();
        v.sort_by(|a, b| b.1.keys.cmp(&a.1.keys).then_with(|| a.0.cmp(&b.0)));
        let mut rest = self.other;
        for (_, c) in v.iter().skip(limit) {
            rest.keys += c.keys;
            rest.bytes += c.bytes;
        }
        v.truncate(limit);
        if rest.keys > 0 {
            v.push(("(other)".into(), rest));
        }
        v
    }
}

/// Everything `inspect` reports.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Keys seen.
    pub keys: u64,
    /// Serialized bytes of all keys.
    pub bytes: u64,
    /// Per db.
    pub dbs: BTreeMap<u64, DbCount>,
    /// Per RDB type id (empty until the first key): one index per key instead of two ordered
    /// maps keyed by name; [`Stats::types`] and [`Stats::encodings`] group them.
    by_type_id: Vec<Count>,
    /// Keys with a TTL.
    pub expires: u64,
    /// Keys already expired at `now_ms`.
    pub expired: u64,
    /// Function libraries.
    pub functions: u64,
    /// Module aux records.
    pub module_aux: u64,
    /// AOF commands.
    pub commands: u64,
    /// Biggest keys by serialized size.
    pub top_bytes: TopN,
    /// Biggest keys by element count.
    pub top_elems: TopN,
    /// Prefix breakdown.
    pub prefixes: Prefixes,
    /// The time "expired" is judged against.
    pub now_ms: i64,
}

impl Stats {
    /// New counters with top lists of `top` and prefixes to `depth`.
    pub fn new(top: usize, depth: usize) -> Self {
        Stats {
            top_bytes: TopN::new(top),
            top_elems: TopN::new(top),
            prefixes: Prefixes::new(depth, 100_000),
            now_ms: now_ms(),
            ..Default::default()
        }
    }

    /// Count one key; `elems` is its element count when known.
    pub fn add_key(&mut self, rec: &KeyRecord<'_>, elems: Option<u64>) {
        self.count_key(rec);
        self.rank_key(rec, elems);
    }

    /// Everything [`Stats::add_key`] does but the top lists: sums, which pieces of a dump can
    /// count apart and [`Stats::merge`] adds up.
    pub fn count_key(&mut self, rec: &KeyRecord<'_>) {
        let bytes = rec.serialized_len();
        self.keys += 1;
        self.bytes += bytes;
        let db = self.dbs.entry(rec.db).or_default();
        db.keys += 1;
        db.bytes += bytes;
        if let Some(ms) = rec.expire_ms {
            self.expires += 1;
            db.expires += 1;
            if ms <= self.now_ms {
                self.expired += 1;
                db.expired += 1;
            }
        }
        if self.by_type_id.is_empty() {
            self.by_type_id.resize(256, Count::default());
        }
        self.by_type_id[usize::from(rec.type_id)].add(bytes);
        self.prefixes.add(&rec.key, bytes);
    }

    /// Keys and bytes per data type (`string`, `hash`...).
    pub fn types(&self) -> BTreeMap<&'static str, Count> {
        self.group_type_ids(|t| DataType::of(t).name())
    }

    /// Keys and bytes per encoding as the file stores it (`listpack`, `quicklist2`...).
    pub fn encodings(&self) -> BTreeMap<&'static str, Count> {
        self.group_type_ids(encoding_name)
    }

    fn group_type_ids(&self, name: impl Fn(u8) -> &'static str) -> BTreeMap<&'static str, Count> {
        let mut out = BTreeMap::<&'static str, Count>::new();
        for (t, c) in (0..=u8::MAX).zip(&self.by_type_id) {
            if c.keys > 0 {
                let m = out.entry(name(t)).or_default();
                m.keys += c.keys;
                m.bytes += c.bytes;
            }
        }
        out
    }

    /// The top lists' part of [`Stats::add_key`], which depends on the order keys come in.
    #[inline]
    pub fn rank_key(&mut self, rec: &KeyRecord<'_>, elems: Option<u64>) {
        // Most keys make neither list: that is settled without a call.
        let bytes = rec.serialized_len();
        if self.top_bytes.takes(bytes) {
            let t = rec.data_type().name();
            self.top_bytes.offer(bytes, rec.db, &rec.key, t);
        }
        if let Some(n) = elems.filter(|&n| self.top_elems.takes(n)) {
            let t = rec.data_type().name();
            self.top_elems.offer(n, rec.db, &rec.key, t);
        }
    }

    /// Empty counters that judge expiry against `now_ms` and split prefixes like `like`, for
    /// counting a piece of a dump apart; reuses the allocations.
    pub fn reset_like(&mut self, like: &Stats) {
        let mut prefixes = std::mem::take(&mut self.prefixes);
        prefixes.clear();
        prefixes.depth = like.prefixes.depth;
        prefixes.cap = like.prefixes.cap;
        self.dbs.clear();
        self.by_type_id.fill(Count::default());
        *self = Stats {
            dbs: std::mem::take(&mut self.dbs),
            by_type_id: std::mem::take(&mut self.by_type_id),
            prefixes,
            now_ms: like.now_ms,
            ..Default::default()
        };
    }

    /// Add the sums of `piece` (counted by [`Stats::count_key`] from later keys). Returns
    /// false when its prefixes could not be added as rows (see [`Prefixes::merge`]): the
    /// caller then counts its keys' prefixes one by one.
    pub fn merge(&mut self, piece: &Stats) -> bool {
        self.keys += piece.keys;
        self.bytes += piece.bytes;
        self.expires += piece.expires;
        self.expired += piece.expired;
        self.functions += piece.functions;
        self.module_aux += piece.module_aux;
        self.commands += piece.commands;
        for (db, c) in &piece.dbs {
            let d = self.dbs.entry(*db).or_default();
            d.keys += c.keys;
            d.bytes += c.bytes;
            d.expires += c.expires;
            d.expired += c.expired;
        }
        if self.by_type_id.len() < piece.by_type_id.len() {
            self.by_type_id
                .resize(piece.by_type_id.len(), Count::default());
        }
        for (m, c) in self.by_type_id.iter_mut().zip(&piece.by_type_id) {
            m.keys += c.keys;
            m.bytes += c.bytes;
        }
        self.prefixes.merge(&piece.prefixes)
    }
}

/// Wall-clock Unix ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn top_n_keeps_largest() {
        let mut t = TopN::new(2);
        for (v, k) in [(5, "a"), (1, "b"), (9, "c"), (7, "d")] {
            t.offer(v, 0, k.as_bytes(), "string");
        }
        let s: Vec<_> = t.sorted().into_iter().map(|b| b.key).collect();
        assert_eq!(s, ["c", "d"]);
    }
    /// Pieces counted apart and merged give the rows of one count, and a piece whose rows
    /// could be folded on the way is refused.
    #[test]
    fn merged_prefixes_equal_one_count() {
        let keys: Vec<String> = (0..3000)
            .map(|i| format!("t{}:{}:x", i % 7, i % 13))
            .collect();
        let mut one = Prefixes::new(2, 1000);
        let mut merged = Prefixes::new(2, 1000);
        for chunk in keys.chunks(250) {
            let mut piece = Prefixes::new(2, 1000);
            for k in chunk {
                one.add(k.as_bytes(), k.len() as u64);
                piece.add(k.as_bytes(), k.len() as u64);
            }
            assert!(merged.merge(&piece));
        }
        assert_eq!(one.sorted(100), merged.sorted(100));
        let mut small = Prefixes::new(2, 10);
        assert!(!small.merge(&merged));
    }

    #[test]
    fn short_and_long_rows_are_told_apart() {
        let mut p = Prefixes::new(1, 100);
        let rows: [&[u8]; 12] = [
            b"a",
            b"a\0",
            b"",
            b"0123456789abcdef",
            b"0123456789abcdefg",
            b"0123456789abcde\0",
            b"abc",
            b"abcd",
            b"abcde",
            b"abcdefg",
            b"abcdefgh",
            b"abcdefghi",
        ];
        for (i, r) in rows.iter().enumerate() {
            for _ in 0..=i {
                p.add(r, 1);
            }
        }
        let mut got = p.sorted(100);
        got.sort_by(|x, y| x.0.cmp(&y.0));
        let mut want: Vec<(String, Count)> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let n = i as u64 + 1;
                let c = Count { keys: n, bytes: n };
                (String::from_utf8_lossy(r).into_owned(), c)
            })
            .collect();
        want.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(got, want);
    }

    #[test]
    fn prefixes_bounded() {
        let mut p = Prefixes::new(1, 10);
        for i in 0..1000 {
            p.add(format!("k{i}:x").as_bytes(), 1);
        }
        p.add(b"user:1", 1);
        p.add(b"user:2", 1);
        assert!(p.len() <= 10);
        let rows = p.sorted(100);
        assert_eq!(rows[0].0, "user:*");
        let total: u64 = rows.iter().map(|r| r.1.keys).sum();
        assert_eq!(total, 1002);
    }
}
