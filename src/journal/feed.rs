//! The change feed: one ordered stream of what happened to deliveries (received, processed,
//! failed, dead, …) and to ledger rows (created, updated). Each backend writes a feed row in
//! the same transaction as the effect it describes, so the feed never tells of an effect that
//! was rolled back nor misses one that committed. Invariant: sequence numbers become visible
//! in increasing order, so a reader that has seen `seq` N never later finds a change below N;
//! `changes_after(N)` is therefore a gap-free resume point.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::Notify;

use super::{DeliveryStatus, JournalError};
use crate::clock::Timestamp;
use crate::ledger::{Cell, RowJson, Table};

/// The first part of every delivery kind (`delivery.received`, …).
pub const DELIVERY: &str = "delivery";
/// The first part of every ledger kind (`ledger.created`, `ledger.updated`).
pub const LEDGER: &str = "ledger";
pub const LEDGER_CREATED: &str = "ledger.created";
pub const LEDGER_UPDATED: &str = "ledger.updated";
pub const DELIVERY_RECEIVED: &str = "delivery.received";
pub const DELIVERY_REPLAYED: &str = "delivery.replayed";

/// The feed kind of a delivery that has just moved to `status` after an attempt.
pub fn attempt_kind(status: DeliveryStatus) -> &'static str {
    match status {
        DeliveryStatus::Pending | DeliveryStatus::Verifying => "delivery.retrying",
        DeliveryStatus::Processed => "delivery.processed",
        DeliveryStatus::Failed => "delivery.failed",
        DeliveryStatus::Dead => "delivery.dead",
        DeliveryStatus::Ignored => "delivery.ignored",
        DeliveryStatus::Rejected => "delivery.rejected",
    }
}

/// What a delivery step says beyond its kind: its status, attempt count and error.
pub fn delivery_data(status: DeliveryStatus, attempts: u32, error: Option<&str>) -> String {
    #[derive(Serialize)]
    struct StepData<'a> {
        status: DeliveryStatus,
        attempts: u32,
        error: Option<&'a str>,
    }
    serde_json::to_string(&StepData {
        status,
        attempts,
        error,
    })
    .expect("a step's data serializes")
}

/// A ledger row the ledger store just wrote, as the feed tells it.
#[derive(Debug, Clone)]
pub struct LedgerWritten {
    pub kind: &'static str,
    pub table: &'static str,
    /// JSON array of the key's values.
    pub key: String,
    /// JSON object of the row, column by column.
    pub row: String,
}

impl LedgerWritten {
    /// Writes the key and row as JSON text directly: every ledger write pays for this, so it
    /// never builds a `Value` (a JSON cell, often a whole payload, is copied, not re-parsed).
    pub fn new(kind: &'static str, table: &'static Table, key: &[Cell], row: &[Cell]) -> Self {
        Self {
            kind,
            table: table.name,
            key: serde_json::to_string(key).expect("a ledger key serializes"),
            row: serde_json::to_string(&RowJson { table, row }).expect("a ledger row serializes"),
        }
    }
}

/// One committed change, as streams send it. `key` and `data` are carried as the JSON text
/// the backend stored ([`FeedJson`]): the pump reads every change, most are never looked into,
/// so parsing them would be work for nobody.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub seq: u64,
    #[serde(serialize_with = "rfc3339")]
    pub at: Timestamp,
    pub kind: String,
    pub source: String,
    pub delivery_id: Option<i64>,
    pub event_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<FeedJson>,
    pub data: FeedJson,
}

/// JSON text as the feed stored it, nested as it is when a change is sent (text that is not
/// JSON is sent as a string). It is checked only then, not when read: the pump reads every
/// change for the subscribers that are always there (source health wants only delivery
/// kinds), and checking each ledger row's copy on every read was about 5% of the
/// instructions per delivery (`bench/scripts/callgrind-per-delivery.sh`, `Change::from_row`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedJson(String);

impl FeedJson {
    /// JSON `null`: a step without data.
    pub fn null() -> Self {
        Self("null".to_owned())
    }
}

impl Serialize for FeedJson {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match serde_json::from_str::<&RawValue>(&self.0) {
            Ok(raw) => raw.serialize(serializer),
            Err(_) => serializer.serialize_str(&self.0),
        }
    }
}

fn rfc3339<S: serde::Serializer>(at: &Timestamp, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&at.to_rfc3339())
}

impl Change {
    /// Builds a change from a feed row's columns (text that is not JSON is kept as a string).
    #[allow(clippy::too_many_arguments)]
    pub fn from_row(
        seq: i64,
        at: Timestamp,
        kind: String,
        source: String,
        delivery_id: Option<i64>,
        event_type: Option<String>,
        table: Option<String>,
        key: Option<String>,
        data: Option<String>,
    ) -> Self {
        Self {
            seq: seq.max(0) as u64,
            at,
            kind,
            source,
            delivery_id,
            event_type,
            table,
            key: key.map(FeedJson),
            data: data.map_or_else(FeedJson::null, FeedJson),
        }
    }
}

/// The range of sequence numbers the feed still holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FeedBounds {
    /// The oldest change kept (older ones were pruned); `None` when the feed is empty.
    pub oldest: Option<u64>,
    /// The newest committed change (0 when none ever was).
    pub head: u64,
}

/// How much of the feed is kept: it is a stream to resume from, not an archive (the journal
/// and the ledger are the record).
#[derive(Debug, Clone, Copy)]
pub struct FeedRetention {
    pub max_rows: u64,
    pub max_age: Duration,
}

impl Default for FeedRetention {
    fn default() -> Self {
        Self {
            max_rows: 1_000_000,
            max_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// The read side of the feed, per backend.
#[async_trait]
pub trait ChangeFeed: Send + Sync + 'static {
    /// Committed changes with `seq > after`, in order, at most `limit`.
    async fn changes_after(&self, after: u64, limit: usize) -> Result<Vec<Change>, JournalError>;

    async fn bounds(&self) -> Result<FeedBounds, JournalError>;

    /// Notified after this process committed feed rows.
    fn written(&self) -> Arc<Notify>;

    /// Numbers rows other transactions committed unnumbered (PostgreSQL; a no-op where rows
    /// are numbered at insert). Returns the head after it, when it changed.
    async fn sequence(&self) -> Result<Option<u64>, JournalError> {
        Ok(None)
    }

    /// Drops changes beyond the retention (a backend whose writer prunes by itself does
    /// nothing here). Returns how many went.
    async fn prune(&self, _now: Timestamp) -> Result<u64, JournalError> {
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(key: Option<&str>, data: Option<&str>) -> serde_json::Value {
        serde_json::to_value(change(key, data)).expect("a change serializes")
    }

    fn change(key: Option<&str>, data: Option<&str>) -> Change {
        Change::from_row(
            7,
            Timestamp(0),
            LEDGER_CREATED.into(),
            "cartpanda".into(),
            Some(3),
            Some("order.paid".into()),
            Some("sales".into()),
            key.map(str::to_owned),
            data.map(str::to_owned),
        )
    }

    #[test]
    fn stored_json_is_nested_as_it_is_and_other_text_becomes_a_string() {
        let row = sent(
            Some(r#"["cartpanda","S1"]"#),
            Some(r#"{"price": "10.50", "metadata": {"a": [1, 2]}}"#),
        );
        assert_eq!(row["key"], serde_json::json!(["cartpanda", "S1"]));
        assert_eq!(
            row["data"],
            serde_json::json!({"price": "10.50", "metadata": {"a": [1, 2]}})
        );

        let not_json = sent(None, Some("not {json"));
        assert_eq!(not_json["data"], "not {json");
        assert!(not_json.get("key").is_none(), "no key, no field");

        assert_eq!(sent(None, None)["data"], serde_json::Value::Null);
    }
}
