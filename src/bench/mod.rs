//! `wharf bench`: measures Wharf's ingest throughput against a "floor" (a bare
//! axum server doing only HMAC verification), its latency at half that load,
//! how quickly acked deliveries get processed, and whether memory stays flat.
//! With `--postgres`, it then repeats the full-load phase against Wharf on
//! PostgreSQL, with one instance and with three sharing a database (see
//! `postgres`).
//!
//! All servers run as child processes of the same binary so they are
//! measured exactly as deployed; the load generator runs in its own
//! two-worker runtime inside this process. The children are killed on every
//! exit path (see `child`).

mod child;
mod floor;
mod load;
mod postgres;
mod report;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use secrecy::SecretString;
use tokio::process::Command;

pub use floor::serve_floor;
pub use report::{
    BenchReport, CpuUsage, DatabaseStats, IdleOutcome, MemoryStats, Percentiles, PhaseStats,
    PostgresCounts, PostgresRun, PostgresSection, ProcessingStats, HALF_LOAD_P99_TARGET_MS,
    LAG_P99_TARGET_MS, OTHER_CPU_LIMIT, RATIO_TARGET,
};

use child::ChildServer;
use load::{BodyFactory, Pace, PhaseOutcome, PhasePlan, Target};

/// Path of the CartPanda webhook on both servers.
pub(crate) const WEBHOOK_PATH: &str = "/webhook/cartpanda";
/// `X-CartPanda-Signature`, lowercase as `HeaderName` requires.
pub(crate) const SIGNATURE_HEADER: &str = "x-cartpanda-signature";
const IDLE_PATH: &str = "/api/admin/processor/idle?timeout_ms=120000";
/// A bit more than the server-side idle timeout above.
const IDLE_CLIENT_TIMEOUT: Duration = Duration::from_secs(130);

/// What `run` measures and how hard.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Binary to spawn for both servers; in the real crate this is
    /// `std::env::current_exe()`.
    pub wharf_bin: PathBuf,
    /// Concurrent keep-alive connections.
    pub connections: usize,
    /// Measured length of each phase.
    pub duration: Duration,
    /// Unmeasured lead-in of each phase (connections, caches, allocator).
    pub warmup: Duration,
    /// Approximate size of each JSON body.
    pub body_bytes: usize,
    /// Admin URL of a PostgreSQL server (`postgres://USER@HOST:PORT/DB`) on
    /// which to create scratch databases and measure Wharf on PostgreSQL too;
    /// `None` measures SQLite only.
    pub postgres: Option<SecretString>,
}

impl BenchOptions {
    /// The defaults: 32 connections, 10 s phases after 2 s warmup, ~1 KiB bodies.
    pub fn new(wharf_bin: PathBuf) -> Self {
        Self {
            wharf_bin,
            connections: 32,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            body_bytes: 1024,
            postgres: None,
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.connections == 0 {
            bail!("bench needs at least one connection");
        }
        if self.duration.is_zero() {
            bail!("bench phase duration must be positive");
        }
        Ok(())
    }

    fn plan(&self, pace: Pace) -> PhasePlan {
        PhasePlan {
            connections: self.connections,
            warmup: self.warmup,
            duration: self.duration,
            pace,
        }
    }
}

/// Runs all phases (floor, wharf full load, wharf half load, processing lag,
/// memory, then PostgreSQL if asked) and returns the report. Integrity
/// problems (failed requests, deliveries acked but not processed) are in the
/// report, see [`BenchReport::problems`]; only a failure to run the bench at
/// all is an error.
///
/// PostgreSQL is reached before anything is measured, so a wrong URL fails
/// in a second; a failure once the SQLite figures exist is reported beside
/// them instead of discarding them.
pub async fn run(opts: &BenchOptions) -> anyhow::Result<BenchReport> {
    opts.validate()?;
    let postgres_admin = match &opts.postgres {
        Some(url) => Some(postgres::Admin::connect(url).await?),
        None => None,
    };
    let secret = random_token();
    let admin_token = random_token();
    let load = LoadRuntime::new()?;
    let factory = Arc::new(BodyFactory::new(&secret, opts.body_bytes)?);

    let floor = measure_floor(opts, &load, &factory, &secret).await?;
    let wharf = measure_wharf(opts, &load, &factory, &secret, &admin_token).await?;
    let postgres = match &postgres_admin {
        Some(admin) => {
            Some(postgres::measure(opts, &load, &factory, &secret, &admin_token, admin).await)
        }
        None => None,
    };
    Ok(BenchReport {
        connections: opts.connections,
        body_bytes: factory.typical_len(),
        duration: opts.duration,
        warmup: opts.warmup,
        floor,
        wharf: wharf.full,
        wharf_half: wharf.half,
        half_load_target_rps: wharf.half_rate,
        processing: wharf.processing,
        memory: wharf.memory,
        wharf_stderr: wharf.stderr,
        postgres,
    })
}

/// Phase 1.
async fn measure_floor(
    opts: &BenchOptions,
    load: &LoadRuntime,
    factory: &Arc<BodyFactory>,
    secret: &str,
) -> anyhow::Result<PhaseStats> {
    let mut command = Command::new(&opts.wharf_bin);
    command.args(["bench-floor", "--listen", "127.0.0.1:0", "--secret", secret]);
    let mut server = ChildServer::spawn(command, "wharf bench-floor").await?;
    let (outcome, cpu) = measure_phase(
        std::slice::from_mut(&mut server),
        DatabaseCpu::InServer,
        load,
        factory,
        opts.plan(Pace::Closed),
    )
    .await?;
    server.stop().await;
    Ok(PhaseStats::from_outcome(&outcome, cpu))
}

/// Runs one phase against `servers` (connections spread over them), with
/// the CPU split over them (their time summed) and `database`, and fails if
/// one died meanwhile.
async fn measure_phase(
    servers: &mut [ChildServer],
    database: DatabaseCpu<'_>,
    load: &LoadRuntime,
    factory: &Arc<BodyFactory>,
    plan: PhasePlan,
) -> anyhow::Result<(PhaseOutcome, Option<CpuUsage>)> {
    let addrs: Vec<SocketAddr> = servers.iter().map(|server| server.addr).collect();
    let database_before = database.process_ticks().await;
    let before = child::cpu_counters(servers);
    let outcome = load.run_phase(&addrs, factory, plan).await?;
    let after = child::cpu_counters(servers);
    let database_after = database.process_ticks().await;
    for server in servers.iter_mut() {
        server.ensure_running()?;
    }
    let database_ticks = child::ticks_between(&database_before, &database_after);
    let cpu = before
        .zip(after)
        .and_then(|(b, a)| a.usage_since(&b, database_ticks));
    Ok((outcome, cpu))
}

/// Where the database's own CPU time goes, so the split can show it apart
/// from "other" (which flags a disturbed run).
#[derive(Clone, Copy)]
enum DatabaseCpu<'a> {
    /// None apart: SQLite (or no database at all) runs inside the server.
    InServer,
    /// The PostgreSQL backends serving this database, if on this machine.
    Postgres {
        admin: &'a postgres::Admin,
        database: &'a str,
    },
}

impl DatabaseCpu<'_> {
    /// CPU ticks so far of each of the database's processes.
    async fn process_ticks(self) -> BTreeMap<u32, u64> {
        match self {
            Self::InServer => BTreeMap::new(),
            Self::Postgres { admin, database } => {
                child::postgres_ticks(&admin.backend_pids(database).await)
            }
        }
    }
}

/// Results of phases 2-5.
struct WharfResults {
    full: PhaseStats,
    half: PhaseStats,
    half_rate: f64,
    processing: ProcessingStats,
    memory: MemoryStats,
    stderr: Vec<String>,
}

/// Phases 2-5 against one `wharf serve` on a fresh database.
///
/// The backlog is drained between full and half load (not only at the end)
/// so half-load processing lag measures steady state, not the tail of the
/// full-load backlog.
async fn measure_wharf(
    opts: &BenchOptions,
    load: &LoadRuntime,
    factory: &Arc<BodyFactory>,
    secret: &str,
    admin_token: &str,
) -> anyhow::Result<WharfResults> {
    let dir = tempfile::Builder::new()
        .prefix("wharf-bench-")
        .tempdir()
        .context("creating temporary directory for the bench database")?;
    let db_path = dir.path().join("bench.db");
    let database_url = format!("sqlite://{}", db_path.display());
    let command = wharf_command(&opts.wharf_bin, &database_url, secret, admin_token);
    let mut server = ChildServer::spawn(command, "wharf serve").await?;
    let start_mib = server.rss_mib();

    let (full, full_cpu) = measure_phase(
        std::slice::from_mut(&mut server),
        DatabaseCpu::InServer,
        load,
        factory,
        opts.plan(Pace::Closed),
    )
    .await?;
    let after_full_mib = server.rss_mib();
    let drain_after_full = wait_idle(server.addr, admin_token).await;

    let half_rate = half_load_rate(&full)?;
    let half_plan = opts.plan(Pace::Open {
        rate_per_sec: half_rate,
    });
    let (half, half_cpu) = measure_phase(
        std::slice::from_mut(&mut server),
        DatabaseCpu::InServer,
        load,
        factory,
        half_plan,
    )
    .await?;
    let after_half_mib = server.rss_mib();
    let drain_after_half = wait_idle(server.addr, admin_token).await;

    let database = database_stats(&db_path, &full, &half).await;
    let stderr = server.stderr_lines();
    server.stop().await;
    Ok(WharfResults {
        half_rate,
        processing: ProcessingStats {
            acked: full.acked_total + half.acked_total,
            drain_after_full,
            drain_after_half,
            database,
        },
        full: PhaseStats::from_outcome(&full, full_cpu),
        half: PhaseStats::from_outcome(&half, half_cpu),
        memory: MemoryStats {
            start_mib,
            after_full_mib,
            after_half_mib,
        },
        stderr,
    })
}

/// Phase 3's rate: half of what phase 2 sustained. A phase 2 without a
/// single success means Wharf is broken, not slow; say why.
fn half_load_rate(full: &PhaseOutcome) -> anyhow::Result<f64> {
    let rate = full.rps() / 2.0;
    if rate <= 0.0 {
        bail!(
            "wharf answered no request successfully at full load (non-2xx by status {:?}, {} errors, e.g. {:?})",
            full.non_2xx,
            full.errors,
            full.error_samples
        );
    }
    Ok(rate)
}

/// `wharf serve` on `database_url` (`sqlite://…` or `postgres://…`), on a
/// free port, with only warnings logged.
fn wharf_command(bin: &Path, database_url: &str, secret: &str, admin_token: &str) -> Command {
    let mut command = Command::new(bin);
    command
        .arg("serve")
        .env("WHARF_LISTEN", "127.0.0.1:0")
        .env("WHARF_DATABASE", database_url)
        .env("CARTPANDA_WEBHOOK_SECRET", secret)
        .env("WHARF_ADMIN_TOKEN", admin_token)
        .env("RUST_LOG", "warn");
    command
}

/// Asks Wharf to answer once its processing backlog is empty.
async fn wait_idle(addr: SocketAddr, admin_token: &str) -> IdleOutcome {
    let started = Instant::now();
    let answer =
        tokio::time::timeout(IDLE_CLIENT_TIMEOUT, load::get(addr, IDLE_PATH, admin_token)).await;
    match answer {
        Err(_) => IdleOutcome::Failed(format!("no answer within {IDLE_CLIENT_TIMEOUT:?}")),
        Ok(Err(error)) => IdleOutcome::Failed(format!("{error:#}")),
        Ok(Ok((status, _))) if status.is_success() => IdleOutcome::Idle {
            waited: started.elapsed(),
        },
        Ok(Ok((status, _))) if status.as_u16() == 504 => IdleOutcome::TimedOut,
        Ok(Ok((status, body))) => {
            let snippet = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            IdleOutcome::Failed(format!("HTTP {status}: {snippet}"))
        }
    }
}

/// Reads the database off the async runtime (rusqlite blocks).
async fn database_stats(
    db_path: &Path,
    full: &PhaseOutcome,
    half: &PhaseOutcome,
) -> Result<DatabaseStats, String> {
    let path = db_path.to_path_buf();
    let (full_window, half_window) = (full.wall, half.wall);
    let read =
        tokio::task::spawn_blocking(move || report::read_database(&path, full_window, half_window))
            .await;
    match read {
        Ok(Ok(stats)) => Ok(stats),
        Ok(Err(error)) => Err(format!("{error:#}")),
        Err(join_error) => Err(format!("database reader failed: {join_error}")),
    }
}

/// 32 random alphanumerics: a per-run webhook secret or admin token.
fn random_token() -> String {
    std::iter::repeat_with(fastrand::alphanumeric)
        .take(32)
        .collect()
}

/// The load generator's own multi-thread runtime (2 workers), so generating
/// load never queues behind whatever else the caller's runtime is doing.
struct LoadRuntime {
    handle: tokio::runtime::Handle,
    runtime: Option<tokio::runtime::Runtime>,
}

impl LoadRuntime {
    fn new() -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("wharf-bench-load")
            .enable_all()
            .build()
            .context("building the load generator runtime")?;
        Ok(Self {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        })
    }

    /// One phase with connection `i` sending to `addrs[i % addrs.len()]`.
    async fn run_phase(
        &self,
        addrs: &[SocketAddr],
        factory: &Arc<BodyFactory>,
        plan: PhasePlan,
    ) -> anyhow::Result<PhaseOutcome> {
        let targets = addrs
            .iter()
            .map(|&addr| Target::new(addr).map(Arc::new))
            .collect::<anyhow::Result<Vec<_>>>()?;
        self.handle
            .spawn(load::run_phase(targets, factory.clone(), plan))
            .await
            .context("load generator panicked")?
    }
}

impl Drop for LoadRuntime {
    /// A runtime may not be dropped (blocking) inside async code, which is
    /// where `run` lives; shutting down in the background is allowed there.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short_plan(pace: Pace) -> PhasePlan {
        PhasePlan {
            connections: 4,
            warmup: Duration::from_millis(100),
            duration: Duration::from_millis(500),
            pace,
        }
    }

    #[tokio::test]
    async fn load_generator_against_in_process_floor() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let server = tokio::spawn(serve_floor(listener, "s3cret".to_owned()));
        let load = LoadRuntime::new().expect("runtime");

        let good = Arc::new(BodyFactory::new("s3cret", 512).expect("factory"));
        let closed = load
            .run_phase(&[addr], &good, short_plan(Pace::Closed))
            .await
            .expect("closed phase");
        assert_eq!((closed.errors, closed.non_2xx.len()), (0, 0), "{closed:?}");
        assert!(
            closed.latencies_us.len() > 100,
            "{}",
            closed.latencies_us.len()
        );
        assert!(closed.acked_total > closed.latencies_us.len() as u64);

        let open = load
            .run_phase(
                &[addr],
                &good,
                short_plan(Pace::Open {
                    rate_per_sec: 400.0,
                }),
            )
            .await
            .expect("open phase");
        assert_eq!((open.errors, open.non_2xx.len()), (0, 0), "{open:?}");
        let measured = open.latencies_us.len();
        assert!(
            (180..=220).contains(&measured),
            "{measured} requests in 0.5 s at 400/s"
        );

        let forged = Arc::new(BodyFactory::new("wrong", 512).expect("factory"));
        let rejected = load
            .run_phase(&[addr], &forged, short_plan(Pace::Closed))
            .await
            .expect("forged phase");
        assert!(rejected.latencies_us.is_empty());
        assert!(rejected.non_2xx.get(&401).is_some_and(|&n| n > 0));

        // Two connections over a live and a dead address: one each.
        let dead = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("local addr")
        };
        let plan = PhasePlan {
            connections: 2,
            ..short_plan(Pace::Closed)
        };
        let spread = load
            .run_phase(&[addr, dead], &good, plan)
            .await
            .expect("spread phase");
        assert!(!spread.latencies_us.is_empty(), "{spread:?}");
        assert!(spread.errors > 0, "{spread:?}");
        server.abort();
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let opts = BenchOptions::new(PathBuf::from("wharf"));
        assert_eq!(opts.connections, 32);
        assert_eq!(opts.duration, Duration::from_secs(10));
        assert_eq!(opts.warmup, Duration::from_secs(2));
        assert_eq!(opts.body_bytes, 1024);
        assert!(opts.validate().is_ok());
        let none = BenchOptions {
            connections: 0,
            ..opts
        };
        assert!(none.validate().is_err());
    }
}
