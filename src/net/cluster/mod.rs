//! Redis Cluster topology and redirections: which master owns each slot (`CLUSTER SLOTS`;
//! `CLUSTER SHARDS` for `split`, which names files by node), and `MOVED` / `ASK` replies.
//!
//! The import writer and `verify` (target and live source) send each key to the master that
//! owns its slot ([`Topology`]) ([`crate::keyslot::key_slot`]) and follow redirections while a cluster is
//! being resharded. Deliberately not here: replicas (reads and writes both go to masters).

mod map;
mod redirect;
mod shards;
mod topology;

pub use map::{NodeAddr, SlotMap, show_ranges};
pub use redirect::{Redirect, parse_redirect};
pub use topology::Topology;
