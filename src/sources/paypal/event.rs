//! A PayPal webhook event read into a report of what it says about one capture or one
//! subscription. Pure: bytes in, values out; events this gateway does not keep are named.

use serde_json::Value;

use crate::clock::Timestamp;
use crate::ledger::{Currency, Money};
use crate::sources::NormalizeError;

/// The event behind a report: PayPal's `WH-…` id and its `create_time`, which orders events
/// for the same row (PayPal does not promise delivery order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRef {
    pub id: String,
    pub at: Timestamp,
}

/// What a capture (or a v1 sale) is, before refunds are laid over it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Pending,
    Paid,
    Failed,
}

impl Lifecycle {
    /// The words of `payments.payment_status` that Stripe writes too.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Paid => "paid",
            Self::Failed => "failed",
        }
    }
}

/// `PAYMENT.CAPTURE.COMPLETED / DENIED / PENDING` (and v1's `PAYMENT.SALE.COMPLETED`).
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureReport {
    pub capture_id: String,
    pub lifecycle: Lifecycle,
    pub amount: Option<Money>,
    /// `supplementary_data.related_ids.order_id`
    pub order_id: Option<String>,
    pub captured_at: Option<Timestamp>,
    /// The capture as sent, for `gateway_response`.
    pub resource: Value,
}

/// `PAYMENT.CAPTURE.REFUNDED / REVERSED` (and v1's `PAYMENT.SALE.REFUNDED / REVERSED`): a
/// refund object that names its capture.
#[derive(Debug, Clone, PartialEq)]
pub struct RefundReport {
    pub capture_id: String,
    pub refund_id: String,
    /// Always zero or more: a reversal's amount may be sent negative.
    pub amount: Option<Money>,
    /// PayPal's refund status, lower-case (`completed`, `pending`, …).
    pub status: String,
    pub reversal: bool,
}

/// `BILLING.SUBSCRIPTION.*`: the subscription as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionReport {
    pub subscription_id: String,
    /// Lower-case PayPal status, `cancelled` spelled `canceled` as Stripe's rows spell it.
    pub status: String,
    pub plan_id: Option<String>,
    pub payer_id: Option<String>,
    pub email: Option<String>,
    /// The merchant's `custom_id`, usually its own user id.
    pub custom_id: Option<String>,
    pub started_at: Option<Timestamp>,
    pub next_billing_at: Option<Timestamp>,
    pub status_changed_at: Option<Timestamp>,
}

/// `CHECKOUT.ORDER.APPROVED`: the buyer approved an order, which is not captured yet unless it
/// embeds its captures.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderReport {
    pub order_id: String,
    pub amount: Option<Money>,
    pub payer_email: Option<String>,
    /// Whether the order already embeds a completed capture.
    pub captured: bool,
    /// The order as sent, for `gateway_response`.
    pub resource: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    Capture(CaptureReport),
    Order(OrderReport),
    Refund(RefundReport),
    Subscription(SubscriptionReport),
}

/// An event this gateway keeps, or why not.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    Report(EventRef, Report),
    Ignore(String),
}

/// Reads a stored PayPal event body.
pub fn read(body: &[u8]) -> Result<Reading, NormalizeError> {
    let event: Value = serde_json::from_slice(body).map_err(NormalizeError::Json)?;
    let event_type =
        text(&event, &["event_type"]).ok_or(NormalizeError::MissingField("event_type"))?;
    let reference = EventRef {
        id: text(&event, &["id"]).ok_or(NormalizeError::MissingField("id"))?,
        at: time(&event, &["create_time"]).ok_or(NormalizeError::MissingField("create_time"))?,
    };
    let resource = event
        .get("resource")
        .filter(|resource| resource.is_object())
        .ok_or(NormalizeError::MissingField("resource"))?;
    let report = match event_type.as_str() {
        "PAYMENT.CAPTURE.COMPLETED" => capture(resource, Lifecycle::Paid)?,
        "PAYMENT.CAPTURE.DENIED" => capture(resource, Lifecycle::Failed)?,
        "PAYMENT.CAPTURE.PENDING" => capture(resource, Lifecycle::Pending)?,
        "PAYMENT.SALE.COMPLETED" => capture(resource, Lifecycle::Paid)?,
        "PAYMENT.SALE.DENIED" => capture(resource, Lifecycle::Failed)?,
        "PAYMENT.CAPTURE.REFUNDED" | "PAYMENT.SALE.REFUNDED" => refund(resource, false)?,
        "PAYMENT.CAPTURE.REVERSED" | "PAYMENT.SALE.REVERSED" => refund(resource, true)?,
        "BILLING.SUBSCRIPTION.CREATED"
        | "BILLING.SUBSCRIPTION.ACTIVATED"
        | "BILLING.SUBSCRIPTION.UPDATED"
        | "BILLING.SUBSCRIPTION.RE-ACTIVATED"
        | "BILLING.SUBSCRIPTION.CANCELLED"
        | "BILLING.SUBSCRIPTION.SUSPENDED"
        | "BILLING.SUBSCRIPTION.EXPIRED" => subscription(resource, &event_type)?,
        "CHECKOUT.ORDER.APPROVED" => order(resource)?,
        other => {
            return Ok(Reading::Ignore(format!(
                "{other} does not change payments or subscriptions"
            )))
        }
    };
    Ok(Reading::Report(reference, report))
}

fn capture(resource: &Value, lifecycle: Lifecycle) -> Result<Report, NormalizeError> {
    Ok(Report::Capture(CaptureReport {
        capture_id: text(resource, &["id"]).ok_or(NormalizeError::MissingField("resource.id"))?,
        lifecycle,
        amount: money(resource.get("amount"))?,
        order_id: text(resource, &["supplementary_data", "related_ids", "order_id"]),
        captured_at: match lifecycle {
            Lifecycle::Paid => time(resource, &["create_time"]),
            _ => None,
        },
        resource: resource.clone(),
    }))
}

fn order(resource: &Value) -> Result<Report, NormalizeError> {
    let captures = resource
        .get("purchase_units")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|unit| unit.pointer("/payments/captures").and_then(Value::as_array))
        .flatten();
    let captured = captures
        .filter_map(|capture| capture.get("status").and_then(Value::as_str))
        .any(|status| status.eq_ignore_ascii_case("COMPLETED"));
    Ok(Report::Order(OrderReport {
        order_id: text(resource, &["id"]).ok_or(NormalizeError::MissingField("resource.id"))?,
        amount: money(
            resource
                .get("purchase_units")
                .and_then(|units| units.get(0))
                .and_then(|unit| unit.get("amount")),
        )?,
        payer_email: text(resource, &["payer", "email_address"]),
        captured,
        resource: resource.clone(),
    }))
}

fn refund(resource: &Value, reversal: bool) -> Result<Report, NormalizeError> {
    let capture_id = capture_of(resource).ok_or(NormalizeError::MissingField(
        "resource.links[rel=up] (the refunded capture)",
    ))?;
    let amount = money(resource.get("amount"))?.map(|money| Money {
        minor_units: money.minor_units.saturating_abs(),
        ..money
    });
    let status = text(resource, &["status"])
        .or_else(|| text(resource, &["state"]))
        .map_or_else(
            || "completed".to_owned(),
            |status| status.to_ascii_lowercase(),
        );
    Ok(Report::Refund(RefundReport {
        capture_id,
        refund_id: text(resource, &["id"]).ok_or(NormalizeError::MissingField("resource.id"))?,
        amount,
        status,
        reversal,
    }))
}

/// The capture a refund object refunds: its `up` link (`…/v2/payments/captures/{id}`), or
/// v1's `sale_id`.
fn capture_of(resource: &Value) -> Option<String> {
    let from_links = resource
        .get("links")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|link| link.get("rel").and_then(Value::as_str) == Some("up"))
        .filter_map(|link| link.get("href").and_then(Value::as_str))
        .find_map(|href| {
            let (_, id) = href.split_once("/captures/")?;
            let id = id.split(['/', '?']).next()?;
            (!id.is_empty()).then(|| id.to_owned())
        });
    from_links.or_else(|| text(resource, &["sale_id"]))
}

fn subscription(resource: &Value, event_type: &str) -> Result<Report, NormalizeError> {
    let from_type = match event_type {
        "BILLING.SUBSCRIPTION.ACTIVATED" | "BILLING.SUBSCRIPTION.RE-ACTIVATED" => Some("ACTIVE"),
        "BILLING.SUBSCRIPTION.CANCELLED" => Some("CANCELLED"),
        "BILLING.SUBSCRIPTION.SUSPENDED" => Some("SUSPENDED"),
        "BILLING.SUBSCRIPTION.EXPIRED" => Some("EXPIRED"),
        _ => None,
    };
    let status = text(resource, &["status"])
        .or_else(|| from_type.map(str::to_owned))
        .ok_or(NormalizeError::MissingField("resource.status"))?
        .to_ascii_lowercase();
    let status = if status == "cancelled" {
        "canceled".to_owned()
    } else {
        status
    };
    Ok(Report::Subscription(SubscriptionReport {
        subscription_id: text(resource, &["id"])
            .ok_or(NormalizeError::MissingField("resource.id"))?,
        status,
        plan_id: text(resource, &["plan_id"]),
        payer_id: text(resource, &["subscriber", "payer_id"]),
        email: text(resource, &["subscriber", "email_address"]),
        custom_id: text(resource, &["custom_id"]),
        started_at: time(resource, &["start_time"]),
        next_billing_at: time(resource, &["billing_info", "next_billing_time"]),
        status_changed_at: time(resource, &["status_update_time"])
            .or_else(|| time(resource, &["update_time"])),
    }))
}

/// `{ "value": "10.00", "currency_code": "USD" }` (v2) or `{ "total": …, "currency": … }` (v1).
fn money(amount: Option<&Value>) -> Result<Option<Money>, NormalizeError> {
    let Some(amount) = amount.filter(|amount| amount.is_object()) else {
        return Ok(None);
    };
    let value = text(amount, &["value"]).or_else(|| text(amount, &["total"]));
    let currency = text(amount, &["currency_code"]).or_else(|| text(amount, &["currency"]));
    let (Some(value), Some(currency)) = (value, currency) else {
        return Ok(None);
    };
    let invalid = |error| NormalizeError::Money {
        field: "resource.amount".to_owned(),
        error,
    };
    let currency = Currency::parse(&currency).map_err(invalid)?;
    Money::parse_decimal(&value, currency)
        .map(Some)
        .map_err(invalid)
}

fn text(value: &Value, path: &[&str]) -> Option<String> {
    path.iter()
        .try_fold(value, |value, key| value.get(key))?
        .as_str()
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .map(str::to_owned)
}

fn time(value: &Value, path: &[&str]) -> Option<Timestamp> {
    Timestamp::parse_rfc3339(&text(value, path)?)
}
