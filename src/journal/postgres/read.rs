//! Claims and the read model on PostgreSQL.

use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::{datetime, storage_error, timestamp};
use crate::clock::Timestamp;
use crate::journal::{
    AttemptView, Backlog, ClaimRequest, ClaimToken, ClaimedDelivery, DeliveryFilter, DeliveryId,
    DeliveryStatus, DeliveryView, JournalError, StatusCounts,
};

const CLAIM: &str = "\
WITH due AS (
    SELECT id FROM deliveries
    WHERE status IN ('pending', 'verifying') AND next_attempt_at <= $1
      AND (lease_until IS NULL OR lease_until <= $1)
    ORDER BY next_attempt_at, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE deliveries d SET lease_token = $3, lease_until = $4
    FROM due WHERE d.id = due.id
    RETURNING d.id, d.source, d.event_id, d.event_type, d.dedup_key, d.received_at,
              d.attempts, d.next_attempt_at, d.status
)
SELECT c.id, c.source, c.event_id, c.event_type, c.dedup_key, c.received_at, c.attempts,
       p.headers::text, p.body, c.status
FROM claimed c JOIN delivery_payloads p ON p.delivery_id = c.id
ORDER BY c.next_attempt_at, c.id";

/// Leases the oldest due deliveries that nobody holds; rows another instance is claiming
/// right now are skipped, not waited for.
pub(super) async fn claim(
    client: &impl GenericClient,
    request: ClaimRequest,
    token: ClaimToken,
) -> Result<Vec<ClaimedDelivery>, JournalError> {
    let statement = client.prepare_cached(CLAIM).await.map_err(storage_error)?;
    let rows = client
        .query(
            &statement,
            &[
                &datetime(request.now),
                &(request.limit as i64),
                &token.0,
                &datetime(request.lease_until()),
            ],
        )
        .await
        .map_err(storage_error)?;
    rows.iter()
        .map(|row| {
            Ok(ClaimedDelivery {
                id: DeliveryId(row.try_get(0).map_err(storage_error)?),
                claim: token,
                source: row.try_get(1).map_err(storage_error)?,
                event_id: row.try_get(2).map_err(storage_error)?,
                event_type: row.try_get(3).map_err(storage_error)?,
                dedup_key: row.try_get(4).map_err(storage_error)?,
                received_at: timestamp(row.try_get(5).map_err(storage_error)?),
                attempts: row.try_get::<_, i32>(6).map_err(storage_error)? as u32,
                headers_json: row.try_get(7).map_err(storage_error)?,
                body: Bytes::from(row.try_get::<_, Vec<u8>>(8).map_err(storage_error)?),
                verifying: row.try_get::<_, &str>(9).map_err(storage_error)?
                    == DeliveryStatus::Verifying.as_str(),
            })
        })
        .collect()
}

pub(super) async fn next_due(
    client: &impl GenericClient,
) -> Result<Option<Timestamp>, JournalError> {
    let row = client
        .query_one(
            "SELECT MIN(GREATEST(next_attempt_at, lease_until)) FROM deliveries \
             WHERE status IN ('pending', 'verifying')",
            &[],
        )
        .await
        .map_err(storage_error)?;
    let at: Option<DateTime<Utc>> = row.try_get(0).map_err(storage_error)?;
    Ok(at.map(timestamp))
}

pub(super) async fn backlog(
    client: &impl GenericClient,
    now: Timestamp,
) -> Result<Backlog, JournalError> {
    let row = client
        .query_one(
            "SELECT COUNT(*) FILTER (WHERE next_attempt_at <= $1), COUNT(*) \
             FROM deliveries WHERE status IN ('pending', 'verifying')",
            &[&datetime(now)],
        )
        .await
        .map_err(storage_error)?;
    Ok(Backlog {
        due: row.get::<_, i64>(0) as u64,
        pending: row.get::<_, i64>(1) as u64,
    })
}

pub(super) async fn status_counts(
    client: &impl GenericClient,
) -> Result<StatusCounts, JournalError> {
    let rows = client
        .query(
            "SELECT status, COUNT(*) FROM deliveries GROUP BY status",
            &[],
        )
        .await
        .map_err(storage_error)?;
    let mut counts = StatusCounts::default();
    for row in rows {
        let count = row.get::<_, i64>(1) as u64;
        match DeliveryStatus::parse(row.get(0)) {
            Some(DeliveryStatus::Pending) => counts.pending = count,
            Some(DeliveryStatus::Processed) => counts.processed = count,
            Some(DeliveryStatus::Failed) => counts.failed = count,
            Some(DeliveryStatus::Dead) => counts.dead = count,
            Some(DeliveryStatus::Ignored) => counts.ignored = count,
            Some(DeliveryStatus::Verifying) => counts.verifying = count,
            Some(DeliveryStatus::Rejected) => counts.rejected = count,
            None => {}
        }
    }
    Ok(counts)
}

const VIEW_COLUMNS: &str = "d.id, d.source, d.event_id, d.event_type, d.dedup_key, \
     d.received_at, d.status, d.attempts, d.last_error, d.next_attempt_at, d.processed_at, \
     d.body_bytes";

pub(super) async fn deliveries(
    client: &impl GenericClient,
    filter: &DeliveryFilter,
) -> Result<Vec<DeliveryView>, JournalError> {
    let sql = format!(
        "SELECT {VIEW_COLUMNS} FROM deliveries d \
         WHERE ($1::text IS NULL OR d.source = $1) AND ($2::text IS NULL OR d.status = $2) \
         AND ($3::int8 IS NULL OR d.id < $3) AND ($4::text IS NULL OR d.event_type = $4) \
         AND ($5::timestamptz IS NULL OR d.received_at >= $5) \
         AND ($6::timestamptz IS NULL OR d.received_at < $6) \
         AND ($7::bytea IS NULL OR EXISTS (SELECT 1 FROM delivery_payloads p \
              WHERE p.delivery_id = d.id AND position($7::bytea IN p.body) > 0)) \
         ORDER BY d.id DESC LIMIT $8"
    );
    let needle = filter
        .body_contains
        .as_ref()
        .map(|text| text.as_bytes().to_vec());
    let rows = client
        .query(
            &sql,
            &[
                &filter.source,
                &filter.status.map(DeliveryStatus::as_str),
                &filter.before_id,
                &filter.event_type,
                &filter.since.map(datetime),
                &filter.until.map(datetime),
                &needle,
                &i64::from(filter.limit.clamp(1, 1000)),
            ],
        )
        .await
        .map_err(storage_error)?;
    rows.iter().map(view_from_row).collect()
}

pub(super) async fn delivery(
    client: &impl GenericClient,
    id: DeliveryId,
) -> Result<Option<DeliveryView>, JournalError> {
    let sql = format!(
        "SELECT {VIEW_COLUMNS}, p.headers::text, p.body FROM deliveries d \
         JOIN delivery_payloads p ON p.delivery_id = d.id WHERE d.id = $1"
    );
    let Some(row) = client
        .query_opt(&sql, &[&id.0])
        .await
        .map_err(storage_error)?
    else {
        return Ok(None);
    };
    let mut view = view_from_row(&row)?;
    let headers: String = row.try_get(12).map_err(storage_error)?;
    view.headers = serde_json::from_str(&headers).ok();
    let body: Vec<u8> = row.try_get(13).map_err(storage_error)?;
    match String::from_utf8(body) {
        Ok(text) => view.body = Some(text),
        Err(raw) => {
            view.body_base64 =
                Some(base64::engine::general_purpose::STANDARD.encode(raw.as_bytes()))
        }
    }
    Ok(Some(view))
}

fn view_from_row(row: &Row) -> Result<DeliveryView, JournalError> {
    let time = |at: Option<DateTime<Utc>>| at.map(|at| timestamp(at).to_rfc3339());
    let status: String = row.try_get(6).map_err(storage_error)?;
    Ok(DeliveryView {
        id: DeliveryId(row.try_get(0).map_err(storage_error)?),
        source: row.try_get(1).map_err(storage_error)?,
        event_id: row.try_get(2).map_err(storage_error)?,
        event_type: row.try_get(3).map_err(storage_error)?,
        dedup_key: row.try_get(4).map_err(storage_error)?,
        received_at: timestamp(row.try_get(5).map_err(storage_error)?).to_rfc3339(),
        status: DeliveryStatus::parse(&status).unwrap_or(DeliveryStatus::Failed),
        attempts: row.try_get::<_, i32>(7).map_err(storage_error)? as u32,
        last_error: row.try_get(8).map_err(storage_error)?,
        next_attempt_at: time(row.try_get(9).map_err(storage_error)?),
        processed_at: time(row.try_get(10).map_err(storage_error)?),
        body_bytes: row.try_get::<_, i32>(11).map_err(storage_error)? as usize,
        headers: None,
        body: None,
        body_base64: None,
    })
}

pub(super) async fn attempts(
    client: &impl GenericClient,
    id: DeliveryId,
) -> Result<Vec<AttemptView>, JournalError> {
    let rows = client
        .query(
            "SELECT attempt, started_at, duration_us, outcome, error FROM attempts \
             WHERE delivery_id = $1 ORDER BY attempt",
            &[&id.0],
        )
        .await
        .map_err(storage_error)?;
    rows.iter()
        .map(|row| {
            Ok(AttemptView {
                attempt: row.try_get::<_, i32>(0).map_err(storage_error)? as u32,
                started_at: timestamp(row.try_get(1).map_err(storage_error)?).to_rfc3339(),
                duration_ms: row.try_get::<_, i64>(2).map_err(storage_error)? as f64 / 1000.0,
                outcome: row.try_get(3).map_err(storage_error)?,
                error: row.try_get(4).map_err(storage_error)?,
            })
        })
        .collect()
}
