//! Seed 001 (Refract checkout messages) over HTTP, with the seed's own SQL.

use serde_json::{json, Value};

use crate::support::{on_both_backends, Backend, TestApp};

on_both_backends!(
    the_seed_message_lands_in_orders_with_every_field_right,
    the_advanced_scenarios_create_complete_and_update_orders_with_their_history,
    the_discord_embed_form_gives_the_same_order_and_answers_like_discord,
    a_message_without_order_number_is_422_on_the_seed_route_and_ignored_on_discord,
    the_token_is_required_compared_whole_and_never_stored,
    the_webhook_logs_show_raw_parsed_outcome_and_error,
);

const TOKEN: &str = "rfr-t0ken";

/// Seed 001's message, byte for byte.
const SEED_MESSAGE: &str = "Successful Checkout | Best Buy US
Product
STARLINK - Mini Kit AC Dual Band Wi-Fi System - White
Price
$299.99
Profile
Lennar #8-$48-@07
Proxy Details
Wealth Resi | http://resi-edge-pool.wealthproxies.com:5959/
Share Link
Click Here
Order Number
#BBY01-807102506907
Email
woozy_byes28@icloud.com
Image
";

const TEST_1: &str = "Successful Checkout | Store
Product
Test Product
Price
$99.99
Order Number
TEST-001
Email
test@example.com
";

const TEST_2: &str = "Successful Checkout | Store
Product
Test Product
Price
$99.99
Quantity
2
Total
$199.98
Commission
$20.00
Profile
Profile 1
Proxy Details
Proxy 1
Order Number
TEST-002
Email
test@example.com
Tracking Number
1Z999AA10123456784
Reference #
REF123
Payment Method
Credit Card
Status
shipped
";

const TEST_3: &str = "Successful Checkout | Store
Order Number
TEST-001
Status
shipped
Tracking Number
1Z999AA10123456784
";

async fn app(backend: Backend) -> TestApp {
    TestApp::builder()
        .backend(backend)
        .env("REFRACT_WEBHOOK_TOKEN", TOKEN)
        .spawn()
        .await
}

async fn post_text(app: &TestApp, message: &str) -> reqwest::Response {
    app.client
        .post(format!("{}/api/v2/webhooks/orders?token={TOKEN}", app.base))
        .header("content-type", "text/plain")
        .body(message.to_owned())
        .send()
        .await
        .expect("sent")
}

/// The seed message as a checkout bot posts it to a Discord webhook URL.
fn discord_body() -> Value {
    json!({
        "username": "Refract",
        "embeds": [{
            "title": "Successful Checkout | Best Buy US",
            "color": 5814783,
            "fields": [
                {"name": "Product", "value": "STARLINK - Mini Kit AC Dual Band Wi-Fi System - White"},
                {"name": "Price", "value": "$299.99", "inline": true},
                {"name": "Profile", "value": "||Lennar #8-$48-@07||", "inline": true},
                {"name": "Proxy Details", "value": "Wealth Resi | http://resi-edge-pool.wealthproxies.com:5959/"},
                {"name": "Share Link", "value": "[Click Here](https://example.com/share)"},
                {"name": "Order Number", "value": "||#BBY01-807102506907||"},
                {"name": "Email", "value": "||woozy_byes28@icloud.com||"}
            ],
            "footer": {"text": "Refract"},
            "timestamp": "2026-11-24T10:00:00.000Z"
        }]
    })
}

const SEED_QUERY: &str = "SELECT order_number, product, price, email, status, created_at \
                          FROM orders ORDER BY created_at DESC LIMIT 10";

async fn the_seed_message_lands_in_orders_with_every_field_right(backend: Backend) {
    let app = app(backend).await;
    let response = post_text(&app, SEED_MESSAGE).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["success"], true);
    assert_eq!(body["order_number"], "BBY01-807102506907");
    assert_eq!(app.run_pending().await, 1);
    let rows = app.rows(SEED_QUERY).await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row[0].as_deref(), Some("BBY01-807102506907"));
    assert_eq!(
        row[1].as_deref(),
        Some("STARLINK - Mini Kit AC Dual Band Wi-Fi System - White")
    );
    assert_eq!(row[2].as_deref(), Some("299.99"));
    assert_eq!(row[3].as_deref(), Some("woozy_byes28@icloud.com"));
    assert_eq!(row[4].as_deref(), Some("verified"));
    assert!(row[5].is_some(), "created_at is set");
    assert_eq!(
        app.one(
            "SELECT profile, proxy_list, quantity, total, currency, store, CASE WHEN order_time IS NULL THEN 0 ELSE 1 END \
             FROM orders"
        )
        .await,
        [
            Some("Lennar #8-$48-@07".to_owned()),
            Some("Wealth Resi | http://resi-edge-pool.wealthproxies.com:5959/".to_owned()),
            Some("1".to_owned()),
            Some("299.99".to_owned()),
            Some("USD".to_owned()),
            Some("Best Buy US".to_owned()),
            Some("1".to_owned()),
        ]
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM orders WHERE price > 200")
            .await,
        1,
        "prices compare as numbers"
    );
    let again = post_text(&app, SEED_MESSAGE).await;
    let again: Value = again.json().await.expect("json");
    assert_eq!(
        again["duplicate"], true,
        "a byte-identical resend is one delivery"
    );
}

async fn the_advanced_scenarios_create_complete_and_update_orders_with_their_history(
    backend: Backend,
) {
    let app = app(backend).await;
    for message in [TEST_1, TEST_2] {
        assert_eq!(post_text(&app, message).await.status(), 200);
    }
    assert_eq!(app.run_pending().await, 2);
    // SQLite's numeric affinity keeps 20.00 as the integer 20; PostgreSQL's NUMERIC keeps the
    // scale. Both compare and sum as the same number.
    let twenty = if backend == Backend::Sqlite {
        "20"
    } else {
        "20.00"
    };
    assert_eq!(
        app.one(
            "SELECT quantity, total, commission, tracking_number, reference_number, \
             payment_method, status, CASE WHEN shipped_date IS NULL THEN 0 ELSE 1 END FROM orders \
             WHERE order_number = 'TEST-002'"
        )
        .await,
        [
            Some("2".to_owned()),
            Some("199.98".to_owned()),
            Some(twenty.to_owned()),
            Some("1Z999AA10123456784".to_owned()),
            Some("REF123".to_owned()),
            Some("Credit Card".to_owned()),
            Some("shipped".to_owned()),
            Some("1".to_owned()),
        ]
    );
    let first_id = app
        .one("SELECT id FROM orders WHERE order_number = 'TEST-001'")
        .await[0]
        .clone()
        .expect("id");
    assert_eq!(post_text(&app, TEST_3).await.status(), 200);
    assert_eq!(app.run_pending().await, 1);
    assert_eq!(
        app.one(
            "SELECT product, price, email, status, tracking_number FROM orders \
             WHERE order_number = 'TEST-001'"
        )
        .await,
        [
            Some("Test Product".to_owned()),
            Some("99.99".to_owned()),
            Some("test@example.com".to_owned()),
            Some("shipped".to_owned()),
            Some("1Z999AA10123456784".to_owned()),
        ],
        "Test 3 updates only the fields it carries"
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM orders").await,
        2,
        "the same order number is one order"
    );
    let history = app
        .rows(&format!(
            "SELECT field, old_value, new_value FROM order_events WHERE order_id = {first_id} \
             AND delivery_id = (SELECT MAX(delivery_id) FROM order_events) ORDER BY field"
        ))
        .await;
    assert_eq!(
        history,
        [
            vec![
                Some("status".to_owned()),
                Some("verified".to_owned()),
                Some("shipped".to_owned())
            ],
            vec![
                Some("tracking_number".to_owned()),
                None,
                Some("1Z999AA10123456784".to_owned())
            ],
        ]
    );
    assert!(
        app.count(&format!(
            "SELECT COUNT(*) FROM order_events WHERE order_id = {first_id}"
        ))
        .await
            > 2,
        "the creation is in the history too"
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM all_orders WHERE source = 'refract'")
            .await,
        2,
        "the orders view across sources shows them"
    );
}

async fn the_discord_embed_form_gives_the_same_order_and_answers_like_discord(backend: Backend) {
    let app = app(backend).await;
    let response = app
        .client
        .post(format!("{}/api/webhooks/refract/{TOKEN}", app.base))
        .json(&discord_body())
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 204, "Discord answers 204 without ?wait");
    let mut with_wait = discord_body();
    with_wait["embeds"][0]["fields"][5]["value"] = json!("#BBY01-000000000002");
    let waited = app
        .client
        .post(format!(
            "{}/api/webhooks/refract/{TOKEN}?wait=true",
            app.base
        ))
        .json(&with_wait)
        .send()
        .await
        .expect("sent");
    assert_eq!(waited.status(), 200);
    let message: Value = waited.json().await.expect("json");
    assert!(message["id"].is_string(), "{message}");
    assert_eq!(
        message["embeds"][0]["title"],
        "Successful Checkout | Best Buy US"
    );
    assert_eq!(app.run_pending().await, 2);
    assert_eq!(
        app.one(
            "SELECT product, price, email, status, profile, share_link FROM orders \
             WHERE order_number = 'BBY01-807102506907'"
        )
        .await,
        [
            Some("STARLINK - Mini Kit AC Dual Band Wi-Fi System - White".to_owned()),
            Some("299.99".to_owned()),
            Some("woozy_byes28@icloud.com".to_owned()),
            Some("verified".to_owned()),
            Some("Lennar #8-$48-@07".to_owned()),
            Some("https://example.com/share".to_owned()),
        ]
    );
    let headers = app
        .one(
            "SELECT p.headers FROM deliveries d JOIN delivery_payloads p \
             ON p.delivery_id = d.id ORDER BY d.id LIMIT 1",
        )
        .await[0]
        .clone()
        .expect("headers");
    assert!(
        !headers.contains(TOKEN),
        "the token in the path is not stored: {headers}"
    );
    assert!(
        headers.contains("/api/webhooks/refract/[redacted]"),
        "{headers}"
    );
}

async fn a_message_without_order_number_is_422_on_the_seed_route_and_ignored_on_discord(
    backend: Backend,
) {
    let app = app(backend).await;
    let response = post_text(&app, "Successful Checkout | Store\nProduct\nThing\n").await;
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.expect("json");
    let detail = body["detail"].as_str().expect("detail");
    assert!(
        detail.starts_with("Could not parse webhook content"),
        "{detail}"
    );
    assert_eq!(
        app.one("SELECT status, last_error FROM deliveries").await[0].as_deref(),
        Some("failed"),
        "kept, failed and visible"
    );
    let test_notification = app
        .client
        .post(format!("{}/api/webhooks/refract/{TOKEN}", app.base))
        .json(&json!({"embeds": [{"title": "Test Notification", "description": "It works!"}]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(test_notification.status(), 204);
    assert_eq!(app.run_pending().await, 1);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM deliveries WHERE status = 'ignored'")
            .await,
        1
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM orders").await, 0);
}

async fn the_token_is_required_compared_whole_and_never_stored(backend: Backend) {
    let app = app(backend).await;
    let url = format!("{}/api/v2/webhooks/orders", app.base);
    let without = app
        .client
        .post(&url)
        .body(TEST_1)
        .send()
        .await
        .expect("sent");
    assert_eq!(without.status(), 401);
    let wrong = app
        .client
        .post(format!("{url}?token=rfr-t0ke"))
        .body(TEST_1)
        .send()
        .await
        .expect("sent");
    assert_eq!(wrong.status(), 401);
    let by_header = app
        .client
        .post(&url)
        .header("x-wharf-token", TOKEN)
        .body(TEST_1)
        .send()
        .await
        .expect("sent");
    assert_eq!(by_header.status(), 200);
    assert_eq!(app.count("SELECT COUNT(*) FROM deliveries").await, 1);
    let stored = app.one("SELECT p.headers FROM delivery_payloads p").await[0]
        .clone()
        .expect("headers");
    assert!(!stored.contains(TOKEN), "{stored}");
    // A token in the Discord route's path is redacted from the rejection log too: a wrong
    // guess is often the real token with a typo.
    let guessed = app
        .client
        .post(format!("{}/api/webhooks/refract/rfr-s3cret-typo", app.base))
        .header("content-type", "application/json")
        .body(r#"{"content":"x"}"#)
        .send()
        .await
        .expect("sent");
    assert_eq!(guessed.status(), 401);
    let rejections = app
        .admin_get("/api/sources/refract/rejections")
        .await
        .text()
        .await
        .expect("rejections");
    assert!(
        rejections.contains("/api/webhooks/refract/[redacted]"),
        "{rejections}"
    );
    assert!(!rejections.contains("rfr-s3cret-typo"), "{rejections}");
    let unconfigured = TestApp::builder()
        .backend(backend)
        .without_env("REFRACT_WEBHOOK_TOKEN")
        .spawn()
        .await;
    let refused = post_text(&unconfigured, TEST_1).await;
    assert_eq!(
        refused.status(),
        401,
        "no token configured: refuses traffic"
    );
}

async fn the_webhook_logs_show_raw_parsed_outcome_and_error(backend: Backend) {
    let app = app(backend).await;
    assert_eq!(post_text(&app, TEST_1).await.status(), 200);
    assert_eq!(
        post_text(&app, "Order Update\nTracking\n1Z\n")
            .await
            .status(),
        422
    );
    app.run_pending().await;
    let unauthenticated = app.get("/api/v2/webhooks/logs?limit=10").await;
    assert_eq!(
        unauthenticated.status(),
        401,
        "raw messages hold customers' emails"
    );
    let logs: Value = app
        .admin_get("/api/v2/webhooks/logs?limit=10")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(logs["count"], 2);
    let newest = &logs["logs"][0];
    assert_eq!(newest["outcome"], "failed");
    assert!(newest["error"]
        .as_str()
        .is_some_and(|error| error.contains("Could not parse webhook content")));
    assert_eq!(newest["raw_message"], "Order Update\nTracking\n1Z\n");
    let oldest = &logs["logs"][1];
    assert_eq!(oldest["outcome"], "processed");
    assert_eq!(oldest["parsed"]["order_number"], "TEST-001");
    assert_eq!(oldest["parsed"]["price"], "99.99 USD");
    assert_eq!(oldest["raw_message"], TEST_1);
    let limited: Value = app
        .admin_get("/api/v2/webhooks/logs?limit=1")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(limited["count"], 1);
}
