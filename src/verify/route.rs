//! `verify` against a Redis Cluster: one lane (connection and batches) per master, each key's
//! reads sent to the master of its slot, and redirections followed.
//!
//! A key a node redirects is compared again on its own, over a second connection per node
//! (so the lanes' pipelines are never interleaved): after `MOVED` the slot map is read again
//! (once per new owner, not once per key) and the key is read from the new owner; after
//! `ASK` the key's commands go to the importing node, each after `ASKING`, and the map is
//! kept. A key still redirected after [`MAX_REDIRECTS`] tries is an error naming it. Big
//! values are compared over the second connection too, and start over if their slot moves
//! while their chunks are read.
//!
//! Not here: reading from replicas, or a cluster whose slot map changes faster than a key
//! can be read.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use super::{Check, Lane, Verifier, push_chunk};
use crate::error::{Error, Result};
use crate::keyslot::key_slot;
use crate::net::cluster::{NodeAddr, Redirect, SlotMap, Topology, parse_redirect};
use crate::net::{Conn, Pipe, RedisUrl};
use crate::rdb::{DecodeError, Value};
use crate::resp::Reply;

/// Redirections followed for one key before giving up.
pub(super) const MAX_REDIRECTS: usize = 5;

/// Where a key's commands go: a node, with `ASKING` before each command after an `ASK`.
#[derive(Debug, Clone)]
pub(crate) struct Dest {
    pub(super) addr: NodeAddr,
    pub(super) asking: bool,
}

/// The Cluster's topology and the lanes of its masters.
pub(crate) struct Router {
    topo: Topology,
    /// Lanes by node address (lanes of former masters stay, unused).
    lanes_by_addr: HashMap<NodeAddr, usize>,
    /// Second connections, for keys compared one at a time.
    side: HashMap<NodeAddr, Conn>,
}

pub(super) use crate::net::cluster::is_cluster;

/// The first redirection among a key's replies.
pub(super) fn find_redirect(replies: &[Reply]) -> Option<Redirect> {
    replies.iter().find_map(|r| match r {
        Reply::Error(e) => parse_redirect(e),
        _ => None,
    })
}

impl Router {
    /// Read the slot map from the seed and open a lane to each master.
    pub(super) fn open(seed: &RedisUrl) -> Result<(Vec<Lane>, Router)> {
        let map = SlotMap::discover(seed)?;
        if map.masters().is_empty() {
            return Err(Error::Input {
                path: seed.redacted(),
                msg: "the Cluster has no master serving a slot".into(),
            });
        }
        let mut router = Router {
            topo: Topology::cluster(seed.clone(), map),
            lanes_by_addr: HashMap::new(),
            side: HashMap::new(),
        };
        let mut lanes = Vec::new();
        router.adopt(&mut lanes)?;
        Ok((lanes, router))
    }

    /// Open a lane for each master not seen before.
    fn adopt(&mut self, lanes: &mut Vec<Lane>) -> Result<()> {
        for m in self.topo.masters() {
            if !self.lanes_by_addr.contains_key(&m) {
                lanes.push(Lane::new(Conn::open(&self.topo.url_of(&m))?));
                self.lanes_by_addr.insert(m, lanes.len() - 1);
            }
        }
        Ok(())
    }

    /// The lane of the master of `slot`.
    fn lane_of_slot(&self, slot: u16) -> Option<usize> {
        let node = self.topo.node_for_slot(slot)?;
        self.lanes_by_addr.get(&node).copied()
    }
}

impl Verifier<'_> {
    /// The lane of a key: 0 on a standalone target; on a Cluster, the lane of its slot's
    /// master (only db 0 exists there).
    pub(super) fn route(&mut self, c: &Check) -> Result<usize> {
        let Some(r) = &self.router else {
            return Ok(0);
        };
        if c.db != 0 {
            return Err(self.target_err(format!(
                "key {} of db {} goes to db {}, but a Cluster has only db 0 (map it with --db-map {}=0, or filter with --db)",
                crate::text::excerpt(&c.src_key),
                c.src_db,
                c.db,
                c.src_db
            )));
        }
        let slot = key_slot(&c.key);
        match r.lane_of_slot(slot) {
            Some(i) => Ok(i),
            None => Err(self.target_err(format!(
                "key {}: slot {slot} has no master in the Cluster",
                crate::text::excerpt(&c.key)
            ))),
        }
    }

    fn router(&mut self) -> Result<&mut Router> {
        let target = self.target.clone();
        self.router.as_mut().ok_or(Error::Input {
            path: target,
            msg: "not a Cluster target".into(),
        })
    }

    /// The second connection to a node, opened on first use.
    pub(super) fn side(&mut self, addr: &NodeAddr) -> Result<&mut Conn> {
        let r = self.router()?;
        let url = r.topo.url_of(addr);
        match r.side.entry(addr.clone()) {
            Entry::Occupied(e) => Ok(e.into_mut()),
            Entry::Vacant(e) => Ok(e.insert(Conn::open(&url)?)),
        }
    }

    /// Read the slot map again (after `MOVED`), from any master that answers.
    fn refresh(&mut self) -> Result<()> {
        self.router()?.topo.refresh()?;
        let mut lanes = std::mem::take(&mut self.lanes);
        let res = self.router().and_then(|r| r.adopt(&mut lanes));
        self.lanes = lanes;
        res
    }

    /// Where to send a key after a redirection. `MOVED` to a node the map does not give the
    /// slot to reads the map again.
    fn follow(&mut self, rd: &Redirect) -> Result<Dest> {
        self.rep.redirects += 1;
        let r = self.router()?;
        let addr = r.topo.normalize(rd.addr());
        match rd {
            Redirect::Moved { slot, .. } => {
                if r.topo.node_for_slot(*slot).as_ref() != Some(&addr) {
                    self.refresh()?;
                }
                Ok(Dest {
                    addr,
                    asking: false,
                })
            }
            Redirect::Ask { .. } => Ok(Dest { addr, asking: true }),
        }
    }

    /// Send the commands `build` makes for `key` on the second connection to `start` (or to
    /// the master of the key's slot), following redirections; returns the replies and where
    /// they came from.
    pub(super) fn exec_key(
        &mut self,
        key: &[u8],
        start: Option<Dest>,
        build: &dyn Fn(&mut Pipe),
    ) -> Result<(Vec<Reply>, Dest)> {
        let mut dest = match start {
            Some(d) => d,
            None => {
                let r = self.router()?;
                let slot = key_slot(key);
                match r.topo.node_for_slot(slot) {
                    Some(addr) => Dest {
                        addr,
                        asking: false,
                    },
                    None => {
                        return Err(self.target_err(format!(
                            "key {}: slot {slot} has no master in the Cluster",
                            crate::text::excerpt(key)
                        )));
                    }
                }
            }
        };
        let mut last = String::new();
        for _ in 0..MAX_REDIRECTS {
            let mut p = if dest.asking {
                Pipe::asking()
            } else {
                Pipe::default()
            };
            build(&mut p);
            let r = self.side(&dest.addr)?.exec(&p)?;
            match find_redirect(&r) {
                None => return Ok((r, dest)),
                Some(rd) => {
                    last = format!("{rd:?}");
                    dest = self.follow(&rd)?;
                }
            }
        }
        Err(self.target_err(format!(
            "key {}: still redirected after {MAX_REDIRECTS} tries (last: {last})",
            crate::text::excerpt(key)
        )))
    }

    /// Compare again, one at a time, the keys of sent batches that were redirected.
    pub(super) fn run_retries(&mut self) -> Result<()> {
        while let Some((q, rd)) = self.retry.pop() {
            let dest = self.follow(&rd)?;
            let caps = self.caps;
            let build = |p: &mut Pipe| {
                q.check.push_head(p, caps);
                push_chunk(p, &q.check.key, &q.chunk, caps);
            };
            let (r, _) = self.exec_key(&q.check.key, Some(dest), &build)?;
            self.eval_queued(&q, &r)?;
        }
        Ok(())
    }

    /// A big value on a Cluster: its head read from its node (redirections followed), then
    /// its chunks from the same node; started over if the slot moves meanwhile.
    pub(super) fn big_cluster(
        &mut self,
        check: Check,
        v: &Value<'_>,
        now: i64,
        dec: &dyn Fn(DecodeError) -> Error,
    ) -> Result<()> {
        let mut check = check;
        let mut dest = None;
        for _ in 0..MAX_REDIRECTS {
            let caps = self.caps;
            let key = check.key.clone();
            let (head, d) = self.exec_key(&key, dest.take(), &|p| check.push_head(p, caps))?;
            match self.big(check, v, now, dec, Some((d, head)))? {
                None => return Ok(()),
                Some((c, rd)) => {
                    check = c;
                    dest = Some(self.follow(&rd)?);
                }
            }
        }
        Err(self.target_err(format!(
            "key {}: its slot kept moving while it was compared ({MAX_REDIRECTS} tries)",
            crate::text::excerpt(&check.key)
        )))
    }
}
