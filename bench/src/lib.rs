//! `wharf-bench`: measures Wharf's ingest throughput against a "floor" (a
//! bare axum server doing only HMAC verification), its latency at full and
//! half that load, its CPU time and disk writes per delivery, how quickly
//! acked deliveries get processed (drain after the burst, lag at a tenth of
//! the load), what the journal occupies on disk, and whether memory stays
//! flat. With `--postgres`, it then repeats the full-load phase against Wharf
//! on PostgreSQL, with one instance and with three sharing a database (see
//! `postgres`). [`summary`] gives the medians over `--repeat` runs.
//!
//! This crate links nothing of the product: Wharf is the built `wharf`
//! binary, run as a child process exactly as deployed; the floor is a child
//! of this bench's own binary (`wharf-bench floor`), so each server's CPU is
//! measured apart from the load generator's, which runs in its own
//! two-worker runtime inside this process. The children are killed on every
//! exit path (see `child`).

mod child;
mod disk;
mod floor;
mod journal_disk;
mod load;
mod postgres;
mod report;
pub mod stalled;
pub mod summary;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use secrecy::SecretString;
use tokio::process::Command;

pub use child::ProcessMemory;
pub use disk::DiskUsage;
pub use floor::serve_floor;
pub use report::{
    BenchReport, CpuUsage, DatabaseStats, IdleOutcome, IoCounters, MemoryStats, Percentiles,
    PhaseStats, PostgresCounts, PostgresRun, PostgresSection, ProcessingStats, ResourceCost,
    DRAIN_TARGET, FULL_LOAD_P99_TARGET_MS, HALF_LOAD_P99_TARGET_MS, OTHER_CPU_LIMIT, RATIO_TARGET,
    TENTH_LOAD_LAG_P99_TARGET_MS,
};

use child::{ChildServer, ProcessSample, Sample};
use journal_disk::{DiskWork, DiskWorkSample};
use load::{BodyFactory, Pace, PhaseOutcome, PhasePlan, Target};
use report::PhaseWindows;

/// The floor's subcommand of this bench's binary, and where it takes its secret.
pub const FLOOR_SUBCOMMAND: &str = "floor";
pub const FLOOR_SECRET_ENV: &str = "WHARF_BENCH_FLOOR_SECRET";
/// The ready line both `wharf serve` and `wharf-bench floor` print, then
/// their address: the bench learns the port from it.
pub const READY_PREFIX: &str = "wharf ready: listening on http://";

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
    /// The `wharf` binary to measure (`wharf serve`).
    pub wharf_bin: PathBuf,
    /// The binary run as `floor` for the floor server: this bench's own
    /// executable (`std::env::current_exe()`).
    pub floor_bin: PathBuf,
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
    pub fn new(wharf_bin: PathBuf, floor_bin: PathBuf) -> Self {
        Self {
            wharf_bin,
            floor_bin,
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

/// Runs one floor/candidate pair: all phases (floor, wharf at full, half and
/// a tenth of the load with the drain after each, journal size, memory, then
/// PostgreSQL if asked) and returns the report. Integrity
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
        wharf_bin: opts.wharf_bin.clone(),
        connections: opts.connections,
        body_bytes: factory.typical_len(),
        duration: opts.duration,
        warmup: opts.warmup,
        floor,
        wharf: wharf.full,
        wharf_half: wharf.half,
        half_load_target_rps: wharf.half_rate,
        wharf_tenth: wharf.tenth,
        tenth_load_target_rps: wharf.tenth_rate,
        processing: wharf.processing,
        journal_disk: wharf.journal_disk,
        disk_sync: wharf.disk_sync,
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
    let mut command = Command::new(&opts.floor_bin);
    command
        .args([FLOOR_SUBCOMMAND, "--listen", "127.0.0.1:0"])
        .env(FLOOR_SECRET_ENV, secret);
    let mut server = ChildServer::spawn(command, "wharf-bench floor").await?;
    let measured = measure_phase(
        std::slice::from_mut(&mut server),
        DatabaseProcesses::InServer,
        load,
        factory,
        opts.plan(Pace::Closed),
    )
    .await?;
    server.stop().await;
    Ok(measured.stats(None))
}

/// One phase's outcome and what the servers had used before and after it.
struct Measured {
    outcome: PhaseOutcome,
    before: Sample,
    after: Sample,
    /// Wharf's journal disk work over the phase (SQLite only: read from its `/metrics`).
    disk_work: Option<DiskWork>,
}

impl Measured {
    /// The phase's figures; `drained` is the sample taken once the backlog
    /// the phase left was processed, if it was waited for.
    fn stats(&self, drained: Option<&Sample>) -> PhaseStats {
        let cost_with_drain = drained.map_or_else(ResourceCost::default, |drained| {
            drained.cost_since(&self.before)
        });
        PhaseStats {
            disk_work: self.disk_work,
            ..PhaseStats::from_outcome(
                &self.outcome,
                self.after.cpu_usage_since(&self.before),
                self.after.cost_since(&self.before),
                cost_with_drain,
            )
        }
    }
}

/// Runs one phase against `servers` (connections spread over them), with
/// CPU and disk writes read for them (summed) and for `database`, and fails
/// if one died meanwhile.
async fn measure_phase(
    servers: &mut [ChildServer],
    database: DatabaseProcesses<'_>,
    load: &LoadRuntime,
    factory: &Arc<BodyFactory>,
    plan: PhasePlan,
) -> anyhow::Result<Measured> {
    let addrs: Vec<SocketAddr> = servers.iter().map(|server| server.addr).collect();
    let journal = matches!(database, DatabaseProcesses::InServer).then_some(addrs[0]);
    let disk_before = match journal {
        Some(addr) => DiskWorkSample::scrape(addr).await,
        None => None,
    };
    let before = database.sample(servers).await;
    let outcome = load.run_phase(&addrs, factory, plan).await?;
    let after = database.sample(servers).await;
    let disk_work = match (journal, disk_before) {
        (Some(addr), Some(before)) => DiskWorkSample::scrape(addr)
            .await
            .map(|after| after.since(&before)),
        _ => None,
    };
    for server in servers.iter_mut() {
        server.ensure_running()?;
    }
    Ok(Measured {
        outcome,
        before,
        after,
        disk_work,
    })
}

/// Where the database's own CPU time and disk writes go, so they show
/// apart from "other" (which flags a disturbed run) and from the server's.
#[derive(Clone, Copy)]
enum DatabaseProcesses<'a> {
    /// None apart: SQLite (or no database at all) runs inside the server.
    InServer,
    /// The PostgreSQL processes serving this database, if on this machine.
    Postgres {
        admin: &'a postgres::Admin,
        database: &'a str,
    },
}

impl DatabaseProcesses<'_> {
    /// What `servers` and the database's processes have used so far.
    async fn sample(self, servers: &[ChildServer]) -> Sample {
        let database: BTreeMap<u32, ProcessSample> = match self {
            Self::InServer => BTreeMap::new(),
            Self::Postgres { admin, database } => {
                child::postgres_samples(&admin.server_pids(database).await)
            }
        };
        Sample::take(servers, database)
    }
}

/// Results of phases 2-4 and what followed them.
struct WharfResults {
    full: PhaseStats,
    half: PhaseStats,
    half_rate: f64,
    tenth: PhaseStats,
    tenth_rate: f64,
    processing: ProcessingStats,
    journal_disk: Result<DiskUsage, String>,
    disk_sync: Result<Percentiles, String>,
    memory: MemoryStats,
    stderr: Vec<String>,
}

/// Phases 2-4 against one `wharf serve` on a fresh database: closed loop
/// (full load), then open loop at half and at a tenth of what it sustained.
///
/// The backlog is drained after each phase (not only at the end) so the
/// drain after full load is the time to process the burst, and the later
/// phases' processing lag measures steady state, not the tail of an earlier
/// backlog.
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
    // Before Wharf starts, so that nothing else of the run is writing to the disk meanwhile.
    let disk_sync = disk_sync_latency(dir.path()).await;
    let db_path = dir.path().join("bench.db");
    let database_url = format!("sqlite://{}", db_path.display());
    let command = wharf_command(&opts.wharf_bin, &database_url, secret, admin_token);
    let mut server = ChildServer::spawn(command, "wharf serve").await?;
    let start_mib = server.rss_mib();
    let servers = std::slice::from_mut(&mut server);

    let full = measure_phase(
        servers,
        DatabaseProcesses::InServer,
        load,
        factory,
        opts.plan(Pace::Closed),
    )
    .await?;
    let after_full_mib = servers[0].rss_mib();
    let drain_after_full = wait_idle(servers[0].addr, admin_token).await;
    let full_drained = DatabaseProcesses::InServer.sample(servers).await;

    let half_rate = fraction_of_full_load(&full.outcome, 2.0)?;
    let half_plan = opts.plan(Pace::Open {
        rate_per_sec: half_rate,
    });
    let half = measure_phase(
        servers,
        DatabaseProcesses::InServer,
        load,
        factory,
        half_plan,
    )
    .await?;
    let after_half_mib = servers[0].rss_mib();
    let drain_after_half = wait_idle(servers[0].addr, admin_token).await;
    let half_drained = DatabaseProcesses::InServer.sample(servers).await;

    let tenth_rate = fraction_of_full_load(&full.outcome, 10.0)?;
    let tenth_plan = opts.plan(Pace::Open {
        rate_per_sec: tenth_rate,
    });
    let tenth = measure_phase(
        servers,
        DatabaseProcesses::InServer,
        load,
        factory,
        tenth_plan,
    )
    .await?;
    let after_tenth_mib = servers[0].rss_mib();
    let drain_after_tenth = wait_idle(servers[0].addr, admin_token).await;
    let tenth_drained = DatabaseProcesses::InServer.sample(servers).await;

    let windows = PhaseWindows {
        full: full.outcome.wall,
        half: half.outcome.wall,
        tenth: tenth.outcome.wall,
    };
    let database = database_stats(&db_path, windows).await;
    let journal_disk = journal_disk_usage(dir.path()).await;
    let stderr = server.stderr_lines();
    server.stop().await;
    Ok(WharfResults {
        half_rate,
        tenth_rate,
        processing: ProcessingStats {
            acked: full.outcome.acked_total + half.outcome.acked_total + tenth.outcome.acked_total,
            drain_after_full,
            drain_after_half,
            drain_after_tenth,
            database,
        },
        full: full.stats(Some(&full_drained)),
        half: half.stats(Some(&half_drained)),
        tenth: tenth.stats(Some(&tenth_drained)),
        journal_disk,
        disk_sync,
        memory: MemoryStats {
            start_mib,
            after_full_mib,
            after_half_mib,
            after_tenth_mib,
        },
        stderr,
    })
}

/// The open-loop rate of a later phase: `1 / divisor` of what phase 2
/// sustained. A phase 2 without a single success means Wharf is broken, not
/// slow; say why.
fn fraction_of_full_load(full: &PhaseOutcome, divisor: f64) -> anyhow::Result<f64> {
    let rate = full.rps() / divisor;
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
async fn database_stats(db_path: &Path, windows: PhaseWindows) -> Result<DatabaseStats, String> {
    let path = db_path.to_path_buf();
    let read = tokio::task::spawn_blocking(move || report::read_database(&path, windows)).await;
    match read {
        Ok(Ok(stats)) => Ok(stats),
        Ok(Err(error)) => Err(format!("{error:#}")),
        Err(join_error) => Err(format!("database reader failed: {join_error}")),
    }
}

/// Sizes the journal's directory off the async runtime (a directory walk).
async fn journal_disk_usage(dir: &Path) -> Result<DiskUsage, String> {
    let dir = dir.to_path_buf();
    match tokio::task::spawn_blocking(move || disk::usage(&dir)).await {
        Ok(Ok(usage)) => Ok(usage),
        Ok(Err(error)) => Err(format!("{error:#}")),
        Err(join_error) => Err(format!("directory walk failed: {join_error}")),
    }
}

/// Samples of the journal disk's own sync latency (see [`disk::sync_latency`]).
const DISK_SYNC_SAMPLES: usize = 500;

/// Measures the journal's disk off the async runtime.
async fn disk_sync_latency(dir: &Path) -> Result<Percentiles, String> {
    let dir = dir.to_path_buf();
    match tokio::task::spawn_blocking(move || disk::sync_latency(&dir, DISK_SYNC_SAMPLES)).await {
        Ok(Ok(latency)) => Ok(latency),
        Ok(Err(error)) => Err(format!("{error:#}")),
        Err(join_error) => Err(format!("sync probe failed: {join_error}")),
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
        let opts = BenchOptions::new(PathBuf::from("wharf"), PathBuf::from("wharf-bench"));
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
