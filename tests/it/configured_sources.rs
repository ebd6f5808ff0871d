use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use wharf::verify::{Algorithm, Encoding, HmacScheme, StandardWebhooks};

use crate::support::{on_both_backends, Backend, TestApp};

on_both_backends!(
    standard_webhooks_source_verifies_dedups_and_processes,
    generic_hmac_source_takes_its_dedup_key_from_a_json_pointer,
    a_second_cartpanda_store_is_one_section_and_the_request_line_is_kept,
);

const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

async fn send_standard(
    app: &TestApp,
    id: &str,
    timestamp: i64,
    body: &str,
    secret: &str,
) -> reqwest::Response {
    let signature = StandardWebhooks::sign(secret, id, timestamp, body.as_bytes()).expect("sign");
    app.client
        .post(format!("{}/in/billing", app.base))
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body.to_owned())
        .send()
        .await
        .expect("sent")
}

async fn standard_webhooks_source_verifies_dedups_and_processes(backend: Backend) {
    let app = TestApp::builder()
        .backend(backend)
        .toml("[sources.billing]\nkind = \"standard-webhooks\"")
        .env(
            "WHARF_SOURCE_BILLING_SECRET",
            &format!("whsec_b2xk,{WHSEC}"),
        )
        .spawn()
        .await;
    let body = r#"{"type":"invoice.paid","data":{"id":"in_1"}}"#;
    let first = send_standard(&app, "msg_1", now(), body, WHSEC).await;
    assert_eq!(first.status(), 200);
    let again: Value = send_standard(&app, "msg_1", now(), body, WHSEC)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(again["duplicate"], true);
    let stale = send_standard(&app, "msg_2", now() - 3600, body, WHSEC).await;
    assert_eq!(stale.status(), 401);
    let answer: Value = stale.json().await.expect("json");
    assert_eq!(answer["error"]["code"], "timestamp_outside_tolerance");
    let forged = send_standard(
        &app,
        "msg_3",
        now(),
        body,
        "whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldY",
    )
    .await;
    assert_eq!(forged.status(), 401);

    app.run_pending().await;
    assert_eq!(app.count("SELECT COUNT(*) FROM deliveries").await, 1);
    assert_eq!(
        app.one("SELECT event_type, status FROM deliveries").await,
        [
            Some("invoice.paid".to_owned()),
            Some("processed".to_owned())
        ]
    );
}

async fn generic_hmac_source_takes_its_dedup_key_from_a_json_pointer(backend: Backend) {
    let app = TestApp::builder()
        .backend(backend)
        .toml(
            "[sources.shop]\nkind = \"hmac\"\nsecrets = [\"k1\"]\nsignature_header = \"X-Shop-Signature\"\n\
             algorithm = \"sha512\"\nencoding = \"base64\"\nprefix = \"sha512=\"\ndedup_pointer = \"/delivery/id\"\n\
             event_type_pointer = \"/topic\"",
        )
        .spawn()
        .await;
    let scheme = HmacScheme {
        algorithm: Algorithm::Sha512,
        encoding: Encoding::Base64,
        prefix: Some("sha512=".into()),
    };
    let body = r#"{"topic":"stock.low","delivery":{"id":"d-42"}}"#;
    for _ in 0..2 {
        let response = app
            .client
            .post(format!("{}/in/shop", app.base))
            .header("x-shop-signature", scheme.sign(b"k1", body.as_bytes()))
            .body(body)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200);
    }
    assert_eq!(
        app.one("SELECT dedup_key, event_type FROM deliveries")
            .await,
        [Some("d-42".to_owned()), Some("stock.low".to_owned())]
    );
}

/// A provider's section configures more than one store; the journal keeps the request line
/// (method, path, query with secrets redacted) beside the headers, as HTTP/2 pseudo-headers.
async fn a_second_cartpanda_store_is_one_section_and_the_request_line_is_kept(backend: Backend) {
    let app = TestApp::builder()
        .backend(backend)
        .toml("[sources.loja-b]\nkind = \"cartpanda\"\nsignature_header = \"X-Loja-Signature\"")
        .env("WHARF_SOURCE_LOJA_B_SECRET", crate::support::SECRET)
        .spawn()
        .await;
    let body = crate::support::sale_body("evt_b1", "B-1001", "sale.approved");
    let response = app
        .client
        .post(format!("{}/in/loja-b?api_key=k3y&ref=ads", app.base))
        .header("x-loja-signature", crate::support::sign(body.as_bytes()))
        .body(body.clone())
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let seed_route = app.post_cartpanda(body).await;
    assert_eq!(
        seed_route.status(),
        200,
        "the built-in store keeps seed 000's route"
    );
    assert_eq!(app.run_pending().await, 2);
    assert_eq!(
        app.rows("SELECT source, cartpanda_id FROM sales ORDER BY source")
            .await,
        [
            [Some("cartpanda".to_owned()), Some("B-1001".to_owned())],
            [Some("loja-b".to_owned()), Some("B-1001".to_owned())],
        ]
    );
    let headers = app
        .one("SELECT p.headers FROM deliveries d JOIN delivery_payloads p ON p.delivery_id = d.id WHERE d.source = 'loja-b'")
        .await[0]
        .clone()
        .expect("headers");
    let headers: Value = serde_json::from_str(&headers).expect("json");
    assert_eq!(headers[":method"], "POST");
    assert_eq!(headers[":path"], "/in/loja-b");
    assert_eq!(headers[":query"], "api_key=[redacted]&ref=ads");
    let get = app.get("/in/loja-b").await;
    assert_eq!(
        get.status(),
        405,
        "a source takes only the methods it declares"
    );
    let seed_get = app.get("/webhook/cartpanda").await;
    assert_eq!(seed_get.status(), 405);
}

/// Mistakes in provider sections are named at start, not found at the first delivery.
#[tokio::test]
async fn provider_sections_are_checked_at_start() {
    use std::collections::BTreeMap;
    let env = BTreeMap::new();
    for (toml, named) in [
        ("[cartpanda]\nsignature_heder = \"x\"", "cartpanda"),
        ("[stripe-ish]\nx = 1", "stripe-ish"),
        (
            "[standard-webhooks]\ntolerance_secs = 5",
            "standard-webhooks",
        ),
        ("[sources.cartpanda]\nkind = \"hmac\"", "sources.cartpanda"),
        ("[sources.a]\nkind = \"nope\"", "sources.a.kind"),
        ("[sources.a]\nkind = \"hmac\"", "sources.a.signature_header"),
    ] {
        let error = wharf::config::Config::from_toml(toml, &env)
            .err()
            .unwrap_or_else(|| panic!("{toml} is refused"));
        assert!(error.to_string().starts_with(named), "{toml}: {error}");
    }
}
