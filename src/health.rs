//! Source health: flags a source that usually receives traffic and has gone silent, or whose
//! signature failures or dead deliveries spike (a provider pointed at the wrong URL, a rotated
//! secret, a broken mapping must not look healthy). Fed by the change feed (so on PostgreSQL
//! it counts every instance's deliveries), by this instance's rejection counters, and at start
//! by the journal's recent deliveries, so a restart does not forget a source's usual rhythm.
//! Pure bookkeeping over timestamps: [`SourceHistory::flags`] takes `now`, so it is tested
//! without waiting.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;

use crate::bus::{Bus, ChangeFilter, StreamItem};
use crate::clock::{SharedClock, Timestamp};
use crate::journal::{DeliveryFilter, DeliveryStatus, ReadModel};
use crate::metrics::{IngressOutcome, Metrics};

/// A source "usually receives traffic" with at least this many deliveries in the baseline.
const USUAL_AT_LEAST: u64 = 10;
/// The baseline: how far back a source's rhythm is learned (hourly buckets).
const BASELINE_HOURS: usize = 7 * 24;
/// Silent once the quiet lasts this many usual gaps between deliveries...
const SILENT_GAPS: i64 = 10;
/// ...and at least this long.
const SILENT_AT_LEAST: Duration = Duration::from_secs(15 * 60);
/// Spikes are judged over this recent window (minute buckets).
const SPIKE_MINUTES: usize = 15;
/// A spike needs at least this many failures in the window...
const SPIKE_AT_LEAST: u64 = 5;
/// Deliveries read back from the journal per source at start.
const SEED_DELIVERIES: u32 = 500;

/// Why a source is flagged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Silent,
    RejectionSpike,
    DeadSpike,
}

impl Reason {
    pub const ALL: [Reason; 3] = [Self::Silent, Self::RejectionSpike, Self::DeadSpike];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Silent => "silent",
            Self::RejectionSpike => "rejection_spike",
            Self::DeadSpike => "dead_spike",
        }
    }
}

/// One flag on one source, with what an operator needs to judge it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flag {
    pub source: String,
    pub reason: Reason,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    received: u64,
    rejected: u64,
    dead: u64,
    processed: u64,
}

/// Counts per time bucket, newest last; buckets older than the window fall off.
#[derive(Debug, Default)]
struct Buckets {
    width_seconds: i64,
    keep: usize,
    buckets: VecDeque<(i64, Counts)>,
}

impl Buckets {
    fn new(width_seconds: i64, keep: usize) -> Self {
        Self {
            width_seconds,
            keep,
            buckets: VecDeque::new(),
        }
    }

    fn add(&mut self, at_seconds: i64, add: impl Fn(&mut Counts)) {
        let bucket = at_seconds.div_euclid(self.width_seconds);
        match self.buckets.iter_mut().rev().find(|(b, _)| *b == bucket) {
            Some((_, counts)) => add(counts),
            None => {
                let mut counts = Counts::default();
                add(&mut counts);
                let at = self.buckets.partition_point(|(b, _)| *b < bucket);
                self.buckets.insert(at, (bucket, counts));
            }
        }
        while self.buckets.len() > self.keep {
            self.buckets.pop_front();
        }
    }

    /// Sums over the buckets within `window` buckets of `now`.
    fn sum(&self, now_seconds: i64, window: usize) -> Counts {
        let newest = now_seconds.div_euclid(self.width_seconds);
        let oldest = newest - window as i64 + 1;
        self.buckets
            .iter()
            .filter(|(bucket, _)| *bucket >= oldest && *bucket <= newest)
            .fold(Counts::default(), |mut total, (_, counts)| {
                total.received += counts.received;
                total.rejected += counts.rejected;
                total.dead += counts.dead;
                total.processed += counts.processed;
                total
            })
    }
}

/// What one source did recently.
#[derive(Debug)]
pub struct SourceHistory {
    hours: Buckets,
    minutes: Buckets,
    last_received: Option<i64>,
}

impl Default for SourceHistory {
    fn default() -> Self {
        Self {
            hours: Buckets::new(3600, BASELINE_HOURS),
            minutes: Buckets::new(60, SPIKE_MINUTES * 2),
            last_received: None,
        }
    }
}

impl SourceHistory {
    fn add(&mut self, at: Timestamp, add: impl Fn(&mut Counts) + Copy) {
        let seconds = at.unix_seconds();
        self.hours.add(seconds, add);
        self.minutes.add(seconds, add);
    }

    pub fn received(&mut self, at: Timestamp) {
        self.add(at, |c| c.received += 1);
        let seconds = at.unix_seconds();
        self.last_received = Some(self.last_received.map_or(seconds, |last| last.max(seconds)));
    }

    pub fn rejected(&mut self, at: Timestamp, count: u64) {
        self.add(at, move |c| c.rejected += count);
    }

    pub fn dead(&mut self, at: Timestamp) {
        self.add(at, |c| c.dead += 1);
    }

    pub fn processed(&mut self, at: Timestamp) {
        self.add(at, |c| c.processed += 1);
    }

    /// The flags this history earns at `now`.
    pub fn flags(&self, source: &str, now: Timestamp) -> Vec<Flag> {
        let now_seconds = now.unix_seconds();
        let mut flags = Vec::new();
        let flag = |reason, detail: String| Flag {
            source: source.to_owned(),
            reason,
            detail,
        };
        let baseline = self.hours.sum(now_seconds, BASELINE_HOURS);
        if let Some(last) = self.last_received {
            if baseline.received >= USUAL_AT_LEAST {
                let usual_gap = (BASELINE_HOURS as i64 * 3600) / baseline.received as i64;
                let allowed = (usual_gap * SILENT_GAPS).max(SILENT_AT_LEAST.as_secs() as i64);
                let quiet = now_seconds - last;
                if quiet > allowed {
                    flags.push(flag(
                        Reason::Silent,
                        format!(
                            "no delivery for {}; it usually receives one every {} \
                             ({} in the last 7 days)",
                            human(quiet),
                            human(usual_gap),
                            baseline.received
                        ),
                    ));
                }
            }
        }
        let recent = self.minutes.sum(now_seconds, SPIKE_MINUTES);
        if recent.rejected >= SPIKE_AT_LEAST && recent.rejected >= recent.received {
            flags.push(flag(
                Reason::RejectionSpike,
                format!(
                    "{} requests refused (signature, token) and {} accepted in the last {} \
                     minutes: check the secret",
                    recent.rejected, recent.received, SPIKE_MINUTES
                ),
            ));
        }
        // Dead is judged against what finished: one dead in five is a spike.
        if recent.dead >= SPIKE_AT_LEAST && recent.dead * 5 >= recent.dead + recent.processed {
            flags.push(flag(
                Reason::DeadSpike,
                format!(
                    "{} deliveries dead and {} processed in the last {} minutes",
                    recent.dead, recent.processed, SPIKE_MINUTES
                ),
            ));
        }
        flags
    }
}

fn human(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 2 * 86_400 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}

/// Every configured source's history, and the task that keeps it.
pub struct SourceHealth {
    histories: Mutex<BTreeMap<String, SourceHistory>>,
    /// The rejection counters as last read, per source.
    rejections_seen: Mutex<BTreeMap<String, u64>>,
    metrics: Arc<Metrics>,
    clock: SharedClock,
}

impl SourceHealth {
    pub fn new(
        sources: impl IntoIterator<Item = String>,
        metrics: Arc<Metrics>,
        clock: SharedClock,
    ) -> Arc<Self> {
        let histories = sources
            .into_iter()
            .map(|name| (name, SourceHistory::default()))
            .collect();
        Arc::new(Self {
            histories: Mutex::new(histories),
            rejections_seen: Mutex::new(BTreeMap::new()),
            metrics,
            clock,
        })
    }

    /// Learns the recent past from the journal, then follows the change feed until the bus
    /// stops.
    pub fn start(self: &Arc<Self>, bus: &Arc<Bus>, read: Arc<dyn ReadModel>) {
        let filter = ChangeFilter {
            sources: Vec::new(),
            kinds: vec!["delivery".to_owned()],
        };
        let mut changes = bus.follow(None, filter, 1024);
        let health = self.clone();
        tokio::spawn(async move {
            health.seed(read.as_ref()).await;
            while let Some(item) = changes.recv().await {
                if let StreamItem::Change(change) = item {
                    health.record(&change.source, &change.kind, change.at);
                }
            }
        });
    }

    async fn seed(&self, read: &dyn ReadModel) {
        let names: Vec<String> = self.histories.lock().keys().cloned().collect();
        for source in names {
            for status in [None, Some(DeliveryStatus::Dead)] {
                let filter = DeliveryFilter {
                    source: Some(source.clone()),
                    status,
                    limit: SEED_DELIVERIES,
                    ..DeliveryFilter::default()
                };
                let Ok(deliveries) = read.deliveries(filter).await else {
                    continue;
                };
                let mut histories = self.histories.lock();
                let Some(history) = histories.get_mut(&source) else {
                    continue;
                };
                for delivery in deliveries {
                    match status {
                        None => {
                            if let Some(at) = Timestamp::parse_rfc3339(&delivery.received_at) {
                                history.received(at);
                            }
                        }
                        Some(_) => {
                            let finished = delivery.processed_at.as_deref();
                            if let Some(at) = finished.and_then(Timestamp::parse_rfc3339) {
                                history.dead(at);
                            }
                        }
                    }
                }
            }
        }
    }

    fn record(&self, source: &str, kind: &str, at: Timestamp) {
        let mut histories = self.histories.lock();
        let Some(history) = histories.get_mut(source) else {
            return;
        };
        match kind {
            "delivery.received" => history.received(at),
            "delivery.dead" => history.dead(at),
            "delivery.processed" => history.processed(at),
            _ => {}
        }
    }

    /// Adds the rejections counted since the last look to the current minute.
    fn collect_rejections(&self, now: Timestamp) {
        let mut seen = self.rejections_seen.lock();
        let mut histories = self.histories.lock();
        for (source, history) in histories.iter_mut() {
            let Some(metrics) = self.metrics.source(source) else {
                continue;
            };
            let total = metrics.ingress_count(IngressOutcome::SignatureFailed);
            let before = seen.insert(source.clone(), total).unwrap_or(0);
            if total > before {
                history.rejected(now, total - before);
            }
        }
    }

    /// Every flag now, by source.
    pub fn flags(&self) -> Vec<Flag> {
        let now = self.clock.now();
        self.collect_rejections(now);
        self.histories
            .lock()
            .iter()
            .flat_map(|(source, history)| history.flags(source, now))
            .collect()
    }

    /// `wharf_source_unhealthy{source,reason}`: 1 while flagged, 0 otherwise, for every
    /// source and reason, so an alert can watch a series that always exists.
    pub fn render_metrics(&self) -> String {
        let flags = self.flags();
        let mut text = String::from(
            "# HELP wharf_source_unhealthy 1 while a source is flagged (silent, rejection_spike, dead_spike).\n\
             # TYPE wharf_source_unhealthy gauge\n",
        );
        let names: Vec<String> = self.histories.lock().keys().cloned().collect();
        for source in names {
            for reason in Reason::ALL {
                let on = flags
                    .iter()
                    .any(|flag| flag.source == source && flag.reason == reason);
                text.push_str(&format!(
                    "wharf_source_unhealthy{{source=\"{source}\",reason=\"{}\"}} {}\n",
                    reason.as_str(),
                    u8::from(on)
                ));
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3600;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_unix_seconds(1_800_000_000 + seconds)
    }

    fn reasons(history: &SourceHistory, now: Timestamp) -> Vec<Reason> {
        history
            .flags("s", now)
            .into_iter()
            .map(|flag| flag.reason)
            .collect()
    }

    #[test]
    fn a_source_that_usually_receives_traffic_is_silent_after_ten_usual_gaps() {
        let mut history = SourceHistory::default();
        // One delivery every ten minutes for a day: 144, a usual gap of 70 min over 7 days.
        for n in 0..144 {
            history.received(at(n * 600));
        }
        let last = 143 * 600;
        assert!(reasons(&history, at(last + 2 * HOUR)).is_empty());
        assert_eq!(
            reasons(&history, at(last + 12 * HOUR)),
            vec![Reason::Silent]
        );
        // Still flagged a day later: a wrong URL for a day does not look healthy.
        assert_eq!(
            reasons(&history, at(last + 30 * HOUR)),
            vec![Reason::Silent]
        );
    }

    #[test]
    fn a_source_with_little_traffic_is_never_called_silent() {
        let mut history = SourceHistory::default();
        for n in 0..3 {
            history.received(at(n * 60));
        }
        assert!(reasons(&history, at(5 * 24 * HOUR)).is_empty());
    }

    #[test]
    fn refused_requests_outnumbering_accepted_ones_are_a_spike_that_passes() {
        let mut history = SourceHistory::default();
        history.received(at(0));
        history.rejected(at(10), 4);
        assert!(reasons(&history, at(20)).is_empty(), "below five");
        history.rejected(at(30), 2);
        assert_eq!(reasons(&history, at(40)), vec![Reason::RejectionSpike]);
        assert!(
            reasons(&history, at(40 * 60)).is_empty(),
            "the window moved on"
        );
    }

    #[test]
    fn dead_deliveries_are_a_spike_against_what_was_processed() {
        let mut history = SourceHistory::default();
        for second in 0..100 {
            history.processed(at(second));
        }
        for second in 0..6 {
            history.dead(at(second));
        }
        assert!(
            reasons(&history, at(200)).is_empty(),
            "6 dead of 106 is noise"
        );
        for second in 0..30 {
            history.dead(at(second));
        }
        assert_eq!(reasons(&history, at(200)), vec![Reason::DeadSpike]);
    }
}
