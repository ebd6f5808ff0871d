//! What operators ask of storage beyond single deliveries: pages of a ledger table, window
//! statistics, revenue. Domain types only; each backend renders them into its own SQL with
//! column names taken from the table description and every value bound as a parameter.

use serde::Serialize;

use super::DeliveryStatus;
use crate::clock::Timestamp;
use crate::ledger::{Cell, Table};

/// Most rows a page may hold.
pub const MAX_PAGE: u32 = 1000;

/// A page of one ledger table, sorted by its key. Column names come from `table` (the caller
/// checked them); values are bound.
#[derive(Debug, Clone)]
pub struct LedgerQuery {
    pub table: &'static Table,
    /// `column = value` conditions, each column one of `table.columns`.
    pub equals: Vec<(&'static str, Cell)>,
    /// Text that must occur (case-insensitively) in at least one text column.
    pub text: Option<String>,
    /// The cursor: only rows whose key sorts after these key values.
    pub after: Option<Vec<Cell>>,
    pub limit: u32,
}

impl LedgerQuery {
    /// The position of each key column in `table.columns`.
    pub fn key_positions(&self) -> Vec<usize> {
        self.table
            .key
            .iter()
            .filter_map(|name| self.table.position(name))
            .collect()
    }

    pub fn page_size(&self) -> u32 {
        self.limit.clamp(1, MAX_PAGE)
    }
}

/// Deliveries received in a window, per source.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceWindow {
    pub source: String,
    pub received: u64,
    pub pending: u64,
    pub processed: u64,
    pub ignored: u64,
    pub failed: u64,
    pub dead: u64,
    /// Disproved by the provider's API (`rejected` status).
    pub rejected: u64,
    /// Processing-attempt durations in the window, nearest-rank percentiles (microseconds).
    pub p50_us: Option<i64>,
    pub p95_us: Option<i64>,
    pub p99_us: Option<i64>,
}

impl SourceWindow {
    /// Adds `count` deliveries of `status`.
    pub fn add(&mut self, status: &str, count: u64) {
        self.received += count;
        match DeliveryStatus::parse(status) {
            Some(DeliveryStatus::Pending | DeliveryStatus::Verifying) => self.pending += count,
            Some(DeliveryStatus::Processed) => self.processed += count,
            Some(DeliveryStatus::Ignored) => self.ignored += count,
            Some(DeliveryStatus::Failed) => self.failed += count,
            Some(DeliveryStatus::Dead) => self.dead += count,
            Some(DeliveryStatus::Rejected) => self.rejected += count,
            None => {}
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EventTypeCount {
    pub source: String,
    pub event_type: String,
    pub count: u64,
}

#[derive(Debug, Clone)]
pub struct MinuteCount {
    /// The minute's start.
    pub minute: Timestamp,
    pub source: String,
    pub count: u64,
}

/// Statistics of one window.
#[derive(Debug, Clone, Default)]
pub struct WindowStats {
    pub sources: Vec<SourceWindow>,
    pub event_types: Vec<EventTypeCount>,
    pub per_minute: Vec<MinuteCount>,
}

/// Money taken on one day (UTC) by one source in one currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevenueDay {
    /// `YYYY-MM-DD`.
    pub day: String,
    pub source: String,
    pub currency: String,
    pub amount_minor: i64,
    pub count: u64,
}

/// The statuses of a sale that count as money taken.
pub const SALE_REVENUE_STATUSES: [&str; 1] = ["approved"];
/// The payment statuses that count as money taken (partially refunded payments were taken).
pub const PAYMENT_REVENUE_STATUSES: [&str; 3] = ["paid", "succeeded", "partially_refunded"];

/// A constant list of status words as SQL string literals (our own constants, never input).
pub(crate) fn sql_list(words: &[&str]) -> String {
    words
        .iter()
        .map(|word| format!("'{word}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The 0-based offset of the nearest-rank `percent` percentile among `n` sorted values.
pub fn nearest_rank(n: u64, percent: u64) -> u64 {
    (n * percent).div_ceil(100).saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::nearest_rank;

    #[test]
    fn nearest_rank_picks_the_value_at_or_above_the_percentile() {
        assert_eq!(nearest_rank(1, 50), 0);
        assert_eq!(nearest_rank(1, 99), 0);
        assert_eq!(nearest_rank(100, 50), 49);
        assert_eq!(nearest_rank(100, 99), 98);
        assert_eq!(nearest_rank(10, 95), 9);
        assert_eq!(nearest_rank(3, 50), 1);
    }
}
