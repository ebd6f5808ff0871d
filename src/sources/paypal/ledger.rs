//! PayPal in the ledger Stripe writes: one `payments` row per capture (`gateway = 'paypal'`,
//! `gateway_transaction_id` = the capture id) and one `subscriptions` row per subscription.
//! Only the columns listed here are written; the database defaults the rest.
//!
//! PayPal does not promise order, so each row keeps the `create_time` of the event behind its
//! status (`status_event_at`): an older event never overwrites a newer status, and refunds are
//! kept one by one (`refunds`) so that the refunded total is the same in any order.

use std::ops::{Deref, DerefMut};

use serde_json::{Map, Value};

use super::event::{
    CaptureReport, EventRef, OrderReport, RefundReport, Report, SubscriptionReport,
};
use crate::clock::Timestamp;
use crate::ledger::edit::RowEdit;
use crate::ledger::table::Column;
use crate::ledger::{
    Cell, ColumnType, Currency, Decision, LedgerError, Money, RowChange, RowWrite, Table,
    WriteTimes,
};

const GATEWAY: &str = "paypal";

/// The columns of seed 003's `payments` that PayPal fills.
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
        Column::updatable("customer_email", ColumnType::Text),
        Column::updatable("amount", ColumnType::Decimal),
        Column::updatable("amount_minor", ColumnType::Integer),
        Column::updatable("amount_refunded", ColumnType::Decimal),
        Column::updatable("amount_refunded_minor", ColumnType::Integer),
        Column::updatable("currency", ColumnType::Text),
        Column::updatable("payment_status", ColumnType::Text),
        Column::updatable("lifecycle_status", ColumnType::Text),
        Column::updatable("captured_at", ColumnType::Timestamp),
        Column::updatable("gateway_response", ColumnType::Json),
        Column::updatable("refunds", ColumnType::Json),
        Column::updatable("status_event_at", ColumnType::Timestamp),
        Column::updatable("last_event_id", ColumnType::Text),
        Column::updatable("last_event_at", ColumnType::Timestamp),
        Column::fixed("created_at", ColumnType::Timestamp),
        Column::updatable("updated_at", ColumnType::Timestamp),
    ],
};

/// The columns of seed 004's `subscriptions` that PayPal fills.
pub static SUBSCRIPTIONS: Table = Table {
    name: "subscriptions",
    key: &["source", "subscription_id"],
    columns: &[
        Column::fixed("source", ColumnType::Text),
        Column::fixed("subscription_id", ColumnType::Text),
        Column::updatable("customer", ColumnType::Text),
        Column::updatable("email", ColumnType::Text),
        Column::updatable("user_id", ColumnType::Text),
        Column::updatable("status", ColumnType::Text),
        Column::updatable("plan", ColumnType::Text),
        Column::updatable("started_at", ColumnType::Timestamp),
        Column::updatable("current_period_end", ColumnType::Timestamp),
        Column::updatable("canceled_at", ColumnType::Timestamp),
        Column::updatable("ended_at", ColumnType::Timestamp),
        Column::updatable("status_event_at", ColumnType::Timestamp),
        Column::updatable("last_event_id", ColumnType::Text),
        Column::updatable("last_event_at", ColumnType::Timestamp),
        Column::fixed("created_at", ColumnType::Timestamp),
        Column::updatable("updated_at", ColumnType::Timestamp),
    ],
};

/// A completed capture's mark on the row of the order it captures (keyed by the order id):
/// `captured`, with the capture id as `charge_id`, so that an approved order and its capture
/// are not both counted as paid, whichever event comes first.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderCaptured {
    pub event: EventRef,
    pub order_id: String,
    pub capture_id: String,
}

impl RowChange for OrderCaptured {
    fn table(&self) -> &'static Table {
        &PAYMENTS
    }

    fn key(&self, source: &str) -> Vec<Cell> {
        vec![Cell::text(source), Cell::text(&self.order_id)]
    }

    fn decide(
        &self,
        source: &str,
        current: Option<&[Cell]>,
        times: WriteTimes,
    ) -> Result<Decision, LedgerError> {
        let mut row = Row::open(&PAYMENTS, current);
        row.open_payment(source, &self.order_id, times.now)?;
        row.set("order_id", Cell::text(&self.order_id))?;
        row.mark_order_captured(&self.capture_id, &self.event)?;
        Ok(Decision::from(row.finish(&self.event, times.now)?))
    }
}

/// What one event does to one row.
#[derive(Debug, Clone, PartialEq)]
pub struct PaypalChange {
    pub event: EventRef,
    pub report: Report,
}

impl PaypalChange {
    fn row_key(&self) -> &str {
        match &self.report {
            Report::Capture(capture) => &capture.capture_id,
            Report::Order(order) => &order.order_id,
            Report::Refund(refund) => &refund.capture_id,
            Report::Subscription(subscription) => &subscription.subscription_id,
        }
    }
}

impl RowChange for PaypalChange {
    fn table(&self) -> &'static Table {
        match self.report {
            Report::Subscription(_) => &SUBSCRIPTIONS,
            _ => &PAYMENTS,
        }
    }

    fn key(&self, source: &str) -> Vec<Cell> {
        vec![Cell::text(source), Cell::text(self.row_key())]
    }

    fn decide(
        &self,
        source: &str,
        current: Option<&[Cell]>,
        times: WriteTimes,
    ) -> Result<Decision, LedgerError> {
        let mut row = Row::open(self.table(), current);
        let write = match &self.report {
            Report::Capture(capture) => {
                row.open_payment(source, &capture.capture_id, times.now)?;
                row.capture(capture, &self.event)?;
                row.settle_payment()?;
                row.finish(&self.event, times.now)?
            }
            Report::Order(order) => {
                row.open_payment(source, &order.order_id, times.now)?;
                row.order(order, &self.event)?;
                row.finish(&self.event, times.now)?
            }
            Report::Refund(refund) => {
                row.open_payment(source, &refund.capture_id, times.now)?;
                row.refund(refund, &self.event)?;
                row.settle_payment()?;
                row.finish(&self.event, times.now)?
            }
            Report::Subscription(subscription) => {
                if row.is_new() {
                    row.set("source", Cell::text(source))?;
                    row.set("subscription_id", Cell::text(&subscription.subscription_id))?;
                    row.set("created_at", Cell::Timestamp(times.now))?;
                }
                row.subscription(subscription, &self.event)?;
                row.finish(&self.event, times.now)?
            }
        };
        Ok(Decision::from(write))
    }
}

/// One row being decided, by column name.
/// The ledger's row editor, with PayPal's reading of captures, refunds and subscriptions.
struct Row(RowEdit);

impl Deref for Row {
    type Target = RowEdit;

    fn deref(&self) -> &RowEdit {
        &self.0
    }
}

impl DerefMut for Row {
    fn deref_mut(&mut self) -> &mut RowEdit {
        &mut self.0
    }
}

impl Row {
    fn open(table: &'static Table, current: Option<&[Cell]>) -> Self {
        Self(RowEdit::open(table, current))
    }

    /// Whether `event` is at least as new as the one behind the row's status.
    fn newer_status(&self, event: &EventRef) -> Result<bool, LedgerError> {
        Ok(self
            .timestamp("status_event_at")?
            .is_none_or(|held| event.at >= held))
    }

    fn open_payment(
        &mut self,
        source: &str,
        capture_id: &str,
        now: Timestamp,
    ) -> Result<(), LedgerError> {
        if self.is_new() {
            self.set("id", Cell::Uuid(uuid::Uuid::now_v7()))?;
            self.set("source", Cell::text(source))?;
            self.set("gateway_transaction_id", Cell::text(capture_id))?;
            self.set("gateway", Cell::text(GATEWAY))?;
            self.set("amount_refunded_minor", Cell::Integer(0))?;
            self.set("created_at", Cell::Timestamp(now))?;
        }
        Ok(())
    }

    fn capture(&mut self, capture: &CaptureReport, event: &EventRef) -> Result<(), LedgerError> {
        let newer = self.newer_status(event)?;
        if newer {
            self.set("lifecycle_status", Cell::text(capture.lifecycle.as_str()))?;
            self.set("status_event_at", Cell::Timestamp(event.at))?;
            self.set("gateway_response", Cell::Json(capture.resource.to_string()))?;
        }
        self.offer(
            "order_id",
            Cell::opt_text(capture.order_id.as_deref()),
            newer,
        )?;
        if let Some(amount) = &capture.amount {
            self.offer("amount", Cell::Decimal(amount.to_decimal_string()), newer)?;
            self.offer("amount_minor", Cell::Integer(amount.minor_units), newer)?;
            self.offer("currency", Cell::text(amount.currency.code()), newer)?;
        }
        if let Some(captured_at) = capture.captured_at {
            self.offer("captured_at", Cell::Timestamp(captured_at), false)?;
        }
        Ok(())
    }

    /// An approved order: `pending` (approved, not captured) unless its capture is known, in
    /// which case it stays `captured`.
    fn order(&mut self, order: &OrderReport, event: &EventRef) -> Result<(), LedgerError> {
        let newer = self.newer_status(event)?;
        self.set("order_id", Cell::text(&order.order_id))?;
        self.offer(
            "customer_email",
            Cell::opt_text(order.payer_email.as_deref()),
            newer,
        )?;
        if let Some(amount) = &order.amount {
            self.offer("amount", Cell::Decimal(amount.to_decimal_string()), newer)?;
            self.offer("amount_minor", Cell::Integer(amount.minor_units), newer)?;
            self.offer("currency", Cell::text(amount.currency.code()), newer)?;
        }
        let captured = self.text("lifecycle_status")?.as_deref() == Some("captured");
        if newer && !captured {
            self.set("gateway_response", Cell::Json(order.resource.to_string()))?;
            self.set("status_event_at", Cell::Timestamp(event.at))?;
            let (lifecycle, status) = if order.captured {
                ("captured", "captured")
            } else {
                ("approved", "pending")
            };
            self.set("lifecycle_status", Cell::text(lifecycle))?;
            self.set("payment_status", Cell::text(status))?;
        }
        Ok(())
    }

    fn mark_order_captured(
        &mut self,
        capture_id: &str,
        event: &EventRef,
    ) -> Result<(), LedgerError> {
        self.set("lifecycle_status", Cell::text("captured"))?;
        self.set("payment_status", Cell::text("captured"))?;
        self.set("charge_id", Cell::text(capture_id))?;
        if self.timestamp("status_event_at")?.is_none() {
            self.set("status_event_at", Cell::Timestamp(event.at))?;
        }
        Ok(())
    }

    /// Keeps the refund in `refunds` (by refund id, the newer report of it winning).
    fn refund(&mut self, refund: &RefundReport, event: &EventRef) -> Result<(), LedgerError> {
        let mut refunds = self.refunds()?;
        let held_at = refunds
            .get(&refund.refund_id)
            .and_then(|held| held.get("event_at"))
            .and_then(Value::as_i64);
        if held_at.is_none_or(|held_at| event.at.micros() >= held_at) {
            let mut entry = Map::new();
            entry.insert(
                "amount_minor".into(),
                refund.amount.as_ref().map(|a| a.minor_units).into(),
            );
            entry.insert("status".into(), refund.status.clone().into());
            entry.insert("reversal".into(), refund.reversal.into());
            entry.insert("event_id".into(), event.id.clone().into());
            entry.insert("event_at".into(), event.at.micros().into());
            refunds.insert(refund.refund_id.clone(), Value::Object(entry));
            self.set("refunds", Cell::Json(Value::Object(refunds).to_string()))?;
        }
        if let Some(amount) = &refund.amount {
            self.offer("currency", Cell::text(amount.currency.code()), false)?;
        }
        Ok(())
    }

    fn refunds(&self) -> Result<Map<String, Value>, LedgerError> {
        match self.text("refunds")? {
            None => Ok(Map::new()),
            Some(text) => match serde_json::from_str(&text) {
                Ok(Value::Object(map)) => Ok(map),
                _ => Err(self.corrupt("refunds")),
            },
        }
    }

    /// `payment_status` from the capture's lifecycle and the completed refunds: refunds are
    /// laid over it, so a late or older capture event cannot undo a refund.
    fn settle_payment(&mut self) -> Result<(), LedgerError> {
        let refunded: i64 = self
            .refunds()?
            .values()
            .filter(|refund| refund.get("status").and_then(Value::as_str) == Some("completed"))
            .filter_map(|refund| refund.get("amount_minor").and_then(Value::as_i64))
            .fold(0, i64::saturating_add);
        self.set("amount_refunded_minor", Cell::Integer(refunded))?;
        let currency = self
            .text("currency")?
            .and_then(|code| Currency::parse(&code).ok());
        if let Some(currency) = currency.filter(|_| refunded > 0) {
            let decimal = Money {
                minor_units: refunded,
                currency,
            }
            .to_decimal_string();
            self.set("amount_refunded", Cell::Decimal(decimal))?;
        }
        let amount = self.integer("amount_minor")?;
        let status = if refunded > 0 {
            match amount {
                Some(amount) if refunded < amount => "partially_refunded".to_owned(),
                _ => "refunded".to_owned(),
            }
        } else {
            self.text("lifecycle_status")?
                .unwrap_or_else(|| "pending".to_owned())
        };
        self.set("payment_status", Cell::text(status))
    }

    fn subscription(
        &mut self,
        subscription: &SubscriptionReport,
        event: &EventRef,
    ) -> Result<(), LedgerError> {
        let newer = self.newer_status(event)?;
        if newer {
            self.set("status", Cell::text(&subscription.status))?;
            self.set("status_event_at", Cell::Timestamp(event.at))?;
            let changed_at = subscription.status_changed_at.unwrap_or(event.at);
            match subscription.status.as_str() {
                "canceled" => self.offer("canceled_at", Cell::Timestamp(changed_at), false)?,
                "expired" => self.offer("ended_at", Cell::Timestamp(changed_at), false)?,
                _ => {}
            }
        }
        let text = |value: &Option<String>| Cell::opt_text(value.as_deref());
        let time = |value: Option<Timestamp>| value.map_or(Cell::Null, Cell::Timestamp);
        self.offer("customer", text(&subscription.payer_id), newer)?;
        self.offer("email", text(&subscription.email), newer)?;
        self.offer("user_id", text(&subscription.custom_id), newer)?;
        self.offer("plan", text(&subscription.plan_id), newer)?;
        self.offer("started_at", time(subscription.started_at), newer)?;
        self.offer(
            "current_period_end",
            time(subscription.next_billing_at),
            newer,
        )?;
        Ok(())
    }

    /// Records `event` as the row's newest (if it is), and the write this comes to: nothing
    /// when no column but `updated_at` would change. Decimals are left out of the comparison
    /// (SQLite gives `20.00` back as `20`); their minor-unit columns carry the value.
    fn finish(mut self, event: &EventRef, now: Timestamp) -> Result<RowWrite, LedgerError> {
        let last_at = self.timestamp("last_event_at")?;
        if last_at.is_none_or(|last_at| event.at >= last_at) {
            self.set("last_event_id", Cell::text(&event.id))?;
            self.set("last_event_at", Cell::Timestamp(event.at))?;
        }
        self.0.finish(now)
    }
}
