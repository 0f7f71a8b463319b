//! `rdbferry fetch`: its flags, and the report it prints.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use rdbferry::error::Error;
use rdbferry::job::Common;
use rdbferry::job::fetch::{self, FetchOptions};
use rdbferry::net::RedisUrl;
use rdbferry::net::url::Role;

use super::{FromTlsArgs, NetArgs, fail, seconds, signals, usage};

#[derive(Args)]
pub(super) struct FetchArgs {
    /// The source: redis://[user[:password]@]host[:port], rediss:// for TLS (the password
    /// may come from RDBFERRY_FROM_PASSWORD instead).
    #[arg(long)]
    from: String,
    #[command(flatten)]
    from_tls: FromTlsArgs,
    /// Output file, or - for standard output (then the summary goes to stderr).
    #[arg(short = 'o', long)]
    output: PathBuf,
    /// How long, in seconds, the source may take to save and start sending its snapshot.
    #[arg(long, default_value_t = 3600.0, value_name = "SECS")]
    save_timeout: f64,
    /// The name PSYNC has on the source, when it is renamed (rename-command; Redis then
    /// serves it as SYNC: the snapshot comes without a replication id). Without it, a source
    /// that knows no PSYNC is asked with SYNC.
    #[arg(long, default_value = "PSYNC", value_name = "NAME")]
    psync_command: String,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// No progress bar, no summary line (the JSON of --json is still printed).
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    net: NetArgs,
}

impl FetchArgs {
    fn build(&self) -> Result<FetchOptions, Error> {
        let env_pw = std::env::var(Role::Source.password_env()).ok();
        let from = RedisUrl::parse_as(&self.from, env_pw, Role::Source)?
            .with_tls(&self.from_tls.build())?
            .with_timeout(self.net.timeout()?);
        if self.output.is_dir() {
            return Err(Error::Usage(format!(
                "-o {}: is a directory; name the file to write",
                self.output.display()
            )));
        }
        if self.psync_command.is_empty() || self.psync_command.contains(char::is_whitespace) {
            return Err(Error::Usage(format!(
                "--psync-command {:?}: give the command's name",
                self.psync_command
            )));
        }
        Ok(FetchOptions {
            from,
            output: self.output.clone(),
            save_within: seconds("--save-timeout", self.save_timeout)?,
            psync_command: self.psync_command.clone().into_bytes(),
        })
    }
}

pub(super) fn run_fetch(args: &FetchArgs) -> ExitCode {
    let opts = match args.build() {
        Ok(o) => o,
        Err(e) => return usage(&e),
    };
    let common = Common {
        quiet: args.quiet,
        cancel: signals::cancel_token(),
        ..Common::default()
    };
    match fetch::fetch(&common, &opts) {
        Ok(r) => {
            let to_stdout = r.output == "-";
            let text = if args.json {
                serde_json::to_string(&FetchJson::of(&r)).unwrap_or_default()
            } else if !args.quiet {
                r.to_line()
            } else {
                return ExitCode::SUCCESS;
            };
            if to_stdout {
                eprintln!("{text}");
            } else {
                println!("{text}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

/// `fetch --json`: the report, with the rate.
#[derive(serde::Serialize)]
struct FetchJson<'a> {
    #[serde(flatten)]
    report: &'a fetch::FetchReport,
    mb_per_s: f64,
}

impl<'a> FetchJson<'a> {
    fn of(report: &'a fetch::FetchReport) -> Self {
        FetchJson {
            report,
            mb_per_s: report.mb_per_s(),
        }
    }
}
