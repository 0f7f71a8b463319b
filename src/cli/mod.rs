//! Command-line front end: parses flags with `clap`, builds job configurations, prints
//! reports, installs the signal handlers (`signals`). No loop over entries lives here; that is
//! the library's job.

mod fetch;
mod follow;
mod signals;
mod sync;

use fetch::{FetchArgs, run_fetch};
use follow::{FollowArgs, run_follow, run_import_until};
use sync::{SyncArgs, run_sync};

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use rdbferry::error::Error;
use rdbferry::job::changes;
use rdbferry::job::convert::ConvertOptions;
use rdbferry::job::convert_rdb::{Conflict, parse_rdb_version};
use rdbferry::job::import::{self, ImportOptions, Mode, OnConflict};
use rdbferry::job::inspect::InspectOptions;
use rdbferry::job::split::{self, SlotSpec, SplitOptions, parse_slots};
use rdbferry::job::{Common, check, convert, inspect};
use rdbferry::net::RedisUrl;
use rdbferry::net::TlsOptions;
use rdbferry::net::url::{PASSWORD_ENV, Role};
use rdbferry::rdb::ReadOptions;
use rdbferry::sink::Format;
use rdbferry::transform::filter::parse_shard;
use rdbferry::transform::{Filter, FilterSpec, KeyMap};
use rdbferry::verify::{VerifyOptions, verify, verify_live};

/// rdbferry: read, convert and move Redis RDB and AOF data.
#[derive(Parser)]
#[command(name = "rdbferry", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Walk every record and value and verify the checksum. Exit 0 when valid, 1 when not.
    Check {
        /// RDB file, AOF file, appendonlydir, JSONL (as convert writes it), or - for stdin.
        #[arg(required = true)]
        inputs: Vec<String>,
        /// Print the report as JSON lines.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Sizes per db, type and encoding, TTLs, biggest keys, key prefixes.
    Inspect {
        /// RDB file, AOF file, appendonlydir, JSONL (as convert writes it), or - for stdin.
        input: String,
        /// Rows in the biggest-keys lists.
        #[arg(long, default_value_t = 10)]
        top: usize,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
        /// Prefix depth: key parts split on ':'.
        #[arg(long, default_value_t = 1)]
        prefix_depth: usize,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Convert to JSON lines, to the Redis commands that rebuild the data, or to an RDB file
    /// of any version from 6 to 12, or Valkey 9's.
    Convert {
        /// RDB file, AOF file, appendonlydir, JSONL (as convert writes it), or - for stdin.
        #[arg(required = true)]
        inputs: Vec<String>,
        /// Output format.
        #[arg(long, value_enum)]
        format: FormatArg,
        /// Output file (one input) or directory (several inputs); stdout by default or with
        /// -o -. A file is replaced only once it is complete; an input is never overwritten.
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
        /// Leave out keys whose TTL has already passed.
        #[arg(long)]
        skip_expired: bool,
        /// With --format rdb: the RDB version to write, 6 to 12 (Redis 6.x writes 9, 7.0
        /// writes 10, 7.2 11, 7.4 12; Valkey 7.2 to 8.1 load 11), or valkey9 for Valkey 9.x
        /// (header VALKEY080; its own type for hashes with field TTLs); default the input's.
        #[arg(long, value_name = "N", value_parser = parse_rdb_version)]
        rdb_version: Option<u32>,
        /// With --format rdb: leave out what the version cannot hold (a stream below 9, a
        /// function below 10, hash-field TTLs below 12...) and report it key by key, instead
        /// of failing.
        #[arg(long)]
        lossy: bool,
        /// With --format rdb: write all inputs into one RDB file (-o FILE). A key present in
        /// two inputs is an error unless --on-conflict says which one is kept.
        #[arg(long)]
        merge: bool,
        /// With --merge: keep the key of the last input that has it (replace) or of the first
        /// (skip).
        #[arg(long, value_enum, requires = "merge")]
        on_conflict: Option<MergeConflictArg>,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Write one RDB file per Cluster slot range (DIR/slots-LO-HI.rdb), or per master of a
    /// live Cluster (DIR/node-HOST-PORT.rdb, with every range it owns), each loadable at
    /// start-up by the node serving those slots. Keys must go to db 0 (--db, --db-map).
    Split {
        /// RDB file, AOF file without commands, appendonlydir or JSONL.
        input: String,
        /// Slot ranges: 0-5460,5461-10922,10923-16383; or cluster=redis://[user[:password]@]
        /// host:port (rediss:// for TLS; the password may come from RDBFERRY_TO_PASSWORD):
        /// the masters of that live Cluster and their ranges (CLUSTER SHARDS, or CLUSTER
        /// SLOTS before 7.0), one file per master; each file's node (address and id) is
        /// printed.
        #[arg(long, value_name = "SPEC")]
        by_slots: String,
        /// Output directory.
        #[arg(short = 'o', long)]
        output: PathBuf,
        /// The RDB version to write, 6 to 12, or valkey9 (Valkey 9.x); default: with
        /// cluster=, the version that Cluster writes itself; else the input's.
        #[arg(long, value_name = "N", value_parser = parse_rdb_version)]
        rdb_version: Option<u32>,
        /// Leave out what the version cannot hold, and report it, instead of failing.
        #[arg(long)]
        lossy: bool,
        /// Leave out keys whose TTL has already passed.
        #[arg(long)]
        skip_expired: bool,
        #[command(flatten)]
        tls: TlsArgs,
        #[command(flatten)]
        net: NetArgs,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Replay inputs into a live Redis (standalone): RESTORE where the target can load the
    /// encoding, commands otherwise. Exit 1 when any key was not written.
    Import(Box<ImportArgs>),
    /// Compare every key of SOURCE with a live Redis target: present, same type, same value
    /// (compared decoded), TTL within a tolerance. Exit 0 when identical, 1 on any difference
    /// or error. SOURCE is a file (RDB, AOF, appendonlydir, JSONL), - for stdin, or a live
    /// redis:// or rediss:// server (standalone or Cluster, read with SCAN and DUMP). For AOF
    /// inputs only the RDB part's keys that no later command touches are compared; the AOF
    /// commands themselves are not verified.
    Verify(Box<VerifyArgs>),
    /// Put a target back after an interrupted run: detach a target left a replica of a full
    /// sync that is gone (`kill -9`), and put back every setting rdbferry changed on it (what
    /// the target's claim record and this host's journal say). Exit 1 when something could
    /// not be put back.
    Recover(Box<RecoverArgs>),
    /// Keep a target in sync with a source's AOF (a file or a Redis 7 appendonlydir) while
    /// the source writes: the base, then every command as it is appended, across rewrites,
    /// checkpointed (--checkpoint), at least once or --exactly-once. SIGINT/SIGTERM: drain,
    /// write the checkpoint, exit 0.
    Follow(Box<FollowArgs>),
    /// Take a live server's snapshot as a replica does (PSYNC, or SYNC) and write the RDB to
    /// a file: replaced only once the RDB is whole and its checksum verified, never left
    /// partial. Nothing on the server is changed. Exit 1 on any error, 130 when interrupted.
    Fetch(Box<FetchArgs>),
    /// Copy a live source into a target as a replica of the source would (PSYNC; the
    /// snapshot streamed into the import, by commands), then with --follow apply its
    /// replication stream until SIGINT/SIGTERM, checkpointed (--checkpoint): a restart
    /// continues with PSYNC, without a second full copy. Without --follow it stops once the
    /// snapshot is applied and prints the verify command to run.
    Sync(Box<SyncArgs>),
}

#[derive(Args)]
struct RecoverArgs {
    /// The server: redis://[user[:password]@]host[:port] (the password may come from
    /// RDBFERRY_TO_PASSWORD instead).
    #[arg(long)]
    to: String,
    #[command(flatten)]
    tls: TlsArgs,
    /// Also when the full sync into it still seems to be running (its link is up).
    #[arg(long)]
    force: bool,
    /// Print what was done as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    net: NetArgs,
}

#[derive(Args)]
struct VerifyArgs {
    /// RDB file, AOF file, appendonlydir, JSONL (as convert writes it), - for stdin, or a live
    /// server: redis://[user[:password]@]host[:port][/db], rediss:// for TLS (the password may
    /// come from RDBFERRY_FROM_PASSWORD instead; /db reads only that db).
    source: String,
    /// Target: redis://[user[:password]@]host[:port][/db], rediss:// for TLS (the password
    /// may come from RDBFERRY_TO_PASSWORD instead). A /db maps source db 0 there.
    #[arg(long)]
    to: String,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    from_tls: FromTlsArgs,
    /// Allowed TTL difference, seconds.
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    ttl_tolerance: f64,
    /// Differences listed; the rest are only counted.
    #[arg(long, default_value_t = 50, value_name = "N")]
    max_diffs: usize,
    /// How the target is read. snapshot: rdbferry asks the target for an RDB (as a replica
    /// does, with SYNC) and compares it with an RDB file by digest, key by key only if they
    /// differ (the fastest way; needs SYNC rights). commands: key by key. auto: snapshot when
    /// the source is one RDB file without filters and the target gives one, else key by key.
    #[arg(long, value_enum, default_value_t = VerifyViaArg::Auto)]
    via: VerifyViaArg,
    /// How long, in seconds, the target may take to save and start sending its snapshot
    /// (--via snapshot|auto) before verify gives up on it.
    #[arg(long, default_value_t = 3600.0, value_name = "SECS")]
    save_timeout: f64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    net: NetArgs,
    #[command(flatten)]
    common: CommonArgs,
}

impl VerifyArgs {
    /// The live source, when SOURCE is a redis:// or rediss:// URL.
    fn live_source(&self) -> Result<Option<RedisUrl>, Error> {
        let s = &self.source;
        // Any letter case: `REDIS://...` is a server, not a file to open (and print).
        if !rdbferry::net::url::is_url(s) {
            if self.from_tls.is_set() {
                return Err(Error::Usage(
                    "--from-tls-* options are for a live rediss:// source, not a file".into(),
                ));
            }
            return Ok(None);
        }
        let env_pw = std::env::var(Role::Source.password_env()).ok();
        let url = RedisUrl::parse_as(s, env_pw, Role::Source)?;
        Ok(Some(
            url.with_tls(&self.from_tls.build())?
                .with_timeout(self.net.timeout()?),
        ))
    }

    fn build(&self) -> Result<VerifyOptions, Error> {
        let env_pw = std::env::var(PASSWORD_ENV).ok();
        let target = RedisUrl::parse(&self.to, env_pw)?
            .with_tls(&self.tls.build())?
            .with_timeout(self.net.timeout()?);
        if self.ttl_tolerance.is_nan() || self.ttl_tolerance < 0.0 {
            return Err(Error::Usage("--ttl-tolerance must be >= 0".into()));
        }
        Ok(VerifyOptions {
            target,
            ttl_tolerance_ms: (self.ttl_tolerance * 1000.0) as i64,
            max_diffs: self.max_diffs,
            via: match self.via {
                VerifyViaArg::Auto => rdbferry::verify::snapshot::Via::Auto,
                VerifyViaArg::Snapshot => rdbferry::verify::snapshot::Via::Snapshot,
                VerifyViaArg::Commands => rdbferry::verify::snapshot::Via::Commands,
            },
            save_within: seconds("--save-timeout", self.save_timeout)?,
        })
    }
}

#[derive(Args, Clone)]
struct ImportArgs {
    /// RDB file, AOF file, appendonlydir, JSONL (as convert writes it), or - for stdin.
    #[arg(required = true)]
    inputs: Vec<String>,
    #[command(flatten)]
    write: WriteArgs,
    /// How keys reach the target. full-sync: the target loads the input itself, as a replica
    /// of rdbferry, then is detached (only an empty standalone target, one RDB input; the
    /// fastest way). commands: RESTORE and rewrite commands. auto: full sync when it may be
    /// used, else commands.
    #[arg(long, value_enum, default_value_t = ViaArg::Auto)]
    via: ViaArg,
    /// Read and prepare everything, write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Run the precheck only.
    #[arg(long)]
    precheck: bool,
    /// Go on despite a failed precheck.
    #[arg(long)]
    force: bool,
    /// An AOF or appendonlydir up to a point in time: stop before the first command the
    /// source wrote after TIME (RFC 3339, or Unix seconds), by its #TS: annotations
    /// (aof-timestamp-enabled yes). Point-in-time recovery from a backup.
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Print the summary (and precheck) as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    common: CommonArgs,
}

/// How entries are written to a live target: the flags `import` and `follow` share.
#[derive(Args, Clone)]
struct WriteArgs {
    /// Target: redis://[user[:password]@]host[:port][/db], rediss:// for TLS. The password
    /// may come from RDBFERRY_TO_PASSWORD instead. With /db, input db 0 goes there (unless
    /// --db-map says otherwise); other dbs keep their number.
    #[arg(long)]
    to: String,
    #[command(flatten)]
    tls: TlsArgs,
    /// How keys are written: auto (RESTORE what the target can load), restore, rewrite.
    #[arg(long, value_enum, default_value_t = ModeArg::Auto)]
    mode: ModeArg,
    /// What a key that already exists on the target gets.
    #[arg(long, value_enum, default_value_t = ConflictArg::Fail)]
    on_conflict: ConflictArg,
    /// What a key the target refuses does to the run (skipped keys are counted).
    #[arg(long, value_enum, default_value_t = OnErrorArg::Stop)]
    on_error: OnErrorArg,
    /// Parallel connections (keys are spread by a hash of their name; one key's commands
    /// always share a connection).
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Commands in flight per connection.
    #[arg(long, default_value_t = 1000)]
    pipeline: usize,
    /// After a dropped connection, a target restart or a busy/loading target: keep
    /// reconnecting and resending for this many seconds before giving up.
    #[arg(long, default_value_t = 60)]
    retry_timeout: u64,
    #[command(flatten)]
    net: NetArgs,
}

#[derive(Args, Clone)]
struct NetArgs {
    /// Deadline, in seconds, of each connect, read and write on a live server (a server
    /// that stalls longer is an error naming it and what was awaited).
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    timeout: f64,
}

impl NetArgs {
    fn timeout(&self) -> Result<std::time::Duration, Error> {
        seconds("--timeout", self.timeout)
    }
}

/// A duration flag in seconds: above 0, at most a day.
fn seconds(flag: &str, secs: f64) -> Result<std::time::Duration, Error> {
    if !(secs.is_finite() && secs > 0.0 && secs <= 86_400.0) {
        return Err(Error::Usage(format!(
            "{flag} {secs}: give a number of seconds above 0 (at most a day)"
        )));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Auto,
    Restore,
    Rewrite,
}

#[derive(Clone, Copy, ValueEnum)]
enum VerifyViaArg {
    Auto,
    Snapshot,
    Commands,
}

#[derive(Clone, Copy, ValueEnum)]
enum ViaArg {
    Auto,
    FullSync,
    Commands,
}

impl From<ViaArg> for import::Via {
    fn from(v: ViaArg) -> import::Via {
        match v {
            ViaArg::Auto => import::Via::Auto,
            ViaArg::FullSync => import::Via::FullSync,
            ViaArg::Commands => import::Via::Commands,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum ConflictArg {
    Fail,
    Replace,
    Skip,
}

#[derive(Clone, Copy, ValueEnum)]
enum OnErrorArg {
    Stop,
    Skip,
}

fn split_pair(s: &str, flag: &str) -> Result<(String, String), Error> {
    s.split_once('=')
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .ok_or_else(|| Error::Usage(format!("{flag} wants A=B, got {s:?}")))
}

impl WriteArgs {
    /// The target and the write options (`via` and the import-only flags at their
    /// defaults; the caller sets them).
    fn build(&self, common: &mut Common) -> Result<ImportOptions, Error> {
        let to = RedisUrl::parse(&self.to, std::env::var(PASSWORD_ENV).ok())?
            .with_tls(&self.tls.build())?
            .with_timeout(self.net.timeout()?);
        common.map = std::mem::take(&mut common.map).with_db0(to.url_db());
        if self.connections == 0 || self.pipeline == 0 {
            return Err(Error::Usage(
                "--connections and --pipeline must be at least 1".into(),
            ));
        }
        Ok(ImportOptions {
            to,
            mode: match self.mode {
                ModeArg::Auto => Mode::Auto,
                ModeArg::Restore => Mode::Restore,
                ModeArg::Rewrite => Mode::Rewrite,
            },
            on_conflict: match self.on_conflict {
                ConflictArg::Fail => OnConflict::Fail,
                ConflictArg::Replace => OnConflict::Replace,
                ConflictArg::Skip => OnConflict::Skip,
            },
            stop_on_error: matches!(self.on_error, OnErrorArg::Stop),
            dry_run: false,
            force: false,
            stream_min: import::DEFAULT_STREAM_MIN,
            part_bytes: import::PART_BYTES,
            connections: self.connections,
            pipeline: self.pipeline,
            retry_for: std::time::Duration::from_secs(self.retry_timeout),
            via: import::Via::Auto,
            rdb_only: false,
        })
    }
}

impl ImportArgs {
    fn build(&self) -> Result<(Common, ImportOptions), Error> {
        let mut common = self.common.build()?;
        let mut opts = self.write.build(&mut common)?;
        opts.dry_run = self.dry_run;
        opts.force = self.force;
        opts.via = self.via.into();
        Ok((common, opts))
    }
}

fn run_import(args: &ImportArgs) -> ExitCode {
    if let Some(until) = &args.until {
        return run_import_until(args, until);
    }
    let (common, opts) = match args.build() {
        Ok(x) => x,
        Err(e) => return usage(&e),
    };
    let pre = match import::precheck(&args.inputs, &common, &opts) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    if args.precheck {
        if args.json {
            println!("{}", serde_json::to_string_pretty(&pre).unwrap_or_default());
        } else {
            print!("{}", pre.to_table());
        }
        return if pre.failed() {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        };
    }
    if !common.quiet || pre.failed() {
        eprint!("{}", pre.to_table());
    }
    if pre.failed() && !opts.force {
        eprintln!("rdbferry: error: precheck failed; nothing was written (--force to go on)");
        return ExitCode::from(1);
    }
    match import::import(&args.inputs, &common, &opts, &pre) {
        Ok(r) => {
            for m in &r.error_messages {
                eprintln!("rdbferry: error: {m}");
            }
            if r.errors as usize > r.error_messages.len() {
                eprintln!(
                    "rdbferry: error: ... and {} more",
                    r.errors as usize - r.error_messages.len()
                );
            }
            for w in &r.warnings {
                eprintln!("rdbferry: warning: {w}");
            }
            if args.json {
                println!("{}", serde_json::to_string(&r).unwrap_or_default());
            } else if !common.quiet {
                print!("{}", r.to_table());
            }
            // A warning here is a possible loss (a failover): never a silent exit 0.
            if r.errors > 0 || !r.warnings.is_empty() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => fail(&e),
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum MergeConflictArg {
    Replace,
    Skip,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Jsonl,
    Resp,
    Rdb,
}

/// TLS flags of `import` and `verify` (for a rediss:// target).
#[derive(Args, Clone)]
struct TlsArgs {
    /// PEM bundle of the CAs that sign the target's certificate (default: the system's).
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Do not verify the target's certificate (encrypted, but not authenticated).
    #[arg(long)]
    tls_insecure: bool,
    /// PEM client certificate, for a target that asks for one (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

/// TLS flags of `verify` and `fetch` for a live rediss:// source.
#[derive(Args, Clone)]
struct FromTlsArgs {
    /// PEM bundle of the CAs that sign the source's certificate (default: the system's).
    #[arg(long, value_name = "FILE")]
    from_tls_ca: Option<PathBuf>,
    /// Do not verify the source's certificate (encrypted, but not authenticated).
    #[arg(long)]
    from_tls_insecure: bool,
    /// PEM client certificate, for a source that asks for one (with --from-tls-key).
    #[arg(long, value_name = "FILE", requires = "from_tls_key")]
    from_tls_cert: Option<PathBuf>,
    /// PEM private key of --from-tls-cert.
    #[arg(long, value_name = "FILE", requires = "from_tls_cert")]
    from_tls_key: Option<PathBuf>,
}

impl FromTlsArgs {
    /// The options; warns once on stderr when the certificate will not be checked.
    fn build(&self) -> TlsOptions {
        if self.from_tls_insecure {
            eprintln!(
                "rdbferry: warning: --from-tls-insecure: the source's certificate is not \
                 verified; anyone on the path can read the data"
            );
        }
        TlsOptions {
            ca: self.from_tls_ca.clone(),
            insecure: self.from_tls_insecure,
            cert: self.from_tls_cert.clone(),
            key: self.from_tls_key.clone(),
            flags: "--from-tls",
        }
    }

    fn is_set(&self) -> bool {
        self.from_tls_ca.is_some() || self.from_tls_insecure || self.from_tls_cert.is_some()
    }
}

impl TlsArgs {
    fn is_set(&self) -> bool {
        self.tls_ca.is_some() || self.tls_insecure || self.tls_cert.is_some()
    }

    /// The options; warns once on stderr when the certificate will not be checked.
    fn build(&self) -> TlsOptions {
        if self.tls_insecure {
            eprintln!(
                "rdbferry: warning: --tls-insecure: the target's certificate is not verified; \
                 anyone on the path can read and change the data"
            );
        }
        TlsOptions {
            ca: self.tls_ca.clone(),
            insecure: self.tls_insecure,
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
            flags: "--tls",
        }
    }
}

#[derive(Args, Clone)]
struct CommonArgs {
    /// Keep only this db (repeatable).
    #[arg(long = "db")]
    dbs: Vec<u64>,
    /// Keep keys matching this glob (repeatable).
    #[arg(long = "key")]
    keys: Vec<String>,
    /// Keep keys matching this regex (repeatable).
    #[arg(long = "key-regex")]
    key_regexes: Vec<String>,
    /// Drop keys matching this glob (repeatable).
    #[arg(long = "exclude-key")]
    exclude_keys: Vec<String>,
    /// Keep only this type: string, list, set, zset, hash, stream, module (repeatable).
    #[arg(long = "type")]
    types: Vec<String>,
    /// Rename keys: OLD_PREFIX=NEW_PREFIX (repeatable; first match wins), in AOF commands
    /// too. Filters see the original names.
    #[arg(long = "rename", value_name = "OLD=NEW")]
    renames: Vec<String>,
    /// Write db SRC into db DST (repeatable).
    #[arg(long = "db-map", value_name = "SRC=DST")]
    db_maps: Vec<String>,
    /// Keep only the keys whose Cluster slot lies in the I-th of N equal slot ranges
    /// (0 <= I < N): N runs, on N machines, share one job (e.g. a Kubernetes Indexed Job's
    /// --shard $JOB_COMPLETION_INDEX/N).
    #[arg(long, value_name = "I/N")]
    shard: Option<String>,
    /// Go on past a checksum mismatch.
    #[arg(long)]
    ignore_checksum: bool,
    /// No progress bar.
    #[arg(short, long)]
    quiet: bool,
}

impl CommonArgs {
    fn build(&self) -> Result<Common, Error> {
        let filter = Filter::new(&FilterSpec {
            dbs: self.dbs.clone(),
            keys: self.keys.clone(),
            key_regexes: self.key_regexes.clone(),
            exclude_keys: self.exclude_keys.clone(),
            types: self.types.clone(),
            shard: self.shard.as_deref().map(parse_shard).transpose()?,
        })?;
        let mut renames = Vec::new();
        for r in &self.renames {
            let (a, b) = split_pair(r, "--rename")?;
            renames.push((a.into_bytes(), b.into_bytes()));
        }
        let mut db_map = std::collections::BTreeMap::new();
        for m in &self.db_maps {
            let (a, b) = split_pair(m, "--db-map")?;
            let num = |x: &str| {
                x.parse::<u64>()
                    .map_err(|_| Error::Usage(format!("--db-map wants SRC=DST numbers, got {m:?}")))
            };
            db_map.insert(num(&a)?, num(&b)?);
        }
        Ok(Common {
            map: KeyMap::new(filter, renames, db_map),
            read: ReadOptions {
                ignore_checksum: self.ignore_checksum,
            },
            quiet: self.quiet,
            cancel: signals::cancel_token(),
        })
    }
}

/// Print an error; the exit code for it: 130 when the run was interrupted (Ctrl-C,
/// SIGTERM, SIGHUP), 1 otherwise.
fn fail(e: &Error) -> ExitCode {
    if matches!(e, Error::Cancelled) {
        eprintln!("rdbferry: interrupted");
        return ExitCode::from(130);
    }
    eprintln!("rdbferry: error: {e}");
    ExitCode::from(1)
}

/// Print a usage error; exit code 2.
fn usage(e: &Error) -> ExitCode {
    eprintln!("rdbferry: error: {e}");
    ExitCode::from(2)
}

fn run_check(inputs: &[String], json: bool, common: &CommonArgs) -> ExitCode {
    let common = match common.build() {
        Ok(c) => c,
        Err(e) => return usage(&e),
    };
    let mut code = ExitCode::SUCCESS;
    for name in inputs {
        match check::check(name, &common) {
            Ok(r) if json => println!("{}", serde_json::to_string(&r).unwrap_or_default()),
            Ok(r) => println!("{}", check_line(&r)),
            Err(e) => code = fail(&e),
        }
        if common.cancel.is_cancelled() {
            return ExitCode::from(130);
        }
    }
    code
}

/// The one-line summary of `check`.
fn check_line(r: &check::CheckReport) -> String {
    let dbs: Vec<String> = r
        .keys_per_db
        .iter()
        .map(|(db, n)| format!("db{db}: {n}"))
        .collect();
    let mut line = format!(
        "{}: OK, RDB {} (redis-ver {}), {} keys ({}), {} with a TTL",
        r.input,
        r.rdb_version.as_deref().unwrap_or("none"),
        r.redis_ver.as_deref().unwrap_or("-"),
        r.keys,
        if dbs.is_empty() {
            "empty".into()
        } else {
            dbs.join(", ")
        },
        r.keys_with_ttl,
    );
    if r.functions > 0 {
        line += &format!(", {} functions", r.functions);
    }
    if r.commands > 0 {
        line += &format!(", {} AOF commands", r.commands);
    }
    if let Some((at, n)) = r.ignored_tail {
        line += &format!(", {n} bytes after EOF at byte {at} ignored");
    }
    if let Some(at) = r.truncated_at {
        line += &format!(", truncated AOF tail ignored from byte {at}");
    }
    line + &format!(", {:.3} s, {:.1} MB/s", r.elapsed_s, r.mb_per_s())
}

fn run_inspect(input: &str, opts: &InspectOptions, json: bool, common: &CommonArgs) -> ExitCode {
    let res = common
        .build()
        .and_then(|c| inspect::inspect(input, &c, opts));
    match res {
        Ok(r) if json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&r.to_json()).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Ok(r) => {
            print!("{}", r.to_table());
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn run_convert(inputs: &[String], opts: &ConvertOptions, common: &CommonArgs) -> ExitCode {
    let common = match common.build() {
        Ok(c) => c,
        Err(e) => return usage(&e),
    };
    let mut code = ExitCode::SUCCESS;
    for r in convert::convert(inputs, &common, opts) {
        match r {
            Ok(r) => {
                for d in &r.dropped {
                    eprintln!("rdbferry: {}: left out: {d}", r.input);
                }
                if !r.dropped.is_empty() {
                    eprintln!(
                        "rdbferry: {}: {} line(s) of things left out or cut",
                        r.input,
                        r.dropped.len()
                    );
                }
                if inputs.len() > 1 && !common.quiet {
                    eprintln!(
                        "{} -> {}: {} keys, {} commands",
                        r.input, r.output, r.keys, r.commands
                    );
                }
            }
            Err(Error::Io { err, .. }) if err.kind() == std::io::ErrorKind::BrokenPipe => {
                // `rdbferry convert ... | head`: the reader went away; not an error.
            }
            Err(e) => code = fail(&e),
        }
    }
    code
}

/// `--by-slots`: ranges, or `cluster=URL` with the TLS and timeout flags.
fn slot_spec(spec: &str, tls: &TlsArgs, net: &NetArgs) -> Result<SlotSpec, Error> {
    let Some(url) = spec.strip_prefix("cluster=") else {
        if tls.is_set() {
            return Err(Error::Usage(
                "--tls-* options are for --by-slots cluster=rediss://...".into(),
            ));
        }
        return parse_slots(spec).map(SlotSpec::Ranges);
    };
    let url = RedisUrl::parse(url, std::env::var(PASSWORD_ENV).ok())?
        .with_tls(&tls.build())?
        .with_timeout(net.timeout()?);
    Ok(SlotSpec::Cluster(url))
}

fn run_split(input: &str, opts: &SplitOptions, common: &CommonArgs) -> ExitCode {
    let common = match common.build() {
        Ok(c) => c,
        Err(e) => return usage(&e),
    };
    match split::split(input, &common, opts) {
        Ok(r) => {
            for d in &r.dropped {
                eprintln!("rdbferry: {input}: left out: {d}");
            }
            if !common.quiet {
                eprintln!("{input}: written as {}", r.version);
                for o in &r.outputs {
                    eprintln!("{}", o.describe());
                }
                if r.outside > 0 {
                    eprintln!("{} keys in slots of no range, left out", r.outside);
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn run_verify(args: &VerifyArgs) -> ExitCode {
    let res = args
        .common
        .build()
        .and_then(|c| {
            let opts = args.build()?;
            let c = Common {
                map: c.map.with_db0(opts.target.url_db()),
                ..c
            };
            Ok((c, opts, args.live_source()?))
        })
        .and_then(|(c, o, live)| match live {
            Some(src) => verify_live(&src, &c, &o),
            None => verify(&args.source, &c, &o),
        });
    match res {
        Ok(r) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            } else {
                print!("{}", r.to_text());
            }
            if r.identical() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => fail(&e),
    }
}

fn run_recover(args: &RecoverArgs) -> ExitCode {
    let url = RedisUrl::parse(&args.to, std::env::var(PASSWORD_ENV).ok())
        .and_then(|u| u.with_tls(&args.tls.build()))
        .and_then(|u| Ok(u.with_timeout(args.net.timeout()?)));
    let url = match url {
        Ok(u) => u,
        Err(e) => return usage(&e),
    };
    match changes::recover(&url, args.force) {
        Ok(r) => {
            if args.json {
                println!("{}", serde_json::to_string(&r).unwrap_or_default());
            } else if r.actions.is_empty() && r.left.is_empty() {
                println!("{}: nothing of rdbferry's to put back", r.server);
            } else {
                for a in &r.actions {
                    println!("{}: {a}", r.server);
                }
            }
            for l in &r.left {
                eprintln!("rdbferry: error: {}: could not put back {l}", r.server);
            }
            if r.left.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => fail(&e),
    }
}

/// Warnings from the library (`tracing`: a lost link retried, a refused stranger, a transaction
/// applied in parts) on stderr, as `WARN message`; `RDBFERRY_LOG` (e.g. `debug`,
/// `rdbferry::sink=trace`) shows more. Messages never hold a password (URLs are redacted
/// before they reach an error).
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RDBFERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .with_target(false)
        .try_init();
}

/// Parse arguments and run; returns the process exit code.
pub fn run() -> ExitCode {
    signals::install();
    init_logs();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Import(args) => run_import(&args),
        Cmd::Check {
            inputs,
            json,
            common,
        } => run_check(&inputs, json, &common),
        Cmd::Inspect {
            input,
            top,
            json,
            prefix_depth,
            common,
        } => run_inspect(&input, &InspectOptions { top, prefix_depth }, json, &common),
        Cmd::Convert {
            inputs,
            format,
            output,
            skip_expired,
            rdb_version,
            lossy,
            merge,
            on_conflict,
            common,
        } => {
            let format = match format {
                FormatArg::Jsonl => Format::Jsonl,
                FormatArg::Resp => Format::Resp,
                FormatArg::Rdb => Format::Rdb,
            };
            if format != Format::Rdb && (rdb_version.is_some() || lossy || merge) {
                return usage(&Error::Usage(
                    "--rdb-version, --lossy and --merge go with --format rdb".into(),
                ));
            }
            let opts = ConvertOptions {
                format,
                output,
                skip_expired,
                rdb_version,
                lossy,
                merge,
                on_conflict: match on_conflict {
                    None => Conflict::Error,
                    Some(MergeConflictArg::Replace) => Conflict::Replace,
                    Some(MergeConflictArg::Skip) => Conflict::Skip,
                },
            };
            run_convert(&inputs, &opts, &common)
        }
        Cmd::Split {
            input,
            by_slots,
            output,
            rdb_version,
            lossy,
            skip_expired,
            tls,
            net,
            common,
        } => {
            let opts = slot_spec(&by_slots, &tls, &net).map(|by| SplitOptions {
                by,
                dir: output,
                rdb_version,
                lossy,
                skip_expired,
            });
            match opts {
                Ok(o) => run_split(&input, &o, &common),
                Err(e) => usage(&e),
            }
        }
        Cmd::Verify(args) => run_verify(&args),
        Cmd::Recover(args) => run_recover(&args),
        Cmd::Follow(args) => run_follow(&args),
        Cmd::Fetch(args) => run_fetch(&args),
        Cmd::Sync(args) => run_sync(&args),
    }
}
