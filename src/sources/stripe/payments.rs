//! Stripe payments in the ledger: seed 003's `payments` (one row per payment intent, or per
//! charge without one), `refunds` and `disputes` (one row per Stripe object), and
//! `order_status_history`, a row appended whenever a payment tied to an order (its
//! `metadata.order_id`) changes status.
//!
//! Every event that concerns a payment creates its row if it is missing, so nothing waits for
//! another event: a refund or dispute that arrives first is kept in the payment row (`refunds`,
//! `metadata.disputes`), and the row's status is computed again from everything it holds each
//! time any report lands. That is how a refund before its charge still ends right.

use serde_json::{json, Map, Value};

use super::event::{
    decimal_text, DisputeReport, EventRef, PaymentDetails, PaymentReport, RefundReport,
};
use super::lifecycle::{
    dispute_closed, dispute_position, note_refund, payment_status, refund_position, refunded_minor,
    supersedes, ChargeSnapshot, PaymentLifecycle, Position, RefundEntry,
};
use super::row::{integer_cell, json_cell, text_cell, time_cell, RowEdit};
use crate::clock::Timestamp;
use crate::ledger::table::Column;
use crate::ledger::{
    Appended, Cell, ColumnType, Currency, Decision, LedgerError, RowChange, RowWrite, Table,
    WriteTimes,
};

/// Seed 003's `payments`, keyed by (source, `gateway_transaction_id`).
pub static PAYMENTS: Table = Table {
    name: "payments",
    key: &["source", "gateway_transaction_id"],
    columns: &[
        Column::fixed("id", ColumnType::Uuid),
        Column::fixed("source", ColumnType::Text),
        Column::fixed("gateway_transaction_id", ColumnType::Text),
        Column::fixed("gateway", ColumnType::Text),
        Column::updatable("order_id", ColumnType::Text),
        Column::updatable("charge_id", ColumnType::Text),
        Column::updatable("customer", ColumnType::Text),
        Column::updatable("customer_email", ColumnType::Text),
        Column::updatable("description", ColumnType::Text),
        Column::updatable("payment_method", ColumnType::Text),
        Column::updatable("amount", ColumnType::Decimal),
        Column::updatable("amount_minor", ColumnType::Integer),
        Column::updatable("amount_captured_minor", ColumnType::Integer),
        Column::updatable("amount_refunded", ColumnType::Decimal),
        Column::updatable("amount_refunded_minor", ColumnType::Integer),
        Column::updatable("currency", ColumnType::Text),
        Column::updatable("payment_status", ColumnType::Text),
        Column::updatable("lifecycle_status", ColumnType::Text),
        Column::updatable("failure_code", ColumnType::Text),
        Column::updatable("failure_message", ColumnType::Text),
        Column::updatable("captured_at", ColumnType::Timestamp),
        Column::updatable("canceled_at", ColumnType::Timestamp),
        Column::updatable("gateway_response", ColumnType::Json),
        Column::updatable("metadata", ColumnType::Json),
        Column::updatable("refunds", ColumnType::Json),
        Column::updatable("charge_amount_refunded_minor", ColumnType::Integer),
        Column::updatable("charge_reported_at", ColumnType::Timestamp),
        Column::updatable("field_events", ColumnType::Json),
        Column::updatable("status_event_at", ColumnType::Timestamp),
        // What the application expects to be paid (Paystack's expected payments), which a
        // provider's own report of the amount never overwrites.
        Column::updatable("expected_amount_minor", ColumnType::Integer),
        Column::updatable("expected_currency", ColumnType::Text),
        Column::updatable("last_event_id", ColumnType::Text),
        Column::updatable("last_event_at", ColumnType::Timestamp),
        Column::fixed("created_at", ColumnType::Timestamp),
        Column::updatable("updated_at", ColumnType::Timestamp),
    ],
};

/// One row per refund (`re_…`).
pub static REFUNDS: Table = Table {
    name: "refunds",
    key: &["source", "refund_id"],
    columns: &[
        Column::fixed("source", ColumnType::Text),
        Column::fixed("refund_id", ColumnType::Text),
        Column::updatable("gateway_transaction_id", ColumnType::Text),
        Column::updatable("charge_id", ColumnType::Text),
        Column::updatable("amount", ColumnType::Decimal),
        Column::updatable("amount_minor", ColumnType::Integer),
        Column::updatable("currency", ColumnType::Text),
        Column::updatable("status", ColumnType::Text),
        Column::updatable("reason", ColumnType::Text),
        Column::updatable("failure_reason", ColumnType::Text),
        Column::updatable("requested_at", ColumnType::Timestamp),
        Column::updatable("metadata", ColumnType::Json),
        Column::updatable("status_event_at", ColumnType::Timestamp),
        Column::updatable("last_event_id", ColumnType::Text),
        Column::updatable("last_event_at", ColumnType::Timestamp),
        Column::fixed("created_at", ColumnType::Timestamp),
        Column::updatable("updated_at", ColumnType::Timestamp),
    ],
};

/// One row per dispute (`dp_…`).
pub static DISPUTES: Table = Table {
    name: "disputes",
    key: &["source", "dispute_id"],
    columns: &[
        Column::fixed("source", ColumnType::Text),
        Column::fixed("dispute_id", ColumnType::Text),
        Column::updatable("gateway_transaction_id", ColumnType::Text),
        Column::updatable("charge_id", ColumnType::Text),
        Column::updatable("amount", ColumnType::Decimal),
        Column::updatable("amount_minor", ColumnType::Integer),
        Column::updatable("currency", ColumnType::Text),
        Column::updatable("reason", ColumnType::Text),
        Column::updatable("status", ColumnType::Text),
        Column::updatable("evidence_due_by", ColumnType::Timestamp),
        Column::updatable("opened_at", ColumnType::Timestamp),
        Column::updatable("closed_at", ColumnType::Timestamp),
        Column::updatable("status_event_at", ColumnType::Timestamp),
        Column::updatable("last_event_id", ColumnType::Text),
        Column::updatable("last_event_at", ColumnType::Timestamp),
        Column::fixed("created_at", ColumnType::Timestamp),
        Column::updatable("updated_at", ColumnType::Timestamp),
    ],
};

/// Seed 003's status history of orders: the payment status an order moved from and to, and the
/// event that moved it. One row per (event, payment), so a replay appends nothing.
pub static ORDER_STATUS_HISTORY: Table = Table {
    name: "order_status_history",
    key: &["source", "event_id", "gateway_transaction_id"],
    columns: &[
        Column::fixed("source", ColumnType::Text),
        Column::fixed("order_id", ColumnType::Text),
        Column::fixed("gateway_transaction_id", ColumnType::Text),
        Column::fixed("old_payment_status", ColumnType::Text),
        Column::fixed("new_payment_status", ColumnType::Text),
        Column::fixed("event_id", ColumnType::Text),
        Column::fixed("event_type", ColumnType::Text),
        Column::fixed("changed_at", ColumnType::Timestamp),
        Column::fixed("created_at", ColumnType::Timestamp),
    ],
};

/// The key under which a payment's `metadata` lists its disputes.
const DISPUTES_KEY: &str = "disputes";

/// A dispute as its payment's `metadata.disputes` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisputeEntry {
    pub id: String,
    pub amount_minor: i64,
    pub currency: Option<Currency>,
    pub reason: Option<String>,
    pub status: String,
    pub created: Option<Timestamp>,
    pub reported_at: Timestamp,
}

/// What one event does to one payment row.
#[derive(Debug, Clone)]
pub struct PaymentChange {
    pub key: String,
    pub event: EventRef,
    pub lifecycle: Option<PaymentLifecycle>,
    pub captured_at: Option<Timestamp>,
    pub details: PaymentDetails,
    pub amount_refunded_minor: Option<i64>,
    pub refunds: Vec<RefundEntry>,
    pub dispute: Option<DisputeEntry>,
    /// For `gateway_response`.
    pub object: Option<Value>,
}

impl PaymentChange {
    /// A payment intent or charge event, with the refunds a charge embeds.
    pub fn from_payment(report: &PaymentReport, refunds: &[RefundReport]) -> Self {
        Self {
            key: report.key.clone(),
            event: report.event.clone(),
            lifecycle: Some(report.lifecycle),
            captured_at: report.captured_at,
            details: report.details.clone(),
            amount_refunded_minor: report.amount_refunded_minor,
            refunds: refunds.iter().map(RefundReport::entry).collect(),
            dispute: None,
            object: Some(report.object.clone()),
        }
    }

    /// A refund event, for the payment it refunds (if it names one).
    pub fn from_refund(report: &RefundReport) -> Option<Self> {
        Some(Self {
            key: report.payment_key()?.to_owned(),
            event: report.event.clone(),
            lifecycle: None,
            captured_at: None,
            details: PaymentDetails {
                charge_id: report.charge_id.clone(),
                currency: report.currency.clone(),
                ..PaymentDetails::default()
            },
            amount_refunded_minor: None,
            refunds: vec![report.entry()],
            dispute: None,
            object: None,
        })
    }

    /// A dispute event, for the payment it disputes (if it names one).
    pub fn from_dispute(report: &DisputeReport) -> Option<Self> {
        Some(Self {
            key: report.payment_key()?.to_owned(),
            event: report.event.clone(),
            lifecycle: None,
            captured_at: None,
            details: PaymentDetails {
                charge_id: report.charge_id.clone(),
                currency: report.currency.clone(),
                ..PaymentDetails::default()
            },
            amount_refunded_minor: None,
            refunds: Vec::new(),
            dispute: Some(DisputeEntry {
                id: report.dispute_id.clone(),
                amount_minor: report.amount_minor,
                currency: report.currency.clone(),
                reason: report.reason.clone(),
                status: report.status.clone(),
                created: report.created,
                reported_at: report.event.at,
            }),
            object: None,
        })
    }
}

impl RowChange for PaymentChange {
    fn table(&self) -> &'static Table {
        &PAYMENTS
    }

    fn key(&self, source: &str) -> Vec<Cell> {
        vec![Cell::text(source), Cell::text(&self.key)]
    }

    fn decide(
        &self,
        source: &str,
        current: Option<&[Cell]>,
        times: WriteTimes,
    ) -> Result<Decision, LedgerError> {
        let mut row = RowEdit::open(&PAYMENTS, current);
        if row.is_new() {
            row.set("id", Cell::Uuid(uuid::Uuid::now_v7()))?;
            row.set("source", Cell::text(source))?;
            row.set("gateway_transaction_id", Cell::text(&self.key))?;
            row.set("gateway", Cell::text("stripe"))?;
            row.set("created_at", Cell::Timestamp(times.now))?;
        }
        let old_status = row.text("payment_status")?;
        let old_order = row.text("order_id")?;
        let at = self.event.at;
        self.offer_details(&mut row)?;
        self.merge_metadata(&mut row)?;
        if let Some(object) = &self.object {
            row.offer_from("gateway_response", json_cell(object), &self.event)?;
        }
        if let Some(lifecycle) = self.lifecycle {
            let held = match (
                row.text("lifecycle_status")?
                    .and_then(|word| PaymentLifecycle::parse(&word)),
                row.timestamp("status_event_at")?,
            ) {
                (Some(held), Some(held_at)) => Some(held.at(held_at)),
                _ => None,
            };
            if supersedes(lifecycle.at(at), held) {
                row.set("lifecycle_status", Cell::text(lifecycle.as_str()))?;
                row.set("status_event_at", Cell::Timestamp(at))?;
            }
        }
        if let Some(captured_at) = self.captured_at {
            row.earliest("captured_at", captured_at)?;
        }
        if let Some(total) = self.amount_refunded_minor {
            // The newer charge total wins; of two from the same second, the larger.
            let held = (
                row.timestamp("charge_reported_at")?,
                row.integer("charge_amount_refunded_minor")?.unwrap_or(0),
            );
            if held.0.is_none_or(|held_at| (at, total) > (held_at, held.1)) {
                row.set("charge_amount_refunded_minor", Cell::Integer(total))?;
                row.set("charge_reported_at", Cell::Timestamp(at))?;
            }
        }
        let mut refunds = read_refunds(&row.json("refunds")?).ok_or_else(|| corrupt("refunds"))?;
        for refund in &self.refunds {
            note_refund(&mut refunds, refund.clone());
        }
        if !refunds.is_empty() {
            row.set("refunds", json_cell(&refunds_json(&refunds)))?;
        }
        let status = settle(&mut row, &refunds)?;
        row.advance_last(&self.event)?;
        let mut appended = Vec::new();
        if let Some(order) = row.text("order_id")? {
            let linked_now = old_order.is_none();
            if linked_now || old_status.as_deref() != Some(status) {
                let old = if linked_now { None } else { old_status };
                appended.push(self.history(source, &order, old, status, times.now));
            }
        }
        let write = row.finish(times.now)?;
        if write == RowWrite::Unchanged {
            return Ok(write.into());
        }
        Ok(Decision {
            row: write,
            appended,
        })
    }
}

impl PaymentChange {
    fn offer_details(&self, row: &mut RowEdit) -> Result<(), LedgerError> {
        let details = &self.details;
        let event = &self.event;
        let currency = details.currency.as_ref().map(|c| c.code().to_owned());
        let offers = [
            ("order_id", text_cell(&details.order_id)),
            ("charge_id", text_cell(&details.charge_id)),
            ("customer", text_cell(&details.customer)),
            ("customer_email", text_cell(&details.customer_email)),
            ("description", text_cell(&details.description)),
            ("payment_method", text_cell(&details.payment_method)),
            ("amount_minor", integer_cell(details.amount_minor)),
            (
                "amount_captured_minor",
                integer_cell(details.amount_captured_minor),
            ),
            ("currency", text_cell(&currency)),
            ("failure_code", text_cell(&details.failure_code)),
            ("failure_message", text_cell(&details.failure_message)),
            ("canceled_at", time_cell(details.canceled_at)),
        ];
        for (column, cell) in offers {
            row.offer_from(column, cell, event)?;
        }
        Ok(())
    }

    /// The object's own metadata, key by key (each from the newest event that set it), and the
    /// dispute this report is about under `disputes`.
    fn merge_metadata(&self, row: &mut RowEdit) -> Result<(), LedgerError> {
        let mut metadata = row.json_object("metadata")?;
        let before = metadata.clone();
        if let Some(own) = &self.details.metadata {
            for (key, value) in own {
                if key != DISPUTES_KEY && row.claim(&format!("metadata.{key}"), &self.event)? {
                    metadata.insert(key.clone(), value.clone());
                }
            }
        }
        if let Some(dispute) = &self.dispute {
            note_dispute(&mut metadata, dispute).ok_or_else(|| corrupt("metadata"))?;
        }
        let first = row.get("metadata")? == &Cell::Null && self.details.metadata.is_some();
        if metadata != before || first {
            row.set("metadata", json_cell(&Value::Object(metadata)))?;
        }
        Ok(())
    }

    fn history(
        &self,
        source: &str,
        order: &str,
        old: Option<String>,
        new: &str,
        now: Timestamp,
    ) -> Appended {
        Appended {
            table: &ORDER_STATUS_HISTORY,
            row: vec![
                Cell::text(source),
                Cell::text(order),
                Cell::text(&self.key),
                Cell::opt_text(old.as_deref()),
                Cell::text(new),
                Cell::text(&self.event.id),
                Cell::text(&self.event.event_type),
                Cell::Timestamp(self.event.at),
                Cell::Timestamp(now),
            ],
        }
    }
}

/// Computes what follows from everything the row holds: the refunded total, the decimals, and
/// `payment_status`, which it returns.
fn settle(row: &mut RowEdit, refunds: &[RefundEntry]) -> Result<&'static str, LedgerError> {
    let snapshot = match (
        row.integer("charge_amount_refunded_minor")?,
        row.timestamp("charge_reported_at")?,
    ) {
        (Some(amount_refunded_minor), Some(at)) => Some(ChargeSnapshot {
            amount_refunded_minor,
            at,
        }),
        _ => None,
    };
    let refunded = refunded_minor(refunds, snapshot);
    row.set("amount_refunded_minor", Cell::Integer(refunded))?;
    let currency = row
        .text("currency")?
        .and_then(|code| Currency::parse(&code).ok());
    let amount = row.integer("amount_minor")?;
    row.set("amount", decimal(amount, currency.as_ref()))?;
    row.set(
        "amount_refunded",
        decimal(Some(refunded), currency.as_ref()),
    )?;
    let lifecycle = row
        .text("lifecycle_status")?
        .and_then(|word| PaymentLifecycle::parse(&word));
    let refundable = row.integer("amount_captured_minor")?.or(amount);
    let status = payment_status(lifecycle, refunded, refundable);
    row.set("payment_status", Cell::text(status))?;
    Ok(status)
}

/// An amount as the `Decimal` column holds it; nothing without a currency to scale it by.
fn decimal(minor: Option<i64>, currency: Option<&Currency>) -> Cell {
    match (minor, currency) {
        (Some(minor), Some(currency)) => Cell::Decimal(decimal_text(minor, currency)),
        _ => Cell::Null,
    }
}

fn corrupt(column: &'static str) -> LedgerError {
    LedgerError::Corrupt(crate::ledger::CorruptRow {
        table: PAYMENTS.name,
        column,
    })
}

fn seconds(at: Option<Timestamp>) -> Value {
    at.map_or(Value::Null, |at| Value::from(at.unix_seconds()))
}

fn from_seconds(value: Option<&Value>) -> Option<Option<Timestamp>> {
    match value {
        None | Some(Value::Null) => Some(None),
        Some(value) => value
            .as_i64()
            .map(|s| Some(Timestamp::from_unix_seconds(s))),
    }
}

/// `refunds` as stored: `[{"id","amount","status","created","reported_at"}]`, times in unix
/// seconds as Stripe writes them.
fn refunds_json(refunds: &[RefundEntry]) -> Value {
    Value::Array(
        refunds
            .iter()
            .map(|refund| {
                json!({
                    "id": refund.id,
                    "amount": refund.amount_minor,
                    "status": refund.status,
                    "created": seconds(refund.created),
                    "reported_at": refund.reported_at.unix_seconds(),
                })
            })
            .collect(),
    )
}

fn read_refunds(value: &Value) -> Option<Vec<RefundEntry>> {
    let items = match value {
        Value::Null => return Some(Vec::new()),
        Value::Array(items) => items,
        _ => return None,
    };
    items
        .iter()
        .map(|item| {
            Some(RefundEntry {
                id: item.get("id")?.as_str()?.to_owned(),
                amount_minor: item.get("amount")?.as_i64()?,
                status: item.get("status")?.as_str()?.to_owned(),
                created: from_seconds(item.get("created"))?,
                reported_at: Timestamp::from_unix_seconds(item.get("reported_at")?.as_i64()?),
            })
        })
        .collect()
}

/// Adds or updates a dispute in `metadata.disputes`, the newer report of its status winning.
/// `None` when the list is not one this code wrote.
fn note_dispute(metadata: &mut Map<String, Value>, dispute: &DisputeEntry) -> Option<()> {
    let list = metadata
        .entry(DISPUTES_KEY)
        .or_insert_with(|| Value::Array(Vec::new()));
    let Value::Array(list) = list else {
        return None;
    };
    let entry = json!({
        "id": dispute.id,
        "amount": dispute.amount_minor,
        "currency": dispute.currency.as_ref().map(|c| c.code().to_ascii_lowercase()),
        "reason": dispute.reason,
        "status": dispute.status,
        "created": seconds(dispute.created),
        "reported_at": dispute.reported_at.unix_seconds(),
    });
    let held = list
        .iter_mut()
        .find(|held| held.get("id").and_then(Value::as_str) == Some(dispute.id.as_str()));
    match held {
        None => list.push(entry),
        Some(held) => {
            let held_position = dispute_position(
                held.get("status")?.as_str()?,
                Timestamp::from_unix_seconds(held.get("reported_at")?.as_i64()?),
            );
            if supersedes(
                dispute_position(&dispute.status, dispute.reported_at),
                Some(held_position),
            ) {
                *held = entry;
            }
        }
    }
    Some(())
}

/// What one refund event (or a refund a charge embeds) does to its `refunds` row.
#[derive(Debug, Clone)]
pub struct RefundChange(pub RefundReport);

impl RowChange for RefundChange {
    fn table(&self) -> &'static Table {
        &REFUNDS
    }

    fn key(&self, source: &str) -> Vec<Cell> {
        vec![Cell::text(source), Cell::text(&self.0.refund_id)]
    }

    fn decide(
        &self,
        source: &str,
        current: Option<&[Cell]>,
        times: WriteTimes,
    ) -> Result<Decision, LedgerError> {
        let report = &self.0;
        let at = report.event.at;
        let (mut row, newer) = open_movement(
            RowEdit::open(&REFUNDS, current),
            ("refund_id", &report.refund_id),
            source,
            times,
            Movement {
                event: &report.event,
                payment_key: report.payment_key(),
                charge_id: &report.charge_id,
                amount_minor: report.amount_minor,
                currency: &report.currency,
                reason: &report.reason,
            },
        )?;
        row.offer("failure_reason", text_cell(&report.failure_reason), newer)?;
        row.offer("requested_at", time_cell(report.created), newer)?;
        if let Some(metadata) = &report.metadata {
            row.offer(
                "metadata",
                json_cell(&Value::Object(metadata.clone())),
                newer,
            )?;
        }
        settle_status(&mut row, &report.status, at, refund_position)?;
        finish_movement(row, &report.event, times)
    }
}

/// What a refund and a dispute share: the payment and charge they are against, and how much.
struct Movement<'a> {
    event: &'a EventRef,
    payment_key: Option<&'a str>,
    charge_id: &'a Option<String>,
    amount_minor: i64,
    currency: &'a Option<Currency>,
    reason: &'a Option<String>,
}

/// Opens a refund's or a dispute's row (a new one gets its key, `(id column, id)`, and its
/// creation time) and offers what both share; returns it with whether this report is newer
/// than the last one applied.
fn open_movement(
    mut row: RowEdit,
    (id_column, id): (&'static str, &str),
    source: &str,
    times: WriteTimes,
    movement: Movement<'_>,
) -> Result<(RowEdit, bool), LedgerError> {
    if row.is_new() {
        row.set("source", Cell::text(source))?;
        row.set(id_column, Cell::text(id))?;
        row.set("created_at", Cell::Timestamp(times.now))?;
    }
    let newer = row.newer_than_last(movement.event)?;
    row.offer(
        "gateway_transaction_id",
        text_cell(&movement.payment_key.map(str::to_owned)),
        newer,
    )?;
    row.offer("charge_id", text_cell(movement.charge_id), newer)?;
    row.offer("amount_minor", Cell::Integer(movement.amount_minor), newer)?;
    let currency = movement.currency.as_ref().map(|c| c.code().to_owned());
    row.offer("currency", text_cell(&currency), newer)?;
    row.offer("reason", text_cell(movement.reason), newer)?;
    Ok((row, newer))
}

/// Takes `status`, reported at `at`, if it supersedes the one held.
fn settle_status(
    row: &mut RowEdit,
    status: &str,
    at: Timestamp,
    position: fn(&str, Timestamp) -> Position,
) -> Result<(), LedgerError> {
    if supersedes(position(status, at), held_position(row, position)?) {
        row.set("status", Cell::text(status))?;
        row.set("status_event_at", Cell::Timestamp(at))?;
    }
    Ok(())
}

/// Derives the decimal `amount` from what the row holds, records `event` as the last applied
/// and finishes the row.
fn finish_movement(
    mut row: RowEdit,
    event: &EventRef,
    times: WriteTimes,
) -> Result<Decision, LedgerError> {
    let currency = row.text("currency")?.and_then(|c| Currency::parse(&c).ok());
    let amount = row.integer("amount_minor")?;
    row.set("amount", decimal(amount, currency.as_ref()))?;
    row.advance_last(event)?;
    Ok(row.finish(times.now)?.into())
}

/// Where the stored `status` stands, reported at `status_event_at`.
fn held_position(
    row: &RowEdit,
    position: fn(&str, Timestamp) -> Position,
) -> Result<Option<Position>, LedgerError> {
    Ok(
        match (row.text("status")?, row.timestamp("status_event_at")?) {
            (Some(status), Some(at)) => Some(position(&status, at)),
            _ => None,
        },
    )
}

/// What one dispute event does to its `disputes` row.
#[derive(Debug, Clone)]
pub struct DisputeChange(pub DisputeReport);

impl RowChange for DisputeChange {
    fn table(&self) -> &'static Table {
        &DISPUTES
    }

    fn key(&self, source: &str) -> Vec<Cell> {
        vec![Cell::text(source), Cell::text(&self.0.dispute_id)]
    }

    fn decide(
        &self,
        source: &str,
        current: Option<&[Cell]>,
        times: WriteTimes,
    ) -> Result<Decision, LedgerError> {
        let report = &self.0;
        let at = report.event.at;
        let (mut row, newer) = open_movement(
            RowEdit::open(&DISPUTES, current),
            ("dispute_id", &report.dispute_id),
            source,
            times,
            Movement {
                event: &report.event,
                payment_key: report.payment_key(),
                charge_id: &report.charge_id,
                amount_minor: report.amount_minor,
                currency: &report.currency,
                reason: &report.reason,
            },
        )?;
        row.offer("evidence_due_by", time_cell(report.evidence_due_by), newer)?;
        row.offer("opened_at", time_cell(report.created), newer)?;
        settle_status(&mut row, &report.status, at, dispute_position)?;
        if dispute_closed(&report.status) {
            row.earliest("closed_at", at)?;
        }
        finish_movement(row, &report.event, times)
    }
}
