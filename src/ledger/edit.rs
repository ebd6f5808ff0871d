//! One ledger row being decided, by column name: a provider's `RowChange::decide` opens the
//! stored row (or an empty one), reads and sets columns, and finishes with the write it comes
//! to, which is no write at all when nothing but `updated_at` would change.

use serde_json::{Map, Value};

use super::table::{Cell, ColumnType, CorruptRow, RowWrite, Table};
use super::LedgerError;
use crate::clock::Timestamp;

pub struct RowEdit {
    table: &'static Table,
    cells: Vec<Cell>,
    original: Option<Vec<Cell>>,
}

impl RowEdit {
    /// The stored row, or a new one with every column empty.
    pub fn open(table: &'static Table, current: Option<&[Cell]>) -> Self {
        Self {
            table,
            cells: current.map_or_else(|| vec![Cell::Null; table.columns.len()], <[Cell]>::to_vec),
            original: current.map(<[Cell]>::to_vec),
        }
    }

    pub fn is_new(&self) -> bool {
        self.original.is_none()
    }

    /// The error for a column this row cannot hold or read back.
    pub fn corrupt(&self, column: &'static str) -> LedgerError {
        LedgerError::Corrupt(CorruptRow {
            table: self.table.name,
            column,
        })
    }

    fn position(&self, column: &'static str) -> Result<usize, LedgerError> {
        self.table
            .position(column)
            .filter(|&at| at < self.cells.len())
            .ok_or_else(|| self.corrupt(column))
    }

    pub fn get(&self, column: &'static str) -> Result<&Cell, LedgerError> {
        Ok(&self.cells[self.position(column)?])
    }

    pub fn set(&mut self, column: &'static str, cell: Cell) -> Result<(), LedgerError> {
        let at = self.position(column)?;
        self.cells[at] = cell;
        Ok(())
    }

    /// Writes `cell` if the report is `newer` than the row, else only into an empty column; a
    /// report that does not say (`Null`) writes nothing.
    pub fn offer(
        &mut self,
        column: &'static str,
        cell: Cell,
        newer: bool,
    ) -> Result<(), LedgerError> {
        if cell != Cell::Null && (newer || *self.get(column)? == Cell::Null) {
            self.set(column, cell)?;
        }
        Ok(())
    }

    pub fn text(&self, column: &'static str) -> Result<Option<String>, LedgerError> {
        match self.get(column)? {
            Cell::Null => Ok(None),
            Cell::Text(text) | Cell::Json(text) | Cell::Decimal(text) => Ok(Some(text.clone())),
            _ => Err(self.corrupt(column)),
        }
    }

    pub fn integer(&self, column: &'static str) -> Result<Option<i64>, LedgerError> {
        match self.get(column)? {
            Cell::Null => Ok(None),
            Cell::Integer(value) => Ok(Some(*value)),
            _ => Err(self.corrupt(column)),
        }
    }

    pub fn timestamp(&self, column: &'static str) -> Result<Option<Timestamp>, LedgerError> {
        match self.get(column)? {
            Cell::Null => Ok(None),
            Cell::Timestamp(at) => Ok(Some(*at)),
            _ => Err(self.corrupt(column)),
        }
    }

    /// A JSON column's value; `Null` when empty.
    pub fn json(&self, column: &'static str) -> Result<Value, LedgerError> {
        match self.get(column)? {
            Cell::Null => Ok(Value::Null),
            Cell::Json(text) | Cell::Text(text) => {
                serde_json::from_str(text).map_err(|_| self.corrupt(column))
            }
            _ => Err(self.corrupt(column)),
        }
    }

    /// A JSON object column; empty when the column is.
    pub fn json_object(&self, column: &'static str) -> Result<Map<String, Value>, LedgerError> {
        match self.json(column)? {
            Value::Null => Ok(Map::new()),
            Value::Object(map) => Ok(map),
            _ => Err(self.corrupt(column)),
        }
    }

    /// Whether the row differs from the stored one. `updated_at` does not count, decimals
    /// neither (they follow their minor-unit columns, and SQLite gives `20.00` back as `20`),
    /// and JSON is compared as JSON (PostgreSQL's `JSONB` reorders keys).
    fn changed(&self) -> bool {
        let Some(original) = &self.original else {
            return true;
        };
        self.table
            .columns
            .iter()
            .zip(self.cells.iter().zip(original))
            .any(|(column, (new, old))| match column.ty {
                _ if column.name == "updated_at" => false,
                ColumnType::Decimal => false,
                ColumnType::Json => new != old && json_of(new) != json_of(old),
                _ => new != old,
            })
    }

    /// The write this row comes to, with `updated_at` moved to `now` when anything changed.
    pub fn finish(mut self, now: Timestamp) -> Result<RowWrite, LedgerError> {
        if !self.changed() {
            return Ok(RowWrite::Unchanged);
        }
        self.set("updated_at", Cell::Timestamp(now))?;
        Ok(if self.original.is_some() {
            RowWrite::Update(self.cells)
        } else {
            RowWrite::Insert(self.cells)
        })
    }
}

fn json_of(cell: &Cell) -> Option<Value> {
    match cell {
        Cell::Json(text) | Cell::Text(text) => serde_json::from_str(text).ok(),
        _ => None,
    }
}

/// Optional text as a cell.
pub fn text_cell(value: &Option<String>) -> Cell {
    Cell::opt_text(value.as_deref())
}

pub fn integer_cell(value: Option<i64>) -> Cell {
    value.map_or(Cell::Null, Cell::Integer)
}

pub fn time_cell(value: Option<Timestamp>) -> Cell {
    value.map_or(Cell::Null, Cell::Timestamp)
}

/// A JSON value as a cell; JSON `null` is an empty column.
pub fn json_cell(value: &Value) -> Cell {
    match value {
        Value::Null => Cell::Null,
        value => Cell::Json(value.to_string()),
    }
}
