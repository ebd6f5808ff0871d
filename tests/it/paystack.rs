//! Seed 004's Paystack: the signed webhook, and the unsigned buyer callback proven by asking a
//! local fake of Paystack's verify API, which answers in Paystack's documented format and
//! records the calls.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use parking_lot::Mutex;
use serde_json::{json, Value};
use wharf::clock::ManualClock;
use wharf::verify::{Algorithm, Encoding, HmacScheme};

use crate::support::{at, on_both_backends, Backend, TestApp};

on_both_backends!(
    a_signed_webhook_is_stored_and_a_bad_signature_refused,
    a_confirmed_callback_redirects_to_success_and_a_false_one_is_rejected,
    while_paystack_is_down_the_buyer_is_told_and_the_callback_verified_later,
    subscription_and_invoice_events_drive_the_subscription_and_the_plan,
    refunds_add_up_and_transfers_are_kept_and_acknowledged,
    a_callback_must_match_the_expected_payment_and_activates_the_plan,
    with_a_trusted_proxy_only_paystack_addresses_may_post_webhooks,
);

const SECRET_KEY: &str = "sk_test_wharf";

/// A fake of `GET /transaction/verify/{reference}`.
#[derive(Default)]
struct FakePaystack {
    down: AtomicBool,
    calls: Mutex<Vec<(String, Option<String>)>>,
}

async fn verify(
    State(fake): State<Arc<FakePaystack>>,
    Path(reference): Path<String>,
    headers: HeaderMap,
) -> impl IntoResponse {
    let authorization = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    fake.calls
        .lock()
        .push((reference.clone(), authorization.clone()));
    if fake.down.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": false, "message": "maintenance"})),
        );
    }
    if authorization.as_deref() != Some(&format!("Bearer {SECRET_KEY}")) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"status": false, "message": "Invalid key"})),
        );
    }
    let transaction_status = match reference.as_str() {
        "ref_paid" | "ref_late" | "ref_cheap" | "ref_unexpected" => "success",
        "ref_abandoned" => "abandoned",
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"status": false, "message": "Transaction reference not found"})),
            )
        }
    };
    (
        StatusCode::OK,
        Json(json!({
            "status": true,
            "message": "Verification successful",
            "data": {
                "id": 4_099_260_516_u64,
                "domain": "test",
                "status": transaction_status,
                "reference": reference,
                "amount": if reference == "ref_cheap" { 100 } else { 500_000 },
                "currency": "NGN",
                "paid_at": "2026-11-24T10:00:00.000Z",
                "created_at": "2026-11-24T09:59:00.000Z",
                "gateway_response": "Successful",
                "channel": "card",
                "metadata": {"plan": "pro", "user_id": "u-1"},
                "plan": null,
                "customer": {"id": 84312, "email": "buyer@example.com",
                             "customer_code": "CUS_buyer"}
            }
        })),
    )
}

async fn fake_paystack() -> (String, Arc<FakePaystack>) {
    let fake = Arc::new(FakePaystack::default());
    let app = Router::new()
        .route("/transaction/verify/{reference}", get(verify))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, fake)
}

async fn app_with(backend: Backend, api_base: &str, clock: ManualClock, settle_ms: u64) -> TestApp {
    TestApp::builder()
        .backend(backend)
        .manual_clock(clock)
        .env("PAYSTACK_SECRET_KEY", SECRET_KEY)
        .env("PAYSTACK_API_BASE", api_base)
        .env("PAYSTACK_SUCCESS_URL", "https://shop.example/paid")
        .env("PAYSTACK_FAILURE_URL", "https://shop.example/failed")
        .env("WHARF_INLINE_SETTLE_TIMEOUT_MS", &settle_ms.to_string())
        .spawn()
        .await
}

/// Sends the buyer's callback and drives the processor while it waits, as the background
/// processor would; returns the answer.
async fn callback(app: &TestApp, reference: &str) -> reqwest::Response {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let url = format!(
        "{}/api/payments/paystack/callback?trxref={reference}&reference={reference}",
        app.base
    );
    let request = tokio::spawn(async move { client.get(url).send().await.expect("sent") });
    while !request.is_finished() {
        app.run_pending().await;
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    request.await.expect("joined")
}

async fn a_signed_webhook_is_stored_and_a_bad_signature_refused(backend: Backend) {
    let (base, _fake) = fake_paystack().await;
    let app = app_with(backend, &base, ManualClock::at(at(1_700_000_000)), 5_000).await;
    let body = json!({
        "event": "charge.success",
        "data": {"id": 302_961, "status": "success", "reference": "ref_paid", "amount": 500_000,
                 "currency": "NGN", "customer": {"email": "buyer@example.com"}}
    })
    .to_string();
    let signature = HmacScheme {
        algorithm: Algorithm::Sha512,
        encoding: Encoding::Hex,
        prefix: None,
    }
    .sign(SECRET_KEY.as_bytes(), body.as_bytes());
    let url = format!("{}/api/payments/paystack/webhook", app.base);
    let signed = app
        .client
        .post(&url)
        .header("x-paystack-signature", &signature)
        .body(body.clone())
        .send()
        .await
        .expect("sent");
    assert_eq!(signed.status(), 200);
    let forged = app
        .client
        .post(&url)
        .header("x-paystack-signature", "00".repeat(64))
        .body(body.clone())
        .send()
        .await
        .expect("sent");
    assert_eq!(forged.status(), 401);
    let again = app
        .client
        .post(&url)
        .header("x-paystack-signature", &signature)
        .body(body)
        .send()
        .await
        .expect("sent");
    let again: Value = again.json().await.expect("json");
    assert_eq!(
        again["duplicate"], true,
        "event, id and status make the key"
    );
    assert_eq!(
        app.one("SELECT event_type, dedup_key FROM deliveries")
            .await,
        [
            Some("charge.success".to_owned()),
            Some("charge.success:302961:success".to_owned())
        ]
    );
    // A partial refund, then the same charge again: the status only moves forward.
    let refund = json!({
        "event": "refund.processed",
        "data": {"id": 1_190_412, "status": "processed", "transaction_reference": "ref_paid",
                 "amount": 100_000, "currency": "NGN", "transaction": {"amount": 500_000}}
    })
    .to_string();
    let signed = |body: &str| {
        HmacScheme {
            algorithm: Algorithm::Sha512,
            encoding: Encoding::Hex,
            prefix: None,
        }
        .sign(SECRET_KEY.as_bytes(), body.as_bytes())
    };
    let refunded = app
        .client
        .post(&url)
        .header("x-paystack-signature", signed(&refund))
        .body(refund)
        .send()
        .await
        .expect("sent");
    assert_eq!(refunded.status(), 200);
    assert_eq!(app.run_pending().await, 2);
    let integer = |text: &str| text.split('.').next().unwrap_or_default().to_owned();
    let row = app
        .one(
            "SELECT gateway, gateway_transaction_id, payment_status, amount_minor, currency, \
             amount_refunded_minor, customer_email, amount FROM payments",
        )
        .await;
    assert_eq!(
        row[..7],
        [
            Some("paystack".to_owned()),
            Some("ref_paid".to_owned()),
            Some("partially_refunded".to_owned()),
            Some("500000".to_owned()),
            Some("NGN".to_owned()),
            Some("100000".to_owned()),
            Some("buyer@example.com".to_owned()),
        ]
    );
    assert_eq!(
        integer(row[7].as_deref().unwrap_or_default()),
        "5000",
        "kobo to naira"
    );
}

async fn a_confirmed_callback_redirects_to_success_and_a_false_one_is_rejected(backend: Backend) {
    let (base, fake) = fake_paystack().await;
    let app = app_with(backend, &base, ManualClock::at(at(1_700_000_000)), 20_000).await;
    for reference in ["ref_paid", "ref_forged", "ref_abandoned"] {
        assert_eq!(expect(&app, reference, 500_000, SECRET_KEY).await, 200);
    }
    app.run_pending().await;
    let paid = callback(&app, "ref_paid").await;
    assert_eq!(paid.status(), 303);
    assert_eq!(
        paid.headers()["location"],
        "https://shop.example/paid?reference=ref_paid"
    );
    let unknown = callback(&app, "ref_forged").await;
    assert_eq!(unknown.status(), 303);
    assert_eq!(
        unknown.headers()["location"],
        "https://shop.example/failed?reference=ref_forged"
    );
    let abandoned = callback(&app, "ref_abandoned").await;
    assert_eq!(
        abandoned.headers()["location"],
        "https://shop.example/failed?reference=ref_abandoned"
    );
    assert_eq!(
        app.rows(
            "SELECT gateway, gateway_transaction_id, payment_status, amount_minor, currency \
             FROM payments ORDER BY gateway_transaction_id"
        )
        .await,
        [
            ["paystack", "ref_abandoned", "pending", "500000", "NGN"],
            ["paystack", "ref_forged", "pending", "500000", "NGN"],
            ["paystack", "ref_paid", "paid", "500000", "NGN"],
        ]
        .map(|row| row.map(|cell| Some(cell.to_owned())).to_vec()),
        "only the confirmed callback pays its expected payment"
    );
    let rows = app
        .rows(
            "SELECT event_id, status, last_error FROM deliveries \
             WHERE event_type = 'callback' ORDER BY id",
        )
        .await;
    assert_eq!(
        rows[0][..2],
        [Some("ref_paid".to_owned()), Some("processed".to_owned())]
    );
    assert_eq!(rows[1][1].as_deref(), Some("rejected"));
    assert!(
        rows[1][2]
            .as_deref()
            .is_some_and(|e| e.contains("Transaction reference not found")),
        "{rows:?}"
    );
    assert!(
        rows[2][2]
            .as_deref()
            .is_some_and(|e| e.contains("abandoned")),
        "{rows:?}"
    );
    let calls = fake.calls.lock().clone();
    assert_eq!(calls.len(), 3, "one verify call per callback");
    assert!(calls
        .iter()
        .all(|(_, auth)| auth.as_deref() == Some("Bearer sk_test_wharf")));
    for stored in app
        .rows(
            "SELECT p.headers FROM delivery_payloads p JOIN deliveries d ON d.id = p.delivery_id \
             WHERE d.event_type = 'callback'",
        )
        .await
        .concat()
        .into_iter()
        .flatten()
    {
        assert!(!stored.contains(SECRET_KEY), "{stored}");
        let headers: Value = serde_json::from_str(&stored).expect("json");
        assert_eq!(headers[":method"], "GET", "the request line is kept");
    }
}

async fn while_paystack_is_down_the_buyer_is_told_and_the_callback_verified_later(
    backend: Backend,
) {
    let (base, fake) = fake_paystack().await;
    fake.down.store(true, Ordering::SeqCst);
    let clock = ManualClock::at(at(1_700_000_000));
    let app = app_with(backend, &base, clock.clone(), 1_500).await;
    assert_eq!(expect(&app, "ref_late", 500_000, SECRET_KEY).await, 200);
    app.run_pending().await;
    let waiting = callback(&app, "ref_late").await;
    assert_eq!(waiting.status(), 202, "the buyer is told, not left hanging");
    let body: Value = waiting.json().await.expect("json");
    assert_eq!(body["status"], "verifying");
    const CALLBACK: &str = "FROM deliveries WHERE event_type = 'callback'";
    assert_eq!(
        app.one(&format!("SELECT status, attempts {CALLBACK}"))
            .await,
        [Some("verifying".to_owned()), Some("1".to_owned())],
        "kept, and retried"
    );
    fake.down.store(false, Ordering::SeqCst);
    clock.advance_millis(60_000);
    app.run_pending().await;
    assert_eq!(
        app.one(&format!("SELECT status {CALLBACK}")).await,
        [Some("processed".to_owned())],
        "verified in the background once Paystack answers"
    );
    // A replayed callback is proven again, never applied on trust.
    let calls_before = fake.calls.lock().len();
    fake.down.store(true, Ordering::SeqCst);
    let id = app.one(&format!("SELECT id {CALLBACK}")).await[0]
        .clone()
        .expect("id");
    let replayed = app
        .admin_post(&format!("/api/deliveries/{id}/replay"))
        .await;
    assert_eq!(replayed.status(), 202);
    app.run_pending().await;
    assert!(
        fake.calls.lock().len() > calls_before,
        "asked Paystack again"
    );
    assert_eq!(
        app.one(&format!("SELECT status {CALLBACK}")).await,
        [Some("verifying".to_owned())],
        "while Paystack is down, the replay waits as verifying"
    );
}

/// The application records the payment it expects, as it initialises the transaction.
async fn expect(app: &TestApp, reference: &str, amount: i64, key: &str) -> u16 {
    app.client
        .post(format!("{}/api/payments/paystack/expected", app.base))
        .bearer_auth(key)
        .json(&json!({
            "reference": reference, "amount": amount, "currency": "NGN",
            "email": "buyer@example.com", "metadata": {"plan": "pro"}
        }))
        .send()
        .await
        .expect("sent")
        .status()
        .as_u16()
}

/// Posts a webhook signed with the secret key; returns the status.
async fn webhook(app: &TestApp, body: &Value, forwarded_for: Option<&str>) -> u16 {
    let body = body.to_string();
    let signature = HmacScheme {
        algorithm: Algorithm::Sha512,
        encoding: Encoding::Hex,
        prefix: None,
    }
    .sign(SECRET_KEY.as_bytes(), body.as_bytes());
    let mut request = app
        .client
        .post(format!("{}/api/payments/paystack/webhook", app.base))
        .header("x-paystack-signature", signature)
        .header("content-type", "application/json");
    if let Some(address) = forwarded_for {
        request = request.header("x-forwarded-for", address);
    }
    request
        .body(body)
        .send()
        .await
        .expect("sent")
        .status()
        .as_u16()
}

fn rows_of(rows: &[&[&str]]) -> Vec<Vec<Option<String>>> {
    rows.iter()
        .map(|row| {
            row.iter()
                .map(|cell| (*cell != "NULL").then(|| (*cell).to_owned()))
                .collect()
        })
        .collect()
}

/// Paystack's `subscription.*` payload (its "Subscriptions" guide).
fn subscription_event(event: &str, status: &str, updated: &str) -> Value {
    json!({
        "event": event,
        "data": {
            "domain": "test",
            "status": status,
            "subscription_code": "SUB_vsyqdmlzble3uii",
            "email_token": "d7gofp6yppn3qz7",
            "amount": 50_000,
            "cron_expression": "0 0 28 * *",
            "next_payment_date": "2026-12-28T00:00:00.000Z",
            "open_invoice": null,
            "createdAt": "2026-11-24T08:00:00.000Z",
            "updatedAt": updated,
            "plan": {"name": "Monthly retainer", "plan_code": "PLN_gx2wn530m0i3w3m",
                     "description": null, "amount": 50_000, "interval": "monthly",
                     "send_invoices": true, "send_sms": true, "currency": "NGN"},
            "authorization": {"authorization_code": "AUTH_96xphygz", "bin": "539983",
                              "last4": "7357", "channel": "card", "reusable": true},
            "customer": {"first_name": "BoJack", "last_name": "Horseman",
                         "email": "bojack@horsinaround.com", "customer_code": "CUS_xnxdt6s1zg1f4nx",
                         "phone": "", "metadata": {"user_id": "u-7"}, "risk_action": "default"},
            "created_at": "2026-11-24T08:00:00.000Z"
        }
    })
}

/// Paystack's `invoice.*` payload: the invoice, its subscription and its transaction.
fn invoice_event(event: &str, paid: bool, status: &str, subscription_status: &str) -> Value {
    json!({
        "event": event,
        "data": {
            "domain": "test",
            "invoice_code": "INV_thy2vkmirn2urwv",
            "amount": 50_000,
            "period_start": "2026-11-28T00:00:00.000Z",
            "period_end": "2026-12-28T00:00:00.000Z",
            "status": status,
            "paid": paid,
            "paid_at": if paid { json!("2026-11-28T00:00:06.000Z") } else { Value::Null },
            "description": null,
            "authorization": {"authorization_code": "AUTH_96xphygz", "channel": "card"},
            "subscription": {"status": subscription_status,
                             "subscription_code": "SUB_vsyqdmlzble3uii",
                             "email_token": "d7gofp6yppn3qz7", "amount": 50_000,
                             "cron_expression": "0 0 28 * *",
                             "next_payment_date": "2026-12-28T00:00:00.000Z",
                             "open_invoice": null},
            "customer": {"id": 46, "first_name": "BoJack", "last_name": "Horseman",
                         "email": "bojack@horsinaround.com",
                         "customer_code": "CUS_xnxdt6s1zg1f4nx", "metadata": {}},
            "transaction": {"reference": "9cfbae6e-bbf3-5b41-8aef-d72c1a17650g",
                            "status": "success", "amount": 50_000, "currency": "NGN"},
            "created_at": "2026-11-28T00:00:02.000Z"
        }
    })
}

async fn subscription_and_invoice_events_drive_the_subscription_and_the_plan(backend: Backend) {
    let (base, _fake) = fake_paystack().await;
    let clock = ManualClock::at(at(1_700_000_000));
    let app = app_with(backend, &base, clock.clone(), 5_000).await;
    let created = subscription_event("subscription.create", "active", "2026-11-24T08:00:00.000Z");
    assert_eq!(webhook(&app, &created, None).await, 200);
    assert_eq!(
        webhook(
            &app,
            &invoice_event("invoice.create", true, "success", "active"),
            None
        )
        .await,
        200
    );
    app.run_pending().await;
    const SUBSCRIPTION: &str = "SELECT status, customer, email, user_id, plan, price_id, \
         amount_minor, currency, interval, latest_invoice_id, latest_invoice_status \
         FROM subscriptions WHERE source = 'paystack'";
    const PLAN: &str = "SELECT customer, plan, plan_status, subscription_id, \
         subscription_status, user_id FROM user_plans WHERE source = 'paystack'";
    assert_eq!(
        app.rows(SUBSCRIPTION).await,
        rows_of(&[&[
            "active",
            "CUS_xnxdt6s1zg1f4nx",
            "bojack@horsinaround.com",
            "u-7",
            "Monthly retainer",
            "PLN_gx2wn530m0i3w3m",
            "50000",
            "NGN",
            "monthly",
            "INV_thy2vkmirn2urwv",
            "paid",
        ]])
    );
    assert_eq!(
        app.rows(PLAN).await,
        rows_of(&[&[
            "CUS_xnxdt6s1zg1f4nx",
            "Monthly retainer",
            "active",
            "SUB_vsyqdmlzble3uii",
            "active",
            "u-7",
        ]])
    );
    assert_eq!(
        app.one(
            "SELECT payment_status, amount_minor FROM payments \
             WHERE gateway_transaction_id = '9cfbae6e-bbf3-5b41-8aef-d72c1a17650g'"
        )
        .await,
        [Some("paid".to_owned()), Some("50000".to_owned())],
        "the paid invoice's transaction is a payment"
    );
    // The renewal fails, then the customer turns renewal off, then the subscription ends.
    clock.advance_millis(1_000);
    let failed = invoice_event("invoice.payment_failed", false, "failed", "attention");
    assert_eq!(webhook(&app, &failed, None).await, 200);
    app.run_pending().await;
    assert_eq!(
        app.one("SELECT status, latest_invoice_status FROM subscriptions")
            .await,
        [
            Some("attention".to_owned()),
            Some("payment_failed".to_owned())
        ]
    );
    assert_eq!(
        app.one("SELECT plan_status FROM user_plans").await,
        [Some("active".to_owned())],
        "Paystack is still retrying: the plan is kept"
    );
    let not_renewing = subscription_event(
        "subscription.not_renew",
        "non-renewing",
        "2026-11-29T00:00:00.000Z",
    );
    let disabled = subscription_event(
        "subscription.disable",
        "complete",
        "2026-12-28T00:00:00.000Z",
    );
    // Out of order: the end arrives before the notice, and the creation comes again late.
    assert_eq!(webhook(&app, &disabled, None).await, 200);
    assert_eq!(webhook(&app, &not_renewing, None).await, 200);
    app.run_pending().await;
    let late = subscription_event("subscription.create", "active", "2026-11-24T08:00:00.000Z");
    let mut late = late;
    late["data"]["id"] = json!(1);
    assert_eq!(webhook(&app, &late, None).await, 200);
    app.run_pending().await;
    assert_eq!(
        app.one("SELECT status, ended_at IS NOT NULL FROM subscriptions")
            .await[0],
        Some("complete".to_owned()),
        "an ended subscription never comes back"
    );
    let plan = app
        .one("SELECT plan_status, subscription_status, deactivated_at IS NOT NULL FROM user_plans")
        .await;
    assert_eq!(
        plan[..2],
        [Some("inactive".to_owned()), Some("complete".to_owned())]
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM deliveries WHERE status <> 'processed'")
            .await,
        0,
        "{:?}",
        app.rows("SELECT event_type, status, last_error FROM deliveries")
            .await
    );
}

async fn refunds_add_up_and_transfers_are_kept_and_acknowledged(backend: Backend) {
    let (base, _fake) = fake_paystack().await;
    let app = app_with(backend, &base, ManualClock::at(at(1_700_000_000)), 5_000).await;
    // A refund before its charge, with no `id` (Paystack's refund payload has none).
    let refund = |reference: &str, amount: i64| {
        json!({"event": "refund.processed", "data": {
            "status": "processed", "transaction_reference": "T685312322670591",
            "refund_reference": reference, "amount": amount, "currency": "NGN",
            "processor": "mpgs_zenith", "domain": "live",
            "customer": {"first_name": "Jane", "last_name": "Doe", "email": "jane@example.com"},
            "integration": 412_829
        }})
    };
    assert_eq!(
        webhook(&app, &refund("132013318360", 4_000), None).await,
        200
    );
    let charge = json!({"event": "charge.success", "data": {
        "id": 302_961, "status": "success", "reference": "T685312322670591",
        "amount": 10_000, "currency": "NGN", "paid_at": "2026-11-24T10:00:00.000Z",
        "channel": "card", "customer": {"email": "jane@example.com"}
    }});
    assert_eq!(webhook(&app, &charge, None).await, 200);
    app.run_pending().await;
    let payment = "SELECT payment_status, amount_refunded_minor FROM payments";
    assert_eq!(
        app.one(payment).await,
        [
            Some("partially_refunded".to_owned()),
            Some("4000".to_owned())
        ]
    );
    assert_eq!(
        webhook(&app, &refund("132013318361", 6_000), None).await,
        200
    );
    assert_eq!(
        webhook(&app, &refund("132013318361", 6_000), None).await,
        200,
        "a retry"
    );
    app.run_pending().await;
    assert_eq!(
        app.one(payment).await,
        [Some("refunded".to_owned()), Some("10000".to_owned())],
        "two partial refunds add up to the whole payment; a repeat counts once"
    );
    let transfer = json!({"event": "transfer.success", "data": {
        "amount": 30_000, "currency": "NGN", "domain": "test", "id": 37_272_792,
        "reason": "Payout", "reference": "1jhbs3ozmen0k7y5efmw", "source": "balance",
        "status": "success", "transfer_code": "TRF_wpl1dem4967avzm",
        "recipient": {"recipient_code": "RCP_a8wkxiychzdzfgs", "type": "nuban"}
    }});
    assert_eq!(webhook(&app, &transfer, None).await, 200);
    app.run_pending().await;
    assert_eq!(
        app.one("SELECT status, last_error FROM deliveries WHERE event_type = 'transfer.success'")
            .await[0],
        Some("ignored".to_owned()),
        "stored, acknowledged, and marked ignored"
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM payments").await, 1);
}

async fn a_callback_must_match_the_expected_payment_and_activates_the_plan(backend: Backend) {
    let (base, _fake) = fake_paystack().await;
    let app = app_with(backend, &base, ManualClock::at(at(1_700_000_000)), 20_000).await;
    assert_eq!(expect(&app, "ref_paid", 500_000, "sk_wrong").await, 401);
    assert_eq!(expect(&app, "ref_paid", 500_000, SECRET_KEY).await, 200);
    assert_eq!(expect(&app, "ref_cheap", 500_000, SECRET_KEY).await, 200);
    app.run_pending().await;
    let stored = app
        .rows("SELECT p.headers FROM delivery_payloads p")
        .await
        .concat()
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .concat();
    assert!(
        !stored.contains(SECRET_KEY),
        "the bearer key is never stored"
    );
    // Paystack's signed webhook reports the cheap payment first: it is what was paid, but
    // it does not become what was expected.
    let cheap_charge = json!({"event": "charge.success", "data": {
        "id": 302_962, "status": "success", "reference": "ref_cheap", "amount": 100,
        "currency": "NGN", "customer": {"email": "buyer@example.com"}
    }});
    assert_eq!(webhook(&app, &cheap_charge, None).await, 200);
    app.run_pending().await;
    let paid = callback(&app, "ref_paid").await;
    assert_eq!(
        paid.headers()["location"],
        "https://shop.example/paid?reference=ref_paid"
    );
    // Paystack confirms both, but the buyer paid 1 naira for a 5,000 naira payment.
    let cheap = callback(&app, "ref_cheap").await;
    assert_eq!(
        cheap.headers()["location"],
        "https://shop.example/failed?reference=ref_cheap"
    );
    // Nothing was expected for this reference: refused rather than trusted.
    let unexpected = callback(&app, "ref_unexpected").await;
    assert_eq!(
        unexpected.headers()["location"],
        "https://shop.example/failed?reference=ref_unexpected"
    );
    assert_eq!(
        app.rows(
            "SELECT gateway_transaction_id, payment_status FROM payments \
             ORDER BY gateway_transaction_id"
        )
        .await,
        rows_of(&[&["ref_cheap", "paid"], &["ref_paid", "paid"]]),
        "the webhook's report stands; the callback added nothing"
    );
    assert_eq!(
        app.one(
            "SELECT amount_minor, expected_amount_minor, expected_currency FROM payments \
             WHERE gateway_transaction_id = 'ref_cheap'"
        )
        .await,
        [
            Some("100".to_owned()),
            Some("500000".to_owned()),
            Some("NGN".to_owned())
        ]
    );
    let refused = app
        .rows(
            "SELECT event_id, status, last_error FROM deliveries \
             WHERE event_type = 'callback' AND status = 'rejected' ORDER BY id",
        )
        .await;
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(
        refused[0][2]
            .as_deref()
            .is_some_and(|e| e.contains("100 NGN") && e.contains("500000")),
        "{refused:?}"
    );
    assert!(
        refused[1][2]
            .as_deref()
            .is_some_and(|e| e.contains("no payment is expected")),
        "{refused:?}"
    );
    assert_eq!(
        app.rows(
            "SELECT customer, email, user_id, plan, plan_status, subscription_id FROM user_plans"
        )
        .await,
        rows_of(&[&[
            "CUS_buyer",
            "buyer@example.com",
            "u-1",
            "pro",
            "active",
            "ref_paid"
        ]]),
        "seed 004: the verified payment updates the buyer's subscription"
    );
}

async fn with_a_trusted_proxy_only_paystack_addresses_may_post_webhooks(backend: Backend) {
    let (base, _fake) = fake_paystack().await;
    let app = TestApp::builder()
        .backend(backend)
        .manual_clock(ManualClock::at(at(1_700_000_000)))
        .env("PAYSTACK_SECRET_KEY", SECRET_KEY)
        .env("PAYSTACK_API_BASE", &base)
        .env("PAYSTACK_TRUSTED_PROXY_HEADER", "X-Forwarded-For")
        .spawn()
        .await;
    let charge = |id: i64| {
        json!({"event": "charge.success", "data": {
            "id": id, "status": "success", "reference": format!("ref_{id}"),
            "amount": 10_000, "currency": "NGN"
        }})
    };
    assert_eq!(webhook(&app, &charge(1), Some("52.31.139.75")).await, 200);
    assert_eq!(
        webhook(&app, &charge(2), Some("10.0.0.7, 52.214.14.220")).await,
        200
    );
    assert_eq!(
        webhook(&app, &charge(3), Some("52.49.173.169, 203.0.113.9")).await,
        401
    );
    assert_eq!(webhook(&app, &charge(4), None).await, 401);
    let refused = app
        .admin_get("/api/sources/paystack/rejections")
        .await
        .text()
        .await
        .expect("body");
    assert!(refused.contains("address_not_allowed"), "{refused}");
    assert_eq!(app.count("SELECT COUNT(*) FROM deliveries").await, 2);
    // The buyer's browser is not Paystack: its callback is never filtered by address.
    let from_browser = app
        .client
        .get(format!(
            "{}/api/payments/paystack/callback?reference=ref_paid",
            app.base
        ))
        .send();
    let answer = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        let request = tokio::spawn(from_browser);
        while !request.is_finished() {
            app.run_pending().await;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        request.await.expect("joined").expect("sent")
    })
    .await
    .expect("answered");
    assert_ne!(answer.status(), 401);
}
