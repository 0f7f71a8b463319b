//! `convert`: write inputs as JSON lines, as RESP commands or as RDB files
//! (`convert_rdb`).
//!
//! An RDB file is converted in pieces of a few hundred records ([`batch::pipeline`]): rayon
//! workers encode each piece into a buffer of their own, kept and reused from piece to piece,
//! and the calling thread writes the buffers out in file order with one large write each,
//! while it decodes the records that come next. Keys over [`PARALLEL_MAX`] bytes and function
//! libraries are left to the calling thread, which streams them straight to the output, so no
//! buffer ever holds a big value whole. Other inputs (AOF, JSON lines, stdin) are converted
//! in order on the calling thread.
//!
//! Several inputs are converted in parallel (rayon), one output file each; one input goes to
//! the file named by `-o`, or to stdout.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::Common;
use super::batch::{self, Pieces, parallel_for};
use crate::error::{Error, Result};
use crate::input::{Event, Input};
use crate::progress::Progress;
use crate::rdb::{KeyRecord, Record};
use crate::sink::file::{AtomicFile, refuse_input};
use crate::sink::jsonl::JsonlSink;
use crate::sink::resp::RespSink;
use crate::sink::stats::now_ms;
use crate::sink::{Format, KeyEncoder, PieceBuf, Sink};
use crate::transform::{CommandFate, KeyMap};

/// Options of `convert`.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// Output format.
    pub format: Format,
    /// Output file (one input) or directory (several); stdout when absent or `-`. Files are
    /// written whole or not at all ([`AtomicFile`]).
    pub output: Option<PathBuf>,
    /// Leave out keys already expired.
    pub skip_expired: bool,
    /// `--rdb-version` of `--format rdb` (default: the input's).
    pub rdb_version: Option<u32>,
    /// `--lossy`: leave out, and report, what the RDB version cannot hold.
    pub lossy: bool,
    /// `--merge`: all inputs into one RDB file.
    pub merge: bool,
    /// `--on-conflict` of `--merge`.
    pub on_conflict: super::convert_rdb::Conflict,
}

/// Counts of one conversion.
#[derive(Debug, Clone, Default)]
pub struct ConvertReport {
    /// Input name.
    pub input: String,
    /// Where it went.
    pub output: String,
    /// Keys written.
    pub keys: u64,
    /// Keys left out by filters.
    pub filtered: u64,
    /// Keys left out because expired.
    pub expired: u64,
    /// Commands written (AOF).
    pub commands: u64,
    /// Functions written.
    pub functions: u64,
    /// What `--lossy` left out or wrote without a part, one line per key.
    pub dropped: Vec<String>,
}

/// Keys whose record is bigger than this are written by the writer itself, streamed to the
/// output, rather than encoded whole into a worker's buffer.
const PARALLEL_MAX: u64 = 4 << 20;
/// The most bytes a worker writes for one key: a key whose text turns out longer (a small
/// record that decompresses to a lot) is given up and left to the writer, which streams it.
const KEY_OUTPUT_MAX: usize = 8 << 20;
/// A piece buffer that grew past this (a piece of big keys) is freed after use rather than
/// kept, so that the buffers kept for reuse stay small.
const BUFFER_KEEP: usize = 4 << 20;

/// Convert one input into `w`.
pub fn convert_to(
    name: &str,
    w: Box<dyn Write + Send>,
    out_name: &str,
    common: &Common,
    opts: &ConvertOptions,
) -> Result<ConvertReport> {
    convert_with(name, w, out_name, common, opts, Mode::BySize)
}

/// How an RDB input is converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// In pieces, on rayon's workers if the file is large enough.
    BySize,
    /// In pieces, on workers or on the calling thread.
    #[cfg(test)]
    Pieces { parallel: bool },
    /// Record by record on the calling thread, as other inputs are (what pieces must match).
    #[cfg(test)]
    Events,
}

/// [`convert_to`], in the given mode.
fn convert_with(
    name: &str,
    w: Box<dyn Write + Send>,
    out_name: &str,
    common: &Common,
    opts: &ConvertOptions,
    mode: Mode,
) -> Result<ConvertReport> {
    if opts.format == Format::Rdb {
        return super::convert_rdb::convert_rdb(name, w, out_name, common, opts);
    }
    let input = Input::open(name)?;
    // Encoded pieces (tens of KB and more) pass this buffer by; it gathers the writes of the
    // big values the writer streams itself, and of AOF commands.
    let w = BufWriter::with_capacity(64 << 10, w);
    let keep = Keep {
        common,
        skip_expired: opts.skip_expired,
        now: now_ms(),
    };
    let mut writer = Writer {
        sink: match opts.format {
            Format::Jsonl => Box::new(JsonlSink::new(w, out_name)),
            // (RDB output went to `convert_rdb` above.)
            Format::Resp | Format::Rdb => Box::new(RespSink::new(w, out_name)),
        },
        rep: ConvertReport {
            input: name.into(),
            output: out_name.into(),
            ..Default::default()
        },
        progress: Progress::new(input.size, name, common.quiet),
        keep: &keep,
        name,
    };
    let data = match mode {
        #[cfg(test)]
        Mode::Events => None,
        _ => input.rdb_bytes(),
    };
    let parallel = match mode {
        #[cfg(test)]
        Mode::Pieces { parallel } => parallel,
        _ => data.is_some_and(|d| parallel_for(d.len() as u64)),
    };
    let res = match (data, opts.format) {
        (Some(data), Format::Jsonl) => {
            writer.rdb::<JsonlSink<PieceBuf>>(&input, data, common, parallel)
        }
        (Some(data), Format::Resp | Format::Rdb) => {
            writer.rdb::<RespSink<PieceBuf>>(&input, data, common, parallel)
        }
        (None, _) => {
            batch::walk_events(&input, common, &mut |ev, pos| writer.event(ev, pos)).map(|_| ())
        }
    };
    writer.progress.finish();
    res?;
    writer.sink.finish()?;
    Ok(writer.rep)
}

/// Which keys go out.
struct Keep<'c> {
    common: &'c Common,
    skip_expired: bool,
    now: i64,
}

/// What becomes of a key.
enum Verdict {
    Write,
    Filtered,
    Expired,
}

impl Keep<'_> {
    fn verdict(&self, k: &KeyRecord<'_>) -> Verdict {
        if !self.common.map.keep(k.db, &k.key, k.data_type()) {
            Verdict::Filtered
        } else if self.skip_expired && k.expire_ms.is_some_and(|ms| ms <= self.now) {
            Verdict::Expired
        } else {
            Verdict::Write
        }
    }
}

/// One piece of records as a worker left it: its keys encoded into the encoder's buffer, in
/// runs, each followed by a record the writer handles itself (a big value, a function).
struct Piece<E> {
    enc: E,
    runs: Vec<Run>,
    keys: u64,
    filtered: u64,
    expired: u64,
    /// The key that failed to encode, after which nothing was: its error is reported once
    /// the keys before it are written.
    failed: Option<Error>,
}

/// Bytes of a piece's buffer up to `end`, then the record at index `then`, if any.
struct Run {
    end: usize,
    /// First and last db of the keys in the run; `None` when it has none.
    dbs: Option<(u64, u64)>,
    then: Option<usize>,
}

impl<E: KeyEncoder> Default for Piece<E> {
    fn default() -> Self {
        Piece {
            enc: E::new_encoder(),
            runs: Vec::new(),
            keys: 0,
            filtered: 0,
            expired: 0,
            failed: None,
        }
    }
}

impl<E: KeyEncoder> Piece<E> {
    /// Encode `recs` (on a worker thread), replacing what the piece held.
    fn encode(&mut self, recs: &[Record<'_>], keep: &Keep<'_>) {
        self.enc.reset();
        self.enc.buffer().clear(BUFFER_KEEP);
        self.runs.clear();
        (self.keys, self.filtered, self.expired, self.failed) = (0, 0, 0, None);
        let mut dbs: Option<(u64, u64)> = None;
        for (i, rec) in recs.iter().enumerate() {
            match rec {
                Record::Key(k) => match keep.verdict(k) {
                    Verdict::Filtered => self.filtered += 1,
                    Verdict::Expired => self.expired += 1,
                    Verdict::Write if k.serialized_len() > PARALLEL_MAX => {
                        self.close_run(dbs.take(), Some(i));
                    }
                    Verdict::Write => {
                        if dbs.is_none() {
                            self.enc.assume_db(k.db);
                        }
                        let mark = self.enc.buffer().len();
                        self.enc.buffer().allow(KEY_OUTPUT_MAX);
                        if let Err(e) = self.enc.key(k) {
                            self.enc.reset();
                            self.enc.buffer().truncate(mark);
                            if self.enc.buffer().overflowed() {
                                self.close_run(dbs.take(), Some(i));
                                continue;
                            }
                            self.failed = Some(e);
                            break;
                        }
                        dbs = Some((dbs.map_or(k.db, |d| d.0), k.db));
                        self.keys += 1;
                    }
                },
                Record::Function { .. } => self.close_run(dbs.take(), Some(i)),
                _ => {}
            }
        }
        self.close_run(dbs, None);
    }

    fn close_run(&mut self, dbs: Option<(u64, u64)>, then: Option<usize>) {
        let end = self.enc.buffer().len();
        self.runs.push(Run { end, dbs, then });
    }
}

/// The calling thread's side of a conversion: writes pieces out in order and handles the
/// records workers leave to it, and every event of inputs that are not converted in pieces
/// (AOF, JSONL, stdin).
struct Writer<'c> {
    sink: Box<dyn Sink + 'c>,
    rep: ConvertReport,
    progress: Progress,
    keep: &'c Keep<'c>,
    name: &'c str,
}

impl Writer<'_> {
    /// Convert an RDB file in pieces: workers encode, this thread writes in file order.
    fn rdb<E: KeyEncoder>(
        &mut self,
        input: &Input,
        data: &[u8],
        common: &Common,
        parallel: bool,
    ) -> Result<()> {
        let keep = self.keep;
        let work = |recs: &[Record<'_>], piece: &mut Piece<E>| piece.encode(recs, keep);
        batch::walk_pieces(input, data, common, parallel, work, self).map(|_| ())
    }

    /// One event, in order.
    fn event(&mut self, ev: Event<'_, '_>, pos: u64) -> Result<()> {
        match ev {
            Event::Rdb(Record::Key(k)) => {
                self.progress.tick(pos, 1);
                match self.keep.verdict(k) {
                    Verdict::Filtered => self.rep.filtered += 1,
                    Verdict::Expired => self.rep.expired += 1,
                    Verdict::Write => {
                        self.sink.key(k).map_err(|e| e.in_input(self.name, None))?;
                        self.rep.keys += 1;
                    }
                }
            }
            Event::Rdb(Record::Function { code }) => {
                self.sink.function(code)?;
                self.rep.functions += 1;
            }
            Event::Rdb(_) => {}
            Event::Command { db, args } => {
                self.progress.tick(pos, 1);
                match self.keep.common.map.command(db, args) {
                    CommandFate::Keep { db, args } => {
                        self.sink.command(db, &KeyMap::refs(&args))?;
                        self.rep.commands += 1;
                    }
                    CommandFate::Drop => {}
                    CommandFate::Refuse(why) => {
                        return Err(Error::Input {
                            path: self.name.to_string(),
                            msg: format!("AOF command at byte {pos}: {why}"),
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

impl<'a, E: KeyEncoder> Pieces<'a, Piece<E>> for Writer<'_> {
    /// Write out what a worker made of `recs`.
    fn piece(&mut self, recs: &[Record<'a>], piece: &mut Piece<E>, pos: u64) -> Result<()> {
        let buf = piece.enc.buffer().bytes();
        let mut at = 0;
        for run in &piece.runs {
            if let Some((first, last)) = run.dbs {
                self.sink.encoded(first, last, &buf[at..run.end])?;
            }
            at = run.end;
            if let Some(rec) = run.then.and_then(|i| recs.get(i)) {
                self.event(Event::Rdb(rec), pos)?;
            }
        }
        self.rep.keys += piece.keys;
        self.rep.filtered += piece.filtered;
        self.rep.expired += piece.expired;
        self.progress
            .tick(pos, piece.keys + piece.filtered + piece.expired);
        match piece.failed.take() {
            Some(e) => Err(e.in_input(self.name, None)),
            None => Ok(()),
        }
    }

    fn event(&mut self, ev: Event<'_, '_>, pos: u64) -> Result<()> {
        Writer::event(self, ev, pos)
    }
}

/// Convert `name` into the file `out`, which gets the whole output or keeps what it had.
fn convert_file(
    name: &str,
    out: &Path,
    common: &Common,
    opts: &ConvertOptions,
) -> Result<ConvertReport> {
    let file = AtomicFile::create(out)?;
    let w = Box::new(file.writer()?);
    let rep = convert_to(name, w, &out.display().to_string(), common, opts)?;
    file.commit()?;
    Ok(rep)
}

/// Convert every input; returns one result per input, in order.
pub fn convert(
    inputs: &[String],
    common: &Common,
    opts: &ConvertOptions,
) -> Vec<Result<ConvertReport>> {
    // `-o -` is standard output, as no `-o` is.
    let output = opts.output.as_deref().filter(|p| *p != Path::new("-"));
    if opts.merge {
        return vec![super::convert_rdb::merge(inputs, output, common, opts)];
    }
    if inputs.len() == 1 {
        let name = &inputs[0];
        let r = match output {
            Some(p) => refuse_input(p, inputs).and_then(|()| convert_file(name, p, common, opts)),
            None => convert_to(name, Box::new(std::io::stdout()), "<stdout>", common, opts),
        };
        return vec![r];
    }
    let Some(dir) = output else {
        return vec![Err(Error::Usage(
            "several inputs need -o DIR: one output file is written per input".into(),
        ))];
    };
    if let Err(e) = std::fs::create_dir_all(dir) {
        return vec![Err(Error::io(dir.display().to_string(), e))];
    }
    let mut used = std::collections::HashSet::new();
    let outs: Vec<PathBuf> = inputs
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let base = Path::new(name)
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| format!("input{i}"));
            let mut file = format!("{base}.{}", opts.format.ext());
            if !used.insert(file.clone()) {
                file = format!("{base}.{i}.{}", opts.format.ext());
                used.insert(file.clone());
            }
            dir.join(file)
        })
        .collect();
    if let Some(e) = outs.iter().find_map(|out| refuse_input(out, inputs).err()) {
        return vec![Err(e)];
    }
    inputs
        .par_iter()
        .zip(outs.par_iter())
        .map(|(name, out)| convert_file(name, out, common, opts))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rdb::encoder::{RdbWriter, value};
    use crate::transform::{Filter, FilterSpec, KeyMap};

    /// An RDB over three dbs with a function, keys that expired long ago, and strings over
    /// [`PARALLEL_MAX`] (which the writer streams itself) among many small keys.
    fn sample() -> Vec<u8> {
        let mut w = RdbWriter::new(10);
        w.aux("redis-ver", b"7.0.15");
        w.function(b"#!lua name=lib\nredis.register_function('f', function() return 1 end)");
        let big: Vec<u8> = (0..(PARALLEL_MAX + 10) as u32)
            .map(|i| b'a' + (i.wrapping_mul(2_654_435_761) >> 27) as u8)
            .collect();
        for db in [0, 3, 1] {
            w.select_db(db);
            for i in 0..5000u32 {
                let key = format!("k{}:{i}", i % 7);
                let ttl = match i % 11 {
                    0 => Some(1_000),
                    1 => Some(4_102_444_800_000),
                    _ => None,
                };
                let v = match i % 5 {
                    0 => value::hash_listpack(&[(b"f", b"v\"1\""), (b"g", b"\xff")]),
                    1 => value::zset_listpack(&[(b"m", 1.5), (b"n", 0.1 + 0.2)]),
                    2 if i % 1000 == 2 => value::string(&big, false),
                    _ => value::string(format!("value {i}").as_bytes(), false),
                };
                w.key(key.as_bytes(), ttl, &v);
            }
        }
        w.finish()
    }

    /// Pieces encoded on workers and written in order give the bytes a conversion on one
    /// thread gives: across dbs (RESP's SELECTs), around big values and functions, with keys
    /// filtered out and expired keys left out.
    #[test]
    fn pieces_on_workers_write_what_one_thread_writes() {
        let dir = std::env::temp_dir().join(format!("rdbferry-convert-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let input = dir.join("sample.rdb");
        std::fs::write(&input, sample()).unwrap();
        let name = input.display().to_string();
        let some = FilterSpec {
            keys: vec!["k1*".into(), "k3*".into()],
            ..Default::default()
        };
        for spec in [FilterSpec::default(), some] {
            let common = Common {
                map: KeyMap::new(Filter::new(&spec).unwrap(), Vec::new(), Default::default()),
                ..Default::default()
            };
            for format in [Format::Jsonl, Format::Resp] {
                let opts = ConvertOptions {
                    format,
                    output: None,
                    skip_expired: true,
                    rdb_version: None,
                    lossy: false,
                    merge: false,
                    on_conflict: Default::default(),
                };
                let mut outs = Vec::new();
                let modes = [
                    Mode::Events,
                    Mode::Pieces { parallel: false },
                    Mode::Pieces { parallel: true },
                ];
                for (i, mode) in modes.into_iter().enumerate() {
                    let out = dir.join(format!("out-{i}"));
                    let w = Box::new(std::fs::File::create(&out).unwrap());
                    let o = out.display().to_string();
                    let rep = convert_with(&name, w, &o, &common, &opts, mode).unwrap();
                    outs.push((std::fs::read(&out).unwrap(), rep.keys, rep.expired));
                }
                assert!(
                    outs[0].1 > 1000 && outs[0].2 > 100,
                    "{:?}",
                    (outs[0].1, outs[0].2)
                );
                for (i, o) in outs.iter().enumerate().skip(1) {
                    assert!(*o == outs[0], "{format:?}: {:?} differs", modes[i]);
                }
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
