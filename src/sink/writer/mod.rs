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

mod link;
mod resend;
mod settle;
mod unit;

pub use unit::{Marker, Unit, UnitKind, library_name, marker_value};

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::keyslot::tmp_key_for as tmp_key;
use crate::net::cluster::{NodeAddr, SlotMap, Topology};
use crate::net::{Conn, NetError, RedisUrl};
use crate::resp::Reply;
use crate::text::quoted as show;
use link::*;

/// Batches written and not yet read, per connection.
pub const WINDOW: usize = 2;

/// Most bytes gathered into one batch.
pub(crate) const BATCH_BYTES: usize = 4 << 20;

/// Most bytes of queued units, over all connections.
pub(crate) const QUEUE_BYTES: usize = 16 << 20;

/// Most error messages kept.
pub const MAX_MESSAGES: usize = 100;

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

/// `--on-conflict`: what a key (or function library) that already exists on the target gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnConflict {
    /// An existing key is an error.
    Fail,
    /// An existing key is overwritten (`RESTORE ... REPLACE`, `RENAME`): no conflict can
    /// happen.
    Replace,
    /// An existing key is left alone and counted.
    Skip,
}

/// Writer options.
#[derive(Debug, Clone, Copy)]
pub struct WriterOptions {
    /// Connections.
    pub connections: usize,
    /// Commands in flight per connection.
    pub pipeline: usize,
    /// What a conflict is.
    pub conflict: OnConflict,
    /// Stop everything at the first refused unit.
    pub stop_on_error: bool,
    /// How long to keep reconnecting (and resending "not now" replies) before giving up.
    pub retry_for: Duration,
}

pub(crate) enum Msg {
    Unit(Unit),
    Barrier(SyncSender<()>),
}

pub(crate) struct Shared {
    pub(crate) stats: Mutex<WriteStats>,
    pub(crate) stop: AtomicBool,
    pub(crate) fatal: Mutex<Option<Error>>,
    /// Keys sent in parts and not finished (the import stopped): their temporary keys are
    /// deleted by [`Writer::finish`].
    pub(crate) abandoned: Mutex<Vec<(u64, Vec<u8>)>>,
    /// Marker keys written, deleted by [`Writer::finish`].
    pub(crate) markers: Mutex<HashSet<(u64, Vec<u8>)>>,
    /// Bytes of units queued and not yet written, and its wake-up.
    pub(crate) queued: Mutex<usize>,
    pub(crate) drained: std::sync::Condvar,
    /// Each node's `run_id` when we last checked (None: INFO refused).
    pub(crate) run_ids: Mutex<HashMap<NodeAddr, Option<String>>>,
    pub(crate) topo: Topology,
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
            topo: match cluster {
                Some(map) => Topology::cluster(url.clone(), map),
                None => Topology::standalone(url.clone()),
            },
        });
        let mut senders = Vec::new();
        let mut threads = Vec::new();
        for _ in 0..lanes {
            let (tx, rx) = sync_channel::<Msg>(opts.pipeline.max(1) * 2);
            let mut link = Link::new(shared.clone(), opts);
            if !shared.topo.is_cluster() {
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

/// Open a connection, retrying while the target cannot be reached or is loading.
pub(crate) fn open_retrying(url: &RedisUrl, retry_for: Duration) -> Result<Conn> {
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
pub(crate) fn delete_keys(
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
                target: topo.seed().addr(),
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

pub(crate) fn set_fatal(sh: &Shared, e: Error) {
    if let Ok(mut f) = sh.fatal.lock()
        && f.is_none()
    {
        *f = Some(e);
    }
    sh.stop.store(true, Ordering::Relaxed);
}

/// A failure of the connection (reconnect and resend) or of the import (stop).
pub(crate) enum Fail {
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
