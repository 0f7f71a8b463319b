//! The pipelined writer behind `import`, and how it survives a target that drops the
//! connection, restarts or is busy.
//!
//! The job (`job::import`) turns each input entry into a [`Unit`]: the encoded commands that
//! write one key, one part of a big key, a group of AOF commands or one function library,
//! and how to read their replies. [`Writer`] sends units over `--connections` connections,
//! each run by one thread that keeps up to [`WINDOW`] batches of up to `--pipeline` commands
//! in flight (it writes the next batch while the target works on the previous one), and
//! maps every reply back to its unit, so an error names its key. One key always goes to the
//! same connection, so the commands of a key are applied in order.
//!
//! Faults. A unit stays in memory until its replies are read. When the connection drops (or
//! a read times out), the thread reconnects with backoff for up to `--retry-timeout`, makes
//! sure the old connection is gone on the target (`CLIENT KILL ID`), and sends every unit
//! not yet acknowledged again, one at a time, in order. Sending again must never double
//! anything, so every unit is idempotent or tells whether it already ran:
//! - `RESTORE ... REPLACE`, `SET` and the rewrite path with `RENAME` (the key is rebuilt
//!   under a temporary name, `DEL tmp` first) give the same result when run twice.
//! - With `--on-conflict fail|skip` (`RESTORE` without `REPLACE`, `SET NX`, `RENAMENX`,
//!   `FUNCTION LOAD`), a second run finds the key that the first run wrote. Such a conflict
//!   after a resend is checked: the value is built again under the temporary name and
//!   compared with the key on the target (`DUMP` of both, in one script); the same value
//!   means the first run wrote it.
//! - Non-idempotent units (parts of a big key, which append; AOF commands such as `INCR`
//!   or `RPUSH`) run inside `MULTI`/`EXEC` together with `SET marker seq`; before sending
//!   one again, the thread reads the marker and skips the unit when it already ran.
//!
//! Replies that mean "not now" (`LOADING`, `BUSY`, `TRYAGAIN`, `MASTERDOWN`, `CLUSTERDOWN`)
//! are sent again with backoff. A target that restarted (its `run_id` changed) keeps the
//! import going only when it writes every command to disk before answering (`appendonly
//! yes`, `appendfsync always`); otherwise keys acknowledged before the restart may be gone,
//! and the import stops with an error saying so.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::keyslot::key_slot;
use crate::keyslot::tmp_key_for as tmp_key;
use crate::net::cluster::{NodeAddr, Redirect, SlotMap, parse_redirect};
use crate::net::error::transient_reply;
use crate::net::{Conn, NetError, RedisUrl};
use crate::resp::{Reply, parse_command, write_command};
use crate::text::quoted as show;

/// Batches written and not yet read, per connection.
pub const WINDOW: usize = 2;

/// Most bytes gathered into one batch.
const BATCH_BYTES: usize = 4 << 20;

/// Most bytes of queued units, over all connections.
const QUEUE_BYTES: usize = 16 << 20;

/// Most error messages kept.
pub const MAX_MESSAGES: usize = 100;

/// Compares two keys in one slot by value: `1` when their `DUMP`s are equal. Deletes the
/// second (the temporary key).
const SAME_VALUE: &str = "local a = redis.call('DUMP', KEYS[1]) \
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
fn marker_passed(value: &[u8], m: &Marker) -> bool {
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

/// Counters the writer threads share with the job.
#[derive(Debug, Default, Clone)]
pub struct WriteStats {
    /// Entries (keys, AOF commands, libraries) written.
    pub written: u64,
    /// Conflicts (left alone).
    pub conflicts: u64,
    /// Entries refused.
    pub errors: u64,
    /// Commands sent (including MULTI/EXEC and SELECT).
    pub commands: u64,
    /// Units sent again after a dropped connection or a "not now" reply.
    pub resent: u64,
    /// Reconnections.
    pub reconnects: u64,
    /// Connections opened.
    pub connections: u64,
    /// Possible losses the target did not report (a failover during the import).
    pub warnings: Vec<String>,
    /// The first error messages, each naming its key.
    pub messages: Vec<String>,
}

/// What the writer does on a conflict: the job decides (`--on-conflict`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictRule {
    /// A conflict is an error.
    Fail,
    /// A conflict is counted and the key left alone.
    Skip,
    /// Conflicts cannot happen (REPLACE / RENAME).
    Replace,
}

/// Writer options.
#[derive(Debug, Clone, Copy)]
pub struct WriterOptions {
    /// Connections.
    pub connections: usize,
    /// Commands in flight per connection.
    pub pipeline: usize,
    /// What a conflict is.
    pub conflict: ConflictRule,
    /// Stop everything at the first refused unit.
    pub stop_on_error: bool,
    /// How long to keep reconnecting (and resending "not now" replies) before giving up.
    pub retry_for: Duration,
}

enum Msg {
    Unit(Unit),
    Barrier(SyncSender<()>),
}

struct Shared {
    stats: Mutex<WriteStats>,
    stop: AtomicBool,
    fatal: Mutex<Option<Error>>,
    /// Keys sent in parts and not finished (the import stopped): their temporary keys are
    /// deleted by [`Writer::finish`].
    abandoned: Mutex<Vec<(u64, Vec<u8>)>>,
    /// Marker keys written, deleted by [`Writer::finish`].
    markers: Mutex<HashSet<(u64, Vec<u8>)>>,
    /// Bytes of units queued and not yet written, and its wake-up.
    queued: Mutex<usize>,
    drained: std::sync::Condvar,
    /// Each node's `run_id` when we last checked (None: INFO refused).
    run_ids: Mutex<HashMap<NodeAddr, Option<String>>>,
    topo: Topology,
}

/// Pipelined writer over several connections, each run by one thread. Units are queued to
/// it through a bounded channel (so a slow target slows the input down, and memory stays
/// bounded).
pub struct Writer {
    senders: Vec<SyncSender<Msg>>,
    threads: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
    retry_for: Duration,
}

impl Writer {
    /// Open the writer on `url`: `opts.connections` lanes on a standalone target, that
    /// many per master on a Cluster (`cluster`: its slot map).
    pub fn open(url: &RedisUrl, opts: WriterOptions, cluster: Option<SlotMap>) -> Result<Writer> {
        let lanes =
            opts.connections.max(1) * cluster.as_ref().map_or(1, |m| m.masters().len().max(1));
        let shared = Arc::new(Shared {
            stats: Mutex::new(WriteStats::default()),
            stop: AtomicBool::new(false),
            fatal: Mutex::new(None),
            abandoned: Mutex::new(Vec::new()),
            markers: Mutex::new(HashSet::new()),
            queued: Mutex::new(0),
            drained: std::sync::Condvar::new(),
            run_ids: Mutex::new(HashMap::new()),
            topo: Topology {
                seed: url.clone(),
                cluster: cluster.map(RwLock::new),
            },
        });
        let mut senders = Vec::new();
        let mut threads = Vec::new();
        for _ in 0..lanes {
            let (tx, rx) = sync_channel::<Msg>(opts.pipeline.max(1) * 2);
            let mut link = Link::new(shared.clone(), opts);
            if shared.topo.cluster.is_none() {
                // Standalone: connect now, so a refused connection fails the import at once.
                let node = NodeAddr::new(url.host.clone(), url.port);
                let c = Conn::open(url)?;
                link.attach(&node, c).map_err(|f| match f {
                    Fail::Link(e) | Fail::Fatal(e) => e,
                })?;
            }
            threads.push(std::thread::spawn(move || link.run(rx)));
            senders.push(tx);
        }
        Ok(Writer {
            senders,
            threads,
            shared,
            retry_for: opts.retry_for,
        })
    }

    /// Whether the writer has stopped (a fatal error, or an error with `--on-error stop`).
    pub fn stopped(&self) -> bool {
        self.shared.stop.load(Ordering::Relaxed)
    }

    /// Queue a unit on its connection.
    pub fn send(&self, unit: Unit) -> Result<()> {
        let i = (unit.route % self.senders.len() as u64) as usize;
        // Bound the bytes waiting in the queues (not just the number of units): a big key
        // comes as many multi-megabyte parts. One unit always passes an empty queue.
        let n = unit.bytes.len();
        if let Ok(mut q) = self.shared.queued.lock() {
            while *q > 0 && *q + n > QUEUE_BYTES && !self.stopped() {
                match self
                    .shared
                    .drained
                    .wait_timeout(q, Duration::from_millis(100))
                {
                    Ok((g, _)) => q = g,
                    Err(_) => return Err(self.stop_error()),
                }
            }
            *q += n;
        }
        if self.stopped() || self.senders[i].send(Msg::Unit(unit)).is_err() {
            return Err(self.stop_error());
        }
        Ok(())
    }

    fn stop_error(&self) -> Error {
        if let Ok(mut f) = self.shared.fatal.lock()
            && let Some(e) = f.take()
        {
            return e;
        }
        Error::Stopped
    }

    /// Wait until everything queued so far has been acknowledged by the target (before
    /// switching from parallel keys to ordered AOF commands).
    pub fn barrier(&self) -> Result<()> {
        let mut waits = Vec::new();
        for s in &self.senders {
            let (tx, rx) = sync_channel(1);
            if s.send(Msg::Barrier(tx)).is_err() {
                return Err(self.stop_error());
            }
            waits.push(rx);
        }
        for w in waits {
            let _ = w.recv();
        }
        if self.stopped() {
            return Err(self.stop_error());
        }
        Ok(())
    }

    /// A copy of the counters so far.
    pub fn stats(&self) -> WriteStats {
        self.shared
            .stats
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Drain and close every connection, delete markers and the temporary keys of keys left
    /// unfinished; returns the counters, and the fatal error if a connection failed.
    pub fn finish(mut self) -> (WriteStats, Option<Error>) {
        self.senders.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let mut fatal = self.shared.fatal.lock().ok().and_then(|mut f| f.take());
        let take = |m: &Mutex<Vec<(u64, Vec<u8>)>>| {
            m.lock()
                .map(|mut a| std::mem::take(&mut *a))
                .unwrap_or_default()
        };
        let mut keys: Vec<(u64, Vec<u8>)> = take(&self.shared.abandoned)
            .into_iter()
            .map(|(db, k)| (db, tmp_key(&k)))
            .collect();
        if let Ok(mut m) = self.shared.markers.lock() {
            keys.extend(m.drain());
        }
        if !keys.is_empty()
            && let Err(e) = delete_keys(&self.shared.topo, &keys, self.retry_for, "temporary key")
            && fatal.is_none()
        {
            fatal = Some(e);
        }
        (self.stats(), fatal)
    }

    /// A key sent in parts will not be finished: its temporary key is deleted at the end.
    pub fn abandon(&self, db: u64, key: Vec<u8>) {
        if let Ok(mut a) = self.shared.abandoned.lock() {
            a.push((db, key));
        }
    }
}

/// The target's `run_id` (None when INFO is refused).
fn run_id(c: &mut Conn) -> Result<Option<String>> {
    Ok(match c.call(&[b"INFO", b"server"])? {
        Reply::Bulk(b) => String::from_utf8_lossy(&b)
            .lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .map(|s| s.trim().to_string()),
        _ => None,
    })
}

/// Open a connection, retrying while the target cannot be reached or is loading.
fn open_retrying(url: &RedisUrl, retry_for: Duration) -> Result<Conn> {
    let deadline = Instant::now() + retry_for;
    let mut delay = Duration::from_millis(100);
    loop {
        match Conn::open(url) {
            Ok(c) => return Ok(c),
            Err(e) if e.is_transient() && Instant::now() < deadline => {
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Delete keys (db, name) over connections of their own (to each key's node).
fn delete_keys(
    topo: &Topology,
    keys: &[(u64, Vec<u8>)],
    retry_for: Duration,
    what: &str,
) -> Result<()> {
    let mut conns: HashMap<NodeAddr, Conn> = HashMap::new();
    let mut seen = HashSet::new();
    for (db, key) in keys {
        if !seen.insert((db, key)) {
            continue;
        }
        let Some(node) = topo.node_for_key(key, None) else {
            return Err(Error::Target {
                target: topo.seed.addr(),
                msg: format!(
                    "cannot delete the {what} {}: its slot has no owner",
                    show(key)
                ),
            });
        };
        let c = match conns.entry(node) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let url = topo.url_of(e.key());
                e.insert(open_retrying(&url, retry_for)?)
            }
        };
        for args in [&[b"SELECT", db.to_string().as_bytes()][..], &[b"DEL", key]] {
            if let Reply::Error(e) = c.call(args)? {
                return Err(Error::target(
                    c.name(),
                    format!(
                        "cannot delete the {what} {}: {}",
                        show(key),
                        String::from_utf8_lossy(&e)
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn set_fatal(sh: &Shared, e: Error) {
    if let Ok(mut f) = sh.fatal.lock()
        && f.is_none()
    {
        *f = Some(e);
    }
    sh.stop.store(true, Ordering::Relaxed);
}

/// A node that restarted lost what it had not written to disk: going on is only safe when
/// it writes every command to disk before answering.
fn check_restart(sh: &Shared, node: &NodeAddr, conn: &mut Conn) -> Result<(), Fail> {
    let now = run_id(conn)?;
    let mut ids = sh
        .run_ids
        .lock()
        .map_err(|_| Fail::Fatal(Error::Internal("writer state poisoned".into())))?;
    let before = match ids.get(node) {
        None => {
            ids.insert(node.clone(), now);
            return Ok(());
        }
        Some(b) => b.clone(),
    };
    let (Some(before), Some(now)) = (before, now) else {
        return Ok(());
    };
    if before == now {
        return Ok(());
    }
    let get = |c: &mut Conn, name: &[u8]| -> Result<String> {
        Ok(match c.call(&[b"CONFIG", b"GET", name])? {
            Reply::Array(a) => a
                .get(1)
                .and_then(|r| r.as_bytes())
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default(),
            _ => String::new(),
        })
    };
    let aof = get(conn, b"appendonly")?;
    let fsync = get(conn, b"appendfsync")?;
    if aof == "yes" && fsync == "always" {
        tracing::warn!(
            "{}: the target restarted; it writes every command to disk, continuing",
            conn.name()
        );
        ids.insert(node.clone(), Some(now));
        return Ok(());
    }
    Err(Fail::Fatal(Error::Target {
        target: conn.name().to_string(),
        msg: format!(
            "the target restarted during the import (run_id changed) and does not write \
             every command to disk before answering (appendonly {}, appendfsync {}): keys \
             it acknowledged before the restart may be lost. Run the import again \
             (--on-conflict replace), then `rdbferry verify`",
            if aof.is_empty() { "?" } else { &aof },
            if fsync.is_empty() { "?" } else { &fsync },
        ),
    }))
}

/// A failure of the connection (reconnect and resend) or of the import (stop).
enum Fail {
    Link(Error),
    Fatal(Error),
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        if e.is_transient() {
            Fail::Link(e)
        } else {
            Fail::Fatal(e)
        }
    }
}

impl From<NetError> for Fail {
    fn from(e: NetError) -> Fail {
        Fail::from(Error::from(e))
    }
}

/// A unit once its replies are read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Settled {
    Written,
    /// A conflict: "key" or "library".
    Exists(&'static str),
    Failed(String),
    /// Refused for now without effect: send it again later.
    Again(String),
    /// A Cluster node sent it elsewhere (`MOVED`, `ASK`): it did not run.
    Redirected(Redirect),
    /// AOF commands: how many ran, and the errors of the others.
    Group {
        ok: u64,
        errors: Vec<String>,
    },
    /// An `MSETNX` that set nothing (or a refused `MSET`): its keys go again one by one.
    Split,
}

/// Where units go: the one node of a standalone target, or the owner of each slot.
struct Topology {
    seed: RedisUrl,
    cluster: Option<RwLock<SlotMap>>,
}

impl Topology {
    /// The node a unit goes to (None: its slot has no owner).
    fn node_for(&self, u: &Unit) -> Option<NodeAddr> {
        self.node_for_key(&u.label, u.slot)
    }

    /// The node of `key` (of slot `slot` when known; None: the slot has no owner).
    fn node_for_key(&self, key: &[u8], slot: Option<u16>) -> Option<NodeAddr> {
        match &self.cluster {
            None => Some(NodeAddr::new(self.seed.host.clone(), self.seed.port)),
            Some(map) => {
                let map = map.read().ok()?;
                let i = map.owner(slot.unwrap_or_else(|| key_slot(key)))?;
                map.masters().get(i).cloned()
            }
        }
    }

    fn url_of(&self, n: &NodeAddr) -> RedisUrl {
        match &self.cluster {
            None => self.seed.clone(),
            Some(_) => n.url(&self.seed),
        }
    }

    /// Ask the cluster for its slot map again (after `MOVED` or a lost node).
    fn refresh(&self) -> Result<()> {
        let Some(map) = &self.cluster else {
            return Ok(());
        };
        let current = map
            .read()
            .map_err(|_| Error::Internal("slot map poisoned".into()))?
            .clone();
        let fresh = current.refresh(&self.seed)?;
        if let Ok(mut m) = map.write() {
            *m = fresh;
        }
        Ok(())
    }

    /// The node of a redirection (an empty host is the seed's).
    fn redirect_node(&self, r: &Redirect) -> NodeAddr {
        let a = r.addr();
        if a.host.is_empty() || a.host == "?" {
            NodeAddr::new(self.seed.host.clone(), a.port)
        } else {
            a.clone()
        }
    }
}

/// A written batch whose replies are not all read.
struct Batch {
    units: Vec<Unit>,
    /// The node each unit was written to.
    nodes: Vec<NodeAddr>,
    /// The first unit not settled.
    next: usize,
    barriers: Vec<SyncSender<()>>,
}

/// One open connection of a lane.
struct NodeConn {
    conn: Conn,
    /// `CLIENT ID` (to end the connection on the target after we lost it).
    id: Option<i64>,
    /// The db selected.
    db: Option<u64>,
}

/// One lane of units: a thread with a connection to each node it writes to, and the units
/// in flight on them. A key always goes to the same lane.
struct Link {
    sh: Arc<Shared>,
    opts: WriterOptions,
    conns: HashMap<NodeAddr, NodeConn>,
    /// `CLIENT ID`s of connections we lost, ended when we reconnect to that node.
    lost: HashMap<NodeAddr, i64>,
    inflight: VecDeque<Batch>,
    /// Units refused "for now" or redirected, sent again (in order) once nothing is in
    /// flight.
    again: VecDeque<(Unit, Option<Redirect>)>,
    /// Keys sent in parts whose earlier part failed.
    failed: HashSet<(u64, Vec<u8>)>,
    outs: HashMap<NodeAddr, Vec<u8>>,
    /// Units to write before taking more from the queue (the keys of a split `MSETNX`).
    pending: VecDeque<Unit>,
}

/// What [`Link::resend_one`] sends.
enum Step<'a> {
    Unit(&'a Unit),
    Args(&'a [&'a [u8]]),
}

impl Link {
    fn new(sh: Arc<Shared>, opts: WriterOptions) -> Link {
        Link {
            sh,
            opts,
            conns: HashMap::new(),
            lost: HashMap::new(),
            inflight: VecDeque::new(),
            again: VecDeque::new(),
            failed: HashSet::new(),
            outs: HashMap::new(),
            pending: VecDeque::new(),
        }
    }

    fn topo(&self) -> &Topology {
        &self.sh.topo
    }

    /// Start using `c` for `node`: read timeout, `CLIENT ID`, restart check, and the end of
    /// the connection it replaces.
    fn attach(&mut self, node: &NodeAddr, mut c: Conn) -> Result<(), Fail> {
        let id = match c.call(&[b"CLIENT", b"ID"])? {
            Reply::Integer(n) => Some(n),
            _ => None,
        };
        check_restart(&self.sh, node, &mut c)?;
        if let Some(old) = self.lost.remove(node) {
            // The old connection may still have commands in the target's buffers: end it
            // first, or they could run after (and double) what we send again.
            let old = old.to_string();
            let _ = c.call(&[b"CLIENT", b"KILL", b"ID", old.as_bytes()])?;
        }
        self.conns.insert(
            node.clone(),
            NodeConn {
                conn: c,
                id,
                db: None,
            },
        );
        Ok(())
    }

    /// The connection to `node`, opened if needed.
    fn conn_to(&mut self, node: &NodeAddr) -> Result<&mut NodeConn, Fail> {
        if !self.conns.contains_key(node) {
            let url = self.topo().url_of(node);
            let c = Conn::open(&url)?;
            self.attach(node, c)?;
            if let Ok(mut st) = self.sh.stats.lock() {
                st.connections += 1;
            }
        }
        self.conns
            .get_mut(node)
            .ok_or_else(|| Fail::Link(Error::Internal("connection vanished".into())))
    }

    /// Drop every connection (their ids are ended on reconnect).
    fn drop_all(&mut self) {
        for (n, c) in self.conns.drain() {
            if let Some(id) = c.id {
                self.lost.insert(n, id);
            }
        }
    }

    fn stopped(&self) -> bool {
        self.sh.stop.load(Ordering::Relaxed)
    }

    fn fatal(&self, e: Error) {
        set_fatal(&self.sh, e);
    }

    /// The thread's loop: write batches while fewer than [`WINDOW`] are in flight, read the
    /// oldest otherwise; recover from faults; drain when stopped.
    fn run(mut self, rx: Receiver<Msg>) {
        let mut open = true;
        // A unit that must wait until nothing is in flight.
        let mut held: Option<Msg> = None;
        loop {
            if self.stopped() {
                if let Some(Msg::Unit(u)) = held.take() {
                    self.again.push_back((u, None));
                }
                self.drain_stopped(&rx);
                return;
            }
            if !self.again.is_empty() && self.inflight.is_empty() {
                let units: Vec<(Unit, Option<Redirect>)> = self.again.drain(..).collect();
                self.resend_units(units);
                continue;
            }
            let ready = match held {
                Some(_) => self.inflight.is_empty(),
                None => open && self.inflight.len() < WINDOW,
            };
            if ready && self.again.is_empty() {
                let m = match held.take() {
                    Some(m) => Some(m),
                    None => match self.pending.pop_front() {
                        Some(u) => Some(Msg::Unit(u)),
                        None if self.inflight.is_empty() => rx.recv().ok(),
                        None => rx.try_recv().ok(),
                    },
                };
                match m {
                    Some(m) => {
                        if let Some(h) = self.write_batch(m, &rx) {
                            held = Some(h);
                        }
                        continue;
                    }
                    None if self.inflight.is_empty() => open = false,
                    None => {}
                }
            }
            if self.inflight.is_empty() {
                if !open && self.again.is_empty() && held.is_none() && self.pending.is_empty() {
                    return;
                }
                if !open && !self.pending.is_empty() {
                    // The queue is closed: write what is pending.
                    if let Some(u) = self.pending.pop_front()
                        && let Some(h) = self.write_batch(Msg::Unit(u), &rx)
                    {
                        held = Some(h);
                    }
                }
                continue;
            }
            self.read_front();
        }
    }

    /// Gather queued messages into one batch (up to `--pipeline` commands) and write it.
    /// An ordered unit (a part of a big key, a group of AOF commands) is only written when
    /// nothing is in flight, so one refused "for now" can never be overtaken by the next:
    /// returns it when it has to wait.
    fn write_batch(&mut self, first: Msg, rx: &Receiver<Msg>) -> Option<Msg> {
        let mut batch = Batch {
            units: Vec::new(),
            nodes: Vec::new(),
            next: 0,
            barriers: Vec::new(),
        };
        let mut cmds = 0usize;
        let mut taken = 0usize;
        let mut bytes = 0usize;
        let mut held = None;
        let mut diverted = false;
        let mut next = Some(first);
        while let Some(m) = next.take() {
            match m {
                Msg::Unit(u) => {
                    // Parts of a big key are pipelined on a standalone target (a part refused
                    // "for now" there fails its key, see `read_front`); on a Cluster, where
                    // MOVED and ASK are routine, they go one at a time like AOF groups.
                    let ordered = match u.kind {
                        UnitKind::Commands => true,
                        UnitKind::Part { .. } => self.topo().cluster.is_some(),
                        _ => false,
                    };
                    if ordered && (!self.inflight.is_empty() || !batch.units.is_empty()) {
                        held = Some(Msg::Unit(u));
                        break;
                    }
                    taken += u.bytes.len();
                    if let Some(m) = &u.marker
                        && let Ok(mut set) = self.sh.markers.lock()
                    {
                        set.insert((u.db, m.key.clone()));
                    }
                    // Once a unit waits, the ones after it wait too (order).
                    let node = match self.topo().node_for(&u) {
                        Some(n) if !diverted => n,
                        _ => {
                            diverted = true;
                            self.again.push_back((u, None));
                            continue;
                        }
                    };
                    // A db switch is never pipelined ahead of a unit: a SELECT refused as
                    // BUSY could be followed by the unit running, once the server is free, in
                    // the old db. So the unit waits until nothing is in flight, and SELECT
                    // is sent alone and answered first.
                    let idle = self.inflight.is_empty() && batch.units.is_empty();
                    let selected = match self.conn_to(&node) {
                        Ok(c) if c.db == Some(u.db) => Ok(()),
                        Ok(_) if !idle => {
                            // Counted again when it is taken.
                            taken -= u.bytes.len();
                            held = Some(Msg::Unit(u));
                            break;
                        }
                        Ok(_) => self.select(&node, u.db),
                        Err(e) => Err(e),
                    };
                    if selected.is_err() {
                        // Refused or lost: the one-at-a-time path connects, selects and
                        // retries.
                        diverted = true;
                        self.again.push_back((u, None));
                        continue;
                    }
                    let out = self.outs.entry(node.clone()).or_default();
                    cmds += u.replies;
                    out.extend_from_slice(&u.bytes);
                    bytes += u.bytes.len();
                    batch.nodes.push(node);
                    batch.units.push(u);
                    if ordered {
                        break;
                    }
                }
                Msg::Barrier(b) => batch.barriers.push(b),
            }
            if cmds < self.opts.pipeline && bytes < BATCH_BYTES {
                next = match self.pending.pop_front() {
                    Some(u) => Some(Msg::Unit(u)),
                    None => rx.try_recv().ok(),
                };
            }
        }
        if let Ok(mut q) = self.sh.queued.lock() {
            *q = q.saturating_sub(taken);
            self.sh.drained.notify_all();
        }
        let mut res = Ok(());
        let outs = std::mem::take(&mut self.outs);
        for (node, out) in &outs {
            if out.is_empty() {
                continue;
            }
            if let Some(c) = self.conns.get_mut(node)
                && let Err(e) = c.conn.send(out)
            {
                res = Err(e);
                break;
            }
        }
        self.outs = outs;
        for out in self.outs.values_mut() {
            out.clear();
            if out.capacity() > BATCH_BYTES * 2 {
                *out = Vec::new();
            }
        }
        self.inflight.push_back(batch);
        if let Err(e) = res {
            self.link_failed(e.into());
        }
        held
    }

    /// Read the replies of the oldest batch and settle its units.
    fn read_front(&mut self) {
        let mut replies = Vec::new();
        loop {
            let Some(b) = self.inflight.front_mut() else {
                return;
            };
            if b.next >= b.units.len() {
                break;
            }
            let i = b.next;
            let Some(nc) = self.conns.get_mut(&b.nodes[i]) else {
                let target = b.nodes[i].to_string();
                self.link_failed(Error::Target {
                    target,
                    msg: "connection closed by the target".into(),
                });
                return;
            };
            let read = (|| -> Result<()> {
                replies.clear();
                for _ in 0..b.units[i].replies {
                    replies.push(nc.conn.read_reply()?);
                }
                Ok(())
            })();
            if let Err(e) = read {
                match Fail::from(e) {
                    Fail::Link(e) => self.link_failed(e),
                    Fail::Fatal(e) => self.fatal(e),
                }
                return;
            }
            let commands = replies.len() as u64;
            b.next += 1;
            if let Ok(mut st) = self.sh.stats.lock() {
                st.commands += commands;
            }
            let mut s = settle(&b.units[i], &replies);
            if let (Settled::Again(msg), UnitKind::Part { .. }, None) =
                (&s, b.units[i].kind, &self.sh.topo.cluster)
            {
                // Later parts of the key may already have run: the key cannot be finished
                // in order, so it fails (named, its half-built state removed).
                s = Settled::Failed(format!(
                    "{msg}: refused in the middle of the key, whose later parts were already \
                     sent; the key was not imported"
                ));
            }
            match s {
                Settled::Again(_) | Settled::Redirected(_) => {
                    let redirect = match s {
                        Settled::Redirected(r) => Some(r),
                        _ => None,
                    };
                    let mut u = b.units[i].clone_meta();
                    u.bytes = std::mem::take(&mut b.units[i].bytes);
                    self.again.push_back((u, redirect));
                }
                Settled::Split => {
                    let units = split_mset(&b.units[i]);
                    self.pending.extend(units);
                }
                s => {
                    let u = b.units[i].clone_meta();
                    self.apply(&u, s, &replies);
                }
            }
        }
        if let Some(b) = self.inflight.pop_front() {
            for t in b.barriers {
                let _ = t.send(());
            }
        }
    }

    /// A connection failed: drop them all and send again, one at a time, what was not
    /// acknowledged.
    fn link_failed(&mut self, e: Error) {
        tracing::warn!("{e}; reconnecting");
        self.drop_all();
        let mut units = Vec::new();
        let mut barriers = Vec::new();
        for b in self.inflight.drain(..) {
            for (i, u) in b.units.into_iter().enumerate() {
                if i >= b.next {
                    units.push((u, None));
                }
            }
            barriers.extend(b.barriers);
        }
        units.extend(self.again.drain(..));
        self.resend_units(units);
        for t in barriers {
            let _ = t.send(());
        }
    }

    /// Send units again one at a time, in order, each so that it cannot run twice;
    /// reconnecting with backoff (and refreshing the slot map) as needed. Stops the import
    /// when it cannot within `--retry-timeout`.
    fn resend_units(&mut self, units: Vec<(Unit, Option<Redirect>)>) {
        let deadline = Instant::now() + self.opts.retry_for;
        let mut delay = Duration::from_millis(100);
        let mut units: VecDeque<(Unit, Option<Redirect>)> = units.into();
        while let Some((u, hint)) = units.front() {
            if self.stopped() {
                for (u, _) in units.drain(..) {
                    self.again.push_back((u, None));
                }
                return;
            }
            match self.resend_one(u, hint.clone(), deadline) {
                Ok((Settled::Split, _)) => {
                    // Its keys, each sent (and checked) again.
                    let (u, _) = units.pop_front().expect("front unit");
                    for s in split_mset(&u).into_iter().rev() {
                        units.push_front((s, None));
                    }
                }
                Ok((s, replies)) => {
                    if let Ok(mut st) = self.sh.stats.lock() {
                        st.resent += 1;
                    }
                    let (u, _) = units.pop_front().expect("front unit");
                    self.apply(&u, s, &replies);
                    delay = Duration::from_millis(100);
                }
                Err(Fail::Fatal(e)) => {
                    self.fatal(e);
                }
                Err(Fail::Link(e)) => {
                    if Instant::now() >= deadline {
                        self.fatal(Error::Target {
                            target: self.topo().seed.addr(),
                            msg: format!(
                                "gave up after {} s of retries (--retry-timeout): {e}",
                                self.opts.retry_for.as_secs()
                            ),
                        });
                        continue;
                    }
                    tracing::warn!("{e}; retrying in {} ms", delay.as_millis());
                    self.drop_all();
                    if let Ok(mut st) = self.sh.stats.lock() {
                        st.reconnects += 1;
                    }
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(2));
                    // A node that is gone may have been replaced (failover).
                    let _ = self.topo().refresh();
                    self.note_failovers();
                    if let Some((_, hint)) = units.front_mut() {
                        *hint = None;
                    }
                }
            }
        }
    }

    /// After a refresh of the slot map: a node we wrote to that is no longer a master failed
    /// over. Its replica may lack writes it acknowledged (replication is asynchronous): the
    /// import goes on, and says so.
    fn note_failovers(&mut self) {
        let Some(map) = &self.topo().cluster else {
            return;
        };
        let masters: Vec<NodeAddr> = match map.read() {
            Ok(m) => m.masters().to_vec(),
            Err(_) => return,
        };
        let gone: Vec<NodeAddr> = self
            .lost
            .keys()
            .filter(|n| !masters.contains(n))
            .cloned()
            .collect();
        let Ok(mut st) = self.sh.stats.lock() else {
            return;
        };
        for n in gone {
            let w = format!(
                "{n} stopped being a master during the import (failover): writes it \
                 acknowledged just before may not have reached the replica that replaced it; \
                 run `rdbferry verify` (or the import again with --on-conflict replace)"
            );
            if !st.warnings.contains(&w) {
                tracing::warn!("{w}");
                st.warnings.push(w);
            }
        }
    }

    /// Send `step` to `node` (after `ASKING` when `ask`) and read `n` replies.
    fn exchange(
        &mut self,
        node: &NodeAddr,
        ask: bool,
        db: u64,
        step: Step<'_>,
        n: usize,
    ) -> Result<Vec<Reply>, Fail> {
        self.select(node, db)?;
        let nc = self.conn_to(node)?;
        if ask {
            nc.conn.call(&[b"ASKING"])?;
        }
        match step {
            Step::Unit(u) => nc.conn.send(&u.bytes)?,
            Step::Args(a) => {
                let mut b = Vec::new();
                write_command(&mut b, a);
                nc.conn.send(&b)?
            }
        }
        let mut replies = Vec::with_capacity(n);
        for _ in 0..n {
            replies.push(nc.conn.read_reply()?);
        }
        if let Ok(mut st) = self.sh.stats.lock() {
            st.commands += n as u64;
        }
        Ok(replies)
    }

    /// `SELECT db` on the connection to `node`, alone and answered, unless it is there already.
    /// The connection must have nothing in flight. A busy or loading target refuses SELECT
    /// too: that is "not now" (reconnect and resend), anything else stops the import.
    fn select(&mut self, node: &NodeAddr, db: u64) -> Result<(), Fail> {
        let nc = self.conn_to(node)?;
        if nc.db == Some(db) {
            return Ok(());
        }
        nc.db = None;
        if let Reply::Error(e) = nc.conn.call(&[b"SELECT", db.to_string().as_bytes()])? {
            let text = String::from_utf8_lossy(&e);
            return Err(if transient_reply(&e) {
                Fail::Link(Error::target(nc.conn.name(), text.into_owned()))
            } else {
                Fail::Fatal(Error::target(
                    nc.conn.name(),
                    format!("SELECT {db}: {text}"),
                ))
            });
        }
        nc.db = Some(db);
        if let Ok(mut st) = self.sh.stats.lock() {
            st.commands += 1;
        }
        Ok(())
    }

    /// Send a unit that may already have run, so that it cannot run twice; "not now" and
    /// redirections are followed until `deadline`.
    fn resend_one(
        &mut self,
        u: &Unit,
        hint: Option<Redirect>,
        deadline: Instant,
    ) -> Result<(Settled, Vec<Reply>), Fail> {
        let mut delay = Duration::from_millis(50);
        let mut redirect = hint;
        let retry_s = self.opts.retry_for.as_secs();
        loop {
            let wait = |msg: String, delay: &mut Duration| -> Option<Settled> {
                if Instant::now() >= deadline {
                    return Some(Settled::Failed(format!(
                        "{msg} (still so after {retry_s} s, --retry-timeout)"
                    )));
                }
                std::thread::sleep(*delay);
                *delay = (*delay * 2).min(Duration::from_secs(2));
                None
            };
            if matches!(redirect, Some(Redirect::Moved { .. })) {
                let _ = self.topo().refresh();
            }
            let (node, ask) = match &redirect {
                Some(r @ Redirect::Ask { .. }) => (self.topo().redirect_node(r), true),
                _ => match self.topo().node_for(u) {
                    Some(n) => (n, false),
                    None => {
                        let _ = self.topo().refresh();
                        let msg = format!("slot {} has no owner", u.slot.unwrap_or(0));
                        if let Some(s) = wait(msg, &mut delay) {
                            return Ok((s, Vec::new()));
                        }
                        continue;
                    }
                },
            };
            if let Some(m) = &u.marker {
                let r = self.exchange(&node, ask, u.db, Step::Args(&[b"GET", &m.key]), 1)?;
                if let Some(Reply::Bulk(v)) = r.first()
                    && marker_passed(v, m)
                {
                    // It ran (its replies are lost; errors inside it cannot be told).
                    let s = match u.kind {
                        UnitKind::Commands => Settled::Group {
                            ok: u.count,
                            errors: Vec::new(),
                        },
                        _ => Settled::Written,
                    };
                    return Ok((s, Vec::new()));
                }
            }
            let replies = self.exchange(&node, ask, u.db, Step::Unit(u), u.replies)?;
            match settle(u, &replies) {
                Settled::Redirected(r) => redirect = Some(r),
                Settled::Again(msg) => {
                    redirect = None;
                    if let Some(s) = wait(msg, &mut delay) {
                        return Ok((s, replies));
                    }
                }
                Settled::Exists(what) => {
                    let s = if self.same_value(u, &node, ask)? {
                        Settled::Written
                    } else {
                        Settled::Exists(what)
                    };
                    return Ok((s, replies));
                }
                s => return Ok((s, replies)),
            }
        }
    }

    /// After a resend found the key (or library) already there: whether it holds what this
    /// unit writes, i.e. the first send ran.
    fn same_value(&mut self, u: &Unit, node: &NodeAddr, ask: bool) -> Result<bool, Fail> {
        let cmds = commands_of(&u.bytes);
        let Some(first) = cmds.first() else {
            return Ok(false);
        };
        let one = |l: &mut Link, args: &[&[u8]]| -> Result<Reply, Fail> {
            let mut r = l.exchange(node, ask, u.db, Step::Args(args), 1)?;
            Ok(r.pop().unwrap_or(Reply::Nil))
        };
        match u.kind {
            UnitKind::Restore => {
                let (Some(key), Some(payload)) = (first.get(1), first.get(3)) else {
                    return Ok(false);
                };
                let tmp = tmp_key(key);
                if let Reply::Error(_) = one(self, &[b"RESTORE", &tmp, b"0", payload, b"REPLACE"])?
                {
                    return Ok(false);
                }
                let r = one(self, &[b"EVAL", SAME_VALUE.as_bytes(), b"2", key, &tmp])?;
                Ok(r == Reply::Integer(1))
            }
            UnitKind::Set { .. } => {
                let (Some(key), Some(value)) = (first.get(1), first.get(2)) else {
                    return Ok(false);
                };
                Ok(matches!(one(self, &[b"GET", key])?, Reply::Bulk(v) if v == *value))
            }
            UnitKind::Rewrite { nx: true, .. } => {
                // The unit without its RENAMENX and the DEL after it builds `tmp` only.
                let Some(at) = cmds.iter().position(|c| {
                    c.first()
                        .is_some_and(|n| n.eq_ignore_ascii_case(b"RENAMENX"))
                }) else {
                    return Ok(false);
                };
                let key = cmds[at].get(2).cloned().unwrap_or_default();
                let tmp = cmds[at].get(1).cloned().unwrap_or_default();
                let mut probe = Unit::new(u.db, u.label.clone(), Vec::new(), 0, u.kind, u.route);
                for (i, c) in cmds.iter().enumerate() {
                    if i == at || i == at + 1 {
                        continue;
                    }
                    let args: Vec<&[u8]> = c.iter().map(|a| a.as_slice()).collect();
                    write_command(&mut probe.bytes, &args);
                    probe.replies += 1;
                }
                self.exchange(node, ask, u.db, Step::Unit(&probe), probe.replies)?;
                let r = one(self, &[b"EVAL", SAME_VALUE.as_bytes(), b"2", &key, &tmp])?;
                Ok(r == Reply::Integer(1))
            }
            UnitKind::Function => {
                let code = first.last().cloned().unwrap_or_default();
                let name = library_name(&code).to_vec();
                let r = one(
                    self,
                    &[b"FUNCTION", b"LIST", b"LIBRARYNAME", &name, b"WITHCODE"],
                )?;
                Ok(contains_bulk(&r, &code))
            }
            _ => Ok(false),
        }
    }

    /// Count a settled unit, and clean up after failed keys.
    fn apply(&mut self, u: &Unit, s: Settled, replies: &[Reply]) {
        let mut cleanup = None;
        let outcome: Option<Settled> = match (u.kind, s) {
            (UnitKind::Part { last: false, .. }, Settled::Failed(msg)) => {
                // Counted once, at the first failed part; the last part settles the rest.
                if self.failed.insert((u.db, u.label.clone())) {
                    Some(Settled::Failed(msg))
                } else {
                    None
                }
            }
            (UnitKind::Part { last: false, .. }, _) => None,
            (UnitKind::Part { last: true, .. }, _)
                if self.failed.remove(&(u.db, u.label.clone())) =>
            {
                if renamed_into_place(u, replies) {
                    cleanup = Some((u.db, u.label.clone()));
                }
                None
            }
            (_, Settled::Failed(mut msg)) => {
                if renamed_into_place(u, replies) {
                    // An error inside EXEC (or between pipelined commands) does not undo the
                    // commands around it: the key was renamed into place half-built.
                    msg.push_str("; the half-built key was deleted");
                    cleanup = Some((u.db, u.label.clone()));
                }
                Some(Settled::Failed(msg))
            }
            (_, s) => Some(s),
        };
        if let Some(k) = cleanup
            && let Err(e) = delete_keys(&self.sh.topo, &[k], self.opts.retry_for, "half-built key")
        {
            self.fatal(e);
        }
        let Some(s) = outcome else { return };
        let Ok(mut st) = self.sh.stats.lock() else {
            return;
        };
        let what = match u.kind {
            UnitKind::Commands => "command",
            UnitKind::Function => "function library",
            _ => "key",
        };
        let error = |st: &mut WriteStats, label: &[u8], msg: String| {
            st.errors += 1;
            if st.messages.len() < MAX_MESSAGES {
                st.messages
                    .push(format!("{what} {} (db {}): {msg}", show(label), u.db));
            }
        };
        match s {
            Settled::Written => st.written += u.count.max(1),
            Settled::Exists(thing) => match self.opts.conflict {
                ConflictRule::Skip => st.conflicts += 1,
                _ => error(
                    &mut st,
                    &u.label,
                    format!("{thing} already exists on the target (--on-conflict fail)"),
                ),
            },
            Settled::Failed(msg) | Settled::Again(msg) => {
                error(&mut st, &u.label, with_module(u, msg))
            }
            Settled::Redirected(r) => error(
                &mut st,
                &u.label,
                format!("redirected to {} and not written", r.addr()),
            ),
            Settled::Split => error(&mut st, &u.label, "internal: unsplit MSET".into()),
            Settled::Group { ok, errors } => {
                st.written += ok;
                for e in errors {
                    // "COMMAND ARG: message"
                    let (label, msg) = e.split_once('\u{0}').unwrap_or(("?", &e));
                    error(&mut st, label.as_bytes(), msg.to_string());
                }
            }
        }
        let failed = st.errors > 0;
        drop(st);
        if failed && self.opts.stop_on_error {
            self.sh.stop.store(true, Ordering::Relaxed);
        }
    }

    /// Stopped: send nothing more, but let the barriers through. A key whose parts are cut
    /// short leaves its temporary key, deleted at the end.
    fn drain_stopped(&mut self, rx: &Receiver<Msg>) {
        let mut abandon = |u: &Unit| {
            if matches!(u.kind, UnitKind::Part { .. })
                && let Ok(mut a) = self.sh.abandoned.lock()
            {
                a.push((u.db, u.label.clone()));
            }
        };
        for b in self.inflight.drain(..) {
            b.units.iter().for_each(&mut abandon);
            for t in b.barriers {
                let _ = t.send(());
            }
        }
        for (u, _) in self.again.drain(..) {
            abandon(&u);
        }
        for m in rx {
            match m {
                Msg::Unit(u) => {
                    abandon(&u);
                    if let Ok(mut q) = self.sh.queued.lock() {
                        *q = q.saturating_sub(u.bytes.len());
                        self.sh.drained.notify_all();
                    }
                }
                Msg::Barrier(t) => {
                    let _ = t.send(());
                }
            }
        }
    }
}

impl Unit {
    /// The unit without its bytes (what settling needs).
    fn clone_meta(&self) -> Unit {
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
fn split_mset(u: &Unit) -> Vec<Unit> {
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
fn commands_of(mut bytes: &[u8]) -> Vec<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut args = Vec::new();
    while let Ok(Some(n)) = parse_command(bytes, &mut args) {
        out.push(args.iter().map(|a| a.to_vec()).collect());
        bytes = &bytes[n..];
    }
    out
}

/// Whether a reply holds `needle` as a bulk string anywhere.
fn contains_bulk(r: &Reply, needle: &[u8]) -> bool {
    match r {
        Reply::Bulk(b) | Reply::Simple(b) => b == needle,
        Reply::Array(a) => a.iter().any(|r| contains_bulk(r, needle)),
        Reply::Map(m) => m
            .iter()
            .any(|(k, v)| contains_bulk(k, needle) || contains_bulk(v, needle)),
        _ => false,
    }
}

/// The library name from `#!lua name=NAME` on the code's first line.
pub fn library_name(code: &[u8]) -> &[u8] {
    let line = code.split(|&b| b == b'\n').next().unwrap_or_default();
    line.split(|&b| b == b' ')
        .find_map(|w| w.strip_prefix(b"name="))
        .unwrap_or(b"?")
}

fn error_text(e: &[u8]) -> String {
    String::from_utf8_lossy(e).into_owned()
}

/// Whether a unit is one `MULTI`/`EXEC`.
fn is_multi(kind: UnitKind) -> bool {
    match kind {
        UnitKind::Rewrite { multi, .. } => multi,
        UnitKind::Part { .. } | UnitKind::Commands => true,
        _ => false,
    }
}

/// The results of a `MULTI` unit's commands (the `EXEC` array), or of a plain unit.
fn results_of<'r>(u: &Unit, replies: &'r [Reply]) -> Option<&'r [Reply]> {
    if is_multi(u.kind) {
        match replies.last() {
            Some(Reply::Array(a)) => Some(a),
            _ => None,
        }
    } else {
        Some(replies)
    }
}

/// Whether a rewrite unit's final rename (RENAME, or RENAMENX followed by DEL tmp) succeeded.
fn renamed_into_place(u: &Unit, replies: &[Reply]) -> bool {
    let nx = match u.kind {
        UnitKind::Rewrite { nx, .. } => nx,
        UnitKind::Part { last: true, nx } => nx,
        _ => return false,
    };
    let Some(results) = results_of(u, replies) else {
        return false;
    };
    if nx {
        results.len() >= 2 && results[results.len() - 2] == Reply::Integer(1)
    } else {
        results.last().is_some_and(|r| !r.is_error())
    }
}

/// Read a unit's replies.
fn settle(u: &Unit, replies: &[Reply]) -> Settled {
    // A Cluster node that does not serve the slot answers MOVED or ASK to the first command
    // (MULTI units: when queued, and EXEC then aborts): nothing ran.
    if let Some(r) = replies.iter().find_map(|r| match r {
        Reply::Error(e) => parse_redirect(e),
        _ => None,
    }) {
        return Settled::Redirected(r);
    }
    // "Not now": a single command did not run; in a MULTI unit, nothing ran if MULTI
    // itself went through (EXECABORT) or every command was refused. A refused MULTI
    // followed by commands that ran means they ran outside a transaction: the rewrite path
    // can run again (it starts with DEL tmp and ends with the rename), parts and AOF
    // commands cannot.
    if let Some(Reply::Error(e)) = replies.iter().find(|r| match r {
        Reply::Error(e) => transient_reply(e),
        _ => false,
    }) {
        let multi = is_multi(u.kind);
        let all_refused = replies.iter().all(|r| r.is_error());
        let multi_ok = matches!(replies.first(), Some(r) if !r.is_error());
        if !multi || multi_ok || all_refused || matches!(u.kind, UnitKind::Rewrite { .. }) {
            return Settled::Again(error_text(e));
        }
        return Settled::Failed(format!(
            "{} arrived while its MULTI was refused; the target may hold it partly applied",
            error_text(e)
        ));
    }
    match u.kind {
        UnitKind::Restore => match replies.first() {
            Some(Reply::Error(e)) if e.starts_with(b"BUSYKEY") => Settled::Exists("key"),
            Some(Reply::Error(e)) => Settled::Failed(error_text(e)),
            _ => Settled::Written,
        },
        UnitKind::Set { nx } => match replies.first() {
            Some(Reply::Nil) if nx => Settled::Exists("key"),
            Some(Reply::Error(e)) => Settled::Failed(error_text(e)),
            _ => Settled::Written,
        },
        UnitKind::MultiSet { .. } => match replies.first() {
            Some(Reply::Integer(0)) | Some(Reply::Error(_)) => Settled::Split,
            _ => Settled::Written,
        },
        UnitKind::Function => match replies.first() {
            Some(Reply::Error(e)) if String::from_utf8_lossy(e).contains("already exists") => {
                Settled::Exists("library")
            }
            Some(Reply::Error(e)) => Settled::Failed(error_text(e)),
            _ => Settled::Written,
        },
        UnitKind::Commands => {
            let Some(results) = results_of(u, replies) else {
                return Settled::Failed(exec_failure(replies));
            };
            // Name each refused command: results follow the unit's commands after MULTI.
            let mut errors = Vec::new();
            if results.iter().any(|r| r.is_error()) {
                let cmds = commands_of(&u.bytes);
                for (i, r) in results.iter().enumerate() {
                    if let Reply::Error(e) = r {
                        let label = cmds
                            .get(i + 1)
                            .map(|c| {
                                let l: Vec<&[u8]> =
                                    c.iter().take(2).map(|a| a.as_slice()).collect();
                                String::from_utf8_lossy(&l.join(&b' ')).into_owned()
                            })
                            .unwrap_or_else(|| "?".into());
                        errors.push(format!("{label}\u{0}{}", error_text(e)));
                    }
                }
            }
            Settled::Group {
                ok: u.count.saturating_sub(errors.len() as u64),
                errors,
            }
        }
        UnitKind::Rewrite { nx, .. } | UnitKind::Part { nx, .. } => {
            let Some(results) = results_of(u, replies) else {
                return Settled::Failed(exec_failure(replies));
            };
            if let Some(Reply::Error(e)) = results.iter().find(|r| r.is_error()) {
                return Settled::Failed(error_text(e));
            }
            let renames = match u.kind {
                UnitKind::Part { last, .. } => last,
                _ => true,
            };
            if renames
                && nx
                && results.len() >= 2
                && results[results.len() - 2] == Reply::Integer(0)
            {
                return Settled::Exists("key");
            }
            Settled::Written
        }
    }
}

/// A refusal of a module value, naming its type.
fn with_module(u: &Unit, msg: String) -> String {
    match &u.module {
        Some(m) if msg.contains("Bad data format") => format!(
            "{msg}: the target could not load this value of module type {m}; \
             is its module loaded there, at a version that reads this encoding?"
        ),
        Some(m) => format!("{msg} (a value of module type {m})"),
        None => msg,
    }
}

/// Why a `MULTI` unit's `EXEC` returned no results: the command refused when queued.
fn exec_failure(replies: &[Reply]) -> String {
    replies
        .iter()
        .find_map(|r| match r {
            Reply::Error(q) => Some(error_text(q)),
            _ => None,
        })
        .unwrap_or_else(|| "unexpected reply to EXEC".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(kind: UnitKind) -> Unit {
        Unit::new(0, b"k".to_vec(), Vec::new(), 1, kind, 0)
    }

    #[test]
    fn module_refusals_name_the_type() {
        let mut u = unit(UnitKind::Restore);
        let bad = settle(&u, &[Reply::Error(b"ERR Bad data format".to_vec())]);
        let Settled::Failed(msg) = bad else {
            panic!("{bad:?}")
        };
        assert_eq!(with_module(&u, msg.clone()), msg);
        u.module = Some("ReJSON-RL (encver 3)".into());
        assert_eq!(
            with_module(&u, msg),
            "ERR Bad data format: the target could not load this value of module type \
             ReJSON-RL (encver 3); is its module loaded there, at a version that reads this \
             encoding?"
        );
        assert_eq!(
            with_module(&u, "OOM command not allowed".into()),
            "OOM command not allowed (a value of module type ReJSON-RL (encver 3))"
        );
        assert_eq!(u.clone_meta().module, u.module);
    }

    #[test]
    fn settles_replies() {
        let ok = Reply::Simple(b"OK".to_vec());
        let err = |s: &str| Reply::Error(s.as_bytes().to_vec());
        assert_eq!(
            settle(&unit(UnitKind::Restore), std::slice::from_ref(&ok)),
            Settled::Written
        );
        assert_eq!(
            settle(
                &unit(UnitKind::Restore),
                &[err("BUSYKEY Target key name already exists.")]
            ),
            Settled::Exists("key")
        );
        assert_eq!(
            settle(&unit(UnitKind::Set { nx: true }), &[Reply::Nil]),
            Settled::Exists("key")
        );
        assert!(matches!(
            settle(&unit(UnitKind::Restore), &[err("LOADING Redis is loading")]),
            Settled::Again(_)
        ));
        assert!(matches!(
            settle(&unit(UnitKind::Restore), &[err("OOM command not allowed")]),
            Settled::Failed(_)
        ));
        // MULTI, DEL, RPUSH, RENAMENX, DEL, EXEC -> [1, 3, 0, 1]: a conflict.
        let rw = UnitKind::Rewrite {
            nx: true,
            multi: true,
        };
        let q = Reply::Simple(b"QUEUED".to_vec());
        let exec = Reply::Array(vec![
            Reply::Integer(0),
            Reply::Integer(3),
            Reply::Integer(0),
            Reply::Integer(1),
        ]);
        let replies = [ok.clone(), q.clone(), q.clone(), q.clone(), q.clone(), exec];
        assert_eq!(settle(&unit(rw), &replies), Settled::Exists("key"));
        assert!(!renamed_into_place(&unit(rw), &replies));
        // EXECABORT after a refused queued command.
        let replies = [
            ok.clone(),
            err("OOM no"),
            err("EXECABORT Transaction discarded"),
        ];
        assert_eq!(
            settle(&unit(rw), &replies),
            Settled::Failed("OOM no".into())
        );
        // A MULTI refused as LOADING with commands that then ran: parts cannot run again.
        let part = UnitKind::Part {
            last: false,
            nx: false,
        };
        let replies = [
            err("LOADING x"),
            Reply::Integer(3),
            err("ERR EXEC without MULTI"),
        ];
        assert!(matches!(settle(&unit(part), &replies), Settled::Failed(_)));
        assert!(matches!(settle(&unit(rw), &replies), Settled::Again(_)));
        let all = [err("LOADING x"), err("LOADING x"), err("LOADING x")];
        assert!(matches!(settle(&unit(part), &all), Settled::Again(_)));
    }

    #[test]
    fn groups_name_their_failed_commands() {
        let mut bytes = Vec::new();
        for c in [
            &[&b"MULTI"[..]][..],
            &[b"INCR", b"a"],
            &[b"LPUSH", b"a", b"x"],
            &[b"SET", b"m", b"1"],
            &[b"EXEC"],
        ] {
            write_command(&mut bytes, c);
        }
        let mut u = Unit::new(0, b"INCR a".to_vec(), bytes, 5, UnitKind::Commands, 0);
        u.count = 2;
        let q = Reply::Simple(b"QUEUED".to_vec());
        let replies = [
            Reply::Simple(b"OK".to_vec()),
            q.clone(),
            q.clone(),
            q,
            Reply::Array(vec![
                Reply::Integer(1),
                Reply::Error(b"WRONGTYPE Operation".to_vec()),
                Reply::Simple(b"OK".to_vec()),
            ]),
        ];
        assert_eq!(
            settle(&u, &replies),
            Settled::Group {
                ok: 1,
                errors: vec!["LPUSH a\u{0}WRONGTYPE Operation".into()]
            }
        );
    }

    #[test]
    fn transient_replies() {
        assert!(transient_reply(
            b"LOADING Redis is loading the dataset in memory"
        ));
        assert!(transient_reply(b"BUSY Redis is busy running a script."));
        assert!(transient_reply(
            b"TRYAGAIN Multiple keys request during rehashing of slot"
        ));
        assert!(!transient_reply(b"BUSYKEY Target key name already exists."));
        assert!(!transient_reply(b"ERR unknown command"));
    }
}
