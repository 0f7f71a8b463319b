//! Key slots: CRC16 with hash tags, temporary keys in a key's slot, and the slot of an AOF
//! command.

use std::sync::OnceLock;

use crate::sink::redis::show;
use crate::transform::filter::command_key;

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
/// use rdbferry::cluster::key_slot;
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
/// use rdbferry::cluster::{key_slot, tmp_key_for};
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

/// An AOF command whose keys are in different slots: a Cluster refuses it (`CROSSSLOT`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{command} spans Cluster slots: key {} is in slot {first_slot}, key {} in slot {other_slot}",
    show(first),
    show(other)
)]
pub struct CrossSlot {
    /// The command name, as given.
    pub command: String,
    /// The first key.
    pub first: Vec<u8>,
    /// Its slot.
    pub first_slot: u16,
    /// The first key in another slot.
    pub other: Vec<u8>,
    /// Its slot.
    pub other_slot: u16,
}

fn is(name: &[u8], list: &[&str]) -> bool {
    list.iter().any(|c| name.eq_ignore_ascii_case(c.as_bytes()))
}

fn numkeys<'a>(args: &[&'a [u8]], at: usize) -> Vec<&'a [u8]> {
    let n = args
        .get(at)
        .and_then(|n| std::str::from_utf8(n).ok())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0);
    args.iter().skip(at + 1).take(n).copied().collect()
}

/// The keys of a command, by the key positions of the Redis command table for the commands
/// that have several keys; the first argument ([`command_key`]) for the others.
fn command_keys<'a>(args: &[&'a [u8]]) -> Vec<&'a [u8]> {
    let Some(&name) = args.first() else {
        return Vec::new();
    };
    let n = args.len();
    // (first, last from the end, step), as in the command table's firstkey/lastkey/step.
    let range = |first: usize, from_end: usize, step: usize| -> Vec<&'a [u8]> {
        let end = n.saturating_sub(from_end);
        (first..end).step_by(step).map(|i| args[i]).collect()
    };
    if is(
        name,
        &[
            "del",
            "unlink",
            "exists",
            "touch",
            "watch",
            "mget",
            "sinter",
            "sunion",
            "sdiff",
            "sinterstore",
            "sunionstore",
            "sdiffstore",
            "pfmerge",
            "pfcount",
        ],
    ) {
        range(1, 0, 1)
    } else if is(name, &["mset", "msetnx"]) {
        range(1, 0, 2)
    } else if is(
        name,
        &[
            "rename",
            "renamenx",
            "smove",
            "rpoplpush",
            "brpoplpush",
            "lmove",
            "blmove",
            "copy",
            "zrangestore",
            "geosearchstore",
        ],
    ) {
        args.iter().skip(1).take(2).copied().collect()
    } else if is(name, &["blpop", "brpop", "bzpopmin", "bzpopmax"]) {
        range(1, 1, 1)
    } else if is(name, &["bitop"]) {
        range(2, 0, 1)
    } else if is(name, &["zunionstore", "zinterstore", "zdiffstore"]) {
        let mut k: Vec<&[u8]> = args.get(1).copied().into_iter().collect();
        k.extend(numkeys(args, 2));
        k
    } else if is(
        name,
        &[
            "zunion",
            "zinter",
            "zdiff",
            "sintercard",
            "zintercard",
            "lmpop",
            "zmpop",
        ],
    ) {
        numkeys(args, 1)
    } else if is(
        name,
        &[
            "blmpop",
            "bzmpop",
            "eval",
            "evalsha",
            "eval_ro",
            "evalsha_ro",
            "fcall",
            "fcall_ro",
        ],
    ) {
        numkeys(args, 2)
    } else if is(name, &["georadius", "georadiusbymember", "sort"]) {
        // The key, and the destination after STORE / STOREDIST.
        let mut k: Vec<&[u8]> = args.get(1).copied().into_iter().collect();
        for w in args.windows(2).skip(2) {
            if is(w[0], &["store", "storedist"]) {
                k.push(w[1]);
            }
        }
        k
    } else {
        command_key(args).into_iter().collect()
    }
}

/// The slot an AOF command (`args[0]` is its name) must be sent to: `Ok(None)` when it has no
/// key (`MULTI`, `SELECT`, `FUNCTION LOAD`, `EVAL` with no keys...), any node may run it.
/// Multi-key commands (`DEL`, `MSET`, `RENAME`, `ZUNIONSTORE`, `EVAL` with keys...) must have
/// every key in one slot, as Cluster requires; otherwise the error names two keys that differ.
///
/// ```
/// use rdbferry::cluster::{command_slot, key_slot};
/// let args: [&[u8]; 5] = [b"MSET", b"{u}a", b"1", b"{u}b", b"2"];
/// assert_eq!(command_slot(&args), Ok(Some(key_slot(b"u"))));
/// let args: [&[u8]; 3] = [b"DEL", b"a", b"b"];
/// assert!(command_slot(&args).is_err());
/// ```
pub fn command_slot(args: &[&[u8]]) -> Result<Option<u16>, CrossSlot> {
    let keys = command_keys(args);
    let Some((&first, rest)) = keys.split_first() else {
        return Ok(None);
    };
    let first_slot = key_slot(first);
    for &k in rest {
        let s = key_slot(k);
        if s != first_slot {
            return Err(CrossSlot {
                command: String::from_utf8_lossy(args.first().copied().unwrap_or_default())
                    .into_owned(),
                first: first.to_vec(),
                first_slot,
                other: k.to_vec(),
                other_slot: s,
            });
        }
    }
    Ok(Some(first_slot))
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

    #[test]
    fn command_slots() {
        let s = |a: &[&str]| {
            let v: Vec<&[u8]> = a.iter().map(|x| x.as_bytes()).collect();
            command_slot(&v)
        };
        assert_eq!(s(&["SET", "foo", "1"]), Ok(Some(12182)));
        assert_eq!(s(&["MULTI"]), Ok(None));
        assert_eq!(s(&["SELECT", "0"]), Ok(None));
        assert_eq!(s(&["EVAL", "return 1", "0"]), Ok(None));
        assert_eq!(
            s(&["EVAL", "x", "2", "{a}1", "{a}2", "arg"]),
            Ok(Some(key_slot(b"a")))
        );
        assert!(s(&["EVAL", "x", "2", "a", "b"]).is_err());
        assert_eq!(s(&["DEL", "{a}1", "{a}2"]), Ok(Some(key_slot(b"a"))));
        // MSET values are not keys.
        assert_eq!(
            s(&["MSET", "{a}1", "x", "{a}2", "y"]),
            Ok(Some(key_slot(b"a")))
        );
        let e = s(&["mset", "foo", "x", "bar", "y"]).unwrap_err();
        assert_eq!((e.first_slot, e.other_slot), (12182, 5061));
        let msg = e.to_string();
        assert!(msg.contains("mset") && msg.contains("\"bar\""), "{msg}");
        assert!(s(&["RENAME", "foo", "bar"]).is_err());
        assert_eq!(s(&["BLPOP", "{a}x", "{a}y", "0"]), Ok(Some(key_slot(b"a"))));
        // A timeout is not a key.
        assert_eq!(s(&["BLPOP", "foo", "5"]), Ok(Some(12182)));
        assert!(s(&["ZUNIONSTORE", "d", "2", "{d}a", "b"]).is_err());
        assert_eq!(
            s(&[
                "ZUNIONSTORE",
                "{d}",
                "2",
                "{d}a",
                "{d}b",
                "WEIGHTS",
                "1",
                "2"
            ]),
            Ok(Some(key_slot(b"d")))
        );
        assert!(s(&["BITOP", "AND", "foo", "bar"]).is_err());
        assert_eq!(s(&["BITOP", "AND", "foo", "foo"]), Ok(Some(12182)));
        assert!(s(&["SORT", "foo", "STORE", "bar"]).is_err());
        assert_eq!(s(&["LMPOP", "1", "foo", "LEFT"]), Ok(Some(12182)));
    }
}
