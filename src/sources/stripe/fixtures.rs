//! Stripe events in Stripe's wire format (`tests/fixtures/stripe/`, as `stripe trigger`
//! sends them): read by the tests and sent by `wharf trigger stripe …`.

/// Every event there is a fixture of: each one the ledger applies.
pub const EVENTS: &[&str] = &super::event::LEDGER_EVENT_TYPES;

/// The fixture of `event`, as JSON text.
pub fn text(event: &str) -> Option<&'static str> {
    Some(match event {
        "payment_intent.succeeded" => {
            include_str!("../../../tests/fixtures/stripe/payment_intent.succeeded.json")
        }
        "payment_intent.payment_failed" => {
            include_str!("../../../tests/fixtures/stripe/payment_intent.payment_failed.json")
        }
        "payment_intent.canceled" => {
            include_str!("../../../tests/fixtures/stripe/payment_intent.canceled.json")
        }
        "payment_intent.requires_action" => {
            include_str!("../../../tests/fixtures/stripe/payment_intent.requires_action.json")
        }
        "charge.succeeded" => include_str!("../../../tests/fixtures/stripe/charge.succeeded.json"),
        "charge.failed" => include_str!("../../../tests/fixtures/stripe/charge.failed.json"),
        "charge.refunded" => include_str!("../../../tests/fixtures/stripe/charge.refunded.json"),
        "charge.dispute.created" => {
            include_str!("../../../tests/fixtures/stripe/charge.dispute.created.json")
        }
        "charge.dispute.closed" => {
            include_str!("../../../tests/fixtures/stripe/charge.dispute.closed.json")
        }
        "refund.created" => include_str!("../../../tests/fixtures/stripe/refund.created.json"),
        "refund.updated" => include_str!("../../../tests/fixtures/stripe/refund.updated.json"),
        "customer.subscription.created" => {
            include_str!("../../../tests/fixtures/stripe/customer.subscription.created.json")
        }
        "customer.subscription.updated" => {
            include_str!("../../../tests/fixtures/stripe/customer.subscription.updated.json")
        }
        "customer.subscription.deleted" => {
            include_str!("../../../tests/fixtures/stripe/customer.subscription.deleted.json")
        }
        "invoice.paid" => include_str!("../../../tests/fixtures/stripe/invoice.paid.json"),
        "invoice.payment_failed" => {
            include_str!("../../../tests/fixtures/stripe/invoice.payment_failed.json")
        }
        _ => return None,
    })
}
