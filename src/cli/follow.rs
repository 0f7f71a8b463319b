//! `rdbferry follow`, and `import --until` (which runs follow's loop once): their flags.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use rdbferry::error::Error;
use rdbferry::job::Common;
use rdbferry::job::follow::{self, FollowOptions};

use super::{CommonArgs, ImportArgs, WriteArgs, fail, usage};

/// `rdbferry follow`.
#[derive(Args)]
pub(super) struct FollowArgs {
    /// An AOF file (plain or with an RDB preamble) or a Redis 7 appendonlydir.
    path: String,
    #[command(flatten)]
    write: WriteArgs,
    #[command(flatten)]
    checkpoint: CheckpointArgs,
    /// Without a checkpoint: apply the base and every incr file, then follow (default).
    #[arg(long, conflicts_with = "from_end")]
    from_start: bool,
    /// Without a checkpoint: apply only what is written from now on.
    #[arg(long)]
    from_end: bool,
    /// Stop before the first command the source wrote after TIME (RFC 3339, or Unix
    /// seconds), by its #TS: annotations (aof-timestamp-enabled yes).
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Apply what is there and exit.
    #[arg(long)]
    once: bool,
    /// When a rewrite cannot be joined (a single-file AOF) or a checkpoint's file is gone,
    /// start over from the new file instead of stopping (keys deleted on the source
    /// meanwhile may remain on the target).
    #[arg(long)]
    resync_on_loss: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    common: CommonArgs,
}

/// The checkpoint and metrics flags of incremental sync (`follow`, `sync`).
#[derive(Args)]
pub(super) struct CheckpointArgs {
    /// Where the position is kept (written after the target acknowledges, atomically); a
    /// restart with the same file continues where it stopped.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// Each batch and its position in one MULTI/EXEC on the target (the position kept in
    /// the key --checkpoint-key names; one per slot on a Cluster): after a crash at any
    /// instant no command is applied twice and none is missed.
    #[arg(long)]
    exactly_once: bool,
    /// The key that holds the position with --exactly-once.
    #[arg(long, value_name = "NAME", default_value = "rdbferry:checkpoint")]
    checkpoint_key: String,
    /// Serve Prometheus metrics (lag, commands applied, errors, checkpoint) at HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl CheckpointArgs {
    /// The checkpoint key, with --exactly-once.
    pub fn key(&self) -> Option<Vec<u8>> {
        self.exactly_once
            .then(|| self.checkpoint_key.as_bytes().to_vec())
    }
}

/// The errors an applier reported, on stderr.
pub(super) fn print_errors(messages: &[String]) {
    for m in messages {
        eprintln!("rdbferry: error: {m}");
    }
}

/// A point in time: Unix seconds, or RFC 3339 (`2026-12-03T10:00:00Z`, `...+02:00`).
fn parse_time(flag: &str, s: &str) -> Result<i64, Error> {
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    let bad = || {
        Error::Usage(format!(
            "{flag} {s:?}: give Unix seconds or an RFC 3339 time"
        ))
    };
    // humantime reads UTC (`Z`); an offset is applied by hand.
    let (base, offset) = match s.len().checked_sub(6).map(|i| s.split_at(i)) {
        Some((b, o))
            if (o.starts_with('+') || o.starts_with('-')) && o.as_bytes().get(3) == Some(&b':') =>
        {
            let h: i64 = o[1..3].parse().map_err(|_| bad())?;
            let m: i64 = o[4..6].parse().map_err(|_| bad())?;
            let sign = if o.starts_with('-') { -1 } else { 1 };
            (format!("{b}Z"), sign * (h * 3600 + m * 60))
        }
        _ => (s.to_string(), 0),
    };
    let t = humantime::parse_rfc3339_weak(base.trim_end_matches('Z'))
        .or_else(|_| humantime::parse_rfc3339(&base))
        .map_err(|_| bad())?;
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| bad())?
        .as_secs() as i64;
    Ok(secs - offset)
}

/// Network flags of every command that talks to a live server.
impl FollowArgs {
    fn build(&self) -> Result<(Common, FollowOptions), Error> {
        let mut common = self.common.build()?;
        let import = self.write.build(&mut common)?;
        Ok((
            common,
            FollowOptions {
                to: import.to.clone(),
                checkpoint: self.checkpoint.checkpoint.clone(),
                checkpoint_key: self.checkpoint.key(),
                from: if self.from_end {
                    follow::From::End
                } else {
                    follow::From::Start
                },
                until: self
                    .until
                    .as_deref()
                    .map(|t| parse_time("--until", t))
                    .transpose()?,
                once: self.once,
                resync_on_loss: self.resync_on_loss,
                metrics_addr: self.checkpoint.metrics_addr,
                import,
            },
        ))
    }
}

pub(super) fn run_follow(args: &FollowArgs) -> ExitCode {
    let (common, opts) = match args.build() {
        Ok(x) => x,
        Err(e) => return usage(&e),
    };
    match follow::follow(&args.path, &common, &opts) {
        Ok(r) => {
            print_errors(&r.apply.messages);
            if args.json {
                println!("{}", serde_json::to_string(&r).unwrap_or_default());
            } else if !common.quiet {
                eprintln!(
                    "follow: stopped ({}), {} commands applied, {} skipped, {} errors",
                    r.stopped, r.apply.applied, r.apply.skipped, r.apply.errors
                );
            }
            if r.apply.errors > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => fail(&e),
    }
}

/// `import --until`: an AOF or appendonlydir applied once, up to a time, by `follow`'s loop.
pub(super) fn run_import_until(args: &ImportArgs, until: &str) -> ExitCode {
    let (common, opts) = match args.build() {
        Ok(x) => x,
        Err(e) => return usage(&e),
    };
    let until = match parse_time("--until", until) {
        Ok(t) => t,
        Err(e) => return usage(&e),
    };
    let [input] = &args.inputs[..] else {
        return usage(&Error::Usage(
            "--until takes one AOF or appendonlydir".into(),
        ));
    };
    let f = FollowOptions {
        to: opts.to.clone(),
        checkpoint: None,
        checkpoint_key: None,
        from: follow::From::Start,
        until: Some(until),
        once: true,
        resync_on_loss: false,
        metrics_addr: None,
        import: opts,
    };
    match follow::follow(input, &common, &f) {
        Ok(r) => {
            print_errors(&r.apply.messages);
            if args.json {
                println!("{}", serde_json::to_string(&r).unwrap_or_default());
            }
            if r.apply.errors > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => fail(&e),
    }
}
