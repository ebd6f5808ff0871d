//! Paystack subscriptions in the ledger Stripe's billing writes: `subscriptions`, one row per
//! Paystack subscription (`SUB_…`), and `user_plans`, seed 004's user subscription, one row per
//! Paystack customer (`CUS_…`). `subscription.create / enable / disable / not_renew` carry the
//! subscription; `invoice.create / update / payment_failed` carry an invoice and the subscription
//! as it stands; a verified callback for a plan's payment activates the plan.
//!
//! Paystack promises no order and its events carry no event time, so a report is placed by when
//! Wharf received it; an ended subscription (`complete`, `completed`, `cancelled`) never comes
//! back whatever arrives after, as in Stripe's lifecycle.

use serde_json::Value;

use crate::clock::Timestamp;
use crate::ledger::edit::{text_cell, time_cell, RowEdit};
use crate::ledger::{Cell, Currency, Decision, LedgerError, Money, RowChange, Table, WriteTimes};
use crate::sources::json::{first_text, text};
use crate::sources::stripe::billing::{SUBSCRIPTIONS, USER_PLANS};
use crate::sources::stripe::lifecycle::{supersedes, Position};

/// The event behind a report: its dedup key (Paystack sends no event id), its name, and the
/// time it is placed at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaystackEvent {
    pub id: String,
    pub name: String,
    pub at: Timestamp,
}

/// A subscription as an event shows it (an invoice's embedded one says less).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubscriptionFacts {
    pub code: String,
    pub customer_code: Option<String>,
    pub email: Option<String>,
    pub user_id: Option<String>,
    /// Paystack's: `active`, `non-renewing`, `attention`, `completed`/`complete`, `cancelled`.
    pub status: Option<String>,
    pub plan_code: Option<String>,
    pub plan_name: Option<String>,
    pub amount: Option<Money>,
    pub interval: Option<String>,
    pub next_payment_at: Option<Timestamp>,
    pub created_at: Option<Timestamp>,
}

/// An invoice of a subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct InvoiceFacts {
    pub code: String,
    pub paid: bool,
    /// `success`, `pending`, `failed`, as Paystack sends it.
    pub status: String,
    pub period_end: Option<Timestamp>,
}

fn time(data: &Value, pointers: &[&str]) -> Option<Timestamp> {
    pointers
        .iter()
        .find_map(|pointer| text(data, pointer).and_then(|at| Timestamp::parse_rfc3339(&at)))
}

fn money(data: &Value, amount: &str, currencies: &[&str]) -> Option<Money> {
    let minor_units = data.pointer(amount).and_then(Value::as_i64)?;
    let currency = Currency::parse(&first_text(data, currencies)?).ok()?;
    Some(Money {
        minor_units,
        currency,
    })
}

impl SubscriptionFacts {
    /// Reads a `subscription.*` event's `data`, or an invoice's `data.subscription` with the
    /// invoice's customer and plan beside it (`outer`).
    pub fn read(subscription: &Value, outer: &Value) -> Option<Self> {
        let either = |pointers: &[&str]| {
            first_text(subscription, pointers).or_else(|| first_text(outer, pointers))
        };
        Some(Self {
            code: text(subscription, "/subscription_code")?,
            customer_code: either(&["/customer/customer_code"]),
            email: either(&["/customer/email"]),
            user_id: either(&["/customer/metadata/user_id", "/metadata/user_id"]),
            status: text(subscription, "/status").map(|s| s.to_ascii_lowercase()),
            plan_code: either(&["/plan/plan_code"]),
            plan_name: either(&["/plan/name"]),
            amount: money(subscription, "/amount", &["/plan/currency", "/currency"])
                .or_else(|| money(outer, "/plan/amount", &["/plan/currency"])),
            interval: either(&["/plan/interval"]),
            next_payment_at: time(subscription, &["/next_payment_date"]),
            created_at: time(subscription, &["/createdAt", "/created_at"]),
        })
    }
}

/// Paystack's subscription statuses in lifecycle order; ended ones are final.
pub fn position(status: &str, at: Timestamp) -> Position {
    let stage = u8::from(ended(status));
    let rank = match status {
        "active" => 1,
        "non-renewing" => 2,
        "attention" => 3,
        _ => 0,
    };
    Position { stage, rank, at }
}

pub fn ended(status: &str) -> bool {
    matches!(status, "complete" | "completed" | "cancelled")
}

/// Whether the customer keeps the plan: a non-renewing subscription runs to its period's end;
/// one whose payment failed (`attention`) is still being retried by Paystack.
pub fn grants_plan(status: &str) -> bool {
    matches!(status, "active" | "non-renewing" | "attention")
}

/// What one subscription or invoice event does to its `subscriptions` row.
#[derive(Debug, Clone)]
pub struct SubscriptionChange {
    pub event: PaystackEvent,
    pub subscription: SubscriptionFacts,
    pub invoice: Option<InvoiceFacts>,
}

impl RowChange for SubscriptionChange {
    fn table(&self) -> &'static Table {
        &SUBSCRIPTIONS
    }

    fn key(&self, source: &str) -> Vec<Cell> {
        vec![Cell::text(source), Cell::text(&self.subscription.code)]
    }

    fn decide(
        &self,
        source: &str,
        current: Option<&[Cell]>,
        times: WriteTimes,
    ) -> Result<Decision, LedgerError> {
        let facts = &self.subscription;
        let at = self.event.at;
        let mut row = RowEdit::open(&SUBSCRIPTIONS, current);
        if row.is_new() {
            row.set("source", Cell::text(source))?;
            row.set("subscription_id", Cell::text(&facts.code))?;
            row.set("created_at", Cell::Timestamp(times.now))?;
        }
        let held = match (row.text("status")?, row.timestamp("status_event_at")?) {
            (Some(status), Some(held_at)) => Some(position(&status, held_at)),
            _ => None,
        };
        let newer = match &facts.status {
            Some(status) => supersedes(position(status, at), held),
            None => held.is_none_or(|held| at > held.at),
        };
        if let (true, Some(status)) = (newer, &facts.status) {
            row.set("status", Cell::text(status))?;
            row.set("status_event_at", Cell::Timestamp(at))?;
            if ended(status) {
                row.offer("ended_at", Cell::Timestamp(at), false)?;
                if status == "cancelled" {
                    row.offer("canceled_at", Cell::Timestamp(at), false)?;
                }
            }
            if status == "non-renewing" {
                row.offer("cancel_at", time_cell(facts.next_payment_at), true)?;
            }
        }
        row.offer("customer", text_cell(&facts.customer_code), newer)?;
        row.offer("email", text_cell(&facts.email), newer)?;
        row.offer("user_id", text_cell(&facts.user_id), newer)?;
        row.offer("price_id", text_cell(&facts.plan_code), newer)?;
        row.offer("plan", text_cell(&facts.plan_name), newer)?;
        row.offer("interval", text_cell(&facts.interval), newer)?;
        if let Some(amount) = &facts.amount {
            row.offer("amount", Cell::Decimal(amount.to_decimal_string()), newer)?;
            row.offer("amount_minor", Cell::Integer(amount.minor_units), newer)?;
            row.offer("currency", Cell::text(amount.currency.code()), newer)?;
        }
        row.offer(
            "current_period_end",
            time_cell(facts.next_payment_at),
            newer,
        )?;
        row.offer("started_at", time_cell(facts.created_at), false)?;
        if let Some(invoice) = &self.invoice {
            let held_at = row.timestamp("latest_invoice_at")?;
            if held_at.is_none_or(|held_at| at >= held_at) {
                row.set("latest_invoice_id", Cell::text(&invoice.code))?;
                row.set("latest_invoice_status", Cell::text(invoice_status(invoice)))?;
                row.set("latest_invoice_at", Cell::Timestamp(at))?;
            }
        }
        let last_at = row.timestamp("last_event_at")?;
        if last_at.is_none_or(|last_at| at >= last_at) {
            row.set("last_event_id", Cell::text(&self.event.id))?;
            row.set("last_event_at", Cell::Timestamp(at))?;
        }
        Ok(row.finish(times.now)?.into())
    }
}

/// `paid`, `payment_failed` (Stripe's words for the same), or Paystack's own status.
fn invoice_status(invoice: &InvoiceFacts) -> String {
    if invoice.paid {
        "paid".to_owned()
    } else if invoice.status == "failed" {
        "payment_failed".to_owned()
    } else {
        invoice.status.clone()
    }
}

/// What a report does to its customer's `user_plans` row.
#[derive(Debug, Clone)]
pub struct PlanChange {
    pub event: PaystackEvent,
    /// The customer's `CUS_…` code (or, without one, the email Paystack knows them by).
    pub customer: String,
    pub email: Option<String>,
    pub user_id: Option<String>,
    pub plan: Option<String>,
    pub plan_code: Option<String>,
    /// What granted (or withdrew) the plan: a subscription code, or a one-time payment's
    /// reference.
    pub granted_by: String,
    /// The subscription's status as reported (`active` for a verified payment).
    pub status: String,
    pub period_end: Option<Timestamp>,
}

impl RowChange for PlanChange {
    fn table(&self) -> &'static Table {
        &USER_PLANS
    }

    fn key(&self, source: &str) -> Vec<Cell> {
        vec![Cell::text(source), Cell::text(&self.customer)]
    }

    /// The plan follows one grant at a time, in lifecycle order; another grant takes over only
    /// when it gives the plan and the plan is inactive or its report is newer.
    fn decide(
        &self,
        source: &str,
        current: Option<&[Cell]>,
        times: WriteTimes,
    ) -> Result<Decision, LedgerError> {
        let at = self.event.at;
        let mut row = RowEdit::open(&USER_PLANS, current);
        if row.is_new() {
            row.set("source", Cell::text(source))?;
            row.set("customer", Cell::text(&self.customer))?;
            row.set("created_at", Cell::Timestamp(times.now))?;
        }
        row.offer("email", text_cell(&self.email), false)?;
        row.offer("user_id", text_cell(&self.user_id), false)?;
        let held_by = row.text("subscription_id")?;
        let held_status = row.text("subscription_status")?;
        let held_at = row.timestamp("status_event_at")?;
        let was_active = row.text("plan_status")?.as_deref() == Some("active");
        let same = held_by
            .as_deref()
            .is_none_or(|held| held == self.granted_by);
        let applies = if same {
            let held = held_status
                .as_deref()
                .zip(held_at)
                .map(|(status, held_at)| position(status, held_at));
            supersedes(position(&self.status, at), held)
        } else {
            grants_plan(&self.status) && (!was_active || held_at.is_none_or(|held| at > held))
        };
        if applies {
            let active = grants_plan(&self.status);
            row.set("subscription_id", Cell::text(&self.granted_by))?;
            row.set("subscription_status", Cell::text(&self.status))?;
            row.set("status_event_at", Cell::Timestamp(at))?;
            row.set(
                "plan_status",
                Cell::text(if active { "active" } else { "inactive" }),
            )?;
            if active && !was_active {
                row.set("activated_at", Cell::Timestamp(at))?;
            }
            if !active && (was_active || ended(&self.status)) {
                row.set("deactivated_at", Cell::Timestamp(at))?;
            }
        }
        // What the plan is may come from any report about the grant the row follows (an
        // invoice's says less than its subscription's, and may be applied first): a report
        // that moved the status overwrites, another only fills what is still empty.
        if row.text("subscription_id")?.as_deref() == Some(self.granted_by.as_str()) {
            row.offer("plan", text_cell(&self.plan), applies)?;
            row.offer("price_id", text_cell(&self.plan_code), applies)?;
            row.offer("current_period_end", time_cell(self.period_end), applies)?;
        }
        let last_at = row.timestamp("last_event_at")?;
        if last_at.is_none_or(|last_at| at >= last_at) {
            row.set("last_event_id", Cell::text(&self.event.id))?;
            row.set("last_event_at", Cell::Timestamp(at))?;
        }
        Ok(row.finish(times.now)?.into())
    }
}

/// The two changes a subscription report makes: its row, and its customer's plan.
pub fn subscription_changes(
    event: PaystackEvent,
    subscription: SubscriptionFacts,
    invoice: Option<InvoiceFacts>,
) -> (SubscriptionChange, Option<PlanChange>) {
    let reported = subscription.status.clone().or_else(|| {
        invoice
            .as_ref()
            .map(|invoice| if invoice.paid { "active" } else { "attention" }.to_owned())
    });
    let customer = subscription
        .customer_code
        .clone()
        .or_else(|| subscription.email.clone());
    let plan = customer.zip(reported).map(|(customer, status)| PlanChange {
        event: event.clone(),
        customer,
        email: subscription.email.clone(),
        user_id: subscription.user_id.clone(),
        plan: subscription
            .plan_name
            .clone()
            .or_else(|| subscription.plan_code.clone()),
        plan_code: subscription.plan_code.clone(),
        granted_by: subscription.code.clone(),
        status,
        period_end: subscription
            .next_payment_at
            .or(invoice.as_ref().and_then(|invoice| invoice.period_end)),
    });
    (
        SubscriptionChange {
            event,
            subscription,
            invoice,
        },
        plan,
    )
}
