//! What a server says about itself: its version (one parser for every check of what a
//! release can do), `INFO` fields, keys per db, and the facts a job needs before writing
//! ([`ServerInfo`]: version, RDB version, mode, limits, memory, keyspace).

use std::collections::BTreeMap;

use super::conn::Conn;
use super::error::NetError;
use crate::resp::Reply;

/// A Redis (or Valkey) release number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

impl Version {
    /// `7.0.15` (missing or bad parts are 0).
    pub fn parse(s: &str) -> Version {
        let mut it = s.trim().split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        Version {
            major: it.next().unwrap_or(0),
            minor: it.next().unwrap_or(0),
            patch: it.next().unwrap_or(0),
        }
    }

    /// Whether this is `major.minor` or later.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }

    /// The RDB version this release writes, and the highest DUMP payload version it
    /// accepts.
    pub fn rdb_version(&self) -> u32 {
        match (self.major, self.minor) {
            (m, _) if m >= 8 => 12,
            (7, n) if n >= 4 => 12,
            (7, 2..) => 11,
            (7, _) => 10,
            (5 | 6, _) => 9,
            (4, _) => 8,
            (3, n) if n >= 2 => 7,
            _ => 6,
        }
    }

    /// `PEXPIRETIME` (7.0+).
    pub fn has_pexpiretime(&self) -> bool {
        self.at_least(7, 0)
    }
    /// `SMISMEMBER` and `ZMSCORE` (6.2+).
    pub fn has_multi_member(&self) -> bool {
        self.at_least(6, 2)
    }
    /// `HPEXPIRETIME` (7.4+).
    pub fn has_field_ttls(&self) -> bool {
        self.at_least(7, 4)
    }
    /// `SET ... PXAT`, `CLIENT PAUSE ... WRITE` (6.2+).
    pub fn has_pxat(&self) -> bool {
        self.at_least(6, 2)
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// `INFO` text as fields (`name:value` lines; section headers and blank lines skipped).
pub fn info_fields(text: &[u8]) -> BTreeMap<String, String> {
    String::from_utf8_lossy(text)
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// Keys per db from `INFO` fields (`db0:keys=12,expires=0,...`); dbs without keys are absent.
pub fn keyspace_of(info: &BTreeMap<String, String>) -> BTreeMap<u64, u64> {
    info.iter()
        .filter_map(|(k, v)| {
            let db = k.strip_prefix("db")?.parse().ok()?;
            let keys = v.split(',').next()?.strip_prefix("keys=")?.parse().ok()?;
            Some((db, keys))
        })
        .collect()
}

/// What a server told us about itself.
#[derive(Debug, Clone, Default)]
pub struct ServerInfo {
    /// `redis_version` (or `valkey_version`) as it reads.
    pub version: String,
    /// The Redis release it is compatible with.
    pub redis_version: Version,
    /// The RDB version this server writes and accepts in payloads.
    pub rdb_version: u32,
    /// `cluster_enabled:1`.
    pub cluster: bool,
    /// `proto-max-bulk-len`, when CONFIG GET is allowed.
    pub proto_max_bulk_len: Option<u64>,
    /// `maxmemory` (0 = none), when CONFIG GET is allowed.
    pub maxmemory: Option<u64>,
    /// `used_memory`.
    pub used_memory: u64,
    /// Keys per db (from `INFO keyspace`).
    pub keyspace: BTreeMap<u64, u64>,
    /// INFO was refused (ACL): version and mode came from HELLO, keyspace is unknown.
    pub info_refused: bool,
}

/// `HELLO 2` as INFO-like fields (for an ACL user without INFO).
fn hello_fields(c: &mut Conn) -> Result<Option<BTreeMap<String, String>>, NetError> {
    let Reply::Array(a) = c.call_small(&[b"HELLO", b"2"])? else {
        return Ok(None);
    };
    let mut m = BTreeMap::new();
    for kv in a.chunks(2) {
        if let [k, v] = kv
            && let Some(k) = k.as_bytes()
        {
            let v = match v {
                Reply::Integer(n) => n.to_string(),
                other => other
                    .as_bytes()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default(),
            };
            m.insert(String::from_utf8_lossy(k).into_owned(), v);
        }
    }
    let mut info = BTreeMap::new();
    if let Some(v) = m.get("version") {
        info.insert("redis_version".to_string(), v.clone());
    }
    if m.get("mode").is_some_and(|v| v == "cluster") {
        info.insert("cluster_enabled".into(), "1".into());
    }
    Ok(Some(info))
}

/// A numeric `CONFIG GET` (`None` when refused: an ACL user without +config).
fn config_number(c: &mut Conn, name: &str) -> Result<Option<u64>, NetError> {
    Ok(c.config_get(name)?.and_then(|v| v.parse().ok()))
}

impl ServerInfo {
    /// Ask the server: `INFO` (or `HELLO` when INFO is refused), `CONFIG GET
    /// proto-max-bulk-len` and `maxmemory`.
    pub fn query(c: &mut Conn) -> Result<ServerInfo, NetError> {
        let (info, info_refused) = match c.call_small(&[b"INFO"])? {
            // INFO is @dangerous in Redis 7: an ACL user may not have it. HELLO (6.0+) still
            // tells the version and the mode.
            Reply::Error(e) => match hello_fields(c)? {
                Some(info) => (info, true),
                None => return Err(c.refused("INFO (and HELLO)", &e)),
            },
            r => (r.as_bytes().map(info_fields).unwrap_or_default(), false),
        };
        let version = info
            .get("valkey_version")
            .or_else(|| info.get("redis_version"))
            .cloned()
            .unwrap_or_default();
        let redis_version = info
            .get("redis_version")
            .map(|v| Version::parse(v))
            .unwrap_or_default();
        Ok(ServerInfo {
            version,
            redis_version,
            rdb_version: redis_version.rdb_version(),
            cluster: info.get("cluster_enabled").is_some_and(|v| v == "1"),
            proto_max_bulk_len: config_number(c, "proto-max-bulk-len")?,
            maxmemory: config_number(c, "maxmemory")?,
            used_memory: info
                .get("used_memory")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            keyspace: keyspace_of(&info),
            info_refused,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rdb_versions() {
        let r = |v: &str| Version::parse(v).rdb_version();
        assert_eq!(r("6.2.14"), 9);
        assert_eq!(r("6.0.9"), 9);
        assert_eq!(r("7.0.15"), 10);
        assert_eq!(r("7.2.4"), 11);
        assert_eq!(r("7.4.1"), 12);
        assert_eq!(r("8.0.0"), 12);
        assert!(Version::parse("6.2.0").at_least(6, 2) && !Version::parse("6.0.9").at_least(6, 2));
    }
}
