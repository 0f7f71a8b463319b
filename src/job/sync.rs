//! `sync`: copy a live source into a target as a replica of the source would, then (with
//! `--follow`) keep the target in sync with the source's replication stream, resumably.
//!
//! Where it sits: between the replica client (`repl::replica`: the handshake, `PSYNC`, the
//! RDB payload, then the command stream with its offsets and ACKs) and the two writers of
//! the job layer: `import`'s command path for the snapshot, and the [`Applier`] that `follow`
//! uses for every command after it (batches, checkpoint, at least once or `--exactly-once`).
//!
//! The snapshot goes one of two ways, never through a temporary file (`--spool DIR` keeps a
//! copy, written as the bytes pass and renamed into place once the RDB is whole):
//! - into an empty standalone target, when `import`'s full sync may be used (`--via
//!   auto|full-sync`; no filters, renames or db mapping; `fullsync::relay` decides), the
//!   source's RDB bytes are relayed as they arrive to the target, which loads them as
//!   rdbferry's replica, as fast as a native replica of the source would; it is claimed,
//!   put back and recoverable as `import`'s full sync is. Declined before the first byte
//!   (the target no longer empty, not connecting), the same bytes go by commands; abandoned
//!   after it (a link cut), the target is put back empty and a new snapshot goes by commands.
//! - otherwise by commands: streamed into the import ([`Input::from_reader`]), whose records
//!   are decoded by the streaming RDB reader, which holds one whole record, a large one in an
//!   unlinked temporary file ([`crate::rdb::spill`]): a value of several hundred MB costs page
//!   cache, not heap.
//!
//! The position is the source's: (replication id, offset applied, db selected there):
//! written after the target acknowledged, to `--checkpoint FILE` (atomically) and, with
//! `--exactly-once`, into the target's checkpoint key inside each batch's transaction. A
//! dropped link or a restart continues with `PSYNC <replid> <offset + 1>`; a source that
//! answers `+FULLRESYNC` instead (its backlog no longer holds the offset, or its replication
//! id changed) is an error unless `--resync-on-loss`, which takes a full copy again over the
//! target (`--on-conflict replace`; keys deleted on the source meanwhile stay).
//!
//! Stops: without `--follow`, once the snapshot is applied; with it, on SIGINT/SIGTERM
//! (drain what was received, write the checkpoint, exit 0).
//!
//! A Cluster source is synced one master at a time in parallel, each as a source of its own
//! ([`cluster`]). A source that refuses replication (`PSYNC` and `SYNC` renamed or
//! disabled) is copied once with `SCAN` + `DUMP` instead (`sync::scan`: `--via scan`, or
//! `--via auto` without `--follow`, which says so): no snapshot, and nothing to follow; a
//! Cluster source is scanned on every master.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub mod cluster;
mod scan;

use super::Common;
use super::follow::{
    CheckpointFile, map_entry, read_checkpoint, report_refusal, resume_from, write_checkpoint,
};
use super::import::fullsync::relay::{self, Relayed, SourceFacts};
use super::import::{self, ImportOptions, ImportReport, OnConflict, Via};
use super::metrics::Metrics;
use crate::cancel::Cancel;
use crate::error::{Error, Result};
use crate::input::Input;
use crate::net::cluster::{SlotMap, is_cluster};
use crate::net::{Conn, NetErrorKind, RedisUrl};
use crate::repl::replica::{self, Handshake, Payload, ReplStream, ReplicaOptions, SyncStart};
use crate::sink::applier::{Applier, ApplyOptions, ApplyStats, Entry};
use crate::sink::file::AtomicFile;
use crate::transform::Transaction;

/// Options of `sync`.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// The source (`--from`).
    pub from: RedisUrl,
    /// `--follow`: apply the replication stream after the snapshot, until a signal.
    pub follow: bool,
    /// `--checkpoint FILE`.
    pub checkpoint: Option<PathBuf>,
    /// `--exactly-once`: each batch and its position in one transaction, in this key.
    pub checkpoint_key: Option<Vec<u8>>,
    /// `--metrics-addr`.
    pub metrics_addr: Option<SocketAddr>,
    /// `--spool DIR`: keep a copy of the snapshot there.
    pub spool: Option<PathBuf>,
    /// `--psync-command`.
    pub psync_command: Vec<u8>,
    /// `--save-timeout`: how long the source may take to start sending its snapshot.
    pub save_within: Duration,
    /// `--resync-on-loss`: take a full copy again when the source cannot continue.
    pub resync_on_loss: bool,
    /// `--force`: go on despite a failed precheck.
    pub force: bool,
    /// The source's name in the checkpoint, when not its address (a Cluster master, named by
    /// its slots, so that a failover to its replica continues from the same checkpoint).
    pub name: Option<String>,
    /// A precheck shared with other syncs into the same target (a Cluster source's masters):
    /// made by the first that takes a snapshot, used by the others, whose snapshots land in
    /// a target the first is already filling.
    pub precheck: Option<SharedPrecheck>,
    /// `--via scan`: read the source with `SCAN` + `DUMP` instead of replicating it.
    pub scan: bool,
    /// `--scan-rate`: at most this many keys a second read by a scan.
    pub scan_rate: Option<u64>,
    /// Write options shared with `import` (the snapshot; `--on-error`, `--retry-timeout`).
    pub import: ImportOptions,
}

/// See [`SyncOptions::precheck`].
pub type SharedPrecheck = Arc<Mutex<Option<import::Precheck>>>;

/// A point of the source's replication stream: where to continue from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncPos {
    /// The replication id.
    pub replid: String,
    /// The offset applied.
    pub offset: u64,
    /// The db selected there (a partial resync repeats no `SELECT`).
    pub db: u64,
}

/// What `sync` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncReport {
    /// The source (redacted).
    pub source: String,
    /// The target (redacted).
    pub target: String,
    /// The snapshot's import, when one was taken (the last one, after a resync).
    pub snapshot: Option<ImportReport>,
    /// Full copies taken (`+FULLRESYNC`).
    pub full_syncs: u64,
    /// Partial resyncs (`+CONTINUE`), at start and after a lost link.
    pub continues: u64,
    /// The applier's counters (the stream after the snapshot).
    pub apply: ApplyStats,
    /// Stream commands filtered out.
    pub filtered: u64,
    /// Where it stopped (the checkpoint).
    pub position: Option<SyncPos>,
    /// Bytes the source had sent and were not applied at the last look.
    pub lag_bytes: u64,
    /// How long ago the first byte not applied then had arrived, seconds.
    pub lag_s: f64,
    /// Why it stopped: `snapshot` (no `--follow`), `scan` (a copy by scan), `caught-up` (no
    /// `--follow`, continued from a checkpoint), `signal`.
    pub stopped: String,
    /// What a scan saw (`--via scan`, or `--via auto` when the source refuses replication).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scan: Option<scan::ScanReport>,
    /// Lost links, resyncs, refused commands.
    pub notes: Vec<String>,
    /// Wall time, seconds.
    pub elapsed_s: f64,
    /// A Cluster source: each master's report (the counters above are their sums).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub masters: Vec<SyncReport>,
}

/// The payload being imported, shared with the import's reader so that it can be taken
/// back afterwards (its link carries the command stream), and copied to the spool file.
struct Snapshot {
    /// Its first bytes, read already (to look at the RDB header), handed out first.
    head: Vec<u8>,
    payload: Payload,
    spool: Option<AtomicFile>,
}

/// The import's end of a [`Snapshot`].
struct SnapshotReader(Arc<Mutex<Option<Snapshot>>>);

impl Read for SnapshotReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let mut guard = self
            .0
            .lock()
            .map_err(|_| std::io::Error::other("the snapshot's reader panicked"))?;
        let Some(s) = guard.as_mut() else {
            return Ok(0);
        };
        let n = if s.head.is_empty() {
            s.payload.read(out)?
        } else {
            let n = s.head.len().min(out.len());
            out[..n].copy_from_slice(&s.head[..n]);
            s.head.drain(..n);
            n
        };
        if let Some(f) = &mut s.spool {
            std::io::Write::write_all(f, &out[..n])?;
        }
        Ok(n)
    }
}

/// The one loop of `sync` (see the module doc).
struct Syncer<'a> {
    common: &'a Common,
    opts: &'a SyncOptions,
    applier: Applier,
    metrics: Metrics,
    rep: SyncReport,
    /// Entries since the first snapshot (the applier's order).
    order: u64,
    /// The position after the last entry received (applied or filtered out).
    last: Option<SyncPos>,
    txn: Transaction,
    last_checkpoint: Instant,
    last_send: Instant,
    /// The source's offset at the last look (for the lag).
    received: u64,
    arrivals: Arrivals,
    /// Commands applied at the last status line, and when.
    last_status: (u64, Instant),
}

/// When the stream's bytes arrived (sampled every few milliseconds): how long ago the first
/// byte not yet applied came is the lag in seconds (the replication stream carries no
/// timestamps of the source's own).
#[derive(Default)]
struct Arrivals {
    /// (offset received by then, when), oldest first.
    samples: std::collections::VecDeque<(u64, Instant)>,
}

/// Most samples kept (beyond, the newest one is moved forward: the lag reads a little
/// high rather than memory growing while far behind).
const MAX_SAMPLES: usize = 10_000;

impl Arrivals {
    fn received(&mut self, offset: u64) {
        let full = self.samples.len() >= MAX_SAMPLES;
        match self.samples.back_mut() {
            Some((o, _)) if *o >= offset => {}
            Some((o, t)) if t.elapsed() < Duration::from_millis(10) => *o = offset,
            Some((o, _)) if full => *o = offset,
            _ => self.samples.push_back((offset, Instant::now())),
        }
    }

    /// The lag once `applied` is applied.
    fn lag(&mut self, applied: u64) -> Duration {
        while self.samples.front().is_some_and(|&(o, _)| o <= applied) {
            self.samples.pop_front();
        }
        self.samples
            .front()
            .map_or(Duration::ZERO, |(_, t)| t.elapsed())
    }
}

/// Run `sync`; see the module doc.
pub fn sync(common: &Common, opts: &SyncOptions) -> Result<SyncReport> {
    let start = Instant::now();
    if !opts.scan
        && opts.name.is_none()
        && let Some(map) = cluster_source(&opts.from)?
    {
        return cluster::sync_cluster(common, opts, map);
    }
    let source = opts.name.clone().unwrap_or_else(|| opts.from.addr());
    let apply = ApplyOptions {
        checkpoint_key: opts.checkpoint_key.clone(),
        retry_for: opts.import.retry_for,
        stop_on_error: opts.import.stop_on_error,
        ..ApplyOptions::default()
    };
    // Its own stop token: after a signal, what was received is still drained (a second
    // signal ends the process at once).
    let mut applier = Applier::open(&opts.import.to, apply, Cancel::new())?;
    let from_file = match &opts.checkpoint {
        Some(p) => read_checkpoint(p, &source, "sync")?,
        None => None,
    };
    let resume = resume_from(applier.resume()?, from_file, "sync")?;
    let metrics = Metrics::new();
    if let Some(addr) = opts.metrics_addr {
        metrics.serve(addr)?;
    }
    let mut s = Syncer {
        common,
        opts,
        applier,
        metrics,
        rep: SyncReport {
            source: opts.from.redacted(),
            target: opts.import.to.redacted(),
            ..Default::default()
        },
        order: 0,
        last: None,
        txn: Transaction::default(),
        last_checkpoint: Instant::now(),
        last_send: Instant::now(),
        received: 0,
        arrivals: Arrivals::default(),
        last_status: (0, Instant::now()),
    };
    let run = s.run(resume);
    let drained = s.applier.flush().and_then(|()| s.checkpoint(true));
    s.rep.apply = s.applier.stats().clone();
    s.rep.position = s.position();
    s.rep.elapsed_s = start.elapsed().as_secs_f64();
    s.rep.stopped = run?;
    drained?;
    Ok(s.rep)
}

/// The error of `--via full-sync` where the full sync is ruled out or declined.
fn full_sync_refused(io: &ImportOptions, why: &str) -> Error {
    Error::target(io.to.redacted(), format!("--via full-sync: {why}"))
}

/// The snapshot back from the reader it was shared with.
fn take(shared: &Mutex<Option<Snapshot>>) -> Result<Snapshot> {
    let taken = shared.lock().ok().and_then(|mut s| s.take());
    taken.ok_or_else(|| Error::Internal("the snapshot's payload is gone".into()))
}

/// The payload's first 9 bytes (`REDIS` and the RDB version), or fewer if it is shorter.
fn read_head(payload: &mut Payload) -> Result<Vec<u8>> {
    let mut head = vec![0u8; 9];
    let mut got = 0;
    while got < head.len() {
        match payload.read_bytes(&mut head[got..])? {
            0 => break,
            n => got += n,
        }
    }
    head.truncate(got);
    Ok(head)
}

/// The source's slot map when it is a Cluster node (each master's stream holds only its
/// slots: every master is synced).
fn cluster_source(from: &RedisUrl) -> Result<Option<SlotMap>> {
    // INFO refused (ACL): the source is taken for a standalone one.
    if !is_cluster(&mut Conn::open(from)?)? {
        return Ok(None);
    }
    Ok(Some(SlotMap::discover(from)?))
}

impl Syncer<'_> {
    /// Start (a snapshot, or a continue from `resume`), then follow; why it stopped.
    fn run(&mut self, resume: Option<(u64, SyncPos)>) -> Result<String> {
        let stream = match resume {
            Some((order, pos)) => {
                if pos.replid.is_empty() {
                    return Err(self.no_replid());
                }
                self.order = order;
                self.last = Some(pos.clone());
                match self.continue_from(&pos)? {
                    Some(s) => s,
                    None => return Ok("signal".into()),
                }
            }
            None if self.opts.scan => return self.scan(),
            None => {
                let pre = match &self.opts.precheck {
                    Some(shared) => self.shared_precheck(shared)?,
                    None => self.precheck(&self.opts.import)?,
                };
                match self.snapshot(&self.opts.import, &pre) {
                    Ok(Some(s)) => s,
                    Ok(None) => return Ok("snapshot".into()),
                    Err(Error::Net(e)) if self.scan_instead(&e) => {
                        let note = format!(
                            "the source refuses replication ({e}): it is copied with SCAN + \
                             DUMP instead (--via auto; --via scan asks for it)"
                        );
                        eprintln!("sync: {note}");
                        self.rep.notes.push(note);
                        return self.scan();
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        match self.follow(stream) {
            // A signal seen by a step of the stream loop (the applier checks it too) is the
            // same stop as one seen by the loop itself: drain and checkpoint.
            Err(Error::Cancelled) if self.common.cancel.is_cancelled() => Ok("signal".into()),
            r => r,
        }
    }

    /// Whether `--via auto` copies by scan a source whose handshake failed with `e`: it
    /// refuses replication, and nothing is to be followed.
    fn scan_instead(&self, e: &crate::net::NetError) -> bool {
        matches!(e.kind, NetErrorKind::Refused { .. })
            && self.opts.import.via == Via::Auto
            && !self.opts.follow
            && self.opts.checkpoint.is_none()
    }

    /// A one-time copy by scan (see `sync::scan`); why it stopped.
    fn scan(&mut self) -> Result<String> {
        let mut io = self.opts.import.clone();
        io.via = Via::Commands;
        let mut pre = import::precheck_stream(&io)?;
        if let Some(row) = pre.checks.iter_mut().find(|c| c.check == "via") {
            row.detail = "scan: the source read with SCAN + DUMP, written by commands".into();
        }
        let pre = self.judge(&io, pre)?;
        let (r, seen) = scan::copy(self.common, &self.opts.from, &io, &pre, self.opts.scan_rate)?;
        if !self.common.quiet {
            eprintln!("sync: {}", scan::WARNING);
        }
        if r.errors > 0 {
            return Err(Error::target(
                io.to.redacted(),
                format!(
                    "the scan of {} was not imported whole: {}",
                    self.rep.source,
                    r.error_messages.join("; ")
                ),
            ));
        }
        self.rep.snapshot = Some(r);
        self.rep.scan = Some(seen);
        Ok("scan".into())
    }

    /// The precheck in `shared`, made now if nobody made it yet (the others wait meanwhile).
    fn shared_precheck(&self, shared: &SharedPrecheck) -> Result<import::Precheck> {
        let mut made = shared
            .lock()
            .map_err(|_| Error::Internal("a sync's precheck panicked".into()))?;
        if let Some(pre) = made.as_ref() {
            return Ok(pre.clone());
        }
        let pre = self.precheck(&self.opts.import)?;
        *made = Some(pre.clone());
        Ok(pre)
    }

    /// The precheck of the target for a snapshot (its table on stderr unless quiet); a
    /// failed one is an error unless `--force`.
    fn precheck(&self, io: &ImportOptions) -> Result<import::Precheck> {
        let pre = if io.via == Via::Commands {
            import::precheck_stream(io)?
        } else {
            let source = SourceFacts::query(&self.opts.from)?;
            import::precheck_relay(io, &self.common.map, &source)?
        };
        self.judge(io, pre)
    }

    /// Show the precheck (its table on stderr unless quiet); a failed one is an error
    /// unless `--force`.
    fn judge(&self, io: &ImportOptions, pre: import::Precheck) -> Result<import::Precheck> {
        if !self.common.quiet || pre.failed() {
            eprint!("{}", pre.to_table());
        }
        if pre.failed() && !self.opts.force {
            return Err(Error::target(
                io.to.redacted(),
                "precheck failed; nothing was written (--force to go on)",
            ));
        }
        Ok(pre)
    }

    /// The source's error for a checkpoint without a replication id (a `SYNC` source).
    fn no_replid(&self) -> Error {
        Error::target(
            self.opts.from.redacted(),
            "the checkpoint has no replication id (the source was synced with SYNC, not \
             PSYNC): it cannot be continued from; start over with an empty target",
        )
    }

    /// `PSYNC` to the source; `None` when a signal came first.
    fn handshake(&self, start: SyncStart) -> Result<Option<Handshake>> {
        let conn = Conn::open(&self.opts.from)?;
        let ropts = ReplicaOptions {
            psync_command: self.opts.psync_command.clone(),
            save_within: self.opts.save_within,
            cancel: self.common.cancel.clone(),
            // Only the RDB when nothing will continue from it.
            rdb_only: !self.opts.follow && self.opts.checkpoint.is_none(),
        };
        match replica::psync(conn, start, &ropts) {
            Ok(h) => Ok(Some(h)),
            Err(e) if matches!(e.kind, NetErrorKind::Interrupted) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Take a snapshot (`PSYNC ? -1`) and write it to the target as `io` and `pre` say; the
    /// stream after it when following.
    fn snapshot(
        &mut self,
        io: &ImportOptions,
        pre: &import::Precheck,
    ) -> Result<Option<ReplStream>> {
        let Some(h) = self.handshake(SyncStart::Full)? else {
            return Err(Error::Cancelled);
        };
        match h {
            Handshake::Full {
                replid,
                offset,
                payload,
            } => self.import_snapshot(replid, offset, payload, io, pre, self.opts.follow),
            Handshake::Continue { .. } => Err(Error::Internal("+CONTINUE to PSYNC ? -1".into())),
        }
    }

    /// Import the snapshot in `payload`, then checkpoint past it; the stream after it when
    /// `then_stream`.
    fn import_snapshot(
        &mut self,
        replid: String,
        offset: u64,
        payload: Payload,
        io: &ImportOptions,
        pre: &import::Precheck,
        then_stream: bool,
    ) -> Result<Option<ReplStream>> {
        self.rep.full_syncs += 1;
        let name = payload.name().to_string();
        let size = match payload.framing() {
            replica::Framing::Length(n) => Some(n),
            replica::Framing::EofMark(_) => None,
        };
        let spool = match &self.opts.spool {
            Some(dir) => {
                let id = if replid.is_empty() { "sync" } else { &replid };
                Some(AtomicFile::create(&dir.join(format!("{id}-{offset}.rdb")))?)
            }
            None => None,
        };
        let snap = Snapshot {
            head: Vec::new(),
            payload,
            spool,
        };
        let (relayed, snap) = match &pre.full_sync {
            Ok(plan) => self.relay(plan, io, snap, size)?,
            Err(why) if io.via == Via::FullSync => return Err(full_sync_refused(io, why)),
            Err(why) => (Relayed::Declined(why.clone()), snap),
        };
        let declined = match relayed {
            Relayed::Done(r) => return self.snapshot_taken(replid, offset, r, snap, then_stream),
            Relayed::Declined(_) if io.via == Via::Commands => None,
            Relayed::Declined(why) if pre.full_sync.is_err() => Some(why),
            Relayed::Declined(why) => Some(self.full_sync_declined(io, why)?),
            Relayed::Abandoned(why) => return self.again_by_commands(io, why),
        };
        let shared = Arc::new(Mutex::new(Some(snap)));
        let input = Input::from_reader(&name, Box::new(SnapshotReader(shared.clone())), size);
        let mut io = io.clone();
        io.via = Via::Commands;
        let mut r = import::import_input(input, self.common, &io, pre)?;
        r.full_sync_declined = declined;
        if r.errors > 0 {
            return Err(Error::target(
                io.to.redacted(),
                format!(
                    "the snapshot of {name} was not imported whole: {}",
                    r.error_messages.join("; ")
                ),
            ));
        }
        let snap = take(&shared)?;
        self.snapshot_taken(replid, offset, r, snap, then_stream)
    }

    /// Relay the snapshot to the target `plan` claims (`fullsync::relay`); the snapshot back,
    /// whole when declined.
    fn relay(
        &self,
        plan: &import::fullsync::Plan,
        io: &ImportOptions,
        mut snap: Snapshot,
        size: Option<u64>,
    ) -> Result<(Relayed, Snapshot)> {
        snap.head = read_head(&mut snap.payload)?;
        let head = snap.head.clone();
        let shared = Arc::new(Mutex::new(Some(snap)));
        let mut src = SnapshotReader(shared.clone());
        let mut last = Instant::now();
        let mut keepalive = || {
            if last.elapsed() >= Duration::from_secs(1) {
                last = Instant::now();
                if let Ok(Some(s)) = shared.lock().as_deref_mut() {
                    s.payload.keepalive();
                }
            }
        };
        let r = relay::relay(
            self.common,
            io,
            plan,
            (&head, &mut src),
            size,
            &mut keepalive,
        )?;
        Ok((r, take(&shared)?))
    }

    /// `--via full-sync` stops where the full sync is declined; `--via auto` goes on by
    /// commands (over the same bytes: none was read), saying why.
    fn full_sync_declined(&self, io: &ImportOptions, why: String) -> Result<String> {
        if io.via == Via::FullSync {
            return Err(full_sync_refused(io, &why));
        }
        if !self.common.quiet {
            eprintln!("sync: no full sync ({why}): the snapshot goes by commands");
        }
        Ok(why)
    }

    /// A full sync given up halfway (the target is put back, empty): `--via full-sync`
    /// stops; `--via auto` takes a new snapshot by commands.
    fn again_by_commands(&mut self, io: &ImportOptions, why: String) -> Result<Option<ReplStream>> {
        let why = format!("the full sync was abandoned ({why}); the target was put back");
        if io.via == Via::FullSync {
            return Err(Error::target(io.to.redacted(), why));
        }
        // Said on stderr too: the run takes a second snapshot, which the user should know.
        eprintln!("sync: {why}: a new snapshot goes by commands");
        self.rep
            .notes
            .push(format!("{why}; a new snapshot went by commands"));
        let mut io = io.clone();
        io.via = Via::Commands;
        let pre = self.precheck(&io)?;
        self.snapshot(&io, &pre)
    }

    /// The snapshot is on the target (`r` says how): its spool committed, the checkpoint
    /// past it; the stream after it when `then_stream`.
    fn snapshot_taken(
        &mut self,
        replid: String,
        offset: u64,
        r: ImportReport,
        snap: Snapshot,
        then_stream: bool,
    ) -> Result<Option<ReplStream>> {
        self.rep.snapshot = Some(r);
        let Snapshot { payload, spool, .. } = snap;
        if let Some(f) = spool {
            f.commit()?;
        }
        let pos = SyncPos {
            replid: replid.clone(),
            offset,
            db: 0,
        };
        self.mark(pos)?;
        if !then_stream {
            return Ok(None);
        }
        if replid.is_empty() {
            let note = "the source gave no replication id (SYNC): a lost link or a restart \
                        cannot continue; it needs a new full copy";
            tracing::warn!("{note}");
            self.rep.notes.push(note.into());
        }
        Ok(Some(payload.into_stream(replid, offset)?))
    }

    /// A position with nothing to apply (after a snapshot): an entry without commands moves
    /// the checkpoint (key and file) there.
    fn mark(&mut self, pos: SyncPos) -> Result<()> {
        self.order += 1;
        self.last = Some(pos.clone());
        let bytes = serde_json::to_vec(&pos).unwrap_or_default();
        self.applier.mark(self.order, bytes)?;
        self.checkpoint(true)
    }

    /// Continue from `pos` (`PSYNC replid offset+1`), retrying a source that cannot be
    /// reached for `--retry-timeout`; a source that offers only a full copy is an error
    /// unless `--resync-on-loss`. `None`: a signal came first.
    fn continue_from(&mut self, pos: &SyncPos) -> Result<Option<ReplStream>> {
        let start = SyncStart::Continue {
            replid: pos.replid.clone(),
            offset: pos.offset,
            db: pos.db,
        };
        let deadline = Instant::now() + self.opts.import.retry_for;
        loop {
            if self.common.cancel.is_cancelled() {
                return Ok(None);
            }
            let h = match self.handshake(start.clone()) {
                Ok(Some(h)) => h,
                Ok(None) => return Ok(None),
                Err(Error::Net(e)) if e.is_transient() && Instant::now() < deadline => {
                    tracing::warn!("{e}; trying again");
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
                Err(e) => return Err(e),
            };
            match h {
                Handshake::Continue { replid, stream, .. } => {
                    self.rep.continues += 1;
                    if !self.common.quiet {
                        eprintln!(
                            "sync: continued at offset {} of {replid} (+CONTINUE)",
                            pos.offset
                        );
                    }
                    return Ok(Some(stream));
                }
                Handshake::Full {
                    replid,
                    offset,
                    payload,
                } => return self.lost(pos, replid, offset, payload).map(Some),
            }
        }
    }

    /// The source answered a continue with a full copy: an error, or with
    /// `--resync-on-loss` the copy imported over the target.
    fn lost(
        &mut self,
        pos: &SyncPos,
        replid: String,
        offset: u64,
        payload: Payload,
    ) -> Result<ReplStream> {
        let why = format!(
            "the source cannot continue from offset {} of replication id {} (it answered \
             FULLRESYNC {replid} {offset}: its backlog no longer holds that offset, or its \
             replication id changed)",
            pos.offset, pos.replid
        );
        if !self.opts.resync_on_loss {
            return Err(Error::target(
                self.opts.from.redacted(),
                format!(
                    "{why}; rerun with --resync-on-loss to take a full copy again (keys \
                     deleted on the source meanwhile stay on the target)"
                ),
            ));
        }
        tracing::warn!("{why}: taking a full copy again (--resync-on-loss)");
        self.rep.notes.push(format!("{why}: full copy taken again"));
        let mut io = self.opts.import.clone();
        io.on_conflict = OnConflict::Replace;
        io.via = Via::Commands;
        let pre = import::precheck_stream(&io)?;
        match self.import_snapshot(replid, offset, payload, &io, &pre, true)? {
            Some(s) => Ok(s),
            None => Err(Error::Internal("a resync without its stream".into())),
        }
    }

    /// Apply the stream until a signal; lost links are continued (see the module doc).
    fn follow(&mut self, mut stream: ReplStream) -> Result<String> {
        let mut last_status = Instant::now();
        loop {
            if self.common.cancel.is_cancelled() {
                return Ok("signal".into());
            }
            match stream.next(Duration::from_millis(100)) {
                Ok(Some(e)) => {
                    let pos = SyncPos {
                        replid: stream.replid().to_string(),
                        offset: e.offset,
                        db: e.db_after,
                    };
                    self.entry(e.db, &e.commands, pos)?;
                }
                // Without --follow, a run that continued from a checkpoint stops once caught up.
                Ok(None) if !self.opts.follow => return Ok("caught-up".into()),
                // Idle: wait for the replies, so that the checkpoint and the ACKs catch up
                // (past the PINGs and SELECTs after the last entry too).
                Ok(None) => {
                    self.applier.flush()?;
                    if let (Some((offset, db)), Some(last)) = (stream.settled(), &self.last)
                        && offset > last.offset
                    {
                        let replid = stream.replid().to_string();
                        self.last = Some(SyncPos { replid, offset, db });
                    }
                }
                Err(e) => {
                    let note = format!("the replication link was lost: {e}");
                    tracing::warn!("{note}");
                    self.rep.notes.push(note);
                    // Everything received is applied first: the continue starts after it.
                    self.applier.flush()?;
                    self.checkpoint(true)?;
                    let Some(pos) = self.last.clone() else {
                        return Err(e.into());
                    };
                    if pos.replid.is_empty() {
                        return Err(self.no_replid());
                    }
                    match self.continue_from(&pos)? {
                        Some(s) => stream = s,
                        None => return Ok("signal".into()),
                    }
                    continue;
                }
            }
            if self.last_send.elapsed() >= Duration::from_millis(20) {
                self.send()?;
            }
            self.received = stream.offset();
            self.arrivals.received(self.received);
            if let Some(applied) = self.applied_offset() {
                stream.set_applied(applied);
            }
            self.checkpoint(false)?;
            if last_status.elapsed() > Duration::from_secs(5) {
                last_status = Instant::now();
                self.status();
            }
        }
    }

    /// Send what is pending (without waiting for the replies).
    fn send(&mut self) -> Result<()> {
        self.last_send = Instant::now();
        self.applier.send_pending()
    }

    /// One entry of the stream: mapped, then to the applier.
    fn entry(&mut self, db: u64, commands: &[Vec<Vec<u8>>], pos: SyncPos) -> Result<()> {
        let (mapped, refused) = map_entry(&self.common.map, &mut self.txn, db, commands);
        self.rep.filtered += mapped.filtered;
        let stop = self.opts.import.stop_on_error;
        for (c, why) in refused {
            let to = &self.opts.import.to;
            report_refusal(&self.metrics, stop, to, &mut self.rep.notes, &c, why)?;
        }
        self.last = Some(pos.clone());
        let Some((tdb, mapped)) = mapped.kept else {
            return Ok(());
        };
        self.order += 1;
        let pos = serde_json::to_vec(&pos).unwrap_or_default();
        self.applier.push(Entry {
            db: tdb,
            commands: mapped,
            resp: None,
            order: self.order,
            pos,
        })
    }

    /// The position every entry up to is acknowledged (entries filtered out after the last
    /// acknowledged one included, once everything pushed is acknowledged).
    fn position(&self) -> Option<SyncPos> {
        let acked = self.applier.acked()?;
        if acked.order == self.order {
            return self.last.clone();
        }
        serde_json::from_slice(&acked.pos).ok()
    }

    /// The source offset applied on the target.
    fn applied_offset(&self) -> Option<u64> {
        self.position().map(|p| p.offset)
    }

    /// Write the checkpoint file (at most ten times a second unless `now`).
    fn checkpoint(&mut self, now: bool) -> Result<()> {
        if !now && self.last_checkpoint.elapsed() < Duration::from_millis(100) {
            return Ok(());
        }
        self.last_checkpoint = Instant::now();
        let Some(pos) = self.position() else {
            return Ok(());
        };
        let order = self.applier.acked().map_or(0, |a| a.order);
        self.metrics.checkpoint.set(order as i64);
        self.metrics.count_applied(self.applier.stats().applied);
        let lag = self.received.saturating_sub(pos.offset);
        self.rep.lag_bytes = lag;
        self.metrics.lag_bytes.set(lag as i64);
        self.rep.lag_s = self.arrivals.lag(pos.offset).as_secs_f64();
        self.metrics.lag_seconds.set(self.rep.lag_s);
        let Some(path) = &self.opts.checkpoint else {
            return Ok(());
        };
        write_checkpoint(
            path,
            &CheckpointFile {
                source: self
                    .opts
                    .name
                    .clone()
                    .unwrap_or_else(|| self.opts.from.addr()),
                order,
                pos,
            },
        )
    }

    /// The status line on stderr: offset applied, lag, commands per second.
    fn status(&mut self) {
        let applied = self.applier.stats().applied;
        let (before, at) = std::mem::replace(&mut self.last_status, (applied, Instant::now()));
        if self.common.quiet {
            return;
        }
        let rate = applied.saturating_sub(before) as f64 / at.elapsed().as_secs_f64().max(1e-3);
        eprintln!(
            "sync: offset {} applied, {applied} commands applied ({rate:.0}/s), lag {} bytes / \
             {:.3} s",
            self.applied_offset().unwrap_or(0),
            self.rep.lag_bytes,
            self.rep.lag_s
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::applier::Checkpoint;

    fn file(order: u64, offset: u64) -> CheckpointFile<SyncPos> {
        CheckpointFile {
            source: "h:1".into(),
            order,
            pos: SyncPos {
                replid: "a".repeat(40),
                offset,
                db: 0,
            },
        }
    }

    #[test]
    fn lag_is_the_age_of_the_first_byte_not_applied() {
        let mut a = Arrivals::default();
        a.received(100);
        std::thread::sleep(Duration::from_millis(20));
        a.received(200);
        assert!(a.lag(50) >= Duration::from_millis(20));
        assert!(a.lag(150) < Duration::from_millis(20));
        assert_eq!(a.lag(200), Duration::ZERO);
    }

    #[test]
    fn resume_takes_the_furthest() {
        let key = |order, offset| Checkpoint {
            order,
            pos: serde_json::to_vec(&file(order, offset).pos).unwrap(),
        };
        let none: Option<CheckpointFile<SyncPos>> = None;
        assert_eq!(resume_from(None, none, "sync").unwrap(), None);
        let (o, p) = resume_from(Some(key(5, 50)), Some(file(4, 40)), "sync")
            .unwrap()
            .unwrap();
        assert_eq!((o, p.offset), (5, 50));
        let (o, p) = resume_from(Some(key(5, 50)), Some(file(6, 60)), "sync")
            .unwrap()
            .unwrap();
        assert_eq!((o, p.offset), (6, 60));
        let bad = Checkpoint {
            order: 9,
            pos: b"x".to_vec(),
        };
        let none: Option<CheckpointFile<SyncPos>> = None;
        assert!(resume_from(Some(bad), none, "sync").is_err());
    }
}
