//! The operator's queries on PostgreSQL ([`crate::journal::query`]): ledger pages, window
//! statistics, revenue. Table and column names come only from the ledger's table descriptions;
//! every value is a bound parameter, cast to its column's type.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;

use super::ledger::{bind, placeholder, read_row, selected, Param};
use super::{datetime, storage_error, timestamp};
use crate::clock::Timestamp;
use crate::journal::query::{
    sql_list, EventTypeCount, LedgerQuery, MinuteCount, RevenueDay, SourceWindow, WindowStats,
    PAYMENT_REVENUE_STATUSES, SALE_REVENUE_STATUSES,
};
use crate::journal::JournalError;
use crate::ledger::{Cell, ColumnType};

/// One page of a ledger table, sorted by its key, after the cursor.
pub(super) async fn ledger_rows(
    client: &impl GenericClient,
    query: &LedgerQuery,
) -> Result<Vec<Vec<Cell>>, JournalError> {
    let table = query.table;
    let type_of = |name: &str| {
        table
            .position(name)
            .map_or(ColumnType::Text, |at| table.columns[at].ty)
    };
    let mut conditions = Vec::new();
    let mut cells: Vec<Cell> = Vec::new();
    let mut types: Vec<ColumnType> = Vec::new();
    for (column, cell) in &query.equals {
        cells.push(cell.clone());
        types.push(type_of(column));
        conditions.push(format!(
            "{column} = {}",
            placeholder(type_of(column), cells.len())
        ));
    }
    if let Some(text) = &query.text {
        cells.push(Cell::Text(text.to_lowercase()));
        types.push(ColumnType::Text);
        let at = cells.len();
        let searched: Vec<String> = table
            .columns
            .iter()
            .filter(|column| matches!(column.ty, ColumnType::Text | ColumnType::Json))
            .map(|column| format!("strpos(lower({}::text), ${at}::text) > 0", column.name))
            .collect();
        if !searched.is_empty() {
            conditions.push(format!("({})", searched.join(" OR ")));
        }
    }
    if let Some(after) = &query.after {
        let mut placeholders = Vec::new();
        for (name, cell) in table.key.iter().zip(after) {
            cells.push(cell.clone());
            types.push(type_of(name));
            placeholders.push(placeholder(type_of(name), cells.len()));
        }
        conditions.push(format!(
            "({}) > ({})",
            table.key.join(", "),
            placeholders.join(", ")
        ));
    }
    cells.push(Cell::Integer(i64::from(query.page_size())));
    types.push(ColumnType::Integer);
    let columns: Vec<String> = table
        .columns
        .iter()
        .map(|column| selected(column.name, column.ty))
        .collect();
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    let sql = format!(
        "SELECT {} FROM {}{filter} ORDER BY {} LIMIT ${}::int8",
        columns.join(", "),
        table.name,
        table.key.join(", "),
        cells.len()
    );
    let params: Vec<Param> = bind(&cells, &types);
    let rows = client
        .query(&sql, &super::ledger::refs(&params))
        .await
        .map_err(storage_error)?;
    rows.iter()
        .map(|row| read_row(table, row).map_err(storage_error))
        .collect()
}

/// Counts, processing times, event types and deliveries per minute since `since`.
pub(super) async fn window_stats(
    client: &impl GenericClient,
    since: Timestamp,
) -> Result<WindowStats, JournalError> {
    let mut sources = source_counts(client, since).await?;
    let since = datetime(since);
    let durations = client
        .query(
            "SELECT d.source, \
                    percentile_disc(0.50) WITHIN GROUP (ORDER BY a.duration_us), \
                    percentile_disc(0.95) WITHIN GROUP (ORDER BY a.duration_us), \
                    percentile_disc(0.99) WITHIN GROUP (ORDER BY a.duration_us) \
             FROM attempts a JOIN deliveries d ON d.id = a.delivery_id \
             WHERE a.started_at >= $1 GROUP BY d.source",
            &[&since],
        )
        .await
        .map_err(storage_error)?;
    for row in durations {
        if let Some(window) = sources.get_mut(row.get::<_, &str>(0)) {
            window.p50_us = row.get(1);
            window.p95_us = row.get(2);
            window.p99_us = row.get(3);
        }
    }
    let event_types = client
        .query(
            "SELECT source, event_type, COUNT(*) FROM deliveries WHERE received_at >= $1 \
             GROUP BY source, event_type ORDER BY COUNT(*) DESC, source, event_type",
            &[&since],
        )
        .await
        .map_err(storage_error)?
        .iter()
        .map(|row| EventTypeCount {
            source: row.get(0),
            event_type: row.get(1),
            count: row.get::<_, i64>(2) as u64,
        })
        .collect();
    let per_minute = client
        .query(
            "SELECT date_trunc('minute', received_at) AS minute, source, COUNT(*) \
             FROM deliveries WHERE received_at >= $1 GROUP BY 1, 2 ORDER BY 1, 2",
            &[&since],
        )
        .await
        .map_err(storage_error)?
        .iter()
        .map(|row| MinuteCount {
            minute: timestamp(row.get::<_, DateTime<Utc>>(0)),
            source: row.get(1),
            count: row.get::<_, i64>(2) as u64,
        })
        .collect();
    Ok(WindowStats {
        sources: sources.into_values().collect(),
        event_types,
        per_minute,
    })
}

/// Deliveries received since `since`, by source and status.
pub(super) async fn source_counts(
    client: &impl GenericClient,
    since: Timestamp,
) -> Result<BTreeMap<String, SourceWindow>, JournalError> {
    let mut sources: BTreeMap<String, SourceWindow> = BTreeMap::new();
    let counts = client
        .query(
            "SELECT source, status, COUNT(*) FROM deliveries WHERE received_at >= $1 \
             GROUP BY source, status",
            &[&datetime(since)],
        )
        .await
        .map_err(storage_error)?;
    for row in counts {
        let source: String = row.get(0);
        let window = sources
            .entry(source.clone())
            .or_insert_with(|| SourceWindow {
                source,
                ..SourceWindow::default()
            });
        window.add(row.get(1), row.get::<_, i64>(2) as u64);
    }
    Ok(sources)
}

/// Approved sales and taken payments created since `since`, per UTC day, source and currency.
pub(super) async fn revenue(
    client: &impl GenericClient,
    since: Timestamp,
) -> Result<Vec<RevenueDay>, JournalError> {
    let sql = format!(
        "SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, source, \
                COALESCE(currency, 'BRL'), SUM(price_minor)::int8, COUNT(*) \
         FROM sales WHERE created_at >= $1 AND status IN ({}) GROUP BY 1, 2, 3 \
         UNION ALL \
         SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, source, \
                upper(currency), SUM(amount_minor - COALESCE(amount_refunded_minor, 0))::int8, \
                COUNT(*) \
         FROM payments WHERE created_at >= $1 AND payment_status IN ({}) \
               AND amount_minor IS NOT NULL AND currency IS NOT NULL GROUP BY 1, 2, 3 \
         ORDER BY 1, 2, 3",
        sql_list(&SALE_REVENUE_STATUSES),
        sql_list(&PAYMENT_REVENUE_STATUSES)
    );
    let rows = client
        .query(&sql, &[&datetime(since)])
        .await
        .map_err(storage_error)?;
    Ok(rows
        .iter()
        .map(|row| RevenueDay {
            day: row.get(0),
            source: row.get(1),
            currency: row.get(2),
            amount_minor: row.get(3),
            count: row.get::<_, i64>(4) as u64,
        })
        .collect())
}
