//! Group commit on PostgreSQL: a few writer tasks take every append waiting in the queue and
//! store the batch with one statement (deliveries and payloads together), then answer each
//! request after PostgreSQL's commit. Keys are sorted so that two batches (from two instances)
//! that share keys lock them in the same order and never deadlock. Each stored delivery's
//! `delivery.received` change is inserted by the same statement.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot, Mutex, Notify};

use super::{pg_text, storage_error};
use crate::journal::{body_fingerprint, Appended, DeliveryId, JournalError, NewDelivery};
use crate::telemetry::LogLimiter;

pub(super) struct AppendRequest {
    pub delivery: NewDelivery,
    pub reply: oneshot::Sender<Result<Appended, JournalError>>,
}

/// One writer: runs until the queue is closed and drained.
pub(super) async fn run(
    pool: Pool,
    queue: Arc<Mutex<mpsc::Receiver<AppendRequest>>>,
    max_batch: usize,
    appended: Arc<Notify>,
    feed_written: Arc<Notify>,
) {
    loop {
        let batch = {
            let mut queue = queue.lock().await;
            let Some(first) = queue.recv().await else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < max_batch {
                match queue.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            batch
        };
        let deliveries: Vec<&NewDelivery> = batch.iter().map(|request| &request.delivery).collect();
        match store(&pool, &deliveries).await {
            Ok(outcomes) => {
                let stored_any = outcomes
                    .iter()
                    .any(|outcome| matches!(outcome, Appended::Stored(_)));
                for (request, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = request.reply.send(Ok(outcome));
                }
                if stored_any {
                    appended.notify_one();
                    feed_written.notify_one();
                }
            }
            Err(error) => {
                // Every waiting request fails with it while PostgreSQL is away: once a second.
                static LIMITER: LogLimiter = LogLimiter::new();
                if let Some(suppressed) = LIMITER.allow() {
                    tracing::error!(%error, batch = batch.len(), suppressed, "PostgreSQL append failed");
                }
                for request in batch {
                    let _ = request.reply.send(Err(error.clone()));
                }
            }
        }
    }
}

const INSERT_BATCH: &str = "\
WITH input AS (
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                         $6::text[], $7::text[], $8::timestamptz[], $9::int4[], $10::text[],
                         $11::bytea[], $12::int8[])
        WITH ORDINALITY AS t(source, event_id, event_type, dedup_key, received_at, status,
                             last_error, next_attempt_at, body_bytes, headers, body, body_hash,
                             ord)
), stored AS (
    INSERT INTO deliveries (source, event_id, event_type, dedup_key, received_at, status,
                            last_error, next_attempt_at, body_bytes, body_hash)
    SELECT source, event_id, event_type, dedup_key, received_at, status, last_error,
           next_attempt_at, body_bytes, body_hash
    FROM input ORDER BY ord
    ON CONFLICT (source, dedup_key) DO NOTHING
    RETURNING id, source, dedup_key
), payloads AS (
    INSERT INTO delivery_payloads (delivery_id, headers, body)
    SELECT stored.id, input.headers::jsonb, input.body
    FROM stored JOIN input USING (source, dedup_key)
), feed AS (
    INSERT INTO change_feed (at, kind, source, delivery_id, event_type, data)
    SELECT input.received_at, 'delivery.received', stored.source, stored.id, input.event_type,
           json_build_object('status', input.status, 'attempts', 0,
                             'error', input.last_error)::text
    FROM stored JOIN input USING (source, dedup_key) ORDER BY stored.id
)
SELECT id, source, dedup_key FROM stored";

const EXISTING: &str = "\
SELECT d.id, d.source, d.dedup_key, d.body_hash FROM deliveries d
JOIN UNNEST($1::text[], $2::text[]) AS k(source, dedup_key)
  ON d.source = k.source AND d.dedup_key = k.dedup_key";

const CONFLICTS: &str = "\
INSERT INTO delivery_conflicts (delivery_id, received_at, headers, body, body_hash)
SELECT delivery_id, received_at, headers::jsonb, body, body_hash
FROM UNNEST($1::int8[], $2::timestamptz[], $3::text[], $4::bytea[], $5::int8[])
    AS c(delivery_id, received_at, headers, body, body_hash)";

/// Stores a batch in one transaction; answers each delivery in the batch's order. A duplicate
/// whose body differs from the stored one is answered as a duplicate and kept as a conflict.
async fn store(pool: &Pool, batch: &[&NewDelivery]) -> Result<Vec<Appended>, JournalError> {
    // The first of several identical keys in one batch is the one stored.
    let mut first_of: HashMap<(&str, &str), usize> = HashMap::new();
    let mut unique: Vec<usize> = Vec::new();
    for (at, delivery) in batch.iter().enumerate() {
        let key = (delivery.source.as_str(), delivery.dedup_key.as_str());
        if let std::collections::hash_map::Entry::Vacant(entry) = first_of.entry(key) {
            entry.insert(at);
            unique.push(at);
        }
    }
    unique.sort_by_key(|&at| (&batch[at].source, &batch[at].dedup_key));
    let rows: Vec<&NewDelivery> = unique.iter().map(|&at| batch[at]).collect();

    let mut client = pool.get().await.map_err(storage_error)?;
    let tx = client.transaction().await.map_err(storage_error)?;
    let insert = tx
        .prepare_cached(INSERT_BATCH)
        .await
        .map_err(storage_error)?;
    let sources: Vec<&str> = rows.iter().map(|d| d.source.as_str()).collect();
    let event_ids: Vec<Option<Cow<str>>> = rows
        .iter()
        .map(|d| d.event_id.as_deref().map(pg_text))
        .collect();
    let event_types: Vec<Cow<str>> = rows.iter().map(|d| pg_text(&d.event_type)).collect();
    let keys: Vec<Cow<str>> = rows.iter().map(|d| pg_text(&d.dedup_key)).collect();
    let received: Vec<DateTime<Utc>> = rows.iter().map(|d| d.received_at.to_datetime()).collect();
    let statuses: Vec<&str> = rows.iter().map(|d| d.status.as_str()).collect();
    let errors: Vec<Option<Cow<str>>> = rows
        .iter()
        .map(|d| d.last_error.as_deref().map(pg_text))
        .collect();
    let next: Vec<Option<DateTime<Utc>>> = rows
        .iter()
        .map(|d| d.status.is_waiting().then(|| d.received_at.to_datetime()))
        .collect();
    let sizes: Vec<i32> = rows
        .iter()
        .map(|d| i32::try_from(d.body.len()).unwrap_or(i32::MAX))
        .collect();
    let headers: Vec<&str> = rows.iter().map(|d| d.headers_json.as_str()).collect();
    let bodies: Vec<&[u8]> = rows.iter().map(|d| &d.body[..]).collect();
    let fingerprints: Vec<i64> = rows.iter().map(|d| body_fingerprint(&d.body)).collect();
    let stored = tx
        .query(
            &insert,
            &[
                &sources,
                &event_ids,
                &event_types,
                &keys,
                &received,
                &statuses,
                &errors,
                &next,
                &sizes,
                &headers,
                &bodies,
                &fingerprints,
            ],
        )
        .await
        .map_err(storage_error)?;
    // Per key: the outcome and the stored body's fingerprint (None: stored before fingerprints).
    let mut ids: HashMap<(String, String), (Appended, Option<i64>)> =
        HashMap::with_capacity(batch.len());
    // Each stored row's fingerprint, as computed for the insert.
    let fingerprint_of: HashMap<(&str, &str), i64> = sources
        .iter()
        .zip(&keys)
        .zip(&fingerprints)
        .map(|((source, key), fingerprint)| ((*source, key.as_ref()), *fingerprint))
        .collect();
    for row in &stored {
        let key: (String, String) = (row.get(1), row.get(2));
        let fingerprint = fingerprint_of
            .get(&(key.0.as_str(), key.1.as_str()))
            .copied();
        ids.insert(key, (Appended::Stored(DeliveryId(row.get(0))), fingerprint));
    }
    if stored.len() < rows.len() {
        let existing = tx
            .query(EXISTING, &[&sources, &keys])
            .await
            .map_err(storage_error)?;
        for row in &existing {
            ids.entry((row.get(1), row.get(2)))
                .or_insert((Appended::Duplicate(DeliveryId(row.get(0))), row.get(3)));
        }
    }
    record_conflicts(&tx, batch, &ids).await?;
    tx.commit().await.map_err(storage_error)?;

    batch
        .iter()
        .enumerate()
        .map(|(at, delivery)| {
            let key = (
                delivery.source.clone(),
                pg_text(&delivery.dedup_key).into_owned(),
            );
            let outcome = ids.get(&key).map(|(outcome, _)| *outcome).ok_or_else(|| {
                JournalError::Config(format!(
                    "append of {}/{} returned no row",
                    delivery.source, delivery.dedup_key
                ))
            })?;
            let first = first_of[&(delivery.source.as_str(), delivery.dedup_key.as_str())];
            Ok(if first == at {
                outcome
            } else {
                Appended::Duplicate(outcome.id())
            })
        })
        .collect()
}

/// Keeps every duplicate in the batch whose body differs from the stored delivery's.
async fn record_conflicts(
    tx: &deadpool_postgres::Transaction<'_>,
    batch: &[&NewDelivery],
    outcomes: &HashMap<(String, String), (Appended, Option<i64>)>,
) -> Result<(), JournalError> {
    let mut delivery_ids = Vec::new();
    let mut received = Vec::new();
    let mut headers = Vec::new();
    let mut bodies: Vec<&[u8]> = Vec::new();
    let mut fingerprints = Vec::new();
    let mut seen_stored = std::collections::HashSet::new();
    for delivery in batch {
        let key = (
            delivery.source.clone(),
            pg_text(&delivery.dedup_key).into_owned(),
        );
        let Some(&(outcome, stored_fingerprint)) = outcomes.get(&key) else {
            continue;
        };
        // The first copy of a key that this batch stored is the delivery itself.
        if matches!(outcome, Appended::Stored(_)) && seen_stored.insert(key) {
            continue;
        }
        let fingerprint = body_fingerprint(&delivery.body);
        if stored_fingerprint.is_some_and(|stored| stored != fingerprint) {
            delivery_ids.push(outcome.id().0);
            received.push(delivery.received_at.to_datetime());
            headers.push(delivery.headers_json.as_str());
            bodies.push(&delivery.body[..]);
            fingerprints.push(fingerprint);
        }
    }
    if delivery_ids.is_empty() {
        return Ok(());
    }
    tx.execute(
        CONFLICTS,
        &[&delivery_ids, &received, &headers, &bodies, &fingerprints],
    )
    .await
    .map_err(storage_error)?;
    Ok(())
}
