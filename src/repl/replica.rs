//! The replica side of Redis replication: ask a server for its data as a replica does
//! (`REPLCONF capa eof`, `SYNC` or `PSYNC`), and read the RDB payload that follows.
//!
//! Users: `verify`'s snapshot comparison (`REPLCONF rdb-only 1` + `SYNC`: the target forks,
//! saves and streams its RDB); `fetch` and `sync` next.
//!
//! The payload (FORMATS §12): while the server saves (or waits for more replicas before a
//! diskless transfer) it sends a newline every second to keep the link alive; then either
//! `$<length>\r\n` and that many bytes (a save to disk), or `$EOF:<40-byte mark>\r\n`, the
//! RDB, and the mark again (a diskless transfer). [`Payload`] reads exactly the RDB bytes
//! in both forms: it stops at the length, or strips the mark.
//!
//! Deadlines: each read of the link has the connection's (`--timeout`); the keep-alive
//! newlines may go on only until `save_within` (a server that only ever sends newlines is
//! an error, not a loop forever).

use std::io::Read;
use std::time::{Duration, Instant};

use crate::cancel::Cancel;
use crate::net::{Conn, NetError, NetErrorKind, Stream};
use crate::resp::Reply;

/// How to ask for the data.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    /// `REPLCONF rdb-only 1` (7.0+): the server sends the RDB and no command stream, then
    /// closes. Refused by older servers, which then send the stream too (the reader stops at
    /// the end of the RDB anyway).
    pub rdb_only: bool,
    /// How long the server may take to start the payload (it saves first).
    pub save_within: Duration,
    /// The run's stop token: the wait for the payload ends when it is set (a save may take
    /// minutes; the keep-alive newlines let the wait look at it every second).
    pub cancel: Cancel,
}

/// How the payload is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `$<length>`: that many bytes.
    Length(u64),
    /// `$EOF:<mark>`: the RDB, then the mark.
    EofMark([u8; 40]),
}

/// The RDB bytes of a full sync, as a reader that ends where the RDB ends.
pub struct Payload {
    stream: Stream,
    /// Bytes read from the stream and not yet handed out (the start of the payload came
    /// with the header).
    buf: Vec<u8>,
    pos: usize,
    framing: Framing,
    /// Bytes handed out so far.
    given: u64,
    done: bool,
    name: String,
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Payload({}, {:?})", self.name, self.framing)
    }
}

/// Ask the server behind `conn` (connected and authenticated) for a full sync, with `SYNC`.
pub fn sync(mut conn: Conn, req: SyncRequest) -> Result<Payload, NetError> {
    if let Reply::Error(e) = conn.call_small(&[b"REPLCONF", b"capa", b"eof"])? {
        return Err(conn.refused("REPLCONF capa eof", &e));
    }
    if req.rdb_only {
        // 7.0+; older servers refuse it and send the command stream after the RDB.
        let _ = conn.call_small(&[b"REPLCONF", b"rdb-only", b"1"])?;
    }
    let name = conn.name().to_string();
    let timeout = conn.timeout();
    conn.send(b"SYNC\r\n")?;
    let (stream, rest) = conn.into_parts();
    Payload::start(stream, rest, name, timeout, &req)
}

/// The longest header line accepted (`$EOF:` and 40 characters, or a length).
const MAX_HEADER: usize = 128;

impl Payload {
    /// Read the keep-alive newlines and the header from `stream` (`rest`: bytes already
    /// read after the last reply).
    fn start(
        mut stream: Stream,
        rest: Vec<u8>,
        name: String,
        timeout: Duration,
        req: &SyncRequest,
    ) -> Result<Payload, NetError> {
        let save_within = req.save_within;
        let deadline = Instant::now() + save_within;
        let err = |kind| NetError::new(name.clone(), kind);
        let mut buf = rest;
        let mut pos = 0;
        let header = loop {
            // Skip keep-alive newlines.
            while pos < buf.len() && (buf[pos] == b'\n' || buf[pos] == b'\r') {
                pos += 1;
            }
            if let Some(nl) = buf[pos..].iter().position(|&b| b == b'\n') {
                let line = String::from_utf8_lossy(&buf[pos..pos + nl])
                    .trim()
                    .to_string();
                pos += nl + 1;
                break line;
            }
            if buf.len() - pos > MAX_HEADER {
                return Err(err(NetErrorKind::Unexpected {
                    command: "SYNC".into(),
                    what: "a header line without an end".into(),
                }));
            }
            if req.cancel.is_cancelled() {
                return Err(err(NetErrorKind::Interrupted));
            }
            if Instant::now() >= deadline {
                return Err(err(NetErrorKind::Timeout {
                    awaited: "the server to start sending its snapshot (it sent only keep-alive newlines)".into(),
                    after: save_within,
                }));
            }
            buf.drain(..pos);
            pos = 0;
            let mut chunk = [0u8; 4096];
            let n = read_some(
                &mut stream,
                &mut chunk,
                &name,
                timeout,
                "the snapshot's header",
            )?;
            buf.extend_from_slice(&chunk[..n]);
        };
        let framing = parse_header(&header).ok_or_else(|| {
            err(NetErrorKind::Unexpected {
                command: "SYNC".into(),
                what: format!("{:?}", &header[..header.len().min(80)]),
            })
        })?;
        buf.drain(..pos);
        Ok(Payload {
            stream,
            buf,
            pos: 0,
            framing,
            given: 0,
            done: false,
            name,
        })
    }

    /// How the payload is framed.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// The server, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bytes of the RDB read so far.
    pub fn bytes_read(&self) -> u64 {
        self.given
    }

    /// Refill `buf` (keeping its unread part).
    fn refill(&mut self) -> std::io::Result<usize> {
        self.buf.drain(..self.pos);
        self.pos = 0;
        let at = self.buf.len();
        self.buf.resize(at + (256 << 10), 0);
        let n = loop {
            match self.stream.read(&mut self.buf[at..]) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        self.buf.truncate(at + *n.as_ref().unwrap_or(&0));
        n
    }
}

/// `$<length>` or `$EOF:<40 characters>`; a line such as `-ERR ...` is no header.
fn parse_header(line: &str) -> Option<Framing> {
    let rest = line.strip_prefix('$')?;
    if let Some(mark) = rest.strip_prefix("EOF:") {
        let m: [u8; 40] = mark.as_bytes().try_into().ok()?;
        return Some(Framing::EofMark(m));
    }
    rest.parse().ok().map(Framing::Length)
}

fn read_some(
    stream: &mut Stream,
    buf: &mut [u8],
    name: &str,
    timeout: Duration,
    awaited: &str,
) -> Result<usize, NetError> {
    loop {
        match stream.read(buf) {
            Ok(0) => {
                return Err(NetError::new(
                    name,
                    NetErrorKind::Closed(awaited.to_string()),
                ));
            }
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(NetError::new(
                    name,
                    NetErrorKind::Timeout {
                        awaited: awaited.to_string(),
                        after: timeout,
                    },
                ));
            }
            Err(err) => return Err(NetError::new(name, NetErrorKind::Io { what: "read", err })),
        }
    }
}

impl Read for Payload {
    /// The RDB bytes; `Ok(0)` at their end. A link that closes early is an error
    /// (`UnexpectedEof`), never a short RDB taken for a whole one.
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.done || out.is_empty() {
            return Ok(0);
        }
        match self.framing {
            Framing::Length(total) => {
                let left = total - self.given;
                if left == 0 {
                    self.done = true;
                    return Ok(0);
                }
                if self.pos == self.buf.len() && self.refill()? == 0 {
                    return Err(cut(&self.name, self.given, Some(total)));
                }
                let n = (self.buf.len() - self.pos)
                    .min(out.len())
                    .min(left as usize);
                out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
                self.pos += n;
                self.given += n as u64;
                Ok(n)
            }
            Framing::EofMark(mark) => {
                // Hold back the last 40 bytes: they may be the mark.
                loop {
                    let avail = self.buf.len() - self.pos;
                    if avail >= 40 && self.buf[self.buf.len() - 40..] == mark {
                        let n = (avail - 40).min(out.len());
                        if n == 0 {
                            self.done = true;
                            return Ok(0);
                        }
                        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
                        self.pos += n;
                        self.given += n as u64;
                        return Ok(n);
                    }
                    if avail > 40 {
                        let n = (avail - 40).min(out.len());
                        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
                        self.pos += n;
                        self.given += n as u64;
                        return Ok(n);
                    }
                    if self.refill()? == 0 {
                        return Err(cut(&self.name, self.given, None));
                    }
                }
            }
        }
    }
}

fn cut(name: &str, at: u64, total: Option<u64>) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        format!(
            "{name}: the connection closed in the middle of the snapshot, after {at}{} bytes",
            total.map(|t| format!(" of {t}")).unwrap_or_default()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        assert_eq!(parse_header("$123"), Some(Framing::Length(123)));
        let m = "a".repeat(40);
        assert_eq!(
            parse_header(&format!("$EOF:{m}")),
            Some(Framing::EofMark([b'a'; 40]))
        );
        assert_eq!(parse_header("$EOF:short"), None);
        assert_eq!(parse_header("-ERR no"), None);
        assert_eq!(parse_header("+FULLRESYNC x 0"), None);
    }
}
