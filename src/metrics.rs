//! Counters and histograms in Prometheus text format. Every series a request touches is
//! allocated at start, so recording is a few relaxed atomic adds and no lock or allocation.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What happened to one request at the ingress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngressOutcome {
    Stored,
    Duplicate,
    SignatureFailed,
    Invalid,
    RateLimited,
    TooLarge,
    Unavailable,
}

impl IngressOutcome {
    const ALL: [Self; 7] = [
        Self::Stored,
        Self::Duplicate,
        Self::SignatureFailed,
        Self::Invalid,
        Self::RateLimited,
        Self::TooLarge,
        Self::Unavailable,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Stored => "stored",
            Self::Duplicate => "duplicate",
            Self::SignatureFailed => "signature_failed",
            Self::Invalid => "invalid",
            Self::RateLimited => "rate_limited",
            Self::TooLarge => "too_large",
            Self::Unavailable => "unavailable",
        }
    }
}

/// What one processing attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessOutcome {
    Processed,
    Ignored,
    Retry,
    Failed,
    Dead,
    Rejected,
}

impl ProcessOutcome {
    const ALL: [Self; 6] = [
        Self::Processed,
        Self::Ignored,
        Self::Retry,
        Self::Failed,
        Self::Dead,
        Self::Rejected,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Processed => "processed",
            Self::Ignored => "ignored",
            Self::Retry => "retry",
            Self::Failed => "failed",
            Self::Dead => "dead",
            Self::Rejected => "rejected",
        }
    }
}

/// Bucket bounds in seconds, from sub-millisecond acks to slow retries.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(index) = BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.buckets[index].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let separator = if labels.is_empty() { "" } else { "," };
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{separator}le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{separator}le=\"+Inf\"}} {count}"
        );
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// One source's series.
#[derive(Debug, Default)]
pub struct SourceMetrics {
    ingress: [AtomicU64; IngressOutcome::ALL.len()],
    processed: [AtomicU64; ProcessOutcome::ALL.len()],
}

impl SourceMetrics {
    pub fn ingress(&self, outcome: IngressOutcome) {
        let index = IngressOutcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or(0);
        self.ingress[index].fetch_add(1, Ordering::Relaxed);
    }

    pub fn processed(&self, outcome: ProcessOutcome) {
        let index = ProcessOutcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or(0);
        self.processed[index].fetch_add(1, Ordering::Relaxed);
    }

    pub fn ingress_count(&self, outcome: IngressOutcome) -> u64 {
        let index = IngressOutcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or(0);
        self.ingress[index].load(Ordering::Relaxed)
    }
}

/// How long the embedded journal's disk work takes (SQLite backend only: PostgreSQL's own
/// commit is its ack). The log's sync is what every ack waits for; the
/// WAL syncs and checkpoints are the large writes a disk flush may have to wait behind, so
/// the three side by side show whether slow acks come from the disk.
#[derive(Debug, Default)]
pub struct DiskTimings {
    /// One `fdatasync` of the delivery log's written segments, before the acks it covers.
    pub log_sync: Histogram,
    /// One `fdatasync` of SQLite's WAL by the WAL sync thread.
    pub wal_sync: Histogram,
    /// One PASSIVE (or TRUNCATE) checkpoint, by the checkpointer or the writer.
    pub checkpoint: Histogram,
}

impl DiskTimings {
    fn render(&self, out: &mut String) {
        let name = "wharf_journal_disk_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} The embedded journal's disk work: the delivery log's sync before \
             each ack, SQLite's WAL sync and checkpoints.\n# TYPE {name} histogram"
        );
        for (work, histogram) in [
            ("log_sync", &self.log_sync),
            ("wal_sync", &self.wal_sync),
            ("checkpoint", &self.checkpoint),
        ] {
            histogram.render(out, name, &format!("work=\"{work}\""));
        }
    }
}

/// Times `work` into `histogram`.
pub fn timed<T>(histogram: &Histogram, work: impl FnOnce() -> T) -> T {
    let started = std::time::Instant::now();
    let result = work();
    histogram.observe(started.elapsed());
    result
}

#[derive(Debug, Default)]
pub struct Metrics {
    sources: BTreeMap<String, Arc<SourceMetrics>>,
    /// Request arrival to 2xx, for stored and duplicate deliveries.
    pub ack_latency: Histogram,
    /// One processing attempt, normalize through commit.
    pub attempt_duration: Histogram,
    /// Receipt to ledger commit.
    pub processing_lag: Histogram,
    /// The storage's disk timings, shared with the journal that records them.
    disk: Option<Arc<DiskTimings>>,
    backlog: AtomicU64,
}

impl Metrics {
    pub fn new<'a>(source_names: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            sources: source_names
                .into_iter()
                .map(|name| (name.to_owned(), Arc::default()))
                .collect(),
            ..Self::default()
        }
    }

    /// Renders `disk`, the timings the storage records, with the rest.
    pub fn with_disk(mut self, disk: Arc<DiskTimings>) -> Self {
        self.disk = Some(disk);
        self
    }

    pub fn source(&self, name: &str) -> Option<&Arc<SourceMetrics>> {
        self.sources.get(name)
    }

    pub fn set_backlog(&self, pending: u64) {
        self.backlog.store(pending, Ordering::Relaxed);
    }

    pub fn backlog(&self) -> u64 {
        self.backlog.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        out.push_str(
            "# HELP wharf_deliveries_total Requests at the ingress, by source and outcome.\n",
        );
        out.push_str("# TYPE wharf_deliveries_total counter\n");
        for (name, source) in &self.sources {
            for (outcome, count) in IngressOutcome::ALL.iter().zip(&source.ingress) {
                let _ = writeln!(
                    out,
                    "wharf_deliveries_total{{source=\"{name}\",outcome=\"{}\"}} {}",
                    outcome.label(),
                    count.load(Ordering::Relaxed)
                );
            }
        }
        out.push_str(
            "# HELP wharf_signature_failures_total Requests that failed authentication.\n",
        );
        out.push_str("# TYPE wharf_signature_failures_total counter\n");
        for (name, source) in &self.sources {
            let _ = writeln!(
                out,
                "wharf_signature_failures_total{{source=\"{name}\"}} {}",
                source.ingress_count(IngressOutcome::SignatureFailed)
            );
        }
        out.push_str(
            "# HELP wharf_processing_attempts_total Processing attempts, by source and outcome.\n",
        );
        out.push_str("# TYPE wharf_processing_attempts_total counter\n");
        for (name, source) in &self.sources {
            for (outcome, count) in ProcessOutcome::ALL.iter().zip(&source.processed) {
                let _ = writeln!(
                    out,
                    "wharf_processing_attempts_total{{source=\"{name}\",outcome=\"{}\"}} {}",
                    outcome.label(),
                    count.load(Ordering::Relaxed)
                );
            }
        }
        out.push_str("# HELP wharf_retries_total Attempts that failed and were scheduled again.\n");
        out.push_str("# TYPE wharf_retries_total counter\n");
        let retries: u64 = self
            .sources
            .values()
            .map(|s| s.processed[2].load(Ordering::Relaxed))
            .sum();
        let _ = writeln!(out, "wharf_retries_total {retries}");
        out.push_str(
            "# HELP wharf_backlog Deliveries pending processing.\n# TYPE wharf_backlog gauge\n",
        );
        let _ = writeln!(out, "wharf_backlog {}", self.backlog());
        for (name, help, histogram) in [
            (
                "wharf_ack_seconds",
                "Request arrival to acknowledgement.",
                &self.ack_latency,
            ),
            (
                "wharf_attempt_seconds",
                "One processing attempt.",
                &self.attempt_duration,
            ),
            (
                "wharf_processing_lag_seconds",
                "Receipt to ledger commit.",
                &self.processing_lag,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            histogram.render(&mut out, name, "");
        }
        if let Some(disk) = &self.disk {
            disk.render(&mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_timings_render_one_histogram_labelled_by_work() {
        let disk = Arc::new(DiskTimings::default());
        timed(&disk.log_sync, || ());
        disk.checkpoint.observe(Duration::from_millis(30));
        let text = Metrics::new(["cartpanda"]).with_disk(disk).render();
        assert!(text.contains("# TYPE wharf_journal_disk_seconds histogram"));
        assert!(text.contains("wharf_journal_disk_seconds_count{work=\"log_sync\"} 1"));
        assert!(text.contains("wharf_journal_disk_seconds_count{work=\"wal_sync\"} 0"));
        assert!(
            text.contains("wharf_journal_disk_seconds_bucket{work=\"checkpoint\",le=\"0.025\"} 0")
        );
        assert!(
            text.contains("wharf_journal_disk_seconds_bucket{work=\"checkpoint\",le=\"0.05\"} 1")
        );
    }

    #[test]
    fn exposition_counts_by_source_and_outcome() {
        let metrics = Metrics::new(["cartpanda"]);
        let source = metrics.source("cartpanda").expect("registered");
        source.ingress(IngressOutcome::Stored);
        source.ingress(IngressOutcome::Stored);
        source.ingress(IngressOutcome::SignatureFailed);
        metrics.ack_latency.observe(Duration::from_micros(700));
        let text = metrics.render();
        assert!(text.contains("wharf_deliveries_total{source=\"cartpanda\",outcome=\"stored\"} 2"));
        assert!(text.contains("wharf_signature_failures_total{source=\"cartpanda\"} 1"));
        assert!(text.contains("wharf_ack_seconds_bucket{le=\"0.001\"} 1"));
        assert!(text.contains("wharf_ack_seconds_bucket{le=\"0.0005\"} 0"));
        assert!(text.contains("wharf_ack_seconds_count 1"));
    }
}
