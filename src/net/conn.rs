//! [`Conn`]: one connection to a Redis server, the only one rdbferry has. Every job that
//! talks to a live server (import's writer, verify's reader, the precheck, the full sync's
//! control link, a live source, the replication client) uses it.
//!
//! What it does: connect (TCP or TLS, `stream`), authenticate by the URL's rule
//! ([`RedisUrl::auth`]), select the URL's db, send commands (one at a time with
//! [`Conn::call`], or pipelined with [`Pipe`] / [`Conn::send`] + [`Conn::recv`]), and read
//! replies with a [`ReplyDecoder`], so each byte is parsed once and every reply has a size
//! cap: [`SMALL_REPLY`] for replies that are small by nature (`INFO`, `CONFIG`, `HELLO`,
//! `ROLE`, `CLIENT`), [`TOPOLOGY_REPLY`] for `CLUSTER SLOTS`, [`DATA_REPLY`] for values.
//!
//! Deadlines: every read and write has one (`--timeout`, [`NetOptions`]); a server that stalls
//! is a [`NetErrorKind::Timeout`] naming the server and the reply awaited, never a hang. A
//! read that makes progress (part of a big reply) resets it.
//!
//! Not here: retries and reconnection (the writer's), Cluster routing (`net::cluster`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::Duration;

use super::error::{NetError, NetErrorKind};
use super::info::{self, Version};
use super::stream::{self, Stream};
use super::url::RedisUrl;
use crate::resp::{Decoded, Reply, ReplyDecoder, write_command};

/// Cap of replies that are small by nature (`INFO`, `CONFIG GET`, `HELLO`, `ROLE`, ...).
pub const SMALL_REPLY: u64 = 4 << 20;
/// Cap of `CLUSTER SLOTS` (about 100 bytes a node and range: room for huge clusters).
pub const TOPOLOGY_REPLY: u64 = 64 << 20;
/// Cap of replies that carry values: a bulk string Redis may send (`proto-max-bulk-len` is
/// 512 MB by default; `DUMP` of a collection may be bigger), with headroom.
pub const DATA_REPLY: u64 = crate::resp::parser::MAX_BULK_LEN + (1 << 20);

/// Default of [`NetOptions::timeout`] (`--timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Size of a connection's read buffer (it grows for a bigger reply, and shrinks back).
const READ_BYTES: usize = 64 << 10;

/// Settings of every connection of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetOptions {
    /// Deadline of a connect, and of each read or write (`--timeout`).
    pub timeout: Duration,
}

impl Default for NetOptions {
    fn default() -> Self {
        NetOptions {
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// Commands gathered for one round trip.
#[derive(Default)]
pub struct Pipe {
    out: Vec<u8>,
    count: usize,
    asking: bool,
}

impl Pipe {
    /// A pipe that sends `ASKING` before each command: for a Cluster node importing the
    /// slot of the key (after an `ASK` redirection). [`Conn::exec`] and
    /// [`Conn::recv_replies`] drop the replies to `ASKING`.
    pub fn asking() -> Pipe {
        Pipe {
            asking: true,
            ..Pipe::default()
        }
    }
    /// Append a command.
    pub fn push(&mut self, args: &[&[u8]]) {
        if self.asking {
            write_command(&mut self.out, &[b"ASKING"]);
        }
        write_command(&mut self.out, args);
        self.count += 1;
    }
    /// Whether each command goes after an `ASKING`.
    pub fn is_asking(&self) -> bool {
        self.asking
    }
    /// Commands queued.
    pub fn len(&self) -> usize {
        self.count
    }
    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    /// Bytes queued.
    pub fn bytes(&self) -> usize {
        self.out.len()
    }
}

/// A command's name for messages: its first argument, upper case, cut.
fn command_name(args: &[&[u8]]) -> String {
    let name = args.first().map_or(&b""[..], |a| &a[..a.len().min(32)]);
    let mut s = String::from_utf8_lossy(name).to_ascii_uppercase();
    if let Some(sub) = args.get(1).filter(|_| {
        matches!(
            s.as_str(),
            "CONFIG" | "CLIENT" | "CLUSTER" | "FUNCTION" | "REPLCONF" | "MODULE" | "ACL"
        )
    }) {
        s.push(' ');
        s += &String::from_utf8_lossy(&sub[..sub.len().min(32)]).to_ascii_uppercase();
    }
    s
}

/// What was last sent, for messages about what is awaited.
enum Sent {
    /// One command, by name (`INFO`, `CONFIG GET`).
    Command(String),
    /// A pipe of this many commands.
    Pipe(usize),
    /// Bytes given to [`Conn::send`].
    Raw,
}

impl Sent {
    /// What a read waits for.
    fn reply(&self) -> String {
        match self {
            Sent::Command(c) => format!("the reply to {c}"),
            Sent::Pipe(1) => "the reply to 1 command".into(),
            Sent::Pipe(n) => format!("the replies to {n} commands"),
            Sent::Raw => "the replies to the commands sent".into(),
        }
    }

    /// What a write waits for.
    fn taken(&self) -> String {
        match self {
            Sent::Command(c) => format!("the server to read {c}"),
            Sent::Pipe(n) => format!("the server to read {n} commands"),
            Sent::Raw => "the server to read the commands sent".into(),
        }
    }
}

/// One connection to a server.
pub struct Conn {
    stream: Stream,
    /// `buf[start..end]` is read and not yet parsed; `buf` is all initialized.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    dec: ReplyDecoder,
    addr: String,
    timeout: Duration,
    /// What the next reply answers, for messages.
    sent: Sent,
    version: Option<Version>,
    /// The db selected.
    pub db: u64,
}

impl Conn {
    /// Connect, authenticate and select the URL's db.
    pub fn open(url: &RedisUrl) -> Result<Conn, NetError> {
        let opts = &url.net;
        let addr = url.redacted();
        let tls = url
            .tls_config()
            .map_err(|e| NetError::new(addr.clone(), NetErrorKind::Tls(e.to_string())))?;
        let stream = stream::connect(&url.host, url.port, tls.as_ref(), opts.timeout)
            .map_err(|k| NetError::new(addr.clone(), k))?;
        let mut c = Conn {
            stream,
            buf: vec![0; READ_BYTES],
            start: 0,
            end: 0,
            dec: ReplyDecoder::new(SMALL_REPLY),
            addr,
            timeout: opts.timeout,
            sent: Sent::Raw,
            version: None,
            db: 0,
        };
        // A TLS port drops a client that speaks plain RESP: that looks like a closed or reset
        // connection before the first reply.
        let plain_hint = |e: NetError| match e.kind {
            NetErrorKind::Closed(_) | NetErrorKind::Io { .. } if !url.tls => {
                e.with_hint("if the server serves TLS on this port, use rediss://")
            }
            _ => e,
        };
        if let Some(args) = url.auth()
            && let Reply::Error(e) = c.call_small(&args).map_err(plain_hint)?
        {
            let e = NetError::new(
                c.addr.clone(),
                NetErrorKind::Auth(String::from_utf8_lossy(&e).into_owned()),
            );
            return Err(if url.has_password() {
                e
            } else {
                e.with_hint(format!(
                    "no password given: put it in the URL or in {}",
                    url.role.password_env()
                ))
            });
        }
        // An ACL user may lack PING (`NOPERM`): the link works all the same.
        if let Reply::Error(e) = c.call_small(&[b"PING"]).map_err(plain_hint)?
            && !e.starts_with(b"NOPERM")
        {
            let e = c.refused("PING", &e);
            return Err(if e.to_string().contains("NOAUTH") {
                e.with_hint(format!(
                    "give a password in the URL or in {}",
                    url.role.password_env()
                ))
            } else {
                e
            });
        }
        if url.db != 0 {
            c.select(url.db)?;
        }
        Ok(c)
    }

    /// The server's URL, redacted: its name in every message.
    pub fn name(&self) -> &str {
        &self.addr
    }

    /// The deadline of each read and write.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Change the read deadline (`None`: wait forever, for a caller with its own deadline).
    pub fn set_read_timeout(&mut self, d: Option<Duration>) {
        let _ = self.stream.set_read_timeout(d);
        if let Some(d) = d {
            self.timeout = d;
        }
    }

    /// An error of this server.
    pub fn error(&self, kind: NetErrorKind) -> NetError {
        NetError::new(self.addr.clone(), kind)
    }

    /// A `Refused` error for `command`'s error reply.
    pub fn refused(&self, command: &str, reply: &[u8]) -> NetError {
        self.error(NetErrorKind::Refused {
            command: command.to_string(),
            reply: String::from_utf8_lossy(reply).into_owned(),
        })
    }

    /// The local address of a plain TCP connection: where the server reaches this host
    /// (`None` over TLS).
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.stream.local_tcp_addr()
    }

    /// The server's address as connected.
    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        self.stream.peer_addr()
    }

    fn io_error(&self, what: &'static str, e: std::io::Error) -> NetError {
        use std::io::ErrorKind as K;
        let kind = match e.kind() {
            K::WouldBlock | K::TimedOut => NetErrorKind::Timeout {
                awaited: if what == "write" {
                    self.sent.taken()
                } else {
                    self.sent.reply()
                },
                after: self.timeout,
            },
            _ => NetErrorKind::Io { what, err: e },
        };
        self.error(kind)
    }

    /// Send raw RESP bytes.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), NetError> {
        self.sent = Sent::Raw;
        self.write_out(bytes)
    }

    fn write_out(&mut self, bytes: &[u8]) -> Result<(), NetError> {
        self.stream
            .write_all(bytes)
            .map_err(|e| self.io_error("write", e))
    }

    /// Read one reply of at most [`DATA_REPLY`] bytes.
    pub fn read_reply(&mut self) -> Result<Reply, NetError> {
        self.read_reply_capped(DATA_REPLY)
    }

    /// Read one reply of at most `cap` bytes (a longer one is an error before it is
    /// buffered).
    pub fn read_reply_capped(&mut self, cap: u64) -> Result<Reply, NetError> {
        self.dec.set_cap(cap);
        loop {
            let (used, got) = self
                .dec
                .decode(&self.buf[self.start..self.end])
                .map_err(|err| {
                    self.error(NetErrorKind::Protocol {
                        awaited: self.sent.reply(),
                        err,
                    })
                })?;
            self.start += used;
            let need = match got {
                Decoded::Reply(r) => {
                    if self.start == self.end {
                        (self.start, self.end) = (0, 0);
                        // A big reply grew the buffer: give the memory back.
                        if self.buf.len() > 16 * READ_BYTES {
                            self.buf = vec![0; READ_BYTES];
                        }
                    }
                    return Ok(r);
                }
                Decoded::Incomplete { need } => need,
            };
            self.fill(need)?;
        }
    }

    /// Read more bytes, toward room for `need` unparsed bytes (a bulk string whose size is
    /// known, already checked against the cap).
    fn fill(&mut self, need: usize) -> Result<(), NetError> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        // The buffer at most doubles per read on its way to `need`: memory follows the
        // bytes that come, never a length a server only announced (a hostile
        // `$3000000000` within a data reply's cap is no 3 GB allocation).
        let want = need
            .min(self.buf.len().saturating_mul(2))
            .max(self.end + READ_BYTES / 2);
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        loop {
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.dec.reset();
                    return Err(self.error(NetErrorKind::Closed(self.sent.reply())));
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.dec.reset();
                    return Err(self.io_error("read", e));
                }
            }
        }
    }

    /// Send one command and read its reply (at most [`DATA_REPLY`] bytes).
    pub fn call(&mut self, args: &[&[u8]]) -> Result<Reply, NetError> {
        self.call_capped(args, DATA_REPLY)
    }

    /// Send one command whose reply is small by nature ([`SMALL_REPLY`]).
    pub fn call_small(&mut self, args: &[&[u8]]) -> Result<Reply, NetError> {
        self.call_capped(args, SMALL_REPLY)
    }

    /// Send one command and read its reply of at most `cap` bytes.
    pub fn call_capped(&mut self, args: &[&[u8]], cap: u64) -> Result<Reply, NetError> {
        let mut out = Vec::new();
        write_command(&mut out, args);
        self.sent = Sent::Command(command_name(args));
        self.write_out(&out)?;
        self.read_reply_capped(cap)
    }

    /// Send every command of `pipe` in one write, then read one reply per command.
    pub fn exec(&mut self, pipe: &Pipe) -> Result<Vec<Reply>, NetError> {
        self.send_pipe(pipe)?;
        self.recv_replies(pipe.count, pipe.asking)
    }

    /// Send every command of `pipe` in one write, without waiting for replies (the caller
    /// reads them later with [`Conn::recv`], in order).
    pub fn send_pipe(&mut self, pipe: &Pipe) -> Result<(), NetError> {
        self.sent = Sent::Pipe(pipe.count);
        self.write_out(&pipe.out)
    }

    /// Read the replies of `count` commands sent through a pipe; with `asking` (a pipe of
    /// [`Pipe::asking`]) the reply to the `ASKING` before each command is read and dropped.
    pub fn recv_replies(&mut self, count: usize, asking: bool) -> Result<Vec<Reply>, NetError> {
        if !asking {
            return self.recv(count);
        }
        let r = self.recv(count * 2)?;
        Ok(r.into_iter().skip(1).step_by(2).collect())
    }

    /// Read the next `count` replies.
    pub fn recv(&mut self, count: usize) -> Result<Vec<Reply>, NetError> {
        (0..count).map(|_| self.read_reply()).collect()
    }

    /// `INFO section` as fields (an error reply is an error).
    pub fn info(&mut self, section: &str) -> Result<BTreeMap<String, String>, NetError> {
        match self.call_small(&[b"INFO", section.as_bytes()])? {
            Reply::Error(e) => Err(self.refused("INFO", &e)),
            r => Ok(r.as_bytes().map(info::info_fields).unwrap_or_default()),
        }
    }

    /// Keys per db (`INFO keyspace`; dbs without keys are absent).
    pub fn keyspace(&mut self) -> Result<BTreeMap<u64, u64>, NetError> {
        Ok(info::keyspace_of(&self.info("keyspace")?))
    }

    /// The server's version (`INFO server`, asked once); 0.0.0 when INFO is refused.
    pub fn version(&mut self) -> Result<Version, NetError> {
        if let Some(v) = self.version {
            return Ok(v);
        }
        let v = match self.call_small(&[b"INFO", b"server"])? {
            Reply::Error(e) if e.starts_with(b"NOAUTH") => return Err(self.refused("INFO", &e)),
            r => r
                .as_bytes()
                .map(info::info_fields)
                .and_then(|f| f.get("redis_version").map(|v| Version::parse(v)))
                .unwrap_or_default(),
        };
        self.version = Some(v);
        Ok(v)
    }

    /// `CONFIG SET name value`; `Ok(Err(reply))` when the server refused it.
    pub fn config_set(&mut self, name: &str, value: &str) -> Result<Result<(), String>, NetError> {
        let r = self.call_small(&[b"CONFIG", b"SET", name.as_bytes(), value.as_bytes()])?;
        Ok(match r.error_text() {
            Some(e) => Err(e),
            None => Ok(()),
        })
    }

    /// `CONFIG GET name` (`None` when refused or unknown).
    pub fn config_get(&mut self, name: &str) -> Result<Option<String>, NetError> {
        let r = self.call_small(&[b"CONFIG", b"GET", name.as_bytes()])?;
        let v = match &r {
            Reply::Array(a) => a.get(1).and_then(|r| r.as_bytes()),
            Reply::Map(m) => m.first().and_then(|(_, v)| v.as_bytes()),
            _ => None,
        };
        Ok(v.map(|b| String::from_utf8_lossy(b).into_owned()))
    }

    /// `SELECT db` then `DBSIZE`.
    pub fn dbsize(&mut self, db: u64) -> Result<u64, NetError> {
        self.select(db)?;
        match self.call_small(&[b"DBSIZE"])? {
            Reply::Integer(n) => Ok(n.max(0) as u64),
            Reply::Error(e) => Err(self.refused("DBSIZE", &e)),
            r => Err(self.error(NetErrorKind::Unexpected {
                command: "DBSIZE".into(),
                what: format!("{r:?}"),
            })),
        }
    }

    /// `SELECT db`.
    pub fn select(&mut self, db: u64) -> Result<(), NetError> {
        let n = db.to_string();
        if let Reply::Error(e) = self.call_small(&[b"SELECT", n.as_bytes()])? {
            return Err(self.refused(&format!("SELECT {db}"), &e));
        }
        self.db = db;
        Ok(())
    }

    /// Give up the connection for a protocol that is not replies from here on (`SYNC`'s
    /// payload): the stream, and the bytes read past the last reply.
    pub fn into_parts(self) -> (Stream, Vec<u8>) {
        let rest = self.buf[self.start..self.end].to_vec();
        (self.stream, rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_names() {
        assert_eq!(command_name(&[b"info", b"server"]), "INFO");
        assert_eq!(command_name(&[b"config", b"get", b"x"]), "CONFIG GET");
        assert_eq!(command_name(&[]), "");
    }
}
