//! `follow`: keep a target in sync with a source's AOF (a single file or a Redis 7
//! `appendonlydir`) while the source keeps writing: the base first (imported as `import`
//! does), then every command as it is appended, through the [`Applier`], checkpointed.
//!
//! Where it sits: the loop between the AOF tail (`input::tail`, which follows rewrites and
//! waits for commands written in part) and the applier (`sink::applier`, at least once or
//! exactly once). `import --until` of an AOF uses the same loop, once, without a checkpoint
//! file.
//!
//! Checkpoints: after the target acknowledges a batch, the position (`input::tail::TailPos`:
//! file, offset, and the file's identity) goes to `--checkpoint FILE` (written to a temporary
//! file, fsynced, renamed; at most ten times a second, and at the end). With `--exactly-once`
//! the target holds the position too, in the checkpoint key of each batch's transaction, and
//! that one wins on restart (the file may be a batch behind after a `kill -9`).
//!
//! Fast path: with nothing to filter, rename or move to another db, into a standalone target,
//! runs of plain commands go from the AOF to the target as the bytes the file holds (the
//! tail's `TailEvent::Resp`, the applier's `Entry::resp`), as `redis-cli --pipe` sends them:
//! no argument vectors, one position per run. `SELECT`, transactions, annotations and
//! everything a key map changes take the per-command path.
//!
//! Stops: `--once` when caught up; `--until TIME` before the first command the source wrote
//! after TIME (by its `#TS:` annotations, `aof-timestamp-enabled yes`); a signal (drain what
//! was read, write the checkpoint, exit 0). A refused command stops the run unless
//! `--on-error skip`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::Common;
use super::import::{self, ImportOptions, OnConflict, Via};
use super::metrics::Metrics;
use crate::error::{Error, Result};
use crate::input::tail::{AofTail, Start, TailEvent, TailOptions, TailPos};
use crate::net::RedisUrl;
use crate::sink::applier::{Applier, ApplyOptions, ApplyStats, Checkpoint, Entry, Resp};
use crate::sink::file::AtomicFile;
use crate::transform::{CommandFate, KeyMap, Transaction};

/// Where `follow` starts without a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    /// The base, then every incr file, then the tail (`--from-start`).
    Start,
    /// Only what is written from now on (`--from-end`).
    End,
}

/// Options of `follow`.
#[derive(Debug, Clone)]
pub struct FollowOptions {
    /// The target.
    pub to: RedisUrl,
    /// `--checkpoint FILE`.
    pub checkpoint: Option<PathBuf>,
    /// `--exactly-once`: each batch and its position in one transaction, in this key.
    pub checkpoint_key: Option<Vec<u8>>,
    /// Without a checkpoint: from the start or from the end.
    pub from: From,
    /// `--until`: Unix seconds; stop before the first command written after it.
    pub until: Option<i64>,
    /// `--once`: stop when caught up.
    pub once: bool,
    /// `--resync-on-loss`: when a rewrite cannot be joined, start over from the new file.
    pub resync_on_loss: bool,
    /// `--metrics-addr`.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Write options shared with `import` (the base is imported with them; `--on-error`,
    /// `--retry-timeout`).
    pub import: ImportOptions,
}

/// What `follow` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FollowReport {
    /// The source.
    pub source: String,
    /// The target (redacted).
    pub target: String,
    /// The applier's counters.
    pub apply: ApplyStats,
    /// Entries filtered out.
    pub filtered: u64,
    /// Base files imported.
    pub bases: u64,
    /// Where it stopped (the checkpoint).
    pub position: Option<TailPos>,
    /// Why it stopped: `once`, `until`, `signal`.
    pub stopped: String,
    /// Rewrites followed, and other notes.
    pub notes: Vec<String>,
    /// Wall time, seconds.
    pub elapsed_s: f64,
}

/// The checkpoint file of `follow` (`P`: [`TailPos`]) and `sync` (its replication position).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CheckpointFile<P> {
    /// The source it belongs to (a path, or `host:port`).
    pub source: String,
    /// Entries applied since the stream's start.
    pub order: u64,
    /// Where to resume.
    pub pos: P,
}

/// The checkpoint file at `path` of rdbferry's `what` (`follow`, `sync`) for `source`;
/// `None` when there is none yet. Not a checkpoint, or one of another source: an error.
pub(crate) fn read_checkpoint<P: DeserializeOwned>(
    path: &Path,
    source: &str,
    what: &str,
) -> Result<Option<CheckpointFile<P>>> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path.display().to_string(), e)),
    };
    let cp: CheckpointFile<P> = serde_json::from_slice(&text).map_err(|e| Error::Input {
        path: path.display().to_string(),
        msg: format!("not a checkpoint of rdbferry {what}: {e}"),
    })?;
    if cp.source != source {
        return Err(Error::Input {
            path: path.display().to_string(),
            msg: format!(
                "this checkpoint is for {}, not {source}; give another --checkpoint file",
                cp.source
            ),
        });
    }
    Ok(Some(cp))
}

/// Where to resume, from the target's checkpoint key (exactly once) and the file: the
/// order to count from and the position; `None` when neither has one.
pub(crate) fn resume_from<P: DeserializeOwned>(
    target: Option<Checkpoint>,
    file: Option<CheckpointFile<P>>,
    what: &str,
) -> Result<Option<(u64, P)>> {
    let parse = |c: &Checkpoint| -> Result<P> {
        serde_json::from_slice(&c.pos).map_err(|e| Error::Input {
            path: "checkpoint key".into(),
            msg: format!("not a position of rdbferry {what}: {e}"),
        })
    };
    Ok(match (target, file) {
        // The file is written after the target acknowledged: at the same order or later it
        // is at least as far (it also moves on when nothing came to apply).
        (Some(t), Some(f)) if f.order >= t.order => Some((f.order, f.pos)),
        (Some(t), _) => Some((t.order, parse(&t)?)),
        (None, Some(f)) => Some((f.order, f.pos)),
        (None, None) => None,
    })
}

/// Write `cp` as JSON to `path` atomically (a temporary file, fsynced, renamed).
pub(crate) fn write_checkpoint(path: &Path, cp: &impl Serialize) -> Result<()> {
    let mut f = AtomicFile::create(path)?;
    serde_json::to_writer(&mut f, cp)
        .map_err(|e| Error::io(path.display().to_string(), e.into()))?;
    f.commit()
}

/// The one loop of `follow` (see the module doc).
struct Follower<'a> {
    /// The AOF file or directory.
    path: PathBuf,
    common: &'a Common,
    opts: &'a FollowOptions,
    source: String,
    applier: Applier,
    metrics: Metrics,
    rep: FollowReport,
    /// Entries since the stream's start (the applier's order).
    order: u64,
    txn: Transaction,
    last_checkpoint: Instant,
    /// The newest `#TS:` seen, and the one of the last entry applied.
    newest_ts: Option<i64>,
    /// Where the tail stood when it was last caught up with everything acknowledged: the
    /// checkpoint moves there (a rewrite may have moved it to a new file meanwhile).
    idle: Option<(u64, TailPos)>,
}

/// Follow the AOF at `path` into the target.
pub fn follow(path: &str, common: &Common, opts: &FollowOptions) -> Result<FollowReport> {
    let start = Instant::now();
    let source = std::fs::canonicalize(path)
        .map_err(|e| Error::io(path, e))?
        .display()
        .to_string();
    let apply = ApplyOptions {
        checkpoint_key: opts.checkpoint_key.clone(),
        retry_for: opts.import.retry_for,
        stop_on_error: opts.import.stop_on_error,
        ..ApplyOptions::default()
    };
    let apply = if opts.checkpoint_key.is_some() {
        // One batch in flight: each costs the target a wait for the next. Larger ones make
        // fewer waits (2M writes: 1.19x the time at least once with these, 1.26x with the
        // default 1000 commands, on a loaded machine).
        ApplyOptions {
            batch_commands: 10_000,
            batch_bytes: 8 << 20,
            ..apply
        }
    } else {
        // Four times the default batch and twice the window: the target never waits for
        // the next batch while replies are read (2M writes on a quiet machine: 1.35 s with
        // the defaults, 0.95-1.13 s with these, against 0.94-1.41 s for redis-cli --pipe).
        ApplyOptions {
            batch_commands: 4000,
            batch_bytes: 4 << 20,
            window: 8,
            ..apply
        }
    };
    let mut applier = Applier::open(&opts.to, apply, common.cancel.clone())?;
    // Where to start: the target's checkpoint (exactly once) wins over the file's.
    let from_file = match &opts.checkpoint {
        Some(p) => read_checkpoint(p, &source, "follow")?,
        None => None,
    };
    let from_target = applier.resume()?;
    let (order, tail_start) = resume_point(from_target, from_file, opts.from)?;
    let metrics = Metrics::new();
    if let Some(addr) = opts.metrics_addr {
        metrics.serve(addr)?;
    }
    let resp_runs = forwards_resp(common, opts, &applier).then_some(RESP_RUN);
    let tail = AofTail::open(
        Path::new(path),
        TailOptions {
            start: tail_start,
            resync_on_loss: opts.resync_on_loss,
            poll: Duration::from_millis(200),
            resp_runs,
        },
    )?;
    let mut f = Follower {
        path: PathBuf::from(path),
        common,
        opts,
        source: source.clone(),
        applier,
        metrics,
        rep: FollowReport {
            source,
            target: opts.to.redacted(),
            ..Default::default()
        },
        order,
        txn: Transaction::default(),
        last_checkpoint: Instant::now(),
        newest_ts: None,
        idle: None,
    };
    let stopped = match f.run(tail) {
        // A signal seen by a step of the loop (the applier checks it too) is the same stop
        // as one seen at the top of the loop: drain and checkpoint what was acknowledged.
        Err(Error::Cancelled) if common.cancel.is_cancelled() => Ok("signal".to_string()),
        r => r,
    };
    let drained = f.applier.flush().and_then(|()| f.checkpoint(true));
    f.rep.apply = f.applier.stats().clone();
    f.rep.elapsed_s = start.elapsed().as_secs_f64();
    f.rep.stopped = stopped?;
    drained?;
    Ok(f.rep)
}

/// Most commands in one [`TailEvent::Resp`] run: a batch of the applier.
const RESP_RUN: usize = 1000;

/// Whether the source's commands can go to the target as the AOF holds them (the fast
/// path, as `redis-cli --pipe`): nothing to filter, rename or move to another db, and a
/// standalone target (a Cluster routes each command by its key). Not with `--exactly-once`
/// and `--on-error skip`: a batch refused whole is then applied again entry by entry, so that
/// only the refused command is lost, and a run is one entry.
fn forwards_resp(common: &Common, opts: &FollowOptions, applier: &Applier) -> bool {
    common.map.is_identity()
        && !applier.is_cluster()
        && (opts.checkpoint_key.is_none() || opts.import.stop_on_error)
}

/// The order to count from and where the tail starts.
fn resume_point(
    target: Option<Checkpoint>,
    file: Option<CheckpointFile<TailPos>>,
    from: From,
) -> Result<(u64, Start)> {
    Ok(match resume_from(target, file, "follow")? {
        Some((order, pos)) => (order, Start::At(pos)),
        None => (
            0,
            match from {
                From::Start => Start::Beginning,
                From::End => Start::End,
            },
        ),
    })
}

impl Follower<'_> {
    /// Pull events until a stop; returns why it stopped.
    fn run(&mut self, mut tail: AofTail) -> Result<String> {
        let mut last_status = Instant::now();
        loop {
            if self.common.cancel.is_cancelled() {
                return Ok("signal".into());
            }
            let ev = match tail.next(Duration::from_millis(200), &self.common.cancel) {
                Err(Error::Cancelled) => return Ok("signal".into()),
                r => r?,
            };
            match ev {
                Some(TailEvent::Base { path, rdb_end, pos }) => {
                    // Read through the tail's open file: a rewrite may delete the path.
                    use std::os::fd::AsRawFd;
                    let open = tail
                        .base_file()
                        .map(|f| PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd())))
                        .filter(|p| p.exists());
                    self.base(open.as_deref().unwrap_or(&path), rdb_end, pos)?;
                }
                Some(TailEvent::Commands { ts, .. } | TailEvent::Resp { ts, .. })
                    if self.past_until(ts) =>
                {
                    return Ok("until".into());
                }
                Some(TailEvent::Commands {
                    db, commands, pos, ..
                }) => self.commands(db, &commands, &pos)?,
                Some(TailEvent::Resp {
                    db,
                    bytes,
                    commands,
                    pos,
                    ..
                }) => self.resp(db, Resp { bytes, commands }, pos)?,
                Some(TailEvent::Rewritten { note, pos }) => {
                    tracing::info!("{note}");
                    self.rep.notes.push(note);
                    self.moved(pos)?;
                }
                Some(TailEvent::CaughtUp { pos }) => {
                    self.applier.send_pending()?;
                    if self.applier.acked().is_some_and(|a| a.order == self.order) {
                        self.idle = Some((self.order, pos.clone()));
                    }
                    self.status(&pos);
                    if self.opts.once {
                        self.rep.position = Some(pos);
                        return Ok("once".into());
                    }
                }
                None => {
                    // Nothing new for a while: wait for the target's acknowledgement, so
                    // that the checkpoint, the metrics and the lag are current while idle.
                    self.applier.flush()?;
                    if self.applier.acked().is_some_and(|a| a.order == self.order) {
                        self.idle = Some((self.order, tail.pos().clone()));
                    }
                }
            }
            self.checkpoint(false)?;
            if last_status.elapsed() > Duration::from_secs(5) {
                last_status = Instant::now();
                let pos = tail.pos().clone();
                self.status(&pos);
            }
        }
    }

    /// Notes an entry's `#TS:` (for the lag); whether it was written after `--until`.
    fn past_until(&mut self, ts: Option<i64>) -> bool {
        if let Some(t) = ts {
            self.newest_ts = Some(t);
        }
        self.opts.until.is_some_and(|u| ts.is_some_and(|t| t > u))
    }

    /// The base file: imported as `import` would (idempotent: `--on-conflict replace`), then
    /// a checkpoint past it.
    fn base(&mut self, path: &Path, rdb_end: Option<u64>, pos: TailPos) -> Result<()> {
        self.applier.flush()?;
        let mut io = self.opts.import.clone();
        io.on_conflict = OnConflict::Replace;
        io.via = Via::Auto;
        io.rdb_only = rdb_end.is_some();
        let inputs = vec![path.display().to_string()];
        let pre = import::precheck(&inputs, self.common, &io)?;
        let r = import::import(&inputs, self.common, &io, &pre)?;
        if r.errors > 0 {
            return Err(Error::target(
                self.opts.to.redacted(),
                format!(
                    "the base {} was not imported whole: {}",
                    path.display(),
                    r.error_messages.join("; ")
                ),
            ));
        }
        self.rep.bases += 1;
        self.order += 1;
        // The checkpoint (key and file) moves past the base.
        let pos_bytes = serde_json::to_vec(&pos).unwrap_or_default();
        self.applier.mark(self.order, pos_bytes)?;
        self.rep.position = Some(pos);
        self.checkpoint(true)
    }

    /// One source entry (a command or a transaction): mapped, then to the applier.
    fn commands(&mut self, db: u64, commands: &[Vec<Vec<u8>>], pos: &TailPos) -> Result<()> {
        let (mapped, refused) = map_entry(&self.common.map, &mut self.txn, db, commands);
        self.rep.filtered += mapped.filtered;
        for (c, why) in refused {
            self.report(&c, why)?;
        }
        self.rep.position = Some(pos.clone());
        let Some((tdb, mapped)) = mapped.kept else {
            // Nothing of it goes on; the position still moves (next batch's checkpoint).
            return Ok(());
        };
        self.order += 1;
        self.applier.push(Entry {
            db: tdb,
            commands: mapped,
            resp: None,
            order: self.order,
            pos: serde_json::to_vec(pos).unwrap_or_default(),
        })
    }

    /// A run of plain commands, forwarded as the source wrote them ([`forwards_resp`]).
    fn resp(&mut self, db: u64, resp: Resp, pos: TailPos) -> Result<()> {
        self.order += resp.commands as u64;
        let entry = Entry {
            db,
            commands: Vec::new(),
            resp: Some(resp),
            order: self.order,
            pos: serde_json::to_vec(&pos).unwrap_or_default(),
        };
        self.rep.position = Some(pos);
        self.applier.push(entry)
    }

    /// The tail moved to a new file (a rewrite). With `--exactly-once` on a standalone
    /// target, an entry without commands moves the target's checkpoint there too, so that a
    /// restart does not look for the old file (which the rewrite deletes).
    fn moved(&mut self, pos: TailPos) -> Result<()> {
        if self.opts.checkpoint_key.is_none() || self.applier.is_cluster() {
            return Ok(());
        }
        self.order += 1;
        self.applier.push(Entry {
            db: 0,
            commands: Vec::new(),
            resp: None,
            order: self.order,
            pos: serde_json::to_vec(&pos).unwrap_or_default(),
        })
    }

    /// A command the filters cannot apply as the source did.
    fn report(&mut self, c: &[Vec<u8>], why: String) -> Result<()> {
        let stop = self.opts.import.stop_on_error;
        report_refusal(
            &self.metrics,
            stop,
            &self.opts.to,
            &mut self.rep.notes,
            c,
            why,
        )
    }

    /// Write the checkpoint file when the acknowledged position moved (at most ten times a
    /// second unless `now`).
    fn checkpoint(&mut self, now: bool) -> Result<()> {
        if !now && self.last_checkpoint.elapsed() < Duration::from_millis(100) {
            return Ok(());
        }
        self.last_checkpoint = Instant::now();
        // Commands count as applied once the target acknowledged them.
        self.metrics.count_applied(self.applier.stats().applied);
        let Some(acked) = self.applier.acked().cloned() else {
            return Ok(());
        };
        self.metrics.checkpoint.set(acked.order as i64);
        let Some(path) = &self.opts.checkpoint else {
            return Ok(());
        };
        let pos = match &self.idle {
            Some((order, pos)) if *order == acked.order => pos.clone(),
            _ => match serde_json::from_slice::<TailPos>(&acked.pos) {
                Ok(p) => p,
                Err(_) => return Ok(()),
            },
        };
        write_checkpoint(
            path,
            &CheckpointFile {
                source: self.source.clone(),
                order: acked.order,
                pos,
            },
        )
    }

    /// The status line on stderr, and the lag gauges.
    fn status(&mut self, pos: &TailPos) {
        let file = if self.path.is_dir() {
            self.path.join(&pos.file)
        } else {
            self.path.clone()
        };
        let lag = std::fs::metadata(&file)
            .map(|m| m.len().saturating_sub(pos.offset))
            .unwrap_or(0);
        self.metrics.lag_bytes.set(lag as i64);
        let lag_s = match (self.newest_ts, lag) {
            (_, 0) => 0.0,
            (Some(t), _) => (crate::time::now_ms() / 1000 - t).max(0) as f64,
            (None, _) => 0.0,
        };
        self.metrics.lag_seconds.set(lag_s);
        if !self.common.quiet {
            let s = self.applier.stats();
            eprintln!(
                "follow: {} at byte {}, {} commands applied, lag {lag} bytes / {lag_s:.0} s",
                pos.file, pos.offset, s.applied
            );
        }
    }
}

/// A source entry after the key map: see [`map_entry`].
pub(crate) struct Mapped {
    /// The target db and the commands that go on; `None` when nothing does (every command
    /// dropped, or only `MULTI`/`EXEC` left).
    pub kept: Option<(u64, Vec<Vec<Vec<u8>>>)>,
    /// Commands dropped by the filters.
    pub filtered: u64,
}

/// Commands the filters cannot apply as the source did, each with the reason.
pub(crate) type Refused = Vec<(Vec<Vec<u8>>, String)>;

/// One source entry (a command, or a transaction with its `MULTI` and `EXEC`) in source db
/// `db`, mapped through `map` (filters, renames, db mapping). `follow` and `sync --follow`
/// share it.
pub(crate) fn map_entry(
    map: &KeyMap,
    txn: &mut Transaction,
    db: u64,
    commands: &[Vec<Vec<u8>>],
) -> (Mapped, Refused) {
    let mut mapped: Vec<Vec<Vec<u8>>> = Vec::with_capacity(commands.len());
    let (mut filtered, mut refused) = (0, Vec::new());
    let mut tdb = map.db(db);
    for c in commands {
        let args: Vec<&[u8]> = c.iter().map(Vec::as_slice).collect();
        let fate = map.command(db, &args);
        let kept = matches!(fate, CommandFate::Keep { .. });
        if let Some(why) = txn.note(args.first().copied().unwrap_or_default(), kept) {
            refused.push((c.clone(), why));
        }
        match fate {
            CommandFate::Keep { db, args } => {
                tdb = db;
                mapped.push(args.iter().map(|a| a.to_vec()).collect());
            }
            CommandFate::Drop => filtered += 1,
            CommandFate::Refuse(why) => refused.push((c.clone(), why)),
        }
    }
    let only_control = mapped.iter().all(|c| {
        c.first()
            .is_some_and(|n| n.eq_ignore_ascii_case(b"MULTI") || n.eq_ignore_ascii_case(b"EXEC"))
    });
    let kept = (!only_control).then_some((tdb, mapped));
    (Mapped { kept, filtered }, refused)
}

/// A command the filters cannot apply as the source did: an error with `stop_on_error`
/// (`--on-error stop`), else a warning kept in `notes`; counted in the metrics either way.
pub(crate) fn report_refusal(
    metrics: &Metrics,
    stop_on_error: bool,
    to: &RedisUrl,
    notes: &mut Vec<String>,
    c: &[Vec<u8>],
    why: String,
) -> Result<()> {
    metrics.errors.inc();
    let label = c.iter().take(2).cloned().collect::<Vec<_>>().join(&b' ');
    let msg = format!("command {}: {why}", crate::text::quoted(&label));
    if stop_on_error {
        return Err(Error::target(to.redacted(), msg));
    }
    tracing::warn!("{msg}");
    notes.push(msg);
    Ok(())
}
