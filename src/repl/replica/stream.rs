//! [`ReplStream`]: the command stream a master sends a replica after the snapshot (or after
//! `+CONTINUE`), as [`ReplEntry`]s, with the replica's duties done: offsets counted as the
//! master counts them, `REPLCONF ACK` every second and on `REPLCONF GETACK`, a dead link
//! told from a quiet one.
//!
//! Design decisions (FORMATS §11.3, §11.4):
//!
//! * **Offsets are the master's.** Every byte of every command after the RDB counts, `PING`,
//!   `SELECT` and `REPLCONF GETACK` included, so that [`ReplStream::offset`] is the master's
//!   `master_repl_offset` once everything has arrived, and an entry's offset is what
//!   `PSYNC <replid> <offset + 1>` resumes after ([`super::SyncStart::Continue`]).
//! * **Entries like the AOF tail's** (`input::tail`): one command, or a whole `MULTI` … `EXEC`
//!   (both included, as a script's effects also come); `SELECT` between entries is consumed and
//!   sets the db, one inside a transaction is kept (it switches the db mid-block), and
//!   [`ReplEntry::db_after`] says where the stream stands after the entry: a resume point is
//!   (replid, offset, db), since the master repeats no `SELECT` after a partial resync.
//! * **ACKs say what is applied, not what arrived.** `REPLCONF ACK` is what keeps the master
//!   from timing the link out (`repl-timeout`) and what `WAIT` and `min-replicas-to-write`
//!   count: it carries the offset the caller applied ([`ReplStream::set_applied`]), or, once
//!   everything handed out is applied, the offset after the `PING`s and `SELECT`s that
//!   followed (nothing in them to apply). It goes out at least once a second while
//!   [`ReplStream::next`] is being called, and at once on `REPLCONF GETACK`. Not after a
//!   `SYNC` fallback: such a master expects no ACK (`CLIENT_PRE_PSYNC`).
//! * **Deadlines.** The master sends a `PING` every `repl-ping-replica-period` (10 s by
//!   default), so a link silent for longer than the connection's timeout (`--timeout`) is dead:
//!   an error, and the caller resumes with `PSYNC`. A wait shorter than that (`next(wait)`)
//!   that sees nothing is `Ok(None)`.
//! * **Bounded.** The read buffer holds one command at most (it grows with a big one, at most
//!   doubling per read, toward what arrives, never what a length announces), and a transaction
//!   is held, owned, only until its `EXEC`, within [`MAX_ENTRY_BYTES`].

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use super::Link;
use crate::aof::{Feed, feed_role};
use crate::cancel::Cancel;
use crate::net::{NetError, NetErrorKind};
use crate::resp::{Decoded, Reply, ReplyDecoder, write_command};

/// The most bytes one command, or one transaction with its commands held as owned
/// arguments, may take (above Redis's `proto-max-bulk-len` of 512 MB with room; it only
/// keeps a broken or hostile stream from growing memory without bound).
pub const MAX_ENTRY_BYTES: u64 = 4 << 30;

/// Memory an argument costs beyond its bytes, once held (a `Vec`).
const ARG_COST: u64 = 24;

/// Bytes asked for per read (the buffer grows past it for a bigger command).
const READ_BYTES: usize = 256 << 10;

/// How often an ACK goes out.
const ACK_EVERY: Duration = Duration::from_secs(1);

/// One command, or one `MULTI` … `EXEC` transaction, from the master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplEntry {
    /// The db the (first) command applies to.
    pub db: u64,
    /// Name and arguments of each command (`MULTI` and `EXEC` included for a transaction).
    pub commands: Vec<Vec<Vec<u8>>>,
    /// The replication offset right after it.
    pub offset: u64,
    /// The db selected after it (differs from `db` only when a transaction `SELECT`s):
    /// with `offset`, where to resume ([`super::SyncStart::Continue`]).
    pub db_after: u64,
}

/// A transaction being gathered.
struct Txn {
    db: u64,
    commands: Vec<Vec<Vec<u8>>>,
    /// Offset before its `MULTI`.
    start: u64,
    /// Memory held: bytes and [`ARG_COST`] per argument.
    held: u64,
}

/// The command stream of a master; see the module doc.
pub struct ReplStream {
    link: Link,
    /// Bytes read and not yet parsed: `link.buf[link.pos..end]` (the buffer is all
    /// initialized up to its length).
    end: usize,
    dec: ReplyDecoder,
    /// Bytes the next element needs (a bulk string whose header was read), else 0.
    need: usize,
    replid: String,
    /// Offset of the last byte received.
    received: u64,
    /// Offset of the last byte parsed.
    parsed: u64,
    /// Offset after the last entry handed out.
    delivered: u64,
    /// Offset up to which every command was handed out or had nothing to apply (no
    /// transaction open).
    settled: u64,
    /// Offset the caller applied.
    applied: u64,
    db: u64,
    txn: Option<Txn>,
    acks: bool,
    last_ack: Option<Instant>,
    last_byte: Instant,
    cancel: Cancel,
}

impl std::fmt::Debug for ReplStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ReplStream({}, {} at {})",
            self.link.name, self.replid, self.received
        )
    }
}

impl ReplStream {
    /// The stream on `link` (what it holds unread is the stream's first bytes), at `offset`
    /// in `db`; it acknowledges `offset` at once when `acks`.
    pub(super) fn new(
        mut link: Link,
        replid: String,
        offset: u64,
        db: u64,
        acks: bool,
        cancel: Cancel,
    ) -> Result<ReplStream, NetError> {
        link.buf.drain(..link.pos);
        link.pos = 0;
        let end = link.buf.len();
        let mut s = ReplStream {
            link,
            end,
            dec: ReplyDecoder::new(MAX_ENTRY_BYTES),
            need: 0,
            replid,
            received: offset + end as u64,
            parsed: offset,
            delivered: offset,
            settled: offset,
            applied: offset,
            db,
            txn: None,
            acks,
            last_ack: None,
            last_byte: Instant::now(),
            cancel,
        };
        s.ack_if_due()?;
        Ok(s)
    }

    /// The next command, or `MULTI` … `EXEC` transaction as one entry; `Ok(None)` when none
    /// came within `wait` (or the cancel token was set). `PING`, `REPLCONF` and `SELECT`
    /// between entries are consumed (see the module doc). Errors: the link closed, or silent
    /// for longer than the connection's timeout; bytes that are no command.
    pub fn next(&mut self, wait: Duration) -> Result<Option<ReplEntry>, NetError> {
        let until = Instant::now() + wait;
        // At least one read per call: `next(Duration::ZERO)` polls.
        let mut read = false;
        loop {
            while let Some(args) = self.decode()? {
                if let Some(entry) = self.command(args)? {
                    self.ack_if_due()?;
                    return Ok(Some(entry));
                }
            }
            self.ack_if_due()?;
            let now = Instant::now();
            if (read && now >= until) || self.cancel.is_cancelled() {
                return Ok(None);
            }
            let dead_at = self.last_byte + self.link.timeout;
            let ack_at = self.last_ack.map_or(now, |t| t + ACK_EVERY);
            let slice = until
                .min(dead_at)
                .min(ack_at)
                .saturating_duration_since(now);
            let got = self.fill(slice.max(Duration::from_millis(1)))?;
            read = true;
            // Silent for longer than the timeout. (A caller away that long finds the PINGs
            // sent meanwhile waiting in the socket: the read above took them.)
            if !got && Instant::now() >= dead_at {
                return Err(self.link.error(NetErrorKind::Timeout {
                    awaited: "the replication stream (a master sends a PING every \
                              repl-ping-replica-period, 10 s by default)"
                        .into(),
                    after: self.link.timeout,
                }));
            }
        }
    }

    /// The offset the caller has applied: what `REPLCONF ACK` says from now on (at most
    /// what was parsed).
    pub fn set_applied(&mut self, offset: u64) {
        self.applied = offset.min(self.parsed);
    }

    /// The offset of the last byte received.
    pub fn offset(&self) -> u64 {
        self.received
    }

    /// Where the stream stands once every entry handed out is applied: the offset after the
    /// `PING`s and `SELECT`s that followed the last entry, and the db selected there (what a
    /// checkpoint can say when caught up). `None` while a transaction is being gathered.
    pub fn settled(&self) -> Option<(u64, u64)> {
        self.txn.is_none().then_some((self.settled, self.db))
    }

    /// The replication id (to resume with).
    pub fn replid(&self) -> &str {
        &self.replid
    }

    /// The server, for messages.
    pub fn name(&self) -> &str {
        &self.link.name
    }

    /// What an ACK says: see the module doc.
    fn ack_offset(&self) -> u64 {
        if self.applied >= self.delivered {
            self.settled.max(self.applied)
        } else {
            self.applied
        }
    }

    fn ack_if_due(&mut self) -> Result<(), NetError> {
        match self.last_ack {
            Some(t) if t.elapsed() < ACK_EVERY => Ok(()),
            _ => self.ack(),
        }
    }

    fn ack(&mut self) -> Result<(), NetError> {
        self.last_ack = Some(Instant::now());
        if !self.acks {
            return Ok(());
        }
        let off = self.ack_offset().to_string();
        let mut out = Vec::with_capacity(48);
        write_command(&mut out, &[b"REPLCONF", b"ACK", off.as_bytes()]);
        self.link.stream.write_all(&out).map_err(|e| {
            let kind = match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                    NetErrorKind::Timeout {
                        awaited: "the master to read REPLCONF ACK".into(),
                        after: self.link.timeout,
                    }
                }
                _ => NetErrorKind::Io {
                    what: "write",
                    err: e,
                },
            };
            self.link.error(kind)
        })
    }

    /// The next whole command among the bytes read, if there is one.
    fn decode(&mut self) -> Result<Option<Vec<Vec<u8>>>, NetError> {
        let (pos, end) = (self.link.pos, self.end);
        if pos == end {
            return Ok(None);
        }
        let (used, got) = self.dec.decode(&self.link.buf[pos..end]).map_err(|err| {
            self.link.error(NetErrorKind::Protocol {
                awaited: format!("the replication stream at offset {}", self.parsed),
                err,
            })
        })?;
        self.link.pos += used;
        self.parsed += used as u64;
        let items = match got {
            Decoded::Incomplete { need } => {
                self.need = need;
                return Ok(None);
            }
            Decoded::Reply(Reply::Array(items)) if !items.is_empty() => items,
            Decoded::Reply(other) => return Err(self.not_a_command(&other)),
        };
        self.need = 0;
        let mut args = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Reply::Bulk(b) => args.push(b),
                other => return Err(self.not_a_command(&other)),
            }
        }
        Ok(Some(args))
    }

    fn not_a_command(&self, what: &Reply) -> NetError {
        let text = super::shown(&format!("{what:?}"));
        self.link.error(NetErrorKind::Unexpected {
            command: "the replication stream".into(),
            what: format!("{text} at offset {}, where a command belongs", self.parsed),
        })
    }

    /// A whole command: consumed (`PING`, `REPLCONF`, `SELECT`), gathered (a transaction)
    /// or handed out.
    fn command(&mut self, args: Vec<Vec<u8>>) -> Result<Option<ReplEntry>, NetError> {
        let role = feed_role(&args);
        if let Feed::BadSelect(given) = &role {
            return Err(self.link.error(NetErrorKind::Unexpected {
                command: "the replication stream".into(),
                what: format!("SELECT {given:?} at offset {}", self.parsed),
            }));
        }
        if let Feed::Select(db) = role {
            self.db = db;
        }
        if let Some(mut txn) = self.txn.take() {
            txn.held += args.iter().map(|a| a.len() as u64 + ARG_COST).sum::<u64>();
            txn.commands.push(args);
            if role == Feed::EndTxn {
                return Ok(Some(self.entry(txn.db, txn.commands)));
            }
            if txn.held > MAX_ENTRY_BYTES {
                return Err(self.link.error(NetErrorKind::Unexpected {
                    command: "the replication stream".into(),
                    what: format!(
                        "a transaction from offset {} over {MAX_ENTRY_BYTES} bytes",
                        txn.start
                    ),
                }));
            }
            self.txn = Some(txn);
            return Ok(None);
        }
        if role == Feed::Multi {
            self.txn = Some(Txn {
                db: self.db,
                held: args.iter().map(|a| a.len() as u64 + ARG_COST).sum(),
                commands: vec![args],
                start: self.settled,
            });
            return Ok(None);
        }
        let name = args.first().map_or(&b""[..], Vec::as_slice);
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if matches!(role, Feed::Select(_)) || is("ping") {
            self.settled = self.parsed;
            return Ok(None);
        }
        if is("replconf") {
            self.settled = self.parsed;
            let getack = args
                .get(1)
                .is_some_and(|a| a.eq_ignore_ascii_case(b"getack"));
            if getack {
                self.ack()?;
            }
            return Ok(None);
        }
        Ok(Some(self.entry(self.db, vec![args])))
    }

    fn entry(&mut self, db: u64, commands: Vec<Vec<Vec<u8>>>) -> ReplEntry {
        self.delivered = self.parsed;
        self.settled = self.parsed;
        ReplEntry {
            db,
            commands,
            offset: self.parsed,
            db_after: self.db,
        }
    }

    /// One read of at most `wait`: whether bytes came (else the wait passed). The buffer
    /// grows toward what the command being parsed needs, at most doubling per read.
    fn fill(&mut self, wait: Duration) -> Result<bool, NetError> {
        let link = &mut self.link;
        if link.pos > 0 {
            link.buf.copy_within(link.pos..self.end, 0);
            self.end -= link.pos;
            link.pos = 0;
        }
        let want = self
            .need
            .min(link.buf.len().saturating_mul(2))
            .max(self.end + READ_BYTES);
        if link.buf.len() < want {
            link.buf.resize(want, 0);
        } else if link.buf.len() > 16 * READ_BYTES && self.end < READ_BYTES && self.need == 0 {
            // A big command grew the buffer: give the memory back.
            link.buf.truncate(self.end + READ_BYTES);
            link.buf.shrink_to_fit();
        }
        let _ = link.stream.set_read_timeout(Some(wait));
        let read = loop {
            match link.stream.read(&mut link.buf[self.end..]) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                r => break r,
            }
        };
        match read {
            Ok(0) => Err(self.link.error(NetErrorKind::Closed(format!(
                "the replication stream (at offset {})",
                self.received
            )))),
            Ok(n) => {
                self.end += n;
                self.received += n as u64;
                self.last_byte = Instant::now();
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(false)
            }
            Err(err) => Err(self.link.error(NetErrorKind::Io { what: "read", err })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Stream;
    use std::net::{TcpListener, TcpStream};

    /// A stream at offset 100 on a socket whose other end (the fake master) is returned.
    fn pair(timeout: Duration, acks: bool) -> (ReplStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (master, _) = l.accept().unwrap();
        let link = Link {
            stream: Stream::Tcp(client),
            buf: Vec::new(),
            pos: 0,
            name: "fake".into(),
            timeout,
        };
        let s = ReplStream::new(link, "r".repeat(40), 100, 0, acks, Cancel::new()).unwrap();
        (s, master)
    }

    fn cmd(args: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        write_command(&mut out, &args);
        out
    }

    fn names(e: &ReplEntry) -> Vec<String> {
        e.commands
            .iter()
            .map(|c| String::from_utf8_lossy(&c[0]).into_owned())
            .collect()
    }

    /// What the client sent, as text, once `want` is in it.
    fn sent_until(master: &mut TcpStream, want: &str) -> String {
        master
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 1024];
        while !String::from_utf8_lossy(&got).contains(want) {
            let n = master.read(&mut chunk).unwrap();
            assert!(n > 0, "closed; got {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    fn stream_bytes() -> (Vec<u8>, Vec<usize>) {
        let parts = [
            cmd(&["SELECT", "0"]),
            cmd(&["SET", "a", "1"]),
            cmd(&["PING"]),
            cmd(&["MULTI"]),
            cmd(&["SELECT", "2"]),
            cmd(&["SET", "b", "2"]),
            cmd(&["EXEC"]),
            cmd(&["SET", "c", "3"]),
            cmd(&["REPLCONF", "GETACK", "*"]),
        ];
        let ends = parts
            .iter()
            .scan(0, |at, p| {
                *at += p.len();
                Some(*at)
            })
            .collect();
        (parts.concat(), ends)
    }

    fn check_entries(s: &mut ReplStream, ends: &[usize]) {
        let mut got = Vec::new();
        while got.len() < 3 {
            if let Some(e) = s.next(Duration::from_secs(10)).unwrap() {
                got.push(e);
            }
        }
        assert_eq!(names(&got[0]), ["SET"]);
        assert_eq!(
            (got[0].db, got[0].offset, got[0].db_after),
            (0, 100 + ends[1] as u64, 0)
        );
        assert_eq!(names(&got[1]), ["MULTI", "SELECT", "SET", "EXEC"]);
        assert_eq!(
            (got[1].db, got[1].offset, got[1].db_after),
            (0, 100 + ends[6] as u64, 2)
        );
        assert_eq!(names(&got[2]), ["SET"]);
        assert_eq!((got[2].db, got[2].offset), (2, 100 + ends[7] as u64));
    }

    #[test]
    fn entries_offsets_and_getack() {
        let (mut s, mut master) = pair(Duration::from_secs(10), true);
        assert!(sent_until(&mut master, "ACK\r\n$3\r\n100\r\n").contains("REPLCONF"));
        let (bytes, ends) = stream_bytes();
        master.write_all(&bytes).unwrap();
        check_entries(&mut s, &ends);
        // Nothing applied yet: the GETACK is answered with the start.
        assert_eq!(s.next(Duration::ZERO).unwrap(), None);
        assert_eq!(s.offset(), 100 + bytes.len() as u64);
        assert!(sent_until(&mut master, "ACK\r\n$3\r\n100\r\n").contains("ACK"));
        // All applied: the ACK covers the GETACK after the last entry too.
        s.set_applied(100 + ends[7] as u64);
        assert_eq!(s.ack_offset(), 100 + bytes.len() as u64);
        s.set_applied(100 + ends[1] as u64);
        assert_eq!(s.ack_offset(), 100 + ends[1] as u64);
    }

    #[test]
    fn bytes_one_at_a_time() {
        let (mut s, master) = pair(Duration::from_secs(10), false);
        let (bytes, ends) = stream_bytes();
        let feeder = std::thread::spawn(move || {
            let mut m = master;
            for b in bytes {
                m.write_all(&[b]).unwrap();
            }
            m
        });
        check_entries(&mut s, &ends);
        drop(feeder.join().unwrap());
    }

    #[test]
    fn a_cut_a_silence_and_garbage_are_errors() {
        let (mut s, mut master) = pair(Duration::from_secs(10), false);
        master.write_all(&cmd(&["SET", "a", "1"])[..10]).unwrap();
        drop(master);
        let e = s.next(Duration::from_secs(10)).unwrap_err();
        assert!(matches!(e.kind, NetErrorKind::Closed(_)), "{e}");

        let (mut s, _master) = pair(Duration::from_millis(300), false);
        assert_eq!(s.next(Duration::from_millis(10)).unwrap(), None);
        let e = s.next(Duration::from_secs(10)).unwrap_err();
        assert!(e.is_timeout(), "{e}");

        // Away longer than the timeout, with a PING waiting: alive.
        let (mut s, mut master) = pair(Duration::from_millis(300), false);
        master.write_all(&cmd(&["PING"])).unwrap();
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(s.next(Duration::ZERO).unwrap(), None);
        assert_eq!(s.offset(), 114);

        let (mut s, mut master) = pair(Duration::from_secs(10), false);
        master.write_all(b"+OK\r\n").unwrap();
        let e = s.next(Duration::from_secs(10)).unwrap_err();
        assert!(e.to_string().contains("where a command belongs"), "{e}");
    }
}
