//! Which of two reports about one Stripe object wins, given that Stripe does not promise order:
//! a later lifecycle stage always wins, within a stage the newer event (`created`) wins, and at
//! the same second the status further along wins. Also what a payment's refunds add up to,
//! from whatever refund and charge reports have arrived so far. Pure: no rows, no SQL.

use std::cmp::Ordering;

use crate::clock::Timestamp;

/// Where a report puts an object: its lifecycle stage, a tie-break within the stage, and the
/// time of the event that reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub stage: u8,
    pub rank: u8,
    pub at: Timestamp,
}

/// Whether a new report replaces the stored one. Never moves back a stage; a stale report of
/// the same stage loses; an equal one changes nothing.
pub fn supersedes(new: Position, current: Option<Position>) -> bool {
    let Some(current) = current else {
        return true;
    };
    match new.stage.cmp(&current.stage) {
        Ordering::Greater => true,
        Ordering::Less => false,
        Ordering::Equal => match new.at.cmp(&current.at) {
            Ordering::Greater => true,
            Ordering::Less => false,
            Ordering::Equal => new.rank > current.rank,
        },
    }
}

/// A payment's own status, as its payment intent and charge events tell it (refunds are laid
/// over it by [`payment_status`]). A payment intent may fail and be retried, so `failed` is
/// not final; `canceled` is; `paid` is past every other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentLifecycle {
    Pending,
    RequiresAction,
    Failed,
    Canceled,
    Paid,
}

impl PaymentLifecycle {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::RequiresAction => "requires_action",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
            Self::Paid => "paid",
        }
    }

    pub fn parse(word: &str) -> Option<Self> {
        Some(match word {
            "pending" => Self::Pending,
            "requires_action" => Self::RequiresAction,
            "failed" => Self::Failed,
            "canceled" => Self::Canceled,
            "paid" => Self::Paid,
            _ => return None,
        })
    }

    pub fn at(self, at: Timestamp) -> Position {
        let (stage, rank) = match self {
            Self::Pending => (0, 0),
            Self::RequiresAction => (0, 1),
            Self::Failed => (0, 2),
            Self::Canceled => (1, 0),
            Self::Paid => (2, 0),
        };
        Position { stage, rank, at }
    }
}

/// A refund's status as Stripe spells it: `pending`/`requires_action` → `succeeded` →
/// `failed`/`canceled` (a succeeded refund can still fail). Unknown words are open.
pub fn refund_position(status: &str, at: Timestamp) -> Position {
    let (stage, rank) = match status {
        "pending" => (0, 0),
        "requires_action" => (0, 1),
        "succeeded" => (1, 0),
        "failed" => (2, 0),
        "canceled" => (2, 1),
        _ => (0, 0),
    };
    Position { stage, rank, at }
}

/// Whether a refund in this status counts towards the amount refunded, as it does in Stripe's
/// `charge.amount_refunded`.
pub fn refund_counts(status: &str) -> bool {
    !matches!(status, "failed" | "canceled")
}

/// A dispute's status: open (`warning_needs_response`, `needs_response`, `under_review`, …)
/// until closed (`won`, `lost`, `warning_closed`, `prevented`).
pub fn dispute_position(status: &str, at: Timestamp) -> Position {
    let (stage, rank) = match status {
        "warning_needs_response" => (0, 0),
        "warning_under_review" => (0, 1),
        "needs_response" => (0, 2),
        "under_review" => (0, 3),
        _ if dispute_closed(status) => (1, 0),
        _ => (0, 0),
    };
    Position { stage, rank, at }
}

pub fn dispute_closed(status: &str) -> bool {
    matches!(status, "won" | "lost" | "warning_closed" | "prevented")
}

/// A subscription's status: every status may follow every other except the final ones,
/// `canceled` and `incomplete_expired`, which Stripe never leaves. Within a second, the usual
/// way forward (`incomplete` → `trialing` → `active` → `past_due` → `unpaid`) decides.
pub fn subscription_position(status: &str, at: Timestamp) -> Position {
    let stage = u8::from(subscription_ended(status));
    let rank = match status {
        "trialing" => 1,
        "active" => 2,
        "past_due" => 3,
        "unpaid" => 4,
        "paused" => 5,
        _ => 0,
    };
    Position { stage, rank, at }
}

pub fn subscription_ended(status: &str) -> bool {
    matches!(status, "canceled" | "incomplete_expired")
}

/// Whether a subscription in this status gives its customer the plan. `past_due` keeps it:
/// Stripe is still retrying the payment, and the subscription becomes `unpaid` or `canceled`
/// (which end it) when the retries run out.
pub fn subscription_grants_plan(status: &str) -> bool {
    matches!(status, "active" | "trialing" | "past_due")
}

/// One refund as a payment remembers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundEntry {
    pub id: String,
    pub amount_minor: i64,
    pub status: String,
    /// When the refund was made (its object's `created`).
    pub created: Option<Timestamp>,
    /// The event that reported this status.
    pub reported_at: Timestamp,
}

/// A charge's own total, `amount_refunded`, as of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChargeSnapshot {
    pub amount_refunded_minor: i64,
    pub at: Timestamp,
}

/// Folds a refund report into the list: a new refund is added; a known one takes the report's
/// status if it [`supersedes`] the one held. Returns whether anything changed.
pub fn note_refund(refunds: &mut Vec<RefundEntry>, report: RefundEntry) -> bool {
    let Some(held) = refunds.iter_mut().find(|held| held.id == report.id) else {
        refunds.push(report);
        refunds.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        return true;
    };
    let mut changed = false;
    if held.created.is_none() && report.created.is_some() {
        held.created = report.created;
        changed = true;
    }
    let new = refund_position(&report.status, report.reported_at);
    let old = refund_position(&held.status, held.reported_at);
    if supersedes(new, Some(old)) {
        held.status = report.status;
        held.amount_minor = report.amount_minor;
        held.reported_at = report.reported_at;
        changed = true;
    }
    changed
}

/// What a payment has had refunded, from the refunds it knows one by one and the latest charge
/// total. Either may be ahead: refund events can arrive before the charge's, and a charge total
/// covers refunds whose own events never came. So the larger of the two counts, after taking
/// out of the charge's total any refund that was in it (made by then) and failed or was
/// canceled after it.
pub fn refunded_minor(refunds: &[RefundEntry], snapshot: Option<ChargeSnapshot>) -> i64 {
    let known: i64 = refunds
        .iter()
        .filter(|refund| refund_counts(&refund.status))
        .map(|refund| refund.amount_minor)
        .sum();
    let from_charge = snapshot.map_or(0, |snapshot| {
        let undone: i64 = refunds
            .iter()
            .filter(|refund| !refund_counts(&refund.status))
            .filter(|refund| refund.created.is_some_and(|made| made <= snapshot.at))
            .filter(|refund| refund.reported_at > snapshot.at)
            .map(|refund| refund.amount_minor)
            .sum();
        snapshot.amount_refunded_minor - undone
    });
    known.max(from_charge).max(0)
}

/// The payment status seed 003 stores: its own lifecycle, unless refunds say `refunded` (all of
/// what was captured) or `partially_refunded`. Without a known total, a refund is partial.
pub fn payment_status(
    lifecycle: Option<PaymentLifecycle>,
    refunded_minor: i64,
    refundable_minor: Option<i64>,
) -> &'static str {
    if refunded_minor > 0 {
        return match refundable_minor {
            Some(total) if total > 0 && refunded_minor >= total => "refunded",
            _ => "partially_refunded",
        };
    }
    lifecycle.map_or("pending", PaymentLifecycle::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_unix_seconds(seconds)
    }

    #[test]
    fn a_later_stage_wins_whatever_its_time() {
        let paid = PaymentLifecycle::Paid.at(at(100));
        let failed_later = PaymentLifecycle::Failed.at(at(200));
        assert!(supersedes(paid, Some(failed_later)));
        assert!(!supersedes(failed_later, Some(paid)));
        assert!(!supersedes(
            PaymentLifecycle::Canceled.at(at(300)),
            Some(paid)
        ));
    }

    #[test]
    fn within_a_stage_the_newer_event_wins_and_a_tie_goes_further_along() {
        let action = PaymentLifecycle::RequiresAction.at(at(100));
        let failed = PaymentLifecycle::Failed.at(at(90));
        assert!(!supersedes(failed, Some(action)), "older failure is stale");
        assert!(supersedes(action, Some(failed)));
        let failed_same_second = PaymentLifecycle::Failed.at(at(100));
        assert!(supersedes(failed_same_second, Some(action)));
        assert!(!supersedes(action, Some(failed_same_second)));
        assert!(
            !supersedes(action, Some(action)),
            "a repeat changes nothing"
        );
        assert!(supersedes(action, None));
    }

    #[test]
    fn a_failed_payment_may_still_succeed_but_a_paid_one_never_fails() {
        let failed = PaymentLifecycle::Failed.at(at(100));
        let paid = PaymentLifecycle::Paid.at(at(200));
        assert!(supersedes(paid, Some(failed)));
        assert!(!supersedes(PaymentLifecycle::Failed.at(at(50)), Some(paid)));
    }

    #[test]
    fn a_succeeded_refund_can_fail_later_but_not_go_back_to_pending() {
        let succeeded = refund_position("succeeded", at(100));
        assert!(supersedes(
            refund_position("failed", at(200)),
            Some(succeeded)
        ));
        assert!(!supersedes(
            refund_position("pending", at(300)),
            Some(succeeded)
        ));
        assert!(supersedes(
            succeeded,
            Some(refund_position("pending", at(300)))
        ));
    }

    #[test]
    fn closed_disputes_and_ended_subscriptions_are_final() {
        let lost = dispute_position("lost", at(100));
        assert!(!supersedes(
            dispute_position("under_review", at(200)),
            Some(lost)
        ));
        let canceled = subscription_position("canceled", at(100));
        assert!(!supersedes(
            subscription_position("active", at(200)),
            Some(canceled)
        ));
        assert!(supersedes(
            canceled,
            Some(subscription_position("active", at(200)))
        ));
        assert!(subscription_grants_plan("past_due"));
        assert!(!subscription_grants_plan("unpaid"));
        assert!(!subscription_grants_plan("incomplete"));
    }

    fn refund(id: &str, amount: i64, status: &str, created: i64, reported: i64) -> RefundEntry {
        RefundEntry {
            id: id.to_owned(),
            amount_minor: amount,
            status: status.to_owned(),
            created: Some(at(created)),
            reported_at: at(reported),
        }
    }

    #[test]
    fn refunds_known_one_by_one_add_up() {
        let refunds = [
            refund("re_1", 300, "succeeded", 10, 11),
            refund("re_2", 200, "pending", 20, 21),
            refund("re_3", 999, "failed", 30, 31),
        ];
        assert_eq!(refunded_minor(&refunds, None), 500);
    }

    #[test]
    fn a_charge_total_covers_refunds_whose_events_never_came() {
        let snapshot = ChargeSnapshot {
            amount_refunded_minor: 700,
            at: at(50),
        };
        let refunds = [refund("re_1", 300, "succeeded", 10, 11)];
        assert_eq!(refunded_minor(&refunds, Some(snapshot)), 700);
        assert_eq!(refunded_minor(&[], Some(snapshot)), 700);
    }

    #[test]
    fn a_refund_that_fails_after_the_charge_total_is_taken_out_of_it() {
        let snapshot = ChargeSnapshot {
            amount_refunded_minor: 500,
            at: at(50),
        };
        let failed_later = [
            refund("re_1", 300, "failed", 10, 60),
            refund("re_2", 200, "succeeded", 20, 21),
        ];
        assert_eq!(refunded_minor(&failed_later, Some(snapshot)), 200);
        let failed_before = [
            refund("re_1", 300, "failed", 10, 40),
            refund("re_2", 200, "succeeded", 20, 21),
        ];
        let snapshot_after_failure = ChargeSnapshot {
            amount_refunded_minor: 200,
            at: at(50),
        };
        assert_eq!(
            refunded_minor(&failed_before, Some(snapshot_after_failure)),
            200
        );
        let made_after = [refund("re_9", 400, "failed", 70, 80)];
        assert_eq!(refunded_minor(&made_after, Some(snapshot)), 500);
    }

    #[test]
    fn noting_refunds_keeps_the_newest_status_of_each() {
        let mut refunds = Vec::new();
        assert!(note_refund(
            &mut refunds,
            refund("re_1", 300, "succeeded", 10, 20)
        ));
        assert!(!note_refund(
            &mut refunds,
            refund("re_1", 300, "pending", 10, 11)
        ));
        assert_eq!(refunds[0].status, "succeeded");
        assert!(note_refund(
            &mut refunds,
            refund("re_1", 300, "failed", 10, 30)
        ));
        assert_eq!(refunds[0].status, "failed");
        assert!(!note_refund(
            &mut refunds,
            refund("re_1", 300, "failed", 10, 30)
        ));
        assert!(note_refund(
            &mut refunds,
            refund("re_0", 100, "pending", 5, 6)
        ));
        assert_eq!(refunds[0].id, "re_0", "kept in the order refunds were made");
    }

    #[test]
    fn refunds_lay_over_the_payments_own_status() {
        let paid = Some(PaymentLifecycle::Paid);
        assert_eq!(payment_status(paid, 0, Some(1000)), "paid");
        assert_eq!(payment_status(paid, 400, Some(1000)), "partially_refunded");
        assert_eq!(payment_status(paid, 1000, Some(1000)), "refunded");
        assert_eq!(payment_status(None, 1000, None), "partially_refunded");
        assert_eq!(payment_status(None, 0, None), "pending");
        assert_eq!(
            payment_status(Some(PaymentLifecycle::RequiresAction), 0, Some(5)),
            "requires_action"
        );
    }
}
