//! The applier of incremental sync: a stream of source commands, each with its position,
//! applied to a live target in order, in pipelined batches, with a checkpoint. `follow` (an
//! AOF tailed as it grows) and `sync --follow` (a replication stream) both feed it.
//!
//! Two guarantees, chosen per run:
//! - at least once (default): batches are pipelined (up to [`ApplyOptions::window`] in
//!   flight); the caller writes its checkpoint after [`Applier::acked`] moves. After a crash, or
//!   a dropped connection, the commands of batches not known to be acknowledged are applied
//!   again: `SET` or `DEL` do no harm, but `INCR` or `LPUSH` may then count twice.
//! - exactly once ([`ApplyOptions::checkpoint_key`]): each batch is one `MULTI`/`EXEC` that
//!   also writes the stream position into the checkpoint key. The target holds both or
//!   neither, so after any crash, the position read back from the target ([`Applier::resume`])
//!   says exactly which commands it has: none is applied twice, none is missed. One batch is in
//!   flight per lane: a batch refused whole (`EXECABORT`) must not be overtaken by the next.
//!   On a Cluster, a transaction cannot span slots: each slot has its own lane and its own
//!   checkpoint key (`{tag}name`, the tag hashing to the slot: `keyslot::slot_tag`), and a
//!   source command whose keys span slots is reported, never split.
//!
//! Positions: an [`Entry`] carries `order` (a number that grows along the stream; the
//! caller's) and `pos` (bytes the caller can resume from, opaque here). A checkpoint key holds
//! `order` and `pos`; entries at or below a lane's checkpoint are skipped on resume.
//!
//! Faults: a dropped connection or a "not now" reply (`LOADING`, `BUSY`, ...) is retried with
//! backoff for `retry_for`, reconnecting; in exactly-once mode the checkpoint key says whether
//! the batch in flight ran. A command the target refuses is reported with the position it
//! came from; `stop_on_error` stops the run there.
//!
//! Not here: reading sources, filters and renames (the caller maps commands through
//! `transform::KeyMap` first), the checkpoint file (the job's).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::cancel::Cancel;
use crate::error::{Error, Result};
use crate::keyslot::slot_tag;
use crate::net::cluster::{NodeAddr, SlotMap, Topology, parse_redirect};
use crate::net::error::transient_reply;
use crate::net::{Conn, NetError, RedisUrl};
use crate::resp::{Reply, write_command};
use crate::text::quoted;
use crate::transform::commands::command_slot;

/// Settings of an [`Applier`].
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Exactly once: the checkpoint key's name (written in each batch's `MULTI`/`EXEC`).
    pub checkpoint_key: Option<Vec<u8>>,
    /// The db of the checkpoint key on a standalone target.
    pub checkpoint_db: u64,
    /// Most commands in one batch.
    pub batch_commands: usize,
    /// Most bytes in one batch.
    pub batch_bytes: usize,
    /// Batches in flight per lane, at least once (exactly once: always 1).
    pub window: usize,
    /// How long to keep retrying a dropped connection or a busy target.
    pub retry_for: Duration,
    /// Stop at the first command the target refuses (else it is reported and skipped).
    pub stop_on_error: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            checkpoint_key: None,
            checkpoint_db: 0,
            batch_commands: 1000,
            batch_bytes: 1 << 20,
            window: 4,
            retry_for: Duration::from_secs(60),
            stop_on_error: true,
        }
    }
}

/// One source entry: a command, or a transaction (`MULTI` ... `EXEC` included), in target
/// db `db`, with the stream position right after it. Or a run of plain commands already in
/// RESP ([`Entry::resp`]), forwarded byte for byte.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Target db.
    pub db: u64,
    /// The commands (already mapped: filters, renames).
    pub commands: Vec<Vec<Vec<u8>>>,
    /// Commands as the source wrote them, applied after `commands`: the fast path of a
    /// source whose commands go on unchanged (`follow` without filters, renames or db
    /// mapping, into a standalone target), as `redis-cli --pipe` does. None may be a
    /// `MULTI`, `EXEC` or `SELECT` (the caller's promise: the batch's db and transaction
    /// depend on it).
    pub resp: Option<Resp>,
    /// Grows along the stream (for a run of commands: the order of its last one).
    pub order: u64,
    /// Where the stream can be resumed after this entry (opaque here).
    pub pos: Vec<u8>,
}

/// Whole commands in RESP, as the source wrote them: see [`Entry::resp`].
#[derive(Debug, Clone, Default)]
pub struct Resp {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// How many commands they hold.
    pub commands: usize,
}

impl Entry {
    /// How many commands the entry holds.
    pub fn len(&self) -> usize {
        self.commands.len() + self.resp.as_ref().map_or(0, |r| r.commands)
    }

    /// Whether it holds none (it only moves the checkpoint).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its commands as argument vectors ([`Entry::resp`] parsed): a Cluster routes by key.
    /// A run of several commands cannot go to a Cluster: they may be in several slots, and
    /// a slot's checkpoint needs an order of its own for each.
    fn parse_resp(&mut self) -> Result<()> {
        let Some(resp) = self.resp.take() else {
            return Ok(());
        };
        if resp.commands > 1 {
            return Err(Error::Internal(
                "a run of commands cannot go to a Cluster as one entry".into(),
            ));
        }
        let mut rest = &resp.bytes[..];
        let mut args = Vec::new();
        while !rest.is_empty() {
            match crate::resp::parse_command(rest, &mut args) {
                Ok(Some(used)) => {
                    self.commands
                        .push(args.iter().map(|a| a.to_vec()).collect());
                    rest = &rest[used..];
                }
                _ => {
                    return Err(Error::Internal(
                        "an entry's RESP is not whole commands".into(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The first command, for messages.
    fn label(&self) -> String {
        if let Some(c) = self.commands.first() {
            return label(c);
        }
        let mut args = Vec::new();
        match self
            .resp
            .as_ref()
            .map(|r| crate::resp::parse_command(&r.bytes, &mut args))
        {
            Some(Ok(Some(_))) => {
                quoted(&args.iter().take(2).copied().collect::<Vec<_>>().join(&b' '))
            }
            _ => String::new(),
        }
    }
}

/// A position stored in a checkpoint key: `order` and the caller's `pos`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The entry's order.
    pub order: u64,
    /// The caller's position bytes.
    pub pos: Vec<u8>,
}

impl Checkpoint {
    fn encode(order: u64, pos: &[u8]) -> Vec<u8> {
        let mut v = format!("{order} ").into_bytes();
        v.extend_from_slice(pos);
        v
    }

    fn decode(v: &[u8]) -> Option<Checkpoint> {
        let sp = v.iter().position(|&b| b == b' ')?;
        let order = std::str::from_utf8(&v[..sp]).ok()?.parse().ok()?;
        Some(Checkpoint {
            order,
            pos: v[sp + 1..].to_vec(),
        })
    }
}

/// Counters of an applier.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ApplyStats {
    /// Commands acknowledged by the target (transactions count their commands).
    pub applied: u64,
    /// Entries skipped because the target's checkpoint already holds them.
    pub skipped: u64,
    /// Batches acknowledged.
    pub batches: u64,
    /// Commands refused by the target.
    pub errors: u64,
    /// The first error messages, each naming its command and position.
    pub messages: Vec<String>,
    /// Batches sent again after a fault.
    pub resent: u64,
    /// Reconnections.
    pub reconnects: u64,
}

/// What a batch's replies say.
enum Outcome {
    /// Settled: applied, or its refused commands reported.
    Done,
    /// Nothing ran (busy, loading, moved): send it again.
    Again(String),
    /// Refused whole because one command was: send its entries one by one.
    Split,
}

/// A lane: the entries of one node (standalone) or one slot (Cluster), in order.
#[derive(Default)]
struct Lane {
    /// Entries not yet in a batch.
    pending: Vec<Entry>,
    pending_bytes: usize,
    pending_cmds: usize,
    /// Batches sent and not yet acknowledged, oldest first.
    inflight: VecDeque<Batch>,
    /// The lane's checkpoint on the target (exactly once): entries up to it are there.
    done: Option<u64>,
}

struct Batch {
    entries: Vec<Entry>,
    /// Replies to read.
    replies: usize,
    /// The node it was written to.
    node: NodeAddr,
    /// The connection it was written on ([`NodeConn::generation`]): its replies can only come there.
    generation: u64,
    /// Which batch this is (every write gets a new number).
    id: u64,
}

/// The connection to one node, and its selected db.
struct NodeConn {
    conn: Conn,
    db: Option<u64>,
    /// Which connection this is: every connection the applier opens gets a new number.
    generation: u64,
    /// The batches written on it and not yet read, in write order (lane, batch id): replies
    /// come in that order, whatever lane they belong to.
    queue: VecDeque<(Option<u16>, u64)>,
}

/// Applies entries to a target; see the module doc.
pub struct Applier {
    topo: Topology,
    opts: ApplyOptions,
    cancel: Cancel,
    conns: HashMap<NodeAddr, NodeConn>,
    /// Lanes by slot (`None`: the standalone target's one lane).
    lanes: BTreeMap<Option<u16>, Lane>,
    stats: ApplyStats,
    /// The highest order acknowledged with everything before it.
    acked: Option<Checkpoint>,
    /// Entries pushed and not yet acknowledged, by order (for [`Applier::acked`]).
    open: std::collections::BTreeSet<u64>,
    /// Positions of open entries.
    positions: BTreeMap<u64, Vec<u8>>,
    /// Connections opened so far.
    generations: u64,
    /// Batches written so far.
    batch_ids: u64,
}

fn keys_slot(commands: &[Vec<Vec<u8>>]) -> std::result::Result<Option<u16>, String> {
    let mut slot = None;
    for c in commands {
        let args: Vec<&[u8]> = c.iter().map(Vec::as_slice).collect();
        match command_slot(&args) {
            Ok(None) => {}
            Ok(Some(s)) if slot.is_none_or(|x| x == s) => slot = Some(s),
            Ok(Some(_)) => {
                return Err("a transaction whose keys span Cluster slots".into());
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(slot)
}

/// A command for messages: its first two arguments.
fn label(c: &[Vec<u8>]) -> String {
    let l: Vec<u8> = c.iter().take(2).cloned().collect::<Vec<_>>().join(&b' ');
    quoted(&l)
}

impl Applier {
    /// Connect to the target `url` (a Cluster is detected).
    pub fn open(url: &RedisUrl, opts: ApplyOptions, cancel: Cancel) -> Result<Applier> {
        let deadline = Instant::now() + opts.retry_for;
        let (c, topo) = loop {
            let r = Conn::open(url).and_then(|mut c| {
                let info = c.info("cluster")?;
                let topo = if info.get("cluster_enabled").is_some_and(|v| v == "1") {
                    Topology::cluster(url.clone(), SlotMap::discover(url)?)
                } else {
                    Topology::standalone(url.clone())
                };
                Ok((c, topo))
            });
            match r {
                Ok(x) => break x,
                Err(e) if e.is_transient() && Instant::now() < deadline => {
                    cancel.check()?;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e.into()),
            }
        };
        let mut a = Applier {
            topo,
            opts,
            cancel,
            conns: HashMap::new(),
            lanes: BTreeMap::new(),
            stats: ApplyStats::default(),
            acked: None,
            open: Default::default(),
            positions: BTreeMap::new(),
            generations: 0,
            batch_ids: 0,
        };
        if !a.topo.is_cluster() {
            let node = a.topo.masters().remove(0);
            a.generations += 1;
            a.conns.insert(
                node,
                NodeConn {
                    conn: c,
                    db: None,
                    generation: a.generations,
                    queue: VecDeque::new(),
                },
            );
        }
        Ok(a)
    }

    /// Move the checkpoint to `pos` (the `order`-th entry) with nothing to apply (past a
    /// snapshot or a base the caller wrote by other means), and wait until the target holds
    /// it: an entry without commands writes the checkpoint key on a standalone target; a
    /// Cluster's keys are per slot, and only the caller's file moves.
    pub fn mark(&mut self, order: u64, pos: Vec<u8>) -> Result<()> {
        if !self.is_cluster() {
            self.push(Entry {
                db: 0,
                commands: Vec::new(),
                resp: None,
                order,
                pos,
            })?;
        }
        self.flush()
    }

    /// Whether the target is a Cluster.
    pub fn is_cluster(&self) -> bool {
        self.topo.is_cluster()
    }

    /// The counters so far.
    pub fn stats(&self) -> &ApplyStats {
        &self.stats
    }

    /// The latest position up to which every entry is acknowledged, if any moved yet.
    pub fn acked(&self) -> Option<&Checkpoint> {
        self.acked.as_ref()
    }

    /// The checkpoint key of a lane.
    fn checkpoint_key(&self, slot: Option<u16>) -> Option<Vec<u8>> {
        let name = self.opts.checkpoint_key.as_ref()?;
        Some(match slot.and_then(slot_tag) {
            Some(tag) => [b"{", tag.as_bytes(), b"}", name.as_slice()].concat(),
            None => name.clone(),
        })
    }

    /// Exactly once: read the checkpoints the target holds. Returns the lowest one (the
    /// stream must be resumed at or before it; entries a lane already has are skipped as
    /// they come). `None`: no checkpoint on the target.
    pub fn resume(&mut self) -> Result<Option<Checkpoint>> {
        if self.opts.checkpoint_key.is_none() {
            return Ok(None);
        }
        let slots: Vec<Option<u16>> = if self.topo.is_cluster() {
            (0..crate::keyslot::SLOTS).map(Some).collect()
        } else {
            vec![None]
        };
        // Per node, one pipeline of GETs (16384 slots on a Cluster), retried whole after a
        // dropped connection.
        let mut by_node: BTreeMap<NodeAddr, Vec<Option<u16>>> = BTreeMap::new();
        for slot in slots {
            by_node.entry(self.node_of(slot)?).or_default().push(slot);
        }
        let mut lowest: Option<Checkpoint> = None;
        for (node, slots) in by_node {
            let values = self.read_checkpoints(&node, &slots)?;
            for (slot, v) in slots.into_iter().zip(values) {
                let Some(cp) = v.as_bytes().and_then(Checkpoint::decode) else {
                    continue;
                };
                self.lanes.entry(slot).or_default().done = Some(cp.order);
                if lowest.as_ref().is_none_or(|l| cp.order < l.order) {
                    lowest = Some(cp);
                }
            }
        }
        Ok(lowest)
    }

    /// The checkpoint keys of `slots` on `node`, in one pipeline.
    fn read_checkpoints(&mut self, node: &NodeAddr, slots: &[Option<u16>]) -> Result<Vec<Reply>> {
        let deadline = Instant::now() + self.opts.retry_for;
        let db = if slots.iter().any(Option::is_some) {
            0
        } else {
            self.opts.checkpoint_db
        };
        let mut pipe = crate::net::Pipe::default();
        pipe.push(&[b"SELECT", db.to_string().as_bytes()]);
        for &slot in slots {
            if let Some(key) = self.checkpoint_key(slot) {
                pipe.push(&[b"GET", &key]);
            }
        }
        loop {
            let r = self.conn(node).and_then(|nc| {
                nc.db = Some(db);
                Ok(nc.conn.exec(&pipe)?)
            });
            match r {
                Ok(mut replies) => return Ok(replies.split_off(1.min(replies.len()))),
                Err(Error::Net(e)) => self.lost(node, e, deadline)?,
                Err(e) => return Err(e),
            }
        }
    }

    fn node_of(&self, slot: Option<u16>) -> Result<NodeAddr> {
        let node = match slot {
            Some(s) => self.topo.node_for_slot(s),
            None => self.topo.masters().into_iter().next(),
        };
        node.ok_or_else(|| {
            Error::target(
                self.topo.seed().redacted(),
                format!("slot {} has no master", slot.unwrap_or(0)),
            )
        })
    }

    fn conn(&mut self, node: &NodeAddr) -> Result<&mut NodeConn> {
        if !self.conns.contains_key(node) {
            // A target that drops connections may drop this one during its AUTH: retried.
            let deadline = Instant::now() + self.opts.retry_for;
            let c = loop {
                match Conn::open(&self.topo.url_of(node)) {
                    Ok(c) => break c,
                    Err(e) if e.is_transient() && Instant::now() < deadline => {
                        self.cancel.check()?;
                        self.stats.reconnects += 1;
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            self.conns.insert(
                node.clone(),
                NodeConn {
                    conn: c,
                    db: None,
                    generation: self.generations + 1,
                    queue: VecDeque::new(),
                },
            );
            self.generations += 1;
        }
        self.conns
            .get_mut(node)
            .ok_or_else(|| Error::Internal("connection vanished".into()))
    }

    /// Queue an entry; batches go out as they fill. Entries come in stream order.
    pub fn push(&mut self, mut e: Entry) -> Result<()> {
        self.cancel.check()?;
        let slot = if self.topo.is_cluster() {
            e.parse_resp()?;
            match keys_slot(&e.commands) {
                Ok(Some(s)) if e.db == 0 => Some(s),
                Ok(Some(_)) => {
                    return self.refuse(&e, "a Cluster has only db 0".into());
                }
                Ok(None) => {
                    return self.refuse(&e, "no key: it cannot be routed to a Cluster node".into());
                }
                Err(why) => return self.refuse(&e, why),
            }
        } else {
            None
        };
        let lane = self.lanes.entry(slot).or_default();
        if lane.done.is_some_and(|d| e.order <= d) {
            self.stats.skipped += 1;
            return Ok(());
        }
        let bytes: usize = e
            .commands
            .iter()
            .flat_map(|c| c.iter().map(|a| a.len() + 16))
            .sum::<usize>()
            + e.resp.as_ref().map_or(0, |r| r.bytes.len());
        lane.pending_cmds += e.len();
        lane.pending_bytes += bytes;
        self.open.insert(e.order);
        self.positions.insert(e.order, e.pos.clone());
        lane.pending.push(e);
        let full = lane.pending_cmds >= self.opts.batch_commands
            || lane.pending_bytes >= self.opts.batch_bytes;
        if full {
            self.send_lane(slot)?;
        }
        Ok(())
    }

    /// A command the target cannot take here, reported with its position.
    fn refuse(&mut self, e: &Entry, why: String) -> Result<()> {
        let c = e.label();
        self.error(format!("command {c} (db {}): {why}", e.db))
    }

    fn error(&mut self, msg: String) -> Result<()> {
        self.stats.errors += 1;
        if self.stats.messages.len() < 100 {
            self.stats.messages.push(msg.clone());
        }
        if self.opts.stop_on_error {
            return Err(Error::target(self.topo.seed().redacted(), msg));
        }
        Ok(())
    }

    /// Send everything pending and wait until every batch is acknowledged.
    pub fn flush(&mut self) -> Result<()> {
        self.send_pending()?;
        let slots: Vec<Option<u16>> = self.lanes.keys().copied().collect();
        for s in slots {
            while !self.lanes[&s].inflight.is_empty() {
                self.read_oldest(s)?;
            }
        }
        Ok(())
    }

    /// Send everything pending, without waiting for the replies (they are read as the
    /// window fills, or by [`Applier::flush`]); and read the replies already there.
    pub fn send_pending(&mut self) -> Result<()> {
        let slots: Vec<Option<u16>> = self.lanes.keys().copied().collect();
        for s in &slots {
            if !self.lanes[s].pending.is_empty() {
                self.send_lane(*s)?;
            }
        }
        Ok(())
    }

    /// How many batches a lane may have in flight.
    fn window(&self) -> usize {
        if self.opts.checkpoint_key.is_some() {
            1
        } else {
            self.opts.window.max(1)
        }
    }

    /// Turn a lane's pending entries into a batch and write it (after reading replies until
    /// the window has room).
    fn send_lane(&mut self, slot: Option<u16>) -> Result<()> {
        while self.lanes[&slot].inflight.len() >= self.window() {
            self.read_oldest(slot)?;
        }
        let lane = self
            .lanes
            .get_mut(&slot)
            .ok_or_else(|| Error::Internal("lane".into()))?;
        let entries = std::mem::take(&mut lane.pending);
        lane.pending_bytes = 0;
        lane.pending_cmds = 0;
        if entries.is_empty() {
            return Ok(());
        }
        let node = self.node_of(slot)?;
        let batch = self.write_batch(slot, node, entries)?;
        if let Some(l) = self.lanes.get_mut(&slot) {
            l.inflight.push_back(batch);
        }
        Ok(())
    }

    /// Encode and write `entries` as one batch to `node`, retrying the connection.
    fn write_batch(
        &mut self,
        slot: Option<u16>,
        node: NodeAddr,
        entries: Vec<Entry>,
    ) -> Result<Batch> {
        let ckpt = self.checkpoint_key(slot);
        let ckpt_db = if slot.is_some() {
            0
        } else {
            self.opts.checkpoint_db
        };
        let deadline = Instant::now() + self.opts.retry_for;
        loop {
            let nc = self.conn(&node)?;
            let (bytes, replies, db_after) = encode(&entries, nc.db, ckpt.as_deref(), ckpt_db);
            match nc.conn.send(&bytes) {
                Ok(()) => {
                    nc.db = db_after;
                    let generation = nc.generation;
                    self.batch_ids += 1;
                    let id = self.batch_ids;
                    if let Some(nc) = self.conns.get_mut(&node) {
                        nc.queue.push_back((slot, id));
                    }
                    return Ok(Batch {
                        entries,
                        replies,
                        node,
                        generation,
                        id,
                    });
                }
                Err(e) => {
                    // The batches in flight on that connection are in doubt: they go again
                    // first, in order.
                    self.lost(&node, e, deadline)?;
                    self.recover_node(&node)?;
                }
            }
        }
    }

    /// A connection failed: drop it and wait before the next try (an error past the
    /// deadline, or when it is not about the connection).
    fn lost(&mut self, node: &NodeAddr, e: NetError, deadline: Instant) -> Result<()> {
        self.conns.remove(node);
        if !e.is_transient() || Instant::now() >= deadline {
            return Err(e.into());
        }
        self.cancel.check()?;
        self.stats.reconnects += 1;
        tracing::warn!("{e}; reconnecting");
        std::thread::sleep(Duration::from_millis(50));
        let _ = self.topo.refresh();
        Ok(())
    }

    /// Read the replies of a lane's oldest batch and settle it; after a fault, send again
    /// what did not run (exactly once: as the checkpoint key says).
    fn read_oldest(&mut self, slot: Option<u16>) -> Result<()> {
        let Some((id, node)) = self
            .lanes
            .get(&slot)
            .and_then(|l| l.inflight.front())
            .map(|b| (b.id, b.node.clone()))
        else {
            return Ok(());
        };
        // Replies come in write order on a connection: the batches of other lanes written
        // before this one to the same node are read (and settled) first.
        while self
            .lanes
            .get(&slot)
            .is_some_and(|l| l.inflight.iter().any(|b| b.id == id))
        {
            self.read_next(&node)?;
        }
        Ok(())
    }

    /// Read and settle the next batch written to `node`.
    fn read_next(&mut self, node: &NodeAddr) -> Result<()> {
        let Some((slot, id)) = self.conns.get_mut(node).and_then(|c| c.queue.pop_front()) else {
            return Err(Error::Internal(format!("no batch in flight to {node}")));
        };
        let Some(batch) = self.lanes.get_mut(&slot).and_then(|l| {
            let i = l.inflight.iter().position(|b| b.id == id)?;
            l.inflight.remove(i)
        }) else {
            return Ok(());
        };
        let deadline = Instant::now() + self.opts.retry_for;
        if self
            .conns
            .get(&batch.node)
            .is_some_and(|c| c.generation != batch.generation)
        {
            // Every loss resends what was in flight at once (`recover_node`).
            return Err(Error::Internal(format!(
                "a batch to {} outlived its connection",
                batch.node
            )));
        }
        let read = {
            let nc = self.conn(&batch.node)?;
            (0..batch.replies)
                .map(|_| nc.conn.read_reply())
                .collect::<std::result::Result<Vec<Reply>, NetError>>()
        };
        match read {
            Ok(replies) => {
                let retry = match self.settle(&batch, &replies)? {
                    Outcome::Done => return Ok(()),
                    Outcome::Split => return self.one_by_one(slot, batch.entries),
                    Outcome::Again(why) => why,
                };
                // Refused whole for now, or redirected: nothing ran. Later batches of the
                // lane (at least once) may have: that is at least once.
                self.cancel.check()?;
                std::thread::sleep(Duration::from_millis(100));
                if Instant::now() >= deadline {
                    return Err(Error::target(
                        batch.node.to_string(),
                        format!("gave up after {} s: {retry}", self.opts.retry_for.as_secs()),
                    ));
                }
                self.stats.resent += 1;
                let _ = self.topo.refresh();
                let node = self.node_of(slot)?;
                let again = self.write_batch(slot, node, batch.entries)?;
                if let Some(l) = self.lanes.get_mut(&slot) {
                    l.inflight.push_front(again);
                }
                Ok(())
            }
            Err(e) => {
                let node = batch.node.clone();
                if let Some(l) = self.lanes.get_mut(&slot) {
                    l.inflight.push_front(batch);
                }
                self.lost(&node, e, deadline)?;
                self.recover_node(&node)
            }
        }
    }

    /// Apply `entries` one batch each, in order, each waited for (after a batch was refused
    /// whole: only the refused entry is then lost, and reported).
    fn one_by_one(&mut self, slot: Option<u16>, entries: Vec<Entry>) -> Result<()> {
        for e in entries {
            let node = self.node_of(slot)?;
            let b = self.write_batch(slot, node, vec![e])?;
            if let Some(l) = self.lanes.get_mut(&slot) {
                l.inflight.push_front(b);
            }
            self.read_oldest(slot)?;
        }
        Ok(())
    }

    /// The connection to `node` was lost: every batch in flight there is in doubt. Send
    /// again, in order, what the target does not hold (exactly once, as the checkpoint keys
    /// say; at least once, all of it).
    fn recover_node(&mut self, node: &NodeAddr) -> Result<()> {
        // First ask what the target holds (nothing is written meanwhile, so each reply is
        // the answer to its question), then write again, lane by lane, in order.
        let slots: Vec<Option<u16>> = self.lanes.keys().copied().collect();
        let mut redo: Vec<(Option<u16>, Vec<Vec<Entry>>)> = Vec::new();
        for slot in slots {
            let Some(lane) = self.lanes.get_mut(&slot) else {
                continue;
            };
            if !lane.inflight.iter().any(|b| &b.node == node) {
                continue;
            }
            let batches: Vec<Batch> = lane.inflight.drain(..).collect();
            let mut again = Vec::new();
            for b in batches {
                let entries = self.not_yet_applied(slot, b.entries)?;
                if !entries.is_empty() {
                    again.push(entries);
                }
            }
            redo.push((slot, again));
        }
        for (slot, batches) in redo {
            for entries in batches {
                self.stats.resent += 1;
                let to = self.node_of(slot)?;
                let again = self.write_batch(slot, to, entries)?;
                if let Some(l) = self.lanes.get_mut(&slot) {
                    l.inflight.push_back(again);
                }
            }
        }
        Ok(())
    }

    /// After a dropped connection: the entries of a batch the target does not hold. Exactly
    /// once, the checkpoint key tells (the batch ran whole or not at all); at least once, all
    /// of them are sent again.
    fn not_yet_applied(&mut self, slot: Option<u16>, entries: Vec<Entry>) -> Result<Vec<Entry>> {
        let Some(key) = self.checkpoint_key(slot) else {
            return Ok(entries);
        };
        let db = if slot.is_some() {
            0
        } else {
            self.opts.checkpoint_db
        };
        let deadline = Instant::now() + self.opts.retry_for;
        let node = self.node_of(slot)?;
        let value = loop {
            let r = self.conn(&node).and_then(|nc| {
                select(nc, db)?;
                Ok(nc.conn.call(&[b"GET", &key])?)
            });
            match r {
                Ok(v) => break v,
                Err(Error::Net(e)) => self.lost(&node, e, deadline)?,
                Err(e) => return Err(e),
            }
        };
        let done = value
            .as_bytes()
            .and_then(Checkpoint::decode)
            .map(|c| c.order);
        if let Some(d) = done {
            let ran: Vec<u64> = entries
                .iter()
                .filter(|e| e.order <= d)
                .map(|e| e.order)
                .collect();
            for o in ran {
                self.ack(o);
            }
        }
        Ok(entries
            .into_iter()
            .filter(|e| done.is_none_or(|d| e.order > d))
            .collect())
    }

    /// Count a batch's replies: `Ok(None)` when it is settled; `Ok(Some(why))` when it did
    /// not run at all and must be sent again (busy, loading, moved).
    fn settle(&mut self, batch: &Batch, replies: &[Reply]) -> Result<Outcome> {
        let exactly_once = self.opts.checkpoint_key.is_some();
        let busy = replies.iter().find_map(|r| match r {
            Reply::Error(e) if transient_reply(e) || parse_redirect(e).is_some() => {
                Some(String::from_utf8_lossy(e).into_owned())
            }
            _ => None,
        });
        if let Some(why) = busy {
            let ran = if exactly_once {
                // The EXEC's reply: an array when it ran.
                matches!(replies.last(), Some(Reply::Array(_)))
            } else {
                replies.iter().any(|r| !r.is_error())
            };
            if !ran {
                return Ok(Outcome::Again(why));
            }
        }
        let results: Vec<&Reply> = if exactly_once {
            match replies.last() {
                Some(Reply::Array(a)) => a.iter().collect(),
                _ if batch.entries.len() > 1 && !self.opts.stop_on_error => {
                    // EXECABORT: a command was refused when queued, and none ran. The
                    // entries go again one by one, so that only the refused one is lost.
                    return Ok(Outcome::Split);
                }
                _ => {
                    // EXECABORT: a command was refused when queued; none ran. Name it.
                    let why = replies
                        .iter()
                        .find_map(|r| r.error_text())
                        .unwrap_or_else(|| "transaction aborted".into());
                    let c = batch.entries.first().map(Entry::label).unwrap_or_default();
                    self.error(format!("batch from command {c}: refused ({why})"))?;
                    for e in &batch.entries {
                        self.ack(e.order);
                    }
                    return Ok(Outcome::Done);
                }
            }
        } else {
            replies.iter().collect()
        };
        for r in results {
            if let Some(e) = r.error_text() {
                self.error(format!("the target refused a command: {e}"))?;
            }
        }
        self.stats.batches += 1;
        for e in &batch.entries {
            self.stats.applied += e.len() as u64;
            self.ack(e.order);
        }
        Ok(Outcome::Done)
    }

    /// An entry is on the target: move [`Applier::acked`] past every entry before it.
    fn ack(&mut self, order: u64) {
        self.open.remove(&order);
        let first_open = self.open.first().copied();
        let upto: Vec<u64> = self
            .positions
            .range(..first_open.unwrap_or(u64::MAX))
            .map(|(o, _)| *o)
            .collect();
        if let Some(&last) = upto.last()
            && let Some(pos) = self.positions.get(&last)
        {
            self.acked = Some(Checkpoint {
                order: last,
                pos: pos.clone(),
            });
        }
        for o in upto {
            self.positions.remove(&o);
        }
    }
}

fn select(nc: &mut NodeConn, db: u64) -> Result<()> {
    if nc.db != Some(db) {
        nc.conn.select(db)?;
        nc.db = Some(db);
    }
    Ok(())
}

/// The bytes of a batch, the number of replies it gets, and the db selected after it.
/// Exactly once (`ckpt`): `MULTI`, the commands (a source transaction's own `MULTI` and
/// `EXEC` left out: the batch is one already), `SET ckpt order pos` in `ckpt_db`, `EXEC`.
fn encode(
    entries: &[Entry],
    mut db: Option<u64>,
    ckpt: Option<&[u8]>,
    ckpt_db: u64,
) -> (Vec<u8>, usize, Option<u64>) {
    let resp: usize = entries
        .iter()
        .map(|e| e.resp.as_ref().map_or(0, |r| r.bytes.len()))
        .sum();
    let mut out = Vec::with_capacity(resp + 64 * entries.len());
    let mut n = 0;
    let cmd = |out: &mut Vec<u8>, n: &mut usize, args: &[&[u8]]| {
        write_command(out, args);
        *n += 1;
    };
    let exactly_once = ckpt.is_some();
    if exactly_once {
        cmd(&mut out, &mut n, &[b"MULTI"]);
    }
    for e in entries {
        if db != Some(e.db) {
            cmd(&mut out, &mut n, &[b"SELECT", e.db.to_string().as_bytes()]);
            db = Some(e.db);
        }
        for c in &e.commands {
            let name = c.first().map(Vec::as_slice).unwrap_or_default();
            if exactly_once
                && (name.eq_ignore_ascii_case(b"MULTI") || name.eq_ignore_ascii_case(b"EXEC"))
            {
                continue;
            }
            let args: Vec<&[u8]> = c.iter().map(Vec::as_slice).collect();
            cmd(&mut out, &mut n, &args);
        }
        if let Some(r) = &e.resp {
            out.extend_from_slice(&r.bytes);
            n += r.commands;
        }
    }
    if let (Some(key), Some(last)) = (ckpt, entries.last()) {
        if db != Some(ckpt_db) {
            cmd(
                &mut out,
                &mut n,
                &[b"SELECT", ckpt_db.to_string().as_bytes()],
            );
            db = Some(ckpt_db);
        }
        let value = Checkpoint::encode(last.order, &last.pos);
        cmd(&mut out, &mut n, &[b"SET", key, &value]);
        cmd(&mut out, &mut n, &[b"EXEC"]);
    }
    (out, n, db)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(order: u64, db: u64, cmds: &[&[&str]]) -> Entry {
        Entry {
            db,
            commands: cmds
                .iter()
                .map(|c| c.iter().map(|a| a.as_bytes().to_vec()).collect())
                .collect(),
            resp: None,
            order,
            pos: format!("p{order}").into_bytes(),
        }
    }

    #[test]
    fn batches_wrap_a_checkpoint_in_one_transaction() {
        let es = [
            entry(1, 0, &[&["SET", "a", "1"]]),
            entry(2, 3, &[&["MULTI"], &["INCR", "b"], &["EXEC"]]),
        ];
        let (bytes, n, db) = encode(&es, Some(0), Some(b"ck"), 0);
        let mut args = Vec::new();
        let mut rest = &bytes[..];
        let mut names = Vec::new();
        while let Ok(Some(used)) = crate::resp::parse_command(rest, &mut args) {
            names.push(
                String::from_utf8_lossy(
                    &args
                        .iter()
                        .map(|a| a.to_vec())
                        .collect::<Vec<_>>()
                        .join(&b' '),
                )
                .into_owned(),
            );
            rest = &rest[used..];
        }
        assert_eq!(
            names,
            [
                "MULTI",
                "SET a 1",
                "SELECT 3",
                "INCR b",
                "SELECT 0",
                "SET ck 2 p2",
                "EXEC"
            ]
        );
        assert_eq!((n, db), (7, Some(0)));
        let (_, n, db) = encode(&es, Some(0), None, 0);
        assert_eq!((n, db), (5, Some(3)));
    }

    #[test]
    fn runs_of_resp_go_as_they_are_and_count_their_commands() {
        let mut bytes = Vec::new();
        write_command(&mut bytes, &[b"SET", b"a", b"1"]);
        write_command(&mut bytes, &[b"INCR", b"b"]);
        let mut e = entry(7, 2, &[]);
        e.resp = Some(Resp {
            bytes: bytes.clone(),
            commands: 2,
        });
        assert_eq!((e.len(), e.label()), (2, "\"SET a\"".to_string()));
        let (out, n, db) = encode(std::slice::from_ref(&e), Some(2), None, 0);
        assert_eq!((out, n, db), (bytes.clone(), 2, Some(2)));
        let (out, n, _) = encode(std::slice::from_ref(&e), Some(0), Some(b"ck"), 0);
        assert_eq!(n, 7, "MULTI, SELECT 2, the run, SELECT 0, SET ck, EXEC");
        assert!(out.windows(bytes.len()).any(|w| w == bytes));
        assert!(e.parse_resp().is_err(), "a run cannot go to a Cluster");
        let mut one = entry(8, 0, &[]);
        one.resp = Some(Resp {
            bytes: bytes[..bytes.len() - 21].to_vec(),
            commands: 1,
        });
        one.parse_resp().unwrap();
        assert_eq!(
            one.commands,
            [[b"SET".to_vec(), b"a".to_vec(), b"1".to_vec()]]
        );
        assert!(one.resp.is_none());
    }

    #[test]
    fn checkpoints_round_trip() {
        let v = Checkpoint::encode(42, b"{\"file\":\"x y\"}");
        assert_eq!(
            Checkpoint::decode(&v),
            Some(Checkpoint {
                order: 42,
                pos: b"{\"file\":\"x y\"}".to_vec()
            })
        );
        assert_eq!(Checkpoint::decode(b"junk"), None);
    }
}
