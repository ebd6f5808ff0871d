//! Stripe's events on fixtures in Stripe's wire format, applied to an in-memory ledger that
//! behaves as the backends' ledger stores do (fixed columns written once, history rows appended
//! once): every order of the same events must end in the same rows.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::event::{self, decimal_text, Reading, LEDGER_EVENT_TYPES};
use super::source::changes;
use crate::clock::Timestamp;
use crate::ledger::{Cell, Currency, LedgerChange, RowWrite, Table, WriteTimes};
use crate::sources::Normalized;

pub(super) fn fixture(name: &str) -> Value {
    let text = super::fixtures::text(name).unwrap_or_else(|| panic!("no fixture {name}"));
    serde_json::from_str(text).expect("fixture is JSON")
}

/// A fixture with another event id and time, and `edit` applied to its object.
fn event_at(name: &str, id: &str, created: i64, edit: impl FnOnce(&mut Value)) -> Value {
    let mut event = fixture(name);
    event["id"] = json!(id);
    event["created"] = json!(created);
    edit(&mut event["data"]["object"]);
    event
}

fn changes_of(event: &Value) -> Vec<LedgerChange> {
    match event::read(event).expect("reads") {
        Reading::Ignored(reason) => panic!("ignored: {reason}"),
        reading => changes(reading).expect("changes"),
    }
}

/// The ledger as a backend keeps it, in memory.
#[derive(Default)]
struct Ledger {
    rows: BTreeMap<(&'static str, String), Vec<Cell>>,
    appended: BTreeMap<(&'static str, String), Vec<Cell>>,
}

fn key_of(table: &Table, row: &[Cell]) -> String {
    let cells: Vec<&Cell> = table
        .key
        .iter()
        .map(|column| &row[table.position(column).expect("key column")])
        .collect();
    format!("{cells:?}")
}

impl Ledger {
    fn apply(&mut self, change: &LedgerChange) {
        let table = change.table();
        let key = format!("{:?}", change.key("stripe").iter().collect::<Vec<_>>());
        let current = self.rows.get(&(table.name, key.clone()));
        let times = WriteTimes {
            received_at: Timestamp::from_unix_seconds(1_800_000_000),
            now: Timestamp::from_unix_seconds(1_800_000_000),
        };
        let decision = change
            .decide("stripe", current.map(Vec::as_slice), times)
            .expect("decides");
        match decision.row {
            RowWrite::Insert(row) => {
                assert_eq!(
                    key_of(table, &row),
                    key,
                    "{} inserts its own key",
                    table.name
                );
                assert!(current.is_none(), "{} inserts over a row", table.name);
                self.rows.insert((table.name, key), row);
            }
            RowWrite::Update(row) => {
                let stored = self
                    .rows
                    .get_mut(&(table.name, key))
                    .expect("updates a row");
                for (at, column) in table.columns.iter().enumerate() {
                    if column.updatable {
                        stored[at] = row[at].clone();
                    }
                }
            }
            RowWrite::Unchanged => {}
        }
        for appended in decision.appended {
            let key = key_of(appended.table, &appended.row);
            self.appended
                .entry((appended.table.name, key))
                .or_insert(appended.row);
        }
    }

    fn deliver(&mut self, event: &Value) {
        self.deliver_changes(&changes_of(event));
    }

    fn deliver_changes(&mut self, changes: &[LedgerChange]) {
        for change in changes {
            self.apply(change);
        }
    }

    fn cell(&self, table: &Table, key: &str, column: &str) -> Cell {
        let row = self
            .rows
            .iter()
            .find(|((name, row_key), _)| *name == table.name && row_key.contains(key))
            .map(|(_, row)| row)
            .unwrap_or_else(|| panic!("no {} row {key}", table.name));
        row[table.position(column).expect("column")].clone()
    }

    fn text(&self, table: &Table, key: &str, column: &str) -> Option<String> {
        match self.cell(table, key, column) {
            Cell::Null => None,
            Cell::Text(text) | Cell::Decimal(text) | Cell::Json(text) => Some(text),
            other => Some(format!("{other:?}")),
        }
    }

    /// Every row, without the columns that record when Wharf wrote it nor those in `ignored`.
    fn comparable(&self, ignored: &[&str]) -> Vec<(String, Vec<Compared>)> {
        let tables = super::StripeProvider.ledger_tables_for_tests();
        let strip = |name: &str, row: &[Cell]| -> Vec<Compared> {
            let table = tables.iter().find(|t| t.name == name).expect("known table");
            table
                .columns
                .iter()
                .zip(row)
                .filter(|(column, _)| {
                    !matches!(column.name, "id" | "created_at" | "updated_at")
                        && !ignored.contains(&format!("{name}.{}", column.name).as_str())
                })
                .map(|(_, cell)| match cell {
                    Cell::Json(text) => Compared::Json(serde_json::from_str(text).expect("json")),
                    other => Compared::Cell(other.clone()),
                })
                .collect()
        };
        self.rows
            .iter()
            .map(|((name, key), row)| (format!("{name} {key}"), strip(name, row)))
            .chain(
                self.appended
                    .iter()
                    .map(|((name, key), row)| (format!("{name} {key}"), strip(name, row))),
            )
            .collect()
    }
}

/// A cell as two ledgers are compared: JSON as JSON, whatever the order of its keys (PostgreSQL's
/// `JSONB` keeps none).
#[derive(Debug, PartialEq)]
enum Compared {
    Cell(Cell),
    Json(Value),
}

impl super::StripeProvider {
    fn ledger_tables_for_tests(&self) -> &'static [&'static Table] {
        crate::sources::Provider::ledger_tables(self)
    }
}

/// Every permutation of `items` (Heap's algorithm).
fn permutations<T: Clone>(items: &[T]) -> Vec<Vec<T>> {
    fn heap<T: Clone>(k: usize, items: &mut Vec<T>, out: &mut Vec<Vec<T>>) {
        if k <= 1 {
            out.push(items.clone());
            return;
        }
        heap(k - 1, items, out);
        for i in 0..k - 1 {
            if k.is_multiple_of(2) {
                items.swap(i, k - 1);
            } else {
                items.swap(0, k - 1);
            }
            heap(k - 1, items, out);
        }
    }
    let mut items = items.to_vec();
    let mut out = Vec::new();
    heap(items.len(), &mut items, &mut out);
    out
}

use super::billing::{SUBSCRIPTIONS, USER_PLANS};
use super::payments::{DISPUTES, ORDER_STATUS_HISTORY, PAYMENTS, REFUNDS};

const PI: &str = "pi_3PqQ1zLkdIwHu7ix0u8nT0aE";
const CUSTOMER: &str = "cus_QhJ4mX8x1Yc2Zb";

#[test]
fn every_event_type_of_the_seeds_reads_into_ledger_changes() {
    for event_type in LEDGER_EVENT_TYPES {
        let event = fixture(event_type);
        assert_eq!(event["type"], event_type);
        let changes = changes_of(&event);
        assert!(!changes.is_empty(), "{event_type}");
    }
}

#[test]
fn other_event_types_are_ignored_without_reading_their_object() {
    let event = json!({"id": "evt_1", "object": "event", "type": "customer.created", "data": {"object": {"id": "cus_1"}}});
    assert!(matches!(event::read(&event), Ok(Reading::Ignored(_))));
}

#[test]
fn a_ledger_event_without_created_or_object_fails_naming_the_field() {
    let mut event = fixture("payment_intent.succeeded");
    event.as_object_mut().expect("object").remove("created");
    assert!(event::read(&event)
        .expect_err("refused")
        .to_string()
        .contains("created"));
    let mut event = fixture("charge.refunded");
    event["data"]["object"]["amount_refunded"] = json!("2000");
    let error = event::read(&event).expect_err("refused").to_string();
    assert!(error.contains("data.object.amount_refunded"), "{error}");
}

#[test]
fn the_seed_payment_lands_with_seed_003s_columns() {
    let mut ledger = Ledger::default();
    ledger.deliver(&fixture("payment_intent.succeeded"));
    let text = |column| ledger.text(&PAYMENTS, PI, column);
    assert_eq!(text("payment_status").as_deref(), Some("paid"));
    assert_eq!(text("amount").as_deref(), Some("20.00"));
    assert_eq!(
        ledger.cell(&PAYMENTS, PI, "amount_minor"),
        Cell::Integer(2000)
    );
    assert_eq!(text("currency").as_deref(), Some("USD"));
    assert_eq!(text("order_id").as_deref(), Some("ORD-1001"));
    assert_eq!(
        text("charge_id").as_deref(),
        Some("ch_3PqQ1zLkdIwHu7ix0hTtQd7n")
    );
    assert_eq!(
        ledger.cell(&PAYMENTS, PI, "captured_at"),
        Cell::Timestamp(Timestamp::from_unix_seconds(1_726_000_010))
    );
    let response: Value =
        serde_json::from_str(&text("gateway_response").expect("set")).expect("json");
    assert_eq!(response["id"], PI);
    assert!(
        response.get("client_secret").is_none(),
        "the client secret is not kept"
    );
    let history: Vec<_> = ledger.appended.values().collect();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0][1], Cell::text("ORD-1001"));
    assert_eq!(history[0][3], Cell::Null);
    assert_eq!(history[0][4], Cell::text("paid"));
}

/// One payment's events: 3-D Secure, a declined card, success, its charge, a partial refund,
/// the charge fully refunded, a dispute opened and won.
fn payment_story() -> Vec<Value> {
    vec![
        fixture("payment_intent.requires_action"),
        fixture("payment_intent.payment_failed"),
        fixture("charge.failed"),
        fixture("payment_intent.succeeded"),
        fixture("charge.succeeded"),
        fixture("refund.created"),
        fixture("charge.refunded"),
        fixture("charge.dispute.created"),
        fixture("charge.dispute.closed"),
    ]
}

#[test]
fn a_payments_events_in_any_order_end_in_the_same_rows() {
    let story = payment_story();
    let mut in_order = Ledger::default();
    for event in &story {
        in_order.deliver(event);
    }
    let text = |column| in_order.text(&PAYMENTS, PI, column);
    assert_eq!(text("payment_status").as_deref(), Some("refunded"));
    assert_eq!(text("lifecycle_status").as_deref(), Some("paid"));
    assert_eq!(text("amount_refunded").as_deref(), Some("20.00"));
    assert_eq!(text("failure_code").as_deref(), Some("insufficient_funds"));
    let metadata: Value = serde_json::from_str(&text("metadata").expect("set")).expect("json");
    assert_eq!(metadata["order_id"], "ORD-1001");
    assert_eq!(metadata["disputes"][0]["id"], "dp_1PqR5fLkdIwHu7ixq7mZLd0s");
    assert_eq!(metadata["disputes"][0]["status"], "won");
    assert_eq!(
        in_order.text(&DISPUTES, "dp_1PqR5f", "status").as_deref(),
        Some("won")
    );
    assert_eq!(
        in_order.text(&REFUNDS, "re_3PqQ1z", "status").as_deref(),
        Some("succeeded")
    );
    // Every order of the first six events, with the charge refund and the two dispute events
    // (in either order) slotted in at places that vary with the order.
    let history = |rows: Vec<(String, Vec<Compared>)>| -> Vec<(String, Vec<Compared>)> {
        rows.into_iter()
            .filter(|(key, _)| !key.starts_with(ORDER_STATUS_HISTORY.name))
            .collect()
    };
    let expected = history(in_order.comparable(&[]));
    let changes: Vec<Vec<LedgerChange>> = story.iter().map(changes_of).collect();
    let indices: Vec<usize> = (0..6).collect();
    let mut orders = 0;
    for (n, mut order) in permutations(&indices).into_iter().enumerate() {
        let at = n % (order.len() + 1);
        order.insert(at, 6);
        let disputes = if n % 2 == 0 { [7, 8] } else { [8, 7] };
        let at = (n / 7) % (order.len() + 1);
        order.splice(at..at, disputes);
        let mut ledger = Ledger::default();
        for &i in &order {
            ledger.deliver_changes(&changes[i]);
        }
        assert_eq!(history(ledger.comparable(&[])), expected, "order {order:?}");
        orders += 1;
    }
    assert_eq!(orders, 720);
}

#[test]
fn an_older_failure_after_success_does_not_regress_the_payment() {
    let mut ledger = Ledger::default();
    ledger.deliver(&fixture("payment_intent.succeeded"));
    ledger.deliver(&fixture("payment_intent.payment_failed"));
    assert_eq!(
        ledger.text(&PAYMENTS, PI, "payment_status").as_deref(),
        Some("paid")
    );
    assert_eq!(
        ledger.appended.len(),
        1,
        "no history for a change that did not happen"
    );
}

#[test]
fn a_refund_before_its_charge_ends_right_once_the_charge_arrives() {
    let mut ledger = Ledger::default();
    ledger.deliver(&fixture("refund.created"));
    assert_eq!(
        ledger.text(&PAYMENTS, PI, "payment_status").as_deref(),
        Some("partially_refunded"),
        "500 refunded of an amount not known yet"
    );
    ledger.deliver(&fixture("payment_intent.succeeded"));
    assert_eq!(
        ledger.text(&PAYMENTS, PI, "payment_status").as_deref(),
        Some("partially_refunded")
    );
    assert_eq!(
        ledger.text(&PAYMENTS, PI, "amount_refunded").as_deref(),
        Some("5.00")
    );
    let full = event_at("refund.created", "evt_full", 1_726_002_000, |refund| {
        refund["id"] = json!("re_second");
        refund["amount"] = json!(1500);
        refund["created"] = json!(1_726_002_000);
    });
    ledger.deliver(&full);
    assert_eq!(
        ledger.text(&PAYMENTS, PI, "payment_status").as_deref(),
        Some("refunded")
    );
}

#[test]
fn a_refund_that_fails_gives_the_money_back_to_the_payment() {
    let mut ledger = Ledger::default();
    ledger.deliver(&fixture("payment_intent.succeeded"));
    let partial_charge = event_at("charge.refunded", "evt_partial", 1_726_001_801, |charge| {
        charge["amount_refunded"] = json!(500);
        charge["refunded"] = json!(false);
    });
    ledger.deliver(&partial_charge);
    ledger.deliver(&fixture("refund.created"));
    assert_eq!(
        ledger.text(&PAYMENTS, PI, "payment_status").as_deref(),
        Some("partially_refunded")
    );
    ledger.deliver(&fixture("refund.updated"));
    assert_eq!(
        ledger.text(&PAYMENTS, PI, "payment_status").as_deref(),
        Some("paid")
    );
    assert_eq!(
        ledger.cell(&PAYMENTS, PI, "amount_refunded_minor"),
        Cell::Integer(0)
    );
    assert_eq!(
        ledger.text(&REFUNDS, "re_3PqQ1z", "status").as_deref(),
        Some("failed")
    );
    assert_eq!(
        ledger
            .text(&REFUNDS, "re_3PqQ1z", "failure_reason")
            .as_deref(),
        Some("expired_or_canceled_card")
    );
}

#[test]
fn a_charge_that_embeds_its_refunds_fills_the_refunds_table() {
    let mut ledger = Ledger::default();
    let event = event_at("charge.refunded", "evt_old_api", 1_726_003_600, |charge| {
        charge["refunds"] = json!({
            "object": "list",
            "data": [{
                "id": "re_embedded", "object": "refund", "amount": 2000, "charge": "ch_3PqQ1zLkdIwHu7ix0hTtQd7n",
                "created": 1_726_003_590, "currency": "usd", "metadata": [], "payment_intent": PI,
                "reason": null, "status": "succeeded"
            }],
            "has_more": false, "total_count": 1, "url": "/v1/charges/ch_3PqQ1zLkdIwHu7ix0hTtQd7n/refunds"
        });
    });
    ledger.deliver(&event);
    assert_eq!(
        ledger.text(&REFUNDS, "re_embedded", "amount").as_deref(),
        Some("20.00")
    );
    assert_eq!(
        ledger.text(&PAYMENTS, PI, "payment_status").as_deref(),
        Some("refunded")
    );
}

#[test]
fn a_canceled_payment_intent_is_canceled_and_its_order_says_so() {
    let mut ledger = Ledger::default();
    ledger.deliver(&fixture("payment_intent.canceled"));
    let key = "pi_3PqQ9aLkdIwHu7ix1c4nCeL0";
    assert_eq!(
        ledger.text(&PAYMENTS, key, "payment_status").as_deref(),
        Some("canceled")
    );
    assert_eq!(
        ledger.cell(&PAYMENTS, key, "canceled_at"),
        Cell::Timestamp(Timestamp::from_unix_seconds(1_726_000_300))
    );
    let history: Vec<_> = ledger.appended.values().collect();
    assert_eq!(history[0][1], Cell::text("ORD-1002"));
    assert_eq!(history[0][4], Cell::text("canceled"));
}

fn subscription_story() -> Vec<Value> {
    vec![
        fixture("customer.subscription.created"),
        fixture("invoice.paid"),
        fixture("customer.subscription.updated"),
        fixture("invoice.payment_failed"),
        fixture("customer.subscription.deleted"),
    ]
}

#[test]
fn a_subscriptions_events_in_any_order_end_in_the_same_rows() {
    let story = subscription_story();
    let mut in_order = Ledger::default();
    for (step, event) in story.iter().enumerate() {
        in_order.deliver(event);
        let plan_status = in_order.text(&USER_PLANS, CUSTOMER, "plan_status");
        let expected = match step {
            0 => "inactive",
            1..=3 => "active",
            _ => "inactive",
        };
        assert_eq!(plan_status.as_deref(), Some(expected), "after step {step}");
    }
    let text = |table, column| in_order.text(table, CUSTOMER, column);
    assert_eq!(text(&USER_PLANS, "plan").as_deref(), Some("pro"));
    assert_eq!(
        text(&USER_PLANS, "email").as_deref(),
        Some("user@example.com")
    );
    assert_eq!(text(&USER_PLANS, "user_id").as_deref(), Some("user_42"));
    assert_eq!(
        text(&USER_PLANS, "subscription_status").as_deref(),
        Some("canceled")
    );
    assert!(in_order.cell(&USER_PLANS, CUSTOMER, "activated_at") != Cell::Null);
    assert_eq!(
        in_order.cell(&USER_PLANS, CUSTOMER, "deactivated_at"),
        Cell::Timestamp(Timestamp::from_unix_seconds(1_729_000_001))
    );
    let sub = "sub_1PqS2a";
    assert_eq!(
        in_order.text(&SUBSCRIPTIONS, sub, "status").as_deref(),
        Some("canceled")
    );
    assert_eq!(
        in_order.text(&SUBSCRIPTIONS, sub, "price_id").as_deref(),
        Some("price_1PqRzzLkdIwHu7ixW2xPr0Ab")
    );
    assert_eq!(
        in_order.text(&SUBSCRIPTIONS, sub, "amount").as_deref(),
        Some("15.00")
    );
    assert_eq!(
        in_order.text(&SUBSCRIPTIONS, sub, "interval").as_deref(),
        Some("month")
    );
    assert_eq!(
        in_order.cell(&SUBSCRIPTIONS, sub, "current_period_end"),
        Cell::Timestamp(Timestamp::from_unix_seconds(1_728_692_000)),
        "from the subscription item (basil)"
    );
    assert_eq!(
        in_order
            .text(&SUBSCRIPTIONS, sub, "latest_invoice_status")
            .as_deref(),
        Some("payment_failed")
    );
    // When a plan was activated depends on whether an activating report came before the
    // cancellation; nothing else may depend on the order.
    let ignored = ["user_plans.activated_at"];
    let expected = in_order.comparable(&ignored);
    let changes: Vec<Vec<LedgerChange>> = story.iter().map(changes_of).collect();
    let indices: Vec<usize> = (0..story.len()).collect();
    for order in permutations(&indices) {
        let mut ledger = Ledger::default();
        for &i in &order {
            ledger.deliver_changes(&changes[i]);
        }
        assert_eq!(ledger.comparable(&ignored), expected, "order {order:?}");
    }
}

#[test]
fn invoice_paid_activates_the_plan_until_the_subscription_ends() {
    let mut ledger = Ledger::default();
    ledger.deliver(&fixture("invoice.paid"));
    assert_eq!(
        ledger.text(&USER_PLANS, CUSTOMER, "plan_status").as_deref(),
        Some("active")
    );
    ledger.deliver(&fixture("customer.subscription.deleted"));
    assert_eq!(
        ledger.text(&USER_PLANS, CUSTOMER, "plan_status").as_deref(),
        Some("inactive")
    );
    let late_invoice = event_at("invoice.paid", "evt_late_invoice", 1_727_000_100, |_| {});
    ledger.deliver(&late_invoice);
    assert_eq!(
        ledger.text(&USER_PLANS, CUSTOMER, "plan_status").as_deref(),
        Some("inactive"),
        "an ended subscription is not revived by a later invoice"
    );
}

#[test]
fn a_new_subscription_takes_over_the_plan_and_the_old_ones_end_does_not_remove_it() {
    let mut ledger = Ledger::default();
    ledger.deliver(&fixture("customer.subscription.updated"));
    let second = event_at(
        "customer.subscription.created",
        "evt_second",
        1_726_500_000,
        |sub| {
            sub["id"] = json!("sub_second");
            sub["status"] = json!("active");
            sub["metadata"]["plan"] = json!("business");
        },
    );
    ledger.deliver(&second);
    assert_eq!(
        ledger.text(&USER_PLANS, CUSTOMER, "plan").as_deref(),
        Some("business")
    );
    ledger.deliver(&fixture("customer.subscription.deleted"));
    assert_eq!(
        ledger.text(&USER_PLANS, CUSTOMER, "plan_status").as_deref(),
        Some("active")
    );
    assert_eq!(
        ledger
            .text(&USER_PLANS, CUSTOMER, "subscription_id")
            .as_deref(),
        Some("sub_second")
    );
}

#[test]
fn stripe_amounts_follow_stripes_own_currency_exponents() {
    let currency = |code| Currency::parse(code).expect("code");
    assert_eq!(decimal_text(2000, &currency("usd")), "20.00");
    assert_eq!(decimal_text(5, &currency("usd")), "0.05");
    assert_eq!(decimal_text(2000, &currency("jpy")), "2000");
    assert_eq!(decimal_text(12345, &currency("kwd")), "12.345");
    assert_eq!(
        decimal_text(100_000, &currency("isk")),
        "1000.00",
        "sent with two decimals"
    );
}

#[test]
fn normalized_changes_compare_for_the_processor() {
    let event = fixture("charge.succeeded");
    let first = Normalized::Changes(changes_of(&event));
    let second = Normalized::Changes(changes_of(&event));
    assert_eq!(first, second);
}

#[test]
fn invoices_and_subscriptions_of_any_api_version_name_the_same_subscription_and_period() {
    let basil = fixture("invoice.paid");
    let subscription_of = |event: &Value| match event::read(event).expect("reads") {
        Reading::Invoice(invoice) => invoice.subscription_id,
        other => panic!("an invoice, got {other:?}"),
    };
    let new_location = subscription_of(&basil).expect("parent.subscription_details");
    let mut before_basil = basil.clone();
    let object = &mut before_basil["data"]["object"];
    object["parent"] = Value::Null;
    object["lines"]["data"][0]["parent"] = Value::Null;
    object["subscription"] = json!(new_location.clone());
    assert_eq!(subscription_of(&before_basil), Some(new_location));
    let basil_subscription = fixture("customer.subscription.updated");
    let period_of = |event: &Value| match event::read(event).expect("reads") {
        Reading::Subscription(subscription) => (subscription.period_start, subscription.period_end),
        other => panic!("a subscription, got {other:?}"),
    };
    let from_item = period_of(&basil_subscription);
    assert!(from_item.1.is_some(), "basil: the period is the item's");
    let mut older = basil_subscription.clone();
    let item_end = older["data"]["object"]["items"]["data"][0]["current_period_end"].clone();
    let item_start = older["data"]["object"]["items"]["data"][0]["current_period_start"].clone();
    older["data"]["object"]["current_period_end"] = item_end;
    older["data"]["object"]["current_period_start"] = item_start;
    older["data"]["object"]["items"]["data"][0]["current_period_end"] = Value::Null;
    older["data"]["object"]["items"]["data"][0]["current_period_start"] = Value::Null;
    assert_eq!(period_of(&older), from_item);
}

#[test]
fn client_secrets_are_redacted_from_the_journals_copy_and_nothing_else_is() {
    use super::source::{redact_client_secrets, REDACTED};
    let event = fixture("payment_intent.succeeded");
    let body = serde_json::to_vec_pretty(&event).expect("serializes");
    let redacted = redact_client_secrets(&body).expect("it holds one");
    let redacted: Value = serde_json::from_slice(&redacted).expect("still JSON");
    assert_eq!(redacted["data"]["object"]["client_secret"], REDACTED);
    let mut expected = event.clone();
    expected["data"]["object"]["client_secret"] = json!(REDACTED);
    assert_eq!(redacted, expected, "only the secret changed");
    let charge = serde_json::to_vec(&fixture("charge.succeeded")).expect("serializes");
    assert_eq!(redact_client_secrets(&charge), None, "kept byte for byte");
}
