//! PayPal over HTTP: the published vector verified with its certificate served by a local fake
//! of PayPal's certificate host, events signed here as PayPal signs them with a key pair and
//! certificates generated in the test run ([`pki`]), certificates refused for their dates or
//! their key, the certificate cache, and a delivery that waits out PayPal being down.

mod pki;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing;
use axum::Router;
use base64::Engine as _;
use serde_json::{json, Value};
use wharf::clock::{ManualClock, Timestamp};
use wharf::verify::paypal_signed_message;

use crate::support::{on_both_backends, Backend, TestApp};

on_both_backends!(
    the_published_vector_is_verified_with_its_fetched_certificate_into_payments,
    a_tampered_body_is_acknowledged_then_rejected_and_writes_nothing,
    a_certificate_url_off_paypals_hosts_is_401_and_stores_nothing,
    a_certificate_expired_or_not_yet_valid_when_the_delivery_arrived_is_rejected,
    a_certificate_for_another_key_is_rejected,
    a_capture_completed_then_refunded_moves_the_payment_from_paid_to_refunded,
    the_certificate_is_fetched_once_for_two_deliveries,
    with_paypal_down_the_delivery_stays_verifying_and_is_verified_later,
    a_repeated_event_id_is_stored_and_applied_once,
    a_subscription_activated_then_cancelled_is_canceled_in_subscriptions,
    a_delivery_that_died_unverified_is_verified_when_replayed,
    an_approved_order_is_a_pending_payment_until_its_capture_in_either_order,
    with_client_credentials_paypals_verify_api_decides_with_an_oauth_token,
);

const ROUTE: &str = "/api/webhooks/paypal";
const VECTOR_CERT: &str = "CERT-360caa42-fca2a594-a5cafa77";
/// The test key's certificate, valid from 2016 to 2050: around every clock the tests set.
const TEST_CERT: &str = "CERT-wharf-test-0001";
/// The test key's certificate, expired since 2020-01-01.
const EXPIRED_CERT: &str = "CERT-wharf-test-expired";
/// The test key's certificate, valid only from 2040-01-01.
const FUTURE_CERT: &str = "CERT-wharf-test-future";
/// A certificate for another key, valid like [`TEST_CERT`].
const OTHER_KEY_CERT: &str = "CERT-wharf-test-other-key";
const Y2016: u64 = 1_451_606_400;
const Y2020: u64 = 1_577_836_800;
const Y2040: u64 = 2_208_988_800;
const Y2050: u64 = 2_524_608_000;
const CAPTURE: &str = "27M47624FP291604U";

fn file(path: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
}

fn fixture(event_type: &str) -> Value {
    serde_json::from_slice(&file(&format!("paypal/{event_type}.json"))).expect("fixture is JSON")
}

/// When the published vector was sent (its `paypal-transmission-time`), within its
/// certificate's validity period (2015-03-18 to 2017-03-22).
fn vector_clock() -> ManualClock {
    ManualClock::at(Timestamp::parse_rfc3339("2016-10-05T14:57:40Z").expect("a time"))
}

/// The published PayPal vector: headers, exact body and webhook id.
fn vector() -> (Vec<(String, String)>, String, String) {
    let all: Value = serde_json::from_slice(&file("vectors/vectors.json")).expect("JSON");
    let vector = all["vectors"]
        .as_array()
        .expect("vectors")
        .iter()
        .find(|v| v["scheme"] == "paypal-sha256withrsa")
        .expect("the PayPal vector")
        .clone();
    let text = |value: &Value| value.as_str().expect("text").to_owned();
    let headers = vector["headers"]
        .as_object()
        .expect("headers")
        .iter()
        .map(|(name, value)| {
            let value = if name == "paypal-transmission-sig" {
                text(&vector["expected_header"])
            } else {
                text(value)
            };
            (name.clone(), value)
        })
        .collect();
    (
        headers,
        text(&vector["payload"]),
        text(&vector["webhook_id"]),
    )
}

/// A local stand-in for PayPal's certificate host, counting fetches; it answers 503 while down.
#[derive(Default)]
struct CertHost {
    fetches: AtomicUsize,
    down: AtomicBool,
}

async fn serve_cert(
    State(host): State<Arc<CertHost>>,
    Path(name): Path<String>,
) -> (StatusCode, Vec<u8>) {
    host.fetches.fetch_add(1, Ordering::SeqCst);
    if host.down.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, Vec::new());
    }
    match name.as_str() {
        VECTOR_CERT => (
            StatusCode::OK,
            file("vectors/paypal-sandbox-CERT-360caa42-fca2a594-a5cafa77.pem"),
        ),
        TEST_CERT => (
            StatusCode::OK,
            pki::signer().certificate_pem(Y2016, Y2050).into(),
        ),
        EXPIRED_CERT => (
            StatusCode::OK,
            pki::signer().certificate_pem(Y2016, Y2020).into(),
        ),
        FUTURE_CERT => (
            StatusCode::OK,
            pki::signer().certificate_pem(Y2040, Y2050).into(),
        ),
        OTHER_KEY_CERT => (
            StatusCode::OK,
            pki::other().certificate_pem(Y2016, Y2050).into(),
        ),
        _ => (StatusCode::NOT_FOUND, Vec::new()),
    }
}

struct PaypalTest {
    app: TestApp,
    certs: Arc<CertHost>,
    /// `http://127.0.0.1:PORT`, the only certificate origin this app allows.
    origin: String,
    webhook_id: String,
}

async fn start(backend: Backend, clock: Option<ManualClock>) -> PaypalTest {
    start_with(backend, clock, &[]).await
}

async fn start_with(
    backend: Backend,
    clock: Option<ManualClock>,
    env: &[(&str, &str)],
) -> PaypalTest {
    let certs = Arc::new(CertHost::default());
    let router = Router::new()
        .route("/v1/notifications/certs/{name}", routing::get(serve_cert))
        .with_state(certs.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let origin = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    let (_, _, webhook_id) = vector();
    let mut builder = TestApp::builder()
        .backend(backend)
        .env("PAYPAL_WEBHOOK_ID", &webhook_id)
        .env("PAYPAL_CERT_HOSTS", &origin);
    if let Some(clock) = clock {
        builder = builder.manual_clock(clock);
    }
    for (name, value) in env {
        builder = builder.env(name, value);
    }
    PaypalTest {
        app: builder.spawn().await,
        certs,
        origin,
        webhook_id,
    }
}

impl PaypalTest {
    fn cert_url(&self, name: &str) -> String {
        format!("{}/v1/notifications/certs/{name}", self.origin)
    }

    /// The published vector, its certificate URL moved to the fake host.
    fn vector_headers(&self) -> (Vec<(String, String)>, String) {
        let (mut headers, body, _) = vector();
        for (name, value) in &mut headers {
            if name == "paypal-cert-url" {
                *value = self.cert_url(VECTOR_CERT);
            }
        }
        (headers, body)
    }

    /// Headers for `body` signed as PayPal signs, with the test key, naming the test key's
    /// certificate.
    fn sign(&self, body: &[u8], transmission_id: &str) -> Vec<(String, String)> {
        self.sign_naming(body, transmission_id, TEST_CERT)
    }

    /// Headers for `body` signed with the test key, naming the certificate `cert`.
    fn sign_naming(&self, body: &[u8], transmission_id: &str, cert: &str) -> Vec<(String, String)> {
        let time = "2019-02-15T19:14:05Z";
        let message = paypal_signed_message(transmission_id, time, &self.webhook_id, body);
        [
            ("paypal-auth-algo", "SHA256withRSA".to_owned()),
            ("paypal-cert-url", self.cert_url(cert)),
            ("paypal-transmission-id", transmission_id.to_owned()),
            ("paypal-transmission-time", time.to_owned()),
            (
                "paypal-transmission-sig",
                pki::signer().sign_base64(&message),
            ),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
    }

    async fn post(&self, headers: &[(String, String)], body: &[u8]) -> reqwest::Response {
        let mut request = self
            .app
            .client
            .post(format!("{}{ROUTE}", self.app.base))
            .header("content-type", "application/json")
            .body(body.to_vec());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.send().await.expect("sent")
    }

    /// Posts `event` signed with the test key; it must be acknowledged.
    async fn post_event(&self, event: &Value) -> Value {
        let body = serde_json::to_vec(event).expect("serializes");
        let transmission = format!("tx-{}", event["id"].as_str().expect("id"));
        let response = self.post(&self.sign(&body, &transmission), &body).await;
        assert_eq!(response.status(), 200, "{}", event["event_type"]);
        response.json().await.expect("JSON")
    }

    /// Posts `event` signed with the test key but naming the certificate `cert`; it must be
    /// acknowledged (the certificate is fetched later, by the processor).
    async fn post_naming(&self, event: &Value, cert: &str) {
        let body = serde_json::to_vec(event).expect("serializes");
        let transmission = format!("tx-{}", event["id"].as_str().expect("id"));
        let headers = self.sign_naming(&body, &transmission, cert);
        assert_eq!(self.post(&headers, &body).await.status(), 200, "{cert}");
    }

    /// The delivery's status and why it failed, if it did.
    async fn outcome_of(&self, event_id: &str) -> (Option<String>, String) {
        let row = self
            .app
            .one(&format!(
                "SELECT status, last_error FROM deliveries WHERE event_id = '{event_id}'"
            ))
            .await;
        (row[0].clone(), row[1].clone().unwrap_or_default())
    }

    async fn status_of(&self, event_id: &str) -> Option<String> {
        self.app
            .one(&format!(
                "SELECT status FROM deliveries WHERE event_id = '{event_id}'"
            ))
            .await
            .remove(0)
    }

    async fn payment(&self, capture: &str) -> Vec<Option<String>> {
        self.app
            .one(&format!(
                "SELECT gateway, payment_status, amount_minor, amount_refunded_minor, currency, \
                 order_id FROM payments WHERE source = 'paypal' \
                 AND gateway_transaction_id = '{capture}'"
            ))
            .await
    }
}

fn some(values: &[&str]) -> Vec<Option<String>> {
    values.iter().map(|v| Some((*v).to_owned())).collect()
}

async fn the_published_vector_is_verified_with_its_fetched_certificate_into_payments(
    backend: Backend,
) {
    let test = start(backend, Some(vector_clock())).await;
    let (headers, body) = test.vector_headers();
    let response = test.post(&headers, body.as_bytes()).await;
    assert_eq!(response.status(), 200);
    let event = "WH-82L71649W50323023-5WC64761VS637831A";
    assert_eq!(test.status_of(event).await.as_deref(), Some("verifying"));
    test.app.run_pending().await;
    assert_eq!(test.status_of(event).await.as_deref(), Some("processed"));
    let payment = test
        .app
        .one(
            "SELECT gateway, payment_status, amount_minor, currency FROM payments \
             WHERE source = 'paypal' AND gateway_transaction_id = '8RS6210148826604N'",
        )
        .await;
    assert_eq!(payment, some(&["paypal", "paid", "601", "USD"]));
    assert_eq!(test.certs.fetches.load(Ordering::SeqCst), 1);
}

async fn a_tampered_body_is_acknowledged_then_rejected_and_writes_nothing(backend: Backend) {
    let test = start(backend, Some(vector_clock())).await;
    let (headers, body) = test.vector_headers();
    let tampered = body.replace("\"total\":\"6.01\"", "\"total\":\"9.01\"");
    assert_ne!(tampered, body);
    assert_eq!(test.post(&headers, tampered.as_bytes()).await.status(), 200);
    test.app.run_pending().await;
    let event = "WH-82L71649W50323023-5WC64761VS637831A";
    assert_eq!(test.status_of(event).await.as_deref(), Some("rejected"));
    let (_, reason) = test.outcome_of(event).await;
    assert!(reason.contains("signature does not match"), "{reason}");
    assert_eq!(test.app.count("SELECT COUNT(*) FROM payments").await, 0);
}

async fn a_certificate_url_off_paypals_hosts_is_401_and_stores_nothing(backend: Backend) {
    let test = start(backend, None).await;
    let (headers, body) = test.vector_headers();
    let port: u16 = test
        .origin
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .expect("a port");
    let other_port = format!("http://127.0.0.1:{}", port.wrapping_add(1));
    let by_name = format!("http://localhost:{port}");
    for url in [
        format!("https://certs.evil.test/v1/notifications/certs/{VECTOR_CERT}"),
        format!("https://api.sandbox.paypal.com/v1/notifications/certs/{VECTOR_CERT}"),
        format!("{other_port}/v1/notifications/certs/{VECTOR_CERT}"),
        format!("{by_name}/v1/notifications/certs/{VECTOR_CERT}"),
    ] {
        let moved: Vec<(String, String)> = headers
            .iter()
            .map(|(name, value)| match name.as_str() {
                "paypal-cert-url" => (name.clone(), url.clone()),
                _ => (name.clone(), value.clone()),
            })
            .collect();
        assert_eq!(
            test.post(&moved, body.as_bytes()).await.status(),
            401,
            "{url}"
        );
    }
    assert_eq!(test.app.count("SELECT COUNT(*) FROM deliveries").await, 0);
    assert_eq!(test.certs.fetches.load(Ordering::SeqCst), 0);
}

/// Signed by the right key, but its certificate was not valid when the delivery arrived (now,
/// on the app's real clock): expired in 2020, or valid only from 2040.
async fn a_certificate_expired_or_not_yet_valid_when_the_delivery_arrived_is_rejected(
    backend: Backend,
) {
    let test = start(backend, None).await;
    for (cert, event_id) in [
        (EXPIRED_CERT, "WH-EXPIRED-CERT"),
        (FUTURE_CERT, "WH-FUTURE-CERT"),
    ] {
        let mut event = fixture("PAYMENT.CAPTURE.COMPLETED");
        event["id"] = json!(event_id);
        test.post_naming(&event, cert).await;
        test.app.run_pending().await;
        let (status, reason) = test.outcome_of(event_id).await;
        assert_eq!(status.as_deref(), Some("rejected"), "{cert}");
        assert!(
            reason.contains("certificate is valid from"),
            "{cert}: {reason}"
        );
    }
    assert_eq!(test.certs.fetches.load(Ordering::SeqCst), 2);
    assert_eq!(test.app.count("SELECT COUNT(*) FROM payments").await, 0);
}

/// PayPal's URL, a well-formed certificate, but for a key that did not sign the delivery.
async fn a_certificate_for_another_key_is_rejected(backend: Backend) {
    let test = start(backend, None).await;
    let event = fixture("PAYMENT.CAPTURE.COMPLETED");
    test.post_naming(&event, OTHER_KEY_CERT).await;
    test.app.run_pending().await;
    let (status, reason) = test
        .outcome_of("WH-58D329510W468432D-8HN650336L201105X")
        .await;
    assert_eq!(status.as_deref(), Some("rejected"));
    assert!(reason.contains("signature does not match"), "{reason}");
    assert_eq!(test.app.count("SELECT COUNT(*) FROM payments").await, 0);
}

async fn a_capture_completed_then_refunded_moves_the_payment_from_paid_to_refunded(
    backend: Backend,
) {
    let test = start(backend, None).await;
    test.post_event(&fixture("PAYMENT.CAPTURE.COMPLETED")).await;
    test.app.run_pending().await;
    assert_eq!(
        test.payment(CAPTURE).await,
        some(&["paypal", "paid", "251", "0", "USD", "1AB23456CD789012E"])
    );
    test.post_event(&fixture("PAYMENT.CAPTURE.REFUNDED")).await;
    test.app.run_pending().await;
    assert_eq!(
        test.payment(CAPTURE).await,
        some(&[
            "paypal",
            "refunded",
            "251",
            "251",
            "USD",
            "1AB23456CD789012E"
        ])
    );
    // An older capture event arriving late does not undo the refund.
    let mut late = fixture("PAYMENT.CAPTURE.COMPLETED");
    late["id"] = json!("WH-LATE-CAPTURE");
    late["create_time"] = json!("2019-02-14T21:55:00Z");
    test.post_event(&late).await;
    test.app.run_pending().await;
    assert_eq!(
        test.status_of("WH-LATE-CAPTURE").await.as_deref(),
        Some("processed")
    );
    assert_eq!(test.payment(CAPTURE).await[1].as_deref(), Some("refunded"));
}

async fn the_certificate_is_fetched_once_for_two_deliveries(backend: Backend) {
    let test = start(backend, None).await;
    test.post_event(&fixture("PAYMENT.CAPTURE.COMPLETED")).await;
    test.app.run_pending().await;
    test.post_event(&fixture("PAYMENT.CAPTURE.REFUNDED")).await;
    test.app.run_pending().await;
    assert_eq!(
        test.app
            .count("SELECT COUNT(*) FROM deliveries WHERE status = 'processed'")
            .await,
        2
    );
    assert_eq!(test.certs.fetches.load(Ordering::SeqCst), 1);
}

async fn with_paypal_down_the_delivery_stays_verifying_and_is_verified_later(backend: Backend) {
    let clock = ManualClock::at(Timestamp::from_unix_seconds(1_700_000_000));
    let test = start(backend, Some(clock.clone())).await;
    test.certs.down.store(true, Ordering::SeqCst);
    let event = fixture("PAYMENT.CAPTURE.COMPLETED");
    test.post_event(&event).await;
    test.app.run_pending().await;
    let id = "WH-58D329510W468432D-8HN650336L201105X";
    assert_eq!(test.status_of(id).await.as_deref(), Some("verifying"));
    assert!(test.certs.fetches.load(Ordering::SeqCst) >= 1);
    assert_eq!(test.app.count("SELECT COUNT(*) FROM payments").await, 0);
    test.certs.down.store(false, Ordering::SeqCst);
    clock.advance_millis(2 * 60 * 60 * 1000);
    test.app.run_pending().await;
    assert_eq!(test.status_of(id).await.as_deref(), Some("processed"));
    assert_eq!(test.payment(CAPTURE).await[1].as_deref(), Some("paid"));
}

async fn a_repeated_event_id_is_stored_and_applied_once(backend: Backend) {
    let test = start(backend, None).await;
    let event = fixture("PAYMENT.CAPTURE.COMPLETED");
    let first = test.post_event(&event).await;
    let again = test.post_event(&event).await;
    assert_eq!(first["duplicate"], false);
    assert_eq!(again["duplicate"], true);
    test.app.run_pending().await;
    assert_eq!(
        test.app
            .count("SELECT COUNT(*) FROM deliveries WHERE source = 'paypal'")
            .await,
        1
    );
    assert_eq!(
        test.app
            .count(
                "SELECT COUNT(*) FROM payments WHERE gateway_transaction_id = '27M47624FP291604U'"
            )
            .await,
        1
    );
}

async fn a_subscription_activated_then_cancelled_is_canceled_in_subscriptions(backend: Backend) {
    let test = start(backend, None).await;
    let activated = fixture("BILLING.SUBSCRIPTION.ACTIVATED");
    let mut cancelled = activated.clone();
    cancelled["id"] = json!("WH-2WR32451HC0233532-67976317FL4543714");
    cancelled["event_type"] = json!("BILLING.SUBSCRIPTION.CANCELLED");
    cancelled["create_time"] = json!("2018-12-20T10:00:00.000Z");
    cancelled["resource"]["status"] = json!("CANCELLED");
    cancelled["resource"]["status_update_time"] = json!("2018-12-20T10:00:00Z");
    test.post_event(&cancelled).await;
    test.post_event(&activated).await;
    test.app.run_pending().await;
    let row = test
        .app
        .one(
            "SELECT status, plan, customer, email, user_id, \
             CASE WHEN canceled_at IS NULL THEN 'no' ELSE 'yes' END FROM subscriptions \
             WHERE source = 'paypal' AND subscription_id = 'I-BW452GLLEP1G'",
        )
        .await;
    assert_eq!(
        row,
        some(&[
            "canceled",
            "P-5ML4271244454362WXNWU5NQ",
            "2J6QB8YJQSJRJ",
            "customer@example.com",
            "user-4711",
            "yes",
        ])
    );
}

async fn a_delivery_that_died_unverified_is_verified_when_replayed(backend: Backend) {
    let test = start_with(backend, None, &[("WHARF_MAX_ATTEMPTS", "1")]).await;
    test.certs.down.store(true, Ordering::SeqCst);
    test.post_event(&fixture("PAYMENT.CAPTURE.COMPLETED")).await;
    test.app.run_pending().await;
    let id = "WH-58D329510W468432D-8HN650336L201105X";
    assert_eq!(test.status_of(id).await.as_deref(), Some("dead"));
    test.certs.down.store(false, Ordering::SeqCst);
    let replay = test
        .app
        .admin_post("/api/deliveries/replay?status=dead")
        .await;
    assert_eq!(replay.status(), 200);
    test.app.run_pending().await;
    assert_eq!(
        test.status_of(id).await.as_deref(),
        Some("processed"),
        "the replay checked the signature, this time with the certificate at hand"
    );
    assert_eq!(
        test.app
            .count("SELECT COUNT(*) FROM payments WHERE payment_status = 'paid'")
            .await,
        1
    );
}

async fn an_approved_order_is_a_pending_payment_until_its_capture_in_either_order(
    backend: Backend,
) {
    let test = start(backend, None).await;
    test.post_event(&fixture("CHECKOUT.ORDER.APPROVED")).await;
    test.app.run_pending().await;
    let order = "SELECT payment_status, lifecycle_status, amount_minor, currency, customer_email, \
                 charge_id FROM payments WHERE gateway_transaction_id = '5O190127TN364715T'";
    let mut expected = some(&["pending", "approved", "10000", "USD", "buyer@example.com"]);
    expected.push(None);
    assert_eq!(test.app.one(order).await, expected);
    let mut capture = fixture("PAYMENT.CAPTURE.COMPLETED");
    capture["resource"]["supplementary_data"]["related_ids"]["order_id"] =
        json!("5O190127TN364715T");
    test.post_event(&capture).await;
    test.app.run_pending().await;
    assert_eq!(
        test.app.one(order).await,
        some(&[
            "captured",
            "captured",
            "10000",
            "USD",
            "buyer@example.com",
            CAPTURE
        ]),
        "the order's row gives way to its capture's, so the payment counts once as paid"
    );
    assert_eq!(
        test.app
            .count("SELECT COUNT(*) FROM payments WHERE payment_status = 'paid'")
            .await,
        1
    );
    // The other order: the capture arrives first, the approval after it.
    let mut early = fixture("PAYMENT.CAPTURE.COMPLETED");
    early["id"] = json!("WH-EARLY-CAPTURE");
    early["resource"]["id"] = json!("CAPTURE-EARLY");
    early["resource"]["supplementary_data"]["related_ids"]["order_id"] = json!("ORDER-LATE");
    let mut approved = fixture("CHECKOUT.ORDER.APPROVED");
    approved["id"] = json!("WH-LATE-APPROVAL");
    approved["resource"]["id"] = json!("ORDER-LATE");
    test.post_event(&early).await;
    test.app.run_pending().await;
    test.post_event(&approved).await;
    test.app.run_pending().await;
    assert_eq!(
        test.app
            .one(
                "SELECT payment_status, amount_minor, charge_id FROM payments \
                 WHERE gateway_transaction_id = 'ORDER-LATE'"
            )
            .await,
        some(&["captured", "10000", "CAPTURE-EARLY"])
    );
}

/// A fake of PayPal's REST API: `POST /v1/oauth2/token` (client credentials) and
/// `POST /v1/notifications/verify-webhook-signature`, recording what it was sent.
#[derive(Default)]
struct FakePaypalApi {
    tokens_issued: AtomicUsize,
    verify_requests: parking_lot::Mutex<Vec<Value>>,
}

const CLIENT_ID: &str = "AYSq3RDGsmBLJE-otTkBtM-jBRd1TCQwFf9RGfwddNXWz0uFU9ztymylOhRS";
const CLIENT_SECRET: &str = "EGnHDxD_qRPdaLdZz8iCr8N7_MzF-YHPTkjs6NKYQvQSBngp4PTTVWkPZRbL";

async fn issue_token(
    State(fake): State<Arc<FakePaypalApi>>,
    headers: axum::http::HeaderMap,
    body: String,
) -> (StatusCode, axum::Json<Value>) {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    let authorized = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        == Some(expected.as_str());
    if !authorized || body != "grant_type=client_credentials" {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_client",
                              "error_description": "Client Authentication failed"})),
        );
    }
    let n = fake.tokens_issued.fetch_add(1, Ordering::SeqCst);
    (
        StatusCode::OK,
        axum::Json(json!({
            "scope": "https://uri.paypal.com/services/invoicing openid",
            "access_token": format!("A21AAFEpH4PsADK7qSS7pSRsgzfENtu-Q1ysgEDVDESseMHBYXVJYE8ovjj68elIDy8nF26AwPhfXTIeWAZHSLIsQkSYz9ifg{n}"),
            "token_type": "Bearer",
            "app_id": "APP-80W284485P519543T",
            "expires_in": 31_668,
            "nonce": "2020-04-03T15:35:36ZaYZlGvEkV4yVSz8g6bAKFoGSEzuy3CQcz3ljhibkOHg"
        })),
    )
}

async fn verify_signature(
    State(fake): State<Arc<FakePaypalApi>>,
    headers: axum::http::HeaderMap,
    body: String,
) -> (StatusCode, axum::Json<Value>) {
    let bearer = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if !bearer.starts_with("Bearer A21AAF") {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_token"})),
        );
    }
    let request: Value = serde_json::from_str(&body).expect("the verify request is JSON");
    let genuine = request["transmission_sig"] == "c2lnbmVkLWJ5LXBheXBhbA=="
        && request["webhook_id"] == "WH-ID-API";
    fake.verify_requests.lock().push(request);
    let status = if genuine { "SUCCESS" } else { "FAILURE" };
    (
        StatusCode::OK,
        axum::Json(json!({ "verification_status": status })),
    )
}

async fn with_client_credentials_paypals_verify_api_decides_with_an_oauth_token(backend: Backend) {
    let fake = Arc::new(FakePaypalApi::default());
    let router = Router::new()
        .route("/v1/oauth2/token", routing::post(issue_token))
        .route(
            "/v1/notifications/verify-webhook-signature",
            routing::post(verify_signature),
        )
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let api_base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    let app = TestApp::builder()
        .backend(backend)
        .env("PAYPAL_WEBHOOK_ID", "WH-ID-API")
        .env("PAYPAL_API_BASE", &api_base)
        .env("PAYPAL_CLIENT_ID", CLIENT_ID)
        .env("PAYPAL_CLIENT_SECRET", CLIENT_SECRET)
        .spawn()
        .await;
    let post = |event: &Value, signature: &str| {
        let body = serde_json::to_vec_pretty(event).expect("serializes");
        let request = app
            .client
            .post(format!("{}{ROUTE}", app.base))
            .header("content-type", "application/json")
            .header("paypal-auth-algo", "SHA256withRSA")
            .header(
                "paypal-cert-url",
                "https://api.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594-a5cafa77",
            )
            .header(
                "paypal-transmission-id",
                "69cd13f0-d67a-11e5-baa3-778b53f4ae55",
            )
            .header("paypal-transmission-time", "2016-02-18T20:01:35Z")
            .header("paypal-transmission-sig", signature)
            .body(body);
        async move { request.send().await.expect("sent").status() }
    };
    let genuine = fixture("PAYMENT.CAPTURE.COMPLETED");
    let mut forged = fixture("PAYMENT.CAPTURE.COMPLETED");
    forged["id"] = json!("WH-FORGED");
    forged["resource"]["id"] = json!("CAPTURE-FORGED");
    assert_eq!(post(&genuine, "c2lnbmVkLWJ5LXBheXBhbA==").await, 200);
    assert_eq!(post(&forged, "Zm9yZ2Vk").await, 200);
    app.run_pending().await;
    let statuses = app
        .rows("SELECT event_id, status FROM deliveries ORDER BY id")
        .await;
    assert_eq!(
        statuses,
        [
            some(&["WH-58D329510W468432D-8HN650336L201105X", "processed"]),
            some(&["WH-FORGED", "rejected"]),
        ]
    );
    assert_eq!(
        app.rows("SELECT gateway_transaction_id FROM payments WHERE payment_status = 'paid'")
            .await,
        [some(&[CAPTURE])]
    );
    assert_eq!(
        fake.tokens_issued.load(Ordering::SeqCst),
        1,
        "one token serves both calls"
    );
    let requests = fake.verify_requests.lock().clone();
    assert_eq!(requests.len(), 2);
    // The processor makes a batch's lookups concurrently: find the genuine one's call.
    let request = requests
        .iter()
        .find(|request| request["webhook_event"]["id"] == genuine["id"])
        .expect("a verify call for the genuine event");
    assert_eq!(request["auth_algo"], "SHA256withRSA");
    assert_eq!(
        request["transmission_id"],
        "69cd13f0-d67a-11e5-baa3-778b53f4ae55"
    );
    assert_eq!(request["transmission_time"], "2016-02-18T20:01:35Z");
    assert_eq!(request["webhook_id"], "WH-ID-API");
    assert_eq!(
        request["webhook_event"], genuine,
        "the event is sent as it came"
    );
}
