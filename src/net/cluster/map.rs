//! The slot map: which master owns each slot, from `CLUSTER SLOTS`.

use crate::keyslot::{SLOTS, key_slot};
use crate::net::conn::TOPOLOGY_REPLY;
use crate::net::{Conn, NetError, NetErrorKind, RedisUrl};
use crate::resp::Reply;

/// A node's address, as the cluster reports it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeAddr {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Client port.
    pub port: u16,
}

impl NodeAddr {
    /// An address.
    pub fn new(host: impl Into<String>, port: u16) -> NodeAddr {
        NodeAddr {
            host: host.into(),
            port,
        }
    }

    /// The URL to connect to this node with: the seed's user, password and TLS settings, db 0
    /// (a Cluster has no other). An empty or `?` host (a node that does not know its
    /// endpoint) is taken to be the seed's host.
    pub fn url(&self, seed: &RedisUrl) -> RedisUrl {
        let host = if self.host.is_empty() || self.host == "?" {
            seed.host.as_str()
        } else {
            self.host.as_str()
        };
        seed.with_host_port(host, self.port)
    }
}

impl std::fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// No owner, in [`SlotMap`]'s table.
const NONE: u16 = u16::MAX;

/// The masters of a Cluster and the owner of each of its 16384 slots.
///
/// Built from `CLUSTER SLOTS` (replicas are left out: everything goes to masters). A slot
/// no master serves is *uncovered*: a write to it fails with `CLUSTERDOWN`, so the import
/// precheck refuses such a cluster before writing anything. Hosts are kept as reported; an
/// empty one (a node with no known endpoint) means the host of the node that was asked.
///
/// ```no_run
/// use rdbferry::{keyslot::key_slot, net::cluster::SlotMap};
/// use rdbferry::net::RedisUrl;
/// let seed = RedisUrl::parse("redis://127.0.0.1:7000", None)?;
/// let map = SlotMap::discover(&seed)?;
/// if let Some(i) = map.owner(key_slot(b"user:42")) {
///     let node = map.masters()[i].url(&seed); // connect there
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotMap {
    masters: Vec<NodeAddr>,
    /// Per master: its node id (empty when the reply gave none).
    ids: Vec<String>,
    /// Per slot: index into `masters`, or [`NONE`].
    owners: Vec<u16>,
}

impl SlotMap {
    /// Ask the node of `url` for `CLUSTER SLOTS`.
    pub fn discover(url: &RedisUrl) -> Result<SlotMap, NetError> {
        let seed = url.with_host_port(&url.host, url.port);
        let mut c = Conn::open(&seed)?;
        let reply = c.call_capped(&[b"CLUSTER", b"SLOTS"], TOPOLOGY_REPLY)?;
        if let Reply::Error(e) = &reply {
            return Err(c.refused("CLUSTER SLOTS", e));
        }
        SlotMap::from_reply(&reply, &url.host).map_err(|what| {
            c.error(NetErrorKind::Unexpected {
                command: "CLUSTER SLOTS".into(),
                what,
            })
        })
    }

    /// Ask again, after a `MOVED` or a failover: each known master in turn, then the seed,
    /// until one answers.
    pub fn refresh(&self, seed: &RedisUrl) -> Result<SlotMap, NetError> {
        let mut last = None;
        for m in &self.masters {
            match SlotMap::discover(&m.url(seed)) {
                Ok(map) => return Ok(map),
                Err(e) => last = Some(e),
            }
        }
        match SlotMap::discover(seed) {
            Ok(map) => Ok(map),
            Err(e) => Err(last.unwrap_or(e)),
        }
    }

    /// Parse a `CLUSTER SLOTS` reply: `[[start, end, [host, port, id, ...], replica...], ...]`.
    /// An empty host is replaced by `seed_host` (the node that was asked).
    pub fn from_reply(reply: &Reply, seed_host: &str) -> std::result::Result<SlotMap, String> {
        let Reply::Array(ranges) = reply else {
            return Err(format!("unexpected reply {reply:?}"));
        };
        let mut map = SlotMap::empty();
        for r in ranges {
            let Reply::Array(r) = r else {
                return Err("a range is not an array".into());
            };
            let (Some(Reply::Integer(start)), Some(Reply::Integer(end)), Some(Reply::Array(m))) =
                (r.first(), r.get(1), r.get(2))
            else {
                return Err("a range has no start, end and master".into());
            };
            if !(0..SLOTS as i64).contains(start) || !(*start..SLOTS as i64).contains(end) {
                return Err(format!("bad slot range {start}-{end}"));
            }
            let host = m
                .first()
                .and_then(Reply::as_bytes)
                .map(|h| String::from_utf8_lossy(h).into_owned())
                .ok_or("a master has no host")?;
            let host = if host.is_empty() || host == "?" {
                seed_host.to_string()
            } else {
                host
            };
            let port = match m.get(1) {
                Some(Reply::Integer(p)) => {
                    u16::try_from(*p).map_err(|_| format!("bad port {p}"))?
                }
                _ => return Err("a master has no port".into()),
            };
            let id = m.get(2).and_then(Reply::as_bytes).unwrap_or_default();
            let id = String::from_utf8_lossy(id);
            map.assign(NodeAddr::new(host, port), &id, (*start as u16, *end as u16));
        }
        Ok(map)
    }

    /// A map where no master owns any slot.
    pub(super) fn empty() -> SlotMap {
        SlotMap {
            masters: Vec::new(),
            ids: Vec::new(),
            owners: vec![NONE; SLOTS as usize],
        }
    }

    /// Give the slots `range` (inclusive, within 0..16384) to the master `addr` (id `id`),
    /// added if new.
    pub(super) fn assign(&mut self, addr: NodeAddr, id: &str, range: (u16, u16)) {
        let i = match self.masters.iter().position(|a| *a == addr) {
            Some(i) => i,
            None => {
                self.masters.push(addr);
                self.ids.push(id.to_string());
                self.masters.len() - 1
            }
        };
        for s in range.0..=range.1.min(SLOTS - 1) {
            self.owners[s as usize] = i as u16;
        }
    }

    /// The node id of master `i` (empty when the server did not say).
    pub fn id(&self, i: usize) -> &str {
        self.ids.get(i).map_or("", String::as_str)
    }

    /// The slot ranges (inclusive) master `i` owns, in order.
    pub fn ranges_of(&self, i: usize) -> Vec<(u16, u16)> {
        let mut out: Vec<(u16, u16)> = Vec::new();
        for s in (0..SLOTS).filter(|&s| self.owner(s) == Some(i)) {
            match out.last_mut() {
                Some(r) if r.1 + 1 == s => r.1 = s,
                _ => out.push((s, s)),
            }
        }
        out
    }

    /// The masters that own at least one slot, in the order `CLUSTER SLOTS` named them.
    pub fn masters(&self) -> &[NodeAddr] {
        &self.masters
    }

    /// The master (index into [`masters`](Self::masters)) that owns `slot`; `None` when no
    /// master does, or for a slot over 16383.
    pub fn owner(&self, slot: u16) -> Option<usize> {
        match self.owners.get(slot as usize) {
            Some(&i) if i != NONE => Some(i as usize),
            _ => None,
        }
    }

    /// The master that owns `key`'s slot.
    pub fn owner_of_key(&self, key: &[u8]) -> Option<usize> {
        self.owner(key_slot(key))
    }

    /// The index of a master by address.
    pub fn index_of(&self, addr: &NodeAddr) -> Option<usize> {
        self.masters.iter().position(|a| a == addr)
    }

    /// The slot ranges (inclusive) no master serves, in order.
    pub fn uncovered(&self) -> Vec<(u16, u16)> {
        let mut out = Vec::new();
        let mut start: Option<u16> = None;
        for s in 0..SLOTS {
            match (self.owner(s).is_none(), start) {
                (true, None) => start = Some(s),
                (false, Some(a)) => {
                    out.push((a, s - 1));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(a) = start {
            out.push((a, SLOTS - 1));
        }
        out
    }
}

/// Slot ranges as text: `0-99, 5000, 16000-16383`.
pub fn show_ranges(ranges: &[(u16, u16)]) -> String {
    ranges
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(n: i64) -> Reply {
        Reply::Integer(n)
    }
    fn bulk(s: &str) -> Reply {
        Reply::Bulk(s.as_bytes().to_vec())
    }
    fn node(h: &str, p: i64) -> Reply {
        Reply::Array(vec![bulk(h), int(p), bulk("0123abcd")])
    }

    #[test]
    fn slots_reply() {
        let reply = Reply::Array(vec![
            Reply::Array(vec![
                int(0),
                int(5460),
                node("127.0.0.1", 7000),
                node("127.0.0.1", 7003),
            ]),
            Reply::Array(vec![int(5461), int(10921), node("", 7001)]),
            Reply::Array(vec![int(10923), int(16383), node("127.0.0.1", 7000)]),
        ]);
        let m = SlotMap::from_reply(&reply, "seed.example").unwrap();
        assert_eq!(
            m.masters(),
            &[
                NodeAddr::new("127.0.0.1", 7000),
                NodeAddr::new("seed.example", 7001)
            ]
        );
        assert_eq!(m.owner(0), Some(0));
        assert_eq!(m.owner(5461), Some(1));
        assert_eq!(m.owner(10922), None);
        assert_eq!(m.owner(16383), Some(0));
        assert_eq!(m.owner(16384), None);
        assert_eq!(m.uncovered(), vec![(10922, 10922)]);
        assert_eq!(m.index_of(&NodeAddr::new("seed.example", 7001)), Some(1));
        assert_eq!(m.owner_of_key(b"foo"), Some(0));
        assert_eq!(m.id(0), "0123abcd");
        assert_eq!(m.ranges_of(0), [(0, 5460), (10923, 16383)]);
        assert_eq!(m.ranges_of(1), [(5461, 10921)]);
        assert_eq!(m.ranges_of(2), []);

        let empty = SlotMap::from_reply(&Reply::Array(vec![]), "h").unwrap();
        assert_eq!(empty.uncovered(), vec![(0, 16383)]);
        assert_eq!(show_ranges(&[(0, 9), (12, 12)]), "0-9, 12");

        for bad in [
            Reply::Nil,
            Reply::Array(vec![Reply::Array(vec![int(0), int(16384), node("h", 1)])]),
            Reply::Array(vec![Reply::Array(vec![int(5), int(4), node("h", 1)])]),
            Reply::Array(vec![Reply::Array(vec![int(0), int(1), node("h", 70000)])]),
            Reply::Array(vec![Reply::Array(vec![int(0), int(1)])]),
        ] {
            assert!(SlotMap::from_reply(&bad, "h").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn node_urls_keep_credentials() {
        let seed = RedisUrl::parse("redis://u:pw@seed:7000/3", None).unwrap();
        let u = NodeAddr::new("10.0.0.2", 7001).url(&seed);
        assert_eq!(u.redacted(), "redis://u:***@10.0.0.2:7001/0");
        assert!(u.has_password());
        assert_eq!(NodeAddr::new("", 7002).url(&seed).addr(), "seed:7002");
        assert_eq!(NodeAddr::new("::1", 7002).to_string(), "[::1]:7002");
    }
}
