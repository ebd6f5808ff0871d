//! The SQLite ledger store: turns [`crate::ledger`] rows into SQL for this dialect (numeric
//! affinity for decimals, RFC 3339 text for times, hyphenated text for UUIDs). It runs on the
//! writer thread, inside the transaction that completes the delivery; the writer is the only
//! writer, so a plain read-then-write cannot race (and a sale, most often new, is inserted
//! before it is read: only a taken key sends it the read-then-write way).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use parking_lot::Mutex;
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{Connection, OptionalExtension, Row};
use thiserror::Error;

use crate::clock::Timestamp;
use crate::journal::feed::{LedgerWritten, LEDGER_CREATED, LEDGER_UPDATED};
use crate::ledger::{Cell, ColumnType, LedgerChange, LedgerError, RowWrite, Table, WriteTimes};

#[derive(Debug, Error)]
pub(super) enum ApplyError {
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Loads the row the change touches, lets the ledger decide, and writes what it decided;
/// returns the row written, for the change feed (`None` when nothing changed).
pub(super) fn apply(
    conn: &Connection,
    change: &LedgerChange,
    source: &str,
    times: WriteTimes,
) -> Result<Option<LedgerWritten>, ApplyError> {
    let table = change.table();
    let key = change.key(source);
    // A sale is most often new: it is inserted without looking first, and when its key is
    // taken the insert does nothing and it is decided against the stored row like any change.
    // (A sale's decision is a pure function of the stored row; a provider's change may keep
    // what it last decided, so it is decided once, against the row as stored.)
    if let LedgerChange::Sale(_) = change {
        if let Ok(decision) = change.decide(source, None, times) {
            if let (RowWrite::Insert(row), []) = (&decision.row, decision.appended.as_slice()) {
                if insert(conn, table, row, Conflict::Key)? == 1 {
                    return Ok(Some(LedgerWritten::new(LEDGER_CREATED, table, &key, row)));
                }
            }
        }
    }
    let current = load(conn, table, &key)?;
    let decision = change.decide(source, current.as_deref(), times)?;
    let written = match decision.row {
        RowWrite::Insert(row) => {
            insert(conn, table, &row, Conflict::Fail)?;
            Some(LedgerWritten::new(LEDGER_CREATED, table, &key, &row))
        }
        RowWrite::Update(row) => {
            update(conn, table, &key, &row)?;
            Some(LedgerWritten::new(LEDGER_UPDATED, table, &key, &row))
        }
        RowWrite::Unchanged => None,
    };
    for appended in decision.appended {
        insert(conn, appended.table, &appended.row, Conflict::Skip)?;
    }
    Ok(written)
}

/// What an insert does when its key exists: an error for the row a change decided (the single
/// writer read it as absent), nothing for a history row already appended, nothing for a row
/// inserted before looking (`Key`: only the table's key may be taken; the caller is told).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Conflict {
    Fail,
    Skip,
    Key,
}

/// The statements the store runs on a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Statement {
    Load,
    Insert(Conflict),
    Update,
}

/// Each table description's statements, rendered once per process: rendering them for every
/// row was a fifth of applying a sale in the profile (`bench/scripts/callgrind-per-delivery.sh`).
/// Keyed by the description's address, not its name: providers describe the columns they
/// write of a shared table (Stripe's and Paystack's `payments`) each in their own way.
fn sql(table: &'static Table, statement: Statement) -> Arc<str> {
    /// (the table description's address, the statement) → its SQL.
    type Rendered = HashMap<(usize, Statement), Arc<str>>;
    static RENDERED: LazyLock<Mutex<Rendered>> = LazyLock::new(Mutex::default);
    RENDERED
        .lock()
        .entry((std::ptr::from_ref(table) as usize, statement))
        .or_insert_with(|| render(table, statement).into())
        .clone()
}

fn render(table: &Table, statement: Statement) -> String {
    let columns: Vec<&str> = table.columns.iter().map(|column| column.name).collect();
    match statement {
        Statement::Load => format!(
            "SELECT {} FROM {} WHERE {}",
            columns.join(", "),
            table.name,
            key_clause(table, 1)
        ),
        Statement::Insert(conflict) => {
            let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
            let on_conflict = match conflict {
                Conflict::Fail => String::new(),
                Conflict::Skip => " ON CONFLICT DO NOTHING".to_owned(),
                Conflict::Key => format!(" ON CONFLICT ({}) DO NOTHING", table.key.join(", ")),
            };
            format!(
                "INSERT INTO {} ({}) VALUES ({}){on_conflict}",
                table.name,
                columns.join(", "),
                placeholders.join(", ")
            )
        }
        Statement::Update => {
            let assignments: Vec<String> = updatable(table)
                .enumerate()
                .map(|(i, (_, name))| format!("{name} = ?{}", i + 1))
                .collect();
            format!(
                "UPDATE {} SET {} WHERE {}",
                table.name,
                assignments.join(", "),
                key_clause(table, assignments.len() + 1)
            )
        }
    }
}

/// The columns an update sets, with their positions in a row.
fn updatable(table: &Table) -> impl Iterator<Item = (usize, &'static str)> + '_ {
    table
        .columns
        .iter()
        .enumerate()
        .filter(|(_, column)| column.updatable)
        .map(|(at, column)| (at, column.name))
}

fn key_clause(table: &Table, first_param: usize) -> String {
    table
        .key
        .iter()
        .enumerate()
        .map(|(i, column)| format!("{column} = ?{}", first_param + i))
        .collect::<Vec<_>>()
        .join(" AND ")
}

fn load(
    conn: &Connection,
    table: &'static Table,
    key: &[Cell],
) -> rusqlite::Result<Option<Vec<Cell>>> {
    conn.prepare_cached(&sql(table, Statement::Load))?
        .query_row(rusqlite::params_from_iter(key.iter().map(bound)), |row| {
            read_row(table, row)
        })
        .optional()
}

/// Inserts `row`; returns how many rows it added (0 when a conflict was skipped).
fn insert(
    conn: &Connection,
    table: &'static Table,
    row: &[Cell],
    conflict: Conflict,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(&sql(table, Statement::Insert(conflict)))?
        .execute(rusqlite::params_from_iter(row.iter().map(bound)))
}

fn update(
    conn: &Connection,
    table: &'static Table,
    key: &[Cell],
    row: &[Cell],
) -> rusqlite::Result<()> {
    let params = updatable(table)
        .map(|(at, _)| bound(&row[at]))
        .chain(key.iter().map(bound));
    conn.prepare_cached(&sql(table, Statement::Update))?
        .execute(rusqlite::params_from_iter(params))?;
    Ok(())
}

pub(super) fn to_value(cell: &Cell) -> Value {
    match cell {
        Cell::Null => Value::Null,
        Cell::Text(text) | Cell::Decimal(text) | Cell::Json(text) => Value::Text(text.clone()),
        Cell::Integer(value) => Value::Integer(*value),
        Cell::Timestamp(at) => Value::Text(at.to_rfc3339()),
        Cell::Uuid(id) => Value::Text(id.hyphenated().to_string()),
    }
}

/// A cell as a bound parameter, as [`to_value`] writes it but borrowing its text: a sale's
/// row holds its whole payload as `metadata`, copied for nothing otherwise.
fn bound(cell: &Cell) -> ToSqlOutput<'_> {
    match cell {
        Cell::Null => ToSqlOutput::Borrowed(ValueRef::Null),
        Cell::Text(text) | Cell::Decimal(text) | Cell::Json(text) => {
            ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes()))
        }
        Cell::Integer(value) => ToSqlOutput::Borrowed(ValueRef::Integer(*value)),
        Cell::Timestamp(_) | Cell::Uuid(_) => ToSqlOutput::Owned(to_value(cell)),
    }
}

fn read_row(table: &Table, row: &Row<'_>) -> rusqlite::Result<Vec<Cell>> {
    read_row_from(table, row, 0)
}

/// The table's columns, starting at column `first` of the result row.
pub(super) fn read_row_from(
    table: &Table,
    row: &Row<'_>,
    first: usize,
) -> rusqlite::Result<Vec<Cell>> {
    table
        .columns
        .iter()
        .enumerate()
        .map(|(at, column)| read_cell(column.ty, row.get_ref(first + at)?, first + at))
        .collect()
}

/// Up to `limit` rows of `table` after `after` (a rowid), in rowid order, with their rowids:
/// how `wharf migrate` reads a provider's table to copy it.
pub(crate) fn rows_after(
    conn: &Connection,
    table: &Table,
    after: i64,
    limit: usize,
) -> rusqlite::Result<Vec<(i64, Vec<Cell>)>> {
    let columns: Vec<&str> = table.columns.iter().map(|column| column.name).collect();
    let sql = format!(
        "SELECT rowid, {} FROM {} WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
        columns.join(", "),
        table.name
    );
    let mut statement = conn.prepare(&sql)?;
    let rows = statement.query_map(rusqlite::params![after, limit as i64], |row| {
        Ok((row.get(0)?, read_row_from(table, row, 1)?))
    })?;
    rows.collect()
}

fn read_cell(ty: ColumnType, value: ValueRef<'_>, at: usize) -> rusqlite::Result<Cell> {
    let invalid = || rusqlite::Error::InvalidColumnType(at, format!("{ty:?}"), value.data_type());
    if matches!(value, ValueRef::Null) {
        return Ok(Cell::Null);
    }
    let text = || value.as_str().map(str::to_owned);
    Ok(match ty {
        ColumnType::Text => Cell::Text(text()?),
        ColumnType::Json => Cell::Json(text()?),
        ColumnType::Integer => Cell::Integer(value.as_i64()?),
        ColumnType::Decimal => Cell::Decimal(match value {
            ValueRef::Integer(whole) => whole.to_string(),
            ValueRef::Real(real) => real.to_string(),
            _ => text()?,
        }),
        ColumnType::Timestamp => {
            Cell::Timestamp(Timestamp::parse_rfc3339(value.as_str()?).ok_or_else(invalid)?)
        }
        ColumnType::Uuid => Cell::Uuid(value.as_str()?.parse().map_err(|_| invalid())?),
    })
}
