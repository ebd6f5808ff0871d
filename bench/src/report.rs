//! Results of a bench run: the numbers, how they are summarised, and the
//! human-readable table. Kept apart from the measuring code so the report can
//! be built and checked from plain data in tests.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Add;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use rusqlite::{Connection, OpenFlags};

use super::disk::DiskUsage;
use super::journal_disk::{BucketSummary, DiskWork};
use super::load::{PhaseOutcome, WallWindow};
use super::postgres::SCALE_OUT_IDLE_POLL_MS;

/// Wharf must sustain at least this fraction of the floor's req/s (issue 8).
pub const RATIO_TARGET: f64 = 0.60;
/// p99 ack latency target at full load (closed loop), in ms.
pub const FULL_LOAD_P99_TARGET_MS: f64 = 2.0;
/// p99 ack latency target at half load (open loop), in ms.
pub const HALF_LOAD_P99_TARGET_MS: f64 = 3.0;
/// p99 processing-lag target at a tenth of full load, in ms.
pub const TENTH_LOAD_LAG_P99_TARGET_MS: f64 = 100.0;
/// Every acked delivery must be in the ledger this soon after the full-load burst.
pub const DRAIN_TARGET: Duration = Duration::from_secs(10);

/// Everything one `bench` run (one floor/candidate pair) measured. `Display`
/// renders the table; [`crate::summary::Summary`] the medians over repeats.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// The `wharf` binary measured.
    pub wharf_bin: PathBuf,
    pub connections: usize,
    /// Length of a typical request body actually sent.
    pub body_bytes: usize,
    pub duration: Duration,
    pub warmup: Duration,
    /// Phase 1: the bare axum + HMAC server, closed loop.
    pub floor: PhaseStats,
    /// Phase 2: Wharf, closed loop.
    pub wharf: PhaseStats,
    /// Phase 3: Wharf, open loop at half of phase 2's rate.
    pub wharf_half: PhaseStats,
    /// The rate phase 3 asked for.
    pub half_load_target_rps: f64,
    /// Phase 4: Wharf, open loop at a tenth of phase 2's rate (processing lag).
    pub wharf_tenth: PhaseStats,
    /// The rate phase 4 asked for.
    pub tenth_load_target_rps: f64,
    pub processing: ProcessingStats,
    /// What the SQLite journal's directory holds once all phases drained, or
    /// why it could not be read.
    pub journal_disk: Result<DiskUsage, String>,
    /// Latency of a 4 KB write + `fdatasync` on the journal's disk, measured just before
    /// Wharf started: the floor under each durable group commit.
    pub disk_sync: Result<Percentiles, String>,
    pub memory: MemoryStats,
    /// Last lines `wharf serve` wrote to stderr (run with `RUST_LOG=warn`),
    /// shown because warnings under load are worth seeing.
    pub wharf_stderr: Vec<String>,
    /// With `--postgres`: phase 2 again, on PostgreSQL.
    pub postgres: Option<PostgresSection>,
}

/// Throughput and latency of one phase.
#[derive(Debug, Clone, Default)]
pub struct PhaseStats {
    /// 2xx answers per second in the measured window.
    pub rps: f64,
    /// 2xx answers in the measured window.
    pub requests: u64,
    /// Latency of those answers; in the open loop corrected for coordinated
    /// omission (waits behind slow answers count, generator lateness not).
    pub latency: Option<Percentiles>,
    /// Every 2xx of the phase, warmup included.
    pub acked_total: u64,
    /// Non-2xx answers by status over the whole phase.
    pub non_2xx: BTreeMap<u16, u64>,
    /// Transport errors over the whole phase.
    pub errors: u64,
    /// A few distinct error messages.
    pub error_samples: Vec<String>,
    /// How the machine's CPU was split during the phase (Linux only).
    pub cpu: Option<CpuUsage>,
    /// CPU time and disk writes over the phase (warmup included, like
    /// `acked_total`, which divides them).
    pub cost: ResourceCost,
    /// Same, over the phase and the drain of its backlog that followed.
    pub cost_with_drain: ResourceCost,
    /// Wharf's journal disk work over the phase (SQLite only).
    pub disk_work: Option<DiskWork>,
}

/// CPU time and disk writes of the server(s) and of the database's own
/// processes over a window (Linux only: from `/proc/PID/stat` and
/// `/proc/PID/io`; `None` where unreadable or, for the database, where it
/// has no process of its own on this machine).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResourceCost {
    /// utime + stime of the server(s), summed, in µs.
    pub server_cpu_us: Option<u64>,
    pub server_io: Option<IoCounters>,
    /// The PostgreSQL processes serving the run; `None` for SQLite.
    pub database_cpu_us: Option<u64>,
    pub database_io: Option<IoCounters>,
}

/// Counters of `/proc/PID/io`, or their growth over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoCounters {
    /// Bytes the process caused to be written to storage (page-cache pages
    /// it dirtied, direct I/O); what the disk sees, before the filesystem's
    /// own journal.
    pub write_bytes: u64,
    /// Bytes passed to write-like system calls, sockets and pipes included.
    pub wchar: u64,
}

impl IoCounters {
    /// Growth since `earlier`.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            write_bytes: self.write_bytes.saturating_sub(earlier.write_bytes),
            wchar: self.wchar.saturating_sub(earlier.wchar),
        }
    }
}

impl Add for IoCounters {
    type Output = Self;

    fn add(self, other: Self) -> Self {
        Self {
            write_bytes: self.write_bytes + other.write_bytes,
            wchar: self.wchar + other.wchar,
        }
    }
}

impl std::iter::Sum for IoCounters {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::default(), Add::add)
    }
}

/// CPU used during a phase, in percent of one core (a 2-core machine has 200).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuUsage {
    /// The server process under test.
    pub server: f64,
    /// The bench process: load generator and body signing.
    pub generator: f64,
    /// The database's own processes: the backends serving the bench
    /// database when PostgreSQL runs on this machine; 0 for SQLite, which
    /// runs inside the server.
    pub database: f64,
    /// Busy time none accounts for: other processes, hypervisor steal,
    /// interrupts. More than [`OTHER_CPU_LIMIT`] means other work disturbed
    /// the run.
    pub other: f64,
    /// Unused CPU.
    pub idle: f64,
}

/// Share of a core that other work may take before a phase counts as disturbed.
pub const OTHER_CPU_LIMIT: f64 = 20.0;

impl PhaseStats {
    pub(crate) fn from_outcome(
        outcome: &PhaseOutcome,
        cpu: Option<CpuUsage>,
        cost: ResourceCost,
        cost_with_drain: ResourceCost,
    ) -> Self {
        Self {
            rps: outcome.rps(),
            requests: outcome.latencies_us.len() as u64,
            latency: Percentiles::from_sorted_micros(&outcome.latencies_us),
            acked_total: outcome.acked_total,
            non_2xx: outcome.non_2xx.clone(),
            errors: outcome.errors,
            error_samples: outcome.error_samples.clone(),
            cpu,
            cost,
            cost_with_drain,
            disk_work: None,
        }
    }

    /// `total` over the deliveries acked in the phase.
    fn per_delivery(&self, total: Option<u64>) -> Option<f64> {
        let acked = self.acked_total;
        total
            .filter(|_| acked > 0)
            .map(|total| total as f64 / acked as f64)
    }

    /// The server's CPU µs per delivery acked, over the phase.
    pub fn cpu_us_per_delivery(&self) -> Option<f64> {
        self.per_delivery(self.cost.server_cpu_us)
    }

    /// The database processes' CPU µs per delivery acked, over the phase.
    pub fn database_cpu_us_per_delivery(&self) -> Option<f64> {
        self.per_delivery(self.cost.database_cpu_us)
    }

    /// Storage bytes (`write_bytes`) the server caused per delivery acked.
    pub fn written_per_delivery(&self) -> Option<f64> {
        self.per_delivery(self.cost.server_io.map(|io| io.write_bytes))
    }

    /// Same, for the database processes.
    pub fn database_written_per_delivery(&self) -> Option<f64> {
        self.per_delivery(self.cost.database_io.map(|io| io.write_bytes))
    }

    pub fn non_2xx_total(&self) -> u64 {
        self.non_2xx.values().sum()
    }

    fn failures(&self) -> u64 {
        self.non_2xx_total() + self.errors
    }
}

/// Nearest-rank percentiles of a set of durations, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    /// `None` for an empty set. `sorted_us` must be ascending.
    pub(crate) fn from_sorted_micros<T: Copy + Into<u64>>(sorted_us: &[T]) -> Option<Self> {
        let max = *sorted_us.last()?;
        Some(Self {
            count: sorted_us.len() as u64,
            p50_ms: micros_to_ms(nearest_rank(sorted_us, 0.50)?),
            p99_ms: micros_to_ms(nearest_rank(sorted_us, 0.99)?),
            max_ms: micros_to_ms(max),
        })
    }
}

fn nearest_rank<T: Copy>(sorted: &[T], quantile: f64) -> Option<T> {
    let rank = (quantile * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len().checked_sub(1)?))
        .copied()
}

fn micros_to_ms<T: Into<u64>>(micros: T) -> f64 {
    micros.into() as f64 / 1000.0
}

/// How a wait for Wharf's processor to drain its backlog ended.
#[derive(Debug, Clone, PartialEq)]
pub enum IdleOutcome {
    /// The idle endpoint answered 200 after this long.
    Idle { waited: Duration },
    /// The idle endpoint answered 504: backlog not empty within its timeout.
    TimedOut,
    /// No usable answer (unreachable, unexpected status, ...).
    Failed(String),
}

/// Whether everything acked was processed, and how long processing took.
#[derive(Debug, Clone)]
pub struct ProcessingStats {
    /// 2xx answers from Wharf over phases 2 to 4, warmups included.
    pub acked: u64,
    pub drain_after_full: IdleOutcome,
    pub drain_after_half: IdleOutcome,
    pub drain_after_tenth: IdleOutcome,
    /// What the database says, or why it could not be read.
    pub database: Result<DatabaseStats, String>,
}

/// Counts and processing lag read from Wharf's SQLite file.
#[derive(Debug, Clone, Default)]
pub struct DatabaseStats {
    /// Deliveries with status `processed`.
    pub processed: u64,
    /// `deliveries` rows by status.
    pub by_status: Vec<(String, u64)>,
    /// Rows in `sales`.
    pub sales: u64,
    /// `processed_at - received_at` of every processed delivery.
    pub lag_all: Option<Percentiles>,
    /// Same, for deliveries received during phase 2.
    pub lag_full_load: Option<Percentiles>,
    /// Same, for deliveries received during phase 3.
    pub lag_half_load: Option<Percentiles>,
    /// Same, for deliveries received during phase 4.
    pub lag_tenth_load: Option<Percentiles>,
}

/// Wharf's resident memory at four points, in MiB (`None` if unreadable).
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryStats {
    pub start_mib: Option<f64>,
    pub after_full_mib: Option<f64>,
    pub after_half_mib: Option<f64>,
    pub after_tenth_mib: Option<f64>,
}

/// Wall-clock spans of phases 2 to 4, to split processing lag by phase.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PhaseWindows {
    pub full: WallWindow,
    pub half: WallWindow,
    pub tenth: WallWindow,
}

/// `--postgres`: phase 2 (closed loop at full load, then drain) against Wharf
/// on PostgreSQL, with one instance and with several sharing one database,
/// so SQLite and PostgreSQL are compared on the same machine in the same run.
#[derive(Debug, Clone, Default)]
pub struct PostgresSection {
    /// `host:port` of the PostgreSQL server (credentials left out).
    pub server: String,
    /// In the order measured: one instance, then several.
    pub runs: Vec<PostgresRun>,
    /// Why the runs stopped early, if they did (the SQLite figures stand).
    pub failure: Option<String>,
}

/// One closed-loop run against `instances` Wharf servers on one fresh database.
#[derive(Debug, Clone)]
pub struct PostgresRun {
    pub instances: usize,
    /// The scratch database, dropped at the end.
    pub database: String,
    /// The load phase; `cpu.server` is summed over the instances.
    pub load: PhaseStats,
    /// Until every instance reported an empty backlog.
    pub drain: IdleOutcome,
    /// What the database says once drained, or why it could not be read.
    pub counts: Result<PostgresCounts, String>,
    /// Last stderr lines of the instances, prefixed with the instance number
    /// when there are several.
    pub stderr: Vec<String>,
    /// Why the scratch database could not be dropped, if it could not.
    pub cleanup_error: Option<String>,
}

/// Integrity counts read from a PostgreSQL bench database. Each acked
/// delivery must be processed exactly once: one `processed` delivery, one
/// `processed` attempt and one sale each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PostgresCounts {
    pub processed: u64,
    pub processed_attempts: u64,
    pub sales: u64,
    /// `pg_database_size`: everything the database holds on disk, journal
    /// and ledger, PostgreSQL's empty-database baseline included.
    pub size_bytes: u64,
}

impl PostgresRun {
    /// Row label: "postgres (1)", "postgres (3)".
    pub fn label(&self) -> String {
        format!("postgres ({})", self.instances)
    }

    /// Whether every acked delivery was processed within [`DRAIN_TARGET`]
    /// after the load.
    pub fn drained_in_time(&self) -> bool {
        drained_within_target(&self.drain)
            && self
                .counts
                .as_ref()
                .is_ok_and(|counts| counts.processed == self.load.acked_total)
    }

    /// Integrity problems of this run, as [`BenchReport::problems`] lists them.
    fn problems(&self, problems: &mut Vec<String>) {
        let label = self.label();
        phase_problems(&label, &self.load, problems);
        if let Some(problem) = drain_problem(&format!("after the {label} load"), &self.drain) {
            problems.push(problem);
        }
        match &self.counts {
            Err(why) => problems.push(format!("{label}: could not read the database: {why}")),
            Ok(counts) => {
                let acked = self.load.acked_total;
                let checks = [
                    ("processed deliveries", counts.processed),
                    ("processed attempts", counts.processed_attempts),
                    ("sales rows", counts.sales),
                ];
                for (what, count) in checks {
                    if count != acked {
                        problems.push(format!(
                            "{label}: MISMATCH: {acked} acked but {count} {what}"
                        ));
                    }
                }
            }
        }
        if let Some(why) = &self.cleanup_error {
            problems.push(format!(
                "{label}: database {} left behind: {why}",
                self.database
            ));
        }
    }
}

/// Every instance's drain as one: idle once the slowest was, else the first
/// instance that did not get idle.
pub(crate) fn combine_idle(outcomes: Vec<IdleOutcome>) -> IdleOutcome {
    let mut slowest = Duration::ZERO;
    for outcome in outcomes {
        match outcome {
            IdleOutcome::Idle { waited } => slowest = slowest.max(waited),
            not_idle => return not_idle,
        }
    }
    IdleOutcome::Idle { waited: slowest }
}

/// Whether a drain ended idle within [`DRAIN_TARGET`].
fn drained_within_target(outcome: &IdleOutcome) -> bool {
    matches!(outcome, IdleOutcome::Idle { waited } if *waited <= DRAIN_TARGET)
}

/// Reads counts and lag from Wharf's database, read-only, while the server
/// is still running (so its WAL is visible). `windows` are the wall-clock
/// spans of phases 2 to 4, matched against `received_at`.
pub(crate) fn read_database(path: &Path, windows: PhaseWindows) -> anyhow::Result<DatabaseStats> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let db = Connection::open_with_flags(path, flags)
        .with_context(|| format!("opening {} read-only", path.display()))?;
    db.busy_timeout(Duration::from_secs(10))
        .context("setting busy timeout")?;
    let by_status = deliveries_by_status(&db)?;
    let sales = db
        .query_row("SELECT COUNT(*) FROM sales", [], |row| row.get::<_, i64>(0))
        .context("counting sales")?;
    let lags = processed_lags(&db)?;
    let lag_of = |window: Option<WallWindow>| {
        let mut micros: Vec<u64> = lags
            .iter()
            .filter(|(received, _)| window.is_none_or(|w| w.contains(*received)))
            .map(|&(_, lag)| lag)
            .collect();
        micros.sort_unstable();
        Percentiles::from_sorted_micros(&micros)
    };
    Ok(DatabaseStats {
        processed: by_status
            .iter()
            .find(|(status, _)| status == "processed")
            .map_or(0, |&(_, count)| count),
        sales: u64::try_from(sales).unwrap_or(0),
        lag_all: lag_of(None),
        lag_full_load: lag_of(Some(windows.full)),
        lag_half_load: lag_of(Some(windows.half)),
        lag_tenth_load: lag_of(Some(windows.tenth)),
        by_status,
    })
}

fn deliveries_by_status(db: &Connection) -> anyhow::Result<Vec<(String, u64)>> {
    let mut statement = db
        .prepare("SELECT status, COUNT(*) FROM deliveries GROUP BY status ORDER BY status")
        .context("preparing deliveries-by-status query")?;
    let rows = statement
        .query_map([], |row| {
            let count: i64 = row.get(1)?;
            Ok((row.get::<_, String>(0)?, u64::try_from(count).unwrap_or(0)))
        })
        .context("counting deliveries by status")?;
    rows.collect::<Result<_, _>>()
        .context("reading deliveries by status")
}

/// `(received_at, lag)` in µs for every processed delivery; a negative lag
/// (clock step) counts as zero.
fn processed_lags(db: &Connection) -> anyhow::Result<Vec<(i64, u64)>> {
    let mut statement = db
        .prepare(
            "SELECT received_at, processed_at - received_at FROM deliveries \
             WHERE status = 'processed' AND processed_at IS NOT NULL",
        )
        .context("preparing processing-lag query")?;
    let rows = statement
        .query_map([], |row| {
            let lag: i64 = row.get(1)?;
            Ok((row.get::<_, i64>(0)?, u64::try_from(lag).unwrap_or(0)))
        })
        .context("querying processing lag")?;
    rows.collect::<Result<_, _>>()
        .context("reading processing lag")
}

impl BenchReport {
    /// Wharf's closed-loop req/s as a fraction of the floor's.
    /// The most a closed loop of `connections` can be acked durably on this disk: every
    /// connection waits for one sync per request, so at best each sync acks all of them.
    pub fn durable_ceiling_rps(&self) -> Option<f64> {
        let sync = self.disk_sync.as_ref().ok()?;
        (sync.p50_ms > 0.0).then(|| self.connections as f64 * 1000.0 / sync.p50_ms)
    }

    pub fn ratio(&self) -> f64 {
        if self.floor.rps > 0.0 {
            self.wharf.rps / self.floor.rps
        } else {
            0.0
        }
    }

    /// Whether every acked delivery of the full-load burst was processed
    /// within [`DRAIN_TARGET`] after it. Checked at the end of the run (all
    /// later deliveries processed too), which is when the count is read.
    pub fn drained_in_time(&self) -> bool {
        drained_within_target(&self.processing.drain_after_full)
            && self
                .processing
                .database
                .as_ref()
                .is_ok_and(|db| db.processed == self.processing.acked)
    }

    /// Integrity problems that make the run untrustworthy (failed requests,
    /// lost deliveries, a processor that never went idle), as opposed to
    /// performance targets missed. Empty when the run is clean.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (name, phase) in self.phases() {
            phase_problems(name, phase, &mut problems);
        }
        let drains = [
            ("after full load", &self.processing.drain_after_full),
            ("after half load", &self.processing.drain_after_half),
            ("after 1/10 load", &self.processing.drain_after_tenth),
        ];
        problems.extend(
            drains
                .into_iter()
                .filter_map(|(when, outcome)| drain_problem(when, outcome)),
        );
        match &self.processing.database {
            Err(why) => problems.push(format!("could not read Wharf's database: {why}")),
            Ok(db) if db.processed != self.processing.acked => problems.push(format!(
                "MISMATCH: {} acked but {} processed",
                self.processing.acked, db.processed
            )),
            Ok(_) => {}
        }
        if let Err(why) = &self.journal_disk {
            problems.push(format!("could not measure the journal on disk: {why}"));
        }
        if let Some(postgres) = &self.postgres {
            for run in &postgres.runs {
                run.problems(&mut problems);
            }
            if let Some(why) = &postgres.failure {
                problems.push(format!("PostgreSQL not fully measured: {why}"));
            }
        }
        problems
    }

    /// The phases of the SQLite part, named as in the tables.
    fn phases(&self) -> [(&'static str, &PhaseStats); 4] {
        [
            ("floor", &self.floor),
            ("wharf", &self.wharf),
            ("wharf at half load", &self.wharf_half),
            ("wharf at 1/10 load", &self.wharf_tenth),
        ]
    }
}

/// A phase disturbed by other work or with failed requests.
fn phase_problems(name: &str, phase: &PhaseStats, problems: &mut Vec<String>) {
    if let Some(cpu) = phase.cpu.filter(|cpu| cpu.other > OTHER_CPU_LIMIT) {
        problems.push(format!(
            "{name}: other work used {:.0}% of a core meanwhile (limit {OTHER_CPU_LIMIT:.0}%): numbers disturbed",
            cpu.other
        ));
    }
    if phase.failures() > 0 {
        problems.push(format!(
            "{name}: {} non-2xx answers and {} errors",
            phase.non_2xx_total(),
            phase.errors
        ));
    }
}

/// A processor that did not get idle `when`.
fn drain_problem(when: &str, outcome: &IdleOutcome) -> Option<String> {
    match outcome {
        IdleOutcome::Idle { .. } => None,
        IdleOutcome::TimedOut => Some(format!("processor not idle {when} (idle endpoint: 504)")),
        IdleOutcome::Failed(why) => Some(format!("idle wait {when} failed: {why}")),
    }
}

/// Status word for a target check.
fn verdict(met: bool) -> &'static str {
    if met {
        "ok"
    } else {
        "MISSED"
    }
}

/// "10 s", "2.5 s": whole seconds without decimals.
fn secs(duration: Duration) -> String {
    let s = duration.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s:.1} s")
    }
}

/// A bucket's upper bound in seconds, in milliseconds ("inf" past the last bound).
fn bound_ms(seconds: f64) -> String {
    if seconds.is_finite() {
        format!("{}", seconds * 1000.0)
    } else {
        "inf".to_owned()
    }
}

fn mib(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.1} MiB"))
}

/// A byte count in B, KiB, MiB or GiB.
pub(crate) fn bytes_text(bytes: u64) -> String {
    const UNITS: [&str; 3] = ["KiB", "MiB", "GiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = UNITS[0];
    for next in &UNITS[1..] {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    format!("{value:.1} {unit}")
}

/// A figure with `decimals` decimals, or "n/a".
fn figure(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.decimals$}"))
}

fn lag_text(lag: Option<&Percentiles>) -> String {
    lag.map_or_else(
        || "no processed deliveries".to_owned(),
        |l| {
            format!(
                "lag p50 {:.1} ms p99 {:.1} ms max {:.1} ms over {}",
                l.p50_ms, l.p99_ms, l.max_ms, l.count
            )
        },
    )
}

fn drain_text(outcome: &IdleOutcome) -> String {
    match outcome {
        IdleOutcome::Idle { waited } => format!("backlog drained in {:.2} s", waited.as_secs_f64()),
        IdleOutcome::TimedOut => "backlog NOT drained (idle endpoint timed out)".to_owned(),
        IdleOutcome::Failed(why) => format!("idle wait FAILED: {why}"),
    }
}

fn write_phase_row(
    f: &mut fmt::Formatter<'_>,
    name: &str,
    phase: &PhaseStats,
    note: &str,
) -> fmt::Result {
    let (p50, p99, max) = phase.latency.map_or((f64::NAN, f64::NAN, f64::NAN), |l| {
        (l.p50_ms, l.p99_ms, l.max_ms)
    });
    write!(
        f,
        "{name:<24}{:>8.0}{:>10.2}{:>9.2}{:>9.1}{:>10}",
        phase.rps,
        p50,
        p99,
        max,
        phase.non_2xx_total()
    )?;
    if phase.errors > 0 {
        write!(f, "  errors {}", phase.errors)?;
    }
    if !note.is_empty() {
        write!(f, "    {note}")?;
    }
    writeln!(f)?;
    write_failure_detail(f, phase)
}

fn write_failure_detail(f: &mut fmt::Formatter<'_>, phase: &PhaseStats) -> fmt::Result {
    if !phase.non_2xx.is_empty() {
        let statuses: Vec<String> = phase
            .non_2xx
            .iter()
            .map(|(status, count)| format!("{status} x{count}"))
            .collect();
        writeln!(f, "    !! non-2xx: {}", statuses.join(", "))?;
    }
    for sample in &phase.error_samples {
        writeln!(f, "    !! error: {sample}")?;
    }
    Ok(())
}

/// Whether a phase's p99 ack latency is below `target_ms`.
fn p99_below(phase: &PhaseStats, target_ms: f64) -> bool {
    phase.latency.is_some_and(|l| l.p99_ms < target_ms)
}

impl BenchReport {
    fn write_table(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<24}{:>8}{:>10}{:>9}{:>9}{:>10}",
            "", "req/s", "p50 ms", "p99 ms", "max ms", "non-2xx"
        )?;
        write_phase_row(f, "floor (axum + HMAC)", &self.floor, "")?;
        let ratio = self.ratio();
        let full_note = format!(
            "ratio {:.1}% of floor (target >= {:.0}%: {}); target p99 < {FULL_LOAD_P99_TARGET_MS} ms: {}",
            ratio * 100.0,
            RATIO_TARGET * 100.0,
            verdict(ratio >= RATIO_TARGET),
            verdict(p99_below(&self.wharf, FULL_LOAD_P99_TARGET_MS))
        );
        write_phase_row(f, "wharf (durable ingest)", &self.wharf, &full_note)?;
        let half_note = format!(
            "asked {:.0}/s (target p99 < {HALF_LOAD_P99_TARGET_MS} ms: {})",
            self.half_load_target_rps,
            verdict(p99_below(&self.wharf_half, HALF_LOAD_P99_TARGET_MS))
        );
        write_phase_row(f, "wharf at half load", &self.wharf_half, &half_note)?;
        let tenth_note = format!(
            "asked {:.0}/s (for processing lag, below)",
            self.tenth_load_target_rps
        );
        write_phase_row(f, "wharf at 1/10 load", &self.wharf_tenth, &tenth_note)
    }

    fn write_cpu(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<24}{:>8}{:>11}{:>9}{:>8}",
            "cpu, % of one core", "server", "generator", "other", "idle"
        )?;
        for (name, phase) in self.phases() {
            match phase.cpu {
                Some(cpu) => writeln!(
                    f,
                    "{name:<24}{:>8.0}{:>11.0}{:>9.0}{:>8.0}",
                    cpu.server, cpu.generator, cpu.other, cpu.idle
                )?,
                None => writeln!(f, "{name:<24}{:>8}", "n/a")?,
            }
        }
        Ok(())
    }

    /// How long the journal's own disk work took in each Wharf phase: the log sync every
    /// ack waits for, beside the WAL syncs and checkpoints it may wait behind.
    fn write_disk_work(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let phases = [
            ("wharf", &self.wharf),
            ("wharf at half load", &self.wharf_half),
            ("wharf at 1/10 load", &self.wharf_tenth),
        ];
        if phases.iter().all(|(_, phase)| phase.disk_work.is_none()) {
            return Ok(());
        }
        writeln!(
            f,
            "journal disk work, ms (wharf's /metrics; each figure is the bound of its bucket)"
        )?;
        writeln!(
            f,
            "{:<24}{:>10}{:>8}{:>8}{:>8}{:>10}{:>8}{:>8}{:>10}{:>8}{:>8}",
            "",
            "log syncs",
            "p50",
            "p99",
            "max",
            "WAL syncs",
            "p99",
            "max",
            "checkpts",
            "p99",
            "max"
        )?;
        for (name, phase) in phases {
            let Some(work) = phase.disk_work else {
                writeln!(f, "{name:<24}{:>10}", "n/a")?;
                continue;
            };
            write!(f, "{name:<24}")?;
            let summary = |summary: Option<BucketSummary>| {
                summary.map_or_else(
                    || (0, "-".to_owned(), "-".to_owned(), "-".to_owned()),
                    |s| {
                        (
                            s.count,
                            bound_ms(s.p50_at_most),
                            bound_ms(s.p99_at_most),
                            bound_ms(s.max_at_most),
                        )
                    },
                )
            };
            let (count, p50, p99, max) = summary(work.log_sync);
            write!(f, "{count:>10}{p50:>8}{p99:>8}{max:>8}")?;
            for kind in [work.wal_sync, work.checkpoint] {
                let (count, _, p99, max) = summary(kind);
                write!(f, "{count:>10}{p99:>8}{max:>8}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }

    /// Wharf's CPU time and storage writes per acked delivery, over each
    /// phase and over the phase plus the drain of its backlog.
    fn write_cost(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<30}{:>8}{:>11}{:>10}",
            "cost per acked delivery", "cpu µs", "written B", "wchar B"
        )?;
        let phases = [
            ("full load", &self.wharf),
            ("half load", &self.wharf_half),
            ("1/10 load", &self.wharf_tenth),
        ];
        for (name, phase) in phases {
            let windows = [
                (format!("wharf, {name}"), &phase.cost),
                (format!("wharf, {name} + its drain"), &phase.cost_with_drain),
            ];
            for (label, cost) in windows {
                let per = |total: Option<u64>| figure(phase.per_delivery(total), 0);
                writeln!(
                    f,
                    "{label:<30}{:>8}{:>11}{:>10}",
                    per(cost.server_cpu_us),
                    per(cost.server_io.map(|io| io.write_bytes)),
                    per(cost.server_io.map(|io| io.wchar)),
                )?;
            }
        }
        writeln!(
            f,
            "  cpu: wharf's utime+stime (/proc/PID/stat); written: write_bytes, what it caused to be \
             written to storage; wchar: all its write calls, sockets included (/proc/PID/io); each \
             ÷ deliveries acked in the phase (warmup included); no target set"
        )
    }

    fn write_processing(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let processing = &self.processing;
        let db = match &processing.database {
            Ok(db) => db,
            Err(why) => {
                writeln!(
                    f,
                    "processing: {} acked; !! database unreadable: {why}",
                    processing.acked
                )?;
                return Ok(());
            }
        };
        writeln!(
            f,
            "processing: {} acked, {} processed, {}",
            processing.acked,
            db.processed,
            lag_text(db.lag_all.as_ref())
        )?;
        if db.processed != processing.acked {
            writeln!(
                f,
                "  !! MISMATCH: {} acked but {} processed ({:+})",
                processing.acked,
                db.processed,
                i128::from(db.processed) - i128::from(processing.acked)
            )?;
        }
        writeln!(
            f,
            "  full load: {}; {} (target: every acked delivery in the ledger within {} after the burst: {})",
            lag_text(db.lag_full_load.as_ref()),
            drain_text(&processing.drain_after_full),
            secs(DRAIN_TARGET),
            verdict(self.drained_in_time())
        )?;
        writeln!(
            f,
            "  half load: {}; {}",
            lag_text(db.lag_half_load.as_ref()),
            drain_text(&processing.drain_after_half)
        )?;
        let lag_met = db
            .lag_tenth_load
            .is_some_and(|l| l.p99_ms < TENTH_LOAD_LAG_P99_TARGET_MS);
        writeln!(
            f,
            "  1/10 load: {} (target p99 < {TENTH_LOAD_LAG_P99_TARGET_MS} ms: {}); {}",
            lag_text(db.lag_tenth_load.as_ref()),
            verdict(lag_met),
            drain_text(&processing.drain_after_tenth)
        )?;
        let statuses: Vec<String> = db
            .by_status
            .iter()
            .map(|(status, count)| format!("{status} {count}"))
            .collect();
        writeln!(
            f,
            "  deliveries by status: {}; sales rows: {}",
            if statuses.is_empty() {
                "none".to_owned()
            } else {
                statuses.join(", ")
            },
            db.sales
        )
    }

    fn write_journal_disk(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let disk = match &self.journal_disk {
            Ok(disk) => disk,
            Err(why) => return writeln!(f, "journal on disk after the run: !! unreadable: {why}"),
        };
        let per_delivery = (self.processing.acked > 0)
            .then(|| disk.total_bytes as f64 / self.processing.acked as f64);
        writeln!(
            f,
            "journal on disk after the run (every file in the bench's SQLite directory; no target set): \
             {} in {} file(s), {} B per acked delivery (allocated {})",
            bytes_text(disk.total_bytes),
            disk.file_count,
            figure(per_delivery, 0),
            bytes_text(disk.allocated_bytes)
        )?;
        let largest: Vec<String> = disk
            .largest
            .iter()
            .map(|(name, bytes)| format!("{name} {}", bytes_text(*bytes)))
            .collect();
        writeln!(f, "  largest: {}", largest.join(", "))
    }
}

/// Seconds a drain took, or why there is no such figure.
fn drain_secs(outcome: &IdleOutcome) -> String {
    match outcome {
        IdleOutcome::Idle { waited } => format!("{:.2}", waited.as_secs_f64()),
        IdleOutcome::TimedOut => "504".to_owned(),
        IdleOutcome::Failed(_) => "failed".to_owned(),
    }
}

impl BenchReport {
    /// One row of the PostgreSQL table: throughput against the floor, ack
    /// latency, CPU of Wharf (summed over instances) and of the database
    /// (none apart when it runs inside Wharf), drain time, and the targets.
    fn write_comparison_row(
        &self,
        f: &mut fmt::Formatter<'_>,
        label: &str,
        phase: &PhaseStats,
        database_in_server: bool,
        drain: &IdleOutcome,
        drained_in_time: bool,
    ) -> fmt::Result {
        let (p50, p99, max) = phase.latency.map_or((f64::NAN, f64::NAN, f64::NAN), |l| {
            (l.p50_ms, l.p99_ms, l.max_ms)
        });
        let of_floor = if self.floor.rps > 0.0 {
            phase.rps / self.floor.rps
        } else {
            f64::NAN
        };
        let cpu_text = |share: fn(&CpuUsage) -> f64| {
            phase
                .cpu
                .map_or_else(|| "n/a".to_owned(), |cpu| format!("{:.0}", share(&cpu)))
        };
        let database_cpu = if database_in_server {
            "-".to_owned()
        } else {
            cpu_text(|cpu| cpu.database)
        };
        writeln!(
            f,
            "{label:<16}{:>8.0}{:>9.1}{:>9.2}{:>9.2}{:>9.1}{:>8}{:>7}{:>9}    ratio {}, p99 {}, drain {}",
            phase.rps,
            of_floor * 100.0,
            p50,
            p99,
            max,
            cpu_text(|cpu| cpu.server),
            database_cpu,
            drain_secs(drain),
            verdict(of_floor >= RATIO_TARGET),
            verdict(p99_below(phase, FULL_LOAD_P99_TARGET_MS)),
            verdict(drained_in_time)
        )?;
        write_failure_detail(f, phase)
    }

    /// One row of the PostgreSQL cost table.
    fn write_cost_row(
        f: &mut fmt::Formatter<'_>,
        label: &str,
        phase: &PhaseStats,
        database_in_server: bool,
        size: Option<u64>,
    ) -> fmt::Result {
        let database = |value: Option<f64>| {
            if database_in_server {
                "-".to_owned()
            } else {
                figure(value, 0)
            }
        };
        let database_wchar = phase.per_delivery(phase.cost.database_io.map(|io| io.wchar));
        writeln!(
            f,
            "{label:<16}{:>10}{:>10}{:>10}{:>10}{:>10}{:>12}",
            figure(phase.cpu_us_per_delivery(), 0),
            database(phase.database_cpu_us_per_delivery()),
            figure(phase.written_per_delivery(), 0),
            database(phase.database_written_per_delivery()),
            database(database_wchar),
            size.map_or_else(|| "n/a".to_owned(), bytes_text)
        )
    }

    fn write_postgres(&self, f: &mut fmt::Formatter<'_>, pg: &PostgresSection) -> fmt::Result {
        writeln!(
            f,
            "PostgreSQL — closed loop at full load, same generator and bodies, then drain"
        )?;
        writeln!(
            f,
            "{:<16}{:>8}{:>9}{:>9}{:>9}{:>9}{:>8}{:>7}{:>9}    targets",
            "", "req/s", "% floor", "p50 ms", "p99 ms", "max ms", "wharf%", "db%", "drain s"
        )?;
        self.write_comparison_row(
            f,
            "sqlite (1)",
            &self.wharf,
            true,
            &self.processing.drain_after_full,
            self.drained_in_time(),
        )?;
        for run in &pg.runs {
            self.write_comparison_row(
                f,
                &run.label(),
                &run.load,
                false,
                &run.drain,
                run.drained_in_time(),
            )?;
        }
        writeln!(
            f,
            "  sqlite (1): one wharf serve on a fresh SQLite file (the \"wharf (durable ingest)\" row above)"
        )?;
        for run in &pg.runs {
            writeln!(
                f,
                "  {}: {}",
                run.label(),
                describe_postgres_run(run, &pg.server)
            )?;
        }
        writeln!(
            f,
            "  wharf%, db%: CPU of the wharf processes (summed) and of PostgreSQL (the bench database's \
             backends, the WAL writer, checkpointer and background writer; SQLite runs inside wharf), \
             in % of one core; drain s: until every instance reported an empty backlog"
        )?;
        writeln!(
            f,
            "  targets: ratio >= {:.0}% of floor, p99 < {FULL_LOAD_P99_TARGET_MS} ms, every acked \
             delivery processed within {} after the burst",
            RATIO_TARGET * 100.0,
            secs(DRAIN_TARGET)
        )?;
        writeln!(
            f,
            "{:<16}{:>10}{:>10}{:>10}{:>10}{:>10}{:>12}",
            "per acked", "wharf µs", "db µs", "wharf B", "db B", "db wchar", "on disk"
        )?;
        let sqlite_size = self.journal_disk.as_ref().ok().map(|disk| disk.total_bytes);
        Self::write_cost_row(f, "sqlite (1)", &self.wharf, true, sqlite_size)?;
        for run in &pg.runs {
            let size = run.counts.as_ref().ok().map(|counts| counts.size_bytes);
            Self::write_cost_row(f, &run.label(), &run.load, false, size)?;
        }
        writeln!(
            f,
            "  per acked delivery over the load phase: CPU µs (utime+stime) and bytes written to storage \
             (write_bytes) of wharf and of the PostgreSQL processes above, db wchar: all their write \
             calls (/proc/PID/io; n/a when PostgreSQL runs elsewhere or its /proc is unreadable); \
             PostgreSQL's page writes deferred to a later checkpoint are not in it"
        )?;
        writeln!(
            f,
            "  on disk: sqlite, the journal's directory after the whole run; postgres, \
             pg_database_size after the drain (an empty database's ~7 MiB included)"
        )?;
        for run in &pg.runs {
            write_postgres_counts(f, run)?;
        }
        if let Some(why) = &pg.failure {
            writeln!(f, "  !! PostgreSQL not fully measured: {why}")?;
        }
        for run in pg.runs.iter().filter(|run| !run.stderr.is_empty()) {
            writeln!(
                f,
                "{} stderr (last {} lines):",
                run.label(),
                run.stderr.len()
            )?;
            for line in &run.stderr {
                writeln!(f, "  {line}")?;
            }
        }
        Ok(())
    }
}

/// What a PostgreSQL row measured, in one line.
fn describe_postgres_run(run: &PostgresRun, server: &str) -> String {
    if run.instances == 1 {
        format!(
            "one wharf serve on fresh database {} at {server}",
            run.database
        )
    } else {
        format!(
            "{} wharf serve on one fresh database {} at {server}, connection i sent to instance i % {}, \
             WHARF_IDLE_POLL_MS={SCALE_OUT_IDLE_POLL_MS} so each picks up its peers' work",
            run.instances, run.database, run.instances
        )
    }
}

fn write_postgres_counts(f: &mut fmt::Formatter<'_>, run: &PostgresRun) -> fmt::Result {
    let acked = run.load.acked_total;
    match &run.counts {
        Err(why) => writeln!(
            f,
            "  {}: {acked} acked; !! database unreadable: {why}",
            run.label()
        ),
        Ok(counts) => {
            let exact = [counts.processed, counts.processed_attempts, counts.sales]
                .iter()
                .all(|&count| count == acked);
            writeln!(
                f,
                "  {}: {acked} acked, {} processed, {} processed attempts, {} sales rows{}",
                run.label(),
                counts.processed,
                counts.processed_attempts,
                counts.sales,
                if exact {
                    " (each processed exactly once)"
                } else {
                    " !! MISMATCH"
                }
            )
        }
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "wharf bench — {} connections, ~{} B signed bodies, {} per phase (after {} warmup)",
            self.connections,
            self.body_bytes,
            secs(self.duration),
            secs(self.warmup)
        )?;
        writeln!(f, "measuring {}", self.wharf_bin.display())?;
        self.write_table(f)?;
        self.write_processing(f)?;
        self.write_journal_disk(f)?;
        match (&self.disk_sync, self.durable_ceiling_rps()) {
            (Ok(sync), Some(ceiling)) => writeln!(
                f,
                "journal disk, 4 KB write + fdatasync before Wharf started: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; \
                 durable ceiling for {} connections {:.0}/s (wharf reached {:.0}%, the floor {:.0}% of it)",
                sync.p50_ms,
                sync.p99_ms,
                sync.max_ms,
                self.connections,
                ceiling,
                self.wharf.rps / ceiling * 100.0,
                self.floor.rps / ceiling * 100.0,
            )?,
            (Err(why), _) => writeln!(f, "journal disk sync latency: !! unmeasured: {why}")?,
            _ => {}
        }
        writeln!(
            f,
            "memory (VmRSS): start {}, after full load {}, after half load {}, after 1/10 load {}",
            mib(self.memory.start_mib),
            mib(self.memory.after_full_mib),
            mib(self.memory.after_half_mib),
            mib(self.memory.after_tenth_mib)
        )?;
        self.write_cpu(f)?;
        self.write_cost(f)?;
        self.write_disk_work(f)?;
        if !self.wharf_stderr.is_empty() {
            writeln!(f, "wharf stderr (last {} lines):", self.wharf_stderr.len())?;
            for line in &self.wharf_stderr {
                writeln!(f, "  {line}")?;
            }
        }
        if let Some(postgres) = &self.postgres {
            self.write_postgres(f, postgres)?;
        }
        let problems = self.problems();
        if !problems.is_empty() {
            writeln!(
                f,
                "!! {} problem(s) make this run untrustworthy:",
                problems.len()
            )?;
            for problem in problems {
                writeln!(f, "!!   {problem}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let micros: Vec<u32> = (1..=1000).collect();
        let p = Percentiles::from_sorted_micros(&micros).expect("non-empty");
        assert_eq!(p.count, 1000);
        assert!((p.p50_ms - 0.5).abs() < 1e-9);
        assert!((p.p99_ms - 0.99).abs() < 1e-9);
        assert!((p.max_ms - 1.0).abs() < 1e-9);
        assert_eq!(Percentiles::from_sorted_micros::<u32>(&[]), None);
        let one = Percentiles::from_sorted_micros(&[7u32]).expect("non-empty");
        assert!((one.p50_ms - 0.007).abs() < 1e-12 && (one.p99_ms - 0.007).abs() < 1e-12);
    }

    fn phase(rps: f64) -> PhaseStats {
        PhaseStats {
            rps,
            requests: 10,
            latency: Percentiles::from_sorted_micros(&[400u32, 500, 2000]),
            acked_total: 12,
            ..PhaseStats::default()
        }
    }

    fn sample_report(processed: u64) -> BenchReport {
        let mut wharf = phase(750.0);
        wharf.cost = ResourceCost {
            server_cpu_us: Some(1200),
            server_io: Some(IoCounters {
                write_bytes: 24_576,
                wchar: 30_000,
            }),
            ..ResourceCost::default()
        };
        BenchReport {
            wharf_bin: PathBuf::from("target/release/wharf"),
            connections: 32,
            body_bytes: 1024,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            floor: phase(1000.0),
            wharf,
            wharf_half: phase(375.0),
            half_load_target_rps: 375.0,
            wharf_tenth: phase(75.0),
            tenth_load_target_rps: 75.0,
            processing: ProcessingStats {
                acked: 24,
                drain_after_full: IdleOutcome::Idle {
                    waited: Duration::from_millis(120),
                },
                drain_after_half: IdleOutcome::Idle {
                    waited: Duration::from_millis(3),
                },
                drain_after_tenth: IdleOutcome::Idle {
                    waited: Duration::from_millis(2),
                },
                database: Ok(DatabaseStats {
                    processed,
                    by_status: vec![("processed".to_owned(), processed)],
                    sales: processed,
                    lag_tenth_load: Percentiles::from_sorted_micros(&[3000u32, 4000, 150_000]),
                    ..DatabaseStats::default()
                }),
            },
            disk_sync: Ok(Percentiles {
                count: 500,
                p50_ms: 2.0,
                p99_ms: 4.0,
                max_ms: 9.0,
            }),
            journal_disk: Ok(DiskUsage {
                total_bytes: 3 << 20,
                allocated_bytes: 3 << 20,
                file_count: 2,
                largest: vec![
                    ("bench.db".to_owned(), 2 << 20),
                    ("bench.db-wal".to_owned(), 1 << 20),
                ],
            }),
            memory: MemoryStats {
                start_mib: Some(12.25),
                after_full_mib: None,
                after_half_mib: Some(40.0),
                after_tenth_mib: Some(41.0),
            },
            wharf_stderr: Vec::new(),
            postgres: None,
        }
    }

    #[test]
    fn clean_report_renders_targets_and_has_no_problems() {
        let report = sample_report(24);
        assert!(report.problems().is_empty());
        let text = report.to_string();
        assert!(text.starts_with("wharf bench — 32 connections, ~1024 B signed bodies, 10 s per phase (after 2 s warmup)\n"));
        assert!(
            text.contains("ratio 75.0% of floor (target >= 60%: ok); target p99 < 2 ms: MISSED"),
            "{text}"
        );
        assert!(
            text.contains("asked 375/s (target p99 < 3 ms: ok)"),
            "{text}"
        );
        assert!(
            text.contains("backlog drained in 0.12 s (target: every acked delivery in the ledger within 10 s after the burst: ok)"),
            "{text}"
        );
        assert!(
            text.contains("1/10 load: lag p50 4.0 ms p99 150.0 ms max 150.0 ms over 3 (target p99 < 100 ms: MISSED)"),
            "{text}"
        );
        assert!(
            text.contains("3.0 MiB in 2 file(s), 131072 B per acked delivery (allocated 3.0 MiB)\n  largest: bench.db 2.0 MiB, bench.db-wal 1.0 MiB"),
            "{text}"
        );
        // 1200 µs, 24576 B and 30000 B over 12 acked deliveries.
        assert!(
            text.contains("wharf, full load                   100       2048      2500"),
            "{text}"
        );
        assert!(
            text.contains("wharf, full load + its drain       n/a        n/a       n/a"),
            "{text}"
        );
        assert!(
            text.contains("processing: 24 acked, 24 processed"),
            "{text}"
        );
        assert!(
            text.contains("start 12.2 MiB, after full load n/a, after half load 40.0 MiB, after 1/10 load 41.0 MiB"),
            "{text}"
        );
        assert!(!text.contains("!!"), "{text}");
    }

    #[test]
    fn lost_deliveries_are_flagged_loudly() {
        let report = sample_report(20);
        let text = report.to_string();
        assert!(
            text.contains("!! MISMATCH: 24 acked but 20 processed (-4)"),
            "{text}"
        );
        assert_eq!(
            report.problems(),
            vec!["MISMATCH: 24 acked but 20 processed".to_owned()]
        );
    }

    #[test]
    fn other_work_on_the_machine_is_flagged() {
        let mut report = sample_report(24);
        report.wharf.cpu = Some(CpuUsage {
            server: 90.0,
            generator: 60.0,
            database: 0.0,
            other: 45.0,
            idle: 5.0,
        });
        let text = report.to_string();
        assert!(
            text.contains("wharf                         90         60       45       5"),
            "{text}"
        );
        assert_eq!(
            report.problems(),
            vec![
                "wharf: other work used 45% of a core meanwhile (limit 20%): numbers disturbed"
                    .to_owned()
            ]
        );
    }

    fn postgres_run(instances: usize, processed_attempts: u64) -> PostgresRun {
        let mut load = phase(600.0);
        load.cpu = Some(CpuUsage {
            server: 150.0,
            generator: 40.0,
            database: 70.0,
            other: 5.0,
            idle: 5.0,
        });
        load.cost = ResourceCost {
            server_cpu_us: Some(2400),
            server_io: Some(IoCounters {
                write_bytes: 0,
                wchar: 1200,
            }),
            database_cpu_us: Some(3600),
            database_io: Some(IoCounters {
                write_bytes: 48_000,
                wchar: 60_000,
            }),
        };
        PostgresRun {
            instances,
            database: format!("wharf_bench_7_{instances}"),
            load,
            drain: IdleOutcome::Idle {
                waited: Duration::from_millis(1250),
            },
            counts: Ok(PostgresCounts {
                processed: 12,
                processed_attempts,
                sales: 12,
                size_bytes: 9 << 20,
            }),
            stderr: Vec::new(),
            cleanup_error: None,
        }
    }

    #[test]
    fn postgres_rows_sit_beside_sqlite_and_double_processing_is_flagged() {
        let mut report = sample_report(24);
        report.postgres = Some(PostgresSection {
            server: "127.0.0.1:5432".to_owned(),
            runs: vec![postgres_run(1, 12), postgres_run(3, 13)],
            failure: None,
        });
        let text = report.to_string();
        assert!(
            text.contains(
                "sqlite (1)           750     75.0     0.50     2.00      2.0     n/a      -     0.12"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "postgres (3)         600     60.0     0.50     2.00      2.0     150     70     1.25    ratio ok, p99 MISSED, drain ok"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "sqlite (1)             100         -      2048         -         -     3.0 MiB"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "postgres (1)           200       300         0      4000      5000     9.0 MiB"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "postgres (1): one wharf serve on fresh database wharf_bench_7_1 at 127.0.0.1:5432"
            ),
            "{text}"
        );
        assert!(
            text.contains("postgres (1): 12 acked, 12 processed, 12 processed attempts, 12 sales rows (each processed exactly once)"),
            "{text}"
        );
        assert_eq!(
            report.problems(),
            vec!["postgres (3): MISMATCH: 12 acked but 13 processed attempts".to_owned()]
        );
    }

    #[test]
    fn drain_of_several_instances_is_the_slowest_or_the_first_failure() {
        let idle = |ms| IdleOutcome::Idle {
            waited: Duration::from_millis(ms),
        };
        assert_eq!(combine_idle(vec![idle(5), idle(90), idle(40)]), idle(90));
        assert_eq!(
            combine_idle(vec![idle(5), IdleOutcome::TimedOut, idle(40)]),
            IdleOutcome::TimedOut
        );
    }

    #[test]
    fn reads_counts_and_splits_lag_by_phase_window() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        let db = Connection::open(&path).expect("create db");
        db.execute_batch(
            "CREATE TABLE deliveries (status TEXT, received_at INTEGER, processed_at INTEGER);
             CREATE TABLE sales (id INTEGER);
             INSERT INTO sales VALUES (1), (2);
             INSERT INTO deliveries VALUES ('processed', 100, 1100), ('processed', 200, 5200),
                                           ('processed', 900, 903000), ('failed', 950, NULL);",
        )
        .expect("seed db");
        drop(db);
        let full = WallWindow {
            start_us: 0,
            end_us: 500,
        };
        let half = WallWindow {
            start_us: 800,
            end_us: 1000,
        };
        let tenth = WallWindow {
            start_us: 150,
            end_us: 250,
        };
        let windows = PhaseWindows { full, half, tenth };
        let stats = read_database(&path, windows).expect("read");
        assert_eq!(stats.processed, 3);
        assert_eq!(stats.sales, 2);
        assert_eq!(
            stats.by_status,
            vec![("failed".to_owned(), 1), ("processed".to_owned(), 3)]
        );
        assert_eq!(stats.lag_all.map(|l| l.count), Some(3));
        let full_lag = stats.lag_full_load.expect("full-load lag");
        assert_eq!((full_lag.count, full_lag.max_ms), (2, 5.0));
        let half_lag = stats.lag_half_load.expect("half-load lag");
        assert_eq!((half_lag.count, half_lag.p50_ms), (1, 902.1));
        let tenth_lag = stats.lag_tenth_load.expect("tenth-load lag");
        assert_eq!((tenth_lag.count, tenth_lag.p50_ms), (1, 5.0));
    }
}
