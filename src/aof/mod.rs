//! AOF files: the command reader and the multi-part manifest.
//!
//! Source stage of the pipeline (FORMATS.md §10). [`AofReader`] pulls commands out of one AOF
//! file mapped as a `&[u8]`, borrowing every argument from the map, and tracks what a consumer
//! needs to replay them: the db each command applies to (`SELECT`), transactions (`MULTI` …
//! `EXEC` are delivered only once complete), `#` annotations (skipped), and a truncated tail
//! (reported, not an error, on the last file). [`manifest`] lists the files of a Redis 7
//! `appendonlydir` in replay order.
//!
//! Not here: the RDB preamble or `.base.rdb` file (read it with `crate::rdb`, then start the
//! AOF reader at the offset where the RDB ended), opening or mapping files, and what commands
//! mean beyond `SELECT`/`MULTI`/`EXEC`/`DISCARD`.
//!
//! ```
//! use rdbferry::aof::AofReader;
//!
//! let data = b"*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n#TS:1700000000\r\n*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n*1\r\n$3\r\nDE";
//! let mut reader = AofReader::new(data, 0, 0, "appendonly.aof");
//! let mut seen = Vec::new();
//! for cmd in reader.by_ref() {
//!     let cmd = cmd?;
//!     seen.push((cmd.db, cmd.args[0].to_vec()));
//! }
//! assert_eq!(seen, [(3, b"SELECT".to_vec()), (3, b"INCR".to_vec())]);
//! assert_eq!(reader.truncated_at(), Some(60)); // the last command is cut short
//! # Ok::<(), rdbferry::aof::AofError>(())
//! ```

pub mod error;
pub mod manifest;

#[cfg(test)]
mod corpus_tests;

use std::collections::VecDeque;

pub use error::{AofError, AofErrorKind, TailErrorKind};
pub use manifest::{AofFileKind, Manifest, ManifestEntry};

use crate::resp::parse_command;

/// Most commands buffered between `MULTI` and `EXEC`. Redis writes a transaction as one block,
/// so a real one is as long as the client's; the cap only stops a corrupt or hostile file with
/// a `MULTI` and no `EXEC` from growing the buffer without bound.
pub const MAX_TRANSACTION_COMMANDS: usize = 100_000;

/// Most arguments buffered between `MULTI` and `EXEC`, over all commands. Arguments borrow the
/// mapped file, so the buffer costs 16 bytes per argument: this caps it at 64 MiB.
pub const MAX_TRANSACTION_ARGS: usize = 4 << 20;

/// Whether `data` starts like an RDB file: an RDB preamble in an AOF, or a `.base.rdb` file
/// (`REDIS`, or `VALKEY` from Valkey 9).
pub fn is_rdb(data: &[u8]) -> bool {
    data.starts_with(b"REDIS") || data.starts_with(b"VALKEY")
}

/// Whether `data` starts like a RESP AOF: a command (`*`) or an annotation (`#`). An empty
/// file is a valid (empty) AOF too, but does not "look like" one.
pub fn looks_like_aof(data: &[u8]) -> bool {
    matches!(data.first(), Some(b'*' | b'#'))
}

/// One command read from an AOF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AofCommand<'a> {
    /// The db the command applies to. For `SELECT` itself, the db it switches to.
    pub db: u64,
    /// Name and arguments, borrowed from the file. Never empty.
    pub args: Vec<&'a [u8]>,
    /// Byte offset of the command's `*` in the file.
    pub offset: u64,
}

impl AofCommand<'_> {
    /// The command name as written (`args[0]`).
    pub fn name(&self) -> &[u8] {
        self.args.first().copied().unwrap_or_default()
    }

    /// Whether the command is `name`, ignoring ASCII case.
    pub fn is(&self, name: &str) -> bool {
        self.name().eq_ignore_ascii_case(name.as_bytes())
    }
}

/// Reads the commands of one AOF file.
///
/// An iterator of `Result<AofCommand, AofError>`: pull-based, so the caller sets the pace, and
/// fused after the first error. Design decisions, after Redis's `loadSingleAppendOnlyFile`:
///
/// * **Transactions are all or nothing.** Commands from `MULTI` on are held back until `EXEC`
///   (or `DISCARD`) arrives, then yielded in order, `MULTI` and `EXEC` included as ordinary
///   commands. A transaction still open at the end of the file is dropped, as Redis drops it.
///   A nested `MULTI` (Redis never writes one) is buffered like any other command.
/// * **A short tail is not an error on the last file.** When the file ends mid-command (or
///   inside a transaction), iteration stops after the last complete command and
///   [`truncated_at`](Self::truncated_at) gives the offset where the cut-off part begins, the
///   length Redis would truncate the file to. On any other file ([`last_file(false)`](Self::last_file))
///   that is [`AofError::Truncated`], fatal in Redis too.
/// * **Anything else malformed is an error** naming the file and offset: a byte other than `*`
///   or `#` at a command boundary, bad lengths, missing CRLFs, `*0`, a `SELECT` without a
///   numeric index.
#[derive(Debug)]
pub struct AofReader<'a> {
    data: &'a [u8],
    source_name: String,
    start: u64,
    pos: usize,
    db: u64,
    last_file: bool,
    /// Commands of a finished transaction, waiting to be yielded.
    ready: VecDeque<AofCommand<'a>>,
    /// Commands of the open transaction.
    txn: Vec<AofCommand<'a>>,
    txn_args: usize,
    /// Offset of the open transaction's `MULTI`.
    txn_start: Option<u64>,
    truncated_at: Option<u64>,
    done: bool,
}

impl<'a> AofReader<'a> {
    /// A reader over `data`, one whole AOF file, from byte `start` (0, or the end of the RDB
    /// preamble) with `db` selected (Redis starts every file in db 0). `source_name`, usually
    /// the file's path, goes into errors. The file is taken to be the last one to replay; see
    /// [`last_file`](Self::last_file).
    pub fn new(data: &'a [u8], start: u64, db: u64, source_name: impl Into<String>) -> Self {
        AofReader {
            data,
            source_name: source_name.into(),
            start,
            pos: usize::try_from(start).unwrap_or(usize::MAX),
            db,
            last_file: true,
            ready: VecDeque::new(),
            txn: Vec::new(),
            txn_args: 0,
            txn_start: None,
            truncated_at: None,
            done: false,
        }
    }

    /// Whether this is the last file to replay, the only one allowed a truncated tail
    /// (default `true`).
    #[must_use]
    pub fn last_file(mut self, last: bool) -> Self {
        self.last_file = last;
        self
    }

    /// The input name given to [`new`](Self::new).
    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    /// The selected db after the last command parsed (possibly one still held in a
    /// transaction).
    pub fn db(&self) -> u64 {
        self.db
    }

    /// Offset just past the last command parsed.
    pub fn offset(&self) -> u64 {
        self.pos as u64
    }

    /// Where the incomplete tail begins, once iteration has reached it: the offset of the
    /// command cut short, or of the `MULTI` of a transaction left open. `None` if the file ends
    /// cleanly (or has not been read to the end).
    pub fn truncated_at(&self) -> Option<u64> {
        self.truncated_at
    }

    fn corrupt(&self, offset: u64, kind: AofErrorKind) -> AofError {
        AofError::Corrupt {
            source_name: self.source_name.clone(),
            offset,
            kind,
        }
    }

    /// Reads the next item: `Ok(Some)` a command to yield now, `Ok(None)` nothing to yield yet
    /// (annotation skipped, command buffered, or end reached: see `done`).
    fn step(&mut self) -> Result<Option<AofCommand<'a>>, AofError> {
        let Some(rest) = self.data.get(self.pos..) else {
            let len = self.data.len() as u64;
            let kind = AofErrorKind::StartBeyondEnd {
                start: self.start,
                len,
            };
            return Err(self.corrupt(len, kind));
        };
        match rest.first() {
            None => return self.end_of_data(None),
            Some(b'#') => {
                // An annotation (`#TS:<secs>`) runs to the end of the line. Redis loads a file
                // whose last annotation lacks its newline, so that is simply the end.
                match rest.iter().position(|&b| b == b'\n') {
                    Some(nl) => self.pos += nl + 1,
                    None => self.pos = self.data.len(),
                }
                return Ok(None);
            }
            Some(_) => {}
        }
        let offset = self.pos as u64;
        let mut args = Vec::new();
        let len = match parse_command(rest, &mut args) {
            Ok(Some(len)) => len,
            Ok(None) => return self.end_of_data(Some(offset)),
            Err(e) => return Err(self.corrupt(offset + e.offset, AofErrorKind::Resp(e.kind))),
        };
        self.pos += len;
        if args.is_empty() {
            return Err(self.corrupt(offset, AofErrorKind::EmptyCommand));
        }
        let role = feed_role(&args);
        let (multi, ends_txn) = (role == Feed::Multi, role == Feed::EndTxn);
        match role {
            Feed::Select(db) => self.db = db,
            Feed::BadSelect(given) => {
                return Err(self.corrupt(offset, AofErrorKind::BadSelect(given)));
            }
            _ => {}
        }
        let n_args = args.len();
        let cmd = AofCommand {
            db: self.db,
            args,
            offset,
        };
        if self.txn_start.is_none() {
            if !multi {
                return Ok(Some(cmd));
            }
            self.txn_start = Some(offset);
        }
        self.txn.push(cmd);
        self.txn_args += n_args;
        if ends_txn {
            self.ready = std::mem::take(&mut self.txn).into();
            self.txn_args = 0;
            self.txn_start = None;
        } else if self.txn.len() > MAX_TRANSACTION_COMMANDS || self.txn_args > MAX_TRANSACTION_ARGS
        {
            let kind = AofErrorKind::TransactionTooLarge {
                commands: MAX_TRANSACTION_COMMANDS,
                args: MAX_TRANSACTION_ARGS,
            };
            return Err(self.corrupt(self.txn_start.unwrap_or(offset), kind));
        }
        Ok(None)
    }

    /// The data ended; `incomplete` is the offset of a command cut short, if any.
    fn end_of_data(&mut self, incomplete: Option<u64>) -> Result<Option<AofCommand<'a>>, AofError> {
        self.done = true;
        let (cut, reason) = match (self.txn_start, incomplete) {
            (Some(multi), _) => (multi, "MULTI without EXEC"),
            (None, Some(at)) => (at, "incomplete command"),
            (None, None) => return Ok(None),
        };
        self.txn.clear();
        self.truncated_at = Some(cut);
        if self.last_file {
            return Ok(None);
        }
        Err(AofError::Truncated {
            source_name: self.source_name.clone(),
            offset: cut,
            reason,
        })
    }
}

/// What a command does to the commands around it, in an AOF or a replication stream (Redis
/// writes the same feed to both: `SELECT` before a command for another db, `MULTI` … `EXEC`
/// around a transaction or a script's effects).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Feed {
    /// `SELECT db`: the commands after it apply to `db`.
    Select(u64),
    /// `SELECT` without a valid db index: its arguments, for messages.
    BadSelect(String),
    /// `MULTI`.
    Multi,
    /// `EXEC` or `DISCARD`.
    EndTxn,
    /// Any other command.
    Other,
}

/// How the command `args` (name first) frames the feed; see [`Feed`].
pub fn feed_role<A: AsRef<[u8]>>(args: &[A]) -> Feed {
    let name = args.first().map_or(&b""[..], AsRef::as_ref);
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    if is("select") {
        return match args {
            [_, index] => parse_db(index.as_ref()).map(Feed::Select),
            _ => None,
        }
        .unwrap_or_else(|| {
            let given: Vec<_> = args[1..]
                .iter()
                .map(|a| String::from_utf8_lossy(a.as_ref()))
                .collect();
            Feed::BadSelect(given.join(" "))
        });
    }
    if is("multi") {
        Feed::Multi
    } else if is("exec") || is("discard") {
        Feed::EndTxn
    } else {
        Feed::Other
    }
}

/// A db index as `SELECT` takes it: decimal digits only.
fn parse_db(index: &[u8]) -> Option<u64> {
    if index.is_empty() || !index.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(index).ok()?.parse().ok()
}

impl<'a> Iterator for AofReader<'a> {
    type Item = Result<AofCommand<'a>, AofError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(cmd) = self.ready.pop_front() {
                return Some(Ok(cmd));
            }
            if self.done {
                return None;
            }
            match self.step() {
                Ok(Some(cmd)) => return Some(Ok(cmd)),
                Ok(None) => {}
                Err(e) => {
                    self.done = true;
                    self.txn.clear();
                    return Some(Err(e));
                }
            }
        }
    }
}

impl std::iter::FusedIterator for AofReader<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::write_command;

    fn aof(cmds: &[&[&[u8]]]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in cmds {
            write_command(&mut out, c);
        }
        out
    }

    /// (db, name, offset) of a command.
    type Seen = (u64, String, u64);

    /// Every command read, the error if any, and `truncated_at`.
    fn read(data: &[u8], last: bool) -> (Vec<Seen>, Option<AofError>, Option<u64>) {
        let mut r = AofReader::new(data, 0, 0, "t.aof").last_file(last);
        let mut out = Vec::new();
        let mut err = None;
        for c in r.by_ref() {
            match c {
                Ok(c) => out.push((
                    c.db,
                    String::from_utf8_lossy(c.name()).into_owned(),
                    c.offset,
                )),
                Err(e) => err = Some(e),
            }
        }
        (out, err, r.truncated_at())
    }

    fn names(v: &[Seen]) -> Vec<&str> {
        v.iter().map(|(_, n, _)| n.as_str()).collect()
    }

    #[test]
    fn select_tracking() {
        let data = aof(&[
            &[b"SET", b"a", b"1"],
            &[b"select", b"7"],
            &[b"SET", b"b", b"2"],
            &[b"SELECT", b"0"],
            &[b"DEL", b"a"],
        ]);
        let (cmds, err, trunc) = read(&data, true);
        assert!(err.is_none() && trunc.is_none());
        let dbs: Vec<u64> = cmds.iter().map(|c| c.0).collect();
        assert_eq!(dbs, [0, 7, 7, 0, 0]);
        assert_eq!(cmds[1].2, 27);
        let mut r = AofReader::new(&data, 0, 4, "t");
        assert_eq!(r.next().unwrap().unwrap().db, 4);
    }

    #[test]
    fn start_offset_and_annotations() {
        let mut data = b"REDIS0009garbage".to_vec();
        let start = data.len() as u64;
        data.extend_from_slice(b"#TS:1700000000\r\n");
        data.extend(aof(&[&[b"PING"]]));
        data.extend_from_slice(b"#TS:1700000001\r\n#other\n");
        data.extend(aof(&[&[b"SET", b"k", b"v"]]));
        data.extend_from_slice(b"#TS:17000");
        let mut r = AofReader::new(&data, start, 0, "t");
        let first = r.next().unwrap().unwrap();
        assert_eq!((first.args, first.offset), (vec![&b"PING"[..]], start + 16));
        assert!(r.next().unwrap().unwrap().is("set"));
        assert!(r.next().is_none());
        assert_eq!(r.truncated_at(), None);
        assert_eq!(r.offset(), data.len() as u64);
    }

    #[test]
    fn transactions_are_yielded_whole() {
        let data = aof(&[
            &[b"MULTI"],
            &[b"SELECT", b"2"],
            &[b"INCR", b"x"],
            &[b"EXEC"],
            &[b"PING"],
        ]);
        let (cmds, err, trunc) = read(&data, true);
        assert!(err.is_none() && trunc.is_none());
        assert_eq!(names(&cmds), ["MULTI", "SELECT", "INCR", "EXEC", "PING"]);
        let dbs: Vec<u64> = cmds.iter().map(|c| c.0).collect();
        assert_eq!(dbs, [0, 2, 2, 2, 2]);
    }

    #[test]
    fn open_transaction_at_eof_is_cut_back_to_multi() {
        let head = aof(&[&[b"SET", b"a", b"1"]]);
        let mut data = head.clone();
        data.extend(aof(&[&[b"MULTI"], &[b"INCR", b"x"]]));
        // Cleanly ended file with an open MULTI.
        let (cmds, err, trunc) = read(&data, true);
        assert!(err.is_none());
        assert_eq!(names(&cmds), ["SET"]);
        assert_eq!(trunc, Some(head.len() as u64));
        // Open MULTI and a command cut short.
        data.extend_from_slice(b"*2\r\n$4\r\nINCR\r\n$1\r");
        let (cmds, err, trunc) = read(&data, true);
        assert!(err.is_none());
        assert_eq!(names(&cmds), ["SET"]);
        assert_eq!(trunc, Some(head.len() as u64));
        // Not the last file: fatal.
        let (_, err, _) = read(&data, false);
        let err = err.unwrap();
        assert!(matches!(
            err,
            AofError::Truncated {
                reason: "MULTI without EXEC",
                ..
            }
        ));
        assert_eq!(err.offset(), Some(head.len() as u64));
    }

    #[test]
    fn truncated_tail_at_every_byte() {
        let data = aof(&[
            &[b"SELECT", b"1"],
            &[b"SET", b"k", b"v\r\n"],
            &[b"MULTI"],
            &[b"DEL", b"k"],
            &[b"EXEC"],
            &[b"PING"],
        ]);
        let (full, err, _) = read(&data, true);
        assert!(err.is_none());
        let ends: Vec<u64> = full
            .iter()
            .map(|c| c.2)
            .skip(1)
            .chain([data.len() as u64])
            .collect();
        for cut in 0..data.len() {
            let (cmds, err, trunc) = read(&data[..cut], true);
            assert!(err.is_none(), "cut {cut}: {err:?}");
            // Every command that ends within the cut is yielded, except a transaction's
            // commands before its EXEC.
            let complete = ends.iter().filter(|&&e| e <= cut as u64).count();
            let expect = if (3..5).contains(&complete) {
                2
            } else {
                complete
            };
            assert_eq!(cmds.len(), expect, "cut {cut}");
            assert_eq!(cmds[..], full[..expect]);
            let clean = ends.contains(&(cut as u64)) || cut == 0;
            assert_eq!(
                trunc.is_none(),
                clean && !(3..5).contains(&complete),
                "cut {cut}"
            );
            if let Some(t) = trunc {
                assert_eq!(t, full.get(expect).map_or(0, |c| c.2), "cut {cut}");
            }
            let (_, err, _) = read(&data[..cut], false);
            assert_eq!(err.is_some(), trunc.is_some(), "cut {cut}");
        }
    }

    #[test]
    fn format_errors_name_file_and_offset() {
        let ok = aof(&[&[b"PING"]]);
        let at = ok.len() as u64;
        let cases: Vec<(Vec<u8>, u64, &str)> = vec![
            ([&ok[..], b"+OK\r\n"].concat(), at, "expected '*'"),
            ([&ok[..], b"\r\n"].concat(), at, "expected '*'"),
            (
                [&ok[..], b"*1\r\n$4\r\nPINGxx"].concat(),
                at + 12,
                "missing CRLF",
            ),
            ([&ok[..], b"*0\r\n"].concat(), at, "empty command"),
            (
                [&ok[..], &aof(&[&[b"SELECT", b"-1"]])[..]].concat(),
                at,
                "SELECT with an invalid db index \"-1\"",
            ),
            ([&ok[..], &aof(&[&[b"SELECT"]])[..]].concat(), at, "SELECT"),
            (
                [&ok[..], &aof(&[&[b"SELECT", b"1", b"2"]])[..]].concat(),
                at,
                "SELECT",
            ),
        ];
        for (data, offset, what) in cases {
            let mut r = AofReader::new(&data, 0, 0, "dir/x.aof");
            assert!(r.next().unwrap().is_ok());
            let e = r.next().unwrap().unwrap_err();
            assert_eq!(e.offset(), Some(offset), "{e}");
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!("corrupt AOF at dir/x.aof+{offset:#x}: ")),
                "{msg}"
            );
            assert!(msg.contains(what), "{msg}");
            assert!(r.next().is_none(), "fused after an error");
        }
    }

    #[test]
    fn start_beyond_end_is_an_error() {
        let mut r = AofReader::new(b"*1\r\n", 10, 0, "t");
        assert!(matches!(
            r.next(),
            Some(Err(AofError::Corrupt {
                kind: AofErrorKind::StartBeyondEnd { .. },
                ..
            }))
        ));
        let mut r = AofReader::new(b"*1\r\n", 4, 0, "t");
        assert!(r.next().is_none());
    }

    #[test]
    fn transaction_cap() {
        let mut data = aof(&[&[b"PING"], &[b"MULTI"]]);
        for _ in 0..MAX_TRANSACTION_COMMANDS {
            write_command(&mut data, &[b"INCR", b"k"]);
        }
        let mut r = AofReader::new(&data, 0, 0, "t");
        assert!(r.next().unwrap().is_ok());
        let e = r.next().unwrap().unwrap_err();
        assert!(matches!(
            e.kind(),
            Some(AofErrorKind::TransactionTooLarge { .. })
        ));
        assert_eq!(e.offset(), Some(14));
    }

    #[test]
    fn exec_without_multi_and_discard() {
        let data = aof(&[
            &[b"EXEC"],
            &[b"MULTI"],
            &[b"SET", b"a", b"b"],
            &[b"DISCARD"],
            &[b"PING"],
        ]);
        let (cmds, err, trunc) = read(&data, true);
        assert!(err.is_none() && trunc.is_none());
        assert_eq!(names(&cmds), ["EXEC", "MULTI", "SET", "DISCARD", "PING"]);
    }

    #[test]
    fn detection() {
        assert!(is_rdb(b"REDIS0011\xfa"));
        assert!(is_rdb(b"VALKEY080"));
        assert!(!is_rdb(b"*1\r\n"));
        assert!(!is_rdb(b"REDI"));
        assert!(looks_like_aof(b"*1\r\n$4\r\nPING\r\n"));
        assert!(looks_like_aof(b"#TS:1\r\n"));
        assert!(!looks_like_aof(b""));
        assert!(!looks_like_aof(b"REDIS0011"));
    }
}
