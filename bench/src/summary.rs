//! The figures issue 8 asks for, each beside its target, as the median and
//! the min–max spread over `--repeat` runs. Each run is a floor/candidate
//! pair, so every ratio is against the floor measured in the same run (the
//! team rule: ratios against the floor in the same run, at least three
//! repeats, medians with the spread).

use std::fmt;

use crate::report::{bytes_text, BenchReport, IdleOutcome, PhaseStats, PostgresRun};
use crate::{
    DRAIN_TARGET, FULL_LOAD_P99_TARGET_MS, HALF_LOAD_P99_TARGET_MS, RATIO_TARGET,
    TENTH_LOAD_LAG_P99_TARGET_MS,
};

/// Repeats the team rule asks for before quoting a figure.
pub const MIN_REPEATS: usize = 3;

/// Renders the summary of `reports` (one per repeat, in order).
pub struct Summary<'a> {
    reports: &'a [BenchReport],
}

impl<'a> Summary<'a> {
    pub fn new(reports: &'a [BenchReport]) -> Self {
        Self { reports }
    }

    /// Every row, SQLite first, then each PostgreSQL instance count measured.
    fn rows(&self) -> Vec<Row> {
        let reports = self.reports;
        let each = |value: &dyn Fn(&BenchReport) -> Option<f64>| -> Vec<Option<f64>> {
            reports.iter().map(value).collect()
        };
        let p99 = |phase: &PhaseStats| phase.latency.map(|l| l.p99_ms);
        let p50 = |phase: &PhaseStats| phase.latency.map(|l| l.p50_ms);
        let mut rows = vec![
            Row::new(
                "floor req/s (axum + HMAC, closed loop)",
                Unit::PerSec,
                each(&|r| Some(r.floor.rps)),
                Target::Reference,
            ),
            Row::new(
                "wharf req/s (SQLite, closed loop)",
                Unit::PerSec,
                each(&|r| Some(r.wharf.rps)),
                Target::None,
            ),
            Row::new(
                "wharf / floor",
                Unit::Ratio,
                each(&|r| (r.floor.rps > 0.0).then(|| r.ratio())),
                Target::AtLeast(RATIO_TARGET),
            ),
            Row::new(
                "journal disk: 4 KB write + fdatasync p50",
                Unit::Ms,
                each(&|r| r.disk_sync.as_ref().ok().map(|sync| sync.p50_ms)),
                Target::None,
            ),
            Row::new(
                "durable ceiling (connections / sync p50) / floor",
                Unit::Ratio,
                each(&|r| {
                    let ceiling = r.durable_ceiling_rps()?;
                    (r.floor.rps > 0.0).then(|| ceiling / r.floor.rps)
                }),
                Target::None,
            ),
            Row::new(
                "wharf / durable ceiling",
                Unit::Ratio,
                each(&|r| r.durable_ceiling_rps().map(|ceiling| r.wharf.rps / ceiling)),
                Target::Tracked,
            ),
            Row::new(
                "p50 ack latency at full load",
                Unit::Ms,
                each(&|r| p50(&r.wharf)),
                Target::None,
            ),
            Row::new(
                "p99 ack latency at full load",
                Unit::Ms,
                each(&|r| p99(&r.wharf)),
                Target::Below(FULL_LOAD_P99_TARGET_MS),
            ),
            Row::new(
                "p50 ack latency at half load",
                Unit::Ms,
                each(&|r| p50(&r.wharf_half)),
                Target::None,
            ),
            Row::new(
                "p99 ack latency at half load",
                Unit::Ms,
                each(&|r| p99(&r.wharf_half)),
                Target::Below(HALF_LOAD_P99_TARGET_MS),
            ),
            Row::new(
                "wharf CPU per delivery (full load)",
                Unit::Micros,
                each(&|r| r.wharf.cpu_us_per_delivery()),
                Target::Tracked,
            ),
            Row::new(
                "bytes written per delivery (full load)",
                Unit::Bytes,
                each(&|r| r.wharf.written_per_delivery()),
                Target::Tracked,
            ),
            Row::new(
                "wchar per delivery (full load)",
                Unit::Bytes,
                each(&|r| {
                    let wchar = r.wharf.cost.server_io.map(|io| io.wchar);
                    per_delivery(&r.wharf, wchar)
                }),
                Target::Tracked,
            ),
            Row::new(
                "drain after full load",
                Unit::Secs,
                each(&|r| drain_secs(&r.processing.drain_after_full)),
                Target::Drain,
            )
            .with_passes(reports.iter().map(BenchReport::drained_in_time).collect()),
            Row::new(
                "processing lag p99 at 1/10 load",
                Unit::Ms,
                each(&|r| {
                    let db = r.processing.database.as_ref().ok()?;
                    db.lag_tenth_load.map(|l| l.p99_ms)
                }),
                Target::Below(TENTH_LOAD_LAG_P99_TARGET_MS),
            ),
            Row::new(
                "journal on disk after the run (SQLite dir)",
                Unit::Size,
                each(&|r| r.journal_disk.as_ref().ok().map(|d| d.total_bytes as f64)),
                Target::Tracked,
            ),
        ];
        for instances in self.postgres_instance_counts() {
            rows.extend(self.postgres_rows(instances));
        }
        rows
    }

    /// The PostgreSQL instance counts measured in any repeat, in order.
    fn postgres_instance_counts(&self) -> Vec<usize> {
        let mut counts: Vec<usize> = self
            .reports
            .iter()
            .filter_map(|report| report.postgres.as_ref())
            .flat_map(|section| section.runs.iter().map(|run| run.instances))
            .collect();
        counts.sort_unstable();
        counts.dedup();
        counts
    }

    fn postgres_rows(&self, instances: usize) -> Vec<Row> {
        let runs: Vec<Option<(&BenchReport, &PostgresRun)>> = self
            .reports
            .iter()
            .map(|report| {
                let section = report.postgres.as_ref()?;
                let run = section.runs.iter().find(|run| run.instances == instances)?;
                Some((report, run))
            })
            .collect();
        let each = |value: &dyn Fn(&BenchReport, &PostgresRun) -> Option<f64>| {
            runs.iter()
                .map(|pair| pair.and_then(|(report, run)| value(report, run)))
                .collect::<Vec<_>>()
        };
        let label = |what: &str| format!("postgres ({instances}) {what}");
        vec![
            Row::new(
                &label("req/s"),
                Unit::PerSec,
                each(&|_, run| Some(run.load.rps)),
                Target::None,
            ),
            Row::new(
                &label("/ floor"),
                Unit::Ratio,
                each(&|report, run| {
                    (report.floor.rps > 0.0).then(|| run.load.rps / report.floor.rps)
                }),
                Target::AtLeast(RATIO_TARGET),
            ),
            Row::new(
                &label("p99 ack latency at full load"),
                Unit::Ms,
                each(&|_, run| run.load.latency.map(|l| l.p99_ms)),
                Target::Below(FULL_LOAD_P99_TARGET_MS),
            ),
            Row::new(
                &label("wharf CPU per delivery"),
                Unit::Micros,
                each(&|_, run| run.load.cpu_us_per_delivery()),
                Target::Tracked,
            ),
            Row::new(
                &label("PostgreSQL CPU per delivery"),
                Unit::Micros,
                each(&|_, run| run.load.database_cpu_us_per_delivery()),
                Target::Tracked,
            ),
            Row::new(
                &label("bytes written per delivery (PostgreSQL)"),
                Unit::Bytes,
                each(&|_, run| run.load.database_written_per_delivery()),
                Target::Tracked,
            ),
            Row::new(
                &label("bytes written per delivery (wharf)"),
                Unit::Bytes,
                each(&|_, run| run.load.written_per_delivery()),
                Target::Tracked,
            ),
            Row::new(
                &label("drain after full load"),
                Unit::Secs,
                each(&|_, run| drain_secs(&run.drain)),
                Target::Drain,
            )
            .with_passes(
                runs.iter()
                    .map(|pair| pair.is_some_and(|(_, run)| run.drained_in_time()))
                    .collect(),
            ),
            Row::new(
                &label("database size after the run"),
                Unit::Size,
                each(&|_, run| {
                    let counts = run.counts.as_ref().ok()?;
                    Some(counts.size_bytes as f64)
                }),
                Target::Tracked,
            ),
        ]
    }
}

fn per_delivery(phase: &PhaseStats, total: Option<u64>) -> Option<f64> {
    let acked = phase.acked_total;
    total
        .filter(|_| acked > 0)
        .map(|total| total as f64 / acked as f64)
}

fn drain_secs(outcome: &IdleOutcome) -> Option<f64> {
    match outcome {
        IdleOutcome::Idle { waited } => Some(waited.as_secs_f64()),
        IdleOutcome::TimedOut | IdleOutcome::Failed(_) => None,
    }
}

/// How a figure is shown.
#[derive(Clone, Copy)]
enum Unit {
    PerSec,
    /// A fraction, shown in percent.
    Ratio,
    Ms,
    Micros,
    /// Bytes per delivery.
    Bytes,
    /// A total size in bytes.
    Size,
    Secs,
}

impl Unit {
    fn show(self, value: f64) -> String {
        match self {
            Self::PerSec => format!("{value:.0}/s"),
            Self::Ratio => format!("{:.1}%", value * 100.0),
            Self::Ms => format!("{value:.2} ms"),
            Self::Micros => format!("{value:.0} µs"),
            Self::Bytes => format!("{value:.0} B"),
            Self::Size => bytes_text(value.round() as u64),
            Self::Secs => format!("{value:.2} s"),
        }
    }

    /// A target's bound, without trailing zeros: "60%", "2 ms".
    fn bound(self, value: f64) -> String {
        match self {
            Self::Ratio => format!("{}%", value * 100.0),
            Self::Ms => format!("{value} ms"),
            Self::Secs => format!("{value} s"),
            _ => self.show(value),
        }
    }

    /// "a–b" in this unit, the unit written once where it is a suffix.
    fn spread(self, min: f64, max: f64) -> String {
        match self {
            Self::Ratio => format!("{:.1}–{:.1}%", min * 100.0, max * 100.0),
            Self::Ms => format!("{min:.2}–{max:.2} ms"),
            Self::Secs => format!("{min:.2}–{max:.2} s"),
            Self::PerSec => format!("{min:.0}–{max:.0}/s"),
            Self::Micros => format!("{min:.0}–{max:.0} µs"),
            Self::Bytes => format!("{min:.0}–{max:.0} B"),
            Self::Size => format!("{}–{}", self.show(min), self.show(max)),
        }
    }
}

/// What a figure is held to.
#[derive(Clone, Copy)]
enum Target {
    /// The denominator of the ratios.
    Reference,
    /// Reported for context.
    None,
    /// Tracked from run to run; the issue sets no bound.
    Tracked,
    AtLeast(f64),
    Below(f64),
    /// Every acked delivery processed within [`DRAIN_TARGET`] of the burst.
    Drain,
}

impl Target {
    fn describe(self, unit: Unit) -> String {
        match self {
            Self::Reference => "reference for the ratios".to_owned(),
            Self::None => "-".to_owned(),
            Self::Tracked => "no target set (tracked)".to_owned(),
            Self::AtLeast(bound) => format!(">= {}", unit.bound(bound)),
            Self::Below(bound) => format!("< {}", unit.bound(bound)),
            Self::Drain => format!(
                "every acked delivery in the ledger within {} s after the burst",
                DRAIN_TARGET.as_secs()
            ),
        }
    }

    /// `None` for a figure without a bound.
    fn met(self, value: f64) -> Option<bool> {
        match self {
            Self::Reference | Self::None | Self::Tracked => None,
            Self::AtLeast(bound) => Some(value >= bound),
            Self::Below(bound) => Some(value < bound),
            Self::Drain => Some(value <= DRAIN_TARGET.as_secs_f64()),
        }
    }
}

/// One figure over the repeats.
struct Row {
    label: String,
    unit: Unit,
    /// One per repeat; `None` where it could not be measured.
    values: Vec<Option<f64>>,
    target: Target,
    /// Per repeat, whether the target was met, where more than the value
    /// decides it (the drain: every acked delivery must also be processed).
    passes: Option<Vec<bool>>,
}

impl Row {
    fn new(label: &str, unit: Unit, values: Vec<Option<f64>>, target: Target) -> Self {
        Self {
            label: label.to_owned(),
            unit,
            values,
            target,
            passes: None,
        }
    }

    fn with_passes(mut self, passes: Vec<bool>) -> Self {
        self.passes = Some(passes);
        self
    }

    /// Whether each repeat met the target (`None` without a target).
    fn repeat_passes(&self) -> Option<Vec<bool>> {
        if let Some(passes) = &self.passes {
            return Some(passes.clone());
        }
        self.values
            .iter()
            .map(|value| match value {
                Some(value) => self.target.met(*value),
                None => self.target.met(0.0).map(|_| false),
            })
            .collect()
    }

    /// "ok"/"MISSED" on the median (and, for the drain, on every repeat's
    /// integrity), with how many repeats met it when they disagree.
    fn verdict(&self, median: Option<f64>) -> String {
        let Some(passes) = self.repeat_passes() else {
            return String::new();
        };
        let median_met = median.and_then(|m| self.target.met(m)).unwrap_or(false);
        let met = match self.passes {
            // Where more than the value decides, every repeat must pass.
            Some(_) => median_met && passes.iter().all(|&pass| pass),
            None => median_met,
        };
        let word = if met { "ok" } else { "MISSED" };
        let passed = passes.iter().filter(|&&pass| pass).count();
        if passes.len() > 1 && passed != 0 && passed != passes.len() {
            format!(": {word} (met in {passed} of {})", passes.len())
        } else {
            format!(": {word}")
        }
    }
}

/// The median of `values` (mean of the middle two for an even count).
pub(crate) fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.reports.len();
        writeln!(
            f,
            "issue 8 figures — median [min–max] of {n} repeat(s), each a floor/candidate pair: \
             ratios against the floor of the same repeat"
        )?;
        writeln!(f, "{:<52}{:>12}  {:<22}target", "", "median", "min–max")?;
        for row in self.rows() {
            let known: Vec<f64> = row.values.iter().flatten().copied().collect();
            let median = median(&known);
            let shown = median.map_or_else(|| "n/a".to_owned(), |m| row.unit.show(m));
            let spread = match (
                known.iter().copied().reduce(f64::min),
                known.iter().copied().reduce(f64::max),
            ) {
                (Some(min), Some(max)) if known.len() > 1 => row.unit.spread(min, max),
                _ => "-".to_owned(),
            };
            let missing = row.values.len() - known.len();
            let missing_note = if missing > 0 && !known.is_empty() {
                format!(" (n/a in {missing} of {})", row.values.len())
            } else {
                String::new()
            };
            writeln!(
                f,
                "{:<52}{shown:>12}  {spread:<22}{}{}{missing_note}",
                row.label,
                row.target.describe(row.unit),
                row.verdict(median)
            )?;
        }
        let troubled = self
            .reports
            .iter()
            .filter(|report| !report.problems().is_empty())
            .count();
        if troubled > 0 {
            writeln!(
                f,
                "!! {troubled} of {n} repeat(s) had problems that make their figures untrustworthy (listed above)"
            )?;
        }
        if n < MIN_REPEATS {
            writeln!(
                f,
                "note: {n} repeat(s); the team rule quotes medians of at least {MIN_REPEATS} \
                 (--repeat {MIN_REPEATS}), so treat these as a smoke test"
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn verdict_is_on_the_median_and_says_when_repeats_disagree() {
        let row = Row::new(
            "p99",
            Unit::Ms,
            vec![Some(1.5), Some(2.5), Some(1.8)],
            Target::Below(2.0),
        );
        assert_eq!(row.verdict(Some(1.8)), ": ok (met in 2 of 3)");
        let tracked = Row::new("cpu", Unit::Micros, vec![Some(80.0)], Target::Tracked);
        assert_eq!(tracked.verdict(Some(80.0)), "");
        let drain = Row::new(
            "drain",
            Unit::Secs,
            vec![Some(1.0), Some(1.2), Some(0.9)],
            Target::Drain,
        )
        .with_passes(vec![true, false, true]);
        assert_eq!(drain.verdict(Some(1.0)), ": MISSED (met in 2 of 3)");
        assert_eq!(Unit::Ratio.spread(0.61, 0.655), "61.0–65.5%");
        assert_eq!(
            Target::AtLeast(RATIO_TARGET).describe(Unit::Ratio),
            ">= 60%"
        );
        assert_eq!(Target::Below(2.0).describe(Unit::Ms), "< 2 ms");
    }
}
