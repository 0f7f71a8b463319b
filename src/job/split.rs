//! `split INPUT --by-slots SPEC -o DIR`: one RDB file per Cluster slot range, each loadable
//! at start-up by the node that serves those slots.
//!
//! One walk over the input (values planned on worker threads as `convert --format rdb` does,
//! `convert_rdb::prepare`), each key routed by the slot of its target name to the range that
//! holds it, into one [`RdbOut`] per range. Functions go to every file: each node needs them.
//! Keys must end up in db 0, the only db of a Cluster node (`--db`, `--db-map`); a key in no
//! range is left out and counted. Files are written whole or not at all: an error leaves none.
//!
//! With `cluster=redis://host:port` the ranges are read from a live Cluster
//! ([`SlotMap::discover_shards`]: `CLUSTER SHARDS` on 7.0+, else `CLUSTER SLOTS`): one file
//! per master, `node-HOST-PORT.rdb`, holding every range that master owns; the report names
//! each file's node (address and id) so the user knows which node loads which file. The files
//! are written for the version the Cluster writes itself, unless `--rdb-version` says
//! otherwise: a 7.0 dump split for a 6.2 Cluster is re-encoded for RDB 9.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::convert_rdb::{Prep, RdbOut, VALKEY_9, VERSIONS, prepare, target_version, version_name};
use super::{Common, batch};
use crate::error::{Error, Result};
use crate::input::{Event, Input};
use crate::keyslot::{SLOTS, key_slot};
use crate::net::cluster::{SlotMap, show_ranges};
use crate::net::{Conn, NetErrorKind, RedisUrl, Version};
use crate::progress::Progress;
use crate::rdb::{KeyRecord, Record};
use crate::sink::file::{AtomicFile, refuse_input};
use crate::sink::stats::now_ms;
use crate::text::quoted;

/// Where `--by-slots` takes its ranges from.
#[derive(Debug, Clone)]
pub enum SlotSpec {
    /// Slot ranges, inclusive, in the order given: one file each.
    Ranges(Vec<(u16, u16)>),
    /// A live Cluster (`cluster=URL`): one file per master.
    Cluster(RedisUrl),
}

/// Options of `split`.
#[derive(Debug, Clone)]
pub struct SplitOptions {
    /// The slot ranges, or where to read them.
    pub by: SlotSpec,
    /// Output directory.
    pub dir: PathBuf,
    /// `--rdb-version` (default: the Cluster's own with `cluster=`, else the input's).
    pub rdb_version: Option<u32>,
    /// `--lossy`.
    pub lossy: bool,
    /// Leave out keys already expired.
    pub skip_expired: bool,
}

/// One file `split` writes: the slots it holds and, with `cluster=`, the node it is for.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SplitOutput {
    /// The file.
    pub path: String,
    /// Its slot ranges, inclusive.
    pub ranges: Vec<(u16, u16)>,
    /// The master that owns them (`host:port`), with `cluster=`.
    pub node: Option<String>,
    /// That master's node id.
    pub node_id: Option<String>,
    /// Keys written.
    pub keys: u64,
}

impl SplitOutput {
    /// One line for the user: `PATH: node HOST:PORT (id ID), slots 0-99, 200-299, N keys`.
    pub fn describe(&self) -> String {
        let node = match (&self.node, &self.node_id) {
            (Some(n), Some(id)) if !id.is_empty() => format!("node {n} (id {id}), "),
            (Some(n), _) => format!("node {n}, "),
            _ => String::new(),
        };
        let slots = show_ranges(&self.ranges);
        format!("{}: {node}slots {slots}, {} keys", self.path, self.keys)
    }
}

/// What `split` wrote.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SplitReport {
    /// The version written (`RDB 10`, `Valkey 9 (VALKEY080)`).
    pub version: String,
    /// Each file, in the order of the ranges (or of the masters).
    pub outputs: Vec<SplitOutput>,
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

/// The file of the master at `host:port` in `dir`: `node-HOST-PORT.rdb`, the host's
/// characters other than letters, digits, `.` and `-` made `_` (an IPv6 `::1` is `__1`).
pub fn node_file(dir: &Path, host: &str, port: u16) -> PathBuf {
    let host: String = host
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' => c,
            _ => '_',
        })
        .collect();
    dir.join(format!("node-{host}-{port}.rdb"))
}

/// The files to write (keys not yet counted), from the ranges or the live Cluster.
fn plan_outputs(opts: &SplitOptions) -> Result<Vec<SplitOutput>> {
    let url = match &opts.by {
        SlotSpec::Ranges(ranges) => {
            let file = |r: &(u16, u16)| SplitOutput {
                path: range_file(&opts.dir, *r).display().to_string(),
                ranges: vec![*r],
                ..SplitOutput::default()
            };
            return Ok(ranges.iter().map(file).collect());
        }
        SlotSpec::Cluster(url) => url,
    };
    let map = SlotMap::discover_shards(url)?;
    // A key of an unserved slot would be left out, and the Cluster is down for it anyway
    // (import's precheck refuses such a Cluster too).
    let uncovered = map.uncovered();
    if !uncovered.is_empty() {
        return Err(Error::Usage(format!(
            "--by-slots cluster={}: no master serves slots {}; fix the Cluster first",
            url.redacted(),
            show_ranges(&uncovered)
        )));
    }
    let node = |(i, m): (usize, &crate::net::cluster::NodeAddr)| SplitOutput {
        path: node_file(&opts.dir, &m.host, m.port).display().to_string(),
        ranges: map.ranges_of(i),
        node: Some(m.to_string()),
        node_id: Some(map.id(i).to_string()),
        keys: 0,
    };
    Ok(map.masters().iter().enumerate().map(node).collect())
}

/// The `--rdb-version` of the Cluster at `url` (its seed's): what it writes itself, so that
/// every node loads the files; `valkey9` for Valkey 9 and later (which still says
/// `redis_version:7.2.4`, so its `valkey_version` decides). `None` (the input's version)
/// when INFO is refused (an ACL user without @dangerous).
fn cluster_rdb_version(url: &RedisUrl) -> Result<Option<u32>> {
    let mut c = Conn::open(&url.with_host_port(&url.host, url.port))?;
    let info = match c.info("server") {
        Ok(info) => info,
        Err(e) if matches!(e.kind, NetErrorKind::Refused { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let version = |field: &str| info.get(field).map(|v| Version::parse(v));
    if version("valkey_version").is_some_and(|v| v.major >= 9) {
        return Ok(Some(VALKEY_9));
    }
    let n = version("redis_version").unwrap_or_default().rdb_version();
    Ok(Some(n.clamp(*VERSIONS.start(), *VERSIONS.end())))
}

/// Per slot, the index of the output that holds it (`u16::MAX`: none).
fn slot_table(outputs: &[SplitOutput]) -> Vec<u16> {
    let mut table = vec![u16::MAX; SLOTS as usize];
    for (i, o) in outputs.iter().enumerate() {
        for &(lo, hi) in &o.ranges {
            table[lo as usize..=hi as usize].fill(i as u16);
        }
    }
    table
}

/// One output being written.
struct Part {
    file: AtomicFile,
    out: RdbOut<File>,
}

/// Split `name` into one RDB file per range of `opts`.
pub fn split(name: &str, common: &Common, opts: &SplitOptions) -> Result<SplitReport> {
    let input = Input::open(name)?;
    let wanted = match (&opts.by, opts.rdb_version) {
        (SlotSpec::Cluster(url), None) => cluster_rdb_version(url)?,
        (_, v) => v,
    };
    let target = target_version(&input, wanted)?;
    let mut rep = SplitReport {
        outputs: plan_outputs(opts)?,
        version: version_name(target),
        ..SplitReport::default()
    };
    std::fs::create_dir_all(&opts.dir).map_err(|e| Error::io(opts.dir.display().to_string(), e))?;
    let mut parts = Vec::new();
    for o in &rep.outputs {
        let path = PathBuf::from(&o.path);
        refuse_input(&path, &[name.to_string()])?;
        let file = AtomicFile::create(&path)?;
        let mut out = RdbOut::new(file.writer()?, &o.path, target, opts.lossy)?;
        out.source = name.into();
        parts.push(Part { file, out });
    }
    let now = now_ms();
    let table = slot_table(&rep.outputs);
    let work = |k: &KeyRecord<'_>| {
        let prep = prepare(k, common, target, opts.skip_expired, now)
            .map_err(|e| Error::Rdb(crate::rdb::Error::from_decode(name, Some(&k.key), e)))?;
        let part = match &prep {
            Prep::Write { name, .. } => {
                Some(table[key_slot(name) as usize] as usize).filter(|&i| i != u16::MAX as usize)
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
    for (i, p) in parts.into_iter().enumerate() {
        let mut out = p.out;
        rep.outputs[i].keys = out.keys;
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
        for bad in ["0-16384", "5-1", "0-10,10-20", "a-b", ""] {
            assert!(parse_slots(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn node_files_and_slot_table() {
        let dir = Path::new("d");
        assert_eq!(
            node_file(dir, "::1", 7000),
            Path::new("d/node-__1-7000.rdb")
        );
        assert_eq!(
            node_file(dir, "redis-0.svc", 6379),
            Path::new("d/node-redis-0.svc-6379.rdb")
        );
        let out = |ranges: Vec<(u16, u16)>| SplitOutput {
            ranges,
            ..SplitOutput::default()
        };
        let t = slot_table(&[out(vec![(0, 9), (20, 29)]), out(vec![(10, 10)])]);
        assert_eq!((t[0], t[9], t[10], t[11], t[25]), (0, 0, 1, u16::MAX, 0));
        let o = SplitOutput {
            path: "f.rdb".into(),
            ranges: vec![(0, 9), (12, 12)],
            node: Some("h:1".into()),
            node_id: Some("abc".into()),
            keys: 3,
        };
        assert_eq!(
            o.describe(),
            "f.rdb: node h:1 (id abc), slots 0-9, 12, 3 keys"
        );
    }
}
