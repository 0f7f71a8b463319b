//! [`Topology`]: where a key goes, for every job that writes to or reads from a live server:
//! the one node of a standalone server, or the master that owns the key's slot in a Cluster,
//! from a slot map read again after `MOVED` or a lost node.

use std::sync::RwLock;

use super::map::{NodeAddr, SlotMap};
use crate::keyslot::key_slot;
use crate::net::{NetError, NetErrorKind, RedisUrl};

/// The nodes of a server: one, or a Cluster's masters by slot.
#[derive(Debug)]
pub struct Topology {
    seed: RedisUrl,
    map: Option<RwLock<SlotMap>>,
}

impl Topology {
    /// A standalone server.
    pub fn standalone(seed: RedisUrl) -> Topology {
        Topology { seed, map: None }
    }

    /// A Cluster, reached through `seed`, with its slot map.
    pub fn cluster(seed: RedisUrl, map: SlotMap) -> Topology {
        Topology {
            seed,
            map: Some(RwLock::new(map)),
        }
    }

    /// Whether this is a Cluster.
    pub fn is_cluster(&self) -> bool {
        self.map.is_some()
    }

    /// The URL the user gave.
    pub fn seed(&self) -> &RedisUrl {
        &self.seed
    }

    /// The seed's node.
    fn seed_node(&self) -> NodeAddr {
        NodeAddr::new(self.seed.host.clone(), self.seed.port)
    }

    /// The current slot map (`None` for a standalone server).
    pub fn slot_map(&self) -> Option<SlotMap> {
        self.map.as_ref()?.read().ok().map(|m| m.clone())
    }

    /// The masters (the one node of a standalone server).
    pub fn masters(&self) -> Vec<NodeAddr> {
        match self.slot_map() {
            Some(m) => m.masters().to_vec(),
            None => vec![self.seed_node()],
        }
    }

    /// The node that serves `slot` (`None`: no master owns it now).
    pub fn node_for_slot(&self, slot: u16) -> Option<NodeAddr> {
        match &self.map {
            None => Some(self.seed_node()),
            Some(map) => {
                let map = map.read().ok()?;
                let i = map.owner(slot)?;
                map.masters().get(i).cloned()
            }
        }
    }

    /// The node of `key` (of slot `slot` when known).
    pub fn node_for_key(&self, key: &[u8], slot: Option<u16>) -> Option<NodeAddr> {
        self.node_for_slot(slot.unwrap_or_else(|| key_slot(key)))
    }

    /// The URL to connect to `node` with: the seed's user, password and TLS settings, db 0
    /// on a Cluster; the seed itself on a standalone server.
    pub fn url_of(&self, node: &NodeAddr) -> RedisUrl {
        match &self.map {
            None => self.seed.clone(),
            Some(_) => node.url(&self.seed),
        }
    }

    /// A node as a redirection names it: one that does not know its own endpoint (an empty
    /// or `?` host) is on the seed's host.
    pub fn normalize(&self, a: &NodeAddr) -> NodeAddr {
        if a.host.is_empty() || a.host == "?" {
            NodeAddr::new(self.seed.host.clone(), a.port)
        } else {
            a.clone()
        }
    }

    /// Read the slot map again (after `MOVED`, or a lost node), from any master that answers.
    pub fn refresh(&self) -> Result<(), NetError> {
        let Some(map) = &self.map else {
            return Ok(());
        };
        let poisoned = || {
            NetError::new(
                self.seed.redacted(),
                NetErrorKind::Unexpected {
                    command: "CLUSTER SLOTS".into(),
                    what: "the slot map lock was poisoned".into(),
                },
            )
        };
        let current = map.read().map_err(|_| poisoned())?.clone();
        let fresh = current.refresh(&self.seed)?;
        *map.write().map_err(|_| poisoned())? = fresh;
        Ok(())
    }
}
