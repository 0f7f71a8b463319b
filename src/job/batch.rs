//! Parallel batches over an RDB in memory: the calling thread decodes the next batch of
//! records while rayon workers process the current one; results come back in file order.
//!
//! Why this shape: decoding the record stream is inherently sequential (each record's length
//! is known only by walking it), but the work per value (validating, counting, serializing)
//! is independent. Overlapping the two keeps both cores busy without reordering anything.

use rayon::prelude::*;

use super::Common;
use crate::error::Result;
use crate::input::{Event, Input, Walked};
use crate::rdb::{KeyRecord, RdbReader, Record};

/// Records per batch, and the serialized bytes after which a batch is closed early.
const BATCH_RECORDS: usize = 4096;
const BATCH_BYTES: u64 = 8 << 20;

/// The next records, and the error that stopped the batch early, if any: the records before a
/// corrupt one are still processed first, so errors are reported in file order.
fn next_batch<'a>(reader: &mut RdbReader<'a>) -> (Vec<Record<'a>>, Option<crate::error::Error>) {
    let mut batch = Vec::with_capacity(BATCH_RECORDS);
    let mut bytes = 0u64;
    for rec in reader.by_ref() {
        let rec = match rec {
            Ok(r) => r,
            Err(e) => return (batch, Some(e.into())),
        };
        if let Record::Key(k) = &rec {
            bytes += k.serialized_len();
        }
        batch.push(rec);
        if batch.len() >= BATCH_RECORDS || bytes >= BATCH_BYTES {
            break;
        }
    }
    (batch, None)
}

/// Run `work` on every record in parallel and `sink` on each result in file order.
/// `sink` also gets the reader's position after the batch (for progress). Returns the
/// position after the RDB (an AOF tail may follow it).
pub fn run<'a, T, W, S>(mut reader: RdbReader<'a>, work: W, mut sink: S) -> Result<u64>
where
    T: Send,
    W: Fn(&Record<'a>) -> Result<T> + Sync,
    S: FnMut(&Record<'a>, T, u64) -> Result<()>,
{
    let (mut cur, mut err) = next_batch(&mut reader);
    let mut pos = reader.position();
    loop {
        let (results, next) = if err.is_none() && !cur.is_empty() {
            let (r, n) = rayon::join(
                || cur.par_iter().map(&work).collect::<Vec<Result<T>>>(),
                || next_batch(&mut reader),
            );
            (r, Some(n))
        } else {
            (cur.par_iter().map(&work).collect(), None)
        };
        for (rec, r) in cur.iter().zip(results) {
            sink(rec, r?, pos)?;
        }
        if let Some(e) = err {
            return Err(e);
        }
        match next {
            Some((b, e)) if !b.is_empty() || e.is_some() => {
                cur = b;
                err = e;
            }
            _ => break,
        }
        pos = reader.position();
    }
    Ok(reader.position())
}

/// Walk `input`, running `work` on each key (in parallel batches for an RDB file, in order
/// otherwise) and `sink` on every event in input order, with the key's result. Stops with
/// [`crate::error::Error::Cancelled`] once `common.cancel` is set: every worker checks it
/// before each record.
pub fn walk<T, W, S>(input: &Input, common: &Common, work: W, mut sink: S) -> Result<Walked>
where
    T: Send,
    W: Fn(&KeyRecord<'_>) -> Result<T> + Sync,
    S: FnMut(Event<'_, '_>, Option<T>, u64) -> Result<()>,
{
    let (read, cancel) = (&common.read, &common.cancel);
    let work = |k: &KeyRecord<'_>| {
        cancel.check()?;
        work(k)
    };
    let mut sink = |ev: Event<'_, '_>, r: Option<T>, pos: u64| {
        cancel.check()?;
        sink(ev, r, pos)
    };
    let Some(data) = input.rdb_bytes() else {
        return input.walk(read, &mut |ev, pos| {
            let r = match &ev {
                Event::Rdb(Record::Key(k)) => Some(work(k)?),
                _ => None,
            };
            sink(ev, r, pos)
        });
    };
    let reader = RdbReader::with_options(data, &input.name, read.clone())?;
    let mut walked = Walked {
        rdb_version: Some(reader.version().to_string()),
        ..Default::default()
    };
    let r = walk_rdb(input, data, reader, &mut walked, work, sink);
    input.settle(r.map(|()| walked))
}

/// [`walk`] over an RDB file (or an AOF with an RDB preamble) in memory.
fn walk_rdb<'a, T, W, S>(
    input: &Input,
    data: &'a [u8],
    reader: RdbReader<'a>,
    walked: &mut Walked,
    work: W,
    mut sink: S,
) -> Result<()>
where
    T: Send,
    W: Fn(&KeyRecord<'_>) -> Result<T> + Sync,
    S: FnMut(Event<'_, '_>, Option<T>, u64) -> Result<()>,
{
    let end = run(
        reader,
        |rec| match rec {
            Record::Key(k) => work(k).map(Some),
            _ => Ok(None),
        },
        |rec, r, pos| {
            walked.note(rec);
            sink(Event::Rdb(rec), r, pos)
        },
    )?;
    // An AOF with an RDB preamble: the commands follow, in order.
    walked.after_rdb(&input.name, data, end, true, 0, &mut |ev, pos| {
        sink(ev, None, pos)
    })
}
