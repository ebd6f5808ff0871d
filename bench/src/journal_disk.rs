//! How long Wharf's own journal disk work took during a phase, from its `/metrics`
//! histogram `wharf_journal_disk_seconds{work=…}`: the delivery log's sync that every ack
//! waits for, next to SQLite's WAL syncs and checkpoints, the large writes a disk flush may
//! wait behind. A slow ack tail with slow log syncs is the disk's, not the CPU's.

use std::net::SocketAddr;

/// The histogram's series for one kind of work: cumulative counts by upper bound (seconds,
/// `+Inf` last).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Buckets(Vec<(f64, u64)>);

/// One scrape of the three kinds of work.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DiskWorkSample {
    log_sync: Buckets,
    wal_sync: Buckets,
    checkpoint: Buckets,
}

/// What a phase did, between two scrapes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DiskWork {
    pub log_sync: Option<BucketSummary>,
    pub wal_sync: Option<BucketSummary>,
    pub checkpoint: Option<BucketSummary>,
}

/// Count and percentiles of a histogram's difference, each percentile given as the upper
/// bound of the bucket it falls in (seconds; infinite past the last bound).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketSummary {
    pub count: u64,
    pub p50_at_most: f64,
    pub p99_at_most: f64,
    pub max_at_most: f64,
}

impl DiskWorkSample {
    /// Reads the series from a Prometheus text exposition; empty where absent.
    pub fn parse(exposition: &str) -> Self {
        let mut sample = Self::default();
        for line in exposition.lines() {
            let Some(rest) = line.strip_prefix("wharf_journal_disk_seconds_bucket{work=\"") else {
                continue;
            };
            let Some((work, rest)) = rest.split_once("\",le=\"") else {
                continue;
            };
            let Some((bound, count)) = rest.split_once("\"} ") else {
                continue;
            };
            let bound = match bound {
                "+Inf" => f64::INFINITY,
                finite => match finite.parse() {
                    Ok(bound) => bound,
                    Err(_) => continue,
                },
            };
            let Ok(count) = count.trim().parse() else {
                continue;
            };
            let series = match work {
                "log_sync" => &mut sample.log_sync,
                "wal_sync" => &mut sample.wal_sync,
                "checkpoint" => &mut sample.checkpoint,
                _ => continue,
            };
            series.0.push((bound, count));
        }
        sample
    }

    /// Scrapes `/metrics` of the server at `addr`; `None` if it cannot be read.
    pub(crate) async fn scrape(addr: SocketAddr) -> Option<Self> {
        let (status, body) = crate::load::get(addr, "/metrics", "").await.ok()?;
        let text = std::str::from_utf8(&body).ok()?;
        status.is_success().then(|| Self::parse(text))
    }

    /// The work done since `before`.
    pub fn since(&self, before: &Self) -> DiskWork {
        DiskWork {
            log_sync: self.log_sync.since(&before.log_sync),
            wal_sync: self.wal_sync.since(&before.wal_sync),
            checkpoint: self.checkpoint.since(&before.checkpoint),
        }
    }
}

impl Buckets {
    /// `None` when nothing was observed in between (or the series is missing).
    fn since(&self, before: &Self) -> Option<BucketSummary> {
        let counted_before = |bound: f64| {
            before
                .0
                .iter()
                .find(|(known, _)| *known == bound)
                .map_or(0, |(_, count)| *count)
        };
        let cumulative: Vec<(f64, u64)> = self
            .0
            .iter()
            .map(|&(bound, count)| (bound, count.saturating_sub(counted_before(bound))))
            .collect();
        let count = cumulative.last()?.1;
        if count == 0 {
            return None;
        }
        let at_most = |rank: u64| {
            cumulative
                .iter()
                .find(|(_, below)| *below >= rank)
                .map_or(f64::INFINITY, |(bound, _)| *bound)
        };
        Some(BucketSummary {
            count,
            p50_at_most: at_most(count.div_ceil(2)),
            p99_at_most: at_most((count * 99).div_ceil(100)),
            max_at_most: at_most(count),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposition(log_sync: [u64; 4]) -> String {
        let [fast, medium, slow, all] = log_sync;
        format!(
            "# TYPE wharf_journal_disk_seconds histogram\n\
             wharf_journal_disk_seconds_bucket{{work=\"log_sync\",le=\"0.001\"}} {fast}\n\
             wharf_journal_disk_seconds_bucket{{work=\"log_sync\",le=\"0.01\"}} {medium}\n\
             wharf_journal_disk_seconds_bucket{{work=\"log_sync\",le=\"0.1\"}} {slow}\n\
             wharf_journal_disk_seconds_bucket{{work=\"log_sync\",le=\"+Inf\"}} {all}\n\
             wharf_journal_disk_seconds_count{{work=\"log_sync\"}} {all}\n\
             wharf_journal_disk_seconds_bucket{{work=\"checkpoint\",le=\"+Inf\"}} 0\n"
        )
    }

    #[test]
    fn a_phase_is_the_difference_of_two_scrapes_read_as_bucket_bounds() {
        let before = DiskWorkSample::parse(&exposition([10, 10, 10, 10]));
        // 1000 more: 980 within 1 ms, 15 within 10 ms, 4 within 100 ms, 1 slower.
        let after = DiskWorkSample::parse(&exposition([990, 1005, 1009, 1010]));
        let work = after.since(&before);
        assert_eq!(
            work.log_sync,
            Some(BucketSummary {
                count: 1000,
                p50_at_most: 0.001,
                p99_at_most: 0.01,
                max_at_most: f64::INFINITY,
            })
        );
        assert_eq!(work.checkpoint, None, "nothing observed");
        assert_eq!(work.wal_sync, None, "series absent");
    }

    #[test]
    fn other_lines_and_garbage_are_ignored() {
        let sample = DiskWorkSample::parse(
            "wharf_ack_seconds_bucket{le=\"0.001\"} 5\n\
             wharf_journal_disk_seconds_bucket{work=\"log_sync\",le=\"oops\"} 3\n\
             wharf_journal_disk_seconds_bucket{work=\"other\",le=\"1\"} 3\n",
        );
        assert_eq!(sample, DiskWorkSample::default());
    }
}
