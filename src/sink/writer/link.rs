//! One lane of the writer: a thread with a connection to each node it writes to, that keeps
//! up to [`WINDOW`] batches in flight, reads their replies in order, and recovers from a
//! dropped connection or a restarted target (`resend` sends again what was not acknowledged).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender};

use super::settle::*;
use super::unit::*;
use super::*;
use crate::error::{Error, Result};
use crate::net::Conn;
use crate::net::cluster::{NodeAddr, Redirect, Topology};
use crate::resp::Reply;

/// A written batch whose replies are not all read.
pub(crate) struct Batch {
    pub(crate) units: Vec<Unit>,
    /// The node each unit was written to.
    pub(crate) nodes: Vec<NodeAddr>,
    /// The first unit not settled.
    pub(crate) next: usize,
    pub(crate) barriers: Vec<SyncSender<()>>,
}

/// One open connection of a lane.
pub(crate) struct NodeConn {
    pub(crate) conn: Conn,
    /// `CLIENT ID` (to end the connection on the target after we lost it).
    pub(crate) id: Option<i64>,
    /// The db selected.
    pub(crate) db: Option<u64>,
}

/// One lane of units: a thread with a connection to each node it writes to, and the units
/// in flight on them. A key always goes to the same lane.
pub(crate) struct Link {
    pub(crate) sh: Arc<Shared>,
    pub(crate) opts: WriterOptions,
    pub(crate) conns: HashMap<NodeAddr, NodeConn>,
    /// `CLIENT ID`s of connections we lost, ended when we reconnect to that node.
    pub(crate) lost: HashMap<NodeAddr, i64>,
    pub(crate) inflight: VecDeque<Batch>,
    /// Units refused "for now" or redirected, sent again (in order) once nothing is in
    /// flight.
    pub(crate) again: VecDeque<(Unit, Option<Redirect>)>,
    /// Keys sent in parts whose earlier part failed.
    pub(crate) failed: HashSet<(u64, Vec<u8>)>,
    pub(crate) outs: HashMap<NodeAddr, Vec<u8>>,
    /// Units to write before taking more from the queue (the keys of a split `MSETNX`).
    pub(crate) pending: VecDeque<Unit>,
}

/// What [`Link::resend_one`] sends.
pub(crate) enum Step<'a> {
    Unit(&'a Unit),
    Args(&'a [&'a [u8]]),
}

impl Link {
    pub(crate) fn new(sh: Arc<Shared>, opts: WriterOptions) -> Link {
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

    pub(crate) fn topo(&self) -> &Topology {
        &self.sh.topo
    }

    /// Start using `c` for `node`: read timeout, `CLIENT ID`, restart check, and the end of
    /// the connection it replaces.
    pub(crate) fn attach(&mut self, node: &NodeAddr, mut c: Conn) -> Result<(), Fail> {
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
    pub(crate) fn conn_to(&mut self, node: &NodeAddr) -> Result<&mut NodeConn, Fail> {
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
    pub(crate) fn drop_all(&mut self) {
        for (n, c) in self.conns.drain() {
            if let Some(id) = c.id {
                self.lost.insert(n, id);
            }
        }
    }

    pub(crate) fn stopped(&self) -> bool {
        self.sh.stop.load(Ordering::Relaxed)
    }

    pub(crate) fn fatal(&self, e: Error) {
        set_fatal(&self.sh, e);
    }

    /// The thread's loop: write batches while fewer than [`WINDOW`] are in flight, read the
    /// oldest otherwise; recover from faults; drain when stopped.
    pub(crate) fn run(mut self, rx: Receiver<Msg>) {
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
    pub(crate) fn write_batch(&mut self, first: Msg, rx: &Receiver<Msg>) -> Option<Msg> {
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
                        UnitKind::Part { .. } => self.topo().is_cluster(),
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
                    let node = match self.topo().node_for_key(&u.label, u.slot) {
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
    pub(crate) fn read_front(&mut self) {
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
            if let (Settled::Again(msg), UnitKind::Part { .. }, false) =
                (&s, b.units[i].kind, self.sh.topo.is_cluster())
            {
                // Later parts of the key may already have run: the key cannot be finished
                // in order, so it fails (named, its half-built state removed).
                s = Settled::Failed(format!(
                    "{msg}: refused in the middle of the key, whose later parts were already \
                     sent; the key was not imported"
                ));
            }
            // A library that exists may be this very one (an earlier import, a resend):
            // then it is no conflict. Checked by the resend path, once nothing is in flight.
            if matches!(s, Settled::Exists(_)) && b.units[i].kind == UnitKind::Function {
                s = Settled::Again("already exists".into());
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
    pub(crate) fn link_failed(&mut self, e: Error) {
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

    /// Stopped: send nothing more, but let the barriers through. A key whose parts are cut
    /// short leaves its temporary key, deleted at the end.
    pub(crate) fn drain_stopped(&mut self, rx: &Receiver<Msg>) {
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

/// The target's `run_id` (None when INFO is refused).
pub(crate) fn server_run_id(c: &mut Conn) -> Result<Option<String>> {
    Ok(match c.call(&[b"INFO", b"server"])? {
        Reply::Bulk(b) => String::from_utf8_lossy(&b)
            .lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .map(|s| s.trim().to_string()),
        _ => None,
    })
}

/// A node that restarted lost what it had not written to disk: going on is only safe when
/// it writes every command to disk before answering.
pub(crate) fn check_restart(sh: &Shared, node: &NodeAddr, conn: &mut Conn) -> Result<(), Fail> {
    let now = server_run_id(conn)?;
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
