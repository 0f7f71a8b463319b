//! The transport under [`super::Conn`]: plain TCP, or TLS with rustls (the `ring` provider).
//! Bytes in, bytes out: the Redis protocol, authentication and `SELECT` are the `Conn`'s.
//!
//! Inside a TLS [`Stream`], the rustls session (`Arc<Mutex<ClientConnection>>`) and the
//! socket are kept apart, so that reading and writing never hold the session lock during
//! socket I/O:
//! - the reading side reads ciphertext from its socket *without* the session lock, then takes
//!   the lock only to decrypt (`read_tls`, `process_new_packets`, plaintext read);
//! - a writer takes a second lock, `send`, that orders writers; under it, it takes the session
//!   lock to encrypt a chunk into a buffer, drops the session lock, and writes the buffer to
//!   the socket. Records therefore reach the socket in the order they were sealed, and no
//!   socket I/O ever happens under the session lock: a writer blocked on a full socket (the
//!   server is busy writing replies) never keeps the reader from draining those replies.
//! - the reader never writes to the socket. A record the session wants to send in answer to
//!   one it read (a TLS 1.3 key update, say) goes out with the next write.
//!
//! Only a [`Stream`] reads, and it is not `Clone`, so there is one reader per session.
//!
//! Not here: retries and reconnection (a broken connection is an error for the caller), and
//! TLS session resumption across connections (each connection does a full handshake).

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rustls::ClientConnection;
use rustls::pki_types::ServerName;

use super::error::NetErrorKind;
use super::tls::{self, TlsConfig};

/// Open a connection to `host:port`, with TLS when `tls` is given (the handshake is done
/// here). `timeout` bounds the TCP connect and each read and write from then on, the
/// handshake's included, until the caller sets other deadlines.
pub fn connect(
    host: &str,
    port: u16,
    tls: Option<&TlsConfig>,
    timeout: Duration,
) -> Result<Stream, NetErrorKind> {
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(NetErrorKind::Resolve)?
        .collect();
    let mut last = None;
    let mut sock = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                sock = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let mut sock = sock.ok_or_else(|| {
        NetErrorKind::Connect(
            last.map(|e| e.to_string())
                .unwrap_or_else(|| "no address".into()),
        )
    })?;
    let _ = sock.set_nodelay(true);
    let _ = sock.set_read_timeout(Some(timeout));
    let _ = sock.set_write_timeout(Some(timeout));
    let Some(tls) = tls else {
        return Ok(Stream::Tcp(sock));
    };
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| NetErrorKind::Tls(format!("{host:?} is not a valid server name")))?;
    let mut session = ClientConnection::new(tls.client_config(), name)
        .map_err(|e| NetErrorKind::Tls(e.to_string()))?;
    // A server that never answers the ClientHello (a plain Redis waiting for a newline)
    // cannot hang us: every read and write of the handshake has the deadline set above.
    while session.is_handshaking() {
        if let Err(e) = session.complete_io(&mut sock) {
            return Err(NetErrorKind::Tls(tls::describe_io(
                &e,
                timeout,
                tls.options().flags,
            )));
        }
    }
    // Writes are sealed whole under the `send` lock (see the module doc): no buffer limit.
    session.set_buffer_limit(None);
    Ok(Stream::Tls(TlsStream {
        sock,
        shared: Arc::new(Shared {
            session: Mutex::new(session),
            send: Mutex::new(()),
        }),
        raw: vec![0; RAW_BYTES].into_boxed_slice(),
        start: 0,
        end: 0,
        eof: false,
        flags: tls.options().flags,
    }))
}

/// Ciphertext read from the socket at a time.
const RAW_BYTES: usize = 64 << 10;

/// Plaintext sealed under one hold of the session lock.
const SEAL_BYTES: usize = 256 << 10;

/// The session both halves of a TLS connection use.
struct Shared {
    session: Mutex<ClientConnection>,
    /// Held by a writer from sealing a chunk until its ciphertext is on the socket.
    send: Mutex<()>,
}

fn poisoned() -> io::Error {
    io::Error::other("TLS session state poisoned by a panic")
}

impl Shared {
    fn session(&self) -> io::Result<MutexGuard<'_, ClientConnection>> {
        self.session.lock().map_err(|_| poisoned())
    }

    /// Seal `data` and write it to `sock`, in chunks (see the module doc for the locks).
    fn write_all(&self, mut sock: &TcpStream, data: &[u8]) -> io::Result<()> {
        let _order = self.send.lock().map_err(|_| poisoned())?;
        let mut sealed = Vec::new();
        let mut rest = data;
        loop {
            let (chunk, tail) = rest.split_at(rest.len().min(SEAL_BYTES));
            rest = tail;
            {
                let mut s = self.session()?;
                if !chunk.is_empty() {
                    s.writer().write_all(chunk)?;
                }
                while s.wants_write() {
                    s.write_tls(&mut sealed)?;
                }
            }
            sock.write_all(&sealed)?;
            sealed.clear();
            if rest.is_empty() {
                return Ok(());
            }
        }
    }
}

/// The TLS side of a [`Stream`]: the socket, the shared session, and ciphertext read from
/// the socket but not yet given to the session.
pub struct TlsStream {
    sock: TcpStream,
    shared: Arc<Shared>,
    raw: Box<[u8]>,
    start: usize,
    end: usize,
    eof: bool,
    /// How the user names the TLS options, for messages (`--tls`, `--from-tls`).
    flags: &'static str,
}

impl TlsStream {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            {
                let mut s = self.shared.session()?;
                // Feed what the socket gave, as far as the session takes it. "Buffer full"
                // (an `Other` error) only means: hand out plaintext first.
                while self.start < self.end {
                    match s.read_tls(&mut &self.raw[self.start..self.end]) {
                        Ok(0) => break,
                        Ok(n) => self.start += n,
                        Err(e) if e.kind() == io::ErrorKind::Other => break,
                        Err(e) => return Err(e),
                    }
                    s.process_new_packets().map_err(|e| {
                        io::Error::new(io::ErrorKind::InvalidData, tls::describe(&e, self.flags))
                    })?;
                }
                match s.reader().read(out) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // The server closed the socket without a close_notify: the caller sees an
                    // end of stream, as with TCP (a reply cut short is an error there anyway).
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                    Err(e) => return Err(e),
                }
                if self.eof {
                    return Ok(0);
                }
                if self.start < self.end {
                    return Err(io::Error::other(
                        "TLS: the session took no more data and gave no plaintext",
                    ));
                }
            }
            // Wait for ciphertext without the lock: the writer keeps sealing meanwhile.
            let n = loop {
                match (&self.sock).read(&mut self.raw) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    r => break r?,
                }
            };
            self.start = 0;
            self.end = n;
            if n == 0 {
                self.eof = true;
                let mut s = self.shared.session()?;
                s.read_tls(&mut &[][..])?;
                s.process_new_packets().map_err(|e| {
                    io::Error::new(io::ErrorKind::InvalidData, tls::describe(&e, self.flags))
                })?;
            }
        }
    }
}

/// One connection, plain or TLS. It reads and writes.
pub enum Stream {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS over TCP.
    Tls(TlsStream),
}

impl Stream {
    /// The socket's read timeout (`None`: wait forever).
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.socket().set_read_timeout(t)
    }

    /// The socket's write timeout (`None`: wait forever).
    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.socket().set_write_timeout(t)
    }

    /// The address of the server.
    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        self.socket().peer_addr().ok()
    }

    /// The local end of a plain TCP connection (`None` over TLS).
    pub fn local_tcp_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Stream::Tcp(s) => s.local_addr().ok(),
            Stream::Tls(_) => None,
        }
    }

    fn socket(&self) -> &TcpStream {
        match self {
            Stream::Tcp(s) => s,
            Stream::Tls(t) => &t.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Stream {
    /// Writes all of `buf` (a TLS write is sealed and sent whole).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Tls(t) => t.shared.write_all(&t.sock, buf).map(|()| buf.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
