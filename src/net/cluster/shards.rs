//! The masters of a Cluster with their node ids and slot ranges, as `split --by-slots
//! cluster=URL` needs them: `CLUSTER SHARDS` on 7.0 and later (the command 7.0 added to
//! replace `CLUSTER SLOTS`: one entry per shard, every range of a master together, the
//! node's id and preferred endpoint), `CLUSTER SLOTS` before. Both give a [`SlotMap`].

use super::map::{NodeAddr, SlotMap};
use crate::keyslot::SLOTS;
use crate::net::conn::TOPOLOGY_REPLY;
use crate::net::{Conn, NetError, NetErrorKind, RedisUrl};
use crate::resp::Reply;

impl SlotMap {
    /// Ask the node of `url` for its Cluster's masters: `CLUSTER SHARDS` when it runs 7.0 or
    /// later, else `CLUSTER SLOTS`. Node ids are known either way ([`SlotMap::id`]).
    pub fn discover_shards(url: &RedisUrl) -> Result<SlotMap, NetError> {
        let seed = url.with_host_port(&url.host, url.port);
        let mut c = Conn::open(&seed)?;
        if !c.version()?.at_least(7, 0) {
            return SlotMap::discover(url);
        }
        let reply = c.call_capped(&[b"CLUSTER", b"SHARDS"], TOPOLOGY_REPLY)?;
        if let Reply::Error(e) = &reply {
            return Err(c.refused("CLUSTER SHARDS", e));
        }
        SlotMap::from_shards_reply(&reply, &url.host, url.tls).map_err(|what| {
            c.error(NetErrorKind::Unexpected {
                command: "CLUSTER SHARDS".into(),
                what,
            })
        })
    }

    /// Parse a `CLUSTER SHARDS` reply (RESP2 arrays of name/value pairs, or RESP3 maps):
    /// per shard, `slots` (start, end, start, end...) and `nodes`, of which the one with
    /// `role` `master` is kept. Its address is its `endpoint` (the cluster's preferred
    /// endpoint type), else its `ip`, else `seed_host`; its port is `tls-port` when `tls`
    /// and it has one, else `port`. Shards without slots are left out.
    pub fn from_shards_reply(
        reply: &Reply,
        seed_host: &str,
        tls: bool,
    ) -> std::result::Result<SlotMap, String> {
        let Reply::Array(shards) = reply else {
            return Err(format!("unexpected reply {reply:?}"));
        };
        let mut map = SlotMap::empty();
        for shard in shards {
            let ranges = slot_ranges(field(shard, "slots").ok_or("a shard has no slots")?)?;
            if ranges.is_empty() {
                continue;
            }
            let Some(Reply::Array(nodes)) = field(shard, "nodes") else {
                return Err("a shard has no nodes".into());
            };
            let master = nodes
                .iter()
                .find(|n| text(n, "role").as_deref() == Some("master"))
                .ok_or_else(|| format!("slots {}-... have no master", ranges[0].0))?;
            let (addr, id) = master_addr(master, seed_host, tls)?;
            for r in ranges {
                map.assign(addr.clone(), &id, r);
            }
        }
        Ok(map)
    }
}

/// The address and id of a shard's master node.
fn master_addr(
    node: &Reply,
    seed_host: &str,
    tls: bool,
) -> std::result::Result<(NodeAddr, String), String> {
    let id = text(node, "id").ok_or("a master has no id")?;
    let known = |h: &Option<String>| h.as_ref().is_some_and(|h| !h.is_empty() && h != "?");
    let host = [text(node, "endpoint"), text(node, "ip")]
        .into_iter()
        .find(known)
        .flatten()
        .unwrap_or_else(|| seed_host.to_string());
    let port = |name| match field(node, name) {
        Some(Reply::Integer(p)) => u16::try_from(*p)
            .map(Some)
            .map_err(|_| format!("master {id}: bad {name} {p}")),
        _ => Ok(None),
    };
    let port = match (tls, port("tls-port")?, port("port")?) {
        (true, Some(p), _) | (_, _, Some(p)) | (_, Some(p), None) => p,
        _ => return Err(format!("master {id} has no port")),
    };
    Ok((NodeAddr::new(host, port), id))
}

/// The value named `name` in a RESP2 array of name/value pairs or a RESP3 map.
fn field<'a>(entry: &'a Reply, name: &str) -> Option<&'a Reply> {
    match entry {
        Reply::Array(items) => items
            .chunks_exact(2)
            .find(|kv| kv[0].as_bytes() == Some(name.as_bytes()))
            .map(|kv| &kv[1]),
        Reply::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| k.as_bytes() == Some(name.as_bytes()))
            .map(|(_, v)| v),
        _ => None,
    }
}

/// A text field.
fn text(entry: &Reply, name: &str) -> Option<String> {
    let b = field(entry, name)?.as_bytes()?;
    Some(String::from_utf8_lossy(b).into_owned())
}

/// `slots`: start, end, start, end... (integers, inclusive).
fn slot_ranges(slots: &Reply) -> std::result::Result<Vec<(u16, u16)>, String> {
    let Reply::Array(items) = slots else {
        return Err("slots is not an array".into());
    };
    if items.len() % 2 != 0 {
        return Err("slots has an odd number of bounds".into());
    }
    let slot = |r: &Reply| match r {
        Reply::Integer(n) if (0..i64::from(SLOTS)).contains(n) => Ok(*n as u16),
        _ => Err(format!("bad slot {r:?}")),
    };
    items
        .chunks_exact(2)
        .map(|p| match (slot(&p[0])?, slot(&p[1])?) {
            (a, b) if a <= b => Ok((a, b)),
            (a, b) => Err(format!("bad slot range {a}-{b}")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(s.as_bytes().to_vec())
    }
    fn node(id: &str, endpoint: &str, port: i64, tls_port: Option<i64>, role: &str) -> Reply {
        let mut v = vec![bulk("id"), bulk(id), bulk("port"), Reply::Integer(port)];
        if let Some(t) = tls_port {
            v.extend([bulk("tls-port"), Reply::Integer(t)]);
        }
        v.extend([
            bulk("ip"),
            bulk("10.0.0.9"),
            bulk("endpoint"),
            bulk(endpoint),
            bulk("role"),
            bulk(role),
        ]);
        Reply::Array(v)
    }
    fn shard(slots: &[i64], nodes: Vec<Reply>) -> Reply {
        let slots = slots.iter().map(|&n| Reply::Integer(n)).collect();
        Reply::Array(vec![
            bulk("slots"),
            Reply::Array(slots),
            bulk("nodes"),
            Reply::Array(nodes),
        ])
    }

    #[test]
    fn shards_reply() {
        let reply = Reply::Array(vec![
            shard(
                &[0, 99, 200, 299],
                vec![
                    node("r1", "h1", 7003, None, "replica"),
                    node("m1", "h1", 7000, Some(8000), "master"),
                ],
            ),
            shard(&[100, 199], vec![node("m2", "?", 7001, None, "master")]),
            shard(&[], vec![node("m3", "h3", 7002, None, "master")]),
        ]);
        let m = SlotMap::from_shards_reply(&reply, "seed", false).unwrap();
        assert_eq!(
            m.masters(),
            [NodeAddr::new("h1", 7000), NodeAddr::new("10.0.0.9", 7001)]
        );
        assert_eq!((m.id(0), m.id(1)), ("m1", "m2"));
        assert_eq!(m.ranges_of(0), [(0, 99), (200, 299)]);
        assert_eq!(m.ranges_of(1), [(100, 199)]);
        let tls = SlotMap::from_shards_reply(&reply, "seed", true).unwrap();
        assert_eq!(tls.masters()[0], NodeAddr::new("h1", 8000));

        let map = Reply::Map(vec![
            (bulk("slots"), Reply::Array(vec![Reply::Integer(5); 2])),
            (
                bulk("nodes"),
                Reply::Array(vec![Reply::Map(vec![
                    (bulk("id"), bulk("x")),
                    (bulk("port"), Reply::Integer(1)),
                    (bulk("role"), bulk("master")),
                ])]),
            ),
        ]);
        let m = SlotMap::from_shards_reply(&Reply::Array(vec![map]), "seed", false).unwrap();
        assert_eq!(m.masters(), [NodeAddr::new("seed", 1)]);
        assert_eq!(m.owner(5), Some(0));

        for bad in [
            Reply::Nil,
            Reply::Array(vec![shard(&[0], vec![])]),
            Reply::Array(vec![shard(&[0, 16384], vec![])]),
            Reply::Array(vec![shard(&[9, 1], vec![])]),
            Reply::Array(vec![shard(
                &[0, 1],
                vec![node("r", "h", 1, None, "replica")],
            )]),
            Reply::Array(vec![shard(
                &[0, 1],
                vec![node("m", "h", 70000, None, "master")],
            )]),
        ] {
            assert!(
                SlotMap::from_shards_reply(&bad, "h", false).is_err(),
                "{bad:?}"
            );
        }
    }
}
