//! Outputs of the pipeline. Each sink takes entries one at a time and writes them out as it
//! goes: none holds a dataset, and big collections are written element by element.
//!
//! - `jsonl`: one JSON object per key (`convert --format jsonl`).
//! - `resp`: the Redis commands that rebuild the dataset (`convert --format resp`).
//! - `file`: output files written whole or not at all (temporary file, fsync, rename).
//! - `stats`: counters and top-N lists for `check` and `inspect`.
//! - `writer`: the pipelined writer behind `import`, with retries.
//! - `applier`: incremental sync's applier: a command stream, in order, checkpointed, at
//!   least once or exactly once.
//! - `rdb`: an RDB stream of records copied from an input (what a full sync sends).

pub mod applier;
pub mod file;
pub mod jsonl;
pub mod rdb;
pub mod resp;
pub mod stats;
pub mod writer;

use crate::error::Result;
use crate::rdb::KeyRecord;

/// The formats a dataset is written in (`convert --format`): [`jsonl::JsonlSink`],
/// [`resp::RespSink`], and RDB files (written by `job::convert_rdb` through [`rdb`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON lines.
    Jsonl,
    /// Redis commands.
    Resp,
    /// An RDB file.
    Rdb,
}

impl Format {
    /// File extension.
    pub fn ext(&self) -> &'static str {
        match self {
            Format::Jsonl => "jsonl",
            Format::Resp => "resp",
            Format::Rdb => "rdb",
        }
    }
}

/// Something entries can be written to.
pub trait Sink {
    /// A key and its value.
    fn key(&mut self, rec: &KeyRecord<'_>) -> Result<()>;
    /// A function library.
    fn function(&mut self, code: &[u8]) -> Result<()>;
    /// Keys a [`KeyEncoder`] of the same format encoded (on a worker thread): `bytes` expect
    /// `first_db` to be the current db and leave `last_db` current (RESP selects dbs; JSON
    /// lines name the db in every line).
    fn encoded(&mut self, first_db: u64, last_db: u64, bytes: &[u8]) -> Result<()>;
    /// A command from an AOF, applying to `db`.
    fn command(&mut self, db: u64, args: &[&[u8]]) -> Result<()>;
    /// Flush everything out.
    fn finish(&mut self) -> Result<()>;
}

/// A sink that writes into a buffer in memory, so that keys can be encoded on worker threads
/// and the bytes written out in file order by a [`Sink`] of the same format
/// ([`Sink::encoded`]). One encoder serves a worker for a whole run: its buffer is cleared,
/// not freed, between pieces of work, so encoding allocates nothing per key.
pub trait KeyEncoder: Sink + Send {
    /// An encoder with an empty buffer.
    fn new_encoder() -> Self;
    /// The bytes encoded so far.
    fn buffer(&mut self) -> &mut PieceBuf;
    /// Take `db` as the current db: the next key is encoded as if `db` had been selected.
    fn assume_db(&mut self, db: u64);
    /// Forget what a key that failed halfway left behind (a partial batch of arguments).
    fn reset(&mut self) {}
}

/// The buffer of a [`KeyEncoder`]: bytes in memory, with a limit past which writes fail, so
/// that a value that turns out bigger than expected (a small record that decompresses to a
/// lot) is given up rather than held whole; the caller then streams it instead.
#[derive(Debug, Default)]
pub struct PieceBuf {
    bytes: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl PieceBuf {
    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// Bytes held.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
    /// Whether no bytes are held.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
    /// Allow `more` bytes past what is held; clears the overflow mark.
    pub fn allow(&mut self, more: usize) {
        self.limit = self.bytes.len().saturating_add(more);
        self.overflowed = false;
    }
    /// Whether a write was refused since the last [`PieceBuf::allow`].
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }
    /// Drop the bytes from `len` on.
    pub fn truncate(&mut self, len: usize) {
        self.bytes.truncate(len);
    }
    /// Drop every byte, and the allocation too if it grew past `keep` bytes.
    pub fn clear(&mut self, keep: usize) {
        if self.bytes.capacity() > keep {
            self.bytes = Vec::new();
        }
        self.bytes.clear();
    }
}

impl std::io::Write for PieceBuf {
    #[inline(always)]
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.write_all(b).map(|()| b.len())
    }
    // Always inlined: most writes are a few bytes of constant length (quotes, commas, field
    // names), which then become plain stores instead of a call and a memcpy.
    #[inline(always)]
    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        if self.bytes.len() + b.len() > self.limit {
            self.overflowed = true;
            return Err(std::io::Error::other("value too big for a piece buffer"));
        }
        self.bytes.extend_from_slice(b);
        Ok(())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl KeyEncoder for jsonl::JsonlSink<PieceBuf> {
    fn new_encoder() -> Self {
        jsonl::JsonlSink::new(PieceBuf::default(), "")
    }
    fn buffer(&mut self) -> &mut PieceBuf {
        self.get_mut()
    }
    fn assume_db(&mut self, _db: u64) {}
}

impl KeyEncoder for resp::RespSink<PieceBuf> {
    fn new_encoder() -> Self {
        resp::RespSink::new(PieceBuf::default(), "")
    }
    fn buffer(&mut self) -> &mut PieceBuf {
        self.get_mut()
    }
    fn assume_db(&mut self, db: u64) {
        resp::RespSink::assume_db(self, db)
    }
    fn reset(&mut self) {
        resp::RespSink::reset(self)
    }
}
