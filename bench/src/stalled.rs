//! `--stalled-subscribers N`: does a stream client that stops reading slow ingest? Issue 13
//! promises it does not (bounded per-client buffers; the writer never waits on a subscriber;
//! a client that falls behind is told `lagged` and resumes from the database). Each repeat runs
//! the same full-load (closed-loop) ingest phase against two fresh `wharf serve` on SQLite: one
//! with no subscriber, one with `N` subscribers (alternately `GET /api/stream` and
//! `GET /api/ws`) that connect, with a tiny receive buffer, and never read during the phase.
//! The order of the two alternates between repeats so that drift over the run (page cache,
//! other load on the machine) does not always favour the same side.
//!
//! Afterwards each stalled subscriber starts reading and must find a `lagged` notice: proof
//! that it was left behind (not waited for) and told so. The server's resident memory
//! (`VmRSS`, `RssAnon`) before and after each phase shows whether what the stalled clients did
//! not read piled up in the server.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

use crate::child::{ChildServer, ProcessMemory};
use crate::load::{BodyFactory, Pace};
use crate::report::PhaseStats;
use crate::summary::median;
use crate::summary::MIN_REPEATS;
use crate::{
    measure_phase, random_token, wharf_command, BenchOptions, DatabaseProcesses, LoadRuntime,
};

/// Receive buffer a stalled subscriber asks for (the kernel rounds it up a little): small, so
/// the server's own buffers, not the client's socket, are what fills.
const STALLED_RECV_BUFFER: u32 = 4096;
/// How long a subscriber, once it reads again, may take to find its `lagged` notice.
const LAGGED_WITHIN: Duration = Duration::from_secs(20);
/// The notice as each stream writes it: an SSE event name, a WebSocket text frame's field.
const SSE_LAGGED: &[u8] = b"event: lagged";
const WS_LAGGED: &[u8] = b"\"kind\":\"lagged\"";

/// One repeat: the same phase without and with stalled subscribers.
#[derive(Debug, Clone)]
pub struct StalledReport {
    pub subscribers: usize,
    pub alone: StalledRun,
    pub stalled: StalledRun,
    /// Which ran first in this repeat.
    pub stalled_first: bool,
}

/// One full-load phase against one fresh `wharf serve`.
#[derive(Debug, Clone)]
pub struct StalledRun {
    pub phase: PhaseStats,
    /// The server's memory once the subscribers (if any) were connected, before the phase.
    pub memory_before: Option<ProcessMemory>,
    /// Right after the phase, while the subscribers still had not read.
    pub memory_after: Option<ProcessMemory>,
    /// Subscribers that found a `lagged` notice once they read (0 without subscribers).
    pub told_lagged: usize,
}

impl StalledReport {
    /// Stalled over alone: 1.0 means no slowdown.
    pub fn rps_ratio(&self) -> Option<f64> {
        (self.alone.phase.rps > 0.0).then(|| self.stalled.phase.rps / self.alone.phase.rps)
    }

    /// Stalled p99 over alone p99: 1.0 means no slowdown.
    pub fn p99_ratio(&self) -> Option<f64> {
        let alone = self.alone.phase.latency?.p99_ms;
        let stalled = self.stalled.phase.latency?.p99_ms;
        (alone > 0.0).then(|| stalled / alone)
    }

    /// What makes this repeat's figures untrustworthy or breaks the promise.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (name, run) in [("alone", &self.alone), ("stalled", &self.stalled)] {
            if run.phase.errors > 0 || !run.phase.non_2xx.is_empty() {
                problems.push(format!(
                    "{name}: {} transport errors, non-2xx {:?}",
                    run.phase.errors, run.phase.non_2xx
                ));
            }
        }
        if self.stalled.told_lagged < self.subscribers {
            problems.push(format!(
                "only {} of {} stalled subscribers were told `lagged`",
                self.stalled.told_lagged, self.subscribers
            ));
        }
        problems
    }
}

/// Runs one repeat (`index` from 1 picks the order).
pub async fn run(
    opts: &BenchOptions,
    subscribers: usize,
    index: u32,
) -> anyhow::Result<StalledReport> {
    if subscribers == 0 {
        bail!("--stalled-subscribers needs at least one subscriber");
    }
    let secret = random_token();
    let admin_token = random_token();
    let load = LoadRuntime::new()?;
    let factory = Arc::new(BodyFactory::new(&secret, opts.body_bytes)?);
    let bench = Bench {
        opts,
        load: &load,
        factory: &factory,
        secret: &secret,
        admin_token: &admin_token,
    };
    let stalled_first = index.is_multiple_of(2);
    let (alone, stalled) = if stalled_first {
        let stalled = bench.phase(subscribers).await?;
        (bench.phase(0).await?, stalled)
    } else {
        let alone = bench.phase(0).await?;
        (alone, bench.phase(subscribers).await?)
    };
    Ok(StalledReport {
        subscribers,
        alone,
        stalled,
        stalled_first,
    })
}

struct Bench<'a> {
    opts: &'a BenchOptions,
    load: &'a LoadRuntime,
    factory: &'a Arc<BodyFactory>,
    secret: &'a str,
    admin_token: &'a str,
}

impl Bench<'_> {
    /// A fresh server, `subscribers` stalled clients, one full-load phase, then the clients
    /// read again and look for their `lagged` notice.
    async fn phase(&self, subscribers: usize) -> anyhow::Result<StalledRun> {
        let dir = tempfile::Builder::new()
            .prefix("wharf-bench-stalled-")
            .tempdir()
            .context("creating temporary directory for the bench database")?;
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let command = wharf_command(&self.opts.wharf_bin, &url, self.secret, self.admin_token);
        let mut server = ChildServer::spawn(command, "wharf serve").await?;
        let mut clients = Vec::with_capacity(subscribers);
        for index in 0..subscribers {
            let kind = if index.is_multiple_of(2) {
                StreamKind::Sse
            } else {
                StreamKind::WebSocket
            };
            clients.push(Subscriber::connect(server.addr, kind, self.admin_token).await?);
        }
        let memory_before = server.memory();
        let measured = measure_phase(
            std::slice::from_mut(&mut server),
            DatabaseProcesses::InServer,
            self.load,
            self.factory,
            self.opts.plan(Pace::Closed),
        )
        .await?;
        let memory_after = server.memory();
        let told = futures_util::future::join_all(clients.into_iter().map(Subscriber::told_lagged));
        let told_lagged = told.await.into_iter().filter(|&told| told).count();
        server.stop().await;
        drop(dir);
        Ok(StalledRun {
            phase: measured.stats(None),
            memory_before,
            memory_after,
            told_lagged,
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum StreamKind {
    Sse,
    WebSocket,
}

/// A stream client that read its answer's head and then nothing.
struct Subscriber {
    stream: TcpStream,
    kind: StreamKind,
}

impl Subscriber {
    async fn connect(addr: SocketAddr, kind: StreamKind, token: &str) -> anyhow::Result<Self> {
        let socket = TcpSocket::new_v4().context("creating a subscriber socket")?;
        socket
            .set_recv_buffer_size(STALLED_RECV_BUFFER)
            .context("shrinking the subscriber's receive buffer")?;
        let mut stream = socket
            .connect(addr)
            .await
            .with_context(|| format!("connecting a subscriber to {addr}"))?;
        let (request, expected) = match kind {
            StreamKind::Sse => (
                format!(
                    "GET /api/stream HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
                     Accept: text/event-stream\r\n\r\n"
                ),
                "HTTP/1.1 200",
            ),
            StreamKind::WebSocket => (
                format!(
                    "GET /api/ws HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
                     Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
                ),
                "HTTP/1.1 101",
            ),
        };
        stream
            .write_all(request.as_bytes())
            .await
            .context("sending a subscriber's request")?;
        let head = read_head(&mut stream).await?;
        if !head.starts_with(expected) {
            bail!(
                "{kind:?} subscriber answered {:?}",
                head.lines().next().unwrap_or("")
            );
        }
        Ok(Self { stream, kind })
    }

    /// Reads again until the `lagged` notice (true) or the end, an error or
    /// [`LAGGED_WITHIN`] (false).
    async fn told_lagged(mut self) -> bool {
        let marker = match self.kind {
            StreamKind::Sse => SSE_LAGGED,
            StreamKind::WebSocket => WS_LAGGED,
        };
        let search = async {
            let mut seen: Vec<u8> = Vec::new();
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                let read = self.stream.read(&mut chunk).await.unwrap_or(0);
                if read == 0 {
                    return false;
                }
                seen.extend_from_slice(&chunk[..read]);
                if seen.windows(marker.len()).any(|window| window == marker) {
                    return true;
                }
                // Keep only what could be the start of a marker cut by this read.
                let keep = seen.len().min(marker.len());
                seen.drain(..seen.len() - keep);
            }
        };
        tokio::time::timeout(LAGGED_WITHIN, search)
            .await
            .unwrap_or(false)
    }
}

/// Reads up to the end of the answer's head (what follows it is left unread or dropped: the
/// stream's first bytes are a comment or nothing).
async fn read_head(stream: &mut TcpStream) -> anyhow::Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    let read = async {
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).await? == 0 {
                bail!("the server closed a subscriber before answering");
            }
            head.push(byte[0]);
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .context("no answer to a subscriber within 10 s")??;
    Ok(String::from_utf8_lossy(&head).into_owned())
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(
        || "n/a".to_owned(),
        |kib| format!("{:.1} MiB", kib as f64 / 1024.0),
    )
}

fn memory_text(before: Option<ProcessMemory>, after: Option<ProcessMemory>) -> [String; 2] {
    [
        format!(
            "{} -> {}",
            mib(before.map(|m| m.vm_rss_kib)),
            mib(after.map(|m| m.vm_rss_kib))
        ),
        format!(
            "{} -> {}",
            mib(before.and_then(|m| m.rss_anon_kib)),
            mib(after.and_then(|m| m.rss_anon_kib))
        ),
    ]
}

impl fmt::Display for StalledReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.subscribers;
        writeln!(
            f,
            "stalled subscribers: {n} ({} SSE /api/stream, {} WebSocket /api/ws), none reading \
             during the phase; {} ran first",
            n.div_ceil(2),
            n / 2,
            if self.stalled_first {
                "stalled"
            } else {
                "alone"
            }
        )?;
        let p99 = |run: &StalledRun| {
            run.phase
                .latency
                .map_or_else(|| "n/a".to_owned(), |l| format!("{:.2} ms", l.p99_ms))
        };
        let [alone_rss, alone_anon] =
            memory_text(self.alone.memory_before, self.alone.memory_after);
        let [stalled_rss, stalled_anon] =
            memory_text(self.stalled.memory_before, self.stalled.memory_after);
        let rows = [
            (
                "req/s (closed loop)".to_owned(),
                format!("{:.0}/s", self.alone.phase.rps),
                format!("{:.0}/s", self.stalled.phase.rps),
            ),
            ("p99 ack".to_owned(), p99(&self.alone), p99(&self.stalled)),
            ("VmRSS before -> after".to_owned(), alone_rss, stalled_rss),
            (
                "RssAnon before -> after".to_owned(),
                alone_anon,
                stalled_anon,
            ),
            (
                "told `lagged` when reading again".to_owned(),
                "-".to_owned(),
                format!("{} of {n}", self.stalled.told_lagged),
            ),
        ];
        writeln!(
            f,
            "{:<36}{:>22}{:>22}",
            "",
            "no subscriber",
            format!("{n} stalled")
        )?;
        for (label, alone, stalled) in rows {
            writeln!(f, "{label:<36}{alone:>22}{stalled:>22}")?;
        }
        let ratio = |value: Option<f64>| value.map_or_else(|| "n/a".to_owned(), percent);
        writeln!(
            f,
            "stalled / alone: req/s {}, p99 {}",
            ratio(self.rps_ratio()),
            ratio(self.p99_ratio())
        )?;
        for problem in self.problems() {
            writeln!(f, "!! {problem}")?;
        }
        Ok(())
    }
}

fn percent(value: f64) -> String {
    format!("{:.1}%", value * 100.0)
}

/// Medians [min–max] over the repeats.
pub struct StalledSummary<'a>(pub &'a [StalledReport]);

impl fmt::Display for StalledSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reports = self.0;
        let growth = |run: &StalledRun| -> Option<f64> {
            let before = run.memory_before?.rss_anon_kib?;
            let after = run.memory_after?.rss_anon_kib?;
            Some((after as f64 - before as f64) / 1024.0)
        };
        type Figure<'f> = (&'f str, &'f dyn Fn(&StalledReport) -> Option<f64>, &'f str);
        let figures: [Figure; 8] = [
            ("req/s, no subscriber", &|r| Some(r.alone.phase.rps), "/s"),
            (
                "req/s, stalled subscribers",
                &|r| Some(r.stalled.phase.rps),
                "/s",
            ),
            (
                "req/s stalled / alone",
                &|r| r.rps_ratio().map(|v| v * 100.0),
                "%",
            ),
            (
                "p99 ack, no subscriber",
                &|r| r.alone.phase.latency.map(|l| l.p99_ms),
                " ms",
            ),
            (
                "p99 ack, stalled subscribers",
                &|r| r.stalled.phase.latency.map(|l| l.p99_ms),
                " ms",
            ),
            (
                "p99 stalled / alone",
                &|r| r.p99_ratio().map(|v| v * 100.0),
                "%",
            ),
            (
                "RssAnon growth over the phase, alone",
                &|r| growth(&r.alone),
                " MiB",
            ),
            (
                "RssAnon growth over the phase, stalled",
                &|r| growth(&r.stalled),
                " MiB",
            ),
        ];
        writeln!(
            f,
            "stalled-subscriber figures — median [min–max] of {} repeat(s)",
            reports.len()
        )?;
        for (label, value, unit) in figures {
            let known: Vec<f64> = reports.iter().filter_map(value).collect();
            let shown =
                median(&known).map_or_else(|| "n/a".to_owned(), |m| format!("{m:.2}{unit}"));
            let spread = match (
                known.iter().copied().reduce(f64::min),
                known.iter().copied().reduce(f64::max),
            ) {
                (Some(min), Some(max)) if known.len() > 1 => format!("{min:.2}–{max:.2}{unit}"),
                _ => "-".to_owned(),
            };
            writeln!(f, "{label:<44}{shown:>14}  {spread}")?;
        }
        let lagged: usize = reports.iter().map(|r| r.stalled.told_lagged).sum();
        let subscribers: usize = reports.iter().map(|r| r.subscribers).sum();
        writeln!(
            f,
            "stalled subscribers told `lagged`: {lagged} of {subscribers} over all repeats"
        )?;
        let troubled = reports.iter().filter(|r| !r.problems().is_empty()).count();
        if troubled > 0 {
            writeln!(f, "!! {troubled} repeat(s) had problems (listed above)")?;
        }
        if reports.len() < MIN_REPEATS {
            writeln!(
                f,
                "note: the team rule quotes medians of at least {MIN_REPEATS} repeats \
                 (--repeat {MIN_REPEATS})"
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn listen() -> (tokio::net::TcpListener, std::net::SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        (listener, addr)
    }

    async fn subscribe(addr: std::net::SocketAddr, kind: StreamKind) -> Subscriber {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Subscriber { stream, kind }
    }

    #[tokio::test]
    async fn a_marker_cut_between_two_reads_is_found() {
        let (listener, addr) = listen().await;
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            socket
                .write_all(b"id: 1\ndata: {}\n\nevent: lag")
                .await
                .expect("write");
            socket.flush().await.expect("flush");
            tokio::time::sleep(Duration::from_millis(50)).await;
            socket.write_all(b"ged\ndata: {}\n\n").await.expect("write");
            tokio::time::sleep(Duration::from_millis(200)).await;
        });
        let subscriber = subscribe(addr, StreamKind::Sse).await;
        assert!(subscriber.told_lagged().await);
        server.await.expect("server");
    }

    #[tokio::test]
    async fn a_stream_that_ends_without_the_marker_was_not_told() {
        let (listener, addr) = listen().await;
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            socket
                .write_all(b"{\"kind\":\"delivery.received\"}")
                .await
                .expect("write");
        });
        let subscriber = subscribe(addr, StreamKind::WebSocket).await;
        assert!(!subscriber.told_lagged().await);
        server.await.expect("server");
    }
}
