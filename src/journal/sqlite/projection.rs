//! Fills SQLite from the delivery log: each synced record becomes its `deliveries` and
//! `delivery_payloads` rows (or a `delivery_conflicts` row), and the highest sequence number
//! applied is recorded in the same transaction, so recovery replays exactly what is missing.
//! `UNIQUE (source, dedup_key)` is the final guard against a duplicate the in-memory window
//! no longer remembered: it changes nothing, and a different body is kept as a conflict.
//!
//! With a [`FirstAttempt`] installed, a new delivery's first attempt is made here too: its
//! ledger effects, status and attempt row join the same transaction, so one commit does what a
//! projection, a claim and a completion did, and a crash rolls all of it back together.
//!
//! Each new delivery's `delivery.received` change is written in the same transaction.

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use thiserror::Error;

use super::writer::{finish, Marked};
use crate::clock::Timestamp;
use crate::journal::segment_log::record::{body_fingerprint, Conflict, LogRecord};
use crate::journal::segment_log::LogReader;
use crate::journal::{
    ClaimToken, ClaimedDelivery, Completion, DeliveryId, DeliveryStatus, FirstAttempt, NewDelivery,
};

/// Most records per projection transaction: large batches cost a fraction of small ones.
pub(super) const BATCH: usize = 2048;

#[derive(Debug, Error)]
pub(super) enum ProjectError {
    #[error("reading the delivery log: {0}")]
    Log(#[from] std::io::Error),
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
}

/// The last sequence number SQLite holds (0 for a new database). A database written before
/// the log existed counts its deliveries as applied.
pub(super) fn applied_seq(conn: &Connection) -> rusqlite::Result<u64> {
    let recorded: Option<String> = conn
        .query_row(
            "SELECT value FROM wharf_meta WHERE key = 'applied_seq'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    match recorded.and_then(|value| value.parse().ok()) {
        Some(seq) => Ok(seq),
        None => max_delivery_id(conn),
    }
}

pub(super) fn max_delivery_id(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("SELECT COALESCE(MAX(id), 0) FROM deliveries", [], |row| {
        row.get::<_, i64>(0)
    })
    .map(|id| id.max(0) as u64)
}

/// What one projection transaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Projected {
    /// The last sequence number applied.
    pub last: u64,
    /// Whether it left work for the processor: a new delivery without a first attempt, or one
    /// whose first attempt scheduled a retry. Only then is the processor woken, because
    /// each of its claims makes the writer project at once, cutting short the wait for a
    /// larger batch (small transactions rewrite every B-tree page they touch into the WAL).
    pub left_for_processor: bool,
}

/// Projects up to one batch of records synced through `through`, making the first attempt
/// at each new delivery when `first` is given; `None` when there was nothing to do. On an
/// error the reader is behind nothing: the caller restarts it from what SQLite holds.
pub(super) fn project_batch(
    conn: &mut Connection,
    reader: &mut LogReader,
    through: u64,
    limit: usize,
    first: Option<&dyn FirstAttempt>,
) -> Result<Option<Projected>, ProjectError> {
    let records = reader.read(through, limit.clamp(1, BATCH))?;
    let Some(&(last, _)) = records.last() else {
        return Ok(None);
    };
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let claim = ClaimToken::random();
    let mut attempted = Vec::new();
    let mut left_for_processor = false;
    for (seq, record) in records {
        match record {
            LogRecord::Delivery(delivery) => {
                let id = DeliveryId(seq as i64);
                let first_attempt = first
                    .filter(|_| delivery.status == DeliveryStatus::Pending)
                    .map(|first| (first, claimed(id, claim, delivery.clone())))
                    .and_then(|(first, claimed)| Some((first.attempt(&claimed)?, claimed)));
                let Some((completion, claimed)) = first_attempt else {
                    left_for_processor |=
                        project_delivery(&tx, id, &delivery, None)? && delivery.status.is_waiting();
                    continue;
                };
                let marked = Marked::of(&completion);
                if project_delivery(&tx, id, &delivery, Some((&completion, &marked)))? {
                    left_for_processor |= marked.status.is_waiting();
                    let result = finish(&tx, &completion, &marked, Some(&delivery.event_type))?;
                    attempted.push((claimed, completion, result));
                }
            }
            LogRecord::Conflict(conflict) => project_conflict(&tx, &conflict)?,
        }
    }
    tx.prepare_cached(
        "INSERT INTO wharf_meta (key, value) VALUES ('applied_seq', ?1) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute([last.to_string()])?;
    tx.commit()?;
    if let Some(first) = first {
        for (claimed, completion, result) in &attempted {
            first.completed(claimed, completion, result);
        }
    }
    Ok(Some(Projected {
        last,
        left_for_processor,
    }))
}

/// A new delivery as the processor would have claimed it: never attempted, under `claim`.
fn claimed(id: DeliveryId, claim: ClaimToken, delivery: NewDelivery) -> ClaimedDelivery {
    ClaimedDelivery {
        id,
        claim,
        source: delivery.source,
        event_id: delivery.event_id,
        event_type: delivery.event_type,
        dedup_key: delivery.dedup_key,
        received_at: delivery.received_at,
        headers_json: delivery.headers_json,
        body: delivery.body,
        attempts: 0,
        verifying: false,
    }
}

/// Inserts a delivery's rows; true if it is new. With a first attempt made in the same
/// transaction, the row is inserted as that attempt's mark leaves it (status, attempt count,
/// error, times), so it is written once instead of inserted and then updated by the claim's
/// [`mark`](super::writer).
fn project_delivery(
    conn: &Connection,
    id: DeliveryId,
    delivery: &NewDelivery,
    attempted: Option<(&Completion, &Marked<'_>)>,
) -> rusqlite::Result<bool> {
    let (status, attempts, last_error, next_attempt_at, processed_at) = match attempted {
        Some((completion, marked)) => (
            marked.status,
            completion.claimed_attempts + 1,
            marked.error,
            marked.next_attempt_at.map(Timestamp::micros),
            marked.processed_at(completion),
        ),
        None => (
            delivery.status,
            0,
            delivery.last_error.as_deref(),
            delivery
                .status
                .is_waiting()
                .then_some(delivery.received_at.micros()),
            None,
        ),
    };
    let fingerprint = body_fingerprint(&delivery.body);
    let inserted = conn
        .prepare_cached(
            "INSERT INTO deliveries (id, source, event_id, event_type, dedup_key, received_at, \
             status, attempts, last_error, next_attempt_at, processed_at, body_bytes, body_hash) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            id.0,
            delivery.source,
            delivery.event_id,
            delivery.event_type,
            delivery.dedup_key,
            delivery.received_at.micros(),
            status.as_str(),
            attempts,
            last_error,
            next_attempt_at,
            processed_at,
            delivery.body.len() as i64,
            fingerprint,
        ])?;
    if inserted == 1 {
        conn.prepare_cached(
            "INSERT INTO delivery_payloads (delivery_id, headers, body) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![id.0, delivery.headers_json, &delivery.body[..]])?;
        super::feed::record_received(conn, id.0, delivery)?;
        return Ok(true);
    }
    // Already here: a replay of this very record, or the same key stored long ago.
    let existing: Option<(i64, Option<i64>)> = conn
        .prepare_cached(
            "SELECT id, body_hash FROM deliveries WHERE source = ?1 AND dedup_key = ?2",
        )?
        .query_row(params![delivery.source, delivery.dedup_key], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()?;
    match existing {
        Some((stored, Some(hash))) if stored != id.0 && hash != fingerprint => project_conflict(
            conn,
            &Conflict {
                delivery_id: stored,
                received_at: delivery.received_at,
                headers_json: delivery.headers_json.clone(),
                body: delivery.body.clone(),
            },
        )
        .map(|()| false),
        _ => Ok(false),
    }
}

fn project_conflict(conn: &Connection, conflict: &Conflict) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO delivery_conflicts (delivery_id, received_at, headers, body, body_hash) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        conflict.delivery_id,
        conflict.received_at.micros(),
        conflict.headers_json,
        &conflict.body[..],
        body_fingerprint(&conflict.body),
    ])?;
    Ok(())
}
