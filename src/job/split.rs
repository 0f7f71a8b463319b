//! `split INPUT --by-slots SPEC -o DIR`: one RDB file per Cluster slot range, each loadable
//! at start-up by the node that serves those slots.
//!
//! One walk over the input (values planned on worker threads as `convert --format rdb` does,
//! `convert_rdb::prepare`), each key routed by the slot of its target name to the range that
//! holds it, into one [`RdbOut`] per range. Functions go to every file: each node needs them.
//! Keys must end up in db 0, the only db of a Cluster node (`--db`, `--db-map`); a key in no
//! range is left out and counted. Files are written whole or not at all: an error leaves none.
//!
//! Not done yet: `cluster=redis://host:port` (ranges read from a live Cluster).

use std::fs::File;
use std::path::{Path, PathBuf};

use super::convert_rdb::{Prep, RdbOut, prepare, target_version};
use super::{Common, batch};
use crate::error::{Error, Result};
use crate::input::{Event, Input};
use crate::keyslot::key_slot;
use crate::progress::Progress;
use crate::rdb::{KeyRecord, Record};
use crate::sink::file::{AtomicFile, refuse_input};
use crate::sink::stats::now_ms;
use crate::text::quoted;

/// Options of `split`.
#[derive(Debug, Clone, Default)]
pub struct SplitOptions {
    /// Slot ranges, inclusive, in the order given.
    pub ranges: Vec<(u16, u16)>,
    /// Output directory.
    pub dir: PathBuf,
    /// `--rdb-version` (default: the input's).
    pub rdb_version: Option<u32>,
    /// `--lossy`.
    pub lossy: bool,
    /// Leave out keys already expired.
    pub skip_expired: bool,
}

/// What `split` wrote.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SplitReport {
    /// Each file, with its range and key count.
    pub outputs: Vec<(String, (u16, u16), u64)>,
    /// Keys whose slot is in no range.
    pub outside: u64,
    /// Keys left out by the filters.
    pub filtered: u64,
    /// Keys left out because expired.
    pub expired: u64,
    /// What `--lossy` left out (see `convert_rdb`).
    pub dropped: Vec<String>,
}

/// Parse `0-5460,5461-10922,10923-16383` (a single slot `N` is `N-N`): ranges within
/// 0..=16383 that do not overlap.
pub fn parse_slots(spec: &str) -> Result<Vec<(u16, u16)>> {
    if spec.starts_with("cluster=") {
        return Err(Error::Usage(
            "--by-slots cluster=URL is not supported yet: give the ranges (0-5460,...)".into(),
        ));
    }
    let bad = |why: String| Error::Usage(format!("--by-slots {spec:?}: {why}"));
    let mut ranges: Vec<(u16, u16)> = Vec::new();
    for part in spec.split(',').map(str::trim) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let num = |x: &str| -> Result<u16> {
            x.trim()
                .parse::<u16>()
                .ok()
                .filter(|&n| n < 16384)
                .ok_or_else(|| bad(format!("{x:?} is not a slot (0 to 16383)")))
        };
        let (lo, hi) = (num(a)?, num(b)?);
        if lo > hi {
            return Err(bad(format!("range {part} runs backwards")));
        }
        if let Some(o) = ranges.iter().find(|r| lo <= r.1 && r.0 <= hi) {
            return Err(bad(format!("{lo}-{hi} overlaps {}-{}", o.0, o.1)));
        }
        ranges.push((lo, hi));
    }
    Ok(ranges)
}

/// The file of range `r` in `dir`.
pub fn range_file(dir: &Path, r: (u16, u16)) -> PathBuf {
    dir.join(format!("slots-{}-{}.rdb", r.0, r.1))
}

/// One output being written.
struct Part {
    file: AtomicFile,
    out: RdbOut<File>,
}

/// Split `name` into one RDB file per range of `opts`.
pub fn split(name: &str, common: &Common, opts: &SplitOptions) -> Result<SplitReport> {
    let input = Input::open(name)?;
    let target = target_version(&input, opts.rdb_version)?;
    std::fs::create_dir_all(&opts.dir).map_err(|e| Error::io(opts.dir.display().to_string(), e))?;
    let mut parts = Vec::new();
    for r in &opts.ranges {
        let path = range_file(&opts.dir, *r);
        refuse_input(&path, &[name.to_string()])?;
        let file = AtomicFile::create(&path)?;
        let mut out = RdbOut::new(
            file.writer()?,
            &path.display().to_string(),
            target,
            opts.lossy,
        )?;
        out.source = name.into();
        parts.push(Part { file, out });
    }
    let mut rep = SplitReport::default();
    let now = now_ms();
    let ranges = &opts.ranges;
    let work = |k: &KeyRecord<'_>| {
        let prep = prepare(k, common, target, opts.skip_expired, now)
            .map_err(|e| Error::Rdb(crate::rdb::Error::from_decode(name, Some(&k.key), e)))?;
        let part = match &prep {
            Prep::Write { name, .. } => {
                let slot = key_slot(name);
                ranges.iter().position(|r| (r.0..=r.1).contains(&slot))
            }
            _ => None,
        };
        Ok((prep, part))
    };
    let mut progress = Progress::new(input.size, name, common.quiet);
    let res = batch::walk(&input, common, work, |ev, prep, pos| {
        match (ev, prep) {
            (Event::Rdb(Record::Key(k)), Some((prep, part))) => {
                progress.tick(pos, 1);
                match (prep, part) {
                    (Prep::Filtered, _) => rep.filtered += 1,
                    (Prep::Expired, _) => rep.expired += 1,
                    (Prep::Empty, _) => parts[0].out.empty(k),
                    (Prep::Write { db, name: key, .. }, _) if db != 0 => {
                        return Err(Error::Input {
                            path: name.into(),
                            msg: format!(
                                "key {} is in db {db}: a Cluster node has only db 0 \
                                 (--db {} --db-map {}=0, or --db 0)",
                                quoted(&key),
                                k.db,
                                k.db
                            ),
                        });
                    }
                    (_, None) => rep.outside += 1,
                    (prep, Some(i)) => parts[i].out.key(k, prep, None)?,
                }
            }
            (Event::Rdb(rec), _) => {
                for p in parts.iter_mut() {
                    p.out.record(rec)?;
                }
            }
            (Event::Command { .. }, _) => {
                return Err(Error::Input {
                    path: name.into(),
                    msg: format!("AOF commands at byte {pos} cannot be split into RDB files"),
                });
            }
        }
        Ok(())
    });
    progress.finish();
    res?;
    for (i, (p, r)) in parts.into_iter().zip(ranges).enumerate() {
        let path = p.file.dest().display().to_string();
        let mut out = p.out;
        rep.outputs.push((path, *r, out.keys));
        // Every file saw the same functions and module data: report those once.
        let dropped = std::mem::take(&mut out.dropped);
        rep.dropped.extend(
            dropped
                .into_iter()
                .filter(|d| i == 0 || d.starts_with("key ")),
        );
        out.finish()?;
        p.file.commit()?;
    }
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_specs() {
        assert_eq!(
            parse_slots("0-5460,5461-10922,10923-16383").unwrap(),
            [(0, 5460), (5461, 10922), (10923, 16383)]
        );
        assert_eq!(parse_slots("7").unwrap(), [(7, 7)]);
        for bad in [
            "0-16384",
            "5-1",
            "0-10,10-20",
            "a-b",
            "",
            "cluster=redis://x",
        ] {
            assert!(parse_slots(bad).is_err(), "{bad}");
        }
    }
}
