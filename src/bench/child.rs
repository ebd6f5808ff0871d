//! Server child processes: start, find the announced address, watch CPU and
//! memory, kill. Children are spawned with `kill_on_drop`, so every exit path
//! of the bench (error, panic, cancellation) kills them.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use super::report::CpuUsage;

/// Both `wharf serve` and `wharf bench-floor` print this, then the address.
const READY_PREFIX: &str = "wharf ready: listening on http://";
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

    /// CPU time of the server so far, in clock ticks (`None` off Linux or
    /// once the server is gone).
    fn cpu_ticks(&self) -> Option<u64> {
        let pid = self.child.id()?;
        parse_process_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
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

/// CPU ticks so far of each of `pids` that is a local PostgreSQL process.
/// The name check matters: for a PostgreSQL on another machine the pids are
/// that machine's, and whatever runs here under the same pid is not ours.
pub(crate) fn postgres_ticks(pids: &[u32]) -> BTreeMap<u32, u64> {
    pids.iter()
        .filter_map(|&pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            (parse_process_name(&stat)? == "postgres")
                .then(|| parse_process_ticks(&stat))
                .flatten()
                .map(|ticks| (pid, ticks))
        })
        .collect()
}

/// Ticks used between two [`postgres_ticks`] readings: processes started
/// meanwhile count from zero, those that ended meanwhile are lost.
pub(crate) fn ticks_between(before: &BTreeMap<u32, u64>, after: &BTreeMap<u32, u64>) -> u64 {
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

fn parse_vm_rss_kib(proc_status: &str) -> Option<u64> {
    proc_status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
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
