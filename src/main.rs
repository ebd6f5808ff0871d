use std::process::ExitCode;

use clap::Parser as _;

/// mimalloc for Rust and, through its `override` feature, for SQLite's allocations too: the
/// journal writer allocates on every row, and glibc's allocator showed up in its profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A failure is one line on stderr (the error and its causes, `: `-separated) and exit code 1:
/// an operator reads what went wrong, never a backtrace.
fn main() -> ExitCode {
    let cli = wharf::cli::Cli::parse();
    wharf::telemetry::init(cli.log_format());
    match wharf::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("wharf: {error:#}");
            ExitCode::FAILURE
        }
    }
}
