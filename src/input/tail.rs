//! Following an AOF while Redis writes it: the source side of `rdbferry follow`.
//!
//! [`AofTail`] pulls [`TailEvent`]s out of a single AOF file (Redis before 7, plain or with an
//! RDB preamble) or a Redis 7 `appendonlydir`, and keeps going as the file grows and as Redis
//! rewrites it. Each event carries the [`TailPos`] right after it: a checkpoint from which a
//! later [`AofTail::open`] with [`Start::At`] continues exactly, having checked that the file
//! is still the one it was ([`FileId`]).
//!
//! Design decisions (FORMATS.md §10, TESTING-NOTES.md "Incremental sync"):
//!
//! * **Pull, owned, bounded.** The file is read in chunks with `pread`, never mapped (it
//!   grows, and a rewrite may delete it under us). The buffer holds the command being parsed
//!   and the 4 KiB before the position (for its [`FileId`]), nothing more; a transaction is
//!   held (as owned commands) until its `EXEC`, within the caps of [`crate::aof`].
//! * **Whole commands, whole transactions.** A command cut short at the end of a live file is
//!   waited for; `MULTI` … `EXEC` come as one event; `SELECT` is consumed and tracked (each
//!   file starts in db 0, as Redis's loader does); `#TS:` annotations set [`TailEvent::Commands`]'s
//!   `ts`.
//! * **Directory rewrites (Redis 7).** `BGREWRITEAOF` starts incr file `seq + 1` at once and
//!   lists it in the manifest after flushing the current one; once the manifest lists a later
//!   incr file, the current one is complete: it is read to its end from the open descriptor
//!   (it may already be deleted) and the tail goes on with `seq + 1`. Incr files are opened
//!   as soon as they appear (file notifications), so a slow caller still holds them when a
//!   second rewrite deletes them; one that is gone all the same is an error naming it. The
//!   new base is never delivered once commands past the old one were.
//! * **Single-file rewrites (Redis 6.2 and older)** replace the file by a rename. The new file
//!   (opened as soon as it appears) is an RDB preamble (the dataset when the rewrite began),
//!   then the commands Redis wrote *to both files* since then, then new ones. Where the old
//!   file's commands continue in the new one is worked out from their bytes by the rule
//!   documented in `tail/join.rs`; when it is not proven the tail stops, or with
//!   `resync_on_loss` starts over from the new preamble, saying that keys deleted meanwhile
//!   may remain on the target.
//! * **Idle, it sleeps**, on `notify` (inotify) events for the directory, with a wake-up every
//!   `poll` as a fallback (and to look at the [`Cancel`] token).
//!
//! Not here: applying anything (the `follow` job does), and RDB records: a base or preamble
//! is handed over as a path and a byte range ([`TailEvent::Base`]) for the RDB reader.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::aof::{
    AofError, AofErrorKind, AofFileKind, Feed, MAX_TRANSACTION_ARGS, MAX_TRANSACTION_COMMANDS,
    Manifest, TailErrorKind, feed_role, is_rdb,
};
use crate::cancel::Cancel;
use crate::error::{Error, Result};
use crate::rdb::StreamReader;
use crate::rdb::crc::crc64;
use crate::resp::parse_command;

/// Bytes before a position that its [`FileId`] hashes.
pub const ID_WINDOW: u64 = 4096;

/// Most bytes one command or one transaction may take before it is complete. Above Redis's
/// `proto-max-bulk-len` (512 MiB) with room; it only keeps a corrupt file from growing the
/// buffer without bound.
pub const MAX_PENDING_BYTES: u64 = 4 << 30;

/// Bytes asked for per read (more while a long command is pending: the request doubles, so a
/// command is parsed again only a logarithmic number of times).
const CHUNK: usize = 256 << 10;

/// Longest `#` annotation line (Redis writes `#TS:<secs>\r\n`).
const MAX_ANNOTATION: usize = 1024;

/// Offsets of top-level `SELECT`s remembered per file, for a single-file join; beyond this,
/// the old ones are forgotten and found again by reading the file once more if needed.
const MAX_SELECTS: usize = 4096;

/// Attempts at opening the files a manifest lists, when a rewrite deletes one meanwhile.
const OPEN_ATTEMPTS: usize = 5;

/// Identity of a file at a position: its device and inode, and the CRC-64 (Redis's) of the
/// up to [`ID_WINDOW`] bytes before the position. A file replaced by another (a rename, a
/// copy) has another inode; one rewritten in place has other bytes there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileId {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
    /// CRC-64 of the bytes `offset.saturating_sub(ID_WINDOW)..offset`.
    pub crc: u64,
}

/// Where a tail stands: enough to resume, and to recognise the file again.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TailPos {
    /// File name within the directory (or the single AOF's file name).
    pub file: String,
    /// Its manifest seq (files of an appendonlydir), `None` for a single-file AOF.
    pub seq: Option<u64>,
    /// Byte offset after the last whole command (or transaction) delivered. Offset 0 of a
    /// file stands before its RDB, if it has one: resuming there delivers it.
    pub offset: u64,
    /// Identity of the file when the position was taken.
    pub id: FileId,
}

/// Where a tail starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Everything: the base (or preamble), then every command.
    Beginning,
    /// Only what is written after opening: the position is the end of the last complete
    /// command of the last file.
    End,
    /// Right after a checkpoint.
    At(TailPos),
}

/// How a tail starts and behaves.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// Where to start.
    pub start: Start,
    /// When what follows a position cannot be read any more (a file deleted, a single-file
    /// rewrite whose join is not proven), start over from the current base instead of
    /// stopping, saying so in a [`TailEvent::Rewritten`] note.
    pub resync_on_loss: bool,
    /// Longest sleep between two looks at the files when no notification comes.
    pub poll: Duration,
    /// `Some(n)`: deliver consecutive plain commands (not `SELECT`, `MULTI`, `EXEC` or
    /// `DISCARD`, no annotation between them) as [`TailEvent::Resp`] runs of at most `n`,
    /// their bytes as written, rather than one [`TailEvent::Commands`] each. For a caller
    /// that forwards them unchanged: no argument vectors, one position per run.
    pub resp_runs: Option<usize>,
}

impl Default for TailOptions {
    fn default() -> Self {
        TailOptions {
            start: Start::Beginning,
            resync_on_loss: false,
            poll: Duration::from_millis(200),
            resp_runs: None,
        }
    }
}

/// What a tail delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TailEvent {
    /// The base RDB of an appendonlydir (`.base.rdb`, `rdb_end` `None`: the whole file), or a
    /// single file's RDB preamble (bytes `0..rdb_end`): to apply whole, before the commands
    /// that follow. `pos` is where those start. A rewrite may delete `path` at any moment:
    /// read it through [`AofTail::base_file`].
    Base {
        /// The file.
        path: PathBuf,
        /// End of the RDB in it, for a preamble.
        rdb_end: Option<u64>,
        /// Where the commands after it start.
        pos: TailPos,
    },
    /// One command, or a whole `MULTI` … `EXEC` transaction (both included, as written), to
    /// apply in `db`. `SELECT` between events is consumed (it sets `db`); one inside a
    /// transaction is kept, as it switches the db mid-block: the next event's `db` says
    /// where the source stands after it.
    Commands {
        /// The db the (first) command applies to.
        db: u64,
        /// Name and arguments of each command.
        commands: Vec<Vec<Vec<u8>>>,
        /// The position right after it.
        pos: TailPos,
        /// The latest `#TS:` annotation seen (Unix seconds), if any.
        ts: Option<i64>,
    },
    /// Plain commands in a row ([`TailOptions::resp_runs`]), as the file holds them (whole
    /// RESP commands, none a `SELECT`, `MULTI`, `EXEC` or `DISCARD`), to apply in `db`.
    Resp {
        /// The db they apply to.
        db: u64,
        /// Their bytes.
        bytes: Vec<u8>,
        /// How many commands.
        commands: usize,
        /// The position right after the last.
        pos: TailPos,
        /// The latest `#TS:` annotation seen (Unix seconds), if any: none comes between
        /// these commands.
        ts: Option<i64>,
    },
    /// A rewrite was followed (a new incr file, or a single-file rewrite), or the tail
    /// started over (`resync_on_loss`): informational, with the new position.
    Rewritten {
        /// Where the tail now stands.
        pos: TailPos,
        /// What happened, for the user.
        note: String,
    },
    /// Everything written so far has been delivered; the source may write more.
    CaughtUp {
        /// The position.
        pos: TailPos,
    },
}

/// One file being read: a buffered window onto it, and the parse position.
struct Reader {
    file: File,
    path: PathBuf,
    /// File name (what [`TailPos::file`] holds).
    name: String,
    seq: Option<u64>,
    dev: u64,
    ino: u64,
    /// Bytes `buf_start..buf_start + buf.len()` of the file.
    buf: Vec<u8>,
    buf_start: u64,
    /// Parse position: the start of the next item.
    at: u64,
    /// Where commands start (after an RDB preamble).
    resp_start: u64,
    /// No more bytes will be written: its end is its end.
    complete: bool,
    /// Compare the bytes before `at` with the file before using new data (set at each EOF).
    recheck: bool,
    /// Offsets of top-level `SELECT`s, newest last (for a single-file join).
    selects: VecDeque<u64>,
    /// The largest `SELECT` offset forgotten (beyond [`MAX_SELECTS`]).
    selects_forgotten: Option<u64>,
}

/// What the parser found at the parse position.
enum Item {
    Command {
        start: u64,
        args: Vec<Vec<u8>>,
    },
    Annotation(Option<i64>),
    /// Nothing whole is buffered: read more.
    More,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |err| Error::io(path.display().to_string(), err)
}

fn tail_err(path: &Path, offset: u64, kind: TailErrorKind) -> Error {
    Error::Aof(AofError::Tail {
        source_name: path.display().to_string(),
        offset,
        kind,
    })
}

impl Reader {
    fn open(path: &Path, seq: Option<u64>) -> Result<Reader> {
        let file = File::open(path).map_err(io_err(path))?;
        Reader::with_file(file, path, seq)
    }

    fn with_file(file: File, path: &Path, seq: Option<u64>) -> Result<Reader> {
        let meta = file.metadata().map_err(io_err(path))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Reader {
            file,
            path: path.to_path_buf(),
            name,
            seq,
            dev: meta.dev(),
            ino: meta.ino(),
            buf: Vec::new(),
            buf_start: 0,
            at: 0,
            resp_start: 0,
            complete: false,
            recheck: false,
            selects: VecDeque::new(),
            selects_forgotten: None,
        })
    }

    fn len(&self) -> Result<u64> {
        Ok(self.file.metadata().map_err(io_err(&self.path))?.len())
    }

    fn buf_end(&self) -> u64 {
        self.buf_start + self.buf.len() as u64
    }

    /// Parse from `at` and rewind nothing: the buffer starts at `at`.
    fn seek(&mut self, at: u64) {
        self.buf.clear();
        self.buf_start = at;
        self.at = at;
    }

    /// Up to `n` bytes at `offset`.
    fn read_exact_at(&self, offset: u64, n: usize) -> Result<Vec<u8>> {
        let mut out = vec![0; n];
        let mut got = 0;
        while got < n {
            match self.file.read_at(&mut out[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(self.path.display().to_string(), e)),
            }
        }
        out.truncate(got);
        Ok(out)
    }

    /// The file's identity at `offset` (a command boundary already read, or any offset of
    /// the file, read again).
    fn id_at(&self, offset: u64) -> Result<FileId> {
        let from = offset.saturating_sub(ID_WINDOW);
        let crc = if from >= self.buf_start && offset <= self.buf_end() {
            crc64(&self.buf[(from - self.buf_start) as usize..(offset - self.buf_start) as usize])
        } else {
            let bytes = self.read_exact_at(from, (offset - from) as usize)?;
            if (bytes.len() as u64) < offset - from {
                let len = from + bytes.len() as u64;
                return Err(tail_err(&self.path, offset, TailErrorKind::Shrank { len }));
            }
            crc64(&bytes)
        };
        Ok(FileId {
            dev: self.dev,
            ino: self.ino,
            crc,
        })
    }

    fn pos(&self, offset: u64) -> Result<TailPos> {
        Ok(TailPos {
            file: self.name.clone(),
            seq: self.seq,
            offset,
            id: self.id_at(offset)?,
        })
    }

    /// Reads more bytes at the end of the buffer; 0 at the end of the file.
    fn fill(&mut self) -> Result<usize> {
        let keep = self.at.saturating_sub(ID_WINDOW).max(self.buf_start);
        let drop = (keep - self.buf_start) as usize;
        if drop > 0 && drop * 2 >= self.buf.len() {
            self.buf.drain(..drop);
            self.buf_start = keep;
        }
        let pending = self.buf_end() - self.at;
        if pending > MAX_PENDING_BYTES {
            let kind = TailErrorKind::TooLong(MAX_PENDING_BYTES);
            return Err(tail_err(&self.path, self.at, kind));
        }
        // Doubling what is pending: a long command is parsed again O(log n) times.
        let want = CHUNK.max(usize::try_from(pending).unwrap_or(usize::MAX));
        let (had, offset) = (self.buf.len(), self.buf_end());
        self.buf.resize(had + want, 0);
        let read = loop {
            match self.file.read_at(&mut self.buf[had..], offset) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                r => break r,
            }
        };
        self.buf.truncate(had + read.as_ref().map_or(0, |&n| n));
        let n = read.map_err(io_err(&self.path))?;
        if n > 0 && self.recheck {
            self.recheck = false;
            self.check_unchanged()?;
        }
        Ok(n)
    }

    /// The bytes before the parse position are still in the file (it was not rewritten in
    /// place while the tail waited).
    fn check_unchanged(&self) -> Result<()> {
        let from = self.at.saturating_sub(ID_WINDOW).max(self.buf_start);
        let want = &self.buf[(from - self.buf_start) as usize..(self.at - self.buf_start) as usize];
        if self.read_exact_at(from, want.len())? != want {
            return Err(tail_err(&self.path, self.at, TailErrorKind::Changed));
        }
        Ok(())
    }

    fn corrupt(&self, offset: u64, kind: AofErrorKind) -> Error {
        Error::Aof(AofError::Corrupt {
            source_name: self.path.display().to_string(),
            offset,
            kind,
        })
    }

    /// The next whole item at the parse position.
    fn item(&mut self) -> Result<Item> {
        let rest = &self.buf[(self.at - self.buf_start) as usize..];
        match rest.first() {
            None => Ok(Item::More),
            Some(b'#') => {
                let window = &rest[..rest.len().min(MAX_ANNOTATION + 1)];
                match window.iter().position(|&b| b == b'\n') {
                    Some(nl) => {
                        let ts = parse_ts(&rest[..nl]);
                        self.at += nl as u64 + 1;
                        Ok(Item::Annotation(ts))
                    }
                    None if window.len() > MAX_ANNOTATION => Err(self.corrupt(
                        self.at,
                        AofErrorKind::Resp(crate::resp::RespErrorKind::LineTooLong {
                            what: "annotation",
                            max: MAX_ANNOTATION,
                        }),
                    )),
                    None => Ok(Item::More),
                }
            }
            Some(_) => {
                let mut args = Vec::new();
                match parse_command(rest, &mut args) {
                    Ok(Some(len)) => {
                        if args.is_empty() {
                            return Err(self.corrupt(self.at, AofErrorKind::EmptyCommand));
                        }
                        let args = args.iter().map(|a| a.to_vec()).collect();
                        let start = self.at;
                        self.at += len as u64;
                        Ok(Item::Command { start, args })
                    }
                    Ok(None) => Ok(Item::More),
                    Err(e) => Err(self.corrupt(self.at + e.offset, AofErrorKind::Resp(e.kind))),
                }
            }
        }
    }

    /// Bytes read but not parsed: a command cut short, unless it is a last annotation without
    /// its newline (which Redis's loader accepts at the end of a file).
    fn has_partial(&self) -> bool {
        let rest = &self.buf[(self.at - self.buf_start) as usize..];
        !rest.is_empty() && rest.first() != Some(&b'#')
    }

    fn note_select(&mut self, offset: u64) {
        if self.selects.len() == MAX_SELECTS {
            self.selects_forgotten = self.selects.pop_front();
        }
        self.selects.push_back(offset);
    }

    /// Where the commands start: after the RDB, if the file begins with one. Errors on a
    /// file that is no AOF.
    fn find_resp_start(&mut self) -> Result<()> {
        let head = self.read_exact_at(0, 9)?;
        let start = if is_rdb(&head) {
            rdb_end(self)?
        } else if head.is_empty() || matches!(head[0], b'*' | b'#') {
            0
        } else {
            let shown = format!("{:?}", String::from_utf8_lossy(&head));
            return Err(tail_err(&self.path, 0, TailErrorKind::NotAof(shown)));
        };
        self.resp_start = start;
        self.seek(start);
        Ok(())
    }
}

/// `#TS:<secs>` → the seconds.
fn parse_ts(line: &[u8]) -> Option<i64> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    std::str::from_utf8(line.strip_prefix(b"#TS:")?)
        .ok()?
        .parse()
        .ok()
}

/// The end of the RDB at the start of `r`'s file, read with the streaming RDB reader (the
/// file may grow or be deleted meanwhile: it is read through the open descriptor).
fn rdb_end(r: &Reader) -> Result<u64> {
    struct At<'a>(&'a File, u64);
    impl Read for At<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.read_at(buf, self.1)?;
            self.1 += n as u64;
            Ok(n)
        }
    }
    let mut rdb = StreamReader::new(At(&r.file, 0), &r.path.display().to_string());
    while rdb.next_record()?.is_some() {}
    Ok(rdb.position())
}

/// A transaction being collected.
struct Txn {
    start: u64,
    db: u64,
    commands: Vec<Vec<Vec<u8>>>,
    args: usize,
    bytes: u64,
}

/// Events to leave out while moving to the start position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    No,
    /// Everything that ends by this offset ([`Start::End`]).
    Through(u64),
    /// Everything up to exactly this offset, a boundary ([`Start::At`]).
    To(u64),
}

/// What the file being read is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Single,
    Base,
    Incr,
}

/// What the tail follows.
enum Source {
    Single {
        path: PathBuf,
    },
    Dir {
        dir: PathBuf,
        manifest: Manifest,
        manifest_path: PathBuf,
        stamp: Option<(u64, u64, i64, i64)>,
    },
}

/// Files opened as soon as they appeared (by the notification handler or at a look).
#[derive(Default)]
struct Captured {
    /// Directory: incr files by name.
    incr: BTreeMap<String, File>,
    /// Single file: the files that replaced it at its path, oldest first.
    successors: VecDeque<File>,
    /// Single file: (dev, ino) of the newest file known at the path.
    last: Option<(u64, u64)>,
}

/// What the notification handler watches for.
#[derive(Clone)]
enum Target {
    Single { path: PathBuf, name: OsString },
    Dir { dir: PathBuf },
}

/// Most incr files held open ahead of the one being read.
const MAX_CAPTURED: usize = 256;

impl Target {
    /// Open what appeared at `path`, if it is a file the tail will need.
    fn capture(&self, shared: &Mutex<Captured>, path: &Path) {
        match self {
            Target::Single { path: p, name } => {
                if path.file_name() == Some(name.as_os_str()) {
                    capture_successor(shared, p);
                }
            }
            Target::Dir { dir } => {
                let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                    return;
                };
                if incr_seq_of(name).is_some() {
                    capture_incr(shared, &dir.join(name), name);
                }
            }
        }
    }
}

fn capture_successor(shared: &Mutex<Captured>, path: &Path) {
    // A stat first: the usual answer is "still the same file", without an open.
    let known = |m: &std::fs::Metadata| {
        shared
            .lock()
            .is_ok_and(|c| c.last == Some((m.dev(), m.ino())))
    };
    if std::fs::metadata(path).map_or(true, |m| known(&m)) {
        return;
    }
    let Ok(file) = File::open(path) else { return };
    let Ok(meta) = file.metadata() else { return };
    let id = (meta.dev(), meta.ino());
    let Ok(mut c) = shared.lock() else { return };
    if c.last != Some(id) {
        c.last = Some(id);
        c.successors.push_back(file);
    }
}

fn capture_incr(shared: &Mutex<Captured>, path: &Path, name: &str) {
    if shared.lock().map_or(true, |c| {
        c.incr.contains_key(name) || c.incr.len() >= MAX_CAPTURED
    }) {
        return;
    }
    if let Ok(file) = File::open(path)
        && let Ok(mut c) = shared.lock()
    {
        c.incr.entry(name.to_string()).or_insert(file);
    }
}

/// The seq of an incr file name as Redis 7 makes them (`<appendfilename>.<seq>.incr.aof`).
fn incr_seq_of(name: &str) -> Option<u64> {
    if name.starts_with("temp-") {
        return None;
    }
    let stem = name.strip_suffix(".incr.aof")?;
    stem.rsplit_once('.')?.1.parse().ok()
}

/// File notifications, and the files they made the tail open.
struct Watch {
    _watcher: Option<notify::RecommendedWatcher>,
    /// A wake-up per batch of changes (capacity 1: a flag, never a growing queue).
    rx: Option<mpsc::Receiver<()>>,
    shared: Arc<Mutex<Captured>>,
}

impl Watch {
    /// Watches `dir`; without notifications (none on this system, or too many watches), the
    /// tail polls.
    fn start(dir: &Path, target: Target, shared: Arc<Mutex<Captured>>) -> Watch {
        use notify::{EventKind, Watcher, event::ModifyKind};
        let (tx, rx) = mpsc::sync_channel::<()>(1);
        let handler_shared = Arc::clone(&shared);
        let handler = move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = &res {
                // Opening and reading files (ours included) is no change.
                if matches!(ev.kind, EventKind::Access(_)) {
                    return;
                }
                if matches!(
                    ev.kind,
                    EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(_))
                ) {
                    for p in &ev.paths {
                        target.capture(&handler_shared, p);
                    }
                }
            }
            let _ = tx.try_send(());
        };
        let watcher = notify::recommended_watcher(handler).and_then(|mut w| {
            w.watch(dir, notify::RecursiveMode::NonRecursive)?;
            Ok(w)
        });
        match watcher {
            Ok(w) => Watch {
                _watcher: Some(w),
                rx: Some(rx),
                shared,
            },
            Err(e) => {
                tracing::debug!("no file notifications for {}: {e}; polling", dir.display());
                Watch {
                    _watcher: None,
                    rx: None,
                    shared,
                }
            }
        }
    }

    /// Sleeps until a change is notified or `d` has passed.
    fn wait(&self, d: Duration) {
        match &self.rx {
            Some(rx) => {
                let _ = rx.recv_timeout(d);
            }
            None => std::thread::sleep(d),
        }
    }
}

/// What reaching the end of the readable bytes led to.
enum AtEof {
    /// More may be readable now (a file became complete, or the tail moved to another).
    Again,
    /// Nothing more for now.
    Idle,
}

/// Follows an AOF file or `appendonlydir` as Redis writes and rewrites it; see the module
/// documentation. Pull-based: [`next`](Self::next) returns one event, waiting at most as long
/// as asked. After an error, drop the tail (its state is not meant to go on).
///
/// ```
/// use std::time::Duration;
/// use rdbferry::cancel::Cancel;
/// use rdbferry::input::tail::{AofTail, TailEvent, TailOptions};
///
/// let path = std::env::temp_dir().join(format!("rdbferry-tail-doc-{}.aof", std::process::id()));
/// std::fs::write(&path, b"*2\r\n$6\r\nSELECT\r\n$1\r\n2\r\n*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n")?;
/// let mut tail = AofTail::open(&path, TailOptions::default())?;
/// let cancel = Cancel::new();
/// let Some(TailEvent::Commands { db, commands, pos, .. }) = tail.next(Duration::from_secs(1), &cancel)? else {
///     panic!("expected the INCR");
/// };
/// assert_eq!((db, &commands[0][0][..], pos.offset), (2, &b"INCR"[..], 44));
/// // Nothing more for now: caught up; then nothing until the file grows.
/// assert!(matches!(tail.next(Duration::ZERO, &cancel)?, Some(TailEvent::CaughtUp { .. })));
/// assert_eq!(tail.next(Duration::from_millis(10), &cancel)?, None);
/// std::fs::remove_file(&path)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct AofTail {
    source: Source,
    resync: bool,
    poll: Duration,
    resp_runs: Option<usize>,
    cur: Reader,
    role: Role,
    /// Directory files opened at the start, to read after `cur`, in order.
    queue: VecDeque<Reader>,
    base_file: Option<File>,
    pending: VecDeque<TailEvent>,
    pos: TailPos,
    db: u64,
    ts: Option<i64>,
    txn: Option<Txn>,
    skip: Skip,
    caught_up: bool,
    watch: Watch,
}

impl AofTail {
    /// Open a single AOF file (plain or with an RDB preamble) or an appendonlydir. With
    /// [`Start::End`] or [`Start::At`], the file is read up to the start position here (to
    /// know the db there, and that the position is a command boundary).
    pub fn open(path: &Path, opts: TailOptions) -> Result<AofTail> {
        let meta = std::fs::metadata(path).map_err(io_err(path))?;
        let shared = Arc::new(Mutex::new(Captured::default()));
        let mut tail = if meta.is_dir() {
            let (manifest, manifest_path) = Manifest::load(path)?;
            let target = Target::Dir {
                dir: path.to_path_buf(),
            };
            let watch = Watch::start(path, target, Arc::clone(&shared));
            // Replaced by the start position's file right below.
            let placeholder = Reader::open(&manifest_path, None)?;
            let source = Source::Dir {
                dir: path.to_path_buf(),
                manifest,
                stamp: stamp(&manifest_path),
                manifest_path,
            };
            AofTail::new(source, placeholder, &opts, watch)
        } else {
            // The file is opened before the watch starts, and the watch is on before the
            // first look at the path: a rename in between is seen by that look.
            let cur = Reader::open(path, None)?;
            shared
                .lock()
                .map_err(|_| Error::Internal("tail lock poisoned".into()))?
                .last = Some((cur.dev, cur.ino));
            let parent = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let target = Target::Single {
                path: path.to_path_buf(),
                name: path.file_name().map(OsString::from).unwrap_or_default(),
            };
            let watch = Watch::start(&parent, target, Arc::clone(&shared));
            let source = Source::Single {
                path: path.to_path_buf(),
            };
            AofTail::new(source, cur, &opts, watch)
        };
        match &opts.start {
            Start::Beginning => tail.start_beginning()?,
            Start::End => tail.start_end()?,
            Start::At(p) => tail.start_at(p)?,
        }
        tail.skip_to_start()?;
        Ok(tail)
    }

    fn new(source: Source, cur: Reader, opts: &TailOptions, watch: Watch) -> AofTail {
        let pos = TailPos {
            file: cur.name.clone(),
            seq: cur.seq,
            offset: 0,
            id: FileId {
                dev: cur.dev,
                ino: cur.ino,
                crc: crc64(b""),
            },
        };
        AofTail {
            source,
            resync: opts.resync_on_loss,
            poll: opts.poll.max(Duration::from_millis(1)),
            resp_runs: opts.resp_runs.filter(|&n| n > 0),
            cur,
            role: Role::Single,
            queue: VecDeque::new(),
            base_file: None,
            pending: VecDeque::new(),
            pos,
            db: 0,
            ts: None,
            txn: None,
            skip: Skip::No,
            caught_up: false,
            watch,
        }
    }

    /// The position after the last event (before the first: the start position).
    pub fn pos(&self) -> &TailPos {
        &self.pos
    }

    /// The file of the last [`TailEvent::Base`], open: read the base through it, since a
    /// rewrite may delete the path at any time.
    pub fn base_file(&self) -> Option<&File> {
        self.base_file.as_ref()
    }

    /// The next event; waits at most `wait` for more data (sleeping on file notifications,
    /// waking at least every `poll`); `Ok(None)` when nothing came in time.
    pub fn next(&mut self, wait: Duration, cancel: &Cancel) -> Result<Option<TailEvent>> {
        let deadline = Instant::now() + wait;
        loop {
            cancel.check()?;
            if let Some(ev) = self.pump()? {
                return Ok(Some(ev));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.watch.wait(left.min(self.poll));
        }
    }

    /// Moves to the start position, leaving out the events before it.
    fn skip_to_start(&mut self) -> Result<()> {
        while self.skip != Skip::No {
            if self.pump()?.is_none() {
                break;
            }
        }
        if let Skip::To(_) = self.skip {
            // The checkpoint lies past the last complete command of the file.
            return Err(tail_err(
                &self.cur.path,
                self.pos.offset,
                TailErrorKind::NotBoundary,
            ));
        }
        self.caught_up = false;
        Ok(())
    }

    /// Produces the next event without waiting, if there is one.
    fn pump(&mut self) -> Result<Option<TailEvent>> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Ok(self.deliver(ev));
            }
            if let Some(ev) = self.resp_run()? {
                return Ok(self.deliver(ev));
            }
            let ev = match self.cur.item()? {
                Item::Command { start, args } => self.command(start, args)?,
                Item::Annotation(ts) => {
                    self.ts = ts.or(self.ts);
                    None
                }
                Item::More => {
                    if self.cur.fill()? > 0 {
                        continue;
                    }
                    match self.at_eof()? {
                        AtEof::Again => continue,
                        AtEof::Idle if self.caught_up || self.skip != Skip::No => return Ok(None),
                        AtEof::Idle => {
                            self.caught_up = true;
                            return Ok(Some(TailEvent::CaughtUp {
                                pos: self.pos.clone(),
                            }));
                        }
                    }
                }
            };
            if self.txn.is_none() {
                self.check_skip()?;
            }
            if let Some(ev) = ev.and_then(|ev| self.deliver(ev)) {
                return Ok(Some(ev));
            }
        }
    }

    /// An event to hand out, or `None` while skipping to the start; the position moves
    /// either way.
    fn deliver(&mut self, ev: TailEvent) -> Option<TailEvent> {
        let pos = match &ev {
            TailEvent::Base { pos, .. }
            | TailEvent::Commands { pos, .. }
            | TailEvent::Resp { pos, .. }
            | TailEvent::Rewritten { pos, .. }
            | TailEvent::CaughtUp { pos } => pos,
        };
        self.pos = pos.clone();
        if self.skip != Skip::No {
            return None;
        }
        self.caught_up = false;
        Some(ev)
    }

    /// After a top-level item: has the start position been reached?
    fn check_skip(&mut self) -> Result<()> {
        match self.skip {
            Skip::Through(end) if self.cur.at >= end => self.skip = Skip::No,
            Skip::To(to) if self.cur.at == to => self.skip = Skip::No,
            Skip::To(to) if self.cur.at > to => {
                return Err(tail_err(&self.cur.path, to, TailErrorKind::NotBoundary));
            }
            _ => {}
        }
        Ok(())
    }

    /// A whole command: tracked (`SELECT`), collected (transaction) or turned into an event.
    fn command(&mut self, start: u64, args: Vec<Vec<u8>>) -> Result<Option<TailEvent>> {
        let role = feed_role(&args);
        let (select, multi, ends) = (
            matches!(role, Feed::Select(_)),
            role == Feed::Multi,
            role == Feed::EndTxn,
        );
        match role {
            Feed::Select(db) => self.db = db,
            Feed::BadSelect(given) => {
                return Err(self.cur.corrupt(start, AofErrorKind::BadSelect(given)));
            }
            _ => {}
        }
        if let Some(mut txn) = self.txn.take() {
            txn.args += args.len();
            txn.bytes += self.cur.at - start;
            txn.commands.push(args);
            if ends {
                return self.commands_event(txn.db, txn.commands).map(Some);
            }
            if txn.commands.len() > MAX_TRANSACTION_COMMANDS
                || txn.args > MAX_TRANSACTION_ARGS
                || txn.bytes > MAX_PENDING_BYTES
            {
                let kind = AofErrorKind::TransactionTooLarge {
                    commands: MAX_TRANSACTION_COMMANDS,
                    args: MAX_TRANSACTION_ARGS,
                };
                return Err(self.cur.corrupt(txn.start, kind));
            }
            self.txn = Some(txn);
            return Ok(None);
        }
        if select {
            self.cur.note_select(start);
            return Ok(None);
        }
        if multi {
            self.txn = Some(Txn {
                start,
                db: self.db,
                args: args.len(),
                bytes: self.cur.at - start,
                commands: vec![args],
            });
            return Ok(None);
        }
        self.commands_event(self.db, vec![args]).map(Some)
    }

    fn commands_event(&mut self, db: u64, commands: Vec<Vec<Vec<u8>>>) -> Result<TailEvent> {
        let end = self.cur.at;
        if let Skip::To(to) = self.skip
            && end > to
        {
            return Err(tail_err(&self.cur.path, to, TailErrorKind::NotBoundary));
        }
        Ok(TailEvent::Commands {
            db,
            commands,
            pos: self.cur.pos(end)?,
            ts: self.ts,
        })
    }

    /// With [`TailOptions::resp_runs`], outside a transaction and past the start position:
    /// the plain commands buffered at the parse position, as one event. Anything else (an
    /// annotation, a `SELECT`, a transaction, a command cut short, bytes that are no
    /// command) is left to [`Reader::item`].
    fn resp_run(&mut self) -> Result<Option<TailEvent>> {
        let Some(max) = self.resp_runs else {
            return Ok(None);
        };
        if self.txn.is_some() || self.skip != Skip::No {
            return Ok(None);
        }
        let r = &mut self.cur;
        let from = (r.at - r.buf_start) as usize;
        let (mut at, mut commands) = (from, 0);
        let mut args = Vec::new();
        while commands < max && r.buf.get(at) == Some(&b'*') {
            match parse_command(&r.buf[at..], &mut args) {
                Ok(Some(len)) if !args.is_empty() && feed_role(&args) == Feed::Other => {
                    at += len;
                    commands += 1;
                }
                _ => break,
            }
        }
        if commands == 0 {
            return Ok(None);
        }
        let bytes = r.buf[from..at].to_vec();
        r.at += (at - from) as u64;
        Ok(Some(TailEvent::Resp {
            db: self.db,
            bytes,
            commands,
            pos: r.pos(r.at)?,
            ts: self.ts,
        }))
    }

    /// The readable bytes are all parsed.
    fn at_eof(&mut self) -> Result<AtEof> {
        match self.skip {
            Skip::Through(_) => self.skip = Skip::No,
            // The checkpoint is inside the command cut short at the end (it was whole when
            // the checkpoint was taken), or past the end.
            Skip::To(to) => return Err(tail_err(&self.cur.path, to, TailErrorKind::NotBoundary)),
            Skip::No => {}
        }
        let partial = self.cur.has_partial() || self.txn.is_some();
        if self.cur.complete {
            if partial {
                let offset = self.txn.as_ref().map_or(self.cur.at, |t| t.start);
                let reason = if self.txn.is_some() {
                    "MULTI without EXEC"
                } else {
                    "incomplete command"
                };
                return Err(Error::Aof(AofError::Truncated {
                    source_name: self.cur.path.display().to_string(),
                    offset,
                    reason,
                }));
            }
            return self.next_file();
        }
        let len = self.cur.len()?;
        if len < self.cur.buf_end() {
            let kind = TailErrorKind::Shrank { len };
            return Err(tail_err(&self.cur.path, self.pos.offset, kind));
        }
        self.cur.recheck = true;
        if self.current_is_complete()? {
            // Read it to its end once more: what was written before the switch.
            self.cur.complete = true;
            return Ok(AtEof::Again);
        }
        Ok(AtEof::Idle)
    }

    /// Whether Redis has moved on from the file being read (a later incr file listed, or the
    /// single file replaced), so that its end is final.
    fn current_is_complete(&mut self) -> Result<bool> {
        match self.role {
            Role::Single => {
                if let Source::Single { path } = &self.source {
                    capture_successor(&self.watch.shared, path);
                }
                let c = self.lock()?;
                Ok(!c.successors.is_empty())
            }
            Role::Base => Ok(true),
            Role::Incr => self.later_incr_listed(),
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Captured>> {
        self.watch
            .shared
            .lock()
            .map_err(|_| Error::Internal("tail lock poisoned".into()))
    }
}

/// (dev, ino, mtime secs, mtime nsecs) of a file, if it exists.
fn stamp(path: &Path) -> Option<(u64, u64, i64, i64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.mtime(), m.mtime_nsec()))
}

mod dir;
mod join;
mod start;
