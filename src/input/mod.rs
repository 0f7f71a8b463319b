//! Inputs: a path or `-`, recognised by content, not by name.
//!
//! - an RDB file (memory-mapped; stdin goes through the streaming reader);
//! - an AOF file: plain RESP, or an RDB preamble followed by RESP;
//! - a Redis 7 `appendonlydir` with its manifest: the base (RDB or AOF), then the incr files
//!   in manifest order;
//! - JSON lines as `convert --format jsonl` writes them (first non-blank byte `{`), read line
//!   by line; keys come out as RDB records (see [`jsonl`]);
//! - a stream handed over by the caller ([`Input::from_reader`]: `sync` gives the RDB payload
//!   of a replication socket), read as standard input is, without a file in between;
//! - a live server read key by key ([`live`]: `SCAN`, `DUMP` and the TTL), for `verify` of
//!   a live source and `sync --via scan`: records, not [`Event`]s of an [`Input`].
//!
//! Every input is turned into one sequence of [`Event`]s, handed to a callback together with
//! the bytes consumed so far (for progress bars). This module decides nothing about keys;
//! filtering is `transform`'s job.
//!
//! Files are memory-mapped; [`Mapped`] says what happens when one changes while it is read.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::rdb::{RdbReader, ReadOptions, Record, StreamReader};

mod aof;
pub mod jsonl;
pub mod live;
mod mapped;
pub mod tail;
pub use crate::aof::is_rdb;
pub use mapped::Mapped;

/// One item from an input.
#[derive(Debug)]
pub enum Event<'a, 'r> {
    /// A record of an RDB (or of an AOF's RDB preamble or base).
    Rdb(&'r Record<'a>),
    /// An AOF command, applying to `db`. SELECT commands are not passed on: `db` says it.
    Command {
        /// Database the command applies to.
        db: u64,
        /// Command name and arguments.
        args: &'r [&'a [u8]],
    },
}

/// What kind of input this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An RDB file.
    Rdb,
    /// An AOF file, with an RDB preamble or not.
    Aof,
    /// A multi-part AOF directory.
    AofDir,
    /// JSON lines written by `convert --format jsonl`.
    Jsonl,
    /// Standard input (kind decided when reading).
    Stdin,
    /// A stream given by the caller ([`Input::from_reader`]), read as standard input is.
    Stream,
}

/// An opened input.
pub struct Input {
    /// The name the user gave.
    pub name: String,
    /// What it is.
    pub kind: Kind,
    path: PathBuf,
    map: Option<Mapped>,
    /// Total bytes, when known.
    pub size: Option<u64>,
    /// The stream of a [`Kind::Stream`] input, taken by the one walk it allows.
    reader: std::sync::Mutex<Option<Box<dyn Read + Send>>>,
}

/// What the walk found, besides the events.
#[derive(Debug, Clone, Default)]
pub struct Walked {
    /// RDB version (`v10`, `Valkey v80`) of the RDB part, if any.
    pub rdb_version: Option<String>,
    /// The `redis-ver` (or `valkey-ver`) AUX field.
    pub redis_ver: Option<String>,
    /// Bytes read.
    pub bytes: u64,
    /// Offset where a truncated AOF tail was cut, if any.
    pub truncated_at: Option<u64>,
    /// The db selected at the end (carried from one AOF file to the next).
    pub db: u64,
    /// Bytes after an RDB's EOF that are not AOF commands (offset, length): ignored, as Redis
    /// ignores them.
    pub ignored_tail: Option<(u64, u64)>,
    /// Whether AOF commands were read: the file is an AOF, which may grow while it is read
    /// (Redis appends to it) without harm.
    pub aof_commands: bool,
}

impl Walked {
    /// Take what the report needs from an RDB record (the `redis-ver`/`valkey-ver` AUX).
    pub fn note(&mut self, rec: &Record<'_>) {
        if let Some(v) = server_version(rec) {
            self.redis_ver = Some(v);
        }
    }

    /// What follows an RDB ending at `end` in `data`: AOF commands (walked, `db` the first
    /// one applies to), other bytes (ignored and reported, as Redis stops at EOF), or nothing.
    pub fn after_rdb(
        &mut self,
        name: &str,
        data: &[u8],
        end: u64,
        last: bool,
        base: u64,
        f: &mut dyn FnMut(Event<'_, '_>, u64) -> Result<()>,
    ) -> Result<()> {
        self.bytes = end;
        let rest = &data[(end as usize).min(data.len())..];
        if rest.is_empty() {
            return Ok(());
        }
        if !is_aof_tail(rest) {
            self.ignored_tail = Some((end, rest.len() as u64));
            return Ok(());
        }
        self.aof_commands = true;
        let (cut, db) = aof::walk_commands(name, data, end, self.db, last, base, f)?;
        self.truncated_at = cut;
        self.db = db;
        self.bytes = data.len() as u64;
        Ok(())
    }
}

/// The server version an AUX record names (`redis-ver` or `valkey-ver`), if it is one.
pub fn server_version(rec: &Record<'_>) -> Option<String> {
    match rec {
        Record::Aux { name, value } if &**name == b"redis-ver" || &**name == b"valkey-ver" => {
            Some(String::from_utf8_lossy(value).into_owned())
        }
        _ => None,
    }
}

/// Whether the bytes after an RDB's EOF are an AOF tail (commands or annotations); anything
/// else (some tools append a digest) is ignored, as Redis's loader stops at EOF.
pub fn is_aof_tail(rest: &[u8]) -> bool {
    crate::aof::looks_like_aof(rest)
}

impl Input {
    /// Open `name` (a path or `-`) and recognise it.
    pub fn open(name: &str) -> Result<Input> {
        if name == "-" {
            return Ok(Input {
                name: name.into(),
                kind: Kind::Stdin,
                path: PathBuf::new(),
                map: None,
                size: None,
                reader: Default::default(),
            });
        }
        let path = PathBuf::from(name);
        // A name that is no file may be a server given where a file was expected: its
        // password must not show in the error.
        let meta =
            std::fs::metadata(&path).map_err(|e| Error::io(crate::net::url::redact(name), e))?;
        if meta.is_dir() {
            return Ok(Input {
                name: name.into(),
                kind: Kind::AofDir,
                size: Some(dir_size(&path)),
                path,
                map: None,
                reader: Default::default(),
            });
        }
        let map = Mapped::open(&path, name)?;
        let data: &[u8] = map.as_deref().unwrap_or_default();
        let kind = if is_rdb(data) {
            Kind::Rdb
        } else if data.first().is_some_and(|&b| b == b'*' || b == b'#') {
            Kind::Aof
        } else if jsonl::looks_like_jsonl(data) {
            Kind::Jsonl
        } else {
            let head = String::from_utf8_lossy(&data[..data.len().min(9)]).into_owned();
            return Err(Error::Input {
                path: name.into(),
                msg: format!(
                    "not an RDB, AOF, JSONL or appendonlydir (starts with {head:?}; RDB files start with \"REDIS\" or \"VALKEY\", AOF files with '*', JSON lines with '{{')"
                ),
            });
        };
        Ok(Input {
            name: name.into(),
            kind,
            size: Some(meta.len()),
            path,
            map,
            reader: Default::default(),
        })
    }

    /// A stream read once, as standard input is (recognised by its first byte: an RDB,
    /// possibly followed by AOF commands, plain AOF commands, or JSON lines); `size` is its
    /// length when known (progress). Named `name` in messages.
    pub fn from_reader(name: &str, reader: Box<dyn Read + Send>, size: Option<u64>) -> Input {
        Input {
            name: name.into(),
            kind: Kind::Stream,
            path: PathBuf::new(),
            map: None,
            size,
            reader: std::sync::Mutex::new(Some(reader)),
        }
    }

    /// The bytes of a single-file RDB input (memory-mapped), for callers that process its
    /// records in parallel batches; `None` for other kinds.
    pub fn rdb_bytes(&self) -> Option<&[u8]> {
        match self.kind {
            Kind::Rdb => Some(self.map.as_deref().unwrap_or_default()),
            _ => None,
        }
    }

    /// Walk the whole input, calling `f` for every event with the bytes read so far.
    pub fn walk(
        &self,
        opts: &ReadOptions,
        f: &mut dyn FnMut(Event<'_, '_>, u64) -> Result<()>,
    ) -> Result<Walked> {
        match self.kind {
            Kind::Rdb | Kind::Aof => {
                let data: &[u8] = self.map.as_deref().unwrap_or_default();
                self.settle(walk_file(&self.name, data, opts, true, 0, 0, f))
            }
            Kind::AofDir => aof::walk_dir(&self.path, &self.name, opts, f),
            Kind::Jsonl => {
                let data: &[u8] = self.map.as_deref().unwrap_or_default();
                self.settle(jsonl::walk(&self.name, data, f))
            }
            Kind::Stdin => walk_reader(STDIN, std::io::stdin().lock(), opts, f),
            Kind::Stream => {
                let taken = self.reader.lock().ok().and_then(|mut r| r.take());
                let Some(reader) = taken else {
                    return Err(Error::Internal(format!("{} was read already", self.name)));
                };
                walk_reader(&self.name, reader, opts, f)
            }
        }
    }

    /// The result of a walk over a single-file input, checked for a change of the file while
    /// it was read (see [`Mapped::settle`]); for callers that walk [`Input::rdb_bytes`]
    /// themselves. [`Input::walk`] does this already.
    pub fn settle(&self, r: Result<Walked>) -> Result<Walked> {
        match &self.map {
            Some(m) => m.settle(r),
            None => r,
        }
    }
}

fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Walk one RDB or AOF file held in memory. `base` is added to progress offsets (for
/// multi-file inputs); `last` says whether a truncated AOF tail may be cut.
pub fn walk_file(
    name: &str,
    data: &[u8],
    opts: &ReadOptions,
    last: bool,
    base: u64,
    db: u64,
    f: &mut dyn FnMut(Event<'_, '_>, u64) -> Result<()>,
) -> Result<Walked> {
    let mut w = Walked {
        db,
        ..Default::default()
    };
    let mut rdb_end = 0u64;
    if is_rdb(data) {
        let mut r = RdbReader::with_options(data, name, opts.clone())?;
        w.rdb_version = Some(r.version().to_string());
        while let Some(rec) = r.next() {
            let rec = rec?;
            w.note(&rec);
            f(Event::Rdb(&rec), base + r.position())?;
        }
        rdb_end = r.position();
        // An AOF tail after a preamble starts in db 0, as Redis's loader does.
        w.db = 0;
    }
    w.after_rdb(name, data, rdb_end, last, base, f)?;
    Ok(w)
}

/// How standard input is named in messages.
const STDIN: &str = "<stdin>";

/// Walk a stream (standard input, or a caller's) named `name`, read once from the front.
fn walk_reader(
    name: &str,
    mut head: impl Read,
    opts: &ReadOptions,
    f: &mut dyn FnMut(Event<'_, '_>, u64) -> Result<()>,
) -> Result<Walked> {
    let mut w = Walked::default();
    // The first non-blank byte decides; the bytes read to find it are put back in front.
    let mut peek = Vec::new();
    let first = loop {
        let mut b = [0u8; 1];
        let n = match head.read(&mut b) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => r.map_err(|e| Error::io(name, e))?,
        };
        if n == 0 {
            return Err(Error::Input {
                path: name.into(),
                msg: if name == STDIN {
                    "standard input is empty".into()
                } else {
                    "the stream is empty".into()
                },
            });
        }
        peek.push(b[0]);
        if !b[0].is_ascii_whitespace() {
            break b[0];
        }
    };
    let chained = std::io::Cursor::new(peek).chain(head);
    if first == b'{' {
        return jsonl::walk(name, std::io::BufReader::new(chained), f);
    }
    if first == b'R' || first == b'V' {
        let mut r = StreamReader::new(chained, name).options(opts.clone());
        while let Some(rec) = r.next_record()? {
            w.note(&rec);
            f(Event::Rdb(&rec), 0)?;
        }
        w.rdb_version = r.version().map(|v| v.to_string());
        w.bytes = r.position();
        let (rest, reader) = r.into_rest();
        let t = aof::walk_stream(name, std::io::Cursor::new(rest).chain(reader), w.bytes, f)?;
        w.truncated_at = t.0;
        w.bytes = t.1;
        Ok(w)
    } else {
        let t = aof::walk_stream(name, chained, 0, f)?;
        w.truncated_at = t.0;
        w.bytes = t.1;
        Ok(w)
    }
}
