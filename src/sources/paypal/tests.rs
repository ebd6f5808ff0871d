use std::collections::BTreeMap;

use axum::http::{HeaderMap, HeaderValue, Method};
use bytes::Bytes;
use serde_json::{json, Value};

use super::event::{read, Lifecycle, Reading, Report};
use super::ledger::PaypalChange;
use super::source::{CertHosts, PaypalProvider};
use crate::clock::Timestamp;
use crate::journal::{ClaimToken, ClaimedDelivery, DeliveryId};
use crate::ledger::{Cell, RowChange, RowWrite, WriteTimes};
use crate::lookup::LookupAnswer;
use crate::sources::{authenticate, Judgement, Normalized, Provider, SharedSource};
use crate::verify::fixtures::{str_field, vectors, PAYPAL_CERT_PEM};
use crate::verify::VerifyError;

fn fixture(event_type: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/paypal/{event_type}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"));
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn builtin(toml: &str, env: &[(&str, &str)]) -> SharedSource {
    let env: BTreeMap<String, String> = env
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
    let section: toml::Table = toml::from_str(toml).expect("toml");
    PaypalProvider
        .builtin(section, &env)
        .expect("settings")
        .expect("a built-in source")
}

/// The published vector: its headers, body and webhook id.
struct Vector {
    headers: Vec<(String, String)>,
    body: String,
    webhook_id: String,
}

fn vector() -> Vector {
    let raw = vectors("paypal-sha256withrsa").remove(0);
    let mut headers: Vec<(String, String)> = raw["headers"]
        .as_object()
        .expect("headers")
        .iter()
        .map(|(name, value)| (name.clone(), value.as_str().unwrap_or("").to_owned()))
        .collect();
    for (name, value) in &mut headers {
        if name == "paypal-transmission-sig" {
            *value = str_field(&raw, "expected_header").to_owned();
        }
    }
    Vector {
        headers,
        body: str_field(&raw, "payload").to_owned(),
        webhook_id: str_field(&raw, "webhook_id").to_owned(),
    }
}

fn request(headers: &[(String, String)], body: &str) -> crate::sources::IncomingRequest {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
    }
    crate::sources::IncomingRequest {
        method: Method::POST,
        path: "/api/webhooks/paypal".into(),
        query: None,
        headers: map,
        body: Bytes::from(body.to_owned()),
        received_at: Timestamp::from_unix_seconds(1_700_000_000),
        path_params: Vec::new(),
    }
}

/// When the vector was sent (its `paypal-transmission-time`), inside its certificate's
/// validity period (2015-03-18 to 2017-03-22).
fn vector_sent() -> Timestamp {
    Timestamp::parse_rfc3339("2016-10-05T14:57:40Z").expect("a time")
}

/// A stored delivery, received when the vector was sent.
fn delivery(headers: &[(String, String)], body: &str) -> ClaimedDelivery {
    received(headers, body, vector_sent())
}

fn received(headers: &[(String, String)], body: &str, at: Timestamp) -> ClaimedDelivery {
    let headers: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(name, value)| (name.clone(), Value::String(value.clone())))
        .collect();
    ClaimedDelivery {
        id: DeliveryId(1),
        claim: ClaimToken(1),
        source: "paypal".into(),
        event_id: None,
        event_type: "PAYMENT.SALE.COMPLETED".into(),
        dedup_key: "WH-1".into(),
        received_at: at,
        headers_json: Value::Object(headers).to_string(),
        body: Bytes::from(body.to_owned()),
        attempts: 0,
        verifying: true,
    }
}

fn cert_answer() -> LookupAnswer {
    LookupAnswer {
        status: 200,
        body: Bytes::from_static(PAYPAL_CERT_PEM.as_bytes()),
    }
}

#[test]
fn cert_hosts_allow_paypals_https_hosts_only() {
    let hosts = CertHosts::paypal();
    for allowed in [
        "https://api.sandbox.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594-a5cafa77",
        "https://api.paypal.com/v1/notifications/certs/CERT-1",
        "https://api-m.paypal.com/v1/notifications/certs/CERT-1",
        "https://api-m.sandbox.paypal.com/v1/notifications/certs/CERT-1",
        "https://messageverificationcerts.paypal.com/cert",
        "https://API.PayPal.com:443/cert",
    ] {
        assert!(hosts.allows(allowed), "{allowed}");
    }
    for refused in [
        "http://api.paypal.com/v1/notifications/certs/CERT-1",
        "https://api.paypal.com:8443/cert",
        "https://api.paypal.com.evil.test/cert",
        "https://evilpaypal.com/cert",
        "https://paypal.com.evil.test/cert",
        "https://user@api.paypal.com/cert",
        "https://.paypal.com/cert",
        "file:///etc/passwd",
        "http://127.0.0.1:8080/cert",
        "not a url",
        "",
    ] {
        assert!(!hosts.allows(refused), "{refused}");
    }
}

#[test]
fn a_configured_origin_allows_plain_http_on_that_port_only() {
    let hosts = CertHosts::new(["http://127.0.0.1:8080".to_owned()]);
    assert!(hosts.allows("http://127.0.0.1:8080/v1/notifications/certs/CERT-1"));
    assert!(!hosts.allows("http://127.0.0.1:8081/cert"));
    assert!(!hosts.allows("https://127.0.0.1:8080/cert"));
    assert!(
        !hosts.allows("https://api.paypal.com/cert"),
        "replaces PayPal's list"
    );
}

#[test]
fn settings_come_from_the_environment_over_the_file() {
    let v = vector();
    let from_env = builtin(
        "webhook_id = \"other\"",
        &[("PAYPAL_WEBHOOK_ID", v.webhook_id.as_str())],
    );
    let verdict = from_env
        .judge(&delivery(&v.headers, &v.body), &cert_answer())
        .expect("judged");
    assert!(matches!(verdict, Judgement::Genuine(_)), "{verdict:?}");
    let from_file = builtin(&format!("webhook_id = \"{}\"", v.webhook_id), &[]);
    let verdict = from_file
        .judge(&delivery(&v.headers, &v.body), &cert_answer())
        .expect("judged");
    assert!(matches!(verdict, Judgement::Genuine(_)), "{verdict:?}");
    let local = builtin(
        "",
        &[
            ("PAYPAL_WEBHOOK_ID", "x"),
            ("PAYPAL_CERT_HOSTS", "http://127.0.0.1:9, api.paypal.com"),
        ],
    );
    let mut headers = v.headers.clone();
    for (name, value) in &mut headers {
        if name == "paypal-cert-url" {
            *value = "http://127.0.0.1:9/cert".into();
        }
    }
    assert!(authenticate(local.as_ref(), request(&headers, &v.body), Timestamp(0)).is_ok());
}

#[test]
fn without_a_webhook_id_paypal_refuses_traffic() {
    let v = vector();
    let source = builtin("", &[]);
    let rejected = authenticate(source.as_ref(), request(&v.headers, &v.body), Timestamp(0))
        .expect_err("refused");
    assert_eq!(rejected.error, VerifyError::NoSecretConfigured);
}

#[test]
fn authentication_wants_every_header_and_a_paypal_cert_url() {
    let v = vector();
    let source = builtin("", &[("PAYPAL_WEBHOOK_ID", v.webhook_id.as_str())]);
    let verified = authenticate(source.as_ref(), request(&v.headers, &v.body), Timestamp(0))
        .expect("the vector's headers pass");
    let identity = source.identify(&verified).expect("identified");
    assert_eq!(identity.dedup_key, "WH-82L71649W50323023-5WC64761VS637831A");
    assert_eq!(identity.event_type, "PAYMENT.SALE.COMPLETED");
    assert!(source.needs_lookup(verified.request()));
    for (missing, _) in &v.headers {
        let headers: Vec<_> = v
            .headers
            .iter()
            .filter(|(n, _)| n != missing)
            .cloned()
            .collect();
        assert!(
            authenticate(source.as_ref(), request(&headers, &v.body), Timestamp(0)).is_err(),
            "without {missing}"
        );
    }
    let mut elsewhere = v.headers.clone();
    for (name, value) in &mut elsewhere {
        if name == "paypal-cert-url" {
            *value = "https://certs.evil.test/CERT-360caa42-fca2a594-a5cafa77".into();
        }
    }
    let rejected = authenticate(source.as_ref(), request(&elsewhere, &v.body), Timestamp(0))
        .expect_err("refused");
    assert!(matches!(rejected.error, VerifyError::MalformedSignature(_)));
}

#[test]
fn the_vector_is_judged_genuine_and_a_changed_body_forged() {
    let v = vector();
    let source = builtin("", &[("PAYPAL_WEBHOOK_ID", v.webhook_id.as_str())]);
    let genuine = delivery(&v.headers, &v.body);
    let lookup = source.lookup(&genuine, Timestamp(0)).expect("a lookup");
    assert!(lookup.cacheable);
    assert_eq!(
        lookup.url,
        "https://api.sandbox.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594-a5cafa77"
    );
    match source.judge(&genuine, &cert_answer()).expect("judged") {
        Judgement::Genuine(Normalized::Changes(changes)) => assert_eq!(changes.len(), 1),
        other => panic!("expected a payment, got {other:?}"),
    }
    assert!(
        source.normalize(&genuine).is_err(),
        "never applied without the signature check"
    );
    let tampered = delivery(&v.headers, &v.body.replace("6.01", "9.01"));
    assert!(matches!(
        source.judge(&tampered, &cert_answer()).expect("judged"),
        Judgement::Forged(reason) if reason == VerifyError::Mismatch.to_string()
    ));
    let placeholder = builtin("", &[("PAYPAL_WEBHOOK_ID", "WEBHOOK_ID")]);
    assert!(matches!(
        placeholder.judge(&genuine, &cert_answer()).expect("judged"),
        Judgement::Forged(_)
    ));
    let not_a_cert = LookupAnswer {
        status: 200,
        body: Bytes::from_static(b"<html>"),
    };
    assert!(matches!(
        source.judge(&genuine, &not_a_cert).expect("judged"),
        Judgement::Forged(_)
    ));
    let missing = LookupAnswer {
        status: 404,
        body: Bytes::new(),
    };
    assert!(matches!(
        source.judge(&genuine, &missing).expect("judged"),
        Judgement::Forged(_)
    ));
}

#[test]
fn the_vector_received_outside_its_certificates_validity_is_forged() {
    let v = vector();
    let source = builtin("", &[("PAYPAL_WEBHOOK_ID", v.webhook_id.as_str())]);
    for at in ["2017-03-22T12:00:01Z", "2015-03-17T23:59:59Z"] {
        let at = Timestamp::parse_rfc3339(at).expect("a time");
        match source
            .judge(&received(&v.headers, &v.body, at), &cert_answer())
            .expect("judged")
        {
            Judgement::Forged(reason) => assert!(
                reason.starts_with("certificate is valid from 2015-03-18"),
                "{reason}"
            ),
            other => panic!("expected a forgery, got {other:?}"),
        }
    }
}

fn report(event: &Value) -> (super::event::EventRef, Report) {
    match read(event.to_string().as_bytes()).expect("read") {
        Reading::Report(event, report) => (event, report),
        Reading::Ignore(reason) => panic!("ignored: {reason}"),
    }
}

#[test]
fn each_fixture_reads_as_its_report() {
    let (event, Report::Capture(capture)) = report(&fixture("PAYMENT.CAPTURE.COMPLETED")) else {
        panic!("a capture");
    };
    assert_eq!(event.id, "WH-58D329510W468432D-8HN650336L201105X");
    assert_eq!(capture.capture_id, "27M47624FP291604U");
    assert_eq!(capture.lifecycle, Lifecycle::Paid);
    assert_eq!(capture.order_id.as_deref(), Some("1AB23456CD789012E"));
    assert_eq!(capture.amount.as_ref().map(|a| a.minor_units), Some(251));
    let (_, Report::Capture(denied)) = report(&fixture("PAYMENT.CAPTURE.DENIED")) else {
        panic!("a capture");
    };
    assert_eq!(denied.lifecycle, Lifecycle::Failed);
    let (_, Report::Refund(refund)) = report(&fixture("PAYMENT.CAPTURE.REFUNDED")) else {
        panic!("a refund");
    };
    assert_eq!(refund.capture_id, "27M47624FP291604U");
    assert_eq!(refund.refund_id, "1Y107995YT783435V");
    assert_eq!(refund.status, "completed");
    let (_, Report::Subscription(subscription)) =
        report(&fixture("BILLING.SUBSCRIPTION.ACTIVATED"))
    else {
        panic!("a subscription");
    };
    assert_eq!(subscription.subscription_id, "I-BW452GLLEP1G");
    assert_eq!(subscription.status, "active");
    assert_eq!(subscription.payer_id.as_deref(), Some("2J6QB8YJQSJRJ"));
    assert_eq!(subscription.custom_id.as_deref(), Some("user-4711"));
    let (_, Report::Order(order)) = report(&fixture("CHECKOUT.ORDER.APPROVED")) else {
        panic!("an order");
    };
    assert_eq!(order.order_id, "5O190127TN364715T");
    assert_eq!(order.amount.as_ref().map(|a| a.minor_units), Some(10_000));
    assert_eq!(order.payer_email.as_deref(), Some("buyer@example.com"));
    assert!(!order.captured);
    let mut other = fixture("PAYMENT.CAPTURE.COMPLETED");
    other["event_type"] = json!("CUSTOMER.DISPUTE.CREATED");
    assert!(matches!(
        read(other.to_string().as_bytes()).expect("read"),
        Reading::Ignore(_)
    ));
    let mut bad = fixture("PAYMENT.CAPTURE.COMPLETED");
    bad["resource"]["amount"]["value"] = json!("2.513");
    assert!(read(bad.to_string().as_bytes()).is_err());
}

/// Applies `events` in order to one row, as the ledger store would.
fn apply(events: &[Value]) -> Vec<Cell> {
    let mut row: Option<Vec<Cell>> = None;
    for (n, event) in events.iter().enumerate() {
        let (event, report) = report(event);
        let change = PaypalChange { event, report };
        let times = WriteTimes {
            received_at: Timestamp::from_unix_seconds(1_700_000_000 + n as i64),
            now: Timestamp::from_unix_seconds(1_700_000_000 + n as i64),
        };
        match change
            .decide("paypal", row.as_deref(), times)
            .expect("decided")
            .row
        {
            RowWrite::Insert(cells) | RowWrite::Update(cells) => row = Some(cells),
            RowWrite::Unchanged => {}
        }
    }
    row.expect("a row")
}

fn column(row: &[Cell], table: &crate::ledger::Table, name: &str) -> Cell {
    row[table.position(name).expect("column")].clone()
}

#[test]
fn a_refund_before_its_capture_and_a_replay_end_the_same() {
    let table = &super::ledger::PAYMENTS;
    let captured = fixture("PAYMENT.CAPTURE.COMPLETED");
    let refunded = fixture("PAYMENT.CAPTURE.REFUNDED");
    let in_order = apply(&[captured.clone(), refunded.clone()]);
    let reversed = apply(&[refunded.clone(), captured.clone()]);
    let replayed = apply(&[captured.clone(), refunded.clone(), captured, refunded]);
    for row in [&in_order, &reversed, &replayed] {
        assert_eq!(column(row, table, "payment_status"), Cell::text("refunded"));
        assert_eq!(column(row, table, "lifecycle_status"), Cell::text("paid"));
        assert_eq!(
            column(row, table, "amount_refunded_minor"),
            Cell::Integer(251)
        );
        assert_eq!(column(row, table, "amount_minor"), Cell::Integer(251));
        assert_eq!(column(row, table, "gateway"), Cell::text("paypal"));
        assert_eq!(
            column(row, table, "order_id"),
            Cell::text("1AB23456CD789012E")
        );
    }
}

#[test]
fn an_older_event_never_overwrites_a_newer_status() {
    let table = &super::ledger::PAYMENTS;
    let mut denied = fixture("PAYMENT.CAPTURE.DENIED");
    denied["resource"]["id"] = json!("27M47624FP291604U");
    denied["create_time"] = json!("2019-02-14T21:00:00Z");
    let completed = fixture("PAYMENT.CAPTURE.COMPLETED");
    for order in [
        [completed.clone(), denied.clone()],
        [denied.clone(), completed.clone()],
    ] {
        let row = apply(&order);
        assert_eq!(column(&row, table, "payment_status"), Cell::text("paid"));
        assert_eq!(
            column(&row, table, "last_event_id"),
            Cell::text("WH-58D329510W468432D-8HN650336L201105X")
        );
    }
    let mut partial = fixture("PAYMENT.CAPTURE.REFUNDED");
    partial["resource"]["amount"]["value"] = json!("1.00");
    let row = apply(&[completed, partial]);
    assert_eq!(
        column(&row, table, "payment_status"),
        Cell::text("partially_refunded")
    );
}

#[test]
fn a_subscription_follows_its_newest_event() {
    let table = &super::ledger::SUBSCRIPTIONS;
    let activated = fixture("BILLING.SUBSCRIPTION.ACTIVATED");
    let mut cancelled = activated.clone();
    cancelled["id"] = json!("WH-CANCELLED");
    cancelled["event_type"] = json!("BILLING.SUBSCRIPTION.CANCELLED");
    cancelled["create_time"] = json!("2018-12-20T10:00:00Z");
    cancelled["resource"]["status"] = json!("CANCELLED");
    cancelled["resource"]["status_update_time"] = json!("2018-12-20T09:59:00Z");
    for order in [
        [activated.clone(), cancelled.clone()],
        [cancelled.clone(), activated.clone()],
    ] {
        let row = apply(&order);
        assert_eq!(column(&row, table, "status"), Cell::text("canceled"));
        assert_eq!(
            column(&row, table, "canceled_at"),
            Cell::Timestamp(Timestamp::parse_rfc3339("2018-12-20T09:59:00Z").expect("time"))
        );
        assert_eq!(
            column(&row, table, "plan"),
            Cell::text("P-5ML4271244454362WXNWU5NQ")
        );
        assert_eq!(
            column(&row, table, "email"),
            Cell::text("customer@example.com")
        );
    }
}

#[test]
fn the_verify_api_is_chosen_by_client_credentials_and_asks_in_paypals_format() {
    let v = vector();
    let env = |extra: &[(&'static str, &'static str)]| {
        let mut env = vec![("PAYPAL_WEBHOOK_ID", v.webhook_id.as_str())];
        env.extend_from_slice(extra);
        env.into_iter()
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect::<BTreeMap<String, String>>()
    };
    let build = |toml: &str, env: &BTreeMap<String, String>| {
        let section: toml::Table = toml::from_str(toml).expect("toml");
        PaypalProvider.builtin(section, env)
    };
    let with_credentials = env(&[
        ("PAYPAL_CLIENT_ID", "client"),
        ("PAYPAL_CLIENT_SECRET", "secret"),
        ("PAYPAL_API_BASE", "https://api-m.sandbox.paypal.com/"),
    ]);
    let source = build("", &with_credentials)
        .expect("valid")
        .expect("built in");
    let genuine = delivery(&v.headers, &v.body);
    let lookup = source.lookup(&genuine, Timestamp(0)).expect("a lookup");
    assert_eq!(
        lookup.url,
        "https://api-m.sandbox.paypal.com/v1/notifications/verify-webhook-signature"
    );
    assert!(!lookup.cacheable);
    let oauth = lookup.oauth.as_ref().expect("a bearer token");
    assert_eq!(
        oauth.token_url,
        "https://api-m.sandbox.paypal.com/v1/oauth2/token"
    );
    let body: Value =
        serde_json::from_slice(lookup.body.as_deref().expect("a body")).expect("JSON");
    assert_eq!(body["webhook_id"], v.webhook_id.as_str());
    let event: Value = serde_json::from_str(&v.body).expect("JSON");
    assert_eq!(body["webhook_event"], event);
    let verdict = |status: &str| LookupAnswer {
        status: 200,
        body: bytes::Bytes::from(format!(r#"{{"verification_status":"{status}"}}"#)),
    };
    assert!(matches!(
        source.judge(&genuine, &verdict("SUCCESS")),
        Ok(Judgement::Genuine(_))
    ));
    assert!(matches!(
        source.judge(&genuine, &verdict("FAILURE")),
        Ok(Judgement::Forged(_))
    ));
    let error = LookupAnswer {
        status: 400,
        body: bytes::Bytes::from_static(br#"{"name":"VALIDATION_ERROR"}"#),
    };
    assert!(
        source.judge(&genuine, &error).is_err(),
        "retried, not judged"
    );
    // The certificate stays available, and "api" without credentials is refused.
    let certificate = build("verification = \"certificate\"", &with_credentials)
        .expect("valid")
        .expect("built in");
    assert!(
        certificate
            .lookup(&genuine, Timestamp(0))
            .expect("a lookup")
            .cacheable
    );
    assert!(build("verification = \"api\"", &env(&[])).is_err());
    assert!(build("verification = \"maybe\"", &env(&[])).is_err());
}
