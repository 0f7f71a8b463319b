//! `convert`: write inputs as JSON lines, as RESP commands or as RDB files
//! (`convert_rdb`).
//!
//! Several inputs are converted in parallel (rayon), one output file each; one input goes to
//! the file named by `-o`, or to stdout.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::{Common, batch};
use crate::error::{Error, Result};
use crate::input::{Event, Input};
use crate::progress::Progress;
use crate::rdb::{KeyRecord, Record};
use crate::sink::file::{AtomicFile, refuse_input};
use crate::sink::jsonl::JsonlSink;
use crate::sink::resp::RespSink;
use crate::sink::stats::now_ms;
use crate::sink::{Sink, encode_key};
use crate::transform::{CommandFate, KeyMap};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON lines.
    Jsonl,
    /// Redis commands.
    Resp,
    /// An RDB file (`super::convert_rdb`).
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

/// Convert one input into `w`.
pub fn convert_to(
    name: &str,
    w: Box<dyn Write + Send>,
    out_name: &str,
    common: &Common,
    opts: &ConvertOptions,
) -> Result<ConvertReport> {
    if opts.format == Format::Rdb {
        return super::convert_rdb::convert_rdb(name, w, out_name, common, opts);
    }
    let input = Input::open(name)?;
    let w = BufWriter::with_capacity(1 << 20, w);
    let mut sink: Box<dyn Sink> = match opts.format {
        Format::Jsonl => Box::new(JsonlSink::new(w, out_name)),
        Format::Resp | Format::Rdb => Box::new(RespSink::new(w, out_name)),
    };
    let mut rep = ConvertReport {
        input: name.into(),
        output: out_name.into(),
        ..Default::default()
    };
    let now = now_ms();
    let mut progress = Progress::new(input.size, name, common.quiet);
    let keep = |k: &KeyRecord<'_>| {
        common.map.keep(k.db, &k.key, k.data_type())
            && !(opts.skip_expired && k.expire_ms.is_some_and(|ms| ms <= now))
    };
    // Keys are encoded on worker threads (in file order on output); values bigger than this are
    // left to the sink, which streams them instead of building them in memory.
    const PARALLEL_MAX: u64 = 1 << 20;
    let format = opts.format;
    let encode = |k: &KeyRecord<'_>| -> Result<Option<Vec<u8>>> {
        if keep(k) && k.serialized_len() <= PARALLEL_MAX {
            encode_key(format, k)
                .map(Some)
                .map_err(|e| e.in_input(name, None))
        } else {
            Ok(None)
        }
    };
    let res = batch::walk(&input, common, encode, |ev, encoded, pos| {
        match ev {
            Event::Rdb(Record::Key(k)) => {
                progress.tick(pos, 1);
                if let Some(Some(bytes)) = encoded {
                    sink.encoded_key(k.db, &bytes)?;
                    rep.keys += 1;
                    return Ok(());
                }
                if !common.map.keep(k.db, &k.key, k.data_type()) {
                    rep.filtered += 1;
                    return Ok(());
                }
                if opts.skip_expired && k.expire_ms.is_some_and(|ms| ms <= now) {
                    rep.expired += 1;
                    return Ok(());
                }
                sink.key(k).map_err(|e| e.in_input(name, None))?;
                rep.keys += 1;
            }
            Event::Rdb(Record::Function { code }) => {
                sink.function(code)?;
                rep.functions += 1;
            }
            Event::Rdb(_) => {}
            Event::Command { db, args } => {
                progress.tick(pos, 1);
                match common.map.command(db, args) {
                    CommandFate::Keep { db, args } => {
                        sink.command(db, &KeyMap::refs(&args))?;
                        rep.commands += 1;
                    }
                    CommandFate::Drop => {}
                    CommandFate::Refuse(why) => {
                        return Err(Error::Input {
                            path: name.to_string(),
                            msg: format!("AOF command at byte {pos}: {why}"),
                        });
                    }
                }
            }
        }
        Ok(())
    });
    progress.finish();
    res?;
    sink.finish()?;
    Ok(rep)
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
