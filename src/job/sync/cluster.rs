//! `sync` from a Redis Cluster: every master is a source of its own.
//!
//! A master's replication stream holds only its own slots, so each master found in the
//! source's slot map is synced by its own [`super::sync`], all in parallel into the one
//! target (standalone, db 0 mapped as `--db-map` says, or a Cluster: the applier routes by
//! key), by commands (the full sync loads one snapshot into an empty target, not several).
//! The target's precheck is made once, by the first master that takes a snapshot,
//! since the others' snapshots then land in a target it is already filling; masters that
//! continue from their checkpoints need none.
//!
//! Each master is named by its slots (`cluster slots 0-5460`), not its address: in its
//! checkpoint file (`FILE.slots-0-5460`, one per master), its checkpoint key (`KEY:0-5460`
//! with `--exactly-once`) and its messages. After a failover its replica serves the same slots
//! under the same replication id (PSYNC2), so a restart continues from the same checkpoint.
//!
//! The first error stops the other masters (they drain and write their checkpoints, as on a
//! signal), and is the run's error. Not handled: slots moving between masters during the run
//! (a resharding: a key's `RESTORE` on one master's stream and its `DEL` on another's are not
//! ordered); `--metrics-addr` serves the first master's figures only.

use std::path::{Path, PathBuf};

use super::{SharedPrecheck, SyncOptions, SyncReport, sync};
use crate::error::{Error, Result};
use crate::job::Common;
use crate::job::import::Via;
use crate::keyslot::SLOTS;
use crate::net::cluster::{SlotMap, show_ranges};

/// One master of the source: its URL's options and its slots.
struct Master {
    opts: SyncOptions,
    ranges: Vec<(u16, u16)>,
}

/// Sync every master of `map` (the source's slot map) into the target; see the module doc.
pub fn sync_cluster(common: &Common, opts: &SyncOptions, map: SlotMap) -> Result<SyncReport> {
    if !map.uncovered().is_empty() {
        return Err(Error::target(
            opts.from.redacted(),
            format!(
                "the source Cluster does not serve slots {}: sync it once every slot is served",
                show_ranges(&map.uncovered())
            ),
        ));
    }
    let masters = masters(opts, &map, &SharedPrecheck::default());
    if !common.quiet {
        for m in &masters {
            eprintln!(
                "sync: master {} serves slots {}",
                m.opts.from.addr(),
                show_ranges(&m.ranges)
            );
        }
    }
    let results: Vec<Result<SyncReport>> = std::thread::scope(|s| {
        let runs: Vec<_> = masters
            .iter()
            .map(|m| {
                s.spawn(move || {
                    let r = sync(common, &m.opts);
                    if r.is_err() {
                        // The others drain and checkpoint, as on a signal.
                        common.cancel.cancel();
                    }
                    r
                })
            })
            .collect();
        runs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Internal("a master's sync panicked".into())))
            })
            .collect()
    });
    combine(opts, results)
}

/// The options of each master's sync, in the order of the slot map.
fn masters(opts: &SyncOptions, map: &SlotMap, pre: &SharedPrecheck) -> Vec<Master> {
    let mut ranges: Vec<Vec<(u16, u16)>> = vec![Vec::new(); map.masters().len()];
    for slot in 0..SLOTS {
        let Some(i) = map.owner(slot) else { continue };
        match ranges[i].last_mut() {
            Some((_, hi)) if *hi + 1 == slot => *hi = slot,
            _ => ranges[i].push((slot, slot)),
        }
    }
    map.masters()
        .iter()
        .zip(ranges)
        .enumerate()
        .filter(|(_, (_, r))| !r.is_empty())
        .map(|(i, (node, ranges))| {
            let shown = show_ranges(&ranges);
            let slots = shown.replace(", ", "_");
            let mut o = opts.clone();
            o.from = node.url(&opts.from);
            o.name = Some(format!("cluster slots {shown}"));
            o.precheck = Some(pre.clone());
            // Several snapshots into one target: none can be its full sync.
            o.import.via = Via::Commands;
            o.checkpoint = opts.checkpoint.as_deref().map(|p| suffixed(p, &slots));
            o.checkpoint_key = opts.checkpoint_key.as_ref().map(|k| {
                let mut k = k.clone();
                k.extend_from_slice(format!(":{slots}").as_bytes());
                k
            });
            if i > 0 {
                o.metrics_addr = None;
            }
            Master { opts: o, ranges }
        })
        .collect()
}

/// `FILE.slots-RANGES`, next to `FILE`.
fn suffixed(path: &Path, slots: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".slots-{slots}"));
    path.with_file_name(name)
}

/// One report for the run: the masters' counters added up, each master's report in
/// `masters`; the first error, if any master failed.
fn combine(opts: &SyncOptions, results: Vec<Result<SyncReport>>) -> Result<SyncReport> {
    let mut all = SyncReport {
        source: opts.from.redacted(),
        target: opts.import.to.redacted(),
        ..Default::default()
    };
    let mut first_err = None;
    for r in results {
        match r {
            Ok(r) => {
                all.full_syncs += r.full_syncs;
                all.continues += r.continues;
                all.filtered += r.filtered;
                all.lag_bytes += r.lag_bytes;
                all.lag_s = all.lag_s.max(r.lag_s);
                all.elapsed_s = all.elapsed_s.max(r.elapsed_s);
                all.apply.applied += r.apply.applied;
                all.apply.skipped += r.apply.skipped;
                all.apply.batches += r.apply.batches;
                all.apply.errors += r.apply.errors;
                all.apply.messages.extend(r.apply.messages.iter().cloned());
                all.notes
                    .extend(r.notes.iter().map(|n| format!("{}: {n}", r.source)));
                if all.stopped.is_empty() || r.stopped == "signal" {
                    all.stopped = r.stopped.clone();
                }
                all.masters.push(r);
            }
            Err(e) => {
                // A stop the first error caused is no error of its own.
                if first_err.is_none() && !matches!(e, Error::Cancelled) {
                    first_err = Some(e);
                }
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(all),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_file_per_master_next_to_the_one_given() {
        let p = suffixed(Path::new("/var/lib/ck.json"), "0-5460");
        assert_eq!(p, Path::new("/var/lib/ck.json.slots-0-5460"));
        let p = suffixed(Path::new("ck"), "0-10_20-30");
        assert_eq!(p, Path::new("ck.slots-0-10_20-30"));
    }
}
