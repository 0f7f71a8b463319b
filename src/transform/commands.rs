//! The command-key table: which arguments of a Redis command are keys, as the Redis command
//! table's key specs say, for the commands rdbferry meets in AOF files and replication
//! streams. Filters, renames, Cluster routing and `--shard` all read keys from here, so a
//! multi-key command is judged by every key it has, never by its first argument alone.

use crate::keyslot::key_slot;
use crate::text::quoted;

/// An AOF command whose keys are in different slots: a Cluster refuses it (`CROSSSLOT`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{command} spans Cluster slots: key {} is in slot {first_slot}, key {} in slot {other_slot}",
    quoted(first),
    quoted(other)
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

/// Commands without keys: they act on a db, the server or nothing (filters keep them).
const KEYLESS: &[&str] = &[
    "select",
    "multi",
    "exec",
    "discard",
    "function",
    "script",
    "flushall",
    "flushdb",
    "ping",
    "swapdb",
    "publish",
    "spublish",
    "replconf",
    "client",
    "config",
    "acl",
    "debug",
    "save",
    "bgsave",
    "bgrewriteaof",
    "info",
    "time",
    "echo",
    "auth",
    "hello",
    "quit",
    "readonly",
    "readwrite",
    "wait",
    "waitaof",
    "shutdown",
    "module",
    "latency",
    "slowlog",
    "monitor",
];

/// `numkeys` at `at`: the positions of the keys after it (bounded by the arguments there).
fn numkeys(args: &[&[u8]], at: usize) -> Vec<usize> {
    let n = args
        .get(at)
        .and_then(|n| std::str::from_utf8(n).ok())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0);
    (at + 1..args.len()).take(n).collect()
}

/// Where the keys of a command are: indices into `args` (`args[0]` is the name), by the key
/// specs of the Redis command table (firstkey, lastkey, step; `numkeys` forms) for the
/// commands with several keys or a key elsewhere than first; the first argument otherwise.
/// Empty for commands without keys.
///
/// ```
/// use rdbferry::transform::commands::key_positions;
/// let args: [&[u8]; 5] = [b"MSET", b"a", b"1", b"b", b"2"];
/// assert_eq!(key_positions(&args), [1, 3]);
/// let args: [&[u8]; 4] = [b"XGROUP", b"CREATE", b"stream", b"g"];
/// assert_eq!(key_positions(&args), [2]);
/// ```
pub fn key_positions(args: &[&[u8]]) -> Vec<usize> {
    let Some(&name) = args.first() else {
        return Vec::new();
    };
    let n = args.len();
    // (first, last from the end, step), as in the command table's firstkey/lastkey/step.
    let range = |first: usize, from_end: usize, step: usize| -> Vec<usize> {
        (first..n.saturating_sub(from_end)).step_by(step).collect()
    };
    if is(name, KEYLESS) {
        Vec::new()
    } else if is(
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
        (1..n.min(3)).collect()
    } else if is(name, &["blpop", "brpop", "bzpopmin", "bzpopmax"]) {
        range(1, 1, 1)
    } else if is(name, &["bitop"]) {
        range(2, 0, 1)
    } else if is(name, &["xgroup"]) {
        // XGROUP CREATE|SETID|DESTROY|CREATECONSUMER|DELCONSUMER key ...; HELP has none.
        (2..n.min(3)).collect()
    } else if is(name, &["zunionstore", "zinterstore", "zdiffstore"]) {
        let mut k: Vec<usize> = (1..n.min(2)).collect();
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
        let mut k: Vec<usize> = (1..n.min(2)).collect();
        k.extend(
            (2..n.saturating_sub(1))
                .filter(|&i| is(args[i], &["store", "storedist"]))
                .map(|i| i + 1),
        );
        k
    } else {
        (1..n.min(2)).collect()
    }
}

/// The keys of a command (see [`key_positions`]).
pub fn command_keys<'a>(args: &[&'a [u8]]) -> Vec<&'a [u8]> {
    key_positions(args).into_iter().map(|i| args[i]).collect()
}

/// The first key of a command, if it has one.
pub fn command_key<'a>(args: &[&'a [u8]]) -> Option<&'a [u8]> {
    key_positions(args).first().map(|&i| args[i])
}

/// The slot an AOF command (`args[0]` is its name) must be sent to: `Ok(None)` when it has no
/// key (`MULTI`, `SELECT`, `FUNCTION LOAD`, `EVAL` with no keys...), any node may run it.
/// Multi-key commands (`DEL`, `MSET`, `RENAME`, `ZUNIONSTORE`, `EVAL` with keys...) must have
/// every key in one slot, as Cluster requires; otherwise the error names two keys that differ.
///
/// ```
/// use rdbferry::{keyslot::key_slot, transform::commands::command_slot};
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
