//! `rdbferry sync`: its flags, the report, and the `verify` command it suggests.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use rdbferry::error::Error;
use rdbferry::job::import::Via;
use rdbferry::job::sync::{self, SyncOptions, SyncReport};
use rdbferry::net::RedisUrl;
use rdbferry::net::url::Role;

use super::follow::{CheckpointArgs, print_errors};
use super::{CommonArgs, FromTlsArgs, WriteArgs, fail, seconds, usage};

/// `--via` of `sync`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum SyncViaArg {
    Auto,
    FullSync,
    Commands,
    Scan,
}

/// `rdbferry sync`.
#[derive(Args)]
pub(super) struct SyncArgs {
    /// The source: redis://[user[:password]@]host[:port], rediss:// for TLS (the password
    /// may come from RDBFERRY_FROM_PASSWORD instead).
    #[arg(long)]
    from: String,
    #[command(flatten)]
    from_tls: FromTlsArgs,
    #[command(flatten)]
    write: WriteArgs,
    /// How the source is read and the target written. full-sync: the target loads the
    /// source's snapshot itself, relayed as it arrives, as a replica of rdbferry, then is
    /// detached (only an empty standalone target, no filters, renames or db mapping; the
    /// fastest way). commands: the snapshot as RESTORE and rewrite commands. scan: for a
    /// source that refuses replication, read it with SCAN + DUMP (no snapshot: keys written
    /// meanwhile may be missed or stale; no --follow). auto: full sync when it may be used,
    /// else commands; scan when the source refuses replication (without --follow).
    #[arg(long, value_enum, default_value_t = SyncViaArg::Auto)]
    via: SyncViaArg,
    /// With a scan: read at most this many keys a second (all dbs together), so as not to
    /// starve the source.
    #[arg(long, value_name = "KEYS")]
    scan_rate: Option<u64>,
    /// After the snapshot, apply the source's replication stream until SIGINT/SIGTERM (then
    /// drain, write the checkpoint, exit 0).
    #[arg(long)]
    follow: bool,
    #[command(flatten)]
    checkpoint: CheckpointArgs,
    /// When the source cannot continue from the checkpoint (its backlog no longer holds the
    /// offset, or its replication id changed), take a full copy again over the target
    /// instead of stopping (keys deleted on the source meanwhile stay on the target).
    #[arg(long)]
    resync_on_loss: bool,
    /// Keep a copy of the snapshot in DIR (<replid>-<offset>.rdb, complete or not at all).
    #[arg(long, value_name = "DIR")]
    spool: Option<PathBuf>,
    /// The name PSYNC has on the source, when it is renamed (rename-command; Redis then
    /// serves it as SYNC: the snapshot comes without a replication id, and cannot be
    /// continued from).
    #[arg(long, default_value = "PSYNC", value_name = "NAME")]
    psync_command: String,
    /// How long, in seconds, the source may take to save and start sending its snapshot.
    #[arg(long, default_value_t = 3600.0, value_name = "SECS")]
    save_timeout: f64,
    /// Go on despite a failed precheck of the target.
    #[arg(long)]
    force: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    common: CommonArgs,
}

impl SyncArgs {
    fn build(&self) -> Result<(rdbferry::job::Common, SyncOptions), Error> {
        let mut common = self.common.build()?;
        let mut import = self.write.build(&mut common)?;
        let scan = matches!(self.via, SyncViaArg::Scan);
        import.via = match self.via {
            SyncViaArg::Auto => Via::Auto,
            SyncViaArg::FullSync => Via::FullSync,
            SyncViaArg::Commands | SyncViaArg::Scan => Via::Commands,
        };
        if scan
            && (self.follow
                || self.checkpoint.checkpoint.is_some()
                || self.checkpoint.key().is_some())
        {
            return Err(Error::Usage(
                "--via scan takes no --follow, --checkpoint or --exactly-once: a scan has no \
                 replication stream or position to continue from"
                    .into(),
            ));
        }
        let env_pw = std::env::var(Role::Source.password_env()).ok();
        let from = RedisUrl::parse_as(&self.from, env_pw, Role::Source)?
            .with_tls(&self.from_tls.build())?
            .with_timeout(self.write.net.timeout()?);
        if self.psync_command.is_empty() || self.psync_command.contains(char::is_whitespace) {
            return Err(Error::Usage(format!(
                "--psync-command {:?}: give the command's name",
                self.psync_command
            )));
        }
        if let Some(dir) = &self.spool
            && !dir.is_dir()
        {
            return Err(Error::Usage(format!(
                "--spool {}: not a directory",
                dir.display()
            )));
        }
        Ok((
            common,
            SyncOptions {
                from,
                follow: self.follow,
                checkpoint: self.checkpoint.checkpoint.clone(),
                checkpoint_key: self.checkpoint.key(),
                metrics_addr: self.checkpoint.metrics_addr,
                spool: self.spool.clone(),
                psync_command: self.psync_command.clone().into_bytes(),
                save_within: seconds("--save-timeout", self.save_timeout)?,
                resync_on_loss: self.resync_on_loss,
                force: self.force,
                name: None,
                precheck: None,
                scan,
                scan_rate: self.scan_rate,
                import,
            },
        ))
    }

    /// The `rdbferry verify` command that compares the target with the source, with the
    /// same filters, renames and db mapping.
    fn verify_command(&self, opts: &SyncOptions) -> String {
        let mut cmd = format!(
            "rdbferry verify {} --to {}",
            opts.from.redacted(),
            opts.import.to.redacted()
        );
        let c = &self.common;
        let flags: [(&str, Vec<String>); 7] = [
            ("--db", c.dbs.iter().map(u64::to_string).collect()),
            ("--key", c.keys.clone()),
            ("--key-regex", c.key_regexes.clone()),
            ("--exclude-key", c.exclude_keys.clone()),
            ("--type", c.types.clone()),
            ("--rename", c.renames.clone()),
            ("--db-map", c.db_maps.clone()),
        ];
        for (flag, values) in flags {
            for v in values {
                cmd += &format!(" {flag} '{}'", v.replace('\'', r"'\''"));
            }
        }
        cmd
    }
}

pub(super) fn run_sync(args: &SyncArgs) -> ExitCode {
    let (common, opts) = match args.build() {
        Ok(x) => x,
        Err(e) => return usage(&e),
    };
    match sync::sync(&common, &opts) {
        Ok(r) => {
            print_errors(&r.apply.messages);
            if args.json {
                println!("{}", serde_json::to_string(&r).unwrap_or_default());
            } else if !common.quiet {
                eprintln!("{}", summary(&r));
            }
            if (r.stopped == "snapshot" || r.stopped == "scan") && !args.json {
                let pw = if opts.from.has_password() || opts.import.to.has_password() {
                    " (passwords from RDBFERRY_FROM_PASSWORD and RDBFERRY_TO_PASSWORD)"
                } else {
                    ""
                };
                let done = if r.stopped == "scan" {
                    "scan copied"
                } else {
                    "snapshot applied"
                };
                println!(
                    "{done}; to compare the target with the source{pw}:\n  {}",
                    args.verify_command(&opts)
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

/// The summary line.
fn summary(r: &SyncReport) -> String {
    let snapshot = match &r.snapshot {
        Some(s) if s.via == Via::FullSync => format!(
            "snapshot: {} keys loaded by full sync in {:.3} s; ",
            s.synced, s.elapsed_s
        ),
        Some(s) => format!(
            "snapshot: {} keys written by commands{} ({} filtered) in {:.3} s; ",
            s.written,
            s.full_sync_declined
                .as_ref()
                .map(|why| format!(" (no full sync: {why})"))
                .unwrap_or_default(),
            s.filtered,
            s.elapsed_s
        ),
        None => String::new(),
    };
    let at = r
        .position
        .as_ref()
        .map(|p| format!(", at offset {} of {}", p.offset, p.replid))
        .unwrap_or_default();
    let scan = match &r.scan {
        Some(s) => format!(
            "scan: {} keys read, {} gone before their DUMP; ",
            s.keys, s.vanished
        ),
        None => String::new(),
    };
    let mut line = format!(
        "sync: stopped ({}); {snapshot}{scan}{} full copies, {} continues, {} stream commands \
         applied, {} filtered, {} errors{at}",
        r.stopped, r.full_syncs, r.continues, r.apply.applied, r.filtered, r.apply.errors
    );
    // A Cluster source: a line per master.
    for m in &r.masters {
        line += &format!(
            "\n  {}: {}",
            m.source,
            summary(m).trim_start_matches("sync: ")
        );
    }
    line
}
