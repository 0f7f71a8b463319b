//! The checks a key record passes before a loader may see it, in a full sync.
//!
//! Why: a Redis loader stops the server on some things `RESTORE` only refuses: a duplicated
//! key ("Duplicated key found in RDB file"), a set, zset or hash with a member twice, a
//! malformed compact encoding it checks deeply (a zipmap header), a value type it does not
//! know. So no byte of a record goes to a replica before [`check_value`] has walked it
//! whole, and [`Seen`] has ruled out its key coming twice. Checks run on the bytes that are
//! then sent (the caller copies a record before checking it; see `fullsync`).
//!
//! Deliberately conservative: two different members or keys whose 64-bit hashes collide
//! look like a repeat, which only sends the import to commands, never loads a wrong value.

use crate::rdb::{DataType, KeyRecord};

use super::modules;
use super::options::min_rdb_version;

/// Why `k` may not go to a loader of RDB `target_rdb`, if it may not: its module value, a
/// type the target does not know, a corrupt value (walked whole), an empty collection (a
/// loader drops it, so the key counts would not match), a member twice, a bad zipmap header.
/// Every input must end in bounded time: it is fuzzed (`fuzz/fuzz_targets/loadable.rs`).
pub fn check_value(k: &KeyRecord<'_>, target_rdb: u32) -> Result<(), String> {
    if modules::module_type(k).is_some() {
        return Err("module value".into());
    }
    if min_rdb_version(k.type_id, k.version.dialect).is_none_or(|v| v > target_rdb) {
        return Err(format!("type {} is unknown to the target", k.type_id));
    }
    let elements = match k.validate() {
        Err(e) => return Err(format!("corrupt value at byte {:#x}: {}", e.offset, e.kind)),
        Ok(0) if !matches!(k.data_type(), DataType::Stream | DataType::String) => {
            return Err("empty collection".into());
        }
        Ok(n) => n,
    };
    if let Some(what) = duplicate_member(k, elements) {
        return Err(format!("{what} appears twice in the value"));
    }
    if let Some(why) = zipmap_header(k) {
        return Err(why.into());
    }
    Ok(())
}

/// Whether a set, sorted set or hash has a member (or field) twice, in any encoding: a loader
/// stops the server on that ("Duplicate set members detected"; Redis 7.0 also checks old
/// ziplist zsets and hashes this way, and asserts when it converts a compact value with a
/// repeated member to a hash table), where `RESTORE` only refuses the payload. Members are
/// compared by a
/// 64-bit hash in an open-addressing table reused per thread (these are the biggest values,
/// so this is on the hot path): two different members that collide only send the import to
/// commands, never a wrong result.
pub fn duplicate_member(k: &KeyRecord<'_>, elements: u64) -> Option<&'static str> {
    use crate::rdb::Elem;
    let Ok(crate::rdb::Value::Coll(c)) = k.value() else {
        return None;
    };
    let (step, what) = match k.data_type() {
        DataType::Set => (1, "a member"),
        DataType::ZSet => (2, "a member"),
        DataType::Hash if c.has_field_ttls() => (3, "a field"),
        DataType::Hash => (2, "a field"),
        _ => return None,
    };
    if k.type_id == crate::rdb::types::type_id::SET_INTSET && ascending(&c) {
        // Strictly ascending, as Redis keeps an intset: no member twice, no table needed.
        return None;
    }
    thread_local! {
        static TABLE: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    TABLE.with_borrow_mut(|t| {
        // `elements` counts members (tuples), not elements; it is only a size hint: the
        // table doubles whenever it is half full, so probing always finds a free slot.
        let mut set = MemberSet::new(t, elements);
        for (i, e) in c.elements().enumerate() {
            if i % step != 0 {
                continue;
            }
            // A bad element was refused by the validation already.
            let h = match e.ok()? {
                Elem::Bytes(b) => crate::hash::hash64(&b),
                Elem::Int(n) => crate::hash::hash64(itoa::Buffer::new().format(n).as_bytes()),
                other => crate::hash::hash64(&other.to_bytes()),
            };
            if set.insert(h) {
                return Some(what);
            }
        }
        None
    })
}

/// Whether every element is an integer greater than the one before (an intset as Redis
/// writes it).
fn ascending(c: &crate::rdb::Coll<'_>) -> bool {
    let mut prev: Option<i64> = None;
    for e in c.elements() {
        match e {
            Ok(crate::rdb::Elem::Int(n)) if prev.is_none_or(|p| p < n) => prev = Some(n),
            _ => return false,
        }
    }
    true
}

/// An open-addressing set of 64-bit member hashes over a reused buffer, kept at most half
/// full (it doubles and rehashes), so a probe always ends.
pub(crate) struct MemberSet<'t> {
    t: &'t mut Vec<u64>,
    len: usize,
}

/// A table grown for a huge value is not kept for the next one (8 MB at most stays).
impl Drop for MemberSet<'_> {
    fn drop(&mut self) {
        if self.t.len() > 1 << 20 {
            *self.t = Vec::new();
        }
    }
}

impl<'t> MemberSet<'t> {
    fn new(t: &'t mut Vec<u64>, hint: u64) -> MemberSet<'t> {
        let cap = (usize::try_from(hint)
            .unwrap_or(usize::MAX)
            .clamp(8, 1 << 24)
            * 2)
        .next_power_of_two();
        t.clear();
        t.resize(cap, 0);
        MemberSet { t, len: 0 }
    }

    /// Add `h`; whether it was there already.
    fn insert(&mut self, h: u64) -> bool {
        let h = h.max(1); // 0 marks a free slot
        if (self.len + 1) * 2 > self.t.len() {
            self.grow();
        }
        let mask = self.t.len() - 1;
        let mut j = h as usize & mask;
        loop {
            match self.t[j] {
                0 => {
                    self.t[j] = h;
                    self.len += 1;
                    return false;
                }
                x if x == h => return true,
                _ => j = (j + 1) & mask,
            }
        }
    }

    fn grow(&mut self) {
        let old = std::mem::take(&mut *self.t);
        self.t.resize(old.len() * 2, 0);
        self.len = 0;
        for h in old.into_iter().filter(|&h| h != 0) {
            self.insert(h);
        }
    }
}

/// Redis checks a zipmap (RDB 2-3 hashes) deeply at load: its first byte must be its entry
/// count, or 254 for "count it" (Redis 7.0 `zipmapValidateIntegrity`; anything else stops a
/// loading server).
pub(crate) fn zipmap_header(k: &KeyRecord<'_>) -> Option<&'static str> {
    if k.type_id != crate::rdb::types::type_id::HASH_ZIPMAP {
        return None;
    }
    let mut cur = crate::rdb::cursor::Cursor::new(k.raw, k.value_offset);
    let Ok(blob) = cur.string() else {
        return Some("unreadable zipmap");
    };
    let pairs = match k.value() {
        Ok(crate::rdb::Value::Coll(c)) => c.elements().count() / 2,
        _ => return Some("unreadable zipmap"),
    };
    match blob.first() {
        Some(254) => None,
        Some(&n) if usize::from(n) == pairs => None,
        _ => Some("zipmap header count does not match its entries"),
    }
}

/// The (db, name) hashes of the keys sent so far: an open-addressing table of 64-bit hashes
/// that rayon workers fill concurrently (a compare-and-swap per key). Sized once from the
/// scan's key count, at most [`SEEN_MAX_BYTES`]. Two different keys with the same 64-bit hash
/// look like a duplicate: the full sync is then given up for commands, never wrong, only
/// slower, and about once in 10^7 imports of 2 million keys.
pub struct Seen {
    slots: Vec<std::sync::atomic::AtomicU64>,
}

/// The most memory [`Seen`] may take (about 12 million keys); bigger inputs use commands.
pub(crate) const SEEN_MAX_BYTES: u64 = 128 << 20;
/// Slots per key.
pub(crate) const SEEN_SLACK: f64 = 1.3;

impl Seen {
    /// A table for `keys` keys.
    pub fn new(keys: u64) -> Seen {
        let n = ((keys as f64 * SEEN_SLACK) as usize).max(1024);
        Seen {
            slots: (0..n)
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect(),
        }
    }
    /// Whether a table for `keys` keys fits in [`SEEN_MAX_BYTES`].
    pub fn fits(keys: u64) -> bool {
        (keys as f64 * SEEN_SLACK * 8.0) as u64 <= SEEN_MAX_BYTES
    }
    /// Add `h`; whether it was there already. `None`: the table is full (the scan's count
    /// was short, as when the file changed since).
    pub fn insert(&self, h: u64) -> Option<bool> {
        use std::sync::atomic::Ordering;
        let h = h.max(1); // 0 marks a free slot
        let n = self.slots.len();
        let mut i = ((h as u128 * n as u128) >> 64) as usize;
        for _ in 0..n {
            match self.slots[i].compare_exchange(0, h, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(false),
                Err(v) if v == h => return Some(true),
                Err(_) => i = if i + 1 == n { 0 } else { i + 1 },
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::import::options::route;

    /// Issue 8, 1: every size, around each power of two included, ends and tells repeats.
    #[test]
    fn issue8_member_set_never_fills_up() {
        let mut buf = Vec::new();
        for n in (1..=2100u64).chain((3..=17).flat_map(|k| [(1 << k) - 1, 1 << k, (1 << k) + 1])) {
            for hint in [0, n / 3, n, n * 2] {
                let mut set = MemberSet::new(&mut buf, hint);
                for i in 0..n {
                    assert!(
                        !set.insert(crate::hash::hash64(&i.to_le_bytes())),
                        "{n}/{hint}"
                    );
                }
                assert!(set.insert(crate::hash::hash64(&(n / 2).to_le_bytes())));
            }
        }
    }

    /// An intset in order needs no table; one with a member twice is still caught, and one
    /// out of order but without repeats is not refused.
    #[test]
    fn intsets_in_order_and_out() {
        use crate::rdb::encoder::{Encoded, RdbWriter, put_blob};
        use crate::rdb::{RdbReader, Record};
        let intset = |v: &[i16]| {
            let mut b = 2u32.to_le_bytes().to_vec();
            b.extend_from_slice(&(v.len() as u32).to_le_bytes());
            v.iter().for_each(|x| b.extend_from_slice(&x.to_le_bytes()));
            let mut bytes = Vec::new();
            put_blob(&mut bytes, &b, false);
            Encoded {
                type_id: crate::rdb::types::type_id::SET_INTSET,
                bytes,
            }
        };
        let mut w = RdbWriter::new(9);
        w.select_db(0)
            .key(b"a", None, &intset(&[1, 2, 300]))
            .key(b"b", None, &intset(&[1, 2, 2]))
            .key(b"c", None, &intset(&[3, 1, 2]));
        let data = w.finish();
        let got: Vec<_> = RdbReader::new(&data, "t")
            .unwrap()
            .filter_map(|r| match r.unwrap() {
                Record::Key(k) => Some(duplicate_member(&k, 3)),
                _ => None,
            })
            .collect();
        assert_eq!(got, [None, Some("a member"), None]);
    }

    #[test]
    fn seen_tells_repeats_and_fills_up() {
        let s = Seen::new(1000);
        for i in 0..1000u64 {
            assert_eq!(
                s.insert(route(0, format!("key:{i}").as_bytes())),
                Some(false)
            );
        }
        assert_eq!(s.insert(route(0, b"key:42")), Some(true));
        assert_eq!(s.insert(route(1, b"key:42")), Some(false));
        assert_eq!(s.insert(0), Some(false));
        assert_eq!(s.insert(0), Some(true));
        let full = Seen::new(0);
        for i in 0..1024u64 {
            assert_eq!(full.insert(i + 1), Some(false));
        }
        assert_eq!(full.insert(5000), None);
        assert!(Seen::fits(10_000_000) && !Seen::fits(20_000_000));
    }
}
