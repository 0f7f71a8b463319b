//! `MOVED` and `ASK` error replies.

use super::map::NodeAddr;

/// Where a Cluster node sent a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    /// `MOVED slot host:port`: the slot belongs to that node now; refresh the slot map and
    /// resend there.
    Moved {
        /// The slot.
        slot: u16,
        /// Its owner. The host is empty when the node does not know its own endpoint
        /// (`cluster-announce-hostname` unset with hostname endpoints): use the host of the
        /// connection that got the reply.
        addr: NodeAddr,
    },
    /// `ASK slot host:port`: the slot is being migrated and this key is (or will be) there;
    /// resend this command only, preceded by `ASKING`, and keep the slot map.
    Ask {
        /// The slot.
        slot: u16,
        /// The importing node.
        addr: NodeAddr,
    },
}

impl Redirect {
    /// The node to resend to.
    pub fn addr(&self) -> &NodeAddr {
        match self {
            Redirect::Moved { addr, .. } | Redirect::Ask { addr, .. } => addr,
        }
    }

    /// The slot.
    pub fn slot(&self) -> u16 {
        match self {
            Redirect::Moved { slot, .. } | Redirect::Ask { slot, .. } => *slot,
        }
    }
}

/// Parse an error reply (with or without its leading `-`) as a redirection:
/// `MOVED 3999 127.0.0.1:6381`, `ASK 3999 10.0.0.2:7000`, `MOVED 1 redis-2.example:6379`,
/// `MOVED 1 [::1]:7000` or `MOVED 1 ::1:7000` (Redis prints IPv6 addresses without brackets).
/// `None` for any other error.
///
/// ```
/// use rdbferry::net::cluster::{NodeAddr, Redirect, parse_redirect};
/// assert_eq!(
///     parse_redirect(b"MOVED 3999 127.0.0.1:6381"),
///     Some(Redirect::Moved { slot: 3999, addr: NodeAddr::new("127.0.0.1", 6381) })
/// );
/// assert_eq!(parse_redirect(b"ERR unknown command"), None);
/// ```
pub fn parse_redirect(err: &[u8]) -> Option<Redirect> {
    let text = std::str::from_utf8(err).ok()?;
    let text = text.strip_prefix('-').unwrap_or(text).trim_end();
    let mut it = text.split(' ');
    let kind = it.next()?;
    let slot: u16 = it.next()?.parse().ok()?;
    let endpoint = it.next()?;
    if it.next().is_some() || slot >= crate::keyslot::SLOTS {
        return None;
    }
    let (host, port) = endpoint.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let addr = NodeAddr::new(host, port);
    match kind {
        "MOVED" => Some(Redirect::Moved { slot, addr }),
        "ASK" => Some(Redirect::Ask { slot, addr }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects() {
        let m = |h: &str, p| NodeAddr::new(h, p);
        assert_eq!(
            parse_redirect(b"-MOVED 3999 127.0.0.1:6381\r\n"),
            Some(Redirect::Moved {
                slot: 3999,
                addr: m("127.0.0.1", 6381)
            })
        );
        assert_eq!(
            parse_redirect(b"ASK 0 redis-2.example:7000"),
            Some(Redirect::Ask {
                slot: 0,
                addr: m("redis-2.example", 7000)
            })
        );
        for s in [&b"MOVED 16383 [::1]:7000"[..], b"MOVED 16383 ::1:7000"] {
            let r = parse_redirect(s).unwrap();
            assert_eq!(r.addr(), &m("::1", 7000));
            assert_eq!(r.slot(), 16383);
        }
        // Unknown endpoint: the caller substitutes the host it asked.
        assert_eq!(
            parse_redirect(b"MOVED 5 :6380").map(|r| r.addr().clone()),
            Some(m("", 6380))
        );
        for bad in [
            &b"MOVED 16384 h:1"[..],
            b"MOVED x h:1",
            b"MOVED 1 h",
            b"MOVED 1 h:99999",
            b"MOVED 1",
            b"ERR MOVED 1 h:1",
            b"TRYAGAIN Multiple keys request during rehashing of slot",
            b"MOVED 1 h:1 extra",
            b"\xffMOVED",
        ] {
            assert_eq!(
                parse_redirect(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
