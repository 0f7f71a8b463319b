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

/// Something entries can be written to.
pub trait Sink {
    /// A key and its value.
    fn key(&mut self, rec: &KeyRecord<'_>) -> Result<()>;
    /// A function library.
    fn function(&mut self, code: &[u8]) -> Result<()>;
    /// A key already encoded by [`encode_key`] (on a worker thread), for `db`.
    fn encoded_key(&mut self, db: u64, bytes: &[u8]) -> Result<()>;
    /// A command from an AOF, applying to `db`.
    fn command(&mut self, db: u64, args: &[&[u8]]) -> Result<()>;
    /// Flush everything out.
    fn finish(&mut self) -> Result<()>;
}

/// Encode one key in `format` on its own, for sinks fed in parallel: the bytes are what
/// `key()` would write, without any SELECT (the sink adds one when the db changes).
pub fn encode_key(format: crate::job::convert::Format, rec: &KeyRecord<'_>) -> Result<Vec<u8>> {
    use crate::job::convert::Format;
    let cap = rec.serialized_len() as usize * 2 + 64;
    match format {
        Format::Jsonl => {
            let mut s = jsonl::JsonlSink::new(Vec::with_capacity(cap), "");
            s.key(rec)?;
            Ok(s.into_inner())
        }
        Format::Rdb => Err(crate::error::Error::Internal(
            "RDB output is written by job::convert_rdb, not key by key".into(),
        )),
        Format::Resp => {
            let mut s = resp::RespSink::new(Vec::with_capacity(cap), "");
            s.assume_db(rec.db);
            s.key(rec)?;
            Ok(s.into_inner())
        }
    }
}
