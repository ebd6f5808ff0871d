//! `wharf-bench`: the benchmark's command line. Measures the built `wharf`
//! binary against a bare axum + HMAC floor, `--repeat` times, and prints each
//! run, then the medians. `wharf-bench floor` (hidden) is the floor server
//! the bench runs as its own child.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use secrecy::SecretString;
use wharf_bench::stalled::{self, StalledSummary};
use wharf_bench::summary::Summary;
use wharf_bench::{BenchOptions, FLOOR_SECRET_ENV, FLOOR_SUBCOMMAND, READY_PREFIX};

/// The same allocator as `wharf`, so the floor server and the load generator
/// allocate as they did when they lived in the product's binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Measure Wharf's durable ingest against a bare axum + HMAC floor, in one run.
///
/// Build the product first (`cargo build --release`): this spawns
/// `target/release/wharf` (see --wharf).
#[derive(Debug, Parser)]
#[command(name = "wharf-bench", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Internal>,
    #[command(flatten)]
    bench: BenchArgs,
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// The `wharf` binary to measure [default: `wharf` next to this executable,
    /// i.e. target/release/wharf for target/release/wharf-bench].
    #[arg(long, value_name = "PATH")]
    wharf: Option<PathBuf>,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Measured length of each phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Unmeasured lead-in of each phase.
    #[arg(long, default_value_t = 2)]
    warmup_seconds: u64,
    /// Approximate size of each signed JSON body.
    #[arg(long, default_value_t = 1024)]
    body_bytes: usize,
    /// Floor/candidate pairs to run; the summary gives medians and min–max
    /// (the team rule quotes at least 3).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
    /// Also measure Wharf on PostgreSQL, one and three instances, on scratch
    /// databases created (and dropped) through this admin URL, e.g.
    /// postgres://postgres@127.0.0.1:5432/postgres.
    #[arg(long, env = "WHARF_BENCH_POSTGRES", hide_env_values = true)]
    postgres: Option<String>,
    /// Instead of the whole bench, measure whether stalled stream clients slow
    /// ingest: per repeat, the full-load phase against a fresh Wharf (SQLite)
    /// with no subscriber and with this many subscribers (alternately SSE
    /// /api/stream and WebSocket /api/ws) that never read; prints req/s, p99
    /// ack and their ratios, the server's memory, and whether each stalled
    /// client was told `lagged`.
    #[arg(long, value_name = "N", conflicts_with = "postgres",
          value_parser = clap::value_parser!(u32).range(1..))]
    stalled_subscribers: Option<u32>,
}

#[derive(Debug, Subcommand)]
enum Internal {
    /// The floor server: the bench runs its own binary with this.
    #[command(hide = true, name = FLOOR_SUBCOMMAND)]
    Floor {
        #[arg(long)]
        listen: String,
        #[arg(long, env = FLOOR_SECRET_ENV, hide_env_values = true)]
        secret: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match cli.command {
        Some(Internal::Floor { listen, secret }) => runtime.block_on(floor(&listen, secret)),
        None => {
            let repeat = cli.bench.repeat;
            let stalled = cli.bench.stalled_subscribers;
            let options = options(cli.bench)?;
            match stalled {
                Some(subscribers) => {
                    runtime.block_on(stalled_bench(&options, subscribers as usize, repeat))
                }
                None => runtime.block_on(bench(&options, repeat)),
            }
        }
    }
}

fn options(args: BenchArgs) -> anyhow::Result<BenchOptions> {
    let own = std::env::current_exe().context("cannot find the wharf-bench executable")?;
    let wharf_bin = match args.wharf {
        Some(path) => path,
        None => own.with_file_name(format!("wharf{}", std::env::consts::EXE_SUFFIX)),
    };
    if !wharf_bin.is_file() {
        bail!(
            "no wharf binary at {}: build it first (`cargo build --release`) or pass --wharf PATH",
            wharf_bin.display()
        );
    }
    Ok(BenchOptions {
        wharf_bin,
        floor_bin: own,
        connections: args.connections,
        duration: Duration::from_secs(args.seconds),
        warmup: Duration::from_secs(args.warmup_seconds),
        body_bytes: args.body_bytes,
        postgres: args.postgres.map(SecretString::from),
    })
}

/// Runs the pairs, printing each as it completes, then the summary.
async fn bench(options: &BenchOptions, repeat: u32) -> anyhow::Result<()> {
    let mut reports = Vec::new();
    for index in 1..=repeat {
        if repeat > 1 {
            println!("== repeat {index} of {repeat}");
        }
        let report = wharf_bench::run(options).await?;
        print!("{report}");
        println!();
        reports.push(report);
    }
    print!("{}", Summary::new(&reports));
    Ok(())
}

/// `--stalled-subscribers`: the repeats, each printed as it completes, then the medians.
async fn stalled_bench(
    options: &BenchOptions,
    subscribers: usize,
    repeat: u32,
) -> anyhow::Result<()> {
    let mut reports = Vec::new();
    for index in 1..=repeat {
        if repeat > 1 {
            println!("== repeat {index} of {repeat}");
        }
        let report = stalled::run(options, subscribers, index).await?;
        println!("{report}");
        reports.push(report);
    }
    print!("{}", StalledSummary(&reports));
    Ok(())
}

async fn floor(listen: &str, secret: String) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    println!("{READY_PREFIX}{}", listener.local_addr()?);
    wharf_bench::serve_floor(listener, secret).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_defaults_are_the_library_defaults() {
        let cli = Cli::try_parse_from(["wharf-bench"]).expect("no arguments needed");
        assert!(cli.command.is_none());
        let defaults = BenchOptions::new(PathBuf::new(), PathBuf::new());
        let args = cli.bench;
        assert_eq!(args.connections, defaults.connections);
        assert_eq!(Duration::from_secs(args.seconds), defaults.duration);
        assert_eq!(Duration::from_secs(args.warmup_seconds), defaults.warmup);
        assert_eq!(args.body_bytes, defaults.body_bytes);
        assert_eq!(args.repeat, 1);
        assert!(Cli::try_parse_from(["wharf-bench", "--repeat", "0"]).is_err());
        assert!(args.stalled_subscribers.is_none());
        let stalled = Cli::try_parse_from(["wharf-bench", "--stalled-subscribers", "8"])
            .expect("stalled mode");
        assert_eq!(stalled.bench.stalled_subscribers, Some(8));
        assert!(Cli::try_parse_from(["wharf-bench", "--stalled-subscribers", "0"]).is_err());
    }

    #[test]
    fn floor_is_a_subcommand_of_its_own() {
        let cli = Cli::try_parse_from([
            "wharf-bench",
            "floor",
            "--listen",
            "127.0.0.1:0",
            "--secret",
            "s",
        ])
        .expect("floor");
        assert!(matches!(cli.command, Some(Internal::Floor { .. })));
        assert!(
            Cli::try_parse_from(["wharf-bench", "--repeat", "3", "floor", "--listen", "x"])
                .is_err()
        );
    }
}
