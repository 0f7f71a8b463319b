//! A live Redis target: URL, connection, handshake and what the target says about itself.
//! The pipelined writer that `import` sends through is `sink::writer`.
//!
//! Passwords: a [`TargetUrl`] never prints its password; every message uses
//! [`TargetUrl::redacted`] or the bare `host:port`.
//!
//! TLS (`rediss://`) is the transport's business (`net/`): a connection here is a
//! [`net::Stream`] either way.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::net::{self, TlsConfig, TlsOptions};
use crate::resp::{Reply, parse_reply, write_command};

/// Default port.
const DEFAULT_PORT: u16 = 6379;

/// Environment variable that supplies the target password when the URL has none.
pub const PASSWORD_ENV: &str = "RDBFERRY_TO_PASSWORD";

/// Environment variable that supplies the password of a live source (`verify redis://...`)
/// when its URL has none.
pub const FROM_PASSWORD_ENV: &str = "RDBFERRY_FROM_PASSWORD";

/// Which end of a job a URL names: the target (`--to`) or a live source. It only decides the
/// words of messages (which flag, which password variable), never how the server is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// `--to URL`.
    #[default]
    Target,
    /// A live source, such as `verify redis://... --to ...`.
    Source,
}

impl Role {
    /// The environment variable that may hold this URL's password.
    pub fn password_env(self) -> &'static str {
        match self {
            Role::Target => PASSWORD_ENV,
            Role::Source => FROM_PASSWORD_ENV,
        }
    }
    /// How the user gave the URL, for messages.
    fn what(self) -> &'static str {
        match self {
            Role::Target => "--to URL",
            Role::Source => "source URL",
        }
    }
    /// The prefix of its TLS flags.
    fn tls_flags(self) -> &'static str {
        match self {
            Role::Target => "--tls-*",
            Role::Source => "--from-tls-*",
        }
    }
    /// A message of `net/` (which names the target's `--tls-*` flags) in this role's words.
    pub fn reword(self, msg: String) -> String {
        match self {
            Role::Target => msg,
            Role::Source => msg.replace("--tls-", "--from-tls-"),
        }
    }
    /// [`Role::reword`] for the message of an error.
    pub fn reword_err(self, e: Error) -> Error {
        match (self, e) {
            (Role::Target, e) => e,
            (_, Error::Usage(m)) => Error::Usage(self.reword(m)),
            (_, Error::Input { path, msg }) => Error::Input {
                path,
                msg: self.reword(msg),
            },
            (_, Error::Target { target, msg }) => Error::Target {
                target,
                msg: self.reword(msg),
            },
            (_, e) => e,
        }
    }
}

/// A parsed `redis://[user[:password]@]host[:port][/db]`, or `rediss://` for TLS.
#[derive(Clone, PartialEq, Eq)]
pub struct TargetUrl {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// ACL user, if any.
    pub user: Option<String>,
    password: Option<String>,
    /// Database selected first.
    pub db: u64,
    /// Whether the URL named the db (`/N`): then the job writes there by default.
    pub explicit_db: bool,
    /// `rediss://`: connect with TLS.
    pub tls: bool,
    /// The `--tls-*` settings ([`TargetUrl::with_tls`]); the system's roots when not given.
    tls_config: Option<TlsConfig>,
    /// Target or source: the words of messages.
    pub role: Role,
}

impl std::fmt::Debug for TargetUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl TargetUrl {
    /// Parse a target URL; `env_password` (from `RDBFERRY_TO_PASSWORD`) is used when the URL
    /// has no password. Errors never quote the password.
    pub fn parse(url: &str, env_password: Option<String>) -> Result<TargetUrl> {
        TargetUrl::parse_as(url, env_password, Role::Target)
    }

    /// Parse `url` naming the `role` end of a job; `env_password` (from
    /// [`Role::password_env`]) is used when the URL has no password.
    pub fn parse_as(url: &str, env_password: Option<String>, role: Role) -> Result<TargetUrl> {
        let bad = |why: &str| Error::Usage(format!("bad {} {}: {why}", role.what(), redact(url)));
        let (rest, tls) = if let Some(r) = url.strip_prefix("redis://") {
            (r, false)
        } else if let Some(r) = url.strip_prefix("rediss://") {
            (r, true)
        } else {
            return Err(bad(
                "expected redis://[user[:password]@]host[:port][/db] (rediss:// for TLS)",
            ));
        };
        let (auth, hostpart) = match rest.rfind('@') {
            Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
            None => (None, rest),
        };
        let (hostport, path) = match hostpart.find('/') {
            Some(i) => (&hostpart[..i], &hostpart[i + 1..]),
            None => (hostpart, ""),
        };
        let db = if path.is_empty() {
            0
        } else {
            path.parse::<u64>()
                .map_err(|_| bad("the path must be a database number"))?
        };
        let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
            // [::1]:port
            let end = h.find(']').ok_or_else(|| bad("unclosed '[' in host"))?;
            let port = match h[end + 1..].strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad("bad port"))?,
                None => DEFAULT_PORT,
            };
            (h[..end].to_string(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad("bad port"))?),
                None => (hostport.to_string(), DEFAULT_PORT),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let (user, password) = match auth {
            None => (None, None),
            Some(a) => match a.split_once(':') {
                Some((u, p)) => (
                    (!u.is_empty()).then(|| percent_decode(u)),
                    Some(percent_decode(p)),
                ),
                None => ((!a.is_empty()).then(|| percent_decode(a)), None),
            },
        };
        let password = password.or(env_password.filter(|p| !p.is_empty()));
        Ok(TargetUrl {
            host,
            port,
            user,
            password,
            db,
            explicit_db: !path.is_empty(),
            tls,
            tls_config: None,
            role,
        })
    }

    /// Apply the `--tls-*` options: builds the TLS configuration once, for every connection.
    /// Options given for a plain `redis://` URL are an error rather than silently unused.
    pub fn with_tls(mut self, options: &TlsOptions) -> Result<TargetUrl> {
        if !self.tls {
            if options.is_set() {
                return Err(Error::Usage(format!(
                    "{} options need a rediss:// URL, not {}",
                    self.role.tls_flags(),
                    self.redacted()
                )));
            }
            return Ok(self);
        }
        self.tls_config = Some(TlsConfig::new(options).map_err(|e| self.role.reword_err(e))?);
        Ok(self)
    }

    /// The TLS configuration to connect with: `None` for `redis://`; for `rediss://`, the one
    /// [`with_tls`](Self::with_tls) built, or the defaults (the system's roots).
    pub fn tls_config(&self) -> Result<Option<TlsConfig>> {
        match (&self.tls_config, self.tls) {
            (_, false) => Ok(None),
            (Some(c), true) => Ok(Some(c.clone())),
            (None, true) => TlsConfig::new(&TlsOptions::default())
                .map(Some)
                .map_err(|e| self.role.reword_err(e)),
        }
    }

    /// `host:port`, for messages.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The URL with the password replaced by `***`.
    pub fn redacted(&self) -> String {
        let auth = match (&self.user, &self.password) {
            (Some(u), Some(_)) => format!("{u}:***@"),
            (None, Some(_)) => ":***@".to_string(),
            (Some(u), None) => format!("{u}@"),
            (None, None) => String::new(),
        };
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://{auth}{}/{}", self.addr(), self.db)
    }

    /// Whether a password will be sent.
    pub fn has_password(&self) -> bool {
        self.password.is_some()
    }

    /// The password, for AUTH only: never print it.
    pub(crate) fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The same target settings (user, password, TLS) for another node of a Cluster, with
    /// db 0 (a Cluster has no other).
    pub fn with_host_port(&self, host: &str, port: u16) -> TargetUrl {
        TargetUrl {
            host: host.to_string(),
            port,
            db: 0,
            explicit_db: false,
            ..self.clone()
        }
    }

    /// Add a hint to an error of a plain connection before the server's first reply: a TLS
    /// port drops a client that speaks plain RESP, which looks like a reset connection.
    pub fn hint_tls(&self, e: Error) -> Error {
        const HINT: &str = " (if the server serves TLS on this port, use rediss://)";
        match e {
            Error::Target { target, msg } if !self.tls => Error::Target {
                target,
                msg: msg + HINT,
            },
            Error::Input { path, msg } if !self.tls => Error::Input {
                path,
                msg: msg + HINT,
            },
            e => e,
        }
    }

    /// The db the URL names (`/N`), if it names one.
    pub fn url_db(&self) -> Option<u64> {
        self.explicit_db.then_some(self.db)
    }
}

/// Replace the password of a URL-looking string by `***`, for messages about a URL that did
/// not parse.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    match rest.rfind('@') {
        Some(at) => match rest[..at].split_once(':') {
            Some((u, _)) => format!("{}{u}:***{}", &url[..scheme_end + 3], &rest[at..]),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// One connection to the target, with a read buffer for replies.
pub struct Conn {
    stream: net::Stream,
    buf: Vec<u8>,
    start: usize,
    name: String,
}

impl Conn {
    /// Connect, authenticate and select the URL's db.
    pub fn open(url: &TargetUrl, timeout: Duration) -> Result<Conn> {
        let name = url.addr();
        let err = |msg: String| Error::Target {
            target: name.clone(),
            msg,
        };
        let stream = net::connect(&url.host, url.port, url.tls_config()?.as_ref(), timeout)
            .map_err(|e| err(url.role.reword(e.to_string())))?;
        // The replies to AUTH and PING must come within `timeout`: a server that never
        // answers is an error, not a hang.
        let _ = stream.set_read_timeout(Some(timeout));
        let mut c = Conn {
            stream,
            buf: Vec::with_capacity(64 << 10),
            start: 0,
            name,
        };
        // A user without a password still authenticates (as that user: a `nopass` user
        // accepts any password), rather than silently running as `default`.
        let auth = match (&url.user, &url.password) {
            (Some(u), pw) => Some(vec![
                &b"AUTH"[..],
                u.as_bytes(),
                pw.as_deref().unwrap_or("").as_bytes(),
            ]),
            (None, Some(pw)) => Some(vec![&b"AUTH"[..], pw.as_bytes()]),
            (None, None) => None,
        };
        if let Some(args) = auth {
            if let Reply::Error(e) = c.call(&args).map_err(|e| url.hint_tls(e))? {
                let hint = if url.password.is_none() {
                    format!(
                        " (no password given: put it in the URL or in {})",
                        url.role.password_env()
                    )
                } else {
                    String::new()
                };
                return Err(c.err(format!(
                    "authentication failed: {}{hint}",
                    String::from_utf8_lossy(&e)
                )));
            }
        }
        let r = c.call(&[b"PING"]).map_err(|e| url.hint_tls(e))?;
        if let Reply::Error(e) = r {
            let e = String::from_utf8_lossy(&e).into_owned();
            let hint = if e.starts_with("NOAUTH") {
                format!(
                    " (give a password in the URL or in {})",
                    url.role.password_env()
                )
            } else {
                String::new()
            };
            return Err(c.err(format!("{e}{hint}")));
        }
        if url.db != 0 {
            c.select(url.db)?;
        }
        let _ = c.stream.set_read_timeout(None);
        Ok(c)
    }

    /// A read that waits longer than `d` fails (and the writer reconnects).
    pub(crate) fn set_read_timeout(&self, d: Option<Duration>) {
        let _ = self.stream.set_read_timeout(d);
    }

    pub(crate) fn err(&self, msg: String) -> Error {
        Error::Target {
            target: self.name.clone(),
            msg,
        }
    }

    /// `host:port`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The local address of a plain TCP connection: where the target reaches this host
    /// (`None` over TLS).
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.stream.local_tcp_addr()
    }

    /// `INFO section` as fields (an error reply is an error).
    pub fn info(&mut self, section: &str) -> Result<BTreeMap<String, String>> {
        match self.call(&[b"INFO", section.as_bytes()])? {
            Reply::Error(e) => Err(self.err(format!("INFO: {}", String::from_utf8_lossy(&e)))),
            r => Ok(r.as_bytes().map(info_fields).unwrap_or_default()),
        }
    }

    /// Keys per db (`INFO keyspace`; dbs without keys are absent).
    pub fn keyspace(&mut self) -> Result<BTreeMap<u64, u64>> {
        Ok(keyspace_of(&self.info("keyspace")?))
    }

    /// `CONFIG SET name value`; `Ok(Err(reply))` when the server refused it.
    pub fn config_set(
        &mut self,
        name: &str,
        value: &str,
    ) -> Result<std::result::Result<(), String>> {
        let r = self.call(&[b"CONFIG", b"SET", name.as_bytes(), value.as_bytes()])?;
        Ok(match r.error_text() {
            Some(e) => Err(e),
            None => Ok(()),
        })
    }

    /// `CONFIG GET name` (`None` when refused or unknown).
    pub fn config_get(&mut self, name: &str) -> Result<Option<String>> {
        let r = self.call(&[b"CONFIG", b"GET", name.as_bytes()])?;
        let v = match &r {
            Reply::Array(a) => a.get(1).and_then(|r| r.as_bytes()),
            Reply::Map(m) => m.first().and_then(|(_, v)| v.as_bytes()),
            _ => None,
        };
        Ok(v.map(|b| String::from_utf8_lossy(b).into_owned()))
    }

    /// `SELECT db` then `DBSIZE`.
    pub fn dbsize(&mut self, db: u64) -> Result<u64> {
        self.select(db)?;
        match self.call(&[b"DBSIZE"])? {
            Reply::Integer(n) => Ok(n.max(0) as u64),
            Reply::Error(e) => Err(self.err(format!("DBSIZE: {}", String::from_utf8_lossy(&e)))),
            _ => Err(self.err("DBSIZE: unexpected reply".into())),
        }
    }

    fn select(&mut self, db: u64) -> Result<()> {
        let n = db.to_string();
        if let Reply::Error(e) = self.call(&[b"SELECT", n.as_bytes()])? {
            return Err(self.err(format!("SELECT {db}: {}", String::from_utf8_lossy(&e))));
        }
        Ok(())
    }

    /// Send raw RESP bytes.
    pub fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream
            .write_all(bytes)
            .map_err(|e| self.err(format!("write failed: {e}")))
    }

    /// Read one reply.
    pub fn read_reply(&mut self) -> Result<Reply> {
        loop {
            match parse_reply(&self.buf[self.start..]) {
                Ok(Some((r, used))) => {
                    self.start += used;
                    if self.start == self.buf.len() {
                        self.buf.clear();
                        self.start = 0;
                    }
                    return Ok(r);
                }
                Ok(None) => {}
                Err(e) => return Err(self.err(format!("bad reply: {e}"))),
            }
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            let len = self.buf.len();
            self.buf.resize(len + (64 << 10), 0);
            let n = self.stream.read(&mut self.buf[len..]);
            match n {
                Ok(0) => {
                    self.buf.truncate(len);
                    return Err(self.err("connection closed by the target".into()));
                }
                Ok(n) => self.buf.truncate(len + n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => self.buf.truncate(len),
                Err(e) => {
                    self.buf.truncate(len);
                    return Err(self.err(format!("read failed: {e}")));
                }
            }
        }
    }

    /// Send `bytes` and give up the connection: the stream, and what was read past the last
    /// reply (for a protocol that is not replies from here on, as `SYNC`'s payload).
    pub fn send_raw_and_detach(mut self, bytes: &[u8]) -> Result<(net::Stream, Vec<u8>)> {
        self.send(bytes)?;
        let rest = self.buf[self.start..].to_vec();
        Ok((self.stream, rest))
    }

    /// Send one command and read its reply.
    pub fn call(&mut self, args: &[&[u8]]) -> Result<Reply> {
        let mut out = Vec::new();
        write_command(&mut out, args);
        self.send(&out)?;
        self.read_reply()
    }
}

/// What the target told us about itself.
#[derive(Debug, Clone, Default)]
pub struct TargetInfo {
    /// `redis_version` (or `valkey_version`).
    pub version: String,
    /// The RDB version this server writes and accepts in payloads (see [`rdb_version_of`]).
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

/// The RDB version a Redis release writes (and the highest DUMP payload version it accepts).
pub fn rdb_version_of(version: &str) -> u32 {
    let mut it = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    match (major, minor) {
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

fn info_fields(text: &[u8]) -> BTreeMap<String, String> {
    String::from_utf8_lossy(text)
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// Keys per db from `INFO` fields (`db0:keys=12,expires=0,...`); dbs without keys are absent.
fn keyspace_of(info: &BTreeMap<String, String>) -> BTreeMap<u64, u64> {
    info.iter()
        .filter_map(|(k, v)| {
            let db = k.strip_prefix("db")?.parse().ok()?;
            let keys = v.split(',').next()?.strip_prefix("keys=")?.parse().ok()?;
            Some((db, keys))
        })
        .collect()
}

fn config_get(c: &mut Conn, name: &str) -> Result<Option<u64>> {
    // ACL users without +config get an error: tolerated, the check is then skipped.
    Ok(match c.call(&[b"CONFIG", b"GET", name.as_bytes()])? {
        Reply::Array(a) => a
            .get(1)
            .and_then(|r| r.as_bytes())
            .and_then(|b| std::str::from_utf8(b).ok()?.parse().ok()),
        Reply::Map(m) => m
            .first()
            .and_then(|(_, v)| v.as_bytes())
            .and_then(|b| std::str::from_utf8(b).ok()?.parse().ok()),
        _ => None,
    })
}

impl TargetInfo {
    /// Ask the target: `INFO`, `CONFIG GET proto-max-bulk-len` and `maxmemory`.
    pub fn query(c: &mut Conn) -> Result<TargetInfo> {
        let mut info = match c.call(&[b"INFO"])? {
            // INFO is @dangerous in Redis 7: an ACL user may not have it. HELLO (6.0+) still
            // tells the version and the mode.
            Reply::Error(e) => match c.call(&[b"HELLO", b"2"])? {
                Reply::Array(a) => {
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
                    info.insert("info_refused".into(), "1".into());
                    info
                }
                _ => {
                    return Err(c.err(format!(
                        "INFO: {} (and HELLO failed)",
                        String::from_utf8_lossy(&e)
                    )));
                }
            },
            r => r.as_bytes().map(info_fields).unwrap_or_default(),
        };
        let info_refused = info.remove("info_refused").is_some();
        let version = info
            .get("valkey_version")
            .or_else(|| info.get("redis_version"))
            .cloned()
            .unwrap_or_default();
        let rdb_version = match info.get("redis_version") {
            Some(v) => rdb_version_of(v),
            None => 6,
        };
        let keyspace = keyspace_of(&info);
        Ok(TargetInfo {
            version,
            rdb_version,
            cluster: info.get("cluster_enabled").is_some_and(|v| v == "1"),
            proto_max_bulk_len: config_get(c, "proto-max-bulk-len")?,
            maxmemory: config_get(c, "maxmemory")?,
            used_memory: info
                .get("used_memory")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            keyspace,
            info_refused,
        })
    }
}

/// The temporary name a key is rebuilt under, in the key's Cluster slot
/// ([`crate::cluster::tmp_key_for`]): `{key}.rdbferry-tmp` for most keys.
pub fn tmp_key(key: &[u8]) -> Vec<u8> {
    crate::cluster::tmp_key_for(key)
}

/// A key or command for messages: quoted, lossy, cut at 200 bytes.
pub fn show(b: &[u8]) -> String {
    let cut = &b[..b.len().min(200)];
    let s = format!("{:?}", String::from_utf8_lossy(cut));
    if b.len() > 200 { s + "..." } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u = TargetUrl::parse("redis://alice:s3cr%40t@db.example:6380/2", None).unwrap();
        assert_eq!(u.host, "db.example");
        assert_eq!(u.port, 6380);
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.password.as_deref(), Some("s3cr@t"));
        assert_eq!(u.db, 2);
        assert_eq!(u.redacted(), "redis://alice:***@db.example:6380/2");
        assert!(!format!("{u:?}").contains("s3cr"));

        let u = TargetUrl::parse("redis://:pw@h", None).unwrap();
        assert_eq!((u.user.clone(), u.port, u.db), (None, 6379, 0));
        assert_eq!(u.password.as_deref(), Some("pw"));

        let u = TargetUrl::parse("redis://[::1]:7000", Some("env".into())).unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 7000));
        assert_eq!(u.password.as_deref(), Some("env"));

        let e = TargetUrl::parse("redis://u:hunter2@h:notaport", None).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(TargetUrl::parse("http://h", None).is_err());
        assert!(TargetUrl::parse("redis://h/x", None).is_err());
    }

    #[test]
    fn parses_rediss_urls() {
        let u = TargetUrl::parse("rediss://u:pw-x@h:6390/1", None).unwrap();
        assert!(u.tls);
        assert_eq!(u.redacted(), "rediss://u:***@h:6390/1");
        assert!(!TargetUrl::parse("redis://h", None).unwrap().tls);
        // --tls-* flags for a plain URL are refused, not ignored.
        let insecure = TlsOptions {
            insecure: true,
            ..Default::default()
        };
        let e = TargetUrl::parse("redis://:pw-x@h", None)
            .unwrap()
            .with_tls(&insecure)
            .unwrap_err()
            .to_string();
        assert!(e.contains("rediss://") && !e.contains("pw-x"), "{e}");
        let u = TargetUrl::parse("rediss://h", None)
            .unwrap()
            .with_tls(&insecure)
            .unwrap();
        assert_eq!(u.tls_config().unwrap().unwrap().options(), &insecure);
        let plain = TargetUrl::parse("redis://h", None).unwrap();
        assert!(
            plain
                .with_tls(&TlsOptions::default())
                .unwrap()
                .tls_config()
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn rdb_versions() {
        assert_eq!(rdb_version_of("6.2.14"), 9);
        assert_eq!(rdb_version_of("6.0.9"), 9);
        assert_eq!(rdb_version_of("7.0.15"), 10);
        assert_eq!(rdb_version_of("7.2.4"), 11);
        assert_eq!(rdb_version_of("7.4.1"), 12);
        assert_eq!(rdb_version_of("8.0.0"), 12);
    }
}
