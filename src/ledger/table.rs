//! Ledger tables described as data, so that a provider's ledger code is written once: it maps
//! its domain type to [`Cell`]s of a [`Table`], and each backend's ledger store turns that
//! description into its own SQL (types differ: `UUID`, `NUMERIC`, `JSONB`, `TIMESTAMPTZ` on
//! PostgreSQL; text, numeric affinity and RFC 3339 text on SQLite). No SQL here.

use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use thiserror::Error;

use crate::clock::Timestamp;

/// How a column is stored; each backend maps these to its own types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Text,
    /// A 64-bit integer (`BIGINT`).
    Integer,
    /// An exact decimal (`NUMERIC`), written as decimal text. It compares and sorts as a number
    /// in SQL on both backends; the exact value also lives in an `Integer` minor-units column.
    Decimal,
    /// A JSON document (`JSONB` on PostgreSQL, text on SQLite).
    Json,
    Timestamp,
    Uuid,
}

/// One column of a ledger table.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub ty: ColumnType,
    /// Whether an update may change it; identity and creation columns are written once.
    pub updatable: bool,
}

impl Column {
    pub const fn fixed(name: &'static str, ty: ColumnType) -> Self {
        Self {
            name,
            ty,
            updatable: false,
        }
    }

    pub const fn updatable(name: &'static str, ty: ColumnType) -> Self {
        Self {
            name,
            ty,
            updatable: true,
        }
    }
}

/// A ledger table: its name, the columns that identify a row (always starting with `source`,
/// so that two sources never collide on an external id), and every column the ledger reads or
/// writes. Rows are `Vec<Cell>` in `columns` order.
#[derive(Debug)]
pub struct Table {
    pub name: &'static str,
    pub key: &'static [&'static str],
    pub columns: &'static [Column],
}

impl Table {
    /// The position of a column in a row.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|column| column.name == name)
    }
}

/// One value of a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Text(String),
    Integer(i64),
    /// Decimal text, e.g. `"99.90"`.
    Decimal(String),
    /// JSON text.
    Json(String),
    Timestamp(Timestamp),
    Uuid(uuid::Uuid),
}

impl Cell {
    pub fn text(value: impl Into<String>) -> Self {
        Self::Text(value.into())
    }

    pub fn opt_text(value: Option<&str>) -> Self {
        value.map_or(Self::Null, Self::text)
    }
}

/// A cell as JSON: decimals stay strings (exact), times RFC 3339, JSON cells nested as they
/// are, without being parsed into a tree (a JSON cell that is not valid JSON is a string).
impl Serialize for Cell {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Null => serializer.serialize_unit(),
            Self::Text(text) | Self::Decimal(text) => serializer.serialize_str(text),
            Self::Integer(value) => serializer.serialize_i64(*value),
            Self::Json(text) => match serde_json::from_str::<&RawValue>(text) {
                Ok(raw) => raw.serialize(serializer),
                Err(_) => serializer.serialize_str(text),
            },
            Self::Timestamp(at) => serializer.serialize_str(&at.to_rfc3339()),
            Self::Uuid(id) => serializer.collect_str(&id.hyphenated()),
        }
    }
}

/// A row as a JSON object, column by column in the table's order.
pub struct RowJson<'a> {
    pub table: &'static Table,
    pub row: &'a [Cell],
}

impl Serialize for RowJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(
            self.table
                .columns
                .iter()
                .zip(self.row)
                .map(|(column, cell)| (column.name, cell)),
        )
    }
}

/// A stored row could not be read back as the domain type.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("ledger table {table} has an unreadable {column}")]
pub struct CorruptRow {
    pub table: &'static str,
    pub column: &'static str,
}

/// Typed access to a loaded row by column name.
pub struct RowReader<'a> {
    table: &'static Table,
    cells: &'a [Cell],
}

impl<'a> RowReader<'a> {
    pub fn new(table: &'static Table, cells: &'a [Cell]) -> Self {
        Self { table, cells }
    }

    fn cell(&self, column: &'static str) -> Result<&'a Cell, CorruptRow> {
        self.table
            .position(column)
            .and_then(|at| self.cells.get(at))
            .ok_or(self.corrupt(column))
    }

    fn corrupt(&self, column: &'static str) -> CorruptRow {
        CorruptRow {
            table: self.table.name,
            column,
        }
    }

    pub fn opt_text(&self, column: &'static str) -> Result<Option<String>, CorruptRow> {
        match self.cell(column)? {
            Cell::Null => Ok(None),
            Cell::Text(text) | Cell::Json(text) | Cell::Decimal(text) => Ok(Some(text.clone())),
            _ => Err(self.corrupt(column)),
        }
    }

    pub fn text(&self, column: &'static str) -> Result<String, CorruptRow> {
        self.opt_text(column)?.ok_or(self.corrupt(column))
    }

    pub fn opt_integer(&self, column: &'static str) -> Result<Option<i64>, CorruptRow> {
        match self.cell(column)? {
            Cell::Null => Ok(None),
            Cell::Integer(value) => Ok(Some(*value)),
            _ => Err(self.corrupt(column)),
        }
    }

    pub fn integer(&self, column: &'static str) -> Result<i64, CorruptRow> {
        self.opt_integer(column)?.ok_or(self.corrupt(column))
    }

    pub fn opt_timestamp(&self, column: &'static str) -> Result<Option<Timestamp>, CorruptRow> {
        match self.cell(column)? {
            Cell::Null => Ok(None),
            Cell::Timestamp(at) => Ok(Some(*at)),
            _ => Err(self.corrupt(column)),
        }
    }
}

/// What a ledger store must do with one row, as decided by the merge rules.
#[derive(Debug, Clone, PartialEq)]
pub enum RowWrite {
    /// Insert this full row (every column of the table, in order).
    Insert(Vec<Cell>),
    /// Overwrite the updatable columns of the row with this key, from this full row.
    Update(Vec<Cell>),
    /// The event adds nothing.
    Unchanged,
}

/// What the ledger writes for one change: the row itself, and rows appended to history tables
/// (which field changed from what to what, a status step). History rows are never updated; one
/// whose key exists already is skipped, so applying the same change twice appends once.
#[derive(Debug, Clone)]
pub struct Decision {
    pub row: RowWrite,
    pub appended: Vec<Appended>,
}

/// A row for a history table (its `key` identifies the row, e.g. delivery and field).
#[derive(Debug, Clone)]
pub struct Appended {
    pub table: &'static Table,
    pub row: Vec<Cell>,
}

impl From<RowWrite> for Decision {
    fn from(row: RowWrite) -> Self {
        Self {
            row,
            appended: Vec::new(),
        }
    }
}
