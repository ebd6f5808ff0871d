//! Stripe subscriptions in the ledger: `subscriptions`, one row per subscription, and
//! `user_plans`, seed 004's "user subscription" (plan, period, active or not), one row per Stripe
//! customer. Subscription events carry the whole subscription and are applied in lifecycle order
//! ([`subscription_position`]); invoice events add the latest invoice and fill what the
//! subscription's own events have not said yet, and `invoice.paid` activates the plan.

use serde_json::Value;

use super::event::{decimal_text, EventRef, InvoiceReport, PlanDetails, SubscriptionReport};
use super::lifecycle::{
    subscription_ended, subscription_grants_plan, subscription_position, supersedes,
};
use super::row::{integer_cell, json_cell, text_cell, time_cell, RowEdit};
use crate::clock::Timestamp;
use crate::ledger::table::Column;
use crate::ledger::{
    Cell, ColumnType, Currency, Decision, LedgerError, RowChange, Table, WriteTimes,
};

/// One row per subscription (`sub_…`).
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
        Column::updatable("price_id", ColumnType::Text),
        Column::updatable("plan", ColumnType::Text),
        Column::updatable("amount", ColumnType::Decimal),
        Column::updatable("amount_minor", ColumnType::Integer),
        Column::updatable("currency", ColumnType::Text),
        Column::updatable("interval", ColumnType::Text),
        Column::updatable("current_period_start", ColumnType::Timestamp),
        Column::updatable("current_period_end", ColumnType::Timestamp),
        Column::updatable("started_at", ColumnType::Timestamp),
        Column::updatable("cancel_at", ColumnType::Timestamp),
        Column::updatable("canceled_at", ColumnType::Timestamp),
        Column::updatable("ended_at", ColumnType::Timestamp),
        Column::updatable("latest_invoice_id", ColumnType::Text),
        Column::updatable("latest_invoice_status", ColumnType::Text),
        Column::updatable("latest_invoice_at", ColumnType::Timestamp),
        Column::updatable("metadata", ColumnType::Json),
        Column::updatable("field_events", ColumnType::Json),
        Column::updatable("status_event_at", ColumnType::Timestamp),
        Column::updatable("last_event_id", ColumnType::Text),
        Column::updatable("last_event_at", ColumnType::Timestamp),
        Column::fixed("created_at", ColumnType::Timestamp),
        Column::updatable("updated_at", ColumnType::Timestamp),
    ],
};

/// Seed 004's user subscription: the customer's plan, active while a subscription grants it.
/// Keyed by the Stripe customer, the one key every subscription and invoice event carries; the
/// application's own `user_id` and `email` (from metadata and invoices) sit beside it.
pub static USER_PLANS: Table = Table {
    name: "user_plans",
    key: &["source", "customer"],
    columns: &[
        Column::fixed("source", ColumnType::Text),
        Column::fixed("customer", ColumnType::Text),
        Column::updatable("email", ColumnType::Text),
        Column::updatable("user_id", ColumnType::Text),
        Column::updatable("plan", ColumnType::Text),
        Column::updatable("price_id", ColumnType::Text),
        Column::updatable("plan_status", ColumnType::Text),
        Column::updatable("subscription_id", ColumnType::Text),
        Column::updatable("subscription_status", ColumnType::Text),
        Column::updatable("current_period_start", ColumnType::Timestamp),
        Column::updatable("current_period_end", ColumnType::Timestamp),
        Column::updatable("activated_at", ColumnType::Timestamp),
        Column::updatable("deactivated_at", ColumnType::Timestamp),
        Column::updatable("field_events", ColumnType::Json),
        Column::updatable("status_event_at", ColumnType::Timestamp),
        Column::updatable("last_event_id", ColumnType::Text),
        Column::updatable("last_event_at", ColumnType::Timestamp),
        Column::fixed("created_at", ColumnType::Timestamp),
        Column::updatable("updated_at", ColumnType::Timestamp),
    ],
};

/// The event a billing change comes from.
#[derive(Debug, Clone)]
pub enum BillingReport {
    Subscription(Box<SubscriptionReport>),
    Invoice(Box<InvoiceReport>),
}

impl BillingReport {
    fn event(&self) -> &EventRef {
        match self {
            Self::Subscription(report) => &report.event,
            Self::Invoice(report) => &report.event,
        }
    }

    fn customer(&self) -> &str {
        match self {
            Self::Subscription(report) => &report.customer,
            Self::Invoice(report) => &report.customer,
        }
    }

    fn plan(&self) -> &PlanDetails {
        match self {
            Self::Subscription(report) => &report.plan,
            Self::Invoice(report) => &report.plan,
        }
    }

    fn email(&self) -> &Option<String> {
        match self {
            Self::Subscription(report) => &report.email,
            Self::Invoice(report) => &report.email,
        }
    }

    fn user_id(&self) -> &Option<String> {
        match self {
            Self::Subscription(report) => &report.user_id,
            Self::Invoice(report) => &report.user_id,
        }
    }

    fn period(&self) -> (Option<Timestamp>, Option<Timestamp>) {
        match self {
            Self::Subscription(report) => (report.period_start, report.period_end),
            Self::Invoice(report) => (report.period_start, report.period_end),
        }
    }
}

/// What one subscription or invoice event does to its `subscriptions` row.
#[derive(Debug, Clone)]
pub struct SubscriptionChange {
    pub subscription_id: String,
    pub report: BillingReport,
}

impl RowChange for SubscriptionChange {
    fn table(&self) -> &'static Table {
        &SUBSCRIPTIONS
    }

    fn key(&self, source: &str) -> Vec<Cell> {
        vec![Cell::text(source), Cell::text(&self.subscription_id)]
    }

    fn decide(
        &self,
        source: &str,
        current: Option<&[Cell]>,
        times: WriteTimes,
    ) -> Result<Decision, LedgerError> {
        let event = self.report.event();
        let at = event.at;
        let mut row = RowEdit::open(&SUBSCRIPTIONS, current);
        if row.is_new() {
            row.set("source", Cell::text(source))?;
            row.set("subscription_id", Cell::text(&self.subscription_id))?;
            row.set("created_at", Cell::Timestamp(times.now))?;
        }
        row.offer_from("customer", Cell::text(self.report.customer()), event)?;
        row.offer_from("email", text_cell(self.report.email()), event)?;
        row.offer_from("user_id", text_cell(self.report.user_id()), event)?;
        let (period_start, period_end) = self.report.period();
        match &self.report {
            BillingReport::Subscription(report) => {
                let held = match (row.text("status")?, row.timestamp("status_event_at")?) {
                    (Some(status), Some(held_at)) => Some(subscription_position(&status, held_at)),
                    _ => None,
                };
                if supersedes(subscription_position(&report.status, at), held) {
                    row.set("status", Cell::text(&report.status))?;
                    row.set("status_event_at", Cell::Timestamp(at))?;
                    // The report that says where the subscription stands also says whether a
                    // cancellation is scheduled or done (null included).
                    row.set("cancel_at", time_cell(report.cancel_at))?;
                    row.set("canceled_at", time_cell(report.canceled_at))?;
                    row.set("ended_at", time_cell(report.ended_at))?;
                }
                offer_plan(&mut row, &report.plan, event, RowEdit::offer_from)?;
                row.offer_from("current_period_start", time_cell(period_start), event)?;
                row.offer_from("current_period_end", time_cell(period_end), event)?;
                row.offer_from("started_at", time_cell(report.started_at), event)?;
                if let Some(metadata) = &report.metadata {
                    let metadata = Value::Object(metadata.clone());
                    row.offer_from("metadata", json_cell(&metadata), event)?;
                }
            }
            BillingReport::Invoice(report) => {
                let held_at = row.timestamp("latest_invoice_at")?;
                let held_id = row.text("latest_invoice_id")?.unwrap_or_default();
                let newer = held_at.is_none_or(|held_at| {
                    (at, report.invoice_id.as_str()) >= (held_at, held_id.as_str())
                });
                if newer {
                    row.set("latest_invoice_id", Cell::text(&report.invoice_id))?;
                    row.set("latest_invoice_status", Cell::text(report.status()))?;
                    row.set("latest_invoice_at", Cell::Timestamp(at))?;
                }
                // An invoice line may be a proration or another item: the subscription's own
                // events say what it is, an invoice only until they have.
                offer_plan(&mut row, &report.plan, event, RowEdit::offer_fallback)?;
                row.offer_fallback("current_period_start", time_cell(period_start), event)?;
                row.offer_fallback("current_period_end", time_cell(period_end), event)?;
            }
        }
        let currency = row.text("currency")?.and_then(|c| Currency::parse(&c).ok());
        let amount = match (row.integer("amount_minor")?, currency) {
            (Some(minor), Some(currency)) => Cell::Decimal(decimal_text(minor, &currency)),
            _ => Cell::Null,
        };
        row.set("amount", amount)?;
        row.advance_last(event)?;
        Ok(row.finish(times.now)?.into())
    }
}

type Offer = fn(&mut RowEdit, &'static str, Cell, &EventRef) -> Result<(), LedgerError>;

fn offer_plan(
    row: &mut RowEdit,
    plan: &PlanDetails,
    event: &EventRef,
    offer: Offer,
) -> Result<(), LedgerError> {
    let currency = plan.currency.as_ref().map(|c| c.code().to_owned());
    offer(row, "price_id", text_cell(&plan.price_id), event)?;
    offer(row, "plan", text_cell(&plan.plan), event)?;
    offer(
        row,
        "amount_minor",
        integer_cell(plan.unit_amount_minor),
        event,
    )?;
    offer(row, "currency", text_cell(&currency), event)?;
    offer(row, "interval", text_cell(&plan.interval), event)
}

/// What one subscription or invoice event does to its customer's `user_plans` row.
#[derive(Debug, Clone)]
pub struct PlanChange {
    pub subscription_id: String,
    pub report: BillingReport,
}

impl RowChange for PlanChange {
    fn table(&self) -> &'static Table {
        &USER_PLANS
    }

    fn key(&self, source: &str) -> Vec<Cell> {
        vec![Cell::text(source), Cell::text(self.report.customer())]
    }

    /// The plan follows one subscription at a time: reports about it apply in lifecycle order;
    /// another subscription of the same customer takes the plan over only when it grants it and
    /// the plan is inactive or its report is newer. `invoice.paid` counts as "active" unless the
    /// subscription already grants the plan (or has ended: then it changes nothing).
    fn decide(
        &self,
        source: &str,
        current: Option<&[Cell]>,
        times: WriteTimes,
    ) -> Result<Decision, LedgerError> {
        let event = self.report.event();
        let at = event.at;
        let mut row = RowEdit::open(&USER_PLANS, current);
        if row.is_new() {
            row.set("source", Cell::text(source))?;
            row.set("customer", Cell::text(self.report.customer()))?;
            row.set("created_at", Cell::Timestamp(times.now))?;
        }
        row.offer_from("email", text_cell(self.report.email()), event)?;
        row.offer_from("user_id", text_cell(self.report.user_id()), event)?;
        let held_subscription = row.text("subscription_id")?;
        let held_status = row.text("subscription_status")?;
        let held_at = row.timestamp("status_event_at")?;
        let was_active = row.text("plan_status")?.as_deref() == Some("active");
        let same = held_subscription
            .as_deref()
            .is_none_or(|held| held == self.subscription_id);
        let reported_status = match &self.report {
            BillingReport::Subscription(report) => Some(report.status.as_str()),
            BillingReport::Invoice(report) if report.paid => {
                let granted = same && held_status.as_deref().is_some_and(subscription_grants_plan);
                (!granted).then_some("active")
            }
            BillingReport::Invoice(_) => None,
        };
        let applies = reported_status.is_some_and(|status| {
            if same {
                let held = held_status
                    .as_deref()
                    .zip(held_at)
                    .map(|(held, held_at)| subscription_position(held, held_at));
                supersedes(subscription_position(status, at), held)
            } else {
                subscription_grants_plan(status) && (!was_active || held_at.is_none_or(|t| at > t))
            }
        });
        if let (true, Some(status)) = (applies, reported_status) {
            let active = subscription_grants_plan(status);
            row.set("subscription_id", Cell::text(&self.subscription_id))?;
            row.set("subscription_status", Cell::text(status))?;
            row.set("status_event_at", Cell::Timestamp(at))?;
            row.set(
                "plan_status",
                Cell::text(if active { "active" } else { "inactive" }),
            )?;
            if active && !was_active {
                row.set("activated_at", Cell::Timestamp(at))?;
            }
            if !active && (was_active || subscription_ended(status)) {
                row.set("deactivated_at", Cell::Timestamp(at))?;
            }
        } else if row.is_new() {
            row.set("subscription_id", Cell::text(&self.subscription_id))?;
            row.set("plan_status", Cell::text("inactive"))?;
        }
        let plan = self.report.plan();
        let (period_start, period_end) = self.report.period();
        let offers = [
            ("plan", text_cell(&plan.plan)),
            ("price_id", text_cell(&plan.price_id)),
            ("current_period_start", time_cell(period_start)),
            ("current_period_end", time_cell(period_end)),
        ];
        let switched = applies && !same;
        let own = row.text("subscription_id")?.as_deref() == Some(self.subscription_id.as_str());
        let offer: Option<Offer> = match &self.report {
            _ if switched => Some(RowEdit::force_from),
            _ if !own => None,
            BillingReport::Subscription(_) => Some(RowEdit::offer_from),
            BillingReport::Invoice(_) => Some(RowEdit::offer_fallback),
        };
        if let Some(offer) = offer {
            for (column, cell) in offers {
                offer(&mut row, column, cell, event)?;
            }
        }
        row.advance_last(event)?;
        Ok(row.finish(times.now)?.into())
    }
}
