//! The PostgreSQL ledger store: turns [`crate::ledger`] rows into SQL with the seeds' own types
//! (`UUID`, `NUMERIC`, `JSONB`, `TIMESTAMPTZ`). Several instances may complete deliveries that
//! touch the same row at once, so the row is read `FOR UPDATE`, and an insert that loses a race
//! (`ON CONFLICT DO NOTHING` inserted nothing) reads the winner's row and merges into it: no
//! update is ever lost.

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use thiserror::Error;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::clock::Timestamp;
use crate::journal::feed::{LedgerWritten, LEDGER_CREATED, LEDGER_UPDATED};
use crate::ledger::{Cell, ColumnType, LedgerChange, LedgerError, RowWrite, Table, WriteTimes};

#[derive(Debug, Error)]
pub(super) enum ApplyError {
    #[error(transparent)]
    Sql(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("ledger table {table} returned an unreadable {column}")]
    Unreadable {
        table: &'static str,
        column: &'static str,
    },
}

/// Loads (and locks) the row the change touches, lets the ledger decide, writes the decision;
/// returns the row written, for the change feed (`None` when nothing changed).
pub(super) async fn apply(
    tx: &Transaction<'_>,
    change: &LedgerChange,
    source: &str,
    times: WriteTimes,
) -> Result<Option<LedgerWritten>, ApplyError> {
    let table = change.table();
    let key = change.key(source);
    // Twice at most: a lost insert race means the row now exists and is merged into.
    for _ in 0..2 {
        let current = load(tx, table, &key).await?;
        let decision = change.decide(source, current.as_deref(), times)?;
        let written = match decision.row {
            RowWrite::Insert(row) => {
                if !insert(tx, table, &row).await? {
                    continue;
                }
                Some(LedgerWritten::new(LEDGER_CREATED, table, &key, &row))
            }
            RowWrite::Update(row) => {
                update(tx, table, &key, &row).await?;
                Some(LedgerWritten::new(LEDGER_UPDATED, table, &key, &row))
            }
            RowWrite::Unchanged => None,
        };
        // A history row already appended (a replay, another instance) is skipped.
        for appended in decision.appended {
            insert(tx, appended.table, &appended.row).await?;
        }
        return Ok(written);
    }
    Err(ApplyError::Unreadable {
        table: table.name,
        column: "key (the row vanished between insert and read)",
    })
}

/// `$n` with the cast that lets a text or integer parameter land in the column's type.
pub(super) fn placeholder(ty: ColumnType, n: usize) -> String {
    match ty {
        ColumnType::Text => format!("${n}::text"),
        ColumnType::Integer => format!("${n}::int8"),
        ColumnType::Decimal => format!("${n}::text::numeric"),
        ColumnType::Json => format!("${n}::text::jsonb"),
        ColumnType::Timestamp => format!("${n}::timestamptz"),
        ColumnType::Uuid => format!("${n}::text::uuid"),
    }
}

/// A column read back in a form `tokio_postgres` decodes without extra features.
pub(super) fn selected(name: &str, ty: ColumnType) -> String {
    match ty {
        ColumnType::Decimal | ColumnType::Json | ColumnType::Uuid => format!("{name}::text"),
        ColumnType::Text | ColumnType::Integer | ColumnType::Timestamp => name.to_owned(),
    }
}

fn key_clause(table: &Table, first: usize) -> String {
    table
        .key
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let ty = table
                .position(name)
                .map_or(ColumnType::Text, |at| table.columns[at].ty);
            format!("{name} = {}", placeholder(ty, first + i))
        })
        .collect::<Vec<_>>()
        .join(" AND ")
}

async fn load(
    tx: &Transaction<'_>,
    table: &'static Table,
    key: &[Cell],
) -> Result<Option<Vec<Cell>>, ApplyError> {
    let columns: Vec<String> = table
        .columns
        .iter()
        .map(|column| selected(column.name, column.ty))
        .collect();
    let sql = format!(
        "SELECT {} FROM {} WHERE {} FOR UPDATE",
        columns.join(", "),
        table.name,
        key_clause(table, 1)
    );
    let key_types: Vec<ColumnType> = table
        .key
        .iter()
        .map(|name| {
            table
                .position(name)
                .map_or(ColumnType::Text, |at| table.columns[at].ty)
        })
        .collect();
    let params = bind(key, &key_types);
    let statement = tx.prepare_cached(&sql).await?;
    let row = tx.query_opt(&statement, &refs(&params)).await?;
    row.map(|row| read_row(table, &row)).transpose()
}

/// Inserts a full row unless its key exists; says whether it inserted.
async fn insert(tx: &Transaction<'_>, table: &Table, row: &[Cell]) -> Result<bool, ApplyError> {
    let statement = tx.prepare_cached(&insert_sql(table)).await?;
    Ok(tx
        .execute(&statement, &refs(&insert_params(table, row)))
        .await?
        == 1)
}

/// `INSERT … ON CONFLICT (key) DO NOTHING` for a full row of `table`.
pub(crate) fn insert_sql(table: &Table) -> String {
    let names: Vec<&str> = table.columns.iter().map(|column| column.name).collect();
    let placeholders: Vec<String> = table
        .columns
        .iter()
        .enumerate()
        .map(|(i, column)| placeholder(column.ty, i + 1))
        .collect();
    format!(
        "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO NOTHING",
        table.name,
        names.join(", "),
        placeholders.join(", "),
        table.key.join(", ")
    )
}

/// The parameters of [`insert_sql`] for `row`.
pub(crate) fn insert_params(table: &Table, row: &[Cell]) -> Vec<Param> {
    let types: Vec<ColumnType> = table.columns.iter().map(|column| column.ty).collect();
    bind(row, &types)
}

async fn update(
    tx: &Transaction<'_>,
    table: &Table,
    key: &[Cell],
    row: &[Cell],
) -> Result<(), ApplyError> {
    let updatable: Vec<usize> = (0..table.columns.len())
        .filter(|&at| table.columns[at].updatable)
        .collect();
    let assignments: Vec<String> = updatable
        .iter()
        .enumerate()
        .map(|(i, &at)| {
            let column = &table.columns[at];
            format!("{} = {}", column.name, placeholder(column.ty, i + 1))
        })
        .collect();
    let sql = format!(
        "UPDATE {} SET {} WHERE {}",
        table.name,
        assignments.join(", "),
        key_clause(table, updatable.len() + 1)
    );
    let mut cells: Vec<Cell> = updatable.iter().map(|&at| row[at].clone()).collect();
    let mut types: Vec<ColumnType> = updatable.iter().map(|&at| table.columns[at].ty).collect();
    cells.extend(key.iter().cloned());
    types.extend(table.key.iter().map(|name| {
        table
            .position(name)
            .map_or(ColumnType::Text, |at| table.columns[at].ty)
    }));
    let params = bind(&cells, &types);
    let statement = tx.prepare_cached(&sql).await?;
    tx.execute(&statement, &refs(&params)).await?;
    Ok(())
}

pub(crate) type Param = Box<dyn ToSql + Sync + Send>;

/// Each cell as the Rust type its placeholder's cast expects; a null keeps that type too.
pub(super) fn bind(cells: &[Cell], types: &[ColumnType]) -> Vec<Param> {
    cells
        .iter()
        .zip(types)
        .map(|(cell, ty)| -> Param {
            match (cell, ty) {
                (Cell::Integer(value), _) => Box::new(*value),
                (Cell::Timestamp(at), _) => Box::new(at.to_datetime()),
                (Cell::Text(text) | Cell::Decimal(text) | Cell::Json(text), _) => {
                    Box::new(text.clone())
                }
                (Cell::Uuid(id), _) => Box::new(id.hyphenated().to_string()),
                (Cell::Null, ColumnType::Integer) => Box::new(None::<i64>),
                (Cell::Null, ColumnType::Timestamp) => Box::new(None::<DateTime<Utc>>),
                (Cell::Null, _) => Box::new(None::<String>),
            }
        })
        .collect()
}

/// Borrowed parameters, as `execute` takes them.
pub(crate) fn refs(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|param| param.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

pub(super) fn read_row(table: &'static Table, row: &Row) -> Result<Vec<Cell>, ApplyError> {
    table
        .columns
        .iter()
        .enumerate()
        .map(|(at, column)| {
            let unreadable = |_| ApplyError::Unreadable {
                table: table.name,
                column: column.name,
            };
            Ok(match column.ty {
                ColumnType::Integer => row
                    .try_get::<_, Option<i64>>(at)
                    .map_err(unreadable)?
                    .map_or(Cell::Null, Cell::Integer),
                ColumnType::Timestamp => row
                    .try_get::<_, Option<DateTime<Utc>>>(at)
                    .map_err(unreadable)?
                    .map_or(Cell::Null, |time| {
                        Cell::Timestamp(Timestamp(time.timestamp_micros()))
                    }),
                ty => {
                    let text: Option<String> = row.try_get(at).map_err(unreadable)?;
                    match (text, ty) {
                        (None, _) => Cell::Null,
                        (Some(text), ColumnType::Decimal) => Cell::Decimal(text),
                        (Some(text), ColumnType::Json) => Cell::Json(text),
                        (Some(text), ColumnType::Uuid) => {
                            Cell::Uuid(text.parse().map_err(|_| ApplyError::Unreadable {
                                table: table.name,
                                column: column.name,
                            })?)
                        }
                        (Some(text), _) => Cell::Text(text),
                    }
                }
            })
        })
        .collect()
}
