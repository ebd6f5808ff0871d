//! The change feed in PostgreSQL. Rows are inserted unnumbered in the transaction of their
//! effect; [`sequence`] numbers committed rows under the row lock of `change_feed_head`, held
//! until its commit, so numbers become visible in increasing order even though transactions of
//! several instances commit in any order. The sequencing transaction sends `NOTIFY wharf_feed`
//! with the new head, so every instance's stream learns of it and reads the rows itself.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{GenericClient, Transaction};
use futures_util::StreamExt as _;
use tokio::sync::Notify;
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;

use super::{datetime, storage_error, timestamp};
use crate::clock::Timestamp;
use crate::journal::feed::{Change, FeedBounds, FeedRetention, LedgerWritten};
use crate::journal::{DeliveryId, JournalError};

/// The channel every instance listens on; the payload is the new head.
pub(super) const CHANNEL: &str = "wharf_feed";
/// Most rows numbered by one sequencing transaction.
const SEQUENCE_BATCH: i64 = 10_000;

/// A step of a delivery already in `deliveries` (its source and type are read from there).
pub(super) async fn record_step(
    tx: &Transaction<'_>,
    at: Timestamp,
    kind: &str,
    delivery: DeliveryId,
    data: &str,
) -> Result<(), JournalError> {
    let statement = tx
        .prepare_cached(
            "INSERT INTO change_feed (at, kind, source, delivery_id, event_type, data) \
             SELECT $1, $2, source, id, event_type, $4 FROM deliveries WHERE id = $3",
        )
        .await
        .map_err(storage_error)?;
    tx.execute(&statement, &[&datetime(at), &kind, &delivery.0, &data])
        .await
        .map_err(storage_error)?;
    Ok(())
}

/// A ledger row written while completing `delivery`.
pub(super) async fn record_ledger(
    tx: &Transaction<'_>,
    at: Timestamp,
    source: &str,
    delivery: DeliveryId,
    written: &LedgerWritten,
) -> Result<(), tokio_postgres::Error> {
    let statement = tx
        .prepare_cached(
            "INSERT INTO change_feed (at, kind, source, delivery_id, event_type, ledger_table, \
             ledger_key, data) \
             SELECT $1, $2, $3, id, event_type, $5, $6, $7 FROM deliveries WHERE id = $4",
        )
        .await?;
    tx.execute(
        &statement,
        &[
            &datetime(at),
            &written.kind,
            &source,
            &delivery.0,
            &written.table,
            &super::pg_text(&written.key),
            &super::pg_text(&written.row),
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn changes_after(
    client: &impl GenericClient,
    after: u64,
    limit: usize,
) -> Result<Vec<Change>, JournalError> {
    let rows = client
        .query(
            "SELECT seq, at, kind, source, delivery_id, event_type, ledger_table, ledger_key, \
             data FROM change_feed WHERE seq > $1 ORDER BY seq LIMIT $2",
            &[&(after as i64), &(limit as i64)],
        )
        .await
        .map_err(storage_error)?;
    rows.iter()
        .map(|row| {
            Ok(Change::from_row(
                row.try_get(0)?,
                timestamp(row.try_get(1)?),
                row.try_get(2)?,
                row.try_get(3)?,
                row.try_get(4)?,
                row.try_get(5)?,
                row.try_get(6)?,
                row.try_get(7)?,
                row.try_get(8)?,
            ))
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(storage_error)
}

pub(super) async fn bounds(client: &impl GenericClient) -> Result<FeedBounds, JournalError> {
    let row = client
        .query_one(
            "SELECT (SELECT MIN(seq) FROM change_feed), (SELECT seq FROM change_feed_head)",
            &[],
        )
        .await
        .map_err(storage_error)?;
    let oldest: Option<i64> = row.try_get(0).map_err(storage_error)?;
    let head: i64 = row.try_get(1).map_err(storage_error)?;
    Ok(FeedBounds {
        oldest: oldest.map(|seq| seq.max(0) as u64),
        head: head.max(0) as u64,
    })
}

/// Numbers committed rows that have no `seq` yet, in insertion order, and notifies every
/// instance. Returns the new head when anything was numbered.
pub(super) async fn sequence(
    client: &mut deadpool_postgres::Object,
) -> Result<Option<u64>, JournalError> {
    let tx = client.transaction().await.map_err(storage_error)?;
    // Held until commit: the next sequencer starts after these numbers are visible.
    let head: i64 = tx
        .query_one("SELECT seq FROM change_feed_head FOR UPDATE", &[])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(storage_error)?;
    let numbered = tx
        .query_one(
            "WITH pending AS ( \
                 SELECT id, row_number() OVER (ORDER BY id) AS n FROM change_feed \
                 WHERE seq IS NULL ORDER BY id LIMIT $2), \
             numbered AS ( \
                 UPDATE change_feed SET seq = $1 + pending.n FROM pending \
                 WHERE change_feed.id = pending.id RETURNING change_feed.seq) \
             SELECT MAX(seq) FROM numbered",
            &[&head, &SEQUENCE_BATCH],
        )
        .await
        .and_then(|row| row.try_get::<_, Option<i64>>(0))
        .map_err(storage_error)?;
    let Some(new_head) = numbered else {
        tx.rollback().await.map_err(storage_error)?;
        return Ok(None);
    };
    tx.execute("UPDATE change_feed_head SET seq = $1", &[&new_head])
        .await
        .map_err(storage_error)?;
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[&CHANNEL, &new_head.to_string()],
    )
    .await
    .map_err(storage_error)?;
    tx.commit().await.map_err(storage_error)?;
    Ok(Some(new_head.max(0) as u64))
}

/// Deletes numbered rows beyond the retention; returns how many went.
pub(super) async fn prune(
    client: &impl GenericClient,
    retention: FeedRetention,
    now: Timestamp,
) -> Result<u64, JournalError> {
    let cutoff = Timestamp(now.micros() - retention.max_age.as_micros() as i64);
    let deleted = client
        .execute(
            "DELETE FROM change_feed WHERE seq IS NOT NULL AND \
             (seq <= (SELECT seq FROM change_feed_head) - $1 OR at < $2)",
            &[&(retention.max_rows as i64), &datetime(cutoff)],
        )
        .await
        .map_err(storage_error)?;
    Ok(deleted)
}

/// Listens on [`CHANNEL`] over a connection of its own (reconnecting after a failure) and
/// tells `heard` of every notification, until `stop`.
pub(super) async fn listen(
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    heard: Arc<Notify>,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        if let Err(error) = listen_once(&config, tls.clone(), &heard, &stop).await {
            tracing::warn!(%error, "listening for change-feed notifications failed; reconnecting");
        }
        // Whatever was notified while disconnected is read on the next wake.
        heard.notify_one();
        tokio::select! {
            () = stop.cancelled() => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn listen_once(
    config: &tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    heard: &Notify,
    stop: &CancellationToken,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(tls).await?;
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    let statement = format!("LISTEN {CHANNEL}");
    let listen = client.batch_execute(&statement);
    tokio::pin!(listen);
    // The connection must be polled for the LISTEN itself to complete.
    loop {
        tokio::select! {
            done = &mut listen => { done?; break; }
            message = messages.next() => match message {
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(error),
                None => return Ok(()),
            },
        }
    }
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            message = messages.next() => match message {
                Some(Ok(AsyncMessage::Notification(_))) => heard.notify_one(),
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(error),
                None => return Ok(()),
            },
        }
    }
}
