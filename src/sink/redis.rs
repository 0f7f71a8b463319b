//! A live Redis target: URL, connection, handshake, and the pipelined writer behind `import`.
//!
//! Where it sits: the job (`job::import`) turns each input entry into a [`Unit`] (the encoded
//! commands that write one key, one AOF command or one function library, and how to read
//! their replies); [`Writer`] sends units over `--connections` TCP connections, `--pipeline`
//! commands in flight on each, and maps every reply back to the unit (so an error names its
//! key). One key always goes to the same connection (by a hash of db and key), so the commands
//! of a key are applied in order.
//!
//! Passwords: a [`TargetUrl`] never prints its password; every message uses
//! [`TargetUrl::redacted`] or the bare `host:port`.
//!
//! TLS (`rediss://`) is the transport's business (`net/`): a connection here is a
//! [`net::Stream`] either way, and the writing thread holds its [`net::WriteHalf`].
//!
//! Not here (yet): Cluster routing, retries after a dropped connection.
//! A dropped connection stops the import with an error naming the target.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::net::{self, TlsConfig, TlsOptions};
use crate::resp::{Reply, parse_reply, write_command};

/// Default port.
const DEFAULT_PORT: u16 = 6379;

/// Environment variable that supplies the target password when the URL has none.
pub const PASSWORD_ENV: &str = "RDBFERRY_TO_PASSWORD";

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
    /// Parse `url`; `env_password` (from `RDBFERRY_TO_PASSWORD`) is used when the URL has no
    /// password. Errors never quote the password.
    pub fn parse(url: &str, env_password: Option<String>) -> Result<TargetUrl> {
        let bad = |why: &str| Error::Usage(format!("bad --to URL {}: {why}", redact(url)));
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
        })
    }

    /// Apply the `--tls-*` options: builds the TLS configuration once, for every connection.
    /// Options given for a plain `redis://` URL are an error rather than silently unused.
    pub fn with_tls(mut self, options: &TlsOptions) -> Result<TargetUrl> {
        if !self.tls {
            if options.is_set() {
                return Err(Error::Usage(format!(
                    "--tls-* options need a rediss:// URL, not {}",
                    self.redacted()
                )));
            }
            return Ok(self);
        }
        self.tls_config = Some(TlsConfig::new(options)?);
        Ok(self)
    }

    /// The TLS configuration to connect with: `None` for `redis://`; for `rediss://`, the one
    /// [`with_tls`](Self::with_tls) built, or the defaults (the system's roots).
    pub fn tls_config(&self) -> Result<Option<TlsConfig>> {
        match (&self.tls_config, self.tls) {
            (_, false) => Ok(None),
            (Some(c), true) => Ok(Some(c.clone())),
            (None, true) => TlsConfig::new(&TlsOptions::default()).map(Some),
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

    /// Add a hint to an error of a plain connection before the server's first reply: a TLS
    /// port drops a client that speaks plain RESP, which looks like a reset connection.
    pub fn hint_tls(&self, e: Error) -> Error {
        const HINT: &str = " (if the target serves TLS on this port, use rediss://)";
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
            .map_err(|e| err(e.to_string()))?;
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
                    " (no password given: put it in the URL or in RDBFERRY_TO_PASSWORD)"
                } else {
                    ""
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
                " (give a password in the URL or in RDBFERRY_TO_PASSWORD)"
            } else {
                ""
            };
            return Err(c.err(format!("{e}{hint}")));
        }
        if url.db != 0 {
            c.select(url.db)?;
        }
        let _ = c.stream.set_read_timeout(None);
        Ok(c)
    }

    fn err(&self, msg: String) -> Error {
        Error::Target {
            target: self.name.clone(),
            msg,
        }
    }

    /// `host:port`.
    pub fn name(&self) -> &str {
        &self.name
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
        let keyspace = info
            .iter()
            .filter_map(|(k, v)| {
                let db = k.strip_prefix("db")?.parse().ok()?;
                let keys = v.split(',').next()?.strip_prefix("keys=")?.parse().ok()?;
                Some((db, keys))
            })
            .collect();
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

/// The temporary name a key is rebuilt under. Without braces in the key, the name is
/// `{key}.rdbferry-tmp`, so it hashes to the key's Cluster slot.
pub fn tmp_key(key: &[u8]) -> Vec<u8> {
    if key.contains(&b'{') || key.contains(&b'}') {
        [key, b".rdbferry-tmp"].concat()
    } else {
        [b"{", key, b"}.rdbferry-tmp"].concat()
    }
}

/// How to read the replies of a [`Unit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitKind {
    /// One `RESTORE`: `BUSYKEY` is a conflict.
    Restore,
    /// A key rebuilt under a temporary name and renamed into place. With `nx`, the rename is
    /// `RENAMENX` followed by `DEL tmp`, and a 0 from `RENAMENX` is a conflict. `multi` says
    /// whether the whole unit is one `MULTI`/`EXEC`.
    Rewrite {
        /// `RENAMENX` + `DEL tmp` end the unit.
        nx: bool,
        /// Wrapped in `MULTI`/`EXEC`.
        multi: bool,
    },
    /// `SET key value [NX] [PXAT ms]`: with `nx`, a nil reply is a conflict.
    Set {
        /// `NX` was given.
        nx: bool,
    },
    /// One part of a key too big to be prepared whole: the commands building it under its
    /// temporary name, sent in order on one connection. The `last` part renames it into
    /// place (`nx`: RENAMENX + DEL tmp). A failed part fails the key; if the rename still
    /// went through, the half-built key is deleted.
    Part {
        /// The part that renames.
        last: bool,
        /// RENAMENX + DEL tmp end the last part.
        nx: bool,
    },
    /// An AOF command (or any command whose only failure is an error reply).
    Command,
    /// `FUNCTION LOAD`: "already exists" is a conflict.
    Function,
}

/// The commands that write one entry, and how to read their replies.
#[derive(Debug, Clone)]
pub struct Unit {
    /// Database (after `--db-map`).
    pub db: u64,
    /// What to name in messages (the key, or the command).
    pub label: Vec<u8>,
    /// The encoded commands.
    pub bytes: Vec<u8>,
    /// How many replies they produce.
    pub replies: usize,
    /// How to read them.
    pub kind: UnitKind,
    /// Which connection (a hash of db and key; 0 for ordered commands).
    pub route: u64,
}

/// What became of a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Written.
    Written,
    /// The key (or library) already existed and was left alone.
    Conflict,
    /// The target refused it.
    Error(String),
}

/// Counters the writer threads share with the job.
#[derive(Debug, Default, Clone)]
pub struct WriteStats {
    /// Keys (units) written.
    pub written: u64,
    /// Conflicts (left alone).
    pub conflicts: u64,
    /// Units refused.
    pub errors: u64,
    /// Commands sent (including MULTI/EXEC and SELECT).
    pub commands: u64,
    /// The first error messages, each naming its key.
    pub messages: Vec<String>,
}

/// Most error messages kept.
pub const MAX_MESSAGES: usize = 100;

/// What the writer does on a conflict: the job decides (`--on-conflict`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictRule {
    /// A conflict is an error.
    Fail,
    /// A conflict is counted and the key left alone.
    Skip,
    /// Conflicts cannot happen (REPLACE / RENAME).
    Replace,
}

/// Writer options.
#[derive(Debug, Clone, Copy)]
pub struct WriterOptions {
    /// Connections.
    pub connections: usize,
    /// Commands in flight per connection.
    pub pipeline: usize,
    /// What a conflict is.
    pub conflict: ConflictRule,
    /// Stop everything at the first refused unit.
    pub stop_on_error: bool,
}

enum Msg {
    Unit(Unit),
    Barrier(SyncSender<()>),
}

struct Shared {
    stats: Mutex<WriteStats>,
    stop: AtomicBool,
    fatal: Mutex<Option<Error>>,
    /// Keys sent in parts and not finished (the import stopped): their temporary keys are
    /// deleted by [`Writer::finish`].
    abandoned: Mutex<Vec<(u64, Vec<u8>)>>,
    /// Bytes of units queued and not yet written, and its wake-up.
    queued: Mutex<usize>,
    drained: std::sync::Condvar,
}

/// Most bytes of queued units, over all connections.
const QUEUE_BYTES: usize = 64 << 20;

/// Pipelined writer over several connections. Each connection has a sending and a receiving
/// thread; units are queued to it through a bounded channel (so a slow target slows the input
/// down, and memory stays bounded).
pub struct Writer {
    url: TargetUrl,
    senders: Vec<SyncSender<Msg>>,
    threads: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
}

/// Most bytes gathered into one write.
const BATCH_BYTES: usize = 4 << 20;

impl Writer {
    /// Open `opts.connections` connections to `url`.
    pub fn open(url: &TargetUrl, opts: WriterOptions) -> Result<Writer> {
        let shared = Arc::new(Shared {
            stats: Mutex::new(WriteStats::default()),
            stop: AtomicBool::new(false),
            fatal: Mutex::new(None),
            abandoned: Mutex::new(Vec::new()),
            queued: Mutex::new(0),
            drained: std::sync::Condvar::new(),
        });
        let mut senders = Vec::new();
        let mut threads = Vec::new();
        for _ in 0..opts.connections.max(1) {
            let conn = Conn::open(url, Duration::from_secs(10))?;
            let stream = conn
                .stream
                .try_clone_writer()
                .map_err(|e| conn.err(format!("cannot clone the socket: {e}")))?;
            let name = conn.name.clone();
            let (tx, rx) = sync_channel::<Msg>(opts.pipeline.max(1) * 2);
            // At most this many written batches wait for their replies.
            let (sent_tx, sent_rx) = sync_channel::<Sent>(4);
            let (sh, sh2, o, u) = (shared.clone(), shared.clone(), opts, url.clone());
            threads.push(std::thread::spawn(move || {
                writer_loop(stream, name, rx, sent_tx, sh, o)
            }));
            threads.push(std::thread::spawn(move || {
                reader_loop(conn, u, sent_rx, sh2, o)
            }));
            senders.push(tx);
        }
        Ok(Writer {
            url: url.clone(),
            senders,
            threads,
            shared,
        })
    }

    /// Whether the writer has stopped (a fatal error, or an error with `--on-error stop`).
    pub fn stopped(&self) -> bool {
        self.shared.stop.load(Ordering::Relaxed)
    }

    /// Queue a unit on its connection.
    pub fn send(&self, unit: Unit) -> Result<()> {
        let i = (unit.route % self.senders.len() as u64) as usize;
        // Bound the bytes waiting in the queues (not just the number of units): a big key
        // comes as many multi-megabyte parts. One unit always passes an empty queue.
        let n = unit.bytes.len();
        if let Ok(mut q) = self.shared.queued.lock() {
            while *q > 0 && *q + n > QUEUE_BYTES && !self.stopped() {
                match self
                    .shared
                    .drained
                    .wait_timeout(q, Duration::from_millis(100))
                {
                    Ok((g, _)) => q = g,
                    Err(_) => return Err(self.stop_error()),
                }
            }
            *q += n;
        }
        if self.stopped() || self.senders[i].send(Msg::Unit(unit)).is_err() {
            return Err(self.stop_error());
        }
        Ok(())
    }

    fn stop_error(&self) -> Error {
        if let Ok(mut f) = self.shared.fatal.lock()
            && let Some(e) = f.take()
        {
            return e;
        }
        Error::Usage("import stopped after an error (--on-error stop)".into())
    }

    /// Wait until everything queued so far has been acknowledged by the target (before
    /// switching from parallel keys to ordered AOF commands).
    pub fn barrier(&self) -> Result<()> {
        let mut waits = Vec::new();
        for s in &self.senders {
            let (tx, rx) = sync_channel(1);
            if s.send(Msg::Barrier(tx)).is_err() {
                return Err(self.stop_error());
            }
            waits.push(rx);
        }
        for w in waits {
            let _ = w.recv();
        }
        if self.stopped() {
            return Err(self.stop_error());
        }
        Ok(())
    }

    /// A copy of the counters so far.
    pub fn stats(&self) -> WriteStats {
        self.shared
            .stats
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Drain and close every connection; returns the counters, and the fatal error if a
    /// connection failed.
    pub fn finish(mut self) -> (WriteStats, Option<Error>) {
        self.senders.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let mut fatal = self.shared.fatal.lock().ok().and_then(|mut f| f.take());
        let abandoned = self
            .shared
            .abandoned
            .lock()
            .map(|mut a| std::mem::take(&mut *a))
            .unwrap_or_default();
        if !abandoned.is_empty()
            && let Err(e) = delete_tmp_keys(&self.url, &abandoned)
            && fatal.is_none()
        {
            fatal = Some(e);
        }
        (self.stats(), fatal)
    }

    /// A key sent in parts will not be finished: its temporary key is deleted at the end.
    pub fn abandon(&self, db: u64, key: Vec<u8>) {
        if let Ok(mut a) = self.shared.abandoned.lock() {
            a.push((db, key));
        }
    }
}

/// Delete the temporary keys of keys that were not finished.
fn delete_tmp_keys(url: &TargetUrl, keys: &[(u64, Vec<u8>)]) -> Result<()> {
    let mut c = Conn::open(url, Duration::from_secs(10))?;
    let mut seen = std::collections::HashSet::new();
    for (db, key) in keys {
        if !seen.insert((db, key)) {
            continue;
        }
        let tmp = tmp_key(key);
        for args in [&[b"SELECT", db.to_string().as_bytes()][..], &[b"DEL", &tmp]] {
            if let Reply::Error(e) = c.call(args)? {
                return Err(c.err(format!(
                    "cannot delete the temporary key {}: {}",
                    show(&tmp),
                    String::from_utf8_lossy(&e)
                )));
            }
        }
    }
    Ok(())
}

/// What the reader thread of a connection must read: the units of one written batch (their
/// bytes already sent), each with whether a SELECT went before it, and the barriers to
/// acknowledge after them.
struct Sent {
    units: Vec<(bool, Unit)>,
    barriers: Vec<SyncSender<()>>,
}

fn set_fatal(sh: &Shared, e: Error) {
    if let Ok(mut f) = sh.fatal.lock()
        && f.is_none()
    {
        *f = Some(e);
    }
    sh.stop.store(true, Ordering::Relaxed);
}

/// The sending half of a connection: gathers queued units into one write of up to
/// `--pipeline` commands, and hands their descriptions to the reader. The reader reads
/// replies while the next batch is written, so the target never waits for us; the bounded
/// channel between the two caps the commands in flight.
fn writer_loop(
    mut stream: net::WriteHalf,
    name: String,
    rx: Receiver<Msg>,
    to_reader: SyncSender<Sent>,
    sh: Arc<Shared>,
    opts: WriterOptions,
) {
    let mut db: Option<u64> = None;
    let mut out: Vec<u8> = Vec::new();
    loop {
        // Block for the first message, then take whatever else is queued, up to the pipeline.
        let first = match rx.recv() {
            Ok(m) => m,
            Err(_) => return,
        };
        let mut sent = Sent {
            units: Vec::new(),
            barriers: Vec::new(),
        };
        let mut cmds = 0usize;
        let mut taken = 0usize;
        let mut next = Some(first);
        while let Some(m) = next.take() {
            match m {
                Msg::Unit(mut u) => {
                    let sel = db != Some(u.db);
                    if sel {
                        write_command(&mut out, &[b"SELECT", u.db.to_string().as_bytes()]);
                        db = Some(u.db);
                        cmds += 1;
                    }
                    cmds += u.replies;
                    out.extend_from_slice(&u.bytes);
                    taken += u.bytes.len();
                    u.bytes = Vec::new();
                    sent.units.push((sel, u));
                }
                Msg::Barrier(b) => sent.barriers.push(b),
            }
            if cmds < opts.pipeline && out.len() < BATCH_BYTES {
                next = match rx.try_recv() {
                    Ok(m) => Some(m),
                    Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => None,
                };
            }
        }
        if sh.stop.load(Ordering::Relaxed) {
            // Stopped: send nothing more, but let the barriers through. A key whose parts
            // are cut short leaves its temporary key, deleted at the end.
            if let Ok(mut a) = sh.abandoned.lock() {
                for (_, u) in &sent.units {
                    if matches!(u.kind, UnitKind::Part { .. }) {
                        a.push((u.db, u.label.clone()));
                    }
                }
            }
            sent.units.clear();
        } else if !out.is_empty()
            && let Err(e) = stream.write_all(&out)
        {
            set_fatal(
                &sh,
                Error::Target {
                    target: name.clone(),
                    msg: format!("write failed: {e}"),
                },
            );
            sent.units.clear();
        }
        out.clear();
        if out.capacity() > BATCH_BYTES * 2 {
            out.shrink_to(BATCH_BYTES);
        }
        if let Ok(mut q) = sh.queued.lock() {
            *q = q.saturating_sub(taken);
            sh.drained.notify_all();
        }
        if to_reader.send(sent).is_err() {
            return;
        }
    }
}

/// The receiving half: reads every reply in order, settles each unit, and deletes keys left
/// half-built (over a connection of its own, so the two halves never interleave commands).
fn reader_loop(
    mut conn: Conn,
    url: TargetUrl,
    rx: Receiver<Sent>,
    sh: Arc<Shared>,
    opts: WriterOptions,
) {
    let mut broken = false;
    // Keys sent in parts whose earlier part failed.
    let mut failed = std::collections::HashSet::new();
    for sent in rx {
        if !broken
            && !sent.units.is_empty()
            && let Err(e) = read_batch(&mut conn, &url, &sent.units, &sh, opts, &mut failed)
        {
            set_fatal(&sh, e);
            broken = true;
        }
        for b in sent.barriers {
            let _ = b.send(());
        }
    }
}

/// Read the replies of one batch and settle each unit.
fn read_batch(
    conn: &mut Conn,
    url: &TargetUrl,
    batch: &[(bool, Unit)],
    sh: &Shared,
    opts: WriterOptions,
    failed: &mut std::collections::HashSet<(u64, Vec<u8>)>,
) -> Result<()> {
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut cleanup: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut commands = 0u64;
    let mut replies = Vec::new();
    for (sel, u) in batch {
        if *sel {
            commands += 1;
            if let Reply::Error(e) = conn.read_reply()? {
                return Err(conn.err(format!("SELECT {}: {}", u.db, String::from_utf8_lossy(&e))));
            }
        }
        replies.clear();
        for _ in 0..u.replies {
            replies.push(conn.read_reply()?);
        }
        commands += u.replies as u64;
        match u.kind {
            UnitKind::Part { last: false, .. } => {
                // Counted once, at the first failed part; the last part settles the rest.
                let err = replies.iter().find_map(|r| match r {
                    Reply::Error(e) => Some(error_text(e)),
                    _ => None,
                });
                match err {
                    Some(msg) if failed.insert((u.db, u.label.clone())) => {
                        outcomes.push(Some(Outcome::Error(msg)))
                    }
                    _ => outcomes.push(None),
                }
                continue;
            }
            UnitKind::Part { last: true, .. } if failed.remove(&(u.db, u.label.clone())) => {
                if renamed_into_place(u, &replies) {
                    cleanup.push((u.db, u.label.clone()));
                }
                outcomes.push(None);
                continue;
            }
            _ => {}
        }
        let mut o = settle(u, &replies, opts.conflict);
        if let Outcome::Error(msg) = &mut o
            && renamed_into_place(u, &replies)
        {
            // An error inside EXEC (or between pipelined commands) does not undo the
            // commands around it: the key was renamed into place half-built. Remove it.
            msg.push_str("; the half-built key was deleted");
            cleanup.push((u.db, u.label.clone()));
        }
        outcomes.push(Some(o));
    }
    if !cleanup.is_empty() {
        let mut c = Conn::open(url, Duration::from_secs(10))?;
        for (db, key) in &cleanup {
            for args in [&[b"SELECT", db.to_string().as_bytes()][..], &[b"DEL", key]] {
                if let Reply::Error(e) = c.call(args)? {
                    return Err(c.err(format!(
                        "cannot delete the half-built key {}: {}",
                        show(key),
                        String::from_utf8_lossy(&e)
                    )));
                }
            }
        }
        commands += cleanup.len() as u64 * 2;
    }
    let mut st = sh
        .stats
        .lock()
        .map_err(|_| conn.err("writer state poisoned".into()))?;
    st.commands += commands;
    for ((_, u), o) in batch.iter().zip(outcomes) {
        let Some(o) = o else { continue };
        match o {
            Outcome::Written => st.written += 1,
            Outcome::Conflict => st.conflicts += 1,
            Outcome::Error(msg) => {
                st.errors += 1;
                if st.messages.len() < MAX_MESSAGES {
                    let what = match u.kind {
                        UnitKind::Command => "command",
                        UnitKind::Function => "function library",
                        _ => "key",
                    };
                    st.messages
                        .push(format!("{what} {} (db {}): {msg}", show(&u.label), u.db));
                }
                if opts.stop_on_error {
                    sh.stop.store(true, Ordering::Relaxed);
                }
            }
        }
    }
    Ok(())
}

/// A key or command for messages: quoted, lossy, cut at 200 bytes.
pub fn show(b: &[u8]) -> String {
    let cut = &b[..b.len().min(200)];
    let s = format!("{:?}", String::from_utf8_lossy(cut));
    if b.len() > 200 { s + "..." } else { s }
}

fn error_text(e: &[u8]) -> String {
    String::from_utf8_lossy(e).into_owned()
}

/// Whether a rewrite unit's final rename (RENAME, or RENAMENX followed by DEL tmp) succeeded.
fn renamed_into_place(u: &Unit, replies: &[Reply]) -> bool {
    let (nx, multi) = match u.kind {
        UnitKind::Rewrite { nx, multi } => (nx, multi),
        UnitKind::Part { last: true, nx } => (nx, false),
        _ => return false,
    };
    let results: &[Reply] = match (multi, replies.last()) {
        (true, Some(Reply::Array(a))) => a,
        (true, _) => return false,
        (false, _) => replies,
    };
    if nx {
        results.len() >= 2 && results[results.len() - 2] == Reply::Integer(1)
    } else {
        results.last().is_some_and(|r| !r.is_error())
    }
}

/// Read a unit's replies: written, conflict or error.
fn settle(u: &Unit, replies: &[Reply], rule: ConflictRule) -> Outcome {
    let conflict = |what: &str| match rule {
        ConflictRule::Skip => Outcome::Conflict,
        _ => Outcome::Error(format!(
            "{what} already exists on the target (--on-conflict fail)"
        )),
    };
    match u.kind {
        UnitKind::Restore => match replies.first() {
            Some(Reply::Error(e)) if e.starts_with(b"BUSYKEY") => conflict("key"),
            Some(Reply::Error(e)) => Outcome::Error(error_text(e)),
            _ => Outcome::Written,
        },
        UnitKind::Set { nx } => match replies.first() {
            Some(Reply::Nil) if nx => conflict("key"),
            Some(Reply::Error(e)) => Outcome::Error(error_text(e)),
            _ => Outcome::Written,
        },
        UnitKind::Function => match replies.first() {
            Some(Reply::Error(e)) if String::from_utf8_lossy(e).contains("already exists") => {
                conflict("library")
            }
            Some(Reply::Error(e)) => Outcome::Error(error_text(e)),
            _ => Outcome::Written,
        },
        UnitKind::Command => {
            for r in replies {
                match r {
                    Reply::Error(e) => return Outcome::Error(error_text(e)),
                    Reply::Array(a) => {
                        if let Some(Reply::Error(e)) = a.iter().find(|r| r.is_error()) {
                            return Outcome::Error(error_text(e));
                        }
                    }
                    _ => {}
                }
            }
            Outcome::Written
        }
        UnitKind::Rewrite { .. } | UnitKind::Part { .. } => {
            // A part is never inside MULTI (`last: false` parts are settled by the reader).
            let (nx, multi) = match u.kind {
                UnitKind::Rewrite { nx, multi } => (nx, multi),
                UnitKind::Part { nx, .. } => (nx, false),
                _ => (false, false),
            };
            let results: &[Reply] = if multi {
                match replies.last() {
                    Some(Reply::Array(a)) => a,
                    Some(Reply::Error(e)) => {
                        // EXECABORT: name the command that was refused when queued.
                        let first = replies.iter().find_map(|r| match r {
                            Reply::Error(q) => Some(error_text(q)),
                            _ => None,
                        });
                        return Outcome::Error(first.unwrap_or_else(|| error_text(e)));
                    }
                    _ => return Outcome::Error("unexpected reply to EXEC".into()),
                }
            } else {
                replies
            };
            if let Some(Reply::Error(e)) = results.iter().find(|r| r.is_error()) {
                return Outcome::Error(error_text(e));
            }
            if nx && results.len() >= 2 && results[results.len() - 2] == Reply::Integer(0) {
                return conflict("key");
            }
            Outcome::Written
        }
    }
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

    #[test]
    fn settles_replies() {
        let unit = |kind| Unit {
            db: 0,
            label: b"k".to_vec(),
            bytes: vec![],
            replies: 0,
            kind,
            route: 0,
        };
        let busy = Reply::Error(b"BUSYKEY Target key name already exists.".to_vec());
        let u = unit(UnitKind::Restore);
        assert_eq!(
            settle(&u, std::slice::from_ref(&busy), ConflictRule::Skip),
            Outcome::Conflict
        );
        assert!(matches!(
            settle(&u, &[busy], ConflictRule::Fail),
            Outcome::Error(_)
        ));
        let u = unit(UnitKind::Rewrite {
            nx: true,
            multi: true,
        });
        let ok = Reply::Simple(b"OK".to_vec());
        let q = Reply::Simple(b"QUEUED".to_vec());
        let exec = Reply::Array(vec![
            Reply::Integer(0),
            Reply::Integer(3),
            Reply::Integer(0),
            Reply::Integer(1),
        ]);
        assert_eq!(
            settle(&u, &[ok.clone(), q.clone(), exec], ConflictRule::Skip),
            Outcome::Conflict
        );
        let exec = Reply::Array(vec![
            Reply::Integer(3),
            Reply::Integer(1),
            Reply::Integer(0),
        ]);
        assert_eq!(
            settle(&u, &[ok, q, exec], ConflictRule::Skip),
            Outcome::Written
        );
    }
}
