//! Units that gather many entries: strings without TTL into one `MSET`/`MSETNX`, and AOF
//! commands into `MULTI`/`EXEC` groups with a marker (so a resend never doubles them).

use super::options::*;
use crate::resp::write_command;
use crate::sink::writer::{Marker, Unit, UnitKind, marker_value};

/// Most keys, and bytes, in one `MSET`.
pub(crate) const MSET_KEYS: usize = 512;

pub(crate) const MSET_BYTES: usize = 1 << 20;

/// Strings without TTL gathered into one `MSET` (`MSETNX` with `--on-conflict fail|skip`):
/// one command for many keys costs the target far less than a `SET` each. When `MSETNX`
/// sets nothing (a key exists), the writer sends its keys again one by one as `SET NX`, so
/// each conflict is told apart.
pub(crate) struct MsetGroup {
    nx: bool,
    db: u64,
    body: Vec<u8>,
    first: Vec<u8>,
    n: usize,
    /// Hashes of the keys in the group: a key seen twice (an input with a duplicated key)
    /// starts a new group, or `MSETNX` would set the second value over the first unseen.
    keys: std::collections::HashSet<u64>,
}

impl MsetGroup {
    pub(crate) fn new(nx: bool) -> MsetGroup {
        MsetGroup {
            nx,
            db: 0,
            body: Vec::new(),
            first: Vec::new(),
            n: 0,
            keys: Default::default(),
        }
    }

    /// Add a key; the group so far when it is full or of another db.
    pub(crate) fn push(&mut self, db: u64, key: &[u8], value: &[u8]) -> Option<Unit> {
        let h = route(db, key);
        let out = if self.n > 0 && (db != self.db || self.keys.contains(&h)) {
            self.take()
        } else {
            None
        };
        self.keys.insert(h);
        if self.n == 0 {
            self.db = db;
            self.first = key.to_vec();
        }
        for a in [key, value] {
            self.body.push(b'$');
            self.body
                .extend_from_slice(itoa::Buffer::new().format(a.len()).as_bytes());
            self.body.extend_from_slice(b"\r\n");
            self.body.extend_from_slice(a);
            self.body.extend_from_slice(b"\r\n");
        }
        self.n += 1;
        if out.is_none() && (self.n >= MSET_KEYS || self.body.len() >= MSET_BYTES) {
            return self.take();
        }
        out
    }

    /// The group as one unit.
    pub(crate) fn take(&mut self) -> Option<Unit> {
        if self.n == 0 {
            return None;
        }
        let name: &[u8] = if self.nx { b"MSETNX" } else { b"MSET" };
        let mut bytes = Vec::with_capacity(self.body.len() + 32);
        bytes.push(b'*');
        bytes.extend_from_slice(itoa::Buffer::new().format(self.n * 2 + 1).as_bytes());
        bytes.extend_from_slice(b"\r\n$");
        bytes.extend_from_slice(itoa::Buffer::new().format(name.len()).as_bytes());
        bytes.extend_from_slice(b"\r\n");
        bytes.extend_from_slice(name);
        bytes.extend_from_slice(b"\r\n");
        bytes.append(&mut self.body);
        let route = route(self.db, &self.first);
        let mut u = Unit::new(
            self.db,
            std::mem::take(&mut self.first),
            bytes,
            1,
            UnitKind::MultiSet { nx: self.nx },
            route,
        );
        u.count = self.n as u64;
        self.n = 0;
        self.keys.clear();
        Some(u)
    }
}

/// A number for this import, in the markers it writes, so that markers left by an earlier
/// import that was cut off are never taken for ours.
pub(crate) fn import_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 40)
}

/// The key the marker of AOF command groups lives under (one per db).
pub const AOF_MARKER: &[u8] = b"rdbferry:import-marker";

/// Most AOF commands in one group (one `MULTI`/`EXEC`), and most bytes, unless a
/// transaction of the AOF is longer: it is never split.
pub(crate) const GROUP_COMMANDS: u64 = 256;

pub(crate) const GROUP_BYTES: usize = 1 << 20;

/// AOF commands gathered into one `MULTI`/`EXEC` with a marker, so that a group sent again
/// after a dropped connection runs at most once (see `sink::writer`). The AOF's own
/// transactions lose their `MULTI`/`EXEC` and are kept whole inside one group.
pub(crate) struct AofGroup {
    run: u64,
    seq: u64,
    /// The db the group starts (and ends) in, and the one selected inside it.
    db: u64,
    cur: u64,
    bytes: Vec<u8>,
    count: u64,
    replies: usize,
    label: Vec<u8>,
    in_tx: bool,
    /// On a Cluster: the slot of the group's commands (a group never spans two).
    cluster: bool,
    slot: Option<u16>,
}

impl AofGroup {
    pub(crate) fn new(run: u64, cluster: bool) -> AofGroup {
        AofGroup {
            cluster,
            slot: None,
            run,
            seq: 0,
            db: 0,
            cur: 0,
            bytes: Vec::new(),
            count: 0,
            replies: 0,
            label: Vec::new(),
            in_tx: false,
        }
    }

    /// Add a command for target db `db`; false for the AOF's MULTI/EXEC (dropped).
    pub(crate) fn push(&mut self, db: u64, args: &[&[u8]]) -> bool {
        let name = args.first().copied().unwrap_or_default();
        if name.eq_ignore_ascii_case(b"MULTI") {
            self.in_tx = true;
            return false;
        }
        if name.eq_ignore_ascii_case(b"EXEC") {
            self.in_tx = false;
            return false;
        }
        if self.count == 0 {
            self.bytes.clear();
            write_command(&mut self.bytes, &[b"MULTI"]);
            self.replies = 1;
            self.db = db;
            self.cur = db;
            self.label = args.iter().take(2).copied().collect::<Vec<_>>().join(&b' ');
        }
        if db != self.cur {
            write_command(&mut self.bytes, &[b"SELECT", db.to_string().as_bytes()]);
            self.replies += 1;
            self.cur = db;
        }
        write_command(&mut self.bytes, args);
        self.replies += 1;
        self.count += 1;
        true
    }

    /// On a Cluster, before a command of slot `slot`: the group so far, when it was of
    /// another slot. (A transaction of the AOF whose keys span slots cannot run on a Cluster
    /// as one: it is split there.)
    pub(crate) fn switch_slot(&mut self, slot: u16) -> Option<Unit> {
        let out = if self.count > 0 && self.slot != Some(slot) {
            if self.in_tx {
                tracing::warn!("an AOF transaction spans Cluster slots: applied in parts");
            }
            let in_tx = self.in_tx;
            let u = self.take(true);
            self.in_tx = in_tx;
            u
        } else {
            None
        };
        self.slot = Some(slot);
        out
    }

    /// The marker key: one per db, or per slot on a Cluster.
    pub(crate) fn marker_key(&self) -> Vec<u8> {
        match (self.cluster, self.slot.and_then(crate::keyslot::slot_tag)) {
            (true, Some(tag)) => [AOF_MARKER, b":{", tag.as_bytes(), b"}"].concat(),
            _ => AOF_MARKER.to_vec(),
        }
    }

    /// The group as a unit when it is full (or `end`), never inside a transaction.
    pub(crate) fn take(&mut self, end: bool) -> Option<Unit> {
        if self.count == 0
            || self.in_tx && !end
            || !end && self.count < GROUP_COMMANDS && self.bytes.len() < GROUP_BYTES
        {
            return None;
        }
        if self.cur != self.db {
            write_command(
                &mut self.bytes,
                &[b"SELECT", self.db.to_string().as_bytes()],
            );
            self.replies += 1;
        }
        self.seq += 1;
        let value = marker_value(self.run, self.seq);
        let marker = self.marker_key();
        write_command(&mut self.bytes, &[b"SET", &marker, value.as_bytes()]);
        write_command(&mut self.bytes, &[b"EXEC"]);
        let mut u = Unit::new(
            self.db,
            std::mem::take(&mut self.label),
            std::mem::take(&mut self.bytes),
            self.replies + 2,
            UnitKind::Commands,
            0,
        );
        u.count = self.count;
        u.slot = self.slot;
        u.marker = Some(Marker {
            key: marker,
            run: self.run,
            seq: self.seq,
        });
        self.count = 0;
        self.replies = 0;
        self.in_tx = false;
        Some(u)
    }
}
