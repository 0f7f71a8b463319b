//! The `rdbferry` binary: a thin shell over the library (see `src/cli/`).

mod cli;

/// mimalloc: `verify` and `import` allocate many small buffers per key (replies, commands);
/// the system allocator spent about a quarter of verify's CPU time in malloc and free.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::run()
}
