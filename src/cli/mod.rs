//! The `wharf` command line: `serve`, `migrate`, `sign`, `trigger`, `config check`, and the
//! admin API's `replay`, `export` and `token`. (The benchmark is its own binary, `wharf-bench`,
//! in the workspace's `bench/` member.) Each command's `--help` ends with examples; a failing
//! command prints one line (`wharf: …`, the error and its causes) and exits 1, never a
//! backtrace.
#![allow(clippy::print_stdout)]

mod admin_client;
mod config_check;
mod export;
mod replay;
mod summary;
pub mod tail;
mod token;
mod trigger;

pub use summary::{ConfigSummary, SourceSummary};

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use crate::clock::SystemClock;
use crate::config::{Config, DatabaseUrl, ProcessEnv};
use crate::journal::transfer::{self, TransferProgress};
use crate::server::{open_storage, RunningServer};
use crate::telemetry::LogFormat;
use crate::verify::{Algorithm, Encoding, HmacScheme};

/// The line a supervisor (or a test) reads to learn the bound address.
pub const READY_PREFIX: &str = "wharf ready: listening on http://";

#[derive(Debug, Parser)]
#[command(
    name = "wharf",
    version,
    about = "Self-hosted inbound webhook gateway",
    after_help = "\
Examples:
  wharf serve                                   # ./wharf.toml if present, then the environment
  wharf serve --listen 127.0.0.1:9000 --database sqlite:///var/lib/wharf/wharf.db
  wharf config check                            # what serve would do with this configuration
  wharf trigger --list                          # the sample events wharf trigger can send
  wharf trigger stripe payment_intent.succeeded

Logs go to stderr, filtered by RUST_LOG (default info; e.g. RUST_LOG=wharf=debug,info)."
)]
pub struct Cli {
    /// How log lines are written to stderr: readable text, or one JSON object per line.
    #[arg(
        long,
        global = true,
        value_enum,
        ignore_case = true,
        env = "WHARF_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    /// The log format asked for, so that `main` can set up logging before running.
    pub fn log_format(&self) -> LogFormat {
        self.log_format
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Receive webhooks (default config: ./wharf.toml if present, then environment).
    #[command(after_help = "\
Examples:
  wharf serve
  wharf serve --config /etc/wharf/wharf.toml
  wharf serve --listen 127.0.0.1:9000 --database postgres://wharf@db.internal/wharf
  WHARF_LOG_FORMAT=json RUST_LOG=info wharf serve

Flags override the environment, which overrides the file. At start Wharf prints a summary:
the database, the config file, each source with its routes and whether its secret is set.")]
    Serve {
        /// The config file (default: ./wharf.toml when it exists).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Address to listen on, over WHARF_LISTEN and the file's `listen`.
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// sqlite://PATH or postgres://…, over WHARF_DATABASE/DATABASE_URL and the file.
        #[arg(long, value_name = "URL")]
        database: Option<String>,
    },
    /// Apply database migrations and exit; with --from and --to, copy an embedded (SQLite)
    /// installation into PostgreSQL instead.
    #[command(after_help = "\
Examples:
  wharf migrate
  WHARF_DATABASE=postgres://wharf@db/wharf wharf migrate
  wharf migrate --from sqlite://./wharf.db --to postgres://wharf@db/wharf")]
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
    /// Post a signed sample of a provider's event to a running Wharf, like `stripe trigger`.
    #[command(after_help = "\
Examples:
  wharf trigger --list
  wharf trigger cartpanda order.paid
  wharf trigger stripe payment_intent.succeeded --url https://wharf.example.com
  wharf trigger refract order.verified --config /etc/wharf/wharf.toml

The sample is signed with the secret the server reads (the same config file and environment),
posted to the source's own route, and gets fresh ids, so each trigger is a new delivery.")]
    Trigger {
        /// The source to send as (wharf trigger --list shows them).
        #[arg(required_unless_present = "list")]
        source: Option<String>,
        /// The provider's event name, e.g. payment_intent.succeeded.
        #[arg(required_unless_present = "list")]
        event: Option<String>,
        /// The server's base URL (default: from the configured listen address).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// The config file (default: ./wharf.toml when it exists).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// List the sources and the events each can sample.
        #[arg(long, conflicts_with_all = ["source", "event", "url"])]
        list: bool,
    },
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Replay finished deliveries through a running server's admin API.
    Replay(replay::ReplayArgs),
    /// Export deliveries or a ledger table from a running server, as CSV or JSON Lines.
    Export(export::ExportArgs),
    /// Admin tokens.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Print the HMAC signature of stdin, for curl tests: hex SHA-256 by default.
    #[command(after_help = "\
Examples:
  printf '%s' \"$BODY\" | wharf sign                     # with $CARTPANDA_WEBHOOK_SECRET
  printf '%s' \"$BODY\" | wharf sign --secret s3cret --algorithm sha512 --encoding base64")]
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

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate the configuration and say what `wharf serve` would do with it: the database,
    /// the file read, each source's URLs, and whether its secret is present. Exits 1 on an
    /// invalid configuration or a declared source without its secret.
    #[command(after_help = "\
Examples:
  wharf config check
  wharf config check --config /etc/wharf/wharf.toml
  STRIPE_WEBHOOK_SECRET=whsec_… wharf config check --listen 127.0.0.1:9000")]
    Check {
        /// The config file (default: ./wharf.toml when it exists).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// As for `wharf serve`.
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// As for `wharf serve`.
        #[arg(long, value_name = "URL")]
        database: Option<String>,
    },
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match cli.command {
        Command::Serve {
            config,
            listen,
            database,
        } => runtime.block_on(serve(ServeOptions {
            config,
            listen,
            database,
        })),
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
        Command::Trigger {
            source,
            event,
            url,
            config,
            list,
        } => {
            let (config, _) = load_config(config.as_deref(), None, None)?;
            match (list, source, event) {
                (false, Some(source), Some(event)) => {
                    runtime.block_on(trigger::send(&config, &source, &event, url.as_deref()))
                }
                _ => {
                    trigger::list(&config);
                    Ok(())
                }
            }
        }
        Command::Config(ConfigCommand::Check {
            config,
            listen,
            database,
        }) => {
            let (config, file) = load_config(config.as_deref(), listen, database.as_deref())?;
            config_check::report(&ConfigSummary::new(&config, file.as_deref(), &ProcessEnv))
        }
        Command::Tail(args) => runtime.block_on(tail::run(args)),
    }
}

/// `wharf serve`'s flags.
struct ServeOptions {
    config: Option<PathBuf>,
    listen: Option<SocketAddr>,
    database: Option<String>,
}

/// The configuration `serve` would run with: the file (or none), the environment, then flags.
fn load_config(
    config: Option<&Path>,
    listen: Option<SocketAddr>,
    database: Option<&str>,
) -> anyhow::Result<(Config, Option<PathBuf>)> {
    let file = Config::file_to_read(config);
    let mut loaded = Config::load(file.as_deref(), &ProcessEnv)?;
    if let Some(listen) = listen {
        loaded.listen = listen;
    }
    if let Some(database) = database {
        // Not echoed: a mistyped URL may still hold a password.
        loaded.database = DatabaseUrl::parse(database)
            .map_err(|_| anyhow::anyhow!("--database must be sqlite://PATH or postgres://…"))?;
    }
    Ok((loaded, file))
}

async fn serve(options: ServeOptions) -> anyhow::Result<()> {
    let (config, file) = load_config(
        options.config.as_deref(),
        options.listen,
        options.database.as_deref(),
    )?;
    log_summary(&ConfigSummary::new(&config, file.as_deref(), &ProcessEnv));
    tracing::debug!(?config, "configuration");
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

/// The start-up block, one log event (so a JSON log keeps it as one line), then a warning per
/// setting that configures nothing.
fn log_summary(summary: &ConfigSummary) {
    tracing::info!(
        "Wharf {} starting\n{}",
        env!("CARGO_PKG_VERSION"),
        summary.render()
    );
    for warning in &summary.warnings {
        tracing::warn!("{warning}");
    }
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
