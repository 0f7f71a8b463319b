//! `verify`: compare every key of a source (RDB, AOF, appendonlydir, JSONL, stdin, or a live
//! `redis://` server) with a live Redis target, after filters, renames and db mapping.
//!
//! First, for one RDB file without filters and a standalone target: the target's own snapshot
//! (`snapshot`: rdbferry asks for it as a replica does) is compared with the file by an
//! order-independent digest; when they agree, that is the answer. When they differ, or no
//! snapshot can be had, the keys are compared one by one as below, which names every
//! difference and applies the TTL tolerance.
//!
//! A sink-side stage of the pipeline, but one that reads: source values are decoded with the
//! library (so encodings may differ between source and target) and compared with what the
//! target answers to pipelined, batched commands over one connection ([`target::Conn`]) per
//! server. A live source ([`verify_live`], module `source`) is read with `SCAN`, then `DUMP`
//! and the TTL of each key; each payload becomes a [`KeyRecord`] like a file's record, so the
//! comparison below is the same for every source. The target is read with:
//!
//! - every key: `TYPE`, `PEXPIRETIME` (7.0+; `PTTL` before), and its size (`STRLEN`, `LLEN`,
//!   `SCARD`, `ZCARD`, `HLEN`, `XLEN`);
//! - strings: `GET` (`GETRANGE` in chunks when big); lists: `LRANGE` in chunks, in order;
//!   sets: `SMISMEMBER` (`SISMEMBER` before 6.2); zsets: `ZMSCORE` (`ZSCORE` before 6.2),
//!   scores compared as exact `f64`s; hashes: `HMGET`, and `HPEXPIRETIME` for field TTLs on
//!   7.4+; streams: `XRANGE` in chunks, `XLEN`, the last id (`XINFO STREAM`), groups (`XINFO
//!   GROUPS`: name, last-delivered-id, pending count) and the `XPENDING` summary per group;
//! - module values: presence and type (the module's type name) only.
//!
//! Values that fit in one chunk are batched, many keys per round trip; a bigger value is
//! compared chunk by chunk on its own, so at most one big value's chunk is held at a time.
//!
//! A Cluster target (`cluster_enabled:1`, detected) gets one connection per master, each key's
//! reads batched to the master of its slot, and `MOVED` / `ASK` followed (`route`), so a verify
//! during or after a resharding works; only db 0 exists there.
//!
//! Not here: a consistent snapshot of a live source (a key that changes there during the run
//! is compared as `DUMP` returned it; one deleted after `SCAN` is counted as vanished), and
//! replicas. AOF commands are not replayed:
//! for AOF inputs (and JSONL files with command lines) only the keys of the RDB part (preamble
//! or base) that no later command mentions are compared, and the report says so. Keys whose
//! TTL has run out by the time they
//! are compared are counted as expired, never as differences.

mod check;
mod chunk;
mod route;
pub mod snapshot;
mod verifier;

use std::time::Instant;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::input::{Event, Input, Kind};
use crate::job::Common;
use crate::net::{Conn, RedisUrl};
use crate::progress::Progress;
use crate::rdb::Record;
use crate::time::now_ms;
use check::*;
use chunk::*;
use route::Router;
use verifier::*;

/// What to compare against, and how.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The target.
    pub target: RedisUrl,
    /// Allowed TTL difference, ms.
    pub ttl_tolerance_ms: i64,
    /// Differences listed in the report (the rest are only counted).
    pub max_diffs: usize,
    /// `--via`: a snapshot of the target first, or key by key only.
    pub via: snapshot::Via,
    /// How long the target may take to start sending its snapshot (`--save-timeout`).
    pub save_within: std::time::Duration,
}

/// One difference between source and target.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    /// Source db.
    pub db: u64,
    /// Source key, printable (non-printable bytes as `\xNN`).
    pub key: String,
    /// Target db.
    pub target_db: u64,
    /// Target key, printable.
    pub target_key: String,
    /// What kind of difference.
    pub kind: DiffKind,
    /// What differs (for values: the first differing element).
    pub detail: String,
}

/// The kind of a [`Difference`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiffKind {
    /// The key is not on the target.
    Missing,
    /// It has another type there.
    Type,
    /// Its value differs.
    Value,
    /// Its TTL differs by more than the tolerance.
    Ttl,
}

impl std::fmt::Display for DiffKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DiffKind::Missing => "missing",
            DiffKind::Type => "type",
            DiffKind::Value => "value",
            DiffKind::Ttl => "ttl",
        })
    }
}

/// What `verify` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// Input name.
    pub input: String,
    /// Target URL, password redacted.
    pub target: String,
    /// Target server version.
    pub target_version: String,
    /// How the target was read: `snapshot` (one RDB from the target, compared by digest) or
    /// `commands` (key by key).
    pub via: snapshot::Via,
    /// Why no snapshot was used, or that it differed (then keys were compared one by one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// Keys compared.
    pub keys_checked: u64,
    /// Keys with at least one difference.
    pub keys_differing: u64,
    /// Keys missing on the target.
    pub missing: u64,
    /// Keys of another type on the target.
    pub type_diffs: u64,
    /// Keys whose value differs.
    pub value_diffs: u64,
    /// Keys whose TTL differs by more than the tolerance.
    pub ttl_diffs: u64,
    /// Keys whose TTL had run out: not compared.
    pub expired_skipped: u64,
    /// Module keys: only presence and type were compared.
    pub modules_type_only: u64,
    /// Hashes whose field TTLs were not compared (target older than 7.4).
    pub field_ttls_unchecked: u64,
    /// AOF commands in the input (not replayed, not verified).
    pub aof_commands: u64,
    /// RDB-part keys not compared because an AOF command mentions them.
    pub aof_keys_skipped: u64,
    /// Cluster `MOVED` and `ASK` redirections followed (the key was read again there).
    pub redirects: u64,
    /// Live source: its server version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_version: Option<String>,
    /// Live source: keys `SCAN` listed that were gone when read (deleted or expired since):
    /// not compared.
    pub source_vanished: u64,
    /// Live Cluster source: keys read again on another node after `MOVED` / `ASK` (their
    /// slot moved after `SCAN`).
    pub source_redirects: u64,
    /// The listed differences (at most `--max-diffs`).
    pub differences: Vec<Difference>,
    /// Differences found but not listed.
    pub more_differences: u64,
    /// Seconds taken.
    pub elapsed_s: f64,
    /// Caveats about what was not compared.
    pub notes: Vec<String>,
}

impl VerifyReport {
    /// Whether source and target agree on everything compared.
    pub fn identical(&self) -> bool {
        self.keys_differing == 0
    }

    /// Human-readable report: the differences, then a summary line.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for d in &self.differences {
            let target = if d.db != d.target_db || d.key != d.target_key {
                format!(" (target db{} {})", d.target_db, d.target_key)
            } else {
                String::new()
            };
            s += &format!("db{} {}{target}: {}", d.db, d.key, d.kind);
            if !d.detail.is_empty() {
                s += &format!(": {}", d.detail);
            }
            s.push('\n');
        }
        if self.more_differences > 0 {
            s += &format!("... and {} more differences\n", self.more_differences);
        }
        for n in &self.notes {
            s += &format!("note: {n}\n");
        }
        if let Some(n) = &self.snapshot {
            s += &format!("note: no snapshot comparison: {n}\n");
        }
        s += &format!(
            "{}: {} against {} (redis {}): {} keys checked, {} differing ({} missing, {} type, {} value, {} ttl), {} expired skipped, {:.3} s\n",
            if self.identical() {
                "IDENTICAL"
            } else {
                "DIFFERENT"
            },
            self.input,
            self.target,
            self.target_version,
            self.keys_checked,
            self.keys_differing,
            self.missing,
            self.type_diffs,
            self.value_diffs,
            self.ttl_diffs,
            self.expired_skipped,
            self.elapsed_s
        );
        s
    }
}

/// Connect to the target and open a verifier for the source named `name`.
pub(crate) fn open_verifier<'o>(name: &str, opts: &'o VerifyOptions) -> Result<Verifier<'o>> {
    let mut conn = Conn::open(&opts.target)?;
    if let Some(why) = crate::job::changes::stranded(&mut conn)? {
        return Err(Error::target(
            opts.target.redacted(),
            format!(
                "{why}: run `rdbferry recover --to {}` first",
                opts.target.redacted()
            ),
        ));
    }
    let caps = conn.version()?;
    let target = opts.target.redacted();
    let rep = VerifyReport {
        input: name.to_string(),
        target: target.clone(),
        target_version: caps.to_string(),
        via: snapshot::Via::Commands,
        ..Default::default()
    };
    // A Cluster is detected, never asked: one lane per master then.
    let (lanes, router) = if route::is_cluster(&mut conn)? {
        let (lanes, router) = Router::open(&opts.target)?;
        (lanes, Some(router))
    } else {
        (vec![Lane::new(conn)], None)
    };
    Ok(Verifier {
        lanes,
        router,
        caps,
        target,
        opts,
        name: name.to_string(),
        rep,
        touched: None,
        retry: Vec::new(),
        type_lookups: Vec::new(),
    })
}

/// Compare what is still in flight, then write the report's notes.
pub(crate) fn finish(mut ver: Verifier<'_>, start: Instant) -> Result<VerifyReport> {
    ver.drain()?;
    ver.resolve_types()?;
    let mut rep = ver.rep;
    if rep.aof_commands > 0 {
        rep.notes.push(format!(
            "{} AOF commands were not replayed or verified; {} RDB-part keys they mention were skipped",
            rep.aof_commands, rep.aof_keys_skipped
        ));
    }
    if rep.modules_type_only > 0 {
        rep.notes.push(format!(
            "{} module keys: only presence and type compared",
            rep.modules_type_only
        ));
    }
    if rep.field_ttls_unchecked > 0 {
        rep.notes.push(format!(
            "{} hashes with field TTLs: field TTLs not compared (target older than 7.4)",
            rep.field_ttls_unchecked
        ));
    }
    if rep.source_vanished > 0 {
        rep.notes.push(format!(
            "{} keys listed by SCAN were gone from the source when read (deleted or expired since): not compared",
            rep.source_vanished
        ));
    }
    rep.elapsed_s = start.elapsed().as_secs_f64();
    Ok(rep)
}

/// Compare `input` with the target in `opts`. Differences are in the report, not errors; an
/// error is a failure to read the input or to talk to the target.
///
/// A `redis://` or `rediss://` input is a live source, read by [`verify_live`] (with the
/// default TLS settings and no password from the environment: build the URL with
/// [`RedisUrl::parse_as`] and call [`verify_live`] for more).
pub fn verify(input_name: &str, common: &Common, opts: &VerifyOptions) -> Result<VerifyReport> {
    if input_name.starts_with("redis://") || input_name.starts_with("rediss://") {
        let src = RedisUrl::parse_as(input_name, None, crate::net::url::Role::Source)?;
        return verify_live(&src, common, opts);
    }
    let start = Instant::now();
    let input = Input::open(input_name)?;
    let mut snapshot_note = None;
    if opts.via != snapshot::Via::Commands {
        let compared = snapshot::compare(&input, common, opts);
        // Interrupted: the run stops (exit 130), it does not go on key by key.
        common.cancel.check()?;
        match compared {
            snapshot::Compared::Same(src) => {
                let mut rep = open_verifier(input_name, opts)?.rep;
                rep.via = snapshot::Via::Snapshot;
                rep.keys_checked = src.keys;
                rep.expired_skipped = src.expired;
                rep.elapsed_s = start.elapsed().as_secs_f64();
                return Ok(rep);
            }
            snapshot::Compared::Unavailable(w) if opts.via == snapshot::Via::Snapshot => {
                return Err(Error::Usage(format!("--via snapshot: {w}")));
            }
            snapshot::Compared::Differs(w) | snapshot::Compared::Unavailable(w) => {
                snapshot_note = Some(w);
            }
        }
    }
    let mut ver = open_verifier(input_name, opts)?;
    ver.rep.snapshot = snapshot_note;
    // AOF inputs: first learn which keys the commands touch, so that only the RDB part's
    // untouched keys are compared (replaying the commands is not done here).
    if matches!(input.kind, Kind::Aof | Kind::AofDir | Kind::Jsonl) {
        let mut t = Touched::default();
        input.walk(&common.read, &mut |ev, _| {
            common.cancel.check()?;
            if let Event::Command { args, .. } = ev {
                t.add(args);
            }
            Ok(())
        })?;
        ver.touched = Some(t);
    }
    let stdin = input.kind == Kind::Stdin;
    let mut progress = Progress::new(input.size, input_name, common.quiet);
    let walked = input.walk(&common.read, &mut |ev, pos| {
        common.cancel.check()?;
        match ev {
            Event::Rdb(Record::Key(k)) => {
                ver.key(k, common)?;
                progress.tick(pos, 1);
            }
            Event::Command { .. } => {
                if stdin {
                    return Err(Error::Input {
                        path: "<stdin>".into(),
                        msg: "verify cannot compare an AOF read from stdin; give its path".into(),
                    });
                }
                ver.rep.aof_commands += 1;
            }
            _ => {}
        }
        Ok(())
    });
    progress.finish();
    walked?;
    finish(ver, start)
}

/// Compare a live source (a standalone server, or every master of a Cluster) with the target
/// in `opts`: every key `SCAN` finds there, read with `DUMP` and its TTL and decoded like a
/// record of a file (see `input::live`), then compared as [`verify`] compares a file's keys. Keys
/// gone from the source by the time they are read are counted (`source_vanished`), not
/// reported.
pub fn verify_live(
    source: &RedisUrl,
    common: &Common,
    opts: &VerifyOptions,
) -> Result<VerifyReport> {
    let start = Instant::now();
    let mut src = crate::input::live::LiveSource::open(source)?;
    let mut ver = open_verifier(&src.name, opts)?;
    ver.rep.source_version = Some(src.version.clone());
    let mut progress = Progress::new(None, &src.name, common.quiet);
    let how = crate::input::live::Reading {
        filter: &common.map.filter,
        cancel: &common.cancel,
        ignore_checksum: common.read.ignore_checksum,
    };
    let walked = src.walk(how, None, &mut |rec, bytes| {
        ver.key(rec, common)?;
        progress.tick(bytes, 1);
        Ok(())
    });
    progress.finish();
    let scanned = walked?;
    ver.rep.source_vanished = scanned.vanished;
    ver.rep.source_redirects = scanned.redirects;
    finish(ver, start)
}
