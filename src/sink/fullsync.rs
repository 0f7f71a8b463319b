//! The master side of Redis replication, as much as a full sync needs: rdbferry listens, the
//! target (told `REPLICAOF` us) connects, and we answer its handshake and send it an RDB.
//!
//! Where it sits: the fastest sink `import` has. A replica loads a full sync as fast as it
//! loads its own dump at start-up, several times faster than it executes a `RESTORE` per key,
//! so for an empty standalone target `job::fullsync` streams the input RDB here (through
//! [`super::rdb::RdbCopy`]) instead of sending commands.
//!
//! The handshake, as a Redis 2.8.18+ replica speaks it (FORMATS §12): `PING` → `+PONG`;
//! `AUTH`, `REPLCONF listening-port|ip-address|capa ...` → `+OK`; `PSYNC <replid> <offset>`
//! (or `SYNC`) → `+FULLRESYNC <replid> 0`, then the payload as `$EOF:<40-byte mark>\r\n`,
//! the RDB, and the mark again. The mark form lets us stream an RDB whose length we do not know
//! in advance; a replica that did not announce `capa eof` is refused.
//!
//! Why the transfer can be abandoned safely (checked against Redis 7.0's `replication.c` and
//! `rdb.c`): until [`Transfer::end`] sends the mark, closing the connection
//! (dropping the [`Transfer`]) is a short read to the replica, never corruption, as long as every
//! byte sent so far belongs to well-formed records (the caller checks each record before it
//! writes it). A replica loading from disk (`repl-diskless-load disabled`) then drops its
//! temporary file and keeps its data; one loading from the socket (`on-empty-db`, `swapdb`)
//! discards what it had loaded. A loader that meets a corrupt record, on the other hand,
//! stops the server: hence the checks before the bytes go.
//!
//! What it deliberately does not do: send a replication stream of commands after the RDB
//! (the target is detached with `REPLICAOF NO ONE` once it has loaded), or serve more than
//! one replica.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Why a full sync could not start or go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// Socket trouble, with what we were doing.
    #[error("{what}: {source}")]
    Io {
        /// What failed.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The replica never connected.
    #[error("the target did not connect to {0} within {1:?} (it may not reach this host)")]
    NoReplica(SocketAddr, Duration),
    /// The replica said something a replica does not say.
    #[error("unexpected handshake from {peer}: {msg}")]
    Handshake {
        /// Who connected.
        peer: SocketAddr,
        /// What was wrong.
        msg: String,
    },
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> SyncError + '_ {
    move |source| SyncError::Io {
        what: what.to_string(),
        source,
    }
}

/// 40 random hex characters (an EOF mark, a replication id).
pub fn random_hex40() -> [u8; 40] {
    use std::hash::{BuildHasher, Hasher};
    let mut out = [0u8; 40];
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    for (i, chunk) in out.chunks_mut(16).enumerate() {
        // RandomState is seeded from the OS per instance.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(t);
        h.write_usize(i);
        h.write_u32(std::process::id());
        let v = h.finish();
        for (j, b) in chunk.iter_mut().enumerate() {
            *b = b"0123456789abcdef"[((v >> (4 * j)) & 15) as usize];
        }
    }
    out
}

/// A listening master, waiting for its one replica.
pub struct Master {
    listener: TcpListener,
    addr: SocketAddr,
}

impl Master {
    /// Listen on `ip` (the address the target reaches us at), on a free port.
    pub fn listen(ip: IpAddr) -> Result<Master, SyncError> {
        let listener = TcpListener::bind((ip, 0)).map_err(io("listen"))?;
        let addr = listener.local_addr().map_err(io("listen"))?;
        Ok(Master { listener, addr })
    }

    /// Where the target must connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Wait up to `timeout` for the replica (or until `cancelled` says so), answer its
    /// handshake and start a full sync: the returned [`Transfer`] takes the RDB bytes. The
    /// listener is closed here, so a replica that comes back (after a failed load) finds
    /// nobody.
    pub fn accept(
        self,
        timeout: Duration,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Transfer, SyncError> {
        let deadline = Instant::now() + timeout;
        self.listener.set_nonblocking(true).map_err(io("listen"))?;
        let (sock, peer) = loop {
            match self.listener.accept() {
                Ok(x) => break x,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline || cancelled() {
                        return Err(SyncError::NoReplica(self.addr, timeout));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(io("accept")(e)),
            }
        };
        drop(self.listener);
        sock.set_nonblocking(false).map_err(io("accept"))?;
        sock.set_nodelay(true).map_err(io("accept"))?;
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(io("accept"))?;
        let mut reader = BufReader::new(sock.try_clone().map_err(io("accept"))?);
        let mut w = &sock;
        let bad = |msg: String| SyncError::Handshake { peer, msg };
        let mut eof_capa = false;
        loop {
            let cmd = read_command(&mut reader).map_err(|e| bad(e.to_string()))?;
            let name = cmd
                .first()
                .map(|a| a.to_ascii_uppercase())
                .unwrap_or_default();
            match name.as_slice() {
                b"PING" => w.write_all(b"+PONG\r\n"),
                b"AUTH" => w.write_all(b"+OK\r\n"),
                b"REPLCONF" => {
                    if cmd
                        .windows(2)
                        .any(|p| p[0].eq_ignore_ascii_case(b"capa") && p[1] == b"eof")
                    {
                        eof_capa = true;
                    }
                    w.write_all(b"+OK\r\n")
                }
                b"PSYNC" | b"SYNC" => {
                    if !eof_capa {
                        let _ = w.write_all(b"-ERR rdbferry streams with an EOF mark only\r\n");
                        return Err(bad("the replica did not announce 'capa eof'".into()));
                    }
                    let mut reply = b"+FULLRESYNC ".to_vec();
                    reply.extend_from_slice(&random_hex40());
                    reply.extend_from_slice(b" 0\r\n");
                    w.write_all(&reply)
                }
                _ => {
                    let _ = w.write_all(b"-ERR not a Redis master\r\n");
                    return Err(bad(format!(
                        "command {:?}",
                        String::from_utf8_lossy(&name[..name.len().min(40)])
                    )));
                }
            }
            .map_err(io("handshake"))?;
            if name == b"PSYNC" || name == b"SYNC" {
                break;
            }
        }
        let mark = random_hex40();
        let mut head = b"$EOF:".to_vec();
        head.extend_from_slice(&mark);
        head.extend_from_slice(b"\r\n");
        w.write_all(&head).map_err(io("send"))?;
        // The replica writes REPLCONF ACKs once linked; nobody needs them, but the socket
        // buffer must not fill up, and their end tells that the replica let go.
        let closed = Arc::new(AtomicBool::new(false));
        let flag = closed.clone();
        let _ = sock.set_read_timeout(None);
        let drain = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut r = reader;
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
            }
            flag.store(true, Ordering::SeqCst);
        });
        Ok(Transfer {
            sock,
            mark,
            peer,
            closed,
            drain: Some(drain),
        })
    }
}

/// One command from the replica: a RESP array of bulk strings, or an inline line. Lines,
/// argument counts and sizes are bounded: a handshake is small. (Public for the fuzz target
/// `replica_handshake`: whoever connects to the listener sends these bytes.)
pub fn read_command(r: &mut impl BufRead) -> std::io::Result<Vec<Vec<u8>>> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let line = read_line(r)?;
    let Some(n) = line.strip_prefix(b"*") else {
        let args: Vec<Vec<u8>> = line
            .split(|&b| b == b' ')
            .filter(|a| !a.is_empty())
            .map(|a| a.to_vec())
            .collect();
        if args.len() > 32 {
            return Err(bad("too many arguments"));
        }
        return Ok(args);
    };
    let n: usize = std::str::from_utf8(n)
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n <= 32)
        .ok_or_else(|| bad("bad argument count"))?;
    let mut args = Vec::with_capacity(n);
    for _ in 0..n {
        let l = read_line(r)?;
        let len: usize = l
            .strip_prefix(b"$")
            .and_then(|s| std::str::from_utf8(s).ok()?.parse().ok())
            .filter(|&l| l <= 4096)
            .ok_or_else(|| bad("bad bulk length"))?;
        let mut a = vec![0u8; len + 2];
        r.read_exact(&mut a)?;
        a.truncate(len);
        args.push(a);
    }
    Ok(args)
}

fn read_line(r: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut line = Vec::new();
    r.by_ref().take(4096).read_until(b'\n', &mut line)?;
    if line.last() != Some(&b'\n') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed in the handshake",
        ));
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    Ok(line)
}

/// A full sync under way: what is written goes to the replica (unbuffered: the writer above,
/// [`super::rdb::RdbCopy`], writes in big pieces). Dropped before [`Transfer::end`], it
/// closes the connection: the transfer is abandoned.
pub struct Transfer {
    sock: TcpStream,
    mark: [u8; 40],
    peer: SocketAddr,
    closed: Arc<AtomicBool>,
    drain: Option<JoinHandle<()>>,
}

impl Write for Transfer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        (&self.sock).write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Transfer {
    /// The replica's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Send the end mark: the replica now flushes its data and loads what it got. The
    /// connection stays open (the replica's link to its master) until the [`Linked`] is dropped.
    pub fn end(mut self) -> Result<Linked, SyncError> {
        (&self.sock).write_all(&self.mark).map_err(io("send"))?;
        Ok(Linked {
            sock: self.sock.try_clone().map_err(io("send"))?,
            closed: self.closed.clone(),
            drain: self.drain.take(),
        })
    }
}

/// Giving up before the end mark: the replica drops the partial payload and keeps its data.
impl Drop for Transfer {
    fn drop(&mut self) {
        if let Some(d) = self.drain.take() {
            let _ = self.sock.shutdown(std::net::Shutdown::Both);
            let _ = d.join();
        }
    }
}

/// The link after the transfer, kept open while the replica loads.
pub struct Linked {
    sock: TcpStream,
    closed: Arc<AtomicBool>,
    drain: Option<JoinHandle<()>>,
}

impl Linked {
    /// Whether the replica has closed the link (its load failed, or it went away).
    pub fn closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

/// Dropping the link closes it.
impl Drop for Linked {
    fn drop(&mut self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        if let Some(d) = self.drain.take() {
            let _ = d.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_resp_and_inline_commands() {
        let mut r: &[u8] = b"*2\r\n$4\r\nPING\r\n$1\r\nx\r\nREPLCONF capa eof\r\n";
        assert_eq!(
            read_command(&mut r).unwrap(),
            vec![b"PING".to_vec(), b"x".to_vec()]
        );
        assert_eq!(
            read_command(&mut r).unwrap(),
            vec![b"REPLCONF".to_vec(), b"capa".to_vec(), b"eof".to_vec()]
        );
        assert!(read_command(&mut r).is_err());
        let mut wide: &[u8] = &[b"a ".repeat(40), b"\r\n".to_vec()].concat();
        assert!(read_command(&mut wide).is_err());
        let mut big: &[u8] = b"*99999\r\n";
        assert!(read_command(&mut big).is_err());
        let mut huge: &[u8] = b"*1\r\n$999999999\r\n";
        assert!(read_command(&mut huge).is_err());
    }

    #[test]
    fn marks_are_hex_and_differ() {
        let (a, b) = (random_hex40(), random_hex40());
        assert!(a.iter().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
