//! Parallel batches over an RDB in memory, results in file order.
//!
//! Why this shape: decoding the record stream is inherently sequential (each record's length
//! is known only by walking it), but the work per value (validating, counting, serializing)
//! is independent. So three batches are in flight at once: rayon workers process one, while
//! the calling thread hands the results of the one before to the caller's sink and decodes
//! the one after. The sink runs on the calling thread (it need not be `Send`: a terminal, a
//! socket), and it overlaps with the workers instead of leaving them idle while it runs.
//!
//! A batch is cut into pieces of a few hundred records. A worker takes a piece at a time and
//! fills one output for it (a buffer of encoded keys, a vector of per-record results). Outputs
//! belong to their batch slot and are reused three batches later, so the steady state
//! allocates nothing per record.
//!
//! Every walk stops with [`Error::Cancelled`] once `common.cancel` is set (Ctrl-C): workers
//! skip the pieces they take after that, and the calling thread checks it before each piece
//! it hands on, so a run stops within a piece's time, not at the end of the file.
//!
//! Small inputs (under [`PARALLEL_MIN`] bytes) are processed on the calling thread alone, in
//! the same batches: rayon's pool is never started for them, since starting it costs more
//! than the second core saves on a file that takes a few milliseconds.

use std::ops::Range;

use rayon::prelude::*;

use super::Common;
use crate::cancel::Cancel;
use crate::error::{Error, Result};
use crate::input::{Event, Input, Walked};
use crate::rdb::crc::Crc64;
use crate::rdb::reader::HEADER_LEN;
use crate::rdb::{KeyRecord, RdbReader, Record};

/// Records per batch, and the serialized bytes after which a batch is closed early: a batch
/// is the unit of hand-over between the decoding thread and the workers.
const BATCH_RECORDS: usize = 8192;
const BATCH_BYTES: u64 = 2 << 20;
/// Records per piece, and the serialized bytes after which a piece is closed early: a piece
/// is the unit of work of one worker, and the size of one output buffer.
const PIECE_RECORDS: usize = 512;
const PIECE_BYTES: u64 = 256 << 10;

/// Inputs smaller than this are processed without rayon (see the module documentation).
pub const PARALLEL_MIN: u64 = 4 << 20;

/// Whether an input of `len` bytes is worth the thread pool.
pub fn parallel_for(len: u64) -> bool {
    len >= PARALLEL_MIN
}

/// Decoded records with their pieces and the pieces' outputs.
struct Batch<'a, O> {
    recs: Vec<Record<'a>>,
    pieces: Vec<Range<usize>>,
    outs: Vec<O>,
    /// The decode error that ended the batch early: the records before it are processed
    /// first, so errors are reported in file order.
    err: Option<Error>,
    /// Reader position after the batch.
    pos: u64,
    /// No batch follows (end of the RDB, or an error).
    last: bool,
    /// The input bytes this batch checksums: its records', up to the stored checksum.
    crc_span: Range<usize>,
}

impl<'a, O: Default + Send> Batch<'a, O> {
    fn new() -> Self {
        Batch {
            recs: Vec::new(),
            pieces: Vec::new(),
            outs: Vec::new(),
            err: None,
            pos: 0,
            last: false,
            crc_span: 0..0,
        }
    }

    /// Decode the next batch from `reader`, reusing this one's storage.
    fn fill(&mut self, reader: &mut RdbReader<'a>) {
        // The first batch also covers the header.
        let start = match RdbReader::position(reader) {
            p if p == HEADER_LEN as u64 => 0,
            p => p as usize,
        };
        self.recs.clear();
        self.pieces.clear();
        self.err = None;
        let (mut bytes, mut piece_bytes, mut piece_start) = (0u64, 0u64, 0usize);
        loop {
            let rec = match reader.next() {
                None => {
                    self.last = true;
                    break;
                }
                Some(Err(e)) => {
                    self.err = Some(e.into());
                    self.last = true;
                    break;
                }
                Some(Ok(rec)) => rec,
            };
            let n = match &rec {
                Record::Key(k) => k.serialized_len(),
                _ => 0,
            };
            self.recs.push(rec);
            bytes += n;
            piece_bytes += n;
            if self.recs.len() - piece_start >= PIECE_RECORDS || piece_bytes >= PIECE_BYTES {
                self.pieces.push(piece_start..self.recs.len());
                piece_start = self.recs.len();
                piece_bytes = 0;
            }
            if self.recs.len() >= BATCH_RECORDS || bytes >= BATCH_BYTES {
                break;
            }
        }
        if piece_start < self.recs.len() {
            self.pieces.push(piece_start..self.recs.len());
        }
        if self.outs.len() < self.pieces.len() {
            self.outs.resize_with(self.pieces.len(), O::default);
        }
        self.pos = RdbReader::position(reader);
        let end = match reader.checksum_span() {
            Some(covered) => covered.min(self.pos) as usize,
            None => self.pos as usize,
        };
        self.crc_span = start..end.max(start);
    }

    /// Run `work` on every piece, on rayon's workers when `parallel`. Pieces taken once
    /// `cancel` is set are skipped: [`Batch::sink`] stops before their (stale) outputs.
    ///
    /// `crc` is extended over `bytes` alongside (see [`pipeline`] for which).
    fn work<W>(&mut self, work: &W, bytes: Option<&[u8]>, crc: &mut Crc64, run: &Run<'_>)
    where
        W: Fn(&[Record<'a>], &mut O) + Sync,
    {
        let recs = &self.recs[..];
        let outs = &mut self.outs[..self.pieces.len()];
        let pieces = &self.pieces;
        let work = |r: &Range<usize>, o: &mut O| {
            if !run.cancel.is_cancelled() {
                work(&recs[r.clone()], o);
            }
        };
        let mut sum = || {
            if let Some(b) = bytes {
                crc.update(b);
            }
        };
        if run.parallel {
            rayon::join(
                || {
                    pieces
                        .par_iter()
                        .zip(outs.par_iter_mut())
                        .for_each(|(r, o)| work(r, o))
                },
                sum,
            );
        } else {
            for (r, o) in pieces.iter().zip(outs.iter_mut()) {
                work(r, o);
            }
            sum();
        }
    }

    /// Hand every piece and its output to `sink`, in order; then the batch's decode error.
    /// Stops with [`Error::Cancelled`] before a piece once `cancel` is set (the flag is never
    /// cleared, so a piece a worker skipped is never handed on).
    fn sink<S>(&mut self, sink: &mut S, cancel: &Cancel) -> Result<()>
    where
        S: FnMut(&[Record<'a>], &mut O, u64) -> Result<()>,
    {
        for (r, o) in self.pieces.iter().zip(self.outs.iter_mut()) {
            cancel.check()?;
            sink(&self.recs[r.clone()], o, self.pos)?;
        }
        self.err.take().map_or(Ok(()), Err)
    }
}

/// How [`pipeline`] runs.
#[derive(Debug, Clone, Copy)]
pub struct Run<'c> {
    /// On rayon's workers (else on the calling thread alone).
    pub parallel: bool,
    /// Stop with [`Error::Cancelled`] once this is set.
    pub cancel: &'c Cancel,
}

/// Decode `reader` in batches, run `work` on each piece of records (in parallel when
/// `run.parallel`), and `sink` on each piece with its output, in file order, on the calling
/// thread. `work` gets the output the same slot had three batches earlier (or a new one) and
/// must overwrite it; `sink` also gets the reader's position after the batch (for progress).
/// Returns the position after the RDB (an AOF tail may follow it).
pub fn pipeline<'a, O, W, S>(
    reader: RdbReader<'a>,
    run: Run<'_>,
    work: W,
    mut sink: S,
) -> Result<u64>
where
    O: Default + Send,
    W: Fn(&[Record<'a>], &mut O) + Sync,
    S: FnMut(&[Record<'a>], &mut O, u64) -> Result<()>,
{
    // The checksum is computed here, alongside the work, rather than by the reader at EOF on
    // this thread. Batches are worked one after the other, so a running CRC can be extended
    // in file order; on workers, each step checksums the batch before the one it works, so
    // that the checksum of a huge value overlaps the work on the values after it. (Chunks
    // checksummed on several workers and combined were slower: crc-fast's combine costs
    // about 200 us.)
    let mut reader = reader.defer_checksum();
    let data = reader.version().has_checksum().then(|| reader.input());
    let span = |b: &Batch<'a, O>| data.and_then(|d| d.get(b.crc_span.clone()));
    let mut crc = Crc64::new();
    let mut cur = Batch::new();
    cur.fill(&mut reader);
    if !run.parallel {
        loop {
            cur.work(&work, span(&cur), &mut crc, &run);
            cur.sink(&mut sink, run.cancel)?;
            if cur.last {
                break;
            }
            cur.fill(&mut reader);
        }
    } else {
        let mut next = Batch::new();
        let mut done: Option<Batch<'a, O>> = None;
        loop {
            let more = !cur.last;
            let before = done.as_ref().and_then(span);
            rayon::in_place_scope(|s| {
                let (c, w, crc, run) = (&mut cur, &work, &mut crc, &run);
                s.spawn(move |_| c.work(w, before, crc, run));
                let r = match done.as_mut() {
                    Some(d) => d.sink(&mut sink, run.cancel),
                    None => Ok(()),
                };
                if more && r.is_ok() {
                    next.fill(&mut reader);
                }
                r
            })?;
            if !more {
                if let Some(b) = span(&cur) {
                    crc.update(b);
                }
                cur.sink(&mut sink, run.cancel)?;
                break;
            }
            let spare = done.take().unwrap_or_else(Batch::new);
            done = Some(std::mem::replace(
                &mut cur,
                std::mem::replace(&mut next, spare),
            ));
        }
    }
    reader.check_checksum(crc.value())?;
    Ok(reader.position())
}

/// The calling thread's side of [`walk_pieces`]: the pieces of an RDB in file order, each with
/// what a worker made of it, then the events of whatever follows the RDB.
pub trait Pieces<'a, O> {
    /// One piece of records and its output; `pos` is the reader's position after its batch.
    fn piece(&mut self, recs: &[Record<'a>], out: &mut O, pos: u64) -> Result<()>;
    /// One event after the RDB (the commands of an AOF tail).
    fn event(&mut self, ev: Event<'_, '_>, pos: u64) -> Result<()>;
}

/// Walk the RDB `data` of `input` in pieces ([`pipeline`], on workers when `parallel`), then
/// its AOF tail, if any; the result is checked for a change of the file while it was read
/// ([`Input::settle`]). The `redis-ver` AUX field is left to the caller: it is in a piece.
pub fn walk_pieces<'a, O, W, P>(
    input: &Input,
    data: &'a [u8],
    common: &Common,
    parallel: bool,
    work: W,
    sink: &mut P,
) -> Result<Walked>
where
    O: Default + Send,
    W: Fn(&[Record<'a>], &mut O) + Sync,
    P: Pieces<'a, O>,
{
    let reader = RdbReader::with_options(data, &input.name, common.read.clone())?;
    let mut walked = Walked {
        rdb_version: Some(reader.version().to_string()),
        ..Default::default()
    };
    let run = Run {
        parallel,
        cancel: &common.cancel,
    };
    let r = walk_rdb(input, data, reader, run, work, sink, &mut walked);
    input.settle(r.map(|()| walked))
}

/// [`walk_pieces`] without the final check.
fn walk_rdb<'a, O, W, P>(
    input: &Input,
    data: &'a [u8],
    reader: RdbReader<'a>,
    run: Run<'_>,
    work: W,
    sink: &mut P,
    walked: &mut Walked,
) -> Result<()>
where
    O: Default + Send,
    W: Fn(&[Record<'a>], &mut O) + Sync,
    P: Pieces<'a, O>,
{
    let cancel = run.cancel;
    let end = pipeline(reader, run, work, |recs, out, pos| {
        sink.piece(recs, out, pos)
    })?;
    // An AOF with an RDB preamble: the commands follow, in order.
    walked.after_rdb(&input.name, data, end, true, 0, &mut |ev, pos| {
        cancel.check()?;
        sink.event(ev, pos)
    })
}

/// Walk an input that is not an RDB file (an AOF, JSON lines, stdin) event by event, in
/// order, on the calling thread; stops with [`Error::Cancelled`] once `common.cancel` is set.
pub fn walk_events(
    input: &Input,
    common: &Common,
    f: &mut dyn FnMut(Event<'_, '_>, u64) -> Result<()>,
) -> Result<Walked> {
    input.walk(&common.read, &mut |ev, pos| {
        common.cancel.check()?;
        f(ev, pos)
    })
}

/// [`walk`]'s sink, record by record.
struct PerEvent<S> {
    sink: S,
    /// Where the `redis-ver` AUX field is noted.
    noted: Walked,
}

impl<'a, T, S> Pieces<'a, Vec<Option<Result<T>>>> for PerEvent<S>
where
    S: FnMut(Event<'_, '_>, Option<T>, u64) -> Result<()>,
{
    fn piece(
        &mut self,
        recs: &[Record<'a>],
        out: &mut Vec<Option<Result<T>>>,
        pos: u64,
    ) -> Result<()> {
        for (rec, r) in recs.iter().zip(out.drain(..)) {
            self.noted.note(rec);
            (self.sink)(Event::Rdb(rec), r.transpose()?, pos)?;
        }
        Ok(())
    }

    fn event(&mut self, ev: Event<'_, '_>, pos: u64) -> Result<()> {
        (self.sink)(ev, None, pos)
    }
}

/// Walk `input`, running `work` on each key (in parallel batches for an RDB file, in order
/// otherwise) and `sink` on every event in input order, with the key's result. Stops with
/// [`Error::Cancelled`] once `common.cancel` is set: workers check it before each record,
/// and the calling thread before each event.
pub fn walk<T, W, S>(input: &Input, common: &Common, work: W, mut sink: S) -> Result<Walked>
where
    T: Send,
    W: Fn(&KeyRecord<'_>) -> Result<T> + Sync,
    S: FnMut(Event<'_, '_>, Option<T>, u64) -> Result<()>,
{
    let cancel = &common.cancel;
    let work = |k: &KeyRecord<'_>| {
        cancel.check()?;
        work(k)
    };
    let mut sink = |ev: Event<'_, '_>, r: Option<T>, pos: u64| {
        cancel.check()?;
        sink(ev, r, pos)
    };
    let Some(data) = input.rdb_bytes() else {
        return walk_events(input, common, &mut |ev, pos| {
            let r = match &ev {
                Event::Rdb(Record::Key(k)) => Some(work(k)?),
                _ => None,
            };
            sink(ev, r, pos)
        });
    };
    let mut per_event = PerEvent {
        sink,
        noted: Walked::default(),
    };
    let mut walked = walk_pieces(
        input,
        data,
        common,
        parallel_for(data.len() as u64),
        |recs, out: &mut Vec<Option<Result<T>>>| {
            out.clear();
            out.extend(recs.iter().map(|rec| match rec {
                Record::Key(k) => Some(work(k)),
                _ => None,
            }));
        },
        &mut per_event,
    )?;
    walked.redis_ver = per_event.noted.redis_ver;
    Ok(walked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rdb::ReadOptions;
    use crate::rdb::encoder::{RdbWriter, value};

    /// An RDB writer with `n` small strings in db 0.
    fn small_keys(n: usize) -> RdbWriter {
        let mut w = RdbWriter::new(10);
        w.select_db(0);
        for i in 0..n {
            let v = value::string(format!("value {i}").as_bytes(), false);
            w.key(format!("k{i}").as_bytes(), None, &v);
        }
        w
    }

    fn first_offset(recs: &[Record<'_>]) -> u64 {
        recs.iter()
            .find_map(|r| match r {
                Record::Key(k) => Some(k.offset),
                _ => None,
            })
            .unwrap_or(0)
    }

    /// Once the token is set, on workers or not, the walk stops with `Cancelled` before the
    /// next piece: no piece is handed on after it, and none a worker skipped.
    #[test]
    fn a_cancelled_pipeline_stops_before_the_next_piece() {
        let data = small_keys(50_000).finish();
        for parallel in [false, true] {
            let cancel = Cancel::new();
            let run = Run {
                parallel,
                cancel: &cancel,
            };
            let mut pieces = 0;
            let r = pipeline(
                RdbReader::new(&data, "t").unwrap(),
                run,
                |recs, out: &mut u64| *out = first_offset(recs),
                |recs, out, _| {
                    assert_eq!(first_offset(recs), *out, "a skipped piece was handed on");
                    pieces += 1;
                    if pieces == 3 {
                        cancel.cancel();
                    }
                    Ok(())
                },
            );
            assert!(matches!(r, Err(Error::Cancelled)), "{parallel}: {r:?}");
            assert_eq!(pieces, 3, "{parallel}");
        }
    }

    /// On workers or not, the sink sees every record once, in file order, each with its own
    /// output; a corrupt record stops the walk only after the records before it.
    #[test]
    fn pieces_come_back_in_file_order_and_errors_after_them() {
        let mut w = small_keys(20_000);
        w.raw(&[0x42, 0x01, b'x']);
        let data = w.finish();
        for parallel in [false, true] {
            let mut seen = Vec::new();
            let cancel = Cancel::new();
            let r = pipeline(
                RdbReader::new(&data, "t").unwrap(),
                Run {
                    parallel,
                    cancel: &cancel,
                },
                |recs, out: &mut Vec<u64>| {
                    out.clear();
                    out.extend(recs.iter().map(|r| match r {
                        Record::Key(k) => k.offset,
                        _ => 0,
                    }));
                },
                |recs, out, _| {
                    assert_eq!(recs.len(), out.len());
                    for (r, o) in recs.iter().zip(out.iter()) {
                        if let Record::Key(k) = r {
                            assert_eq!(k.offset, *o);
                            seen.push(k.offset);
                        }
                    }
                    Ok(())
                },
            );
            assert!(r.unwrap_err().to_string().contains("unknown"), "{parallel}");
            assert_eq!(seen.len(), 20_000);
            assert!(seen.windows(2).all(|w| w[0] < w[1]));
        }
    }

    /// The checksum computed in pieces, on workers or not, finds a changed byte anywhere
    /// (the header included), and agrees with the file when nothing changed.
    #[test]
    fn checksum_in_pieces_finds_a_changed_byte() {
        let mut w = RdbWriter::new(10);
        w.select_db(0);
        let big = vec![b'v'; 9 << 20];
        w.key(b"big", None, &value::string(&big, false));
        for i in 0..20_000 {
            let v = value::string(format!("value {i}").as_bytes(), false);
            w.key(format!("k{i}").as_bytes(), None, &v);
        }
        let data = w.finish();
        let run = |data: &[u8], parallel: bool, ignore: bool| {
            let opts = ReadOptions {
                ignore_checksum: ignore,
            };
            let reader = RdbReader::with_options(data, "t", opts).unwrap();
            let cancel = Cancel::new();
            let run = Run {
                parallel,
                cancel: &cancel,
            };
            pipeline(reader, run, |_, _: &mut ()| {}, |_, _, _| Ok(()))
        };
        for parallel in [false, true] {
            assert!(run(&data, parallel, false).is_ok());
            for at in [8, 100, 5 << 20, data.len() - 20] {
                let mut bad = data.clone();
                bad[at] = bad[at].wrapping_add(1);
                // A changed header or record may fail to decode instead; a changed value
                // byte decodes and only the checksum tells.
                let e = run(&bad, parallel, false).unwrap_err().to_string();
                assert!(
                    !(9..=9 << 20).contains(&at) || e.contains("checksum"),
                    "{at}: {e}"
                );
                if e.contains("checksum") {
                    assert!(run(&bad, parallel, true).is_ok());
                }
            }
        }
    }
}
