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

use super::{Conn, NetError, Pipe};
use crate::resp::Reply;

/// Whether the node says `cluster_enabled:1` (`INFO cluster`; a refused `INFO` is taken for
/// a standalone node).
pub fn is_cluster(conn: &mut Conn) -> Result<bool, NetError> {
    let mut p = Pipe::default();
    p.push(&[b"INFO", b"cluster"]);
    let r = conn.exec(&p)?;
    Ok(match r.first() {
        Some(Reply::Bulk(b)) => String::from_utf8_lossy(b)
            .lines()
            .any(|l| l.trim() == "cluster_enabled:1"),
        _ => false,
    })
}
