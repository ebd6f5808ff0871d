//! The `wharf` command line: `serve`, `migrate`, `sign`, `replay`, `export`, `token`. (The benchmark is its own binary,
//! `wharf-bench`, in the workspace's `bench/` member.)
#![allow(clippy::print_stdout)]

mod admin_client;
mod export;
mod replay;
pub mod tail;
mod token;

use std::io::Read as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use crate::clock::SystemClock;
use crate::config::{Config, DatabaseUrl, ProcessEnv};
use crate::journal::transfer::{self, TransferProgress};
use crate::server::{open_storage, RunningServer};
use crate::verify::{Algorithm, Encoding, HmacScheme};

/// The line a supervisor (or a test) reads to learn the bound address.
pub const READY_PREFIX: &str = "wharf ready: listening on http://";

#[derive(Debug, Parser)]
#[command(name = "wharf", version, about = "Self-hosted inbound webhook gateway")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Receive webhooks (default config: ./wharf.toml if present, then environment).
    Serve {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Apply database migrations and exit; with --from and --to, copy an embedded (SQLite)
    /// installation into PostgreSQL instead.
    Migrate {
        #[arg(long, conflicts_with_all = ["from", "to"])]
        config: Option<PathBuf>,
        /// The SQLite database to copy, as sqlite://PATH; no server may be running on it.
        #[arg(long, value_name = "URL", requires = "to")]
        from: Option<String>,
        /// The PostgreSQL database to copy into, as postgres://…; migrated first. Rows it
        /// already has are kept, so the copy can be run again.
        #[arg(long, value_name = "URL", requires = "from")]
        to: Option<String>,
    },
    /// Replay finished deliveries through a running server's admin API.
    Replay(replay::ReplayArgs),
    /// Export deliveries or a ledger table from a running server, as CSV or JSON Lines.
    Export(export::ExportArgs),
    /// Admin tokens.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Print the HMAC signature of stdin, for curl tests: hex SHA-256 by default.
    Sign {
        #[arg(long, env = "CARTPANDA_WEBHOOK_SECRET", hide_env_values = true)]
        secret: String,
        #[arg(long, default_value = "sha256")]
        algorithm: String,
        #[arg(long, default_value = "hex")]
        encoding: String,
    },
    /// Follow a server's live stream: deliveries and ledger changes as they happen.
    Tail(tail::TailArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match cli.command {
        Command::Serve { config } => runtime.block_on(serve(config)),
        Command::Migrate {
            from: Some(from),
            to: Some(to),
            ..
        } => runtime.block_on(copy_to_postgres(&from, &to)),
        Command::Migrate { config, .. } => runtime.block_on(migrate(config)),
        Command::Replay(args) => runtime.block_on(replay::run(args)),
        Command::Export(args) => runtime.block_on(export::run(args)),
        Command::Token(command) => runtime.block_on(token::run(command)),
        Command::Sign {
            secret,
            algorithm,
            encoding,
        } => sign(&secret, &algorithm, &encoding),
        Command::Tail(args) => runtime.block_on(tail::run(args)),
    }
}

async fn serve(config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = Config::load(config_path.as_deref(), &ProcessEnv)?;
    tracing::info!(?config, "starting");
    let server = RunningServer::start(config, Arc::new(SystemClock)).await?;
    if let Some(first) = &server.first_admin_token {
        token::announce_first_token(first);
    }
    println!("{READY_PREFIX}{}", server.addr);
    let token = server.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: finishing in-flight requests and flushing the journal");
        token.cancel();
    });
    server.stopped().await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn migrate(config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = Config::load(config_path.as_deref(), &ProcessEnv)?;
    let (storage, applied) = open_storage(&config, Arc::new(SystemClock)).await?;
    storage.log.close().await;
    if applied.is_empty() {
        println!("{:?} is up to date", config.database);
    } else {
        println!("{:?}: applied {}", config.database, applied.join(", "));
    }
    Ok(())
}

/// `wharf migrate --from sqlite://… --to postgres://…`.
async fn copy_to_postgres(from: &str, to: &str) -> anyhow::Result<()> {
    let Ok(DatabaseUrl::Sqlite(path)) = DatabaseUrl::parse(from) else {
        anyhow::bail!("--from must name the embedded database to copy, as sqlite://PATH");
    };
    // The URL may hold a password: never echo what was given.
    let Ok(DatabaseUrl::Postgres(url)) = DatabaseUrl::parse(to) else {
        anyhow::bail!("--to must name the PostgreSQL database to copy into, as postgres://…");
    };
    // Debug shows the URL without its password.
    let shown = DatabaseUrl::Postgres(url.clone());
    println!("copying sqlite://{} into {shown:?}", path.display());
    let progress = ProgressBars::default();
    let report = transfer::copy_sqlite_to_postgres(&path, url, &progress).await?;
    print!("{report}");
    let copied: u64 = report.tables().iter().map(|(_, count)| count.copied).sum();
    let present: u64 = report
        .tables()
        .iter()
        .map(|(_, count)| count.already_present)
        .sum();
    println!("done: {copied} rows copied, {present} already present");
    Ok(())
}

/// One progress bar per table on stderr (hidden when stderr is not a terminal).
#[derive(Default)]
struct ProgressBars {
    current: parking_lot::Mutex<Option<ProgressBar>>,
}

impl TransferProgress for ProgressBars {
    fn start(&self, table: &str, total: u64) {
        let bar = ProgressBar::new(total).with_prefix(table.to_owned());
        if let Ok(style) =
            ProgressStyle::with_template("{prefix:>10} [{bar:40}] {pos}/{len} ({eta})")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        if let Some(previous) = self.current.lock().replace(bar) {
            previous.finish();
        }
    }

    fn advance(&self, n: u64) {
        if let Some(bar) = &*self.current.lock() {
            bar.inc(n);
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.current.lock().take() {
            bar.finish();
        }
    }
}

fn sign(secret: &str, algorithm: &str, encoding: &str) -> anyhow::Result<()> {
    let scheme = HmacScheme {
        algorithm: algorithm.parse::<Algorithm>()?,
        encoding: encoding.parse::<Encoding>()?,
        prefix: None,
    };
    let mut body = Vec::new();
    std::io::stdin()
        .read_to_end(&mut body)
        .context("cannot read stdin")?;
    println!("{}", scheme.sign(secret.as_bytes(), &body));
    Ok(())
}
