//! `sync`'s full sync: the snapshot of a live source, relayed to an empty target as it
//! arrives, which loads it as rdbferry's replica (the same claim, listener, load wait and
//! detach as the file's full sync in the parent module).
//!
//! Why: a target loads a full sync several times faster than it executes a `RESTORE` per
//! key, so an empty standalone target copies a live source about as fast as a native replica
//! of it would (`scripts/bench-sync.sh`). The bytes are passed on as they come from the
//! replica link: no temporary file, no decoding.
//!
//! Why the bytes need no check of their own, where a file's records each get one
//! (`loadable`): they are a live Redis's own snapshot, which a replica of it loads as they
//! are, and the target's loader checks their CRC-64 at the end. What a loader of another
//! server could still stop on is ruled out before the claim ([`decide`]): an RDB version the
//! target does not know (the source's version, then the payload's header), module data (a
//! source with any module loaded), a db number over the target's `databases` (the loader
//! exits on it: the source's `databases` must not exceed the target's). Filters, renames and
//! db mapping rule it out too: the snapshot goes as it is.
//!
//! Every way out puts the target back (the parent module's `Claimed`): declined before the
//! first byte, the caller takes the command path over the same bytes; abandoned after it (a
//! link cut, a signal), the target is detached and checked empty, and the caller may take
//! a new snapshot by commands.

use std::io::{Read, Write};
use std::time::Instant;

use super::{
    Claimed, Plan, Via, connect, give_up, target_facts, target_ruled_out, wait_loaded_with,
};
use crate::error::Result;
use crate::job::Common;
use crate::job::import::options::ImportOptions;
use crate::job::import::report::ImportReport;
use crate::job::import::scan::Scan;
use crate::net::{Conn, RedisUrl, ServerInfo};
use crate::progress::Progress;
use crate::repl::master::{Linked, Transfer};
use crate::resp::Reply;
use crate::transform::KeyMap;

/// What [`decide`] needs to know of the source, asked before the snapshot.
#[derive(Debug, Clone)]
pub struct SourceFacts {
    /// The RDB version its snapshot has.
    pub rdb_version: u32,
    /// `CONFIG GET databases` (`None`: refused).
    pub databases: Option<u64>,
    /// `MODULE LIST` (`None`: refused).
    pub modules: Option<Vec<String>>,
}

impl SourceFacts {
    /// Ask the source.
    pub fn query(from: &RedisUrl) -> Result<SourceFacts> {
        let mut c = Conn::open(from)?;
        let info = ServerInfo::query(&mut c)?;
        let databases = c.config_get("databases")?.and_then(|v| v.parse().ok());
        let mut mods = super::super::modules::TargetModules::default();
        mods.query(&mut c, &from.addr())?;
        let modules = match mods.refused().is_empty() {
            true => Some(mods.loaded().into_iter().map(String::from).collect()),
            false => None,
        };
        Ok(SourceFacts {
            rdb_version: info.rdb_version,
            databases,
            modules,
        })
    }
}

/// Whether the source's snapshot may be relayed to the target (see the module doc), decided
/// once, by the precheck; `Ok(Err(why))`: ruled out.
pub fn decide(
    opts: &ImportOptions,
    map: &KeyMap,
    source: &SourceFacts,
    info: &ServerInfo,
    precheck_failed: bool,
    conn: &mut Conn,
) -> Result<std::result::Result<Plan, String>> {
    if let Some(why) = target_ruled_out(opts, info, precheck_failed) {
        return Ok(Err(why.into()));
    }
    let why = if !map.is_identity() {
        "filters, renames or db mapping (the snapshot goes as it is)".to_string()
    } else if source.rdb_version > info.rdb_version {
        format!(
            "the target (RDB {}) cannot load the source's RDB {}",
            info.rdb_version, source.rdb_version
        )
    } else if let Some(why) = modules_rule_out(source) {
        why
    } else {
        let theirs = conn.config_get("databases")?.and_then(|v| v.parse().ok());
        match (source.databases, theirs) {
            (Some(s), Some(t)) if s <= t => return target_facts(conn, info, &Scan::default()),
            (Some(s), Some(t)) => format!("the source has {s} databases, the target {t}"),
            _ => "CONFIG GET databases refused (on the source or the target)".into(),
        }
    };
    Ok(Err(why))
}

fn modules_rule_out(source: &SourceFacts) -> Option<String> {
    match &source.modules {
        None => Some("MODULE LIST refused by the source (module data cannot be ruled out)".into()),
        Some(m) if !m.is_empty() => Some(format!("the source has modules ({})", m.join(", "))),
        Some(_) => None,
    }
}

/// Whether a payload starting with `head` (its first 9 bytes: `REDIS` and the version) is one
/// the target loads.
fn header_fits(head: &[u8], target_rdb: u32) -> std::result::Result<(), String> {
    let version = head
        .strip_prefix(b"REDIS")
        .filter(|v| v.len() == 4 && v.iter().all(u8::is_ascii_digit))
        .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u32>().ok());
    match version {
        Some(v) if v <= target_rdb => Ok(()),
        Some(v) => Err(format!(
            "the target (RDB {target_rdb}) cannot load the source's RDB {v}"
        )),
        None => Err(format!(
            "the snapshot starts with {:?}, not a Redis RDB header",
            String::from_utf8_lossy(head)
        )),
    }
}

/// What became of a relay.
#[derive(Debug)]
pub enum Relayed {
    /// The target loaded the snapshot and is detached.
    Done(ImportReport),
    /// Not done, and nothing read from the source nor written to the target (a header the
    /// target does not load, the target no longer empty, or not connecting to us): why.
    Declined(String),
    /// Given up after bytes were relayed (the source's link cut, the target's refused): the
    /// target is put back and empty again; the source's payload is partly read.
    Abandoned(String),
}

/// The snapshot `src` of a source (whose first bytes are `head`, which it still yields: only
/// looked at here) relayed to the target `plan` claims, until `src` ends; `size` is its
/// length when known, for the progress bar. `keepalive` is called every few milliseconds
/// while the target loads (the source drops a replica silent for `repl-timeout`). `Err`: the
/// target could not be put back, or lost while loading, or a signal came.
pub fn relay(
    common: &Common,
    opts: &ImportOptions,
    plan: &Plan,
    (head, src): (&[u8], &mut dyn Read),
    size: Option<u64>,
    keepalive: &mut dyn FnMut(),
) -> Result<Relayed> {
    let start = Instant::now();
    if let Err(why) = header_fits(head, plan.target_rdb) {
        return Ok(Relayed::Declined(why));
    }
    let (mut claimed, transfer) = match connect(common, opts, plan)? {
        Ok(x) => x,
        Err(why) => return Ok(Relayed::Declined(why)),
    };
    let (linked, bytes) = match pump(src, transfer, common, size) {
        Ok(x) => x,
        Err(why) => return put_back(&mut claimed, common, why).map(Relayed::Abandoned),
    };
    let loaded = wait_loaded_with(&mut claimed.ctl, &linked, keepalive);
    let released = match loaded {
        Ok(()) => claimed.release(),
        Err(e) => Err(claimed.release_after(e)),
    };
    drop(linked);
    released?;
    let keys: u64 = claimed.ctl.keyspace()?.values().sum();
    let functions = count_functions(&mut claimed.ctl)?;
    common.cancel.check()?;
    Ok(Relayed::Done(ImportReport {
        target: opts.to.redacted(),
        via: Via::FullSync,
        synced: keys,
        keys_read: keys,
        written: keys + functions,
        functions,
        bytes,
        elapsed_s: start.elapsed().as_secs_f64(),
        ..Default::default()
    }))
}

/// Detach a target that got no end mark and check it empty (the parent's `give_up`): why,
/// or the error of a target that could not be put back (or of a signal).
fn put_back(claimed: &mut Claimed, common: &Common, why: String) -> Result<String> {
    Ok(give_up(claimed, common, why)?.err().unwrap_or_default())
}

/// Pass `src` on to the replica, then the end mark: the link while it loads, and the bytes
/// sent. `Err(why)`: abandoned before the end mark.
fn pump(
    src: &mut dyn Read,
    mut t: Transfer,
    common: &Common,
    size: Option<u64>,
) -> std::result::Result<(Linked, u64), String> {
    let peer = t.peer();
    let mut buf = vec![0u8; 1 << 20];
    let mut progress = Progress::new(size, "snapshot", common.quiet);
    let mut sent = 0u64;
    loop {
        if common.cancel.is_cancelled() {
            return Err("interrupted".into());
        }
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("the source's snapshot: {e}")),
        };
        t.write_all(&buf[..n])
            .map_err(|e| format!("send to {peer}: {e}"))?;
        sent += n as u64;
        progress.tick(sent, 0);
    }
    progress.finish();
    let linked = t.end().map_err(|e| e.to_string())?;
    Ok((linked, sent))
}

/// The function libraries the target loaded with the snapshot (0 before 7.0).
fn count_functions(ctl: &mut Conn) -> Result<u64> {
    Ok(match ctl.call(&[b"FUNCTION", b"LIST"])? {
        Reply::Array(a) => a.len() as u64,
        _ => 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_the_target_loads() {
        assert!(header_fits(b"REDIS0010", 10).is_ok());
        assert!(header_fits(b"REDIS0009", 10).is_ok());
        assert!(
            header_fits(b"REDIS0011", 10)
                .unwrap_err()
                .contains("RDB 11")
        );
        assert!(header_fits(b"REDIS00x1", 10).is_err());
        assert!(header_fits(b"REDIS", 10).is_err());
        assert!(header_fits(b"VALKEY080", 11).is_err());
    }
}
