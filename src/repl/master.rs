//! The master side of Redis replication, as much as a full sync needs: rdbferry listens, the
//! target (told `REPLICAOF` us) connects, and we answer its handshake and send it an RDB.
//!
//! Where it sits: `import`'s fastest path (`job::fullsync`). A replica loads a full sync as
//! fast as it loads its own dump at start-up, several times faster than it executes a
//! `RESTORE` per key, so for an empty standalone target the input RDB is streamed here
//! (through `sink::rdb::RdbCopy`) instead of sent as commands.
//!
//! The handshake, as a Redis 2.8.18+ replica speaks it (FORMATS §12): `PING`; `AUTH
//! [user] <masterauth>`; `REPLCONF listening-port|ip-address|capa ...` → `+OK`; `PSYNC
//! <replid> <offset>` (or `SYNC`) → `+FULLRESYNC <replid> 0`, then the payload as
//! `$EOF:<40-byte mark>\r\n`, the RDB, and the mark again. The mark form lets us stream an
//! RDB whose length we do not know in advance; a replica that did not announce `capa eof` is
//! refused.
//!
//! Who is served: only the target. The job sets a one-time random secret as the target's
//! `masterauth` before `REPLICAOF`; a peer must come from the target's address (when it is
//! known) and its first command after an optional `PING` (answered `-NOAUTH`, which a replica
//! accepts) must be `AUTH` with exactly that secret. Any other peer is closed without a byte
//! of the data, and the listener keeps waiting for the target: each peer's handshake runs on
//! its own thread with a deadline, so a stranger that connects first and says nothing delays
//! nobody.
//!
//! Why the transfer can be abandoned safely (checked against Redis 7.0's `replication.c` and
//! `rdb.c`): until [`Transfer::end`] sends the mark, closing the connection (dropping the
//! [`Transfer`]) is a short read to the replica, never corruption, as long as every byte sent
//! so far belongs to well-formed records (the caller checks each record before it writes
//! it). A replica loading from disk (`repl-diskless-load disabled`) then drops its temporary
//! file and keeps its data; one loading from the socket (`on-empty-db`, `swapdb`) discards
//! what it had loaded. A loader that meets a corrupt record, on the other hand, may stop the
//! server: hence the checks before the bytes go.
//!
//! Deadlines: the whole handshake, every write of the transfer (a replica that stops reading
//! is an error, not a hang).
//!
//! What it deliberately does not do: send a replication stream of commands after the RDB
//! (the target is detached with `REPLICAOF NO ONE` once it has loaded), or serve more than
//! one replica.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
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
    /// The replica never connected, or never finished its handshake.
    #[error(
        "the target did not connect to {addr} and authenticate within {} s (it may not reach this host){}",
        .after.as_secs(),
        .refused.as_ref().map(|r| format!("; refused meanwhile: {r}")).unwrap_or_default()
    )]
    NoReplica {
        /// Where we listened.
        addr: SocketAddr,
        /// How long we waited.
        after: Duration,
        /// The last peer refused, and why.
        refused: Option<String>,
    },
    /// Stopped on request.
    #[error("cancelled")]
    Cancelled,
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> SyncError + '_ {
    move |source| SyncError::Io {
        what: what.to_string(),
        source,
    }
}

/// 40 random hex characters (an EOF mark, a replication id, a one-time secret), from the
/// operating system's randomness (`/dev/urandom`; the hasher seeds of the standard library,
/// also from the OS, if it cannot be read).
pub fn random_hex40() -> [u8; 40] {
    let mut raw = [0u8; 20];
    let from_os = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .is_ok();
    if !from_os {
        use std::hash::{BuildHasher, Hasher};
        for (i, chunk) in raw.chunks_mut(8).enumerate() {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_usize(i);
            chunk.copy_from_slice(&h.finish().to_le_bytes()[..chunk.len()]);
        }
    }
    let mut out = [0u8; 40];
    for (i, b) in raw.iter().enumerate() {
        out[2 * i] = b"0123456789abcdef"[(b >> 4) as usize];
        out[2 * i + 1] = b"0123456789abcdef"[(b & 15) as usize];
    }
    out
}

/// Who may take the full sync, and how long to wait for it.
#[derive(Debug, Clone)]
pub struct Expect {
    /// The `masterauth` the target was given (holding a one-time secret): the last argument
    /// of its `AUTH`.
    pub secret: Vec<u8>,
    /// The target's address, when known: a peer from elsewhere is refused.
    pub peer_ip: Option<IpAddr>,
    /// How long the target has to connect and finish its handshake.
    pub within: Duration,
    /// Deadline of each write of the transfer.
    pub write_timeout: Duration,
}

/// The most peers whose handshakes run at once; more are closed at once.
const MAX_PEERS: usize = 16;

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

    /// Wait for the replica `expect` describes (until `expect.within` or `cancelled`), and
    /// start a full sync: the returned [`Transfer`] takes the RDB bytes. Peers that are not
    /// the target are closed without a byte and the wait goes on. The listener is closed
    /// here, so a replica that comes back (after a failed load) finds nobody.
    pub fn accept(
        self,
        expect: &Expect,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Transfer, SyncError> {
        let deadline = Instant::now() + expect.within;
        self.listener.set_nonblocking(true).map_err(io("listen"))?;
        let (tx, rx) = mpsc::channel::<Result<Linked0, (SocketAddr, String)>>();
        let mut running = 0usize;
        let mut refused = None;
        loop {
            while let Ok(r) = rx.try_recv() {
                running -= 1;
                match r {
                    Ok(l) => return Ok(l.start()),
                    Err((peer, why)) => {
                        tracing::warn!("full sync: refused {peer}: {why}");
                        refused = Some(format!("{peer}: {why}"));
                    }
                }
            }
            if cancelled() {
                return Err(SyncError::Cancelled);
            }
            if Instant::now() >= deadline {
                return Err(SyncError::NoReplica {
                    addr: self.addr,
                    after: expect.within,
                    refused,
                });
            }
            match self.listener.accept() {
                Ok((sock, peer)) => {
                    if expect.peer_ip.is_some_and(|ip| !same_ip(ip, peer.ip())) {
                        refused = Some(format!("{peer}: not the target's address"));
                        tracing::warn!("full sync: refused {peer}: not the target's address");
                        continue; // dropped: closed without a byte
                    }
                    if running >= MAX_PEERS {
                        continue;
                    }
                    running += 1;
                    let (tx, expect) = (tx.clone(), expect.clone());
                    let hs_deadline = deadline;
                    std::thread::spawn(move || {
                        let r =
                            handshake(sock, peer, &expect, hs_deadline).map_err(|why| (peer, why));
                        let _ = tx.send(r);
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(io("accept")(e)),
            }
        }
    }
}

/// Whether two addresses are the same host (an IPv4 address and its IPv6-mapped form are).
fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    canon(a) == canon(b)
}

/// A peer that passed the handshake, before the payload header is sent.
struct Linked0 {
    sock: TcpStream,
    reader: BufReader<TcpStream>,
    peer: SocketAddr,
}

impl Linked0 {
    /// Send the payload header and start draining the replica's acknowledgements.
    fn start(self) -> Transfer {
        let mark = random_hex40();
        let mut head = b"$EOF:".to_vec();
        head.extend_from_slice(&mark);
        head.extend_from_slice(b"\r\n");
        let closed = Arc::new(AtomicBool::new(false));
        let flag = closed.clone();
        let _ = self.sock.set_read_timeout(None);
        // The replica writes REPLCONF ACKs once linked; nobody needs them, but the socket
        // buffer must not fill up, and their end tells that the replica let go. This read has
        // no deadline of its own (a quiet replica is no fault): the transfer shuts the socket
        // down when it finishes or is dropped, which ends it.
        let mut r = self.reader;
        let drain = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
            }
            flag.store(true, Ordering::SeqCst);
        });
        let mut t = Transfer {
            sock: self.sock,
            mark,
            peer: self.peer,
            closed,
            drain: Some(drain),
            head: Some(head),
        };
        // The header goes with the first write (an error there is the transfer's).
        let _ = t.flush_head();
        t
    }
}

/// Answer one peer's handshake, if it is the target (see the module doc); `Err(why)`
/// refuses it (closed without a byte of the data).
fn handshake(
    sock: TcpStream,
    peer: SocketAddr,
    expect: &Expect,
    deadline: Instant,
) -> Result<Linked0, String> {
    let e = |e: std::io::Error| e.to_string();
    sock.set_nonblocking(false).map_err(e)?;
    sock.set_nodelay(true).map_err(e)?;
    sock.set_write_timeout(Some(expect.write_timeout))
        .map_err(e)?;
    let mut reader = BufReader::new(sock.try_clone().map_err(e)?);
    let mut w = &sock;
    let mut authed = false;
    let mut eof_capa = false;
    loop {
        // The whole handshake has one deadline: a peer trickling commands cannot hold it.
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("handshake not finished in time".into());
        }
        sock.set_read_timeout(Some(left)).map_err(e)?;
        let cmd = read_command(&mut reader).map_err(e)?;
        let name = cmd
            .first()
            .map(|a| a.to_ascii_uppercase())
            .unwrap_or_default();
        let reply: &[u8] = match (name.as_slice(), authed) {
            (b"PING", false) => b"-NOAUTH Authentication required.\r\n",
            (b"AUTH", false) => {
                if cmd.len() < 2 || cmd.last().map(|s| s.as_slice()) != Some(&expect.secret[..]) {
                    return Err("wrong AUTH".into());
                }
                authed = true;
                b"+OK\r\n"
            }
            (_, false) => return Err("no AUTH first".into()),
            (b"PING", true) => b"+PONG\r\n",
            (b"REPLCONF", true) => {
                eof_capa |= cmd
                    .windows(2)
                    .any(|p| p[0].eq_ignore_ascii_case(b"capa") && p[1] == b"eof");
                b"+OK\r\n"
            }
            (b"PSYNC" | b"SYNC", true) if !eof_capa => {
                let _ = w.write_all(b"-ERR rdbferry streams with an EOF mark only\r\n");
                return Err("the replica did not announce 'capa eof'".into());
            }
            (b"PSYNC" | b"SYNC", true) => {
                let mut reply = b"+FULLRESYNC ".to_vec();
                reply.extend_from_slice(&random_hex40());
                reply.extend_from_slice(b" 0\r\n");
                w.write_all(&reply).map_err(e)?;
                return Ok(Linked0 { sock, reader, peer });
            }
            _ => {
                let _ = w.write_all(b"-ERR not a Redis master\r\n");
                return Err(format!(
                    "command {:?}",
                    String::from_utf8_lossy(&name[..name.len().min(40)])
                ));
            }
        };
        w.write_all(reply).map_err(e)?;
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
    /// The payload header, until it is written.
    head: Option<Vec<u8>>,
}

impl Transfer {
    fn flush_head(&mut self) -> std::io::Result<()> {
        if let Some(h) = self.head.take() {
            (&self.sock).write_all(&h)?;
        }
        Ok(())
    }
}

impl Write for Transfer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.flush_head()?;
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
        self.flush_head().map_err(io("send"))?;
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
