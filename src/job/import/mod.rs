//! `import`: replay RDB and AOF inputs into a live standalone Redis or Redis Cluster.
//!
//! First choice, for an empty standalone target and one RDB input: the full sync of
//! `job::fullsync` (the target loads the file itself). Everything below is the command path,
//! taken when that is ruled out (`--via commands`, or its preconditions) or given up.
//!
//! Pipeline: each input is walked with [`batch::walk`]; rayon workers turn every key into a
//! [`Unit`] (a `RESTORE`, or the commands of the rewrite path) in parallel, and the units go,
//! in file order, to the pipelined [`Writer`] (`sink::redis`). AOF commands are sent in order
//! on one connection, after everything queued before them has been acknowledged.
//!
//! How a key is written:
//! - restore: `RESTORE key ttl payload [REPLACE] ABSTTL [IDLETIME s | FREQ f]`; the payload is
//!   the value's raw bytes with a footer stamped with the lower of the file's and the target's
//!   RDB version (FORMATS §9: a plain string from a v10 file restores into 6.2 with footer 9).
//! - rewrite (`--mode rewrite`, encodings the target cannot load, payloads over
//!   `proto-max-bulk-len`): the key is built under a temporary name and renamed into place:
//!   `MULTI, DEL tmp, <commands on tmp>, [PEXPIREAT tmp], RENAME tmp key | RENAMENX tmp key +
//!   DEL tmp, EXEC`. A key is therefore never visible half-built and never doubled when the
//!   unit is sent again; with `--on-conflict fail|skip` a 0 from `RENAMENX` is the conflict.
//!   Strings longer than the chunk size go as `SET` + `APPEND`s. Values whose input record
//!   exceeds [`MULTI_MAX`] are built without MULTI (the server would queue them whole): the
//!   temporary key is deleted first, so a retry starts clean, and only the final rename makes
//!   the key visible.
//!
//! Module values go as RESTORE payloads (the rewrite path wraps the same RESTORE). The
//! precheck asks the target's `MODULE LIST` (every master of a Cluster); a key whose module
//! the target surely lacks is refused before sending, naming its module type, and a "Bad
//! data format" reply to a module value names the type too (`job::modules` says how types are
//! matched to modules, and when it cannot tell).
//!
//! AOF commands go in groups of up to 256 inside one `MULTI`/`EXEC` with a marker, parts of
//! big keys likewise, so the writer can send them again after a fault without doubling them
//! (`sink::writer` says how each kind of unit survives a dropped connection or a restart).
//!
//! JSONL input (what `convert --format jsonl` writes) arrives as synthetic key records
//! (`input::jsonl`): auto mode rebuilds them by the rewrite path, since their payload is no
//! bytes a Redis wrote; `--mode restore` sends that payload all the same. Function and command
//! lines go as functions and AOF commands do.
//!
//! A Cluster target (detected) gets each unit at its slot's master (`sink::writer`).
//!
//! TLS targets (`rediss://`) need nothing here: the connections come from `net/`.
//!
//! Not here yet: renaming keys inside AOF commands (refused).

mod commands;
mod encode;
pub mod fullsync;
mod groups;
pub mod loadable;
pub mod modules;
mod options;
mod parts;
mod precheck;
mod report;
mod scan;

pub use encode::tmp_key;
pub use fullsync::Via;
pub use groups::AOF_MARKER;
pub use options::{
    DEFAULT_STREAM_MIN, ImportOptions, MULTI_MAX, Mode, OnConflict, PART_BYTES, min_rdb_version,
};
pub use precheck::{Check, Precheck, Status, precheck, precheck_relay, precheck_stream};
pub use report::ImportReport;

use std::time::Instant;

use self::commands::import_one;
use self::encode::*;
use self::groups::*;
use crate::error::{Error, Result};
use crate::input::Input;
use crate::job::Common;
use crate::net::cluster::SlotMap;
use crate::sink::writer::{WriteStats, Writer, WriterOptions};
use crate::time::now_ms;

/// Import every input into the target. `pre` is the precheck already run (its failures
/// are the caller's to judge, with `--force`).
pub fn import(
    inputs: &[String],
    common: &Common,
    opts: &ImportOptions,
    pre: &Precheck,
) -> Result<ImportReport> {
    let start = Instant::now();
    let mut declined = None;
    if opts.via != Via::Commands {
        let planned = match &pre.full_sync {
            Ok(plan) => fullsync::import(inputs, common, opts, plan, &pre.scan, start)?,
            Err(why) => Err(why.clone()),
        };
        match planned {
            Ok(rep) => return Ok(rep),
            Err(why) if opts.via == Via::FullSync => {
                return Err(Error::target(
                    opts.to.redacted(),
                    format!("--via full-sync: {why}"),
                ));
            }
            Err(why) => declined = Some(why),
        }
    }
    let open = inputs.iter().map(|name| Input::open(name));
    by_commands(open, common, opts, pre, declined, start)
}

/// Import one input already opened (a stream: [`Input::from_reader`]) by commands, as
/// [`import`] does once the full sync is ruled out. `pre` is the precheck already run.
pub fn import_input(
    input: Input,
    common: &Common,
    opts: &ImportOptions,
    pre: &Precheck,
) -> Result<ImportReport> {
    let start = Instant::now();
    by_commands(std::iter::once(Ok(input)), common, opts, pre, None, start)
}

/// The command path over `inputs` (each opened only when its turn comes).
fn by_commands(
    inputs: impl Iterator<Item = Result<Input>>,
    common: &Common,
    opts: &ImportOptions,
    pre: &Precheck,
    declined: Option<String>,
    start: Instant,
) -> Result<ImportReport> {
    let info = pre.info.clone().unwrap_or_default();
    // A Cluster: the writer sends each key to its slot's master and follows MOVED/ASK.
    let map = if info.cluster && !opts.dry_run {
        Some(SlotMap::discover(&opts.to)?)
    } else {
        None
    };
    let proto_max = info.proto_max_bulk_len.unwrap_or(512 << 20);
    let ctx = Ctx {
        input: String::new(),
        common,
        opts,
        target_rdb: info.rdb_version,
        proto_max,
        // Chunks well under the limit, so SET/APPEND commands always fit.
        chunk: (proto_max / 2).clamp(1, 8 << 20) as usize,
        now: now_ms(),
        set_pxat: info.redis_version.has_pxat(),
        run: import_id(),
        cluster: info.cluster,
        function_slots: match &map {
            Some(m) => (0..m.masters().len())
                .filter_map(|i| (0..crate::keyslot::SLOTS).find(|&s| m.owner(s) == Some(i)))
                .map(Some)
                .collect(),
            None => vec![None],
        },
        modules: &pre.modules,
    };
    let writer = if opts.dry_run {
        None
    } else {
        Some(Writer::open(
            &opts.to,
            WriterOptions {
                connections: opts.connections,
                pipeline: opts.pipeline,
                conflict: opts.on_conflict,
                stop_on_error: opts.stop_on_error,
                retry_for: opts.retry_for,
            },
            map.clone(),
        )?)
    };
    let mut rep = ImportReport {
        target: opts.to.redacted(),
        via: Via::Commands,
        full_sync_declined: declined,
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let mut local = WriteStats::default();
    let mut res = Ok(());
    for input in inputs {
        res = input.and_then(|input| {
            import_one(input, &ctx, writer.as_ref(), &info, &mut rep, &mut local)
        });
        if res.is_err() {
            break;
        }
    }
    let (stats, fatal) = match writer {
        Some(w) => w.finish(),
        None => (
            WriteStats {
                written: rep.restored + rep.rewritten + rep.commands + rep.functions,
                ..Default::default()
            },
            None,
        ),
    };
    rep.written = stats.written;
    rep.resent = stats.resent;
    rep.warnings = stats.warnings;
    rep.reconnects = stats.reconnects;
    rep.conflicts = stats.conflicts;
    rep.errors = stats.errors + local.errors;
    rep.error_messages = local.messages;
    rep.error_messages.extend(stats.messages);
    rep.elapsed_s = start.elapsed().as_secs_f64();
    if let Some(e) = fatal {
        return Err(e);
    }
    match res {
        // A stop after a refused key is reported through the counts and messages.
        Err(Error::Stopped) if rep.errors > 0 => Ok(rep),
        Err(e) => Err(e),
        Ok(()) => Ok(rep),
    }
}
