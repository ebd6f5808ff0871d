//! Storage, split by job: the [`DeliveryLog`] (append with group commit and dedup, claim due
//! work under a lease, complete), the [`ReadModel`] for operators, and per backend a ledger
//! store that applies [`crate::ledger`] rows inside the completing transaction. This module and
//! its backends are the only place that speaks SQL. Invariant: [`DeliveryLog::append`] returns
//! only after the delivery is committed with the configured durability, so an ack means "stored".

pub mod feed;
pub mod postgres;
pub mod query;
pub mod segment_log;
pub mod sqlite;
pub mod tokens;
pub mod transfer;

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Serialize;
use thiserror::Error;

use crate::clock::Timestamp;
use crate::ledger::LedgerChange;

/// Which engine a [`Storage`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The journal's row id of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct DeliveryId(pub i64);

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Waiting for its first attempt or a retry (`next_attempt_at`).
    Pending,
    /// Applied to the ledger.
    Processed,
    /// Stored but not processable as received (unparseable, invalid); kept for an operator and
    /// replayable after a fix, never retried on its own.
    Failed,
    /// Gave up after the configured number of attempts.
    Dead,
    /// Genuine and stored, but of a kind that changes nothing in the ledger.
    Ignored,
    /// Stored, but trusted only once the provider's API confirms it (an unsigned callback):
    /// the processor makes that lookup, retried like any attempt while the API is down.
    Verifying,
    /// The provider's API said the delivery is not genuine (the reason is `last_error`).
    Rejected,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processed => "processed",
            Self::Failed => "failed",
            Self::Dead => "dead",
            Self::Ignored => "ignored",
            Self::Verifying => "verifying",
            Self::Rejected => "rejected",
        }
    }

    /// Waiting for an attempt: still claimable.
    pub fn is_waiting(self) -> bool {
        matches!(self, Self::Pending | Self::Verifying)
    }

    pub fn parse(word: &str) -> Option<Self> {
        Some(match word {
            "pending" => Self::Pending,
            "processed" => Self::Processed,
            "failed" => Self::Failed,
            "dead" => Self::Dead,
            "ignored" => Self::Ignored,
            "verifying" => Self::Verifying,
            "rejected" => Self::Rejected,
            _ => return None,
        })
    }
}

/// A verified delivery, ready to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    pub source: String,
    pub event_id: Option<String>,
    pub event_type: String,
    /// Unique per source: a second delivery with the same key is a duplicate.
    pub dedup_key: String,
    pub received_at: Timestamp,
    /// JSON object of the request headers with secrets redacted.
    pub headers_json: String,
    /// The body exactly as received.
    pub body: Bytes,
    /// `Pending` normally; `Failed` for a genuine delivery that could not be identified.
    pub status: DeliveryStatus,
    pub last_error: Option<String>,
}

/// A fingerprint of a body (its length and CRC-32), to tell a provider's changed body from a
/// retry of the same one when a dedup key comes again. Not a security hash.
pub fn body_fingerprint(body: &[u8]) -> i64 {
    let crc = crc32fast::hash(body);
    ((body.len() as i64) << 32) | i64::from(crc)
}

/// The outcome of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    Stored(DeliveryId),
    /// The dedup key was already in the journal; nothing was written.
    Duplicate(DeliveryId),
}

impl Appended {
    pub fn id(self) -> DeliveryId {
        match self {
            Self::Stored(id) | Self::Duplicate(id) => id,
        }
    }
}

/// Proof that a claim is still ours: a completion lands only if the delivery still carries the
/// token it was claimed with, so a claim that expired and was taken over elsewhere is stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClaimToken(pub i64);

impl ClaimToken {
    /// A fresh random token; never zero.
    pub fn random() -> Self {
        Self(fastrand::i64(1..i64::MAX))
    }
}

/// What a processor asks for: due deliveries, held for `lease` from `now`.
#[derive(Debug, Clone, Copy)]
pub struct ClaimRequest {
    pub now: Timestamp,
    pub limit: usize,
    /// How long the claim excludes other claimers. A claim held by a dead instance is taken
    /// over once its lease runs out.
    pub lease: std::time::Duration,
}

impl ClaimRequest {
    pub fn lease_until(&self) -> Timestamp {
        Timestamp(self.now.micros() + self.lease.as_micros() as i64)
    }
}

/// A delivery handed to the processor.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub id: DeliveryId,
    pub claim: ClaimToken,
    pub source: String,
    pub event_id: Option<String>,
    pub event_type: String,
    pub dedup_key: String,
    pub received_at: Timestamp,
    pub headers_json: String,
    pub body: Bytes,
    /// Attempts made before this one; the completion must match it (optimistic claim).
    pub attempts: u32,
    /// Stored as `verifying`: the provider's API must confirm it before it is normalized.
    pub verifying: bool,
}

/// What the processor decided for one claimed delivery.
#[derive(Debug, Clone)]
pub struct Completion {
    pub delivery: DeliveryId,
    /// The source the delivery came from: ledger rows are keyed by (source, external id).
    pub source: String,
    pub claim: ClaimToken,
    /// `attempts` as claimed: if another worker completed it meanwhile, this completion is stale.
    pub claimed_attempts: u32,
    /// When the delivery arrived (the ledger's `webhook_received_at`).
    pub received_at: Timestamp,
    pub started_at: Timestamp,
    pub duration_micros: i64,
    pub outcome: CompletionOutcome,
    /// What to record if applying the outcome to the ledger fails.
    pub if_apply_fails: RetryPlan,
    /// The delivery was `verifying` when claimed: a retry keeps it so.
    pub verifying: bool,
}

impl Completion {
    /// The status a delivery waits in until its next attempt.
    pub fn waiting_status(&self) -> DeliveryStatus {
        if self.verifying {
            DeliveryStatus::Verifying
        } else {
            DeliveryStatus::Pending
        }
    }
}

#[derive(Debug, Clone)]
pub enum CompletionOutcome {
    /// Apply these changes and mark the delivery processed, in one transaction.
    Apply(Vec<LedgerChange>),
    /// Nothing to change; mark ignored with the reason.
    Ignore(String),
    /// The attempt failed: record the error and follow the plan.
    Fail { error: String, plan: RetryPlan },
    /// The provider's API disproved the delivery: mark it rejected with the reason.
    Reject(String),
}

/// After a failed attempt: try again at a time, give up, or park as failed (permanent error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryPlan {
    RetryAt(Timestamp),
    Dead,
    Failed,
}

/// How a completion landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completed {
    Processed,
    Ignored,
    /// The outcome (or the ledger apply) failed and the plan was recorded.
    Failed(RetryPlan),
    /// The provider's API disproved it.
    Rejected,
    /// Someone else completed this attempt first; nothing was changed.
    Stale,
}

/// The first attempt at a delivery, made by the journal itself as the delivery reaches its
/// database, in the same transaction (the embedded journal: see `sqlite::projection`). One
/// transaction then carries the delivery row, its ledger effects and its attempt, instead of
/// a projection, a claim and a completion: a third of the writes, no hand-off to the
/// processor, and still exactly once, because a crash rolls all of it back together and the
/// log replays it. Retries, lookups and replays stay with the processor.
pub trait FirstAttempt: Send + Sync {
    /// The completion for a delivery that has never been attempted, or `None` to leave it
    /// pending for the processor (it needs a provider's API, say).
    fn attempt(&self, delivery: &ClaimedDelivery) -> Option<Completion>;

    /// Told after the transaction holding `attempt`'s completion committed.
    fn completed(&self, delivery: &ClaimedDelivery, completion: &Completion, result: &Completed);
}

/// A page of the delivery list, newest first. Every field narrows the list; values are bound
/// as parameters by the backends, never spliced into SQL.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub source: Option<String>,
    pub status: Option<DeliveryStatus>,
    pub event_type: Option<String>,
    /// Received at or after.
    pub since: Option<Timestamp>,
    /// Received before.
    pub until: Option<Timestamp>,
    /// Bytes that must occur in the raw body (case-sensitive).
    pub body_contains: Option<String>,
    /// The cursor: only deliveries with a smaller id (older ones).
    pub before_id: Option<i64>,
    pub limit: u32,
}

/// One delivery as an operator sees it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    pub id: DeliveryId,
    pub source: String,
    pub event_id: Option<String>,
    pub event_type: String,
    pub dedup_key: String,
    pub received_at: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<String>,
    pub processed_at: Option<String>,
    pub body_bytes: usize,
    /// The request headers as received, secrets redacted (detail only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub headers: Option<serde_json::Value>,
    /// The body as text when it is UTF-8, else base64 in `body_base64`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
}

/// One processing attempt.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AttemptView {
    pub attempt: u32,
    pub started_at: String,
    pub duration_ms: f64,
    pub outcome: String,
    pub error: Option<String>,
}

/// Counts by status, for the backlog gauge and the admin API.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct StatusCounts {
    pub pending: u64,
    pub processed: u64,
    pub failed: u64,
    pub dead: u64,
    pub ignored: u64,
    pub verifying: u64,
    pub rejected: u64,
}

/// Pending work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Backlog {
    /// Pending and due now.
    pub due: u64,
    /// Pending in all, including retries scheduled later.
    pub pending: u64,
}

/// A storage fault, shared by every request of the batch it sank.
#[derive(Clone)]
pub struct StorageFault(Arc<dyn StdError + Send + Sync>);

impl StorageFault {
    pub fn new(error: impl StdError + Send + Sync + 'static) -> Self {
        Self(Arc::new(error))
    }
}

impl fmt::Debug for StorageFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for StorageFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl StdError for StorageFault {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0.source()
    }
}

#[derive(Debug, Clone, Error)]
pub enum JournalError {
    /// The database could not be written or read (disk full, I/O error, …).
    #[error("journal storage failed: {0}")]
    Storage(#[source] StorageFault),
    /// The write could not be made durable (fsync failed).
    #[error("journal could not sync to disk: {0}")]
    Sync(#[source] StorageFault),
    #[error("journal is shut down")]
    Closed,
    #[error("journal configuration is invalid: {0}")]
    Config(String),
    /// Another process owns the database (SQLite serves one server).
    #[error("{0}")]
    InUse(String),
}

impl JournalError {
    pub fn storage(error: impl StdError + Send + Sync + 'static) -> Self {
        Self::Storage(StorageFault::new(error))
    }
}

/// The durable log of deliveries and the work queue over it. One implementation per backend;
/// the same conformance story runs against each.
#[async_trait]
pub trait DeliveryLog: Send + Sync + 'static {
    /// Appends a delivery; returns once it is durable (or found to be a duplicate).
    async fn append(&self, delivery: NewDelivery) -> Result<Appended, JournalError>;

    /// Claims pending deliveries due at `request.now`, oldest first, under a fresh lease: no
    /// other claimer gets them until the lease runs out or they are completed.
    async fn claim_due(&self, request: ClaimRequest) -> Result<Vec<ClaimedDelivery>, JournalError>;

    /// Records a batch of attempts; each applies its ledger changes and status atomically, and
    /// only while its claim still holds.
    async fn complete(&self, batch: Vec<Completion>) -> Result<Vec<Completed>, JournalError>;

    /// Proves the log can be written now (health checks).
    async fn probe(&self) -> Result<(), JournalError>;

    /// When the next pending delivery becomes claimable (due and not leased), if any.
    async fn next_due(&self) -> Result<Option<Timestamp>, JournalError>;

    /// Puts finished deliveries (processed, ignored, failed, dead, rejected) that match back in
    /// line, due at `request.now`: the processor attempts them again through the normal path,
    /// and each ledger change is decided against the rows as they are then, so an effect
    /// already applied is not applied twice. A rejected delivery is verified again. Returns how
    /// many matched; with `dry_run` nothing changes.
    async fn replay(&self, request: ReplayRequest) -> Result<u64, JournalError>;

    /// Lets the journal make each delivery's first attempt itself as the delivery lands
    /// ([`FirstAttempt`]). A backend that cannot (PostgreSQL acks on its own commit, before
    /// any processing) ignores it and the processor makes every attempt.
    fn attempt_on_arrival(&self, _first: Arc<dyn FirstAttempt>) {}

    /// Notified whenever new deliveries become durable, so the processor wakes without polling.
    fn appended_signal(&self) -> Arc<tokio::sync::Notify>;

    /// Makes everything written so far durable and stops writing; later calls fail `Closed`.
    async fn close(&self);
}

/// Which finished deliveries to replay. Deliveries that were never identified (stored as
/// `failed` at the ingress, e.g. a body with a duplicate key) are never replayed: their bytes
/// were refused, and only the provider's corrected resend can replace them.
#[derive(Debug, Clone)]
pub struct ReplayRequest {
    /// Exactly these deliveries (still only the finished, identified ones among them).
    pub ids: Option<Vec<DeliveryId>>,
    pub source: Option<String>,
    pub status: Option<DeliveryStatus>,
    pub event_type: Option<String>,
    /// At most this many, oldest first.
    pub limit: u32,
    pub now: Timestamp,
    pub dry_run: bool,
}

/// The statuses a replay takes back (SQL list).
pub(crate) const REPLAYABLE: &str = "('processed', 'ignored', 'failed', 'dead', 'rejected')";

/// What operators and the dashboard read: domain types, never SQL.
#[async_trait]
pub trait ReadModel: Send + Sync + 'static {
    async fn status_counts(&self) -> Result<StatusCounts, JournalError>;

    /// Pending deliveries: how many are due at `now`, and how many in all.
    async fn backlog(&self, now: Timestamp) -> Result<Backlog, JournalError>;

    async fn deliveries(&self, filter: DeliveryFilter) -> Result<Vec<DeliveryView>, JournalError>;

    async fn delivery(&self, id: DeliveryId) -> Result<Option<DeliveryView>, JournalError>;

    async fn attempts(&self, id: DeliveryId) -> Result<Vec<AttemptView>, JournalError>;

    /// A page of a ledger table (see [`query::LedgerQuery`]), rows in the table's columns
    /// order, sorted by its key.
    async fn ledger_rows(
        &self,
        query: query::LedgerQuery,
    ) -> Result<Vec<Vec<crate::ledger::Cell>>, JournalError>;

    /// Deliveries received since `since`, counted by source and status (no percentiles: cheap
    /// enough for every `GET /api/sources`).
    async fn source_counts(
        &self,
        since: Timestamp,
    ) -> Result<Vec<query::SourceWindow>, JournalError>;

    /// Deliveries received since `since`: counts, processing times, event types, per minute.
    async fn window_stats(&self, since: Timestamp) -> Result<query::WindowStats, JournalError>;

    /// Sales and payments created since `since`, summed per day, source and currency.
    async fn revenue(&self, since: Timestamp) -> Result<Vec<query::RevenueDay>, JournalError>;

    /// Returns once every delivery acked before the call is visible to this read model (or
    /// after a few seconds, whatever comes first): a backend whose ack comes before its read
    /// tables are filled makes reads follow writes through this.
    async fn await_visible(&self) {}
}

/// One backend's storage, by job.
#[derive(Clone)]
pub struct Storage {
    pub backend: Backend,
    pub log: Arc<dyn DeliveryLog>,
    pub read: Arc<dyn ReadModel>,
    pub feed: Arc<dyn feed::ChangeFeed>,
    pub tokens: Arc<dyn tokens::AdminTokenStore>,
    /// How long the backend's own disk work takes, for `/metrics`; none where the
    /// database's commit is the ack (PostgreSQL).
    pub disk: Option<Arc<crate::metrics::DiskTimings>>,
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Storage")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}
