//! The target side of `verify`: the `redis://` URL, and one plain TCP connection that sends
//! pipelined commands (RESP2) and reads their replies.
//!
//! Deliberately small: no TLS, no Cluster, no retries. A verify run that loses its connection
//! fails (exit 1) rather than guess. The password never leaves [`TargetUrl`]: everything
//! printed uses [`TargetUrl::redacted`].

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::resp::{Reply, parse_reply, write_command};

/// Environment variable that supplies the target password when the URL has none.
pub const PASSWORD_ENV: &str = "RDBFERRY_TO_PASSWORD";

/// A parsed `redis://[user[:password]@]host[:port][/db]`.
#[derive(Clone)]
pub struct TargetUrl {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port (6379 when not given).
    pub port: u16,
    /// ACL user, if any.
    pub user: Option<String>,
    password: Option<String>,
    /// The db in the URL path, if any.
    pub db: Option<u64>,
}

impl std::fmt::Debug for TargetUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

fn percent_decode(s: &str) -> Result<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| Error::Usage("bad %-escape in the target URL".into()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| Error::Usage("target URL user info is not UTF-8".into()))
}

impl TargetUrl {
    /// Parse `url`; `env_password` (from [`PASSWORD_ENV`]) is used when the URL has no
    /// password. Errors never quote the URL's user info.
    ///
    /// ```
    /// use rdbferry::verify::target::TargetUrl;
    ///
    /// let u = TargetUrl::parse("redis://app:s3cret@10.0.0.5:6380/2", None)?;
    /// assert_eq!((u.port, u.db), (6380, Some(2)));
    /// assert_eq!(u.redacted(), "redis://app:***@10.0.0.5:6380/2");
    /// # Ok::<(), rdbferry::error::Error>(())
    /// ```
    pub fn parse(url: &str, env_password: Option<String>) -> Result<TargetUrl> {
        if url.starts_with("rediss://") {
            return Err(Error::Usage(
                "rediss:// (TLS) targets are not supported by verify yet".into(),
            ));
        }
        let rest = url.strip_prefix("redis://").ok_or_else(|| {
            Error::Usage(
                "the target must be a redis://[user[:password]@]host[:port][/db] URL".into(),
            )
        })?;
        let (auth, hostpart) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (user, mut password) = match auth {
            None => (None, None),
            Some(a) => match a.split_once(':') {
                Some((u, p)) => (
                    (!u.is_empty()).then(|| percent_decode(u)).transpose()?,
                    Some(percent_decode(p)?),
                ),
                None => (
                    (!a.is_empty()).then(|| percent_decode(a)).transpose()?,
                    None,
                ),
            },
        };
        if password.as_deref().is_none_or(str::is_empty) {
            password = env_password.filter(|p| !p.is_empty());
        }
        let (hostport, path) = match hostpart.split_once('/') {
            Some((h, p)) => (h, p),
            None => (hostpart, ""),
        };
        let path = path.split('?').next().unwrap_or_default();
        let db = if path.is_empty() {
            None
        } else {
            Some(
                path.parse::<u64>()
                    .map_err(|_| Error::Usage(format!("bad db {path:?} in the target URL")))?,
            )
        };
        let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
            let (h, p) = h
                .split_once(']')
                .ok_or_else(|| Error::Usage("bad IPv6 host in the target URL".into()))?;
            (h.to_string(), p.strip_prefix(':').unwrap_or(""))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p),
                None => (hostport.to_string(), ""),
            }
        };
        if host.is_empty() {
            return Err(Error::Usage("the target URL has no host".into()));
        }
        let port = if port.is_empty() {
            6379
        } else {
            port.parse::<u16>()
                .map_err(|_| Error::Usage(format!("bad port {port:?} in the target URL")))?
        };
        Ok(TargetUrl {
            host,
            port,
            user,
            password,
            db,
        })
    }

    /// The URL for messages: the password replaced by `***`.
    pub fn redacted(&self) -> String {
        let mut s = String::from("redis://");
        match (&self.user, &self.password) {
            (Some(u), Some(_)) => s += &format!("{u}:***@"),
            (Some(u), None) => s += &format!("{u}@"),
            (None, Some(_)) => s += ":***@",
            (None, None) => {}
        }
        if self.host.contains(':') {
            s += &format!("[{}]:{}", self.host, self.port);
        } else {
            s += &format!("{}:{}", self.host, self.port);
        }
        if let Some(db) = self.db {
            s += &format!("/{db}");
        }
        s
    }
}

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

/// Commands gathered for one round trip, and the db each will run in.
#[derive(Default)]
pub struct Pipe {
    out: Vec<u8>,
    count: usize,
}

impl Pipe {
    /// Append a command.
    pub fn push(&mut self, args: &[&[u8]]) {
        write_command(&mut self.out, args);
        self.count += 1;
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
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
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
        let addrs: Vec<_> = (url.host.as_str(), url.port)
            .to_socket_addrs()
            .map_err(|e| fail(format!("cannot resolve host: {e}")))?
            .collect();
        let mut last = None;
        let mut stream = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, Duration::from_secs(10)) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let stream = stream.ok_or_else(|| {
            fail(format!(
                "cannot connect: {}",
                last.map(|e| e.to_string()).unwrap_or_default()
            ))
        })?;
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
        let mut conn = Conn {
            stream,
            buf: Vec::with_capacity(256 << 10),
            start: 0,
            name: name.clone(),
            caps: Caps::default(),
            db: 0,
        };
        if let Some(pw) = &url.password {
            let mut p = Pipe::default();
            match &url.user {
                Some(u) => p.push(&[b"AUTH", u.as_bytes(), pw.as_bytes()]),
                None => p.push(&[b"AUTH", pw.as_bytes()]),
            }
            let r = conn.exec(&p)?;
            if let Some(Reply::Error(e)) = r.first() {
                return Err(fail(format!(
                    "authentication failed: {}",
                    String::from_utf8_lossy(e)
                )));
            }
        }
        let mut p = Pipe::default();
        p.push(&[b"INFO", b"server"]);
        let r = conn.exec(&p)?;
        let info = match r.first() {
            Some(Reply::Bulk(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Reply::Error(e)) => {
                let e = String::from_utf8_lossy(e);
                let hint = if e.starts_with("NOAUTH") {
                    format!(" (give a password in the URL or in {PASSWORD_ENV})")
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
        self.recv(pipe.count)
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
        let mut chunk = vec![0u8; 256 << 10];
        while replies.len() < count {
            match parse_reply(&self.buf[self.start..]) {
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
            // Keep the buffer from growing: drop what has been parsed.
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            let n = self
                .stream
                .read(&mut chunk)
                .map_err(|e| self.io("read failed", e))?;
            if n == 0 {
                return Err(Error::Input {
                    path: self.name.clone(),
                    msg: "the server closed the connection".into(),
                });
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Ok(replies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn urls_parse_and_redact() {
        let u = TargetUrl::parse("redis://bob:s%40cret@example.com:7000/3", None).unwrap();
        assert_eq!(u.host, "example.com");
        assert_eq!(u.port, 7000);
        assert_eq!(u.user.as_deref(), Some("bob"));
        assert_eq!(u.password.as_deref(), Some("s@cret"));
        assert_eq!(u.db, Some(3));
        assert_eq!(u.redacted(), "redis://bob:***@example.com:7000/3");
        assert!(!format!("{u:?}").contains("cret"));
        let u = TargetUrl::parse("redis://localhost", Some("envpw".into())).unwrap();
        assert_eq!((u.port, u.db), (6379, None));
        assert_eq!(u.password.as_deref(), Some("envpw"));
        assert_eq!(u.redacted(), "redis://:***@localhost:6379");
        let u = TargetUrl::parse("redis://[::1]:7001", None).unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 7001));
        assert!(TargetUrl::parse("http://x", None).is_err());
        assert!(TargetUrl::parse("redis://x:notaport", None).is_err());
    }
}
