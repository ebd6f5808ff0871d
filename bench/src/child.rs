//! Server child processes: start, find the announced address, watch CPU,
//! disk writes and memory, kill. Children are spawned with `kill_on_drop`, so
//! every exit path of the bench (error, panic, cancellation) kills them.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use super::report::{CpuUsage, IoCounters, ResourceCost};
use super::READY_PREFIX;
/// Clock ticks per second of the CPU times in `/proc` (`USER_HZ`, 100 on every
/// Linux architecture the bench runs on; reading `sysconf` would need unsafe code).
const TICKS_PER_SEC: u64 = 100;
/// Startup includes migrations; generous, but a hung child must not hang us.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Stderr lines of a child kept to explain a failed start or for the report.
const STDERR_TAIL_LINES: usize = 20;

/// A server child process that announced its address.
pub(crate) struct ChildServer {
    name: &'static str,
    child: Child,
    pub addr: SocketAddr,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
}

impl ChildServer {
    /// Spawns `command` and waits for its ready line. The child is killed if
    /// this fails (or whenever the returned value is dropped).
    pub(crate) async fn spawn(mut command: Command, name: &'static str) -> anyhow::Result<Self> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("spawning {name} ({:?})", command.as_std().get_program()))?;
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(keep_tail(
                BufReader::new(stderr).lines(),
                stderr_tail.clone(),
            ));
        }
        let stdout = child
            .stdout
            .take()
            .context("child stdout was not captured")?;
        let mut server = Self {
            name,
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stderr_tail,
        };
        let ready =
            tokio::time::timeout(READY_TIMEOUT, wait_ready(BufReader::new(stdout).lines())).await;
        match ready {
            Ok(Ok((addr, rest))) => {
                server.addr = addr;
                // Keep reading so a chatty child never blocks on a full pipe.
                tokio::spawn(drain(rest));
                Ok(server)
            }
            Ok(Err(error)) => Err(server.startup_error(error)),
            Err(_) => {
                Err(server.startup_error(anyhow::anyhow!("no ready line within {READY_TIMEOUT:?}")))
            }
        }
    }

    fn startup_error(&mut self, error: anyhow::Error) -> anyhow::Error {
        let status = match self.child.try_wait() {
            Ok(Some(status)) => format!("exited with {status}"),
            _ => "still running; killing it".to_owned(),
        };
        error.context(format!(
            "{} did not start ({status}); last stderr lines: {}",
            self.name,
            self.stderr_tail()
        ))
    }

    /// Fails (with the child's last stderr lines) if the server has exited.
    pub(crate) fn ensure_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!(
                "{} exited during the bench with {status}; last stderr lines: {}",
                self.name,
                self.stderr_tail()
            ),
            Err(error) => Err(error).with_context(|| format!("checking on {}", self.name)),
        }
    }

    fn stderr_tail(&self) -> String {
        let lines = self.stderr_lines();
        if lines.is_empty() {
            "(none)".to_owned()
        } else {
            format!("\n{}", lines.join("\n"))
        }
    }

    /// The last lines the server wrote to stderr (at most 20).
    pub(crate) fn stderr_lines(&self) -> Vec<String> {
        self.stderr_tail
            .lock()
            .map(|lines| lines.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Resident memory in MiB from `/proc/<pid>/status` (`None` off Linux or
    /// once the process is gone).
    pub(crate) fn rss_mib(&self) -> Option<f64> {
        let pid = self.child.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        parse_vm_rss_kib(&status).map(|kib| kib as f64 / 1024.0)
    }

    /// Resident memory from `/proc/<pid>/status`: all of it and the anonymous part (the
    /// heap: what buffers that pile up would grow), `None` off Linux or once the process is gone.
    pub(crate) fn memory(&self) -> Option<ProcessMemory> {
        let pid = self.child.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        Some(ProcessMemory {
            vm_rss_kib: parse_vm_rss_kib(&status)?,
            rss_anon_kib: parse_status_kib(&status, "RssAnon:"),
        })
    }

    /// CPU time of the server so far, in clock ticks (`None` off Linux or
    /// once the server is gone).
    fn cpu_ticks(&self) -> Option<u64> {
        let pid = self.child.id()?;
        parse_process_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }

    /// Disk-write counters of the server so far (`None` off Linux, once the
    /// server is gone, or when `/proc/<pid>/io` is not readable).
    fn io(&self) -> Option<IoCounters> {
        let pid = self.child.id()?;
        parse_proc_io(&std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?)
    }

    /// Kills the server and reaps it. Best effort: `kill_on_drop` is the
    /// backstop if this fails.
    pub(crate) async fn stop(mut self) {
        if self.child.start_kill().is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        }
    }
}

/// CPU counters for the machine, this process and `servers`, whose time is
/// summed: several instances serving one load count as one server (`None`
/// off Linux or once any of them is gone).
pub(crate) fn cpu_counters(servers: &[ChildServer]) -> Option<CpuCounters> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let (cores, total, idle) = parse_machine_ticks(&read("/proc/stat")?)?;
    let generator = parse_process_ticks(&read("/proc/self/stat")?)?;
    let server = servers
        .iter()
        .map(ChildServer::cpu_ticks)
        .sum::<Option<u64>>()?;
    Some(CpuCounters {
        cores,
        total,
        idle,
        generator,
        server,
    })
}

/// What the servers and the database's own processes had used at one
/// instant: the CPU counters for the split, plus their CPU time and disk
/// writes for the per-delivery costs.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    cpu: Option<CpuCounters>,
    /// Summed over the servers; `None` if any is unreadable.
    server_ticks: Option<u64>,
    server_io: Option<IoCounters>,
    /// The database's processes (none for SQLite, inside the server).
    database: BTreeMap<u32, ProcessSample>,
}

impl Sample {
    /// Reads everything now. `database` comes from [`postgres_samples`].
    pub(crate) fn take(servers: &[ChildServer], database: BTreeMap<u32, ProcessSample>) -> Self {
        Self {
            cpu: cpu_counters(servers),
            server_ticks: servers.iter().map(ChildServer::cpu_ticks).sum(),
            server_io: servers.iter().map(ChildServer::io).sum(),
            database,
        }
    }

    /// The CPU split between `before` and `self`.
    pub(crate) fn cpu_usage_since(&self, before: &Self) -> Option<CpuUsage> {
        let database_ticks = ticks_between(&before.database_ticks(), &self.database_ticks());
        self.cpu
            .zip(before.cpu)
            .and_then(|(after, before)| after.usage_since(&before, database_ticks))
    }

    /// CPU time and disk writes of the servers and of the database's own
    /// processes between `before` and `self`. The database's figures are
    /// `None` when it has no process here (SQLite, or PostgreSQL elsewhere)
    /// and its disk writes also when one of its `/proc/<pid>/io` is unreadable.
    pub(crate) fn cost_since(&self, before: &Self) -> ResourceCost {
        let database_cpu_us = (!self.database.is_empty()).then(|| {
            ticks_to_micros(ticks_between(
                &before.database_ticks(),
                &self.database_ticks(),
            ))
        });
        ResourceCost {
            server_cpu_us: self
                .server_ticks
                .zip(before.server_ticks)
                .map(|(after, before)| ticks_to_micros(after.saturating_sub(before))),
            server_io: self
                .server_io
                .zip(before.server_io)
                .map(|(after, before)| after.since(&before)),
            database_cpu_us,
            database_io: io_between(&before.database, &self.database),
        }
    }

    fn database_ticks(&self) -> BTreeMap<u32, u64> {
        self.database
            .iter()
            .map(|(&pid, sample)| (pid, sample.ticks))
            .collect()
    }
}

fn ticks_to_micros(ticks: u64) -> u64 {
    ticks.saturating_mul(1_000_000 / TICKS_PER_SEC)
}

/// CPU time and disk writes so far of one database process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcessSample {
    ticks: u64,
    /// `None` if `/proc/<pid>/io` is not readable (another user's process
    /// and the bench not root).
    io: Option<IoCounters>,
}

/// Disk writes between two readings of the database's processes, summed:
/// processes started meanwhile count from zero, those that ended meanwhile
/// are lost. `None` without any process or with one unreadable.
fn io_between(
    before: &BTreeMap<u32, ProcessSample>,
    after: &BTreeMap<u32, ProcessSample>,
) -> Option<IoCounters> {
    if after.is_empty() {
        return None;
    }
    after
        .iter()
        .try_fold(IoCounters::default(), |sum, (pid, sample)| {
            let earlier = match before.get(pid) {
                Some(earlier) => earlier.io?,
                None => IoCounters::default(),
            };
            Some(sum + sample.io?.since(&earlier))
        })
}

/// Reads stdout until the ready line; returns the announced address and
/// the rest of the stream.
async fn wait_ready(
    mut lines: Lines<BufReader<ChildStdout>>,
) -> anyhow::Result<(SocketAddr, Lines<BufReader<ChildStdout>>)> {
    while let Some(line) = lines.next_line().await.context("reading child stdout")? {
        if let Some(addr) = parse_ready_line(&line) {
            return Ok((addr?, lines));
        }
    }
    bail!("stdout closed before the ready line ({READY_PREFIX}ADDR)")
}

/// `Some` if `line` is the ready line, with the parsed address.
fn parse_ready_line(line: &str) -> Option<anyhow::Result<SocketAddr>> {
    let rest = line.trim().strip_prefix(READY_PREFIX)?;
    let addr = rest.trim_end_matches('/');
    Some(
        addr.parse()
            .with_context(|| format!("bad address in ready line: {line:?}")),
    )
}

/// Cumulative CPU time in clock ticks, read from `/proc` at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CpuCounters {
    cores: u64,
    /// All time of all cores, idle included.
    total: u64,
    /// idle + iowait of all cores.
    idle: u64,
    /// This process (the load generator). Like the server's, it includes the
    /// softirq time (loopback TCP) the kernel charged to it.
    generator: u64,
    server: u64,
}

impl CpuCounters {
    /// Shares of one core used between `before` and `self`, given the ticks
    /// the database's own processes used meanwhile (0 for SQLite, which runs
    /// inside the server). "Other" is the busy time none of them accounts
    /// for (other processes, steal, interrupts landing while no bench process
    /// ran): on a shared 2-core machine it tells whether a run was disturbed.
    pub(crate) fn usage_since(&self, before: &Self, database_ticks: u64) -> Option<CpuUsage> {
        let ticks = self.total.checked_sub(before.total)?;
        if ticks == 0 {
            return None;
        }
        let one_core = ticks as f64 / self.cores.max(1) as f64;
        let percent =
            |after: u64, earlier: u64| after.saturating_sub(earlier) as f64 * 100.0 / one_core;
        let server = percent(self.server, before.server);
        let generator = percent(self.generator, before.generator);
        let database = percent(database_ticks, 0);
        let idle = percent(self.idle, before.idle);
        let busy = self.cores as f64 * 100.0 - idle;
        Some(CpuUsage {
            server,
            generator,
            database,
            other: (busy - server - generator - database).max(0.0),
            idle,
        })
    }
}

/// CPU ticks and disk writes so far of each of `pids` that is a local
/// PostgreSQL process. The name check matters: for a PostgreSQL on another
/// machine the pids are that machine's, and whatever runs here under the
/// same pid is not ours.
pub(crate) fn postgres_samples(pids: &[u32]) -> BTreeMap<u32, ProcessSample> {
    pids.iter()
        .filter_map(|&pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            if parse_process_name(&stat)? != "postgres" {
                return None;
            }
            let ticks = parse_process_ticks(&stat)?;
            let io = std::fs::read_to_string(format!("/proc/{pid}/io"))
                .ok()
                .and_then(|text| parse_proc_io(&text));
            Some((pid, ProcessSample { ticks, io }))
        })
        .collect()
}

/// Ticks used between two readings: processes started meanwhile count from
/// zero, those that ended meanwhile are lost.
fn ticks_between(before: &BTreeMap<u32, u64>, after: &BTreeMap<u32, u64>) -> u64 {
    after
        .iter()
        .map(|(pid, &ticks)| ticks.saturating_sub(before.get(pid).copied().unwrap_or(0)))
        .sum()
}

/// The command name of `/proc/<pid>/stat`: between the first '(' and the
/// last ')' (it may contain either).
fn parse_process_name(proc_pid_stat: &str) -> Option<&str> {
    let start = proc_pid_stat.find('(')? + 1;
    let end = proc_pid_stat.rfind(')')?;
    proc_pid_stat.get(start..end)
}

/// `(cores, total, idle)` from `/proc/stat`.
fn parse_machine_ticks(proc_stat: &str) -> Option<(u64, u64, u64)> {
    let mut lines = proc_stat.lines();
    let fields: Vec<u64> = lines
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    let &[user, nice, system, idle, iowait, irq, softirq, steal, ..] = fields.as_slice() else {
        return None;
    };
    let cores = lines.take_while(|line| line.starts_with("cpu")).count() as u64;
    let total = user + nice + system + idle + iowait + irq + softirq + steal;
    Some((cores, total, idle + iowait))
}

/// utime + stime (all threads) from `/proc/<pid>/stat`.
fn parse_process_ticks(proc_pid_stat: &str) -> Option<u64> {
    // The command name may contain spaces and parentheses: skip past the
    // last ')'; utime and stime are then the 12th and 13th fields.
    let (_, rest) = proc_pid_stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `write_bytes` (what the process caused to be written to storage: page
/// cache pages it dirtied, direct I/O) and `wchar` (every byte passed to
/// write-like calls, sockets and pipes included) from `/proc/<pid>/io`.
fn parse_proc_io(proc_pid_io: &str) -> Option<IoCounters> {
    let field = |name: &str| {
        proc_pid_io
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|value| value.trim().parse::<u64>().ok())
    };
    Some(IoCounters {
        write_bytes: field("write_bytes")?,
        wchar: field("wchar")?,
    })
}

/// A server's resident memory at one moment, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessMemory {
    pub vm_rss_kib: u64,
    /// `RssAnon` (Linux 4.5 and later).
    pub rss_anon_kib: Option<u64>,
}

fn parse_vm_rss_kib(proc_status: &str) -> Option<u64> {
    parse_status_kib(proc_status, "VmRSS:")
}

/// A `NAME:   1234 kB` line of `/proc/<pid>/status`.
fn parse_status_kib(proc_status: &str, name: &str) -> Option<u64> {
    proc_status
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

async fn keep_tail<R>(mut lines: Lines<R>, tail: Arc<Mutex<VecDeque<String>>>)
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    while let Ok(Some(line)) = lines.next_line().await {
        if let Ok(mut kept) = tail.lock() {
            if kept.len() == STDERR_TAIL_LINES {
                kept.pop_front();
            }
            kept.push_back(line);
        }
    }
}

async fn drain<R>(mut lines: Lines<R>)
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    while let Ok(Some(_)) = lines.next_line().await {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ready_line() {
        let addr = parse_ready_line("wharf ready: listening on http://127.0.0.1:4321")
            .expect("is the ready line")
            .expect("valid address");
        assert_eq!(addr, SocketAddr::from(([127, 0, 0, 1], 4321)));
        assert!(parse_ready_line("starting up").is_none());
        assert!(
            parse_ready_line("wharf ready: listening on http://nonsense")
                .expect("is the ready line")
                .is_err()
        );
    }

    #[test]
    fn parses_vm_rss() {
        let status = "Name:\twharf\nVmPeak:\t  99999 kB\nVmRSS:\t   12544 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss_kib(status), Some(12544));
        assert_eq!(parse_vm_rss_kib("Name:\tx\n"), None);
        let status = "VmRSS:\t   12544 kB\nRssAnon:\t    8000 kB\nRssFile:\t4544 kB\n";
        assert_eq!(parse_status_kib(status, "RssAnon:"), Some(8000));
    }

    #[test]
    fn parses_cpu_ticks() {
        let stat = "cpu  100 5 50 800 10 1 20 4 0 0\ncpu0 50 0 25 400 5 1 10 2 0 0\ncpu1 50 5 25 400 5 0 10 2 0 0\nintr 1\n";
        assert_eq!(parse_machine_ticks(stat), Some((2, 990, 810)));
        let pid_stat = "42 (my (odd) name) S 1 42 42 0 -1 4194304 101 0 0 0 7 3 0 0 20 0 1 0";
        assert_eq!(parse_process_ticks(pid_stat), Some(10));
        assert_eq!(parse_process_ticks("garbage"), None);
    }

    #[test]
    fn cpu_usage_is_in_percent_of_one_core() {
        let before = CpuCounters {
            cores: 2,
            total: 1000,
            idle: 500,
            generator: 100,
            server: 200,
        };
        // 400 ticks over 2 cores: 200 ticks make one core.
        let after = CpuCounters {
            cores: 2,
            total: 1400,
            idle: 640,
            generator: 280,
            server: 360,
        };
        let usage = after.usage_since(&before, 0).expect("usage");
        assert_eq!(
            (usage.server, usage.generator, usage.other, usage.idle),
            (80.0, 90.0, 0.0, 70.0)
        );
        assert_eq!(before.usage_since(&after, 0), None);
        // Busy 130% of a core as before; the database's 40 ticks come out
        // of what would otherwise be "other".
        let slower = CpuCounters {
            generator: 200,
            server: 300,
            ..after
        };
        let usage = slower.usage_since(&before, 40).expect("usage");
        assert_eq!(
            (usage.server, usage.generator, usage.database, usage.other),
            (50.0, 50.0, 20.0, 10.0)
        );
    }

    #[test]
    fn parses_proc_io_and_sums_database_writes() {
        let io = "rchar: 6976\nwchar: 1500\nsyscr: 10\nsyscw: 3\nread_bytes: 0\nwrite_bytes: 8192\ncancelled_write_bytes: 0\n";
        let parsed = parse_proc_io(io).expect("io");
        assert_eq!((parsed.write_bytes, parsed.wchar), (8192, 1500));
        assert_eq!(parse_proc_io("rchar: 1\n"), None);

        let sample = |ticks, write_bytes| ProcessSample {
            ticks,
            io: Some(IoCounters {
                write_bytes,
                wchar: write_bytes / 2,
            }),
        };
        let before = BTreeMap::from([(10, sample(1, 4096)), (11, sample(1, 100))]);
        let after = BTreeMap::from([(10, sample(2, 12288)), (12, sample(1, 1000))]);
        let written = io_between(&before, &after).expect("readable");
        assert_eq!(
            (written.write_bytes, written.wchar),
            (8192 + 1000, 4096 + 500)
        );
        assert_eq!(io_between(&before, &BTreeMap::new()), None);
        let unreadable = BTreeMap::from([(10, ProcessSample { ticks: 2, io: None })]);
        assert_eq!(io_between(&before, &unreadable), None);
    }

    #[test]
    fn database_ticks_count_new_processes_from_zero() {
        let before = BTreeMap::from([(10, 100), (11, 50), (12, 7)]);
        let after = BTreeMap::from([(10, 130), (11, 50), (13, 5)]);
        assert_eq!(ticks_between(&before, &after), 35);
        let stat = "42 (postgres) S 1 42 42 0 -1 4194304 101 0 0 0 7 3 0 0 20 0 1 0";
        assert_eq!(parse_process_name(stat), Some("postgres"));
        assert_eq!(
            parse_process_name("42 (my (odd) name) S 1"),
            Some("my (odd) name")
        );
    }
}
