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
        "ref_paid" | "ref_late" => "success",
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
                "amount": 500_000,
                "currency": "NGN",
                "paid_at": "2026-11-24T10:00:00.000Z",
                "gateway_response": "Successful",
                "channel": "card",
                "customer": {"email": "buyer@example.com"}
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
        app.one(
            "SELECT gateway, gateway_transaction_id, payment_status, amount_minor, currency \
             FROM payments"
        )
        .await,
        [
            Some("paystack".to_owned()),
            Some("ref_paid".to_owned()),
            Some("paid".to_owned()),
            Some("500000".to_owned()),
            Some("NGN".to_owned()),
        ],
        "only the confirmed callback reaches the payments ledger"
    );
    let rows = app
        .rows("SELECT event_id, status, last_error FROM deliveries ORDER BY id")
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
        .rows("SELECT p.headers FROM delivery_payloads p")
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
    let waiting = callback(&app, "ref_late").await;
    assert_eq!(waiting.status(), 202, "the buyer is told, not left hanging");
    let body: Value = waiting.json().await.expect("json");
    assert_eq!(body["status"], "verifying");
    assert_eq!(
        app.one("SELECT status, attempts FROM deliveries").await,
        [Some("verifying".to_owned()), Some("1".to_owned())],
        "kept, and retried"
    );
    fake.down.store(false, Ordering::SeqCst);
    clock.advance_millis(60_000);
    app.run_pending().await;
    assert_eq!(
        app.one("SELECT status FROM deliveries").await,
        [Some("processed".to_owned())],
        "verified in the background once Paystack answers"
    );
    // A replayed callback is proven again, never applied on trust.
    let calls_before = fake.calls.lock().len();
    fake.down.store(true, Ordering::SeqCst);
    let id = app.one("SELECT id FROM deliveries").await[0]
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
        app.one("SELECT status FROM deliveries").await,
        [Some("verifying".to_owned())],
        "while Paystack is down, the replay waits as verifying"
    );
}
