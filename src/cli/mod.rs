//! Command-line front end: parses flags with `clap` and calls the library.

use clap::Parser;

/// rdbferry: read, convert and move Redis RDB and AOF data.
#[derive(Parser)]
#[command(name = "rdbferry", version, about)]
struct Cli {}

/// Parse arguments and run; returns the process exit code.
pub fn run() -> i32 {
    let _cli = Cli::parse();
    0
}
