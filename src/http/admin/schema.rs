//! The admin API's answers as types: handlers build these and serialize them, and the OpenAPI
//! document ([`crate::http::openapi`]) derives its schemas from the same types, so the document
//! cannot drift from what the server sends.

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::http::rejections::Rejection;
use crate::journal::query::EventTypeCount;
use crate::journal::{AttemptView, Backlog, DeliveryView, StatusCounts};

/// Every answer that is not a success.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable, e.g. `invalid_query`, `not_found`, `unauthorized`.
    pub code: String,
    pub message: String,
}

/// A page of deliveries, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryPage {
    pub items: Vec<DeliveryView>,
    /// Pass as `cursor` for the next (older) page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// The request line the ingress stored beside the headers.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct RequestLine {
    pub method: Option<String>,
    pub path: Option<String>,
    /// The query string, secrets redacted.
    pub query: Option<String>,
}

/// One delivery in full.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryInFull {
    #[serde(flatten)]
    pub view: DeliveryView,
    pub request: RequestLine,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryDetail {
    pub delivery: DeliveryInFull,
    /// Every processing attempt, oldest first.
    pub attempts: Vec<AttemptView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayedOne {
    pub replayed: u64,
    pub delivery_id: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayedMatching {
    pub dry_run: bool,
    /// Finished deliveries matching the filter (at most `limit`).
    pub matched: u64,
    /// Put back in line (0 on a dry run).
    pub replayed: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerColumn {
    pub name: String,
    /// `text`, `integer`, `decimal` (exact, as a string), `json`, `timestamp` (RFC 3339) or
    /// `uuid`.
    #[serde(rename = "type")]
    pub ty: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerTable {
    pub name: String,
    /// The columns that identify a row; `GET /api/ledger/{table}/{key}` takes the last one.
    pub key: Vec<String>,
    pub columns: Vec<LedgerColumn>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerCatalog {
    pub tables: Vec<LedgerTable>,
}

/// A page of a ledger table, sorted by its key.
#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerPage {
    /// Rows as `{column: value}`.
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<Map<String, Value>>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerRow {
    pub table: String,
    #[schema(value_type = Object)]
    pub row: Map<String, Value>,
}

/// One source over the window.
#[derive(Debug, Serialize, ToSchema)]
pub struct SourceStats {
    pub source: String,
    pub received: u64,
    pub pending: u64,
    pub processed: u64,
    pub ignored: u64,
    pub failed: u64,
    pub dead: u64,
    /// Requests the ingress refused (bad signature) plus deliveries the provider's API
    /// disproved.
    pub rejected: u64,
    /// Processed (or ignored) out of finished deliveries; `null` when none finished.
    pub success_rate: Option<f64>,
    /// Processing-attempt durations, nearest-rank percentiles.
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MinuteStats {
    /// The minute's start, RFC 3339.
    pub minute: String,
    pub source: String,
    pub count: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    pub window_seconds: i64,
    pub sources: Vec<SourceStats>,
    pub event_types: Vec<EventTypeCount>,
    pub per_minute: Vec<MinuteStats>,
    /// All deliveries by status, whatever the window.
    pub deliveries: StatusCounts,
    pub backlog: Backlog,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RevenueDayStats {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    pub source: String,
    pub currency: String,
    /// Exact decimal, in the currency's minor-unit precision.
    pub amount: String,
    pub count: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Revenue {
    pub days: Vec<RevenueDayStats>,
}

#[derive(Debug, Default, Serialize, ToSchema)]
pub struct SourceCounts {
    pub received: u64,
    pub pending: u64,
    pub processed: u64,
    pub ignored: u64,
    pub failed: u64,
    pub dead: u64,
    pub rejected: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RejectionSummary {
    pub at: String,
    pub code: String,
    /// Why the request was refused.
    pub cause: String,
    pub method: String,
    pub path: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SourceView {
    pub name: String,
    pub kind: String,
    pub route: String,
    /// `METHOD /path` for every route that reaches this source.
    pub routes: Vec<String>,
    /// Whether its secret is set (never the secret): without it the source refuses traffic.
    pub secret_configured: bool,
    /// Deliveries stored, by status, since the database began.
    pub counts: SourceCounts,
    /// Requests refused at the ingress since the server started.
    pub rejected: u64,
    pub last_rejections: Vec<RejectionSummary>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Sources {
    pub sources: Vec<SourceView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SourceRejections {
    pub source: String,
    pub total: u64,
    pub rejections: Vec<Rejection>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Idle {
    pub idle: bool,
    pub backlog: Backlog,
}

/// Seed 001's webhook logs.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefractLogs {
    pub count: usize,
    #[schema(value_type = Vec<Object>)]
    pub logs: Vec<Value>,
}

/// Seed 003's `webhook_events` rows.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookEvents {
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<Value>,
}
