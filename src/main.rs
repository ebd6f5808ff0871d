use clap::Parser as _;

fn main() -> anyhow::Result<()> {
    wharf::telemetry::init();
    wharf::cli::run(wharf::cli::Cli::parse())
}
