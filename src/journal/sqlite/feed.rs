//! The change feed in SQLite: rows are written by the one writer thread inside the
//! transaction of the effect (projection, completion, replay), so `seq` (AUTOINCREMENT) is
//! assigned in commit order; readers page through it by `seq`. Pruning runs on the writer too.

use rusqlite::{params, Connection, OptionalExtension};

use crate::clock::Timestamp;
use crate::journal::feed::{Change, FeedBounds, FeedRetention, LedgerWritten};
use crate::journal::{DeliveryId, NewDelivery};

/// The `delivery.received` row of a delivery the projection just inserted.
pub(super) fn record_received(
    conn: &Connection,
    id: i64,
    delivery: &NewDelivery,
) -> rusqlite::Result<()> {
    let data =
        crate::journal::feed::delivery_data(delivery.status, 0, delivery.last_error.as_deref());
    conn.prepare_cached(
        "INSERT INTO change_feed (at, kind, source, delivery_id, event_type, data) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        delivery.received_at.micros(),
        crate::journal::feed::DELIVERY_RECEIVED,
        delivery.source,
        id,
        delivery.event_type,
        data,
    ])?;
    Ok(())
}

/// A delivery's source and type as its `deliveries` row holds them, when the writer has them
/// at hand (the projection has just inserted the row): the feed's row need not read them back.
#[derive(Debug, Clone, Copy)]
pub(super) struct Known<'a> {
    pub source: &'a str,
    pub event_type: &'a str,
}

/// A step of a delivery already in `deliveries` (its source and type are read from there
/// unless `known`).
pub(super) fn record_step(
    conn: &Connection,
    at: Timestamp,
    kind: &str,
    delivery: DeliveryId,
    known: Option<Known<'_>>,
    data: &str,
) -> rusqlite::Result<()> {
    match known {
        Some(known) => conn
            .prepare_cached(
                "INSERT INTO change_feed (at, kind, source, delivery_id, event_type, data) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                at.micros(),
                kind,
                known.source,
                delivery.0,
                known.event_type,
                data
            ])?,
        None => conn
            .prepare_cached(
                "INSERT INTO change_feed (at, kind, source, delivery_id, event_type, data) \
                 SELECT ?1, ?2, source, id, event_type, ?4 FROM deliveries WHERE id = ?3",
            )?
            .execute(params![at.micros(), kind, delivery.0, data])?,
    };
    Ok(())
}

/// A ledger row written while completing `delivery` (its type is read from `deliveries`
/// unless given).
pub(super) fn record_ledger(
    conn: &Connection,
    at: Timestamp,
    source: &str,
    delivery: DeliveryId,
    event_type: Option<&str>,
    written: &LedgerWritten,
) -> rusqlite::Result<()> {
    match event_type {
        Some(event_type) => conn
            .prepare_cached(
                "INSERT INTO change_feed (at, kind, source, delivery_id, event_type, \
                 ledger_table, ledger_key, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                at.micros(),
                written.kind,
                source,
                delivery.0,
                event_type,
                written.table,
                written.key,
                written.row,
            ])?,
        None => conn
            .prepare_cached(
                "INSERT INTO change_feed (at, kind, source, delivery_id, event_type, \
                 ledger_table, ledger_key, data) \
                 SELECT ?1, ?2, ?3, id, event_type, ?5, ?6, ?7 FROM deliveries WHERE id = ?4",
            )?
            .execute(params![
                at.micros(),
                written.kind,
                source,
                delivery.0,
                written.table,
                written.key,
                written.row,
            ])?,
    };
    Ok(())
}

pub(super) fn changes_after(
    conn: &Connection,
    after: u64,
    limit: usize,
) -> rusqlite::Result<Vec<Change>> {
    let mut statement = conn.prepare_cached(
        "SELECT seq, at, kind, source, delivery_id, event_type, ledger_table, ledger_key, data \
         FROM change_feed WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = statement.query_map(params![after as i64, limit as i64], |row| {
        Ok(Change::from_row(
            row.get(0)?,
            Timestamp(row.get(1)?),
            row.get(2)?,
            row.get(3)?,
            row.get(4)?,
            row.get(5)?,
            row.get(6)?,
            row.get(7)?,
            row.get(8)?,
        ))
    })?;
    rows.collect()
}

pub(super) fn bounds(conn: &Connection) -> rusqlite::Result<FeedBounds> {
    let oldest: Option<i64> =
        conn.query_row("SELECT MIN(seq) FROM change_feed", [], |row| row.get(0))?;
    // AUTOINCREMENT's counter is the head even when every row was pruned.
    let head: Option<i64> = conn
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'change_feed'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    Ok(FeedBounds {
        oldest: oldest.map(|seq| seq.max(0) as u64),
        head: head.unwrap_or(0).max(0) as u64,
    })
}

/// Deletes the rows beyond the retention, oldest first, at most `chunk` of them (a delete of
/// a burst's worth of rows holds the writer for most of a second); returns how many went.
pub(super) fn prune(
    conn: &Connection,
    retention: FeedRetention,
    now: Timestamp,
    chunk: u64,
) -> rusqlite::Result<u64> {
    let cutoff = now.micros() - retention.max_age.as_micros() as i64;
    // `at` follows `seq` closely, so the first row young enough is found near the start.
    let first_young: Option<i64> = conn
        .prepare_cached("SELECT seq FROM change_feed WHERE at >= ?1 ORDER BY seq LIMIT 1")?
        .query_row([cutoff], |row| row.get(0))
        .optional()?;
    let FeedBounds { oldest, head } = bounds(conn)?;
    let head = head as i64;
    let by_count = head - retention.max_rows as i64;
    let by_age = first_young.map_or(head, |seq| seq - 1);
    let by_chunk = i64::try_from(chunk)
        .unwrap_or(i64::MAX)
        .saturating_add(oldest.unwrap_or(0) as i64)
        .saturating_sub(1);
    let through = by_count.max(by_age).min(by_chunk);
    if through <= 0 {
        return Ok(0);
    }
    let deleted = conn
        .prepare_cached("DELETE FROM change_feed WHERE seq <= ?1")?
        .execute([through])?;
    Ok(deleted as u64)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn feed_with(rows: &[(i64, &str)]) -> Connection {
        let conn = Connection::open_in_memory().expect("in-memory SQLite");
        conn.execute_batch(include_str!(
            "../../../migrations/sqlite/V9__change_feed.sql"
        ))
        .expect("the feed's migration");
        for (at, kind) in rows {
            conn.execute(
                "INSERT INTO change_feed (at, kind, source) VALUES (?1, ?2, 'cartpanda')",
                params![at, kind],
            )
            .expect("insert");
        }
        conn
    }

    const SECOND: i64 = 1_000_000;

    #[test]
    fn pruning_goes_a_chunk_at_a_time_oldest_first() {
        let conn = feed_with(&[
            (SECOND, "a"),
            (2 * SECOND, "b"),
            (3 * SECOND, "c"),
            (4 * SECOND, "d"),
            (5 * SECOND, "e"),
        ]);
        let keep_one = FeedRetention {
            max_rows: 1,
            max_age: Duration::from_secs(3600),
        };
        let now = Timestamp(6 * SECOND);
        assert_eq!(prune(&conn, keep_one, now, 3).expect("prune"), 3);
        assert_eq!(bounds(&conn).expect("bounds").oldest, Some(4));
        assert_eq!(prune(&conn, keep_one, now, 3).expect("prune"), 1);
        assert_eq!(prune(&conn, keep_one, now, 3).expect("prune"), 0);
        assert_eq!(bounds(&conn).expect("bounds").oldest, Some(5));
    }

    #[test]
    fn pruning_keeps_the_newest_rows_and_the_head_never_goes_back() {
        let conn = feed_with(&[
            (SECOND, "a"),
            (2 * SECOND, "b"),
            (3 * SECOND, "c"),
            (4 * SECOND, "d"),
        ]);
        let retention = FeedRetention {
            max_rows: 2,
            max_age: Duration::from_secs(3600),
        };
        assert_eq!(
            prune(&conn, retention, Timestamp(5 * SECOND), u64::MAX).expect("prune"),
            2
        );
        assert_eq!(
            bounds(&conn).expect("bounds"),
            FeedBounds {
                oldest: Some(3),
                head: 4
            }
        );
        let kept: Vec<String> = changes_after(&conn, 0, 10)
            .expect("read")
            .into_iter()
            .map(|change| change.kind)
            .collect();
        assert_eq!(kept, ["c", "d"]);
        // Older than max_age goes too, even under max_rows; the counter keeps its place.
        let old = FeedRetention {
            max_rows: 100,
            max_age: Duration::from_secs(1),
        };
        assert_eq!(
            prune(&conn, old, Timestamp(100 * SECOND), u64::MAX).expect("prune"),
            2
        );
        assert_eq!(
            bounds(&conn).expect("bounds"),
            FeedBounds {
                oldest: None,
                head: 4
            }
        );
        conn.execute(
            "INSERT INTO change_feed (at, kind, source) VALUES (1, 'e', 'x')",
            [],
        )
        .expect("insert");
        assert_eq!(changes_after(&conn, 4, 10).expect("read")[0].seq, 5);
    }
}
