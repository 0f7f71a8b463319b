//! The replica side of Redis replication: ask a server for its data as a replica does, read
//! the RDB payload of a full sync, then the command stream that follows.
//!
//! One client, [`psync`], for every user: `verify`'s snapshot comparison
//! ([`SyncStart::Sync`] with `rdb_only`: `REPLCONF rdb-only 1` + `SYNC`: the target forks,
//! saves and streams its RDB), `fetch` ([`SyncStart::Full`] with `rdb_only`: the RDB to a
//! file) and `sync` ([`SyncStart::Full`], then [`ReplStream`]: the snapshot, then every
//! write, resumable with [`SyncStart::Continue`]).
//!
//! The handshake (FORMATS §11.1), on a connected and authenticated [`Conn`]:
//! `REPLCONF listening-port -1` (see "Sentinel" below), `REPLCONF capa eof capa psync2`
//! (diskless payloads, and `+CONTINUE <new replid>`), `REPLCONF rdb-only 1` when only the RDB
//! is wanted (7.0+; older servers refuse it and send the stream too, which is then not read),
//! then `PSYNC ? -1` for a full sync or `PSYNC <replid> <offset + 1>` to resume (the offset of
//! the next byte wanted: `slaveTryPartialResynchronization` in `redis src/replication.c`).
//! A server without `PSYNC` (`unknown command`: a very old one, or one that renamed it) is
//! asked with `SYNC` instead: a payload without a replication id, so nothing to resume from.
//! The same goes for `PSYNC` under another name (`--psync-command`): Redis serves it as `SYNC`.
//! A refused `PSYNC`/`SYNC` (renamed, disabled, `NOPERM`, managed services) is a
//! [`NetErrorKind::Refused`] whose hint names the cause.
//!
//! The payload (FORMATS §11.2): while the server saves (or waits for more replicas before a
//! diskless transfer) it sends a newline every second to keep the link alive, before the
//! `+FULLRESYNC` line too; then either `$<length>\r\n` and that many bytes (a save to disk), or
//! `$EOF:<40-byte mark>\r\n`, the RDB, and the mark again (a diskless transfer). [`Payload`]
//! reads exactly the RDB bytes in both forms: it stops at the length, or strips the mark. The
//! mark is recognised at the end of what was read: after a diskless transfer the master sends
//! nothing more until the replica's first `REPLCONF ACK` (`repl_start_cmd_stream_on_ack` in
//! `replication.c`), which [`Payload::into_stream`] sends. After a save to disk the command
//! stream may follow at once; the payload keeps what it read past the length for the stream.
//!
//! Deadlines: each read of the link has the connection's (`--timeout`); the keep-alive
//! newlines may go on only until `save_within` (a server that only ever sends newlines is an
//! error, not a loop forever). A link that closes early is an error, never a short RDB taken
//! for a whole one.
//!
//! # Sentinel: rdbferry is never a replica Sentinel knows
//!
//! A Sentinel learns a master's replicas from the master's `INFO replication`
//! (`slave0:ip=...,port=...,state=online,...`), where `port` is what the replica announced with
//! `REPLCONF listening-port` (0 when it announced nothing) and `ip` the peer address or
//! `REPLCONF ip-address`. It then connects to `ip:port` to `INFO` the replica, and in a
//! failover may promote it (`sentinelSelectSlave` in `redis src/sentinel.c`). A fake replica
//! that announces a port where some *real* server listens hands that server to Sentinel, which
//! may promote it or turn it into a replica (a split brain); one that announces port 0 is
//! added (`+slave 127.0.0.1:0`), kept in `sentinel.conf` as a known replica and only spared
//! because nothing accepts connections on port 0.
//!
//! rdbferry announces `listening-port -1`. Every master from 2.8 to 7.x takes any integer
//! (`replconfCommand`: `getLongFromObjectOrReply`, no range check) and lists the replica with
//! `port=-1`, so `INFO` and `ROLE` still show the link to operators; but Sentinel's
//! `createSentinelAddr` refuses a port outside 0..65535 (`EINVAL`), so
//! `sentinelRefreshInstanceInfo` never creates an instance for it: no `+slave` event, never in
//! `SENTINEL REPLICAS`, nothing to connect to or promote, whatever the network lets through
//! (the same check in 5.0, 6.0, 6.2 and 7.x). The other ways to be unpromotable need Sentinel
//! to reach rdbferry and read `slave_priority:0` / `replica_announced:0` from its `INFO`: a
//! listener of our own, and a failure mode (unreachable, or an error) instead of a rule. A
//! master that refused `-1` would list the link with port 0: still never promotable, as above.
//! `tests/replica.rs` proves it with a real Sentinel and a real failover.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::cancel::Cancel;
use crate::net::{Conn, NetError, NetErrorKind, Stream};
use crate::resp::{Reply, unknown_command, write_command};

mod stream;

pub use stream::{ReplEntry, ReplStream};

/// What rdbferry announces with `REPLCONF listening-port`: out of any port's range, so that
/// Sentinel never adds it as a replica (see the module doc).
pub const ANNOUNCED_PORT: &str = "-1";

/// How to ask for a sync with [`psync`].
#[derive(Debug, Clone)]
pub struct ReplicaOptions {
    /// The command that asks for a sync: `PSYNC`, or a renamed one (`--psync-command NAME`).
    /// Only the default falls back to `SYNC` on `unknown command`. Redis serves a renamed
    /// `PSYNC` as `SYNC` (`syncCommand` looks at the name typed): a full sync without a
    /// replication id, never a `+CONTINUE`.
    pub psync_command: Vec<u8>,
    /// How long the source may take to start sending its snapshot (it saves first).
    pub save_within: Duration,
    /// The run's stop token (looked at every second while the source saves, and by
    /// [`ReplStream::next`]).
    pub cancel: Cancel,
    /// `REPLCONF rdb-only 1` (7.0+): only the RDB is wanted (`fetch`), so the source keeps no
    /// command stream for this link and closes it after the RDB.
    pub rdb_only: bool,
}

impl ReplicaOptions {
    /// `PSYNC`, no `rdb-only`, with these deadlines.
    pub fn new(save_within: Duration, cancel: Cancel) -> ReplicaOptions {
        ReplicaOptions {
            psync_command: b"PSYNC".to_vec(),
            save_within,
            cancel,
            rdb_only: false,
        }
    }
}

/// Where a sync starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncStart {
    /// From a snapshot (`PSYNC ? -1`).
    Full,
    /// A snapshot asked for with `SYNC` (verify's): no replication id, nothing to resume
    /// from; the master expects no `REPLCONF ACK` (and, with `rdb_only`, sends no stream).
    Sync,
    /// Right after a point reached before: the replication id, the offset applied (a
    /// [`ReplEntry::offset`]) and the db selected there ([`ReplEntry::db_after`]): the master
    /// does not repeat a `SELECT` after a partial resync (the replica keeps its db from the
    /// previous link, `replication.c`), so the caller must.
    Continue {
        /// The replication id of that point.
        replid: String,
        /// The offset applied.
        offset: u64,
        /// The db selected at that point.
        db: u64,
    },
}

/// What the source answered to [`psync`].
#[derive(Debug)]
pub enum Handshake {
    /// `+FULLRESYNC`: the RDB payload follows, then the command stream from `offset`. After a
    /// fallback to `SYNC` (a server without `PSYNC`), or with a renamed `PSYNC` (which Redis
    /// serves as `SYNC`), `replid` is empty and `offset` 0: the stream's offsets are then
    /// relative, and cannot be resumed from.
    Full {
        /// The replication id.
        replid: String,
        /// The offset the snapshot is consistent with.
        offset: u64,
        /// The RDB.
        payload: Payload,
    },
    /// `+CONTINUE`: the command stream from the requested offset (`replid` may have changed:
    /// PSYNC2 sends the new one).
    Continue {
        /// The replication id to resume with from now on.
        replid: String,
        /// The offset requested (the stream's bytes follow it).
        offset: u64,
        /// The stream.
        stream: ReplStream,
    },
}

/// How the payload is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `$<length>`: that many bytes.
    Length(u64),
    /// `$EOF:<mark>`: the RDB, then the mark.
    EofMark([u8; 40]),
}

/// The link once replies are over: the socket and the bytes read past the last reply.
struct Link {
    stream: Stream,
    /// Bytes read and not yet used: `buf[pos..]`.
    buf: Vec<u8>,
    pos: usize,
    /// The server, for messages (redacted).
    name: String,
    /// The deadline of each read.
    timeout: Duration,
}

/// The longest line accepted before the payload (`+FULLRESYNC`, `$EOF:` and 40 characters,
/// an error reply).
const MAX_LINE: usize = 1024;

impl Link {
    fn of(conn: Conn) -> Link {
        let name = conn.name().to_string();
        let timeout = conn.timeout();
        let (stream, buf) = conn.into_parts();
        Link {
            stream,
            buf,
            pos: 0,
            name,
            timeout,
        }
    }

    fn error(&self, kind: NetErrorKind) -> NetError {
        NetError::new(self.name.clone(), kind)
    }

    /// Send one command.
    fn send(&mut self, args: &[&[u8]]) -> Result<(), NetError> {
        let mut out = Vec::new();
        write_command(&mut out, args);
        self.stream.write_all(&out).map_err(|e| {
            let kind = match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                    NetErrorKind::Timeout {
                        awaited: "the server to read a command".into(),
                        after: self.timeout,
                    }
                }
                _ => NetErrorKind::Io {
                    what: "write",
                    err: e,
                },
            };
            self.error(kind)
        })
    }

    /// The next line, after any keep-alive newlines, trimmed; the wait ends at `deadline`
    /// (then an error saying the server sent only newlines), when `cancel` is set, or when a
    /// read waits longer than the link's timeout (an error saying it `awaited` the line).
    fn line(
        &mut self,
        awaited: &str,
        deadline: Instant,
        patience: Duration,
        cancel: &Cancel,
    ) -> Result<String, NetError> {
        loop {
            while self.pos < self.buf.len() && matches!(self.buf[self.pos], b'\n' | b'\r') {
                self.pos += 1;
            }
            if let Some(nl) = self.buf[self.pos..].iter().position(|&b| b == b'\n') {
                let raw = &self.buf[self.pos..self.pos + nl];
                let line = String::from_utf8_lossy(raw).trim().to_string();
                self.pos += nl + 1;
                return Ok(line);
            }
            if self.buf.len() - self.pos > MAX_LINE {
                return Err(self.error(NetErrorKind::Unexpected {
                    command: awaited.into(),
                    what: "a line without an end".into(),
                }));
            }
            if cancel.is_cancelled() {
                return Err(self.error(NetErrorKind::Interrupted));
            }
            if Instant::now() >= deadline {
                return Err(self.error(NetErrorKind::Timeout {
                    awaited: "the server to start sending its snapshot (it sent only \
                              keep-alive newlines)"
                        .into(),
                    after: patience,
                }));
            }
            self.buf.drain(..self.pos);
            self.pos = 0;
            let mut chunk = [0u8; 4096];
            let n = read_some(
                &mut self.stream,
                &mut chunk,
                &self.name,
                self.timeout,
                awaited,
            )?;
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The RDB bytes of a full sync, as a reader that ends where the RDB ends.
pub struct Payload {
    link: Link,
    framing: Framing,
    /// Bytes handed out so far.
    given: u64,
    done: bool,
    /// Whether the stream after it may be acknowledged (`PSYNC`; a `SYNC` master takes
    /// no `REPLCONF ACK`).
    acks: bool,
    cancel: Cancel,
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Payload({}, {:?})", self.link.name, self.framing)
    }
}

/// The `REPLCONF`s before `PSYNC` or `SYNC`: the announced port (see the module doc), the
/// capabilities, and `rdb-only` when asked for.
fn announce(conn: &mut Conn, rdb_only: bool) -> Result<(), NetError> {
    // Refused, the master lists the link with port 0: still never promotable (module doc).
    // A missing REPLCONF or no right to it is an error here, though: the ACKs need it.
    let port = conn.call_small(&[b"REPLCONF", b"listening-port", ANNOUNCED_PORT.as_bytes()])?;
    if let Reply::Error(e) = port
        && (denied(&e) || unknown_command(&String::from_utf8_lossy(&e)))
    {
        return Err(replconf_refused(conn, "REPLCONF listening-port", &e));
    }
    if let Reply::Error(e) = conn.call_small(&[b"REPLCONF", b"capa", b"eof", b"capa", b"psync2"])? {
        return Err(replconf_refused(conn, "REPLCONF capa", &e));
    }
    if rdb_only {
        // 7.0+; older servers refuse it and send the command stream after the RDB.
        let _ = conn.call_small(&[b"REPLCONF", b"rdb-only", b"1"])?;
    }
    Ok(())
}

fn replconf_refused(conn: &Conn, command: &str, e: &[u8]) -> NetError {
    let err = conn.refused(command, e);
    if denied(e) {
        err.with_hint(ACL_HINT)
    } else {
        err.with_hint("the server does not take replicas from this client")
    }
}

/// What a user needs to be a replica.
const ACL_HINT: &str =
    "the user needs the rights of a replica: ACL SETUSER <user> +psync +sync +replconf";

/// `NOAUTH` / `NOPERM`: the user may not.
fn denied(e: &[u8]) -> bool {
    e.starts_with(b"NOPERM") || e.starts_with(b"NOAUTH")
}

/// The error for a refused `PSYNC` (by the name it has here) or `SYNC`, with what to do.
fn refusal(link: &Link, command: &str, reply: &str, renamed: bool) -> NetError {
    let err = link.error(NetErrorKind::Refused {
        command: command.to_string(),
        reply: reply.to_string(),
    });
    if denied(reply.as_bytes()) {
        err.with_hint(ACL_HINT)
    } else if unknown_command(reply) && renamed {
        err.with_hint(format!(
            "the server knows no {command}: is --psync-command the name it gives PSYNC?"
        ))
    } else if unknown_command(reply) {
        err.with_hint(
            "the server has PSYNC and SYNC renamed or disabled (managed services often do); \
             if PSYNC has another name there, give it with --psync-command NAME",
        )
    } else {
        err
    }
}

/// Ask the server behind `conn` (connected and authenticated) for a sync, as a replica:
/// `REPLCONF listening-port` / `capa eof psync2` (and `rdb-only`), then `PSYNC replid offset`
/// (`? -1` for a full sync), falling back to `SYNC` for a server without `PSYNC`, or `SYNC`
/// right away ([`SyncStart::Sync`]). See the module doc for the errors.
pub fn psync(
    mut conn: Conn,
    start: SyncStart,
    opts: &ReplicaOptions,
) -> Result<Handshake, NetError> {
    announce(&mut conn, opts.rdb_only)?;
    let deadline = Instant::now() + opts.save_within;
    let mut link = Link::of(conn);
    let command = String::from_utf8_lossy(&opts.psync_command).to_ascii_uppercase();
    let renamed = command != "PSYNC";
    let (replid, from) = match &start {
        SyncStart::Full => ("?".to_string(), "-1".to_string()),
        SyncStart::Sync => return plain_sync(link, deadline, opts),
        SyncStart::Continue { replid, offset, .. } => {
            (replid.clone(), offset.saturating_add(1).to_string())
        }
    };
    link.send(&[&opts.psync_command, replid.as_bytes(), from.as_bytes()])?;
    let awaited = format!("the reply to {command}");
    let wait =
        |link: &mut Link, what: &str| link.line(what, deadline, opts.save_within, &opts.cancel);
    let line = wait(&mut link, &awaited)?;
    if let Some((replid, offset)) = parse_fullresync(&line) {
        let header = wait(&mut link, "the snapshot's header")?;
        let payload = Payload::start(link, &header, &command, true, opts.cancel.clone())?;
        return Ok(Handshake::Full {
            replid,
            offset,
            payload,
        });
    }
    if let Some(new_id) = parse_continue(&line) {
        let SyncStart::Continue { replid, offset, db } = start else {
            return Err(link.error(NetErrorKind::Unexpected {
                command: command.clone(),
                what: "+CONTINUE to a request for a full sync".into(),
            }));
        };
        let replid = new_id.unwrap_or(replid);
        let stream = ReplStream::new(link, replid.clone(), offset, db, true, opts.cancel.clone())?;
        return Ok(Handshake::Continue {
            replid,
            offset,
            stream,
        });
    }
    if line.starts_with('$') {
        // Redis takes a renamed PSYNC for SYNC (`syncCommand` compares the name typed with
        // "psync"): the payload comes at once, without a replication id.
        let payload = Payload::start(link, &line, &command, false, opts.cancel.clone())?;
        return Ok(Handshake::Full {
            replid: String::new(),
            offset: 0,
            payload,
        });
    }
    let Some(e) = line.strip_prefix('-') else {
        return Err(link.error(NetErrorKind::Unexpected {
            command,
            what: format!("{:?}", shown(&line)),
        }));
    };
    if renamed || !unknown_command(e) {
        return Err(refusal(&link, &command, e, renamed));
    }
    // No PSYNC here: a server older than 2.8, or PSYNC renamed or disabled.
    plain_sync(link, deadline, opts)
}

/// `SYNC`: the payload at once (after keep-alive newlines until `deadline`), without a
/// replication id.
fn plain_sync(
    mut link: Link,
    deadline: Instant,
    opts: &ReplicaOptions,
) -> Result<Handshake, NetError> {
    link.send(&[b"SYNC"])?;
    let line = link.line(
        "the snapshot's header",
        deadline,
        opts.save_within,
        &opts.cancel,
    )?;
    if let Some(e) = line.strip_prefix('-') {
        return Err(refusal(&link, "SYNC", e, false));
    }
    let payload = Payload::start(link, &line, "SYNC", false, opts.cancel.clone())?;
    Ok(Handshake::Full {
        replid: String::new(),
        offset: 0,
        payload,
    })
}

/// The start of a line, for messages (80 characters at most).
fn shown(line: &str) -> String {
    line.chars().take(80).collect()
}

/// `+FULLRESYNC <replid> <offset>`.
fn parse_fullresync(line: &str) -> Option<(String, u64)> {
    let mut words = line.strip_prefix("+FULLRESYNC ")?.split_ascii_whitespace();
    let replid = words.next().filter(|id| is_replid(id))?;
    let offset = words.next()?.parse().ok()?;
    words.next().is_none().then(|| (replid.to_string(), offset))
}

/// `+CONTINUE` (`Some(None)`) or `+CONTINUE <new replid>` (PSYNC2).
fn parse_continue(line: &str) -> Option<Option<String>> {
    let rest = line.strip_prefix("+CONTINUE")?;
    let mut words = rest.split_ascii_whitespace();
    match (words.next(), words.next()) {
        (None, _) if rest.is_empty() || rest.starts_with(' ') => Some(None),
        (Some(id), None) if rest.starts_with(' ') && is_replid(id) => Some(Some(id.to_string())),
        _ => None,
    }
}

/// A replication id: 40 hex characters (`CONFIG_RUN_ID_SIZE`).
fn is_replid(id: &str) -> bool {
    id.len() == 40 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Payload {
    /// The payload after its header line `header` (`command` named it, for messages).
    fn start(
        link: Link,
        header: &str,
        command: &str,
        acks: bool,
        cancel: Cancel,
    ) -> Result<Payload, NetError> {
        let Some(framing) = parse_header(header) else {
            let what = format!("{:?} where the snapshot's header belongs", shown(header));
            return Err(link.error(NetErrorKind::Unexpected {
                command: command.into(),
                what,
            }));
        };
        Ok(Payload {
            link,
            framing,
            given: 0,
            done: false,
            acks,
            cancel,
        })
    }

    /// How the payload is framed.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// The server, for messages.
    pub fn name(&self) -> &str {
        &self.link.name
    }

    /// Bytes of the RDB read so far.
    pub fn bytes_read(&self) -> u64 {
        self.given
    }

    /// After the RDB has been read to its end: the command stream that follows on the same
    /// link, from `offset` (the `+FULLRESYNC` one), with `replid` to resume later. It
    /// acknowledges `offset` at once: a master that sent the RDB diskless starts the stream
    /// only then. An RDB not read to its end is an error (its bytes would be taken for
    /// commands).
    pub fn into_stream(mut self, replid: String, offset: u64) -> Result<ReplStream, NetError> {
        match self.framing {
            Framing::Length(total) if self.given != total => {
                return Err(self.unfinished(Some(total)));
            }
            Framing::Length(_) => {}
            Framing::EofMark(mark) => {
                // The reader held the mark back; it may also have stopped before asking for
                // the end (the RDB's own EOF told it to).
                while self.link.buf.len() - self.link.pos < 40 {
                    if self.refill()? == 0 {
                        return Err(self
                            .link
                            .error(NetErrorKind::Closed("the end of the snapshot".into())));
                    }
                }
                let at = self.link.pos;
                if self.link.buf[at..at + 40] != mark {
                    return Err(self.unfinished(None));
                }
                self.link.pos += 40;
            }
        }
        let acks = self.acks;
        ReplStream::new(self.link, replid, offset, 0, acks, self.cancel)
    }

    /// A newline to the source, as a replica sends while it loads a snapshot: the master
    /// takes it for a sign of life (`repl_ack_time`), where a replica silent for
    /// `repl-timeout` after the payload is dropped. A failed write is left to the reads that
    /// follow to report.
    pub fn keepalive(&mut self) {
        let _ = self.link.stream.write_all(b"\n");
    }

    fn unfinished(&self, total: Option<u64>) -> NetError {
        self.link.error(NetErrorKind::Unexpected {
            command: "the snapshot".into(),
            what: format!(
                "the command stream was asked for after {} bytes of the RDB{}, before its end",
                self.given,
                total.map(|t| format!(" of {t}")).unwrap_or_default()
            ),
        })
    }

    /// Refill the buffer (keeping its unread part); the bytes read (0: the link closed).
    fn refill(&mut self) -> Result<usize, NetError> {
        let link = &mut self.link;
        link.buf.drain(..link.pos);
        link.pos = 0;
        let at = link.buf.len();
        link.buf.resize(at + (256 << 10), 0);
        let n = loop {
            match link.stream.read(&mut link.buf[at..]) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        link.buf.truncate(at + *n.as_ref().unwrap_or(&0));
        n.map_err(|e| {
            let kind = match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                    NetErrorKind::Timeout {
                        awaited: format!("the rest of the snapshot (after {} bytes)", self.given),
                        after: self.link.timeout,
                    }
                }
                _ => NetErrorKind::Io {
                    what: "read",
                    err: e,
                },
            };
            self.link.error(kind)
        })
    }

    /// The next RDB bytes, as [`Read::read`] with typed errors: `Ok(0)` at the end of the
    /// RDB; a link that closes early is [`NetErrorKind::Closed`], never a short RDB taken
    /// for a whole one. (The cancel token is the caller's to look at between reads.)
    pub fn read_bytes(&mut self, out: &mut [u8]) -> Result<usize, NetError> {
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
                if self.link.pos == self.link.buf.len() && self.refill()? == 0 {
                    return Err(self.cut(Some(total)));
                }
                let avail = self.link.buf.len() - self.link.pos;
                Ok(self.give(out, avail.min(usize::try_from(left).unwrap_or(usize::MAX))))
            }
            Framing::EofMark(mark) => {
                // Hold back the last 40 bytes: they may be the mark.
                loop {
                    let (buf, pos) = (&self.link.buf, self.link.pos);
                    let avail = buf.len() - pos;
                    if avail >= 40 && buf[buf.len() - 40..] == mark {
                        if avail == 40 {
                            self.done = true;
                            return Ok(0);
                        }
                        return Ok(self.give(out, avail - 40));
                    }
                    if avail > 40 {
                        return Ok(self.give(out, avail - 40));
                    }
                    if self.refill()? == 0 {
                        return Err(self.cut(None));
                    }
                }
            }
        }
    }

    fn cut(&self, total: Option<u64>) -> NetError {
        self.link.error(NetErrorKind::Closed(format!(
            "the rest of the snapshot (after {}{} bytes)",
            self.given,
            total.map(|t| format!(" of {t}")).unwrap_or_default()
        )))
    }

    /// Hand out up to `n` buffered bytes.
    fn give(&mut self, out: &mut [u8], n: usize) -> usize {
        let n = n.min(out.len());
        let at = self.link.pos;
        out[..n].copy_from_slice(&self.link.buf[at..at + n]);
        self.link.pos += n;
        self.given += n as u64;
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
    /// [`Payload::read_bytes`], its errors as I/O errors of the same meaning
    /// (`UnexpectedEof`, `TimedOut`), each naming the server.
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        self.read_bytes(out).map_err(|e| {
            let kind = match &e.kind {
                NetErrorKind::Closed(_) => std::io::ErrorKind::UnexpectedEof,
                NetErrorKind::Timeout { .. } => std::io::ErrorKind::TimedOut,
                NetErrorKind::Io { err, .. } => err.kind(),
                _ => std::io::ErrorKind::Other,
            };
            std::io::Error::new(kind, e.to_string())
        })
    }
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

    #[test]
    fn psync_replies() {
        let id = "8de1787ba490483314a4d30f1c628bc5025eb761";
        assert_eq!(
            parse_fullresync(&format!("+FULLRESYNC {id} 1234")),
            Some((id.to_string(), 1234))
        );
        assert_eq!(parse_fullresync(&format!("+FULLRESYNC {id}")), None);
        assert_eq!(parse_fullresync("+FULLRESYNC short 1"), None);
        assert_eq!(parse_fullresync(&format!("+FULLRESYNC {id} -1")), None);
        assert_eq!(parse_continue("+CONTINUE"), Some(None));
        assert_eq!(
            parse_continue(&format!("+CONTINUE {id}")),
            Some(Some(id.to_string()))
        );
        assert_eq!(parse_continue("+CONTINUED"), None);
        assert_eq!(parse_continue(&format!("+CONTINUE {id} x")), None);
        assert!(unknown_command(
            "ERR unknown command 'PSYNC', with args beginning with: "
        ));
        assert!(unknown_command(
            "ERR unknown command `PSYNC`, with args beginning with: "
        ));
        assert!(!unknown_command(
            "NOPERM this user has no permissions to run the 'psync' command"
        ));
    }
}
