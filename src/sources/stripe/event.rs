//! Stripe events read into what the ledger needs: a [`Reading`] per event, from its
//! `data.object` as Stripe renders it in any API version this reads (the `basil` moves of
//! subscription periods to items and of an invoice's subscription to `parent` included).
//! Strict like [`Fields`]: a field present with the wrong type is an error naming it, never
//! read as absent. Pure: bytes in, values out.

use serde_json::{Map, Value};

use super::lifecycle::{PaymentLifecycle, RefundEntry};
use crate::clock::Timestamp;
use crate::ledger::Currency;
use crate::sources::json::{type_name, Fields};
use crate::sources::NormalizeError;

/// The event types this provider turns into ledger changes (seeds 003 and 004). Any other type
/// is stored and marked ignored.
pub const LEDGER_EVENT_TYPES: [&str; 16] = [
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "payment_intent.canceled",
    "payment_intent.requires_action",
    "charge.succeeded",
    "charge.failed",
    "charge.refunded",
    "charge.dispute.created",
    "charge.dispute.closed",
    "refund.created",
    "refund.updated",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.paid",
    "invoice.payment_failed",
];

/// The event a report comes from: its id, its type, and `created`, the time Stripe made it,
/// which orders reports about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRef {
    pub id: String,
    pub event_type: String,
    pub at: Timestamp,
}

/// What one event says, by the ledger row it is about.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    /// A payment intent or charge event; a `charge.refunded` of an API version that embeds the
    /// charge's refunds also reports each of them.
    Payment {
        payment: Box<PaymentReport>,
        refunds: Vec<RefundReport>,
    },
    Refund(Box<RefundReport>),
    Dispute(Box<DisputeReport>),
    Subscription(Box<SubscriptionReport>),
    Invoice(Box<InvoiceReport>),
    /// Genuine, stored, and of no concern to the ledger: the reason.
    Ignored(String),
}

/// What a payment intent or charge event says about the payment (seed 003's `payments` row).
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentReport {
    /// `gateway_transaction_id`: the payment intent, or the charge when it has none.
    pub key: String,
    pub event: EventRef,
    pub lifecycle: PaymentLifecycle,
    /// When the money was captured, if this report says it was.
    pub captured_at: Option<Timestamp>,
    pub details: PaymentDetails,
    /// The charge's `amount_refunded` at this event.
    pub amount_refunded_minor: Option<i64>,
    /// The Stripe object, for `gateway_response` (the client secret taken out).
    pub object: Value,
}

/// The descriptive fields of a payment; each `None` is "this event does not say".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PaymentDetails {
    pub order_id: Option<String>,
    pub charge_id: Option<String>,
    pub customer: Option<String>,
    pub customer_email: Option<String>,
    pub description: Option<String>,
    pub payment_method: Option<String>,
    pub amount_minor: Option<i64>,
    pub amount_captured_minor: Option<i64>,
    pub currency: Option<Currency>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub canceled_at: Option<Timestamp>,
    /// The object's own `metadata` (an order id, …).
    pub metadata: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RefundReport {
    pub refund_id: String,
    pub event: EventRef,
    pub payment_intent: Option<String>,
    pub charge_id: Option<String>,
    pub amount_minor: i64,
    pub currency: Option<Currency>,
    pub status: String,
    pub reason: Option<String>,
    pub failure_reason: Option<String>,
    pub created: Option<Timestamp>,
    pub metadata: Option<Map<String, Value>>,
}

impl RefundReport {
    /// The payment it refunds: its payment intent, or its charge when it has none.
    pub fn payment_key(&self) -> Option<&str> {
        self.payment_intent.as_deref().or(self.charge_id.as_deref())
    }

    /// The refund as its payment remembers it.
    pub fn entry(&self) -> RefundEntry {
        RefundEntry {
            id: self.refund_id.clone(),
            amount_minor: self.amount_minor,
            status: self.status.clone(),
            created: self.created,
            reported_at: self.event.at,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DisputeReport {
    pub dispute_id: String,
    pub event: EventRef,
    pub payment_intent: Option<String>,
    pub charge_id: Option<String>,
    pub amount_minor: i64,
    pub currency: Option<Currency>,
    pub reason: Option<String>,
    pub status: String,
    pub evidence_due_by: Option<Timestamp>,
    pub created: Option<Timestamp>,
}

impl DisputeReport {
    /// The payment it disputes: its payment intent, or its charge when it has none.
    pub fn payment_key(&self) -> Option<&str> {
        self.payment_intent.as_deref().or(self.charge_id.as_deref())
    }
}

/// A `customer.subscription.*` event.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionReport {
    pub subscription_id: String,
    pub customer: String,
    pub event: EventRef,
    pub status: String,
    pub plan: PlanDetails,
    pub period_start: Option<Timestamp>,
    pub period_end: Option<Timestamp>,
    pub cancel_at: Option<Timestamp>,
    pub canceled_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    pub started_at: Option<Timestamp>,
    pub email: Option<String>,
    pub user_id: Option<String>,
    pub metadata: Option<Map<String, Value>>,
}

/// What is bought: the price and the plan name the application knows it by.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlanDetails {
    pub price_id: Option<String>,
    /// The subscription's (or price's) `metadata.plan`, else the price's lookup key or
    /// nickname, else the price id.
    pub plan: Option<String>,
    pub unit_amount_minor: Option<i64>,
    pub currency: Option<Currency>,
    pub interval: Option<String>,
}

/// An `invoice.paid` or `invoice.payment_failed` event.
#[derive(Debug, Clone, PartialEq)]
pub struct InvoiceReport {
    pub invoice_id: String,
    pub event: EventRef,
    pub paid: bool,
    pub customer: String,
    pub subscription_id: Option<String>,
    pub email: Option<String>,
    pub user_id: Option<String>,
    pub plan: PlanDetails,
    pub period_start: Option<Timestamp>,
    pub period_end: Option<Timestamp>,
}

impl InvoiceReport {
    /// `paid` or `payment_failed`, as the subscription's latest invoice status.
    pub fn status(&self) -> &'static str {
        if self.paid {
            "paid"
        } else {
            "payment_failed"
        }
    }
}

/// Reads a stored Stripe event.
pub fn read(payload: &Value) -> Result<Reading, NormalizeError> {
    let envelope = Fields::object(payload, "event")?;
    let id = envelope
        .id("/id")?
        .ok_or(NormalizeError::MissingField("id"))?;
    let event_type = envelope
        .text("/type")?
        .ok_or(NormalizeError::MissingField("type"))?;
    if !LEDGER_EVENT_TYPES.contains(&event_type.as_str()) {
        return Ok(Reading::Ignored(format!(
            "{event_type} is stored; the Stripe ledger does not use it"
        )));
    }
    let at = unix(&envelope, "/created")?.ok_or(NormalizeError::MissingField("created"))?;
    let object = envelope
        .get("/data/object")?
        .ok_or(NormalizeError::MissingField("data.object"))?;
    let object = Fields::object(object, "data.object")?;
    object.check_no_nul()?;
    let event = EventRef { id, event_type, at };
    Ok(match event.event_type.as_str() {
        "payment_intent.succeeded" => payment_intent(event, &object, PaymentLifecycle::Paid)?,
        "payment_intent.payment_failed" => {
            payment_intent(event, &object, PaymentLifecycle::Failed)?
        }
        "payment_intent.canceled" => payment_intent(event, &object, PaymentLifecycle::Canceled)?,
        "payment_intent.requires_action" => {
            payment_intent(event, &object, PaymentLifecycle::RequiresAction)?
        }
        "charge.succeeded" | "charge.failed" | "charge.refunded" => charge(event, &object)?,
        "charge.dispute.created" | "charge.dispute.closed" => {
            Reading::Dispute(Box::new(dispute(event, &object)?))
        }
        "refund.created" | "refund.updated" => Reading::Refund(Box::new(refund(event, &object)?)),
        "invoice.paid" | "invoice.payment_failed" => {
            Reading::Invoice(Box::new(invoice(event, &object)?))
        }
        _ => Reading::Subscription(Box::new(subscription(event, &object)?)),
    })
}

fn payment_intent(
    event: EventRef,
    object: &Fields<'_>,
    lifecycle: PaymentLifecycle,
) -> Result<Reading, NormalizeError> {
    let key = required_id(object, "/id", "data.object.id")?;
    // `charges` is the list an older API version embeds instead of `latest_charge`.
    let charge_id = first_expandable(object, &["/latest_charge", "/charges/data/0"])?;
    let payment_method = match object.get("/payment_method_types")? {
        Some(Value::Array(types)) if types.len() == 1 => object.text("/payment_method_types/0")?,
        _ => None,
    };
    let details = PaymentDetails {
        order_id: object.id("/metadata/order_id")?,
        charge_id,
        customer: expandable(object, "/customer")?,
        customer_email: object.id("/receipt_email")?,
        description: object.text("/description")?,
        payment_method,
        amount_minor: amount(object, "/amount")?,
        amount_captured_minor: amount(object, "/amount_received")?.filter(|&captured| captured > 0),
        currency: object.currency("/currency")?,
        failure_code: object.first_text(&[
            "/last_payment_error/decline_code",
            "/last_payment_error/code",
        ])?,
        failure_message: object.text("/last_payment_error/message")?,
        canceled_at: unix(object, "/canceled_at")?,
        metadata: metadata(object, "/metadata")?,
    };
    let captured_at = (lifecycle == PaymentLifecycle::Paid).then_some(event.at);
    Ok(Reading::Payment {
        payment: Box::new(PaymentReport {
            key,
            event,
            lifecycle,
            captured_at,
            details,
            amount_refunded_minor: None,
            object: stored_object(object),
        }),
        refunds: Vec::new(),
    })
}

/// `charge.succeeded` (paid once captured; an authorization alone is still pending),
/// `charge.failed`, and `charge.refunded` (a refunded charge was paid).
fn charge(event: EventRef, object: &Fields<'_>) -> Result<Reading, NormalizeError> {
    let charge_id = required_id(object, "/id", "data.object.id")?;
    let key = expandable(object, "/payment_intent")?.unwrap_or_else(|| charge_id.clone());
    let lifecycle = match event.event_type.as_str() {
        "charge.failed" => PaymentLifecycle::Failed,
        "charge.succeeded" if boolean(object, "/captured")? == Some(false) => {
            PaymentLifecycle::Pending
        }
        _ => PaymentLifecycle::Paid,
    };
    let captured_at = match lifecycle {
        PaymentLifecycle::Paid => Some(unix(object, "/created")?.unwrap_or(event.at)),
        _ => None,
    };
    let details = PaymentDetails {
        order_id: object.id("/metadata/order_id")?,
        charge_id: Some(charge_id),
        customer: expandable(object, "/customer")?,
        customer_email: object.first_id(&["/billing_details/email", "/receipt_email"])?,
        description: object.text("/description")?,
        payment_method: object.text("/payment_method_details/type")?,
        amount_minor: amount(object, "/amount")?,
        amount_captured_minor: amount(object, "/amount_captured")?.filter(|&captured| captured > 0),
        currency: object.currency("/currency")?,
        failure_code: object.text("/failure_code")?,
        failure_message: object.text("/failure_message")?,
        canceled_at: None,
        metadata: metadata(object, "/metadata")?,
    };
    let mut refunds = Vec::new();
    if let Some(Value::Array(embedded)) = object.get("/refunds/data")? {
        for (index, refund_object) in embedded.iter().enumerate() {
            let refund_object =
                Fields::object(refund_object, format!("data.object.refunds.data.{index}"))?;
            refunds.push(refund(event.clone(), &refund_object)?);
        }
    }
    Ok(Reading::Payment {
        payment: Box::new(PaymentReport {
            key,
            event,
            lifecycle,
            captured_at,
            details,
            amount_refunded_minor: amount(object, "/amount_refunded")?,
            object: stored_object(object),
        }),
        refunds,
    })
}

fn refund(event: EventRef, object: &Fields<'_>) -> Result<RefundReport, NormalizeError> {
    Ok(RefundReport {
        refund_id: required_id(object, "/id", "data.object.id")?,
        payment_intent: expandable(object, "/payment_intent")?,
        charge_id: expandable(object, "/charge")?,
        amount_minor: amount(object, "/amount")?
            .ok_or(NormalizeError::MissingField("data.object.amount"))?,
        currency: object.currency("/currency")?,
        status: object
            .id("/status")?
            .ok_or(NormalizeError::MissingField("data.object.status"))?,
        reason: object.text("/reason")?,
        failure_reason: object.text("/failure_reason")?,
        created: unix(object, "/created")?,
        metadata: metadata(object, "/metadata")?,
        event,
    })
}

fn dispute(event: EventRef, object: &Fields<'_>) -> Result<DisputeReport, NormalizeError> {
    Ok(DisputeReport {
        dispute_id: required_id(object, "/id", "data.object.id")?,
        payment_intent: expandable(object, "/payment_intent")?,
        charge_id: expandable(object, "/charge")?,
        amount_minor: amount(object, "/amount")?
            .ok_or(NormalizeError::MissingField("data.object.amount"))?,
        currency: object.currency("/currency")?,
        reason: object.text("/reason")?,
        status: object
            .id("/status")?
            .ok_or(NormalizeError::MissingField("data.object.status"))?,
        evidence_due_by: unix(object, "/evidence_details/due_by")?,
        created: unix(object, "/created")?,
        event,
    })
}

fn subscription(
    event: EventRef,
    object: &Fields<'_>,
) -> Result<SubscriptionReport, NormalizeError> {
    let status = match object.id("/status")? {
        Some(status) => status,
        None if event.event_type == "customer.subscription.deleted" => "canceled".to_owned(),
        None => return Err(NormalizeError::MissingField("data.object.status")),
    };
    let price_id = object.first_id(&[
        "/items/data/0/price/id",
        "/plan/id",
        "/items/data/0/plan/id",
    ])?;
    let plan = PlanDetails {
        plan: plan_name(
            object,
            &[
                "/metadata/plan",
                "/items/data/0/price/metadata/plan",
                "/items/data/0/price/lookup_key",
                "/items/data/0/price/nickname",
                "/plan/nickname",
            ],
            &price_id,
        )?,
        price_id,
        unit_amount_minor: first_amount(
            object,
            &["/items/data/0/price/unit_amount", "/plan/amount"],
        )?,
        currency: first_currency(
            object,
            &[
                "/items/data/0/price/currency",
                "/plan/currency",
                "/currency",
            ],
        )?,
        interval: object
            .first_text(&["/items/data/0/price/recurring/interval", "/plan/interval"])?,
    };
    Ok(SubscriptionReport {
        subscription_id: required_id(object, "/id", "data.object.id")?,
        customer: expandable(object, "/customer")?
            .ok_or(NormalizeError::MissingField("data.object.customer"))?,
        status,
        plan,
        // Since API version 2025-03-31.basil the period is the item's, not the subscription's.
        period_start: first_unix(
            object,
            &[
                "/current_period_start",
                "/items/data/0/current_period_start",
            ],
        )?,
        period_end: first_unix(
            object,
            &["/current_period_end", "/items/data/0/current_period_end"],
        )?,
        cancel_at: unix(object, "/cancel_at")?,
        canceled_at: unix(object, "/canceled_at")?,
        ended_at: unix(object, "/ended_at")?,
        started_at: first_unix(object, &["/start_date", "/created"])?,
        email: object.first_id(&[
            "/metadata/email",
            "/metadata/user_email",
            "/metadata/customer_email",
        ])?,
        user_id: object.first_id(&["/metadata/user_id", "/metadata/userId"])?,
        metadata: metadata(object, "/metadata")?,
        event,
    })
}

/// An invoice of any API version: its subscription at the top (before 2025-03-31.basil) or under
/// `parent.subscription_details` (since), its price on the first line as an object (before) or an
/// id under `pricing.price_details` (since).
fn invoice(event: EventRef, object: &Fields<'_>) -> Result<InvoiceReport, NormalizeError> {
    let price_id = first_expandable(
        object,
        &[
            "/lines/data/0/price",
            "/lines/data/0/pricing/price_details/price",
            "/lines/data/0/plan",
        ],
    )?;
    let plan = PlanDetails {
        plan: plan_name(
            object,
            &[
                "/parent/subscription_details/metadata/plan",
                "/subscription_details/metadata/plan",
                "/metadata/plan",
                "/lines/data/0/price/metadata/plan",
                "/lines/data/0/price/lookup_key",
                "/lines/data/0/price/nickname",
                "/lines/data/0/plan/nickname",
            ],
            &price_id,
        )?,
        price_id,
        unit_amount_minor: first_amount(
            object,
            &[
                "/lines/data/0/price/unit_amount",
                "/lines/data/0/plan/amount",
            ],
        )?,
        currency: object.currency("/currency")?,
        interval: object.first_text(&[
            "/lines/data/0/price/recurring/interval",
            "/lines/data/0/plan/interval",
        ])?,
    };
    Ok(InvoiceReport {
        invoice_id: required_id(object, "/id", "data.object.id")?,
        paid: event.event_type == "invoice.paid",
        customer: expandable(object, "/customer")?
            .ok_or(NormalizeError::MissingField("data.object.customer"))?,
        subscription_id: first_expandable(
            object,
            &[
                "/subscription",
                "/parent/subscription_details/subscription",
                "/lines/data/0/subscription",
                "/lines/data/0/parent/subscription_item_details/subscription",
            ],
        )?,
        email: object.first_id(&[
            "/customer_email",
            "/parent/subscription_details/metadata/email",
            "/subscription_details/metadata/email",
            "/metadata/email",
        ])?,
        user_id: object.first_id(&[
            "/parent/subscription_details/metadata/user_id",
            "/subscription_details/metadata/user_id",
            "/metadata/user_id",
        ])?,
        plan,
        period_start: unix(object, "/lines/data/0/period/start")?,
        period_end: unix(object, "/lines/data/0/period/end")?,
        event,
    })
}

/// The first plan name found, else the price id.
fn plan_name(
    object: &Fields<'_>,
    places: &[&str],
    price_id: &Option<String>,
) -> Result<Option<String>, NormalizeError> {
    Ok(object.first_id(places)?.or_else(|| price_id.clone()))
}

fn required_id(
    object: &Fields<'_>,
    pointer: &str,
    name: &'static str,
) -> Result<String, NormalizeError> {
    object
        .id(pointer)?
        .ok_or(NormalizeError::MissingField(name))
}

/// An integer at `pointer` (Stripe's amounts and times are JSON integers).
fn integer(object: &Fields<'_>, pointer: &str) -> Result<Option<i64>, NormalizeError> {
    match object.get(pointer)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(number)) => {
            number
                .as_i64()
                .map(Some)
                .ok_or_else(|| NormalizeError::WrongType {
                    field: object.field(pointer),
                    expected: "an integer",
                    found: "a number that is not one",
                })
        }
        Some(other) => Err(NormalizeError::WrongType {
            field: object.field(pointer),
            expected: "an integer",
            found: type_name(other),
        }),
    }
}

/// An amount in the currency's smallest unit, as Stripe sends it: a non-negative integer.
fn amount(object: &Fields<'_>, pointer: &str) -> Result<Option<i64>, NormalizeError> {
    let amount = integer(object, pointer)?;
    if amount.is_some_and(|amount| amount < 0) {
        return Err(NormalizeError::Invalid(format!(
            "{} is negative",
            object.field(pointer)
        )));
    }
    Ok(amount)
}

fn first_amount(object: &Fields<'_>, pointers: &[&str]) -> Result<Option<i64>, NormalizeError> {
    for pointer in pointers {
        if let Some(amount) = amount(object, pointer)? {
            return Ok(Some(amount));
        }
    }
    Ok(None)
}

fn first_currency(
    object: &Fields<'_>,
    pointers: &[&str],
) -> Result<Option<Currency>, NormalizeError> {
    for pointer in pointers {
        if let Some(currency) = object.currency(pointer)? {
            return Ok(Some(currency));
        }
    }
    Ok(None)
}

/// A time as Stripe sends it: unix seconds.
fn unix(object: &Fields<'_>, pointer: &str) -> Result<Option<Timestamp>, NormalizeError> {
    Ok(integer(object, pointer)?.map(Timestamp::from_unix_seconds))
}

fn first_unix(object: &Fields<'_>, pointers: &[&str]) -> Result<Option<Timestamp>, NormalizeError> {
    for pointer in pointers {
        if let Some(at) = unix(object, pointer)? {
            return Ok(Some(at));
        }
    }
    Ok(None)
}

fn boolean(object: &Fields<'_>, pointer: &str) -> Result<Option<bool>, NormalizeError> {
    match object.get(pointer)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(value)) => Ok(Some(*value)),
        Some(other) => Err(NormalizeError::WrongType {
            field: object.field(pointer),
            expected: "a boolean",
            found: type_name(other),
        }),
    }
}

/// An expandable reference: an id, or the expanded object carrying it.
fn expandable(object: &Fields<'_>, pointer: &str) -> Result<Option<String>, NormalizeError> {
    match object.get(pointer)? {
        Some(Value::Object(_)) => object.id(&format!("{pointer}/id")),
        _ => object.id(pointer),
    }
}

fn first_expandable(
    object: &Fields<'_>,
    pointers: &[&str],
) -> Result<Option<String>, NormalizeError> {
    for pointer in pointers {
        if let Some(id) = expandable(object, pointer)? {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

/// An object's `metadata`. Stripe's PHP library renders an empty one as `[]`, read as empty.
fn metadata(
    object: &Fields<'_>,
    pointer: &str,
) -> Result<Option<Map<String, Value>>, NormalizeError> {
    match object.get(pointer)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map.clone())),
        Some(Value::Array(items)) if items.is_empty() => Ok(Some(Map::new())),
        Some(other) => Err(NormalizeError::WrongType {
            field: object.field(pointer),
            expected: "an object",
            found: type_name(other),
        }),
    }
}

/// The object as `gateway_response` keeps it: whole, but without the payment intent's
/// `client_secret`, which Stripe says must not be stored.
fn stored_object(object: &Fields<'_>) -> Value {
    let mut value = object.value().clone();
    if let Value::Object(map) = &mut value {
        map.remove("client_secret");
    }
    value
}

/// Digits after the point in Stripe's amounts for `currency`: Stripe's own list of zero- and
/// three-decimal currencies, which is not ISO 4217's (ISK and UGX are sent with two).
pub fn stripe_exponent(currency: &Currency) -> u32 {
    match currency.code() {
        "BIF" | "CLP" | "DJF" | "GNF" | "JPY" | "KMF" | "KRW" | "MGA" | "PYG" | "RWF" | "VND"
        | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "JOD" | "KWD" | "OMR" | "TND" => 3,
        _ => 2,
    }
}

/// A Stripe amount as decimal text in its currency's unit, e.g. `2000` USD → `20.00`.
pub fn decimal_text(minor: i64, currency: &Currency) -> String {
    let exponent = stripe_exponent(currency);
    let sign = if minor < 0 { "-" } else { "" };
    let magnitude = minor.unsigned_abs();
    if exponent == 0 {
        return format!("{sign}{magnitude}");
    }
    let scale = 10u64.pow(exponent);
    format!(
        "{sign}{}.{:0width$}",
        magnitude / scale,
        magnitude % scale,
        width = exponent as usize
    )
}
