//! The `rdbferry` binary: a thin shell over the library (see `src/cli/`).

fn main() {
    std::process::exit(rdbferry_cli::run());
}

#[path = "cli/mod.rs"]
mod rdbferry_cli;
