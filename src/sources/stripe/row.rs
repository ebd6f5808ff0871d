//! One ledger row being decided, by column name: what a report may write into it, and the write
//! it comes to. Rows fed by several kinds of object (a payment by its payment intent, charges,
//! refunds and disputes) keep in `field_events` the event each value came from, and a value
//! is replaced only by one from a newer event: each column is a last-writer-wins register
//! ordered by (`created`, event id), so the row ends the same whatever order events arrive in.

use std::ops::{Deref, DerefMut};

use serde_json::{Map, Value};

use super::event::EventRef;
use crate::clock::Timestamp;
use crate::ledger::{self, Cell, LedgerError, RowWrite, Table};

/// Stripe's row editor: the ledger's, plus the provenance of each value.
pub(super) struct RowEdit {
    row: ledger::edit::RowEdit,
    /// `field_events`, once read: field → `[created, event id]`.
    provenance: Option<Map<String, Value>>,
}

/// The column that records which event each value came from.
const FIELD_EVENTS: &str = "field_events";

impl Deref for RowEdit {
    type Target = ledger::edit::RowEdit;

    fn deref(&self) -> &Self::Target {
        &self.row
    }
}

impl DerefMut for RowEdit {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.row
    }
}

impl RowEdit {
    /// The stored row, or a new one with every column empty.
    pub(super) fn open(table: &'static Table, current: Option<&[Cell]>) -> Self {
        Self {
            row: ledger::edit::RowEdit::open(table, current),
            provenance: None,
        }
    }

    /// Whether `event` may set `field`: no value came from a newer event. If it may, `event` is
    /// recorded as the field's source. `field` is a column, or a name within one
    /// (`metadata.order_id`).
    pub(super) fn claim(&mut self, field: &str, event: &EventRef) -> Result<bool, LedgerError> {
        if self.provenance.is_none() {
            self.provenance = Some(self.json_object(FIELD_EVENTS)?);
        }
        let provenance = self.provenance.get_or_insert_with(Map::new);
        let held = provenance.get(field).and_then(|held| {
            let at = held.get(0)?.as_i64()?;
            let id = held.get(1)?.as_str()?;
            Some((Timestamp::from_unix_seconds(at), id.to_owned()))
        });
        let newer = held.is_none_or(|(at, id)| (event.at, event.id.as_str()) >= (at, id.as_str()));
        if newer {
            // A primary source now speaks for the field: what secondary ones said is moot.
            provenance.remove(&format!("{field}~fallback"));
            provenance.insert(
                field.to_owned(),
                Value::Array(vec![
                    event.at.unix_seconds().into(),
                    event.id.clone().into(),
                ]),
            );
        }
        Ok(newer)
    }

    /// Sets `column` to `cell` from `event` if no newer event set it ([`RowEdit::claim`]); a
    /// report that does not say (`Null`) sets nothing.
    pub(super) fn offer_from(
        &mut self,
        column: &'static str,
        cell: Cell,
        event: &EventRef,
    ) -> Result<(), LedgerError> {
        if cell != Cell::Null && self.claim(column, event)? {
            self.set(column, cell)?;
        }
        Ok(())
    }

    /// Sets `column` from a secondary source (an invoice's view of its subscription): only while
    /// no primary report ([`RowEdit::offer_from`]) has set it, the newest secondary one winning.
    pub(super) fn offer_fallback(
        &mut self,
        column: &'static str,
        cell: Cell,
        event: &EventRef,
    ) -> Result<(), LedgerError> {
        if cell == Cell::Null || self.claimed(column)? {
            return Ok(());
        }
        if self.claim(&format!("{column}~fallback"), event)? {
            self.set(column, cell)?;
        }
        Ok(())
    }

    /// Sets `column` from `event` whatever set it before (a plan taken over by another
    /// subscription), recording `event` as its source.
    pub(super) fn force_from(
        &mut self,
        column: &'static str,
        cell: Cell,
        event: &EventRef,
    ) -> Result<(), LedgerError> {
        if cell == Cell::Null {
            return Ok(());
        }
        if let Some(provenance) = &mut self.provenance {
            provenance.remove(column);
        } else {
            let mut provenance = self.json_object(FIELD_EVENTS)?;
            provenance.remove(column);
            self.provenance = Some(provenance);
        }
        self.offer_from(column, cell, event)
    }

    fn claimed(&mut self, field: &str) -> Result<bool, LedgerError> {
        if self.provenance.is_none() {
            self.provenance = Some(self.json_object(FIELD_EVENTS)?);
        }
        Ok(self
            .provenance
            .as_ref()
            .is_some_and(|provenance| provenance.contains_key(field)))
    }

    /// Keeps the earlier of the stored time and `at`.
    pub(super) fn earliest(
        &mut self,
        column: &'static str,
        at: Timestamp,
    ) -> Result<(), LedgerError> {
        match self.timestamp(column)? {
            Some(held) if held <= at => Ok(()),
            _ => self.set(column, Cell::Timestamp(at)),
        }
    }

    /// Whether `event` is at least as new as the last event applied to the row (in `last_event_at`
    /// and `last_event_id`). Events are ordered by `created`, then by id, so that two events of
    /// the same second settle the same way whichever arrives first.
    pub(super) fn newer_than_last(&self, event: &EventRef) -> Result<bool, LedgerError> {
        let last_at = self.timestamp("last_event_at")?;
        let last_id = self.text("last_event_id")?.unwrap_or_default();
        Ok(last_at.is_none_or(|last_at| (event.at, event.id.as_str()) >= (last_at, &last_id)))
    }

    /// Records `event` as the last applied, if it is newer.
    pub(super) fn advance_last(&mut self, event: &EventRef) -> Result<(), LedgerError> {
        if self.newer_than_last(event)? {
            self.set("last_event_id", Cell::text(&event.id))?;
            self.set("last_event_at", Cell::Timestamp(event.at))?;
        }
        Ok(())
    }

    /// The write this row comes to, its provenance recorded, with `updated_at` moved to `now`
    /// when anything changed.
    pub(super) fn finish(mut self, now: Timestamp) -> Result<RowWrite, LedgerError> {
        if let Some(provenance) = self.provenance.take() {
            if !provenance.is_empty() {
                self.set(FIELD_EVENTS, json_cell(&Value::Object(provenance)))?;
            }
        }
        self.row.finish(now)
    }
}

pub(super) use crate::ledger::edit::{integer_cell, json_cell, text_cell, time_cell};
