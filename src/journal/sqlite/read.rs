//! Read-only queries over the journal, run on the reader pool.

use base64::Engine as _;
use bytes::Bytes;
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::clock::Timestamp;
use crate::journal::{
    AttemptView, Backlog, ClaimToken, ClaimedDelivery, DeliveryFilter, DeliveryId, DeliveryStatus,
    DeliveryView, StatusCounts,
};

/// One claimed delivery with its payload, read inside the claiming transaction.
pub(super) fn claimed(
    conn: &Connection,
    id: DeliveryId,
    claim: ClaimToken,
) -> rusqlite::Result<ClaimedDelivery> {
    conn.prepare_cached(
        "SELECT d.source, d.event_id, d.event_type, d.dedup_key, d.received_at, p.headers, \
         p.body, d.attempts, d.status \
         FROM deliveries d JOIN delivery_payloads p ON p.delivery_id = d.id WHERE d.id = ?1",
    )?
    .query_row([id.0], |row| {
        Ok(ClaimedDelivery {
            id,
            claim,
            source: row.get(0)?,
            event_id: row.get(1)?,
            event_type: row.get(2)?,
            dedup_key: row.get(3)?,
            received_at: Timestamp(row.get(4)?),
            headers_json: row.get(5)?,
            body: Bytes::from(row.get::<_, Vec<u8>>(6)?),
            attempts: row.get(7)?,
            verifying: row.get::<_, String>(8)? == DeliveryStatus::Verifying.as_str(),
        })
    })
}

pub(super) fn next_due(conn: &Connection) -> rusqlite::Result<Option<Timestamp>> {
    conn.prepare_cached(
        "SELECT MIN(MAX(next_attempt_at, COALESCE(lease_until, 0))) FROM deliveries \
         WHERE status IN ('pending', 'verifying')",
    )?
    .query_row([], |row| row.get::<_, Option<i64>>(0))
    .map(|at| at.map(Timestamp))
}

pub(super) fn backlog(conn: &Connection, now: Timestamp) -> rusqlite::Result<Backlog> {
    conn.prepare_cached(
        "SELECT COUNT(*) FILTER (WHERE next_attempt_at <= ?1), COUNT(*) \
         FROM deliveries WHERE status IN ('pending', 'verifying')",
    )?
    .query_row([now.micros()], |row| {
        Ok(Backlog {
            due: row.get(0)?,
            pending: row.get(1)?,
        })
    })
}

pub(super) fn status_counts(conn: &Connection) -> rusqlite::Result<StatusCounts> {
    let mut counts = StatusCounts::default();
    let mut statement =
        conn.prepare_cached("SELECT status, COUNT(*) FROM deliveries GROUP BY status")?;
    let rows = statement.query_map([], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, u64>(1)?))
    })?;
    for row in rows {
        let (status, count) = row?;
        match DeliveryStatus::parse(&status) {
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

const VIEW_COLUMNS: &str = "id, source, event_id, event_type, dedup_key, received_at, status, \
     attempts, last_error, next_attempt_at, processed_at, body_bytes";

pub(super) fn deliveries(
    conn: &Connection,
    filter: &DeliveryFilter,
) -> rusqlite::Result<Vec<DeliveryView>> {
    let sql = format!(
        "SELECT {VIEW_COLUMNS} FROM deliveries \
         WHERE (?1 IS NULL OR source = ?1) AND (?2 IS NULL OR status = ?2) \
         AND (?3 IS NULL OR id < ?3) AND (?4 IS NULL OR event_type = ?4) \
         AND (?5 IS NULL OR received_at >= ?5) AND (?6 IS NULL OR received_at < ?6) \
         AND (?7 IS NULL OR EXISTS (SELECT 1 FROM delivery_payloads p \
              WHERE p.delivery_id = deliveries.id AND instr(p.body, ?7) > 0)) \
         ORDER BY id DESC LIMIT ?8"
    );
    let mut statement = conn.prepare_cached(&sql)?;
    // A blob, so that `instr` compares bytes with the stored body (a blob too).
    let needle = filter
        .body_contains
        .as_ref()
        .map(|text| text.as_bytes().to_vec());
    let rows = statement.query_map(
        params![
            filter.source,
            filter.status.map(DeliveryStatus::as_str),
            filter.before_id,
            filter.event_type,
            filter.since.map(Timestamp::micros),
            filter.until.map(Timestamp::micros),
            needle,
            filter.limit.clamp(1, 1000),
        ],
        view_from_row,
    )?;
    rows.collect()
}

pub(super) fn delivery(
    conn: &Connection,
    id: DeliveryId,
) -> rusqlite::Result<Option<DeliveryView>> {
    let sql = format!(
        "SELECT {VIEW_COLUMNS}, p.headers, p.body FROM deliveries \
         JOIN delivery_payloads p ON p.delivery_id = deliveries.id WHERE id = ?1"
    );
    conn.prepare_cached(&sql)?
        .query_row([id.0], |row| {
            let mut view = view_from_row(row)?;
            let headers: String = row.get(12)?;
            view.headers = serde_json::from_str(&headers).ok();
            let body: Vec<u8> = row.get(13)?;
            match String::from_utf8(body) {
                Ok(text) => view.body = Some(text),
                Err(raw) => {
                    view.body_base64 =
                        Some(base64::engine::general_purpose::STANDARD.encode(raw.as_bytes()))
                }
            }
            Ok(view)
        })
        .optional()
}

fn view_from_row(row: &Row<'_>) -> rusqlite::Result<DeliveryView> {
    let time = |value: Option<i64>| value.map(|micros| Timestamp(micros).to_rfc3339());
    let status: String = row.get(6)?;
    Ok(DeliveryView {
        id: DeliveryId(row.get(0)?),
        source: row.get(1)?,
        event_id: row.get(2)?,
        event_type: row.get(3)?,
        dedup_key: row.get(4)?,
        received_at: Timestamp(row.get(5)?).to_rfc3339(),
        status: DeliveryStatus::parse(&status).unwrap_or(DeliveryStatus::Failed),
        attempts: row.get(7)?,
        last_error: row.get(8)?,
        next_attempt_at: time(row.get(9)?),
        processed_at: time(row.get(10)?),
        body_bytes: row.get::<_, i64>(11)? as usize,
        headers: None,
        body: None,
        body_base64: None,
    })
}

pub(super) fn attempts(conn: &Connection, id: DeliveryId) -> rusqlite::Result<Vec<AttemptView>> {
    let mut statement = conn.prepare_cached(
        "SELECT attempt, started_at, duration_us, outcome, error FROM attempts \
         WHERE delivery_id = ?1 ORDER BY attempt",
    )?;
    let rows = statement.query_map([id.0], |row| {
        Ok(AttemptView {
            attempt: row.get(0)?,
            started_at: Timestamp(row.get(1)?).to_rfc3339(),
            duration_ms: row.get::<_, i64>(2)? as f64 / 1000.0,
            outcome: row.get(3)?,
            error: row.get(4)?,
        })
    })?;
    rows.collect()
}

/// What SQLite held through `applied_seq` in one snapshot, so that the caller can add what
/// the log synced beyond it without counting anything twice.
fn applied_in(conn: &Connection) -> rusqlite::Result<u64> {
    conn.prepare_cached("SELECT value FROM wharf_meta WHERE key = 'applied_seq'")?
        .query_row([], |row| row.get::<_, String>(0))
        .optional()
        .map(|value| value.and_then(|v| v.parse().ok()).unwrap_or(0))
}

pub(super) fn status_counts_at_snapshot(
    conn: &Connection,
) -> rusqlite::Result<(StatusCounts, u64)> {
    let tx = conn.unchecked_transaction()?;
    let counts = status_counts(&tx)?;
    let applied = applied_in(&tx)?;
    tx.commit()?;
    Ok((counts, applied))
}

pub(super) fn backlog_at_snapshot(
    conn: &Connection,
    now: Timestamp,
) -> rusqlite::Result<(Backlog, u64)> {
    let tx = conn.unchecked_transaction()?;
    let backlog = backlog(&tx, now)?;
    let applied = applied_in(&tx)?;
    tx.commit()?;
    Ok((backlog, applied))
}
