//! The operator's queries on SQLite ([`crate::journal::query`]): ledger pages, window
//! statistics, revenue. Table and column names come only from the ledger's table descriptions;
//! every value is a bound parameter.

use std::collections::BTreeMap;

use rusqlite::types::Value;
use rusqlite::{params, Connection};

use super::ledger::{read_row_from, to_value};
use crate::clock::Timestamp;
use crate::journal::query::{
    nearest_rank, sql_list, EventTypeCount, LedgerQuery, MinuteCount, RevenueDay, SourceWindow,
    WindowStats, PAYMENT_REVENUE_STATUSES, SALE_REVENUE_STATUSES,
};
use crate::journal::tokens::StoredToken;
use crate::ledger::{Cell, ColumnType};

/// One page of a ledger table, sorted by its key, after the cursor.
pub(super) fn ledger_rows(
    conn: &Connection,
    query: &LedgerQuery,
) -> rusqlite::Result<Vec<Vec<Cell>>> {
    let table = query.table;
    let mut conditions = Vec::new();
    let mut values: Vec<Value> = Vec::new();
    for (column, cell) in &query.equals {
        values.push(to_value(cell));
        conditions.push(format!("{column} = ?{}", values.len()));
    }
    if let Some(text) = &query.text {
        values.push(Value::Text(text.to_lowercase()));
        let at = values.len();
        let searched: Vec<String> = table
            .columns
            .iter()
            .filter(|column| matches!(column.ty, ColumnType::Text | ColumnType::Json))
            .map(|column| format!("instr(lower({}), ?{at}) > 0", column.name))
            .collect();
        if !searched.is_empty() {
            conditions.push(format!("({})", searched.join(" OR ")));
        }
    }
    if let Some(after) = &query.after {
        let first = values.len() + 1;
        values.extend(after.iter().map(to_value));
        let placeholders: Vec<String> = (first..first + after.len())
            .map(|n| format!("?{n}"))
            .collect();
        conditions.push(format!(
            "({}) > ({})",
            table.key.join(", "),
            placeholders.join(", ")
        ));
    }
    values.push(Value::Integer(i64::from(query.page_size())));
    let columns: Vec<&str> = table.columns.iter().map(|column| column.name).collect();
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    let sql = format!(
        "SELECT {} FROM {}{filter} ORDER BY {} LIMIT ?{}",
        columns.join(", "),
        table.name,
        table.key.join(", "),
        values.len()
    );
    let mut statement = conn.prepare_cached(&sql)?;
    let rows = statement.query_map(rusqlite::params_from_iter(values), |row| {
        read_row_from(table, row, 0)
    })?;
    rows.collect()
}

/// Counts, processing times, event types and deliveries per minute since `since`.
pub(super) fn window_stats(conn: &Connection, since: Timestamp) -> rusqlite::Result<WindowStats> {
    let mut sources = source_counts(conn, since)?;
    for window in sources.values_mut() {
        attempt_percentiles(conn, since, window)?;
    }
    Ok(WindowStats {
        sources: sources.into_values().collect(),
        event_types: event_types(conn, since)?,
        per_minute: per_minute(conn, since)?,
    })
}

pub(super) fn source_counts(
    conn: &Connection,
    since: Timestamp,
) -> rusqlite::Result<BTreeMap<String, SourceWindow>> {
    let mut statement = conn.prepare_cached(
        "SELECT source, status, COUNT(*) FROM deliveries WHERE received_at >= ?1 \
         GROUP BY source, status",
    )?;
    let rows = statement.query_map([since.micros()], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, u64>(2)?,
        ))
    })?;
    let mut sources: BTreeMap<String, SourceWindow> = BTreeMap::new();
    for row in rows {
        let (source, status, count) = row?;
        let window = sources
            .entry(source.clone())
            .or_insert_with(|| SourceWindow {
                source,
                ..SourceWindow::default()
            });
        window.add(&status, count);
    }
    Ok(sources)
}

fn attempt_percentiles(
    conn: &Connection,
    since: Timestamp,
    window: &mut SourceWindow,
) -> rusqlite::Result<()> {
    const FROM: &str = "FROM attempts a JOIN deliveries d ON d.id = a.delivery_id \
                        WHERE d.source = ?1 AND a.started_at >= ?2";
    let attempts: u64 = conn
        .prepare_cached(&format!("SELECT COUNT(*) {FROM}"))?
        .query_row(params![window.source, since.micros()], |row| row.get(0))?;
    if attempts == 0 {
        return Ok(());
    }
    let at_rank = |percent| -> rusqlite::Result<Option<i64>> {
        let offset = nearest_rank(attempts, percent) as i64;
        conn.prepare_cached(&format!(
            "SELECT a.duration_us {FROM} ORDER BY a.duration_us LIMIT 1 OFFSET ?3"
        ))?
        .query_row(params![window.source, since.micros(), offset], |row| {
            row.get(0)
        })
        .map(Some)
    };
    window.p50_us = at_rank(50)?;
    window.p95_us = at_rank(95)?;
    window.p99_us = at_rank(99)?;
    Ok(())
}

fn event_types(conn: &Connection, since: Timestamp) -> rusqlite::Result<Vec<EventTypeCount>> {
    let mut statement = conn.prepare_cached(
        "SELECT source, event_type, COUNT(*) FROM deliveries WHERE received_at >= ?1 \
         GROUP BY source, event_type ORDER BY COUNT(*) DESC, source, event_type",
    )?;
    let rows = statement.query_map([since.micros()], |row| {
        Ok(EventTypeCount {
            source: row.get(0)?,
            event_type: row.get(1)?,
            count: row.get(2)?,
        })
    })?;
    rows.collect()
}

fn per_minute(conn: &Connection, since: Timestamp) -> rusqlite::Result<Vec<MinuteCount>> {
    let mut statement = conn.prepare_cached(
        "SELECT received_at / 60000000 AS minute, source, COUNT(*) FROM deliveries \
         WHERE received_at >= ?1 GROUP BY minute, source ORDER BY minute, source",
    )?;
    let rows = statement.query_map([since.micros()], |row| {
        Ok(MinuteCount {
            minute: Timestamp::from_unix_seconds(row.get::<_, i64>(0)? * 60),
            source: row.get(1)?,
            count: row.get(2)?,
        })
    })?;
    rows.collect()
}

/// Approved sales and taken payments created since `since`, per UTC day, source and currency.
/// Times in the SQLite ledger are RFC 3339 UTC text, so the day is its first ten characters.
pub(super) fn revenue(conn: &Connection, since: Timestamp) -> rusqlite::Result<Vec<RevenueDay>> {
    let sql = format!(
        "SELECT substr(created_at, 1, 10) AS day, source, COALESCE(currency, 'BRL'), \
                SUM(price_minor), COUNT(*) \
         FROM sales WHERE created_at >= ?1 AND status IN ({}) GROUP BY 1, 2, 3 \
         UNION ALL \
         SELECT substr(created_at, 1, 10) AS day, source, upper(currency), \
                SUM(amount_minor - COALESCE(amount_refunded_minor, 0)), COUNT(*) \
         FROM payments WHERE created_at >= ?1 AND payment_status IN ({}) \
               AND amount_minor IS NOT NULL AND currency IS NOT NULL GROUP BY 1, 2, 3 \
         ORDER BY 1, 2, 3",
        sql_list(&SALE_REVENUE_STATUSES),
        sql_list(&PAYMENT_REVENUE_STATUSES)
    );
    let mut statement = conn.prepare_cached(&sql)?;
    let rows = statement.query_map([since.to_rfc3339()], |row| {
        Ok(RevenueDay {
            day: row.get(0)?,
            source: row.get(1)?,
            currency: row.get(2)?,
            amount_minor: row.get(3)?,
            count: row.get(4)?,
        })
    })?;
    rows.collect()
}

/// Every stored admin token digest.
pub(super) fn admin_tokens(conn: &Connection) -> rusqlite::Result<Vec<StoredToken>> {
    let mut statement = conn
        .prepare_cached("SELECT digest, label, created_at FROM admin_tokens ORDER BY created_at")?;
    let rows = statement.query_map([], |row| {
        let created_at: String = row.get(2)?;
        Ok(StoredToken {
            digest: row.get(0)?,
            label: row.get(1)?,
            created_at: Timestamp::parse_rfc3339(&created_at).unwrap_or(Timestamp(0)),
        })
    })?;
    rows.collect()
}
