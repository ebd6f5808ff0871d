use clap::Parser as _;

/// mimalloc for Rust and, through its `override` feature, for SQLite's allocations too: the
/// journal writer allocates on every row, and glibc's allocator showed up in its profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    wharf::telemetry::init();
    wharf::cli::run(wharf::cli::Cli::parse())
}
