//! What the writer sends: a [`Unit`] is the encoded commands that write one entry (a key, a
//! part of a big key, a group of AOF commands, a function library), how to read their
//! replies ([`UnitKind`]), and the marker of a unit that must not run twice.

use crate::resp::{parse_command, write_command};

/// Compares two keys in one slot by value: `1` when their `DUMP`s are equal. Deletes the
/// second (the temporary key).
pub(crate) const SAME_VALUE: &str = "local a = redis.call('DUMP', KEYS[1]) \
     local b = redis.call('DUMP', KEYS[2]) redis.call('DEL', KEYS[2]) \
     if a and a == b then return 1 else return 0 end";

/// How to read the replies of a [`Unit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitKind {
    /// One `RESTORE`: `BUSYKEY` is a conflict.
    Restore,
    /// A key rebuilt under a temporary name and renamed into place. With `nx`, the rename is
    /// `RENAMENX` followed by `DEL tmp`, and a 0 from `RENAMENX` is a conflict. `multi` says
    /// whether the whole unit is one `MULTI`/`EXEC`.
    Rewrite {
        /// `RENAMENX` + `DEL tmp` end the unit.
        nx: bool,
        /// Wrapped in `MULTI`/`EXEC`.
        multi: bool,
    },
    /// `SET key value [NX] [PXAT ms]`: with `nx`, a nil reply is a conflict.
    Set {
        /// `NX` was given.
        nx: bool,
    },
    /// One part of a key too big to be prepared whole: `MULTI`, commands building it under
    /// its temporary name, `SET marker n`, `EXEC`, sent in order on one connection. The
    /// `last` part also renames it into place (`nx`: RENAMENX + DEL tmp) after the marker. A
    /// failed part fails the key; if the rename still went through, the half-built key is
    /// deleted.
    Part {
        /// The part that renames.
        last: bool,
        /// RENAMENX + DEL tmp end the last part.
        nx: bool,
    },
    /// AOF commands in one `MULTI`/`EXEC` with their marker: `count` commands, each of whose
    /// error replies is reported by command.
    Commands,
    /// `FUNCTION LOAD`: "already exists" is a conflict.
    Function,
    /// `MSET` (or, with `nx`, `MSETNX`) of `count` strings without TTL. When `MSETNX` sets
    /// nothing, or the command is refused, its keys are sent again one by one (`SET k v
    /// [NX]`), so that each conflict or error is told by name.
    MultiSet {
        /// `MSETNX`.
        nx: bool,
    },
}

/// Where a non-idempotent unit records that it ran: `SET key seq` inside its `MULTI`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// The marker key (same db and slot as the unit).
    pub key: Vec<u8>,
    /// The import's id (markers of another import are not ours).
    pub run: u64,
    /// The unit's number; markers only grow.
    pub seq: u64,
}

/// What a unit with a marker writes into it: `run:seq`.
pub fn marker_value(run: u64, seq: u64) -> String {
    format!("{run}:{seq}")
}

/// Whether a marker's value says the unit `m` ran.
pub(crate) fn marker_passed(value: &[u8], m: &Marker) -> bool {
    let Some((run, seq)) = std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.split_once(':'))
    else {
        return false;
    };
    run.parse::<u64>() == Ok(m.run) && seq.parse::<u64>().is_ok_and(|n| n >= m.seq)
}

/// The commands that write one entry, and how to read their replies.
#[derive(Debug, Clone)]
pub struct Unit {
    /// Database (after `--db-map`).
    pub db: u64,
    /// What to name in messages (the key, or the command).
    pub label: Vec<u8>,
    /// The encoded commands.
    pub bytes: Vec<u8>,
    /// How many replies they produce.
    pub replies: usize,
    /// How to read them.
    pub kind: UnitKind,
    /// Which connection (a hash of db and key; 0 for ordered commands).
    pub route: u64,
    /// The marker of a non-idempotent unit.
    pub marker: Option<Marker>,
    /// Entries it writes (keys or AOF commands); 0 for a part that is not the last.
    pub count: u64,
    /// The Cluster slot of its keys (None on a standalone target).
    pub slot: Option<u16>,
    /// The module type of a module value (`ReJSON-RL (encver 3)`), named in its errors: a
    /// target without the module only answers "Bad data format".
    pub module: Option<String>,
}

impl Unit {
    /// A unit writing one entry, without marker.
    pub fn new(
        db: u64,
        label: Vec<u8>,
        bytes: Vec<u8>,
        replies: usize,
        kind: UnitKind,
        route: u64,
    ) -> Unit {
        Unit {
            db,
            label,
            bytes,
            replies,
            kind,
            route,
            marker: None,
            count: 1,
            slot: None,
            module: None,
        }
    }
}

impl Unit {
    /// The unit without its bytes (what settling needs).
    pub(crate) fn clone_meta(&self) -> Unit {
        Unit {
            db: self.db,
            label: self.label.clone(),
            bytes: Vec::new(),
            replies: self.replies,
            kind: self.kind,
            route: self.route,
            marker: self.marker.clone(),
            count: self.count,
            slot: self.slot,
            module: self.module.clone(),
        }
    }
}

/// The keys of an `MSET`/`MSETNX` unit as one `SET k v [NX]` unit each.
pub(crate) fn split_mset(u: &Unit) -> Vec<Unit> {
    let nx = matches!(u.kind, UnitKind::MultiSet { nx: true });
    let mut out = Vec::new();
    for c in commands_of(&u.bytes) {
        for kv in c.get(1..).unwrap_or_default().chunks(2) {
            let [k, v] = kv else { continue };
            let mut bytes = Vec::with_capacity(k.len() + v.len() + 48);
            if nx {
                write_command(&mut bytes, &[b"SET", k, v, b"NX"]);
            } else {
                write_command(&mut bytes, &[b"SET", k, v]);
            }
            let mut s = Unit::new(u.db, k.clone(), bytes, 1, UnitKind::Set { nx }, u.route);
            s.slot = u.slot;
            out.push(s);
        }
    }
    out
}

/// The commands of encoded bytes, as owned arguments.
pub(crate) fn commands_of(mut bytes: &[u8]) -> Vec<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut args = Vec::new();
    while let Ok(Some(n)) = parse_command(bytes, &mut args) {
        out.push(args.iter().map(|a| a.to_vec()).collect());
        bytes = &bytes[n..];
    }
    out
}

/// The library name from `#!lua name=NAME` on the code's first line.
pub fn library_name(code: &[u8]) -> &[u8] {
    let line = code.split(|&b| b == b'\n').next().unwrap_or_default();
    line.split(|&b| b == b' ')
        .find_map(|w| w.strip_prefix(b"name="))
        .unwrap_or(b"?")
}
