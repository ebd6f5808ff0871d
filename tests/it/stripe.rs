//! Stripe (seeds 003 and 004) over HTTP: both routes, the real `Stripe-Signature` scheme, every
//! event of both seeds into its table, events out of order, and seed 003's own SQL.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use wharf::verify::StripeScheme;

use crate::support::{on_both_backends, Backend, TestApp, TestDatabase};

on_both_backends!(
    both_seed_routes_store_the_event_and_answer_in_each_seeds_words,
    a_bad_signature_a_stale_timestamp_or_no_signature_is_401_and_stores_nothing,
    without_an_endpoint_secret_stripe_refuses_traffic,
    two_endpoint_secrets_are_accepted_at_once_while_rotating,
    every_event_of_both_seeds_lands_in_its_table_with_the_seeds_column_names,
    other_event_types_are_stored_acknowledged_and_marked_ignored,
    a_refund_before_its_charge_and_an_older_failure_after_success_end_right,
    a_partial_then_a_full_refund_move_the_payment_from_partially_refunded_to_refunded,
    a_dispute_opened_then_closed_is_in_the_disputes_table_and_the_payments_metadata,
    a_subscription_lifecycle_activates_then_deactivates_the_users_plan,
    a_repeated_event_id_is_stored_and_applied_once,
    the_orders_payment_status_history_follows_metadata_order_id,
    seed_003s_monitoring_sql_runs_as_written,
    a_payment_intents_client_secret_is_never_kept_nor_shown,
);

const SECRET: &str = "whsec_wharf_test_primary_5f3c";
const ROTATED: &str = "whsec_wharf_test_rotated_9a1d";
const PI: &str = "pi_3PqQ1zLkdIwHu7ix0u8nT0aE";
const CUSTOMER: &str = "cus_QhJ4mX8x1Yc2Zb";
const SEED_003_ROUTE: &str = "/api/webhooks/stripe";
const SEED_004_ROUTE: &str = "/api/payments/stripe/webhook";

const EVENT_TYPES: [&str; 16] = [
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

async fn app(backend: Backend) -> TestApp {
    TestApp::builder()
        .backend(backend)
        .env("STRIPE_WEBHOOK_SECRET", SECRET)
        .spawn()
        .await
}

/// A Stripe event as Stripe sends it (`tests/fixtures/stripe/<type>.json`).
fn fixture(event_type: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/stripe/{event_type}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"));
    serde_json::from_str(&text).expect("fixture is JSON")
}

/// A fixture with another event id and time, and `edit` applied to its `data.object`.
fn event(event_type: &str, id: &str, created: i64, edit: impl FnOnce(&mut Value)) -> Value {
    let mut event = fixture(event_type);
    event["id"] = json!(id);
    event["created"] = json!(created);
    edit(&mut event["data"]["object"]);
    event
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

/// Posts `event` to `route`, with the `Stripe-Signature` header `signature` (or none).
async fn post_signed(
    app: &TestApp,
    route: &str,
    body: &[u8],
    signature: Option<String>,
) -> reqwest::Response {
    let mut request = app
        .client
        .post(format!("{}{route}", app.base))
        .header("content-type", "application/json; charset=utf-8")
        .header(
            "user-agent",
            "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        )
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("stripe-signature", signature);
    }
    request.send().await.expect("sent")
}

/// Posts `event` signed as Stripe signs it, now, with [`SECRET`].
async fn post(app: &TestApp, route: &str, event: &Value) -> reqwest::Response {
    let body = serde_json::to_vec_pretty(event).expect("serializes");
    let signature = StripeScheme::sign(SECRET, now(), &body);
    post_signed(app, route, &body, Some(signature)).await
}

/// Posts and processes one event; it must be acknowledged.
async fn deliver(app: &TestApp, event: &Value) {
    let response = post(app, SEED_003_ROUTE, event).await;
    assert_eq!(response.status(), 200, "{}", event["type"]);
    app.run_pending().await;
}

async fn text(app: &TestApp, sql: &str) -> Option<String> {
    app.one(sql).await.remove(0)
}

async fn payment_status(app: &TestApp, key: &str) -> Option<String> {
    text(
        app,
        &format!("SELECT payment_status FROM payments WHERE gateway_transaction_id = '{key}'"),
    )
    .await
}

async fn both_seed_routes_store_the_event_and_answer_in_each_seeds_words(backend: Backend) {
    let app = app(backend).await;
    let response = post(&app, SEED_003_ROUTE, &fixture("payment_intent.succeeded")).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["received"], true, "seed 003: {{ received: true }}");
    assert_eq!(answer["duplicate"], false);
    assert_eq!(answer["event_type"], "payment_intent.succeeded");

    let response = post(&app, SEED_004_ROUTE, &fixture("charge.succeeded")).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(
        answer["status"], "success",
        "seed 004: {{\"status\": \"success\"}}"
    );

    let response = post(&app, "/in/stripe", &fixture("invoice.paid")).await;
    assert_eq!(response.status(), 200, "and at /in/stripe");

    assert_eq!(app.run_pending().await, 3);
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM deliveries WHERE source = 'stripe' AND status = 'processed'"
        )
        .await,
        3
    );
    assert_eq!(
        app.one(
            "SELECT event_id, event_type FROM deliveries WHERE event_type = 'charge.succeeded'"
        )
        .await,
        [
            Some("evt_3PqQ1zLkdIwHu7ix0sW2xE3r".to_owned()),
            Some("charge.succeeded".to_owned())
        ]
    );
    assert_eq!(payment_status(&app, PI).await.as_deref(), Some("paid"));
}

async fn a_bad_signature_a_stale_timestamp_or_no_signature_is_401_and_stores_nothing(
    backend: Backend,
) {
    let app = app(backend).await;
    let body = serde_json::to_vec(&fixture("payment_intent.succeeded")).expect("json");
    let other_body = serde_json::to_vec(&fixture("charge.succeeded")).expect("json");
    let attempts = [
        (
            "another secret",
            Some(StripeScheme::sign("whsec_not_ours", now(), &body)),
        ),
        (
            "another body",
            Some(StripeScheme::sign(SECRET, now(), &other_body)),
        ),
        // A minute beyond the 300 s tolerance either way: the signatures are made once, before
        // the requests, so a slow machine must not carry "ahead" back inside the window. The
        // exact boundary is `verify::tests::tolerance_accepts_boundary_and_rejects_beyond_*`.
        (
            "360 s old",
            Some(StripeScheme::sign(SECRET, now() - 360, &body)),
        ),
        (
            "360 s ahead",
            Some(StripeScheme::sign(SECRET, now() + 360, &body)),
        ),
        (
            "v0 only",
            Some(StripeScheme::sign(SECRET, now(), &body).replace("v1=", "v0=")),
        ),
        ("garbage", Some("t=abc,v1=zz".to_owned())),
        ("missing", None),
    ];
    for route in [SEED_003_ROUTE, SEED_004_ROUTE] {
        for (label, signature) in attempts.clone() {
            let response = post_signed(&app, route, &body, signature).await;
            assert_eq!(response.status(), 401, "{label} at {route}");
            let answer: Value = response.json().await.expect("json");
            assert!(answer["error"]["code"].is_string(), "{label}: {answer}");
        }
    }
    let stale = post_signed(
        &app,
        SEED_003_ROUTE,
        &body,
        Some(StripeScheme::sign(SECRET, now() - 360, &body)),
    )
    .await;
    let answer: Value = stale.json().await.expect("json");
    assert_eq!(answer["error"]["code"], "timestamp_outside_tolerance");
    app.run_pending().await;
    assert_eq!(app.count("SELECT COUNT(*) FROM deliveries").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM payments").await, 0);
    let log: Value = app
        .admin_get("/api/sources/stripe/rejections")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(log["total"], 15);

    let within = post_signed(
        &app,
        SEED_003_ROUTE,
        &body,
        Some(StripeScheme::sign(SECRET, now() - 240, &body)),
    )
    .await;
    assert_eq!(
        within.status(),
        200,
        "four minutes old is within the 300 s tolerance"
    );
}

async fn without_an_endpoint_secret_stripe_refuses_traffic(backend: Backend) {
    let app = TestApp::builder().backend(backend).spawn().await;
    let response = post(&app, SEED_004_ROUTE, &fixture("invoice.paid")).await;
    assert_eq!(response.status(), 401);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["error"]["code"], "no_secret_configured");
    assert_eq!(app.count("SELECT COUNT(*) FROM deliveries").await, 0);
}

async fn two_endpoint_secrets_are_accepted_at_once_while_rotating(backend: Backend) {
    let app = TestApp::builder()
        .backend(backend)
        .env("STRIPE_WEBHOOK_SECRET", &format!("{SECRET}, {ROTATED}"))
        .spawn()
        .await;
    let old = serde_json::to_vec(&fixture("payment_intent.succeeded")).expect("json");
    let new = serde_json::to_vec(&fixture("charge.succeeded")).expect("json");
    let both = serde_json::to_vec(&fixture("invoice.paid")).expect("json");
    let signed_old = StripeScheme::sign(SECRET, now(), &old);
    let signed_new = StripeScheme::sign(ROTATED, now(), &new);
    // While an endpoint's secret rolls, Stripe signs with both: one v1 per secret.
    let t = now();
    let v1 = |secret: &str| {
        StripeScheme::sign(secret, t, &both)
            .split_once(",v1=")
            .map(|(_, v1)| v1.to_owned())
            .expect("v1")
    };
    let signed_both = format!("t={t},v1={},v1={}", v1("whsec_expired"), v1(ROTATED));
    for (body, signature) in [(&old, signed_old), (&new, signed_new), (&both, signed_both)] {
        let response = post_signed(&app, SEED_003_ROUTE, body, Some(signature)).await;
        assert_eq!(response.status(), 200);
    }
    assert_eq!(app.run_pending().await, 3);
}

async fn every_event_of_both_seeds_lands_in_its_table_with_the_seeds_column_names(
    backend: Backend,
) {
    let app = app(backend).await;
    for (n, event_type) in EVENT_TYPES.iter().enumerate() {
        let route = if n % 2 == 0 {
            SEED_003_ROUTE
        } else {
            SEED_004_ROUTE
        };
        let response = post(&app, route, &fixture(event_type)).await;
        assert_eq!(response.status(), 200, "{event_type}");
    }
    assert_eq!(app.run_pending().await, 16);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM deliveries WHERE status = 'processed'")
            .await,
        16,
        "every seed event changes the ledger"
    );
    // Seed 003: payments by gateway_transaction_id, with payment_status, captured_at,
    // gateway_response and metadata.
    let payment = app
        .one(&format!(
            "SELECT payment_status, order_id, charge_id, amount_minor, amount_refunded_minor, \
             currency, CASE WHEN captured_at IS NULL THEN 'no' ELSE 'yes' END, \
             CASE WHEN amount = 20 AND amount_refunded = 15 THEN 'exact' ELSE 'off' END, \
             gateway FROM payments WHERE gateway_transaction_id = '{PI}'"
        ))
        .await;
    assert_eq!(
        payment,
        [
            // The charge was refunded in full (2000), then its 500 refund failed.
            Some("partially_refunded".to_owned()),
            Some("ORD-1001".to_owned()),
            Some("ch_3PqQ1zLkdIwHu7ix0hTtQd7n".to_owned()),
            Some("2000".to_owned()),
            Some("1500".to_owned()),
            Some("USD".to_owned()),
            Some("yes".to_owned()),
            Some("exact".to_owned()),
            Some("stripe".to_owned()),
        ]
    );
    let response: Value = serde_json::from_str(
        &text(
            &app,
            &format!("SELECT gateway_response FROM payments WHERE gateway_transaction_id = '{PI}'"),
        )
        .await
        .expect("gateway_response"),
    )
    .expect("json");
    assert_eq!(
        response["object"], "charge",
        "the newest object: the refunded charge"
    );
    assert_eq!(response["amount_refunded"], 2000);
    assert_eq!(
        payment_status(&app, "pi_3PqQ9aLkdIwHu7ix1c4nCeL0")
            .await
            .as_deref(),
        Some("canceled")
    );
    assert_eq!(
        app.one(
            "SELECT refund_id, status, amount_minor, gateway_transaction_id, failure_reason \
             FROM refunds"
        )
        .await,
        [
            Some("re_3PqQ1zLkdIwHu7ix0S6xW8vB".to_owned()),
            Some("failed".to_owned()),
            Some("500".to_owned()),
            Some(PI.to_owned()),
            Some("expired_or_canceled_card".to_owned()),
        ]
    );
    assert_eq!(
        app.one("SELECT dispute_id, status, reason, gateway_transaction_id FROM disputes")
            .await,
        [
            Some("dp_1PqR5fLkdIwHu7ixq7mZLd0s".to_owned()),
            Some("won".to_owned()),
            Some("fraudulent".to_owned()),
            Some(PI.to_owned()),
        ]
    );
    assert_eq!(
        app.one(
            "SELECT subscription_id, customer, status, plan, price_id, interval, \
             latest_invoice_status, email, user_id FROM subscriptions"
        )
        .await,
        [
            Some("sub_1PqS2aLkdIwHu7ixM3pQ8hCd".to_owned()),
            Some(CUSTOMER.to_owned()),
            Some("canceled".to_owned()),
            Some("pro".to_owned()),
            Some("price_1PqRzzLkdIwHu7ixW2xPr0Ab".to_owned()),
            Some("month".to_owned()),
            Some("payment_failed".to_owned()),
            Some("user@example.com".to_owned()),
            Some("user_42".to_owned()),
        ]
    );
    assert_eq!(
        app.one("SELECT customer, email, plan, plan_status, subscription_status FROM user_plans")
            .await,
        [
            Some(CUSTOMER.to_owned()),
            Some("user@example.com".to_owned()),
            Some("pro".to_owned()),
            Some("inactive".to_owned()),
            Some("canceled".to_owned()),
        ]
    );
    // Which steps the order went through depends on the order the deliveries were applied in
    // (not promised); where it started and where it ended does not.
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM order_status_history \
             WHERE order_id = 'ORD-1001' AND old_payment_status IS NULL"
        )
        .await,
        1
    );
    // The order ends where its payment ends, whichever event took it there.
    assert_eq!(
        payment_status(&app, PI).await.as_deref(),
        Some("partially_refunded")
    );
    assert!(
        app.count(
            "SELECT COUNT(*) FROM order_status_history \
             WHERE order_id = 'ORD-1001' AND new_payment_status = 'partially_refunded'"
        )
        .await
            >= 1,
        "the history reaches the payment's final status"
    );
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM order_status_history \
             WHERE order_id = 'ORD-1002' AND new_payment_status = 'canceled'"
        )
        .await,
        1
    );
}

async fn other_event_types_are_stored_acknowledged_and_marked_ignored(backend: Backend) {
    let app = app(backend).await;
    let customer_created = json!({
        "id": "evt_1PqQ0bLkdIwHu7ixCc0Rr1Ee",
        "object": "event",
        "api_version": "2024-06-20",
        "created": 1_725_999_000,
        "data": {"object": {
            "id": CUSTOMER, "object": "customer", "address": null, "balance": 0,
            "created": 1_725_999_000, "currency": null, "default_source": null, "delinquent": false,
            "description": null, "email": "jenny.rosen@example.com", "invoice_prefix": "A1B2C3D4",
            "invoice_settings": {"custom_fields": null, "default_payment_method": null, "footer": null,
                                 "rendering_options": null},
            "livemode": false, "metadata": {}, "name": "Jenny Rosen", "phone": null,
            "preferred_locales": [], "shipping": null, "tax_exempt": "none", "test_clock": null
        }},
        "livemode": false,
        "pending_webhooks": 1,
        "request": {"id": "req_Qa1Ws2Ed3Rf4", "idempotency_key": null},
        "type": "customer.created"
    });
    let response = post(&app, SEED_004_ROUTE, &customer_created).await;
    assert_eq!(response.status(), 200);
    assert_eq!(app.run_pending().await, 1);
    assert_eq!(
        app.one("SELECT event_type, status FROM deliveries").await,
        [
            Some("customer.created".to_owned()),
            Some("ignored".to_owned())
        ]
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM payments").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM user_plans").await, 0);
}

async fn a_refund_before_its_charge_and_an_older_failure_after_success_end_right(backend: Backend) {
    let app = app(backend).await;
    // Stripe sends these in any order: the refund's charge first, then the payment's success,
    // then (late) the failure of an earlier attempt.
    deliver(&app, &fixture("charge.refunded")).await;
    assert_eq!(payment_status(&app, PI).await.as_deref(), Some("refunded"));
    deliver(&app, &fixture("payment_intent.succeeded")).await;
    assert_eq!(
        payment_status(&app, PI).await.as_deref(),
        Some("refunded"),
        "success does not undo the refund it preceded"
    );
    deliver(&app, &fixture("payment_intent.payment_failed")).await;
    assert_eq!(
        app.one(&format!(
            "SELECT payment_status, lifecycle_status, failure_code FROM payments \
             WHERE gateway_transaction_id = '{PI}'"
        ))
        .await,
        [
            Some("refunded".to_owned()),
            Some("paid".to_owned()),
            Some("insufficient_funds".to_owned()),
        ],
        "the older failure is recorded, not applied"
    );

    // And on a payment without refunds: success, then the older failure.
    let other = "pi_3PqQ7bLkdIwHu7ix1Ot4Rd3r";
    let succeeded = event("payment_intent.succeeded", "evt_ok", 1_726_000_600, |pi| {
        pi["id"] = json!(other);
    });
    let failed_earlier = event(
        "payment_intent.payment_failed",
        "evt_ko",
        1_726_000_500,
        |pi| {
            pi["id"] = json!(other);
        },
    );
    deliver(&app, &succeeded).await;
    deliver(&app, &failed_earlier).await;
    assert_eq!(payment_status(&app, other).await.as_deref(), Some("paid"));
    assert_eq!(
        app.count("SELECT COUNT(*) FROM deliveries WHERE status = 'processed'")
            .await,
        5
    );
}

async fn a_partial_then_a_full_refund_move_the_payment_from_partially_refunded_to_refunded(
    backend: Backend,
) {
    let app = app(backend).await;
    deliver(&app, &fixture("payment_intent.succeeded")).await;
    deliver(&app, &fixture("refund.created")).await;
    let partial_charge = event("charge.refunded", "evt_partial", 1_726_001_801, |charge| {
        charge["amount_refunded"] = json!(500);
        charge["refunded"] = json!(false);
    });
    deliver(&app, &partial_charge).await;
    let refunded = async |app: &TestApp| {
        let sql = format!(
            "SELECT payment_status, amount_refunded_minor, \
             CASE WHEN amount_refunded = 5 THEN '5' WHEN amount_refunded = 20 THEN '20' END \
             FROM payments WHERE gateway_transaction_id = '{PI}'"
        );
        app.one(&sql).await
    };
    assert_eq!(
        refunded(&app).await,
        [
            Some("partially_refunded".to_owned()),
            Some("500".to_owned()),
            Some("5".to_owned())
        ]
    );
    let rest = event("refund.created", "evt_rest", 1_726_003_590, |refund| {
        refund["id"] = json!("re_3PqQ1zLkdIwHu7ix0Tw9Xy0z");
        refund["amount"] = json!(1500);
        refund["created"] = json!(1_726_003_590);
    });
    deliver(&app, &rest).await;
    assert_eq!(
        refunded(&app).await,
        [
            Some("refunded".to_owned()),
            Some("2000".to_owned()),
            Some("20".to_owned())
        ]
    );
    deliver(&app, &fixture("charge.refunded")).await;
    assert_eq!(refunded(&app).await[0].as_deref(), Some("refunded"));
    assert_eq!(app.count("SELECT COUNT(*) FROM refunds").await, 2);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM refunds WHERE status = 'succeeded'")
            .await,
        2
    );
}

async fn a_dispute_opened_then_closed_is_in_the_disputes_table_and_the_payments_metadata(
    backend: Backend,
) {
    let app = app(backend).await;
    deliver(&app, &fixture("payment_intent.succeeded")).await;
    deliver(&app, &fixture("charge.dispute.created")).await;
    let metadata = async |app: &TestApp| {
        let sql = format!("SELECT metadata FROM payments WHERE gateway_transaction_id = '{PI}'");
        let text = app.one(&sql).await.remove(0).expect("metadata");
        serde_json::from_str::<Value>(&text).expect("json")
    };
    let opened = metadata(&app).await;
    assert_eq!(
        opened["order_id"], "ORD-1001",
        "the payment's own metadata stays"
    );
    assert_eq!(opened["disputes"][0]["id"], "dp_1PqR5fLkdIwHu7ixq7mZLd0s");
    assert_eq!(opened["disputes"][0]["amount"], 2000);
    assert_eq!(opened["disputes"][0]["reason"], "fraudulent");
    assert_eq!(opened["disputes"][0]["status"], "needs_response");
    assert_eq!(
        app.one("SELECT status, CASE WHEN closed_at IS NULL THEN 'open' ELSE 'closed' END FROM disputes")
            .await,
        [Some("needs_response".to_owned()), Some("open".to_owned())]
    );
    deliver(&app, &fixture("charge.dispute.closed")).await;
    assert_eq!(metadata(&app).await["disputes"][0]["status"], "won");
    assert_eq!(
        app.one(
            "SELECT status, CASE WHEN closed_at IS NULL THEN 'open' ELSE 'closed' END, \
             amount_minor, charge_id FROM disputes"
        )
        .await,
        [
            Some("won".to_owned()),
            Some("closed".to_owned()),
            Some("2000".to_owned()),
            Some("ch_3PqQ1zLkdIwHu7ix0hTtQd7n".to_owned())
        ]
    );
    // A late copy of the opening (a retry of an older event id) does not reopen it.
    let late_open = event(
        "charge.dispute.created",
        "evt_late_open",
        1_726_090_001,
        |_| {},
    );
    deliver(&app, &late_open).await;
    assert_eq!(
        text(&app, "SELECT status FROM disputes").await.as_deref(),
        Some("won")
    );
    assert_eq!(payment_status(&app, PI).await.as_deref(), Some("paid"));
}

async fn a_subscription_lifecycle_activates_then_deactivates_the_users_plan(backend: Backend) {
    let app = app(backend).await;
    let plan = async |app: &TestApp| {
        app.one(
            "SELECT plan_status, plan, email, user_id, subscription_status, \
             CASE WHEN current_period_end IS NULL THEN 'none' ELSE 'set' END FROM user_plans",
        )
        .await
    };
    deliver(&app, &fixture("customer.subscription.created")).await;
    assert_eq!(
        plan(&app).await[0].as_deref(),
        Some("inactive"),
        "incomplete"
    );
    deliver(&app, &fixture("invoice.paid")).await;
    assert_eq!(
        plan(&app).await,
        [
            Some("active".to_owned()),
            Some("pro".to_owned()),
            Some("user@example.com".to_owned()),
            Some("user_42".to_owned()),
            Some("active".to_owned()),
            Some("set".to_owned()),
        ],
        "user@example.com → pro"
    );
    deliver(&app, &fixture("customer.subscription.updated")).await;
    deliver(&app, &fixture("invoice.payment_failed")).await;
    assert_eq!(
        plan(&app).await[0].as_deref(),
        Some("active"),
        "a failed renewal keeps the plan while Stripe retries"
    );
    assert_eq!(
        text(&app, "SELECT latest_invoice_status FROM subscriptions")
            .await
            .as_deref(),
        Some("payment_failed")
    );
    deliver(&app, &fixture("customer.subscription.deleted")).await;
    assert_eq!(
        app.one(
            "SELECT plan_status, subscription_status, \
             CASE WHEN deactivated_at IS NULL THEN 'no' ELSE 'yes' END, \
             CASE WHEN activated_at IS NULL THEN 'no' ELSE 'yes' END FROM user_plans"
        )
        .await,
        [
            Some("inactive".to_owned()),
            Some("canceled".to_owned()),
            Some("yes".to_owned()),
            Some("yes".to_owned()),
        ]
    );
    assert_eq!(
        app.one(
            "SELECT status, CASE WHEN canceled_at IS NULL THEN 'no' ELSE 'yes' END, \
             CASE WHEN current_period_start IS NULL THEN 'no' ELSE 'yes' END FROM subscriptions"
        )
        .await,
        [
            Some("canceled".to_owned()),
            Some("yes".to_owned()),
            Some("yes".to_owned())
        ]
    );
    // A late `updated` (older than the deletion) does not bring the plan back.
    let late = event(
        "customer.subscription.updated",
        "evt_late_update",
        1_726_100_006,
        |_| {},
    );
    deliver(&app, &late).await;
    assert_eq!(plan(&app).await[0].as_deref(), Some("inactive"));
}

async fn a_repeated_event_id_is_stored_and_applied_once(backend: Backend) {
    let app = app(backend).await;
    let first = post(&app, SEED_003_ROUTE, &fixture("refund.created")).await;
    let first: Value = first.json().await.expect("json");
    assert_eq!(first["duplicate"], false);
    // Stripe retries with a new signature; a replay through the other route is the same event.
    for route in [SEED_003_ROUTE, SEED_004_ROUTE] {
        let again = post(&app, route, &fixture("refund.created")).await;
        assert_eq!(again.status(), 200);
        let again: Value = again.json().await.expect("json");
        assert_eq!(again["duplicate"], true, "{route}");
        assert_eq!(again["delivery_id"], first["delivery_id"]);
    }
    assert_eq!(app.run_pending().await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM deliveries").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM refunds").await, 1);
    assert_eq!(
        app.count(&format!(
            "SELECT amount_refunded_minor FROM payments WHERE gateway_transaction_id = '{PI}'"
        ))
        .await,
        500
    );
}

async fn the_orders_payment_status_history_follows_metadata_order_id(backend: Backend) {
    let app = app(backend).await;
    for event_type in [
        "payment_intent.requires_action",
        "payment_intent.payment_failed",
        "payment_intent.succeeded",
        "refund.created",
        "charge.refunded",
    ] {
        deliver(&app, &fixture(event_type)).await;
    }
    let history = app
        .rows(
            "SELECT old_payment_status, new_payment_status, event_type, gateway_transaction_id \
             FROM order_status_history WHERE order_id = 'ORD-1001' ORDER BY changed_at, id",
        )
        .await;
    let steps: Vec<(Option<&str>, Option<&str>, Option<&str>)> = history
        .iter()
        .map(|row| (row[0].as_deref(), row[1].as_deref(), row[2].as_deref()))
        .collect();
    assert_eq!(
        steps,
        [
            (
                None,
                Some("requires_action"),
                Some("payment_intent.requires_action")
            ),
            (
                Some("requires_action"),
                Some("failed"),
                Some("payment_intent.payment_failed")
            ),
            (
                Some("failed"),
                Some("paid"),
                Some("payment_intent.succeeded")
            ),
            (
                Some("paid"),
                Some("partially_refunded"),
                Some("refund.created")
            ),
            (
                Some("partially_refunded"),
                Some("refunded"),
                Some("charge.refunded")
            ),
        ]
    );
    assert!(history.iter().all(|row| row[3].as_deref() == Some(PI)));
    // A stale event that changes nothing adds nothing.
    let stale = event(
        "payment_intent.payment_failed",
        "evt_stale",
        1_726_000_001,
        |_| {},
    );
    deliver(&app, &stale).await;
    assert_eq!(
        app.count("SELECT COUNT(*) FROM order_status_history").await,
        5
    );
}

async fn seed_003s_monitoring_sql_runs_as_written(backend: Backend) {
    let app = app(backend).await;
    deliver(&app, &fixture("payment_intent.succeeded")).await;
    deliver(&app, &fixture("charge.succeeded")).await;
    // A payload Stripe would never send: an amount as a string. Kept, and marked failed.
    let broken = event(
        "payment_intent.payment_failed",
        "evt_broken",
        1_726_000_020,
        |pi| {
            pi["amount"] = json!("2000");
        },
    );
    deliver(&app, &broken).await;

    // "Verify: SELECT * FROM webhook_events WHERE event_type = 'payment_intent.succeeded';"
    let rows = app
        .rows("SELECT * FROM webhook_events WHERE event_type = 'payment_intent.succeeded';")
        .await;
    assert_eq!(rows.len(), 1);
    let succeeded = app
        .one(
            "SELECT event_id, processed, payload, error_message, \
             CASE WHEN created_at IS NULL THEN 'no' ELSE 'yes' END, \
             CASE WHEN processed_at IS NULL THEN 'no' ELSE 'yes' END \
             FROM webhook_events WHERE event_type = 'payment_intent.succeeded'",
        )
        .await;
    assert_eq!(
        succeeded[0].as_deref(),
        Some("evt_3PqQ1zLkdIwHu7ix0rJ2Yb5c")
    );
    assert!(
        matches!(succeeded[1].as_deref(), Some("t" | "1")),
        "processed: {succeeded:?}"
    );
    let payload: Value =
        serde_json::from_str(succeeded[2].as_deref().expect("payload")).expect("json");
    assert_eq!(payload["type"], "payment_intent.succeeded");
    assert_eq!(succeeded[3], None);
    assert_eq!(succeeded[4].as_deref(), Some("yes"));
    assert_eq!(succeeded[5].as_deref(), Some("yes"));

    // "Verify: SELECT payment_status FROM payments ORDER BY updated_at DESC LIMIT 1;"
    assert_eq!(
        text(
            &app,
            "SELECT payment_status FROM payments ORDER BY updated_at DESC LIMIT 1;"
        )
        .await
        .as_deref(),
        Some("paid")
    );
    // "Verify: SELECT payment_status FROM payments WHERE id = 'PAY_ID';"
    let id = text(&app, "SELECT id FROM payments").await.expect("id");
    assert_eq!(
        text(
            &app,
            &format!("SELECT payment_status FROM payments WHERE id = '{id}';")
        )
        .await
        .as_deref(),
        Some("paid")
    );

    // Recent events.
    let recent = app
        .rows(
            "SELECT \n  event_type,\n  processed,\n  created_at,\n  processed_at\nFROM webhook_events\n\
             ORDER BY created_at DESC\nLIMIT 10;",
        )
        .await;
    assert_eq!(recent.len(), 3);
    // Failed events.
    let failed = app
        .rows(
            "SELECT \n  event_type,\n  error_message,\n  created_at\nFROM webhook_events\n\
             WHERE processed = false \n  AND error_message IS NOT NULL\nORDER BY created_at DESC;",
        )
        .await;
    assert_eq!(failed.len(), 1);
    assert_eq!(
        failed[0][0].as_deref(),
        Some("payment_intent.payment_failed")
    );
    assert!(
        failed[0][1]
            .as_deref()
            .is_some_and(|error| error.contains("data.object.amount")),
        "{failed:?}"
    );
    // Webhook success rate (PostgreSQL's NOW() and INTERVAL; SQLite has neither).
    if backend == Backend::Postgres {
        let rate = app
            .one(
                "SELECT \n  COUNT(*) as total,\n  SUM(CASE WHEN processed THEN 1 ELSE 0 END) as successful,\n  \
                 ROUND(100.0 * SUM(CASE WHEN processed THEN 1 ELSE 0 END) / COUNT(*), 2) as success_rate\n\
                 FROM webhook_events\nWHERE created_at > NOW() - INTERVAL '24 hours';",
            )
            .await;
        assert_eq!(
            rate,
            [
                Some("3".to_owned()),
                Some("2".to_owned()),
                Some("66.67".to_owned())
            ]
        );
    } else {
        let rate = app
            .one(
                "SELECT COUNT(*) as total, SUM(CASE WHEN processed THEN 1 ELSE 0 END) as successful \
                 FROM webhook_events WHERE created_at > strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-24 hours')",
            )
            .await;
        assert_eq!(rate, [Some("3".to_owned()), Some("2".to_owned())]);
    }
}

/// `wharf migrate --from sqlite://… --to postgres://…` carries Stripe's rows over like any
/// provider's: same keys, statuses, exact amounts and JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wharf_migrate_moves_the_stripe_ledger_from_sqlite_to_postgres() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let app = TestApp::builder()
        .backend(Backend::Sqlite)
        .database_dir(dir.path())
        .env("STRIPE_WEBHOOK_SECRET", SECRET)
        .spawn()
        .await;
    for event_type in EVENT_TYPES {
        deliver(&app, &fixture(event_type)).await;
    }
    app.shutdown().await;
    let sqlite = TestDatabase::sqlite_in(dir.path());
    let postgres = TestDatabase::fresh(Backend::Postgres).await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .arg("migrate")
        .arg("--from")
        .arg(format!(
            "sqlite://{}",
            dir.path().join("wharf.db").display()
        ))
        .arg("--to")
        .arg(postgres.url())
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .output()
        .await
        .expect("wharf migrate runs");
    assert!(
        output.status.success(),
        "wharf migrate failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    for sql in [
        "SELECT id, gateway_transaction_id, payment_status, lifecycle_status, order_id, \
         amount_minor, amount_refunded_minor, currency FROM payments ORDER BY gateway_transaction_id",
        "SELECT refund_id, status, amount_minor, gateway_transaction_id FROM refunds ORDER BY refund_id",
        "SELECT dispute_id, status, amount_minor FROM disputes ORDER BY dispute_id",
        "SELECT order_id, old_payment_status, new_payment_status, event_id FROM order_status_history \
         ORDER BY event_id",
        "SELECT subscription_id, status, plan, amount_minor, latest_invoice_status FROM subscriptions",
        "SELECT customer, plan, plan_status, subscription_status, email FROM user_plans",
    ] {
        let rows = sqlite.rows(sql).await;
        assert!(!rows.is_empty(), "{sql}");
        assert_eq!(rows, postgres.rows(sql).await, "{sql}");
    }
    let metadata = "SELECT metadata FROM payments ORDER BY gateway_transaction_id";
    let as_json = |rows: Vec<Vec<Option<String>>>| -> Vec<Value> {
        rows.into_iter()
            .map(|row| serde_json::from_str(row[0].as_deref().expect("metadata")).expect("json"))
            .collect()
    };
    assert_eq!(
        as_json(sqlite.rows(metadata).await),
        as_json(postgres.rows(metadata).await)
    );
    assert_eq!(
        postgres
            .one(&format!(
                "SELECT amount = 20.00, amount_refunded = 15.00 FROM payments \
                 WHERE gateway_transaction_id = '{PI}'"
            ))
            .await,
        [Some("t".to_owned()), Some("t".to_owned())],
        "money is exact (SQLite's numeric affinity keeps 20.00 as 20, the same number)"
    );
}

async fn a_payment_intents_client_secret_is_never_kept_nor_shown(backend: Backend) {
    let app = app(backend).await;
    let event = fixture("payment_intent.succeeded");
    let secret = event["data"]["object"]["client_secret"]
        .as_str()
        .expect("the fixture has Stripe's client_secret")
        .to_owned();
    deliver(&app, &event).await;
    assert_eq!(payment_status(&app, PI).await.as_deref(), Some("paid"));
    let body_text = match backend {
        Backend::Sqlite => "SELECT body FROM delivery_payloads",
        Backend::Postgres => "SELECT convert_from(body, 'UTF8') FROM delivery_payloads",
    };
    let stored = app
        .rows(body_text)
        .await
        .concat()
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .concat();
    assert!(
        !stored.contains(&secret),
        "the journal's copy holds no client secret"
    );
    assert!(stored.contains("[redacted]"), "{stored}");
    let id = text(&app, "SELECT id FROM deliveries").await.expect("id");
    let shown = app
        .admin_get(&format!("/api/deliveries/{id}"))
        .await
        .text()
        .await
        .expect("body");
    assert!(!shown.contains(&secret), "the admin API shows none either");
    assert!(
        shown.contains(PI),
        "the rest of the event is there: {shown}"
    );
    let payments = app
        .rows("SELECT gateway_response FROM payments")
        .await
        .concat()
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .concat();
    assert!(!payments.contains(&secret));
    // Replayed from the redacted copy, it changes nothing and still reads.
    let replay = app
        .admin_post(&format!("/api/deliveries/{id}/replay"))
        .await;
    assert_eq!(replay.status(), 202);
    app.run_pending().await;
    assert_eq!(
        text(&app, "SELECT status FROM deliveries").await.as_deref(),
        Some("processed")
    );
}
