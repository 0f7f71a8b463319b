//! Redis Cluster key slots: CRC16 (XMODEM) of the key or of its hash tag, modulo 16384,
//! exactly as Redis computes it (`src/cluster.c`, `keyHashSlot`), and temporary key names
//! in a given key's slot (the rewrite path builds a key under one, then renames it into
//! place, which a Cluster allows only within a slot).
//!
//! At the bottom of the crate: routing (`net::cluster`), the command-key table
//! (`transform::commands`) and `--shard` all hash keys here.

use std::sync::OnceLock;

/// Slots in a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// CRC16 table for the XMODEM polynomial 0x1021 (init 0, no reflection), the CRC Redis uses
/// for key slots (`src/crc16.c`).
const CRC16_TABLE: [u16; 256] = {
    let mut t = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = (i as u16) << 8;
        let mut b = 0;
        while b < 8 {
            c = if c & 0x8000 != 0 {
                (c << 1) ^ 0x1021
            } else {
                c << 1
            };
            b += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// CRC16/XMODEM of `data`. Redis's test vector: `crc16(b"123456789") == 0x31C3`.
pub fn crc16(data: &[u8]) -> u16 {
    data.iter().fold(0u16, |crc, &b| {
        (crc << 8) ^ CRC16_TABLE[((crc >> 8) as u8 ^ b) as usize]
    })
}

/// The part of a key that is hashed: the hash tag (between the first `{` and the first `}`
/// after it) when it is not empty, else the whole key.
fn hashed_part(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{')
        && let Some(len) = key[open + 1..].iter().position(|&b| b == b'}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

/// The Cluster slot of a key, as `CLUSTER KEYSLOT` computes it.
///
/// ```
/// use rdbferry::keyslot::key_slot;
/// assert_eq!(key_slot(b"foo"), 12182);
/// assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"{user1000}.followers"));
/// ```
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hashed_part(key)) & (SLOTS - 1)
}

/// For each slot, the smallest `N` such that the tag `rdbferry-tmp-N` hashes to it. Found by
/// counting up until every slot has one (about 170,000 tries, once per process).
fn tag_numbers() -> &'static [u32] {
    static TABLE: OnceLock<Vec<u32>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = vec![u32::MAX; SLOTS as usize];
        let mut left = SLOTS as usize;
        let mut n = 0u32;
        // Bounded: in practice every slot is hit before 300,000.
        while left > 0 && n < 50_000_000 {
            let s = crc16(format!("rdbferry-tmp-{n}").as_bytes()) & (SLOTS - 1);
            if t[s as usize] == u32::MAX {
                t[s as usize] = n;
                left -= 1;
            }
            n += 1;
        }
        t
    })
}

/// A hash tag (without braces) whose slot is `slot`: `rdbferry-tmp-N`, from the same table
/// as [`tmp_key_for`]; `None` only if the table missed the slot (a unit test says it never
/// does).
pub fn slot_tag(slot: u16) -> Option<String> {
    match tag_numbers().get(slot as usize) {
        Some(&n) if n != u32::MAX => Some(format!("rdbferry-tmp-{n}")),
        _ => None,
    }
}

/// A temporary key name that hashes to the same slot as `key` (the rewrite path builds a key
/// under it and renames it into place; `RENAME` across slots is refused by a Cluster).
///
/// - no braces in `key`: `{key}.rdbferry-tmp` (the whole key is the tag);
/// - a valid hash tag in `key`: `key.rdbferry-tmp` (the same tag);
/// - braces that form no valid tag (`a}b{c`, `x{}y`), or the empty key: the whole key is hashed, and no suffix
///   or tag of it keeps the slot. Then `{rdbferry-tmp-N}.key`, with the smallest `N` whose tag
///   hashes to the key's slot. The key follows the tag whole, so two keys never share a
///   temporary name.
///
/// ```
/// use rdbferry::keyslot::{key_slot, tmp_key_for};
/// assert_eq!(tmp_key_for(b"k"), b"{k}.rdbferry-tmp");
/// let odd = b"a}b{c";
/// assert_eq!(key_slot(&tmp_key_for(odd)), key_slot(odd));
/// ```
pub fn tmp_key_for(key: &[u8]) -> Vec<u8> {
    let braces = key.iter().any(|&b| b == b'{' || b == b'}');
    // The empty key would make an empty tag (`{}`), which hashes the whole name.
    if !braces && !key.is_empty() {
        return [b"{", key, b"}.rdbferry-tmp"].concat();
    }
    if hashed_part(key).len() != key.len() {
        return [key, b".rdbferry-tmp"].concat();
    }
    let slot = key_slot(key);
    let n = tag_numbers()[slot as usize];
    if n == u32::MAX {
        // Unreachable (every slot has a number; a unit test checks it), but never panic:
        // the old name is still right outside a Cluster.
        return [key, b".rdbferry-tmp"].concat();
    }
    [format!("{{rdbferry-tmp-{n}}}.").as_bytes(), key].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_test_vector() {
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(crc16(b""), 0);
    }

    #[test]
    fn known_slots() {
        // Values from CLUSTER KEYSLOT on Redis 7.0.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"hello"), 866);
        assert_eq!(key_slot(b""), 0);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(
            key_slot(b"{user1000}.following"),
            key_slot(b"{user1000}.followers")
        );
        // Only the first '{' and the first '}' after it count; an empty tag hashes the key.
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") & 16383);
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"a}b{c"), crc16(b"a}b{c") & 16383);
        assert_eq!(key_slot(b"{"), crc16(b"{") & 16383);
    }

    #[test]
    fn every_slot_has_a_tmp_tag() {
        assert!(tag_numbers().iter().all(|&n| n != u32::MAX));
        for slot in [0, 1, 12182, SLOTS - 1] {
            let tag = slot_tag(slot).unwrap();
            assert_eq!(key_slot(format!("x{{{tag}}}y").as_bytes()), slot);
        }
    }

    #[test]
    fn tmp_keys_stay_in_the_slot() {
        // Unchanged names for ordinary keys and keys with a tag.
        assert_eq!(tmp_key_for(b"k"), b"{k}.rdbferry-tmp");
        assert_eq!(tmp_key_for(b"{t}k"), b"{t}k.rdbferry-tmp");
        for k in [
            &b"k"[..],
            b"{t}k",
            b"a}b{c",
            b"x{}y",
            b"{",
            b"}",
            b"{}",
            b"}{",
            b"a{b",
            b"foo{}{bar}",
            b"\xff{\x00",
            b"",
        ] {
            let t = tmp_key_for(k);
            assert_eq!(key_slot(&t), key_slot(k), "{k:?} -> {t:?}");
            assert_ne!(t, k);
        }
        assert_ne!(tmp_key_for(b"a}b{c"), tmp_key_for(b"a}b{d"));
        assert!(tmp_key_for(b"a}b{c").starts_with(b"{rdbferry-tmp-"));
        assert_eq!(tmp_key_for(b"a}b{c"), tmp_key_for(b"a}b{c"));
    }
}
