//! The target side of `verify`: the `redis://` (or `rediss://`) URL, and one connection
//! (plain or TLS, from `net/`) that sends pipelined commands (RESP2) and reads their replies.
//!
//! Deliberately small: no retries (Cluster routing is in `route`, over several of
//! these connections). A verify run that loses its connection
//! fails (exit 1) rather than guess. The password never leaves [`TargetUrl`]: everything
//! printed uses [`TargetUrl::redacted`].

use std::io::{Read, Write};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::net;
use crate::resp::{Reply, parse_reply, write_command};

/// Environment variable that supplies the target password when the URL has none.
pub const PASSWORD_ENV: &str = crate::sink::redis::PASSWORD_ENV;

/// The target URL: the same parser as `import` (one rule for `/db`, one redaction).
pub use crate::sink::redis::TargetUrl;

/// What the target server can do, from `INFO server`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caps {
    /// Server version (major, minor, patch).
    pub version: (u32, u32, u32),
}

impl Caps {
    fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.version.0, self.version.1) >= (major, minor)
    }
    /// `PEXPIRETIME` (7.0+).
    pub fn pexpiretime(&self) -> bool {
        self.at_least(7, 0)
    }
    /// `SMISMEMBER` and `ZMSCORE` (6.2+).
    pub fn multi_member(&self) -> bool {
        self.at_least(6, 2)
    }
    /// `HPEXPIRETIME` (7.4+).
    pub fn field_ttls(&self) -> bool {
        self.at_least(7, 4)
    }
}

/// Size of a connection's read buffer (it grows for a bigger reply, and shrinks back).
const READ_BYTES: usize = 256 << 10;

/// Commands gathered for one round trip, and the db each will run in.
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

/// One connection to the target.
pub struct Conn {
    stream: net::Stream,
    /// Read buffer: `buf[start..end]` is read and not yet parsed; `buf` is all initialized,
    /// so a read needs no zeroing.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The URL, redacted: the name of the target in every message.
    pub name: String,
    /// What the server supports.
    pub caps: Caps,
    /// The db currently selected.
    pub db: u64,
}

impl Conn {
    /// Connect, authenticate, and read the server version.
    pub fn open(url: &TargetUrl) -> Result<Conn> {
        let name = url.redacted();
        let fail = |msg: String| Error::Input {
            path: name.clone(),
            msg,
        };
        let tls = url.tls_config()?;
        let stream = net::connect(&url.host, url.port, tls.as_ref(), Duration::from_secs(10))
            .map_err(|e| fail(url.role.reword(e.to_string())))?;
        let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
        let mut conn = Conn {
            stream,
            buf: vec![0; READ_BYTES],
            start: 0,
            end: 0,
            name: name.clone(),
            caps: Caps::default(),
            db: 0,
        };
        if let Some(pw) = url.password() {
            let mut p = Pipe::default();
            match &url.user {
                Some(u) => p.push(&[b"AUTH", u.as_bytes(), pw.as_bytes()]),
                None => p.push(&[b"AUTH", pw.as_bytes()]),
            }
            let r = conn.exec(&p).map_err(|e| url.hint_tls(e))?;
            if let Some(Reply::Error(e)) = r.first() {
                return Err(fail(format!(
                    "authentication failed: {}",
                    String::from_utf8_lossy(e)
                )));
            }
        }
        let mut p = Pipe::default();
        p.push(&[b"INFO", b"server"]);
        let r = conn.exec(&p).map_err(|e| url.hint_tls(e))?;
        let info = match r.first() {
            Some(Reply::Bulk(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Reply::Error(e)) => {
                let e = String::from_utf8_lossy(e);
                let hint = if e.starts_with("NOAUTH") {
                    format!(
                        " (give a password in the URL or in {})",
                        url.role.password_env()
                    )
                } else {
                    String::new()
                };
                return Err(fail(format!("{e}{hint}")));
            }
            other => return Err(fail(format!("unexpected reply to INFO: {other:?}"))),
        };
        let ver = info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or("0.0.0")
            .trim();
        let mut it = ver.split('.').map(|x| x.parse::<u32>().unwrap_or(0));
        conn.caps.version = (
            it.next().unwrap_or(0),
            it.next().unwrap_or(0),
            it.next().unwrap_or(0),
        );
        Ok(conn)
    }

    fn io(&self, what: &str, e: std::io::Error) -> Error {
        Error::Input {
            path: self.name.clone(),
            msg: format!("{what}: {e}"),
        }
    }

    /// Send every command of `pipe` in one write, then read one reply per command.
    pub fn exec(&mut self, pipe: &Pipe) -> Result<Vec<Reply>> {
        self.send(pipe)?;
        self.recv_replies(pipe.count, pipe.asking)
    }

    /// Read the replies of `count` commands sent through a pipe; with `asking` (a pipe of
    /// [`Pipe::asking`]) the reply to the `ASKING` before each command is read and dropped.
    pub fn recv_replies(&mut self, count: usize, asking: bool) -> Result<Vec<Reply>> {
        if !asking {
            return self.recv(count);
        }
        let r = self.recv(count * 2)?;
        Ok(r.into_iter().skip(1).step_by(2).collect())
    }

    /// Send every command of `pipe` in one write, without waiting for replies (the caller
    /// reads them later with [`recv`](Self::recv), in order).
    pub fn send(&mut self, pipe: &Pipe) -> Result<()> {
        self.stream
            .write_all(&pipe.out)
            .map_err(|e| self.io("write failed", e))
    }

    /// Read the next `count` replies.
    pub fn recv(&mut self, count: usize) -> Result<Vec<Reply>> {
        let mut replies = Vec::with_capacity(count);
        while replies.len() < count {
            match parse_reply(&self.buf[self.start..self.end]) {
                Ok(Some((r, used))) => {
                    self.start += used;
                    replies.push(r);
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(Error::Input {
                        path: self.name.clone(),
                        msg: format!("bad reply from the server: {e}"),
                    });
                }
            }
            // Make room: move the unparsed part to the front; grow only when a reply is
            // bigger than the buffer.
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            let n = self
                .stream
                .read(&mut self.buf[self.end..])
                .map_err(|e| self.io("read failed", e))?;
            if n == 0 {
                return Err(Error::Input {
                    path: self.name.clone(),
                    msg: "the server closed the connection".into(),
                });
            }
            self.end += n;
        }
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
            // A big reply grew the buffer: give the memory back once it is parsed.
            if self.buf.len() > 4 * READ_BYTES {
                self.buf = vec![0; READ_BYTES];
            }
        }
        Ok(replies)
    }
}
