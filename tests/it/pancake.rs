//! Seed 002 end to end: Pancake and Pancake POS webhooks on the seed's URLs, authenticated by
//! API key, answered in the seed's formats, and written into the seed's collections.

use serde_json::{json, Value};
use wharf::verify::{Algorithm, Encoding, HmacScheme};

use crate::support::{on_both_backends, Backend, TestApp, TestAppBuilder};

on_both_backends!(
    the_seed_curl_examples_are_answered_as_the_seed_shows,
    every_pancake_event_type_lands_in_its_collection,
    every_pos_event_type_lands_in_its_collection,
    a_body_that_is_not_json_answers_val_002_and_a_missing_field_val_001,
    replies_speak_english_when_configured,
    a_missing_or_wrong_api_key_is_401_and_stores_nothing,
    the_api_key_may_come_in_the_query_and_is_never_stored,
    a_source_without_an_api_key_refuses_traffic,
    a_configured_signing_secret_requires_the_body_signature,
    an_older_conversation_version_does_not_overwrite_a_newer_one,
    a_bare_pos_order_keeps_its_status_and_a_history_of_its_steps,
    inventory_updates_set_a_variations_stock,
    an_unknown_event_type_is_stored_acknowledged_and_ignored,
    a_duplicate_is_acknowledged_and_stored_once,
);

const PANCAKE_KEY: &str = "pk-test-4f1c";
const POS_KEY: &str = "pos-test-9a2e";

const PANCAKE_URL: &str = "/api/v1/pancake/webhook";
const POS_URL: &str = "/api/v1/pancake-pos/webhook";

fn builder(backend: Backend) -> TestAppBuilder {
    TestApp::builder()
        .backend(backend)
        .env("PANCAKE_API_KEY", PANCAKE_KEY)
        .env("PANCAKE_POS_API_KEY", POS_KEY)
}

async fn spawn(backend: Backend) -> TestApp {
    builder(backend).spawn().await
}

/// Posts `body` to `path` with the key of the source the path belongs to, as the seed's setup
/// adds it (an `X-API-Key` request header).
async fn post(app: &TestApp, path: &str, body: &str) -> reqwest::Response {
    let key = if path.starts_with(POS_URL) {
        POS_KEY
    } else {
        PANCAKE_KEY
    };
    app.client
        .post(format!("{}{path}", app.base))
        .header("content-type", "application/json")
        .header("x-api-key", key)
        .body(body.to_owned())
        .send()
        .await
        .expect("request sent")
}

/// Status and body text.
async fn answer(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

fn seed_success(event_type: &str, owner: &str) -> String {
    format!(
        r#"{{"code":200,"message":"Webhook đã được nhận và xử lý thành công","data":{{"eventType":"{event_type}",{owner}}},"status":"success"}}"#
    )
}

/// A JSON column, parsed (JSONB text on PostgreSQL, text on SQLite).
async fn document(app: &TestApp, sql: &str) -> Value {
    let row = app.one(sql).await;
    let text = row[0].clone().expect("a document");
    serde_json::from_str(&text).expect("the document is JSON")
}

/// Text of each row's only column.
async fn column(app: &TestApp, sql: &str) -> Vec<Option<String>> {
    app.rows(sql)
        .await
        .into_iter()
        .map(|mut row| row.remove(0))
        .collect()
}

fn some(values: &[&str]) -> Vec<Option<String>> {
    values
        .iter()
        .map(|value| Some((*value).to_owned()))
        .collect()
}

/// Seed 002's curl example for the Pancake webhook, with the shell's whitespace.
const SEED_CURL_PANCAKE: &str = r#"{
    "payload": {
      "eventType": "conversation_updated",
      "pageId": "123456789",
      "data": {},
      "timestamp": 1234567890
    }
  }"#;

/// Seed 002's curl example for the Pancake POS webhook.
const SEED_CURL_POS: &str = r#"{
    "payload": {
      "eventType": "order_created",
      "shopId": 123,
      "data": {},
      "timestamp": 1234567890
    }
  }"#;

async fn the_seed_curl_examples_are_answered_as_the_seed_shows(backend: Backend) {
    let app = spawn(backend).await;
    assert_eq!(
        answer(post(&app, PANCAKE_URL, SEED_CURL_PANCAKE).await).await,
        (
            200,
            seed_success("conversation_updated", r#""pageId":"123456789""#)
        )
    );
    assert_eq!(
        answer(post(&app, POS_URL, SEED_CURL_POS).await).await,
        (200, seed_success("order_created", r#""shopId":123"#)),
        "the shop id is echoed as sent, a number"
    );
    assert_eq!(app.run_pending().await, 2);
    // `"data": {}` names no object: stored and acknowledged, nothing to write.
    assert_eq!(
        app.rows("SELECT source, event_type, status, last_error FROM deliveries ORDER BY id")
            .await,
        [
            [
                Some("pancake".to_owned()),
                Some("conversation_updated".to_owned()),
                Some("ignored".to_owned()),
                Some("the conversation_updated data names no object id".to_owned()),
            ],
            [
                Some("pancake-pos".to_owned()),
                Some("order_created".to_owned()),
                Some("ignored".to_owned()),
                Some("the order_created data names no object id".to_owned()),
            ],
        ]
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM fb_conversation").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM pc_pos_order").await, 0);
}

async fn every_pancake_event_type_lands_in_its_collection(backend: Backend) {
    let app = spawn(backend).await;
    let table = [
        (
            "conversation_updated",
            "conversation",
            "fb_conversation",
            "conversation_id",
        ),
        ("message_received", "message", "fb_message", "message_id"),
        ("order_created", "order", "pc_order", "order_id"),
        ("customer_updated", "customer", "fb_customer", "customer_id"),
    ];
    for (event_type, object, _, _) in table {
        let body = json!({
            "payload": {
                "eventType": event_type,
                "pageId": "1122334455",
                "data": {object: {"id": format!("{object}-1"), "name": "Nguyễn Văn A"}},
                "timestamp": 1_731_656_657,
            }
        });
        assert_eq!(
            answer(post(&app, PANCAKE_URL, &body.to_string()).await).await,
            (200, seed_success(event_type, r#""pageId":"1122334455""#))
        );
    }
    // order_updated updates the order order_created stored.
    let updated = json!({
        "payload": {
            "eventType": "order_updated",
            "pageId": "1122334455",
            "data": {"order": {"id": "order-1", "status": 1, "note": "gọi trước khi giao"}},
            "timestamp": 1_731_656_700,
        }
    });
    assert_eq!(app.run_pending().await, 4);
    assert_eq!(
        post(&app, PANCAKE_URL, &updated.to_string()).await.status(),
        200
    );
    assert_eq!(app.run_pending().await, 1);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM deliveries WHERE status = 'processed'")
            .await,
        5
    );
    for (_, object, collection, id_column) in table {
        assert_eq!(
            app.rows(&format!(
                "SELECT source, page_id, {id_column} FROM {collection}"
            ))
            .await,
            [some(&["pancake", "1122334455", &format!("{object}-1")])],
            "{collection}"
        );
    }
    let order = document(&app, "SELECT document FROM pc_order").await;
    assert_eq!(
        order,
        json!({"id": "order-1", "name": "Nguyễn Văn A", "status": 1, "note": "gọi trước khi giao"}),
        "an update merges its keys into the stored order"
    );
    let row = app
        .one("SELECT id, created_at, updated_at FROM pc_order")
        .await;
    assert_eq!(row[0].as_deref().map(str::len), Some(36), "id is a UUID");
    assert!(row[1].is_some() && row[2].is_some());
}

async fn every_pos_event_type_lands_in_its_collection(backend: Backend) {
    let app = spawn(backend).await;
    let events = [
        (
            "order_created",
            "order",
            json!({"id": 1001, "status": 0, "total_price": 280000,
            "updated_at": "2024-11-15T07:00:00"}),
        ),
        (
            "order_updated",
            "order",
            json!({"id": 1001, "status": 0, "note": "giao giờ hành chính",
            "updated_at": "2024-11-15T07:10:00"}),
        ),
        (
            "order_status_changed",
            "order",
            json!({"id": 1001, "status": 1,
            "updated_at": "2024-11-15T07:20:00"}),
        ),
        (
            "product_created",
            "product",
            json!({"id": "3b98a639-9d40-4faa-a692-6662f20e128d",
            "name": "Áo sơ mi", "updated_at": "2024-11-15T07:00:00"}),
        ),
        (
            "product_updated",
            "product",
            json!({"id": "3b98a639-9d40-4faa-a692-6662f20e128d",
            "name": "Áo sơ mi trắng", "updated_at": "2024-11-15T08:00:00"}),
        ),
        (
            "customer_created",
            "customer",
            json!({"id": "6a00ea1f-af2c-4e3e-8f96-46ed462e2243",
            "name": "Trần Thị B", "updated_at": "2024-11-15T07:00:00"}),
        ),
        (
            "customer_updated",
            "customer",
            json!({"id": "6a00ea1f-af2c-4e3e-8f96-46ed462e2243",
            "phone_numbers": ["0912345678"], "updated_at": "2024-11-15T09:00:00"}),
        ),
        (
            "inventory_updated",
            "variation",
            json!({"variation_id": "e190db2b-1163",
            "remain_quantity": 7, "updated_at": "2024-11-15T07:00:00"}),
        ),
    ];
    for (event_type, object, data) in &events {
        let body = json!({
            "payload": {"eventType": event_type, "shopId": 26290, "data": {*object: data},
                        "timestamp": 1_731_656_657}
        });
        assert_eq!(
            answer(post(&app, POS_URL, &body.to_string()).await).await,
            (200, seed_success(event_type, r#""shopId":26290"#))
        );
        // One at a time: deliveries processed together may complete in any order, and an
        // update older than the stored one is dropped whole.
        assert_eq!(app.run_pending().await, 1);
    }
    assert_eq!(
        app.count("SELECT COUNT(*) FROM deliveries WHERE status = 'processed'")
            .await,
        8
    );
    assert_eq!(
        app.rows(
            "SELECT source, shop_id, order_id, status_code, status, total_price FROM pc_pos_order"
        )
        .await,
        [some(&[
            "pancake-pos",
            "26290",
            "1001",
            "1",
            "confirmed",
            "280000"
        ])]
    );
    assert_eq!(
        document(&app, "SELECT document FROM pc_pos_order").await,
        json!({"id": 1001, "status": 1, "total_price": 280000,
               "note": "giao giờ hành chính", "updated_at": "2024-11-15T07:20:00"})
    );
    assert_eq!(
        column(
            &app,
            "SELECT status FROM pc_pos_order_status_history ORDER BY changed_at"
        )
        .await,
        some(&["confirmed"]),
        "order_status_changed adds a step; created and updated do not"
    );
    assert_eq!(
        app.rows("SELECT shop_id, product_id FROM pc_pos_product")
            .await,
        [some(&["26290", "3b98a639-9d40-4faa-a692-6662f20e128d"])]
    );
    assert_eq!(
        document(&app, "SELECT document FROM pc_pos_product").await["name"],
        "Áo sơ mi trắng"
    );
    let customer = document(&app, "SELECT document FROM pc_pos_customer").await;
    assert_eq!(
        (&customer["name"], &customer["phone_numbers"][0]),
        (&json!("Trần Thị B"), &json!("0912345678"))
    );
    assert_eq!(
        app.rows("SELECT shop_id, variation_id, remain_quantity FROM pc_pos_variation")
            .await,
        [some(&["26290", "e190db2b-1163", "7"])]
    );
}

async fn a_body_that_is_not_json_answers_val_002_and_a_missing_field_val_001(backend: Backend) {
    let app = spawn(backend).await;
    let val_002 = r#"{"code":"VAL_002","message":"Dữ liệu gửi lên không đúng định dạng JSON","status":"error"}"#;
    for (path, body) in [
        (PANCAKE_URL, r#"{"payload": {"eventType": "#),
        (PANCAKE_URL, "not json"),
        (PANCAKE_URL, ""),
        (POS_URL, "{oops"),
        (POS_URL, r#"{"a":1,"a":2}"#),
    ] {
        assert_eq!(
            answer(post(&app, path, body).await).await,
            (400, val_002.to_owned()),
            "{path} {body:?}"
        );
    }
    assert_eq!(
        answer(
            post(
                &app,
                PANCAKE_URL,
                r#"{"payload":{"eventType":"order_created","data":{}}}"#
            )
            .await
        )
        .await,
        (
            400,
            r#"{"code":"VAL_001","message":"Dữ liệu gửi lên thiếu hoặc sai trường bắt buộc: payload.pageId","status":"error"}"#
                .to_owned()
        )
    );
    let bare_without_kind = answer(post(&app, POS_URL, r#"{"id":5,"shop_id":7}"#).await).await;
    assert_eq!(bare_without_kind.0, 400);
    let body: Value = serde_json::from_str(&bare_without_kind.1).expect("json");
    assert_eq!(body["code"], "VAL_001");
    // Genuine but unreadable deliveries are kept, failed, with Wharf's reason.
    app.run_pending().await;
    let errors = column(
        &app,
        "SELECT last_error FROM deliveries WHERE status = 'failed' ORDER BY id",
    )
    .await;
    assert_eq!(errors.len(), 7, "{errors:?}");
    assert_eq!(
        errors[5].as_deref(),
        Some("VAL_001: the payload has no payload.pageId")
    );
}

async fn replies_speak_english_when_configured(backend: Backend) {
    let app = builder(backend)
        .toml("[pancake]\nlanguage = \"en\"")
        .spawn()
        .await;
    assert_eq!(
        answer(post(&app, PANCAKE_URL, SEED_CURL_PANCAKE).await).await,
        (
            200,
            r#"{"code":200,"message":"Webhook received and processed successfully","data":{"eventType":"conversation_updated","pageId":"123456789"},"status":"success"}"#
                .to_owned()
        )
    );
    assert_eq!(
        answer(post(&app, PANCAKE_URL, "{").await).await,
        (
            400,
            r#"{"code":"VAL_002","message":"The request body is not valid JSON","status":"error"}"#
                .to_owned()
        )
    );
    // Only the section that says so: POS still answers in Vietnamese.
    assert_eq!(
        answer(post(&app, POS_URL, SEED_CURL_POS).await).await,
        (200, seed_success("order_created", r#""shopId":123"#))
    );
}

async fn a_missing_or_wrong_api_key_is_401_and_stores_nothing(backend: Backend) {
    let app = spawn(backend).await;
    let attempts = [
        (PANCAKE_URL, None, "missing_token"),
        (PANCAKE_URL, Some("pk-wrong"), "wrong_token"),
        (PANCAKE_URL, Some(POS_KEY), "wrong_token"),
        (POS_URL, Some(PANCAKE_KEY), "wrong_token"),
        (POS_URL, Some(""), "missing_token"),
    ];
    for (path, key, code) in attempts {
        let body = if path == POS_URL {
            SEED_CURL_POS
        } else {
            SEED_CURL_PANCAKE
        };
        let mut request = app.client.post(format!("{}{path}", app.base)).body(body);
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        let response = request.send().await.expect("sent");
        assert_eq!(response.status(), 401, "{path} {key:?}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["code"], code, "{path} {key:?}");
        assert_eq!(body["status"], "error");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    app.run_pending().await;
    assert_eq!(app.count("SELECT COUNT(*) FROM deliveries").await, 0);
    let log: Value = app
        .admin_get("/api/sources/pancake/rejections")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(log["total"], 3);
    let shown = log.to_string();
    assert!(
        !shown.contains("pk-wrong") && !shown.contains(POS_KEY),
        "keys are redacted from the rejection log: {shown}"
    );
}

async fn the_api_key_may_come_in_the_query_and_is_never_stored(backend: Backend) {
    let app = spawn(backend).await;
    let response = app
        .client
        .post(format!(
            "{}{PANCAKE_URL}?api_key={PANCAKE_KEY}&page=1",
            app.base
        ))
        .body(SEED_CURL_PANCAKE)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let wrong = app
        .client
        .post(format!("{}{POS_URL}?api_key=pk-nope", app.base))
        .body(SEED_CURL_POS)
        .send()
        .await
        .expect("sent");
    assert_eq!(wrong.status(), 401);
    // A header key is stored redacted too.
    assert_eq!(post(&app, POS_URL, SEED_CURL_POS).await.status(), 200);
    let stored: Vec<Value> = column(
        &app,
        "SELECT headers FROM delivery_payloads ORDER BY delivery_id",
    )
    .await
    .into_iter()
    .map(|headers| serde_json::from_str(&headers.expect("headers")).expect("json"))
    .collect();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0][":path"], PANCAKE_URL);
    assert_eq!(stored[0][":query"], "api_key=[redacted]&page=1");
    assert_eq!(stored[1]["x-api-key"], "[redacted]");
    for headers in &stored {
        let text = headers.to_string();
        assert!(
            !text.contains(PANCAKE_KEY) && !text.contains(POS_KEY),
            "{text}"
        );
    }
    let log: Value = app
        .admin_get("/api/sources/pancake-pos/rejections")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(log["rejections"][0]["query"], "api_key=[redacted]");
}

async fn a_source_without_an_api_key_refuses_traffic(backend: Backend) {
    let app = TestApp::builder().backend(backend).spawn().await;
    for (path, body) in [(PANCAKE_URL, SEED_CURL_PANCAKE), (POS_URL, SEED_CURL_POS)] {
        let response = app
            .client
            .post(format!("{}{path}", app.base))
            .header("x-api-key", "anything")
            .body(body)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 401, "{path}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["code"], "no_secret_configured");
        assert_eq!(body["status"], "error");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM deliveries").await, 0);
}

async fn a_configured_signing_secret_requires_the_body_signature(backend: Backend) {
    let secret = "relay-signing-secret";
    let app = builder(backend)
        .env("PANCAKE_WEBHOOK_SECRET", secret)
        .spawn()
        .await;
    assert_eq!(
        answer(post(&app, PANCAKE_URL, SEED_CURL_PANCAKE).await)
            .await
            .0,
        401,
        "the API key alone is not enough"
    );
    let scheme = HmacScheme {
        algorithm: Algorithm::Sha256,
        encoding: Encoding::Hex,
        prefix: Some("sha256=".to_owned()),
    };
    let signature = scheme.sign(secret.as_bytes(), SEED_CURL_PANCAKE.as_bytes());
    let forged = scheme.sign(secret.as_bytes(), b"another body");
    let send = |signature: String| {
        app.client
            .post(format!("{}{PANCAKE_URL}", app.base))
            .header("x-api-key", PANCAKE_KEY)
            .header("x-pancake-signature", signature)
            .body(SEED_CURL_PANCAKE)
            .send()
    };
    let forged = send(forged).await.expect("sent");
    assert_eq!(forged.status(), 401);
    let body: Value = forged.json().await.expect("json");
    assert_eq!(body["code"], "signature_mismatch");
    assert_eq!(send(signature).await.expect("sent").status(), 200);
    // POS has its own secret, unset here: its API key is enough.
    assert_eq!(post(&app, POS_URL, SEED_CURL_POS).await.status(), 200);
    assert_eq!(app.count("SELECT COUNT(*) FROM deliveries").await, 2);
}

/// Pancake's own layout: a conversation event, `request_id` the same on every retry.
fn conversation(request_id: &str, version: u64, snippet: &str) -> String {
    json!({
        "page_id": "1122334455",
        "event_type": "conversation",
        "request_id": request_id,
        "timestamp": 1_773_020_758,
        "data": {"conversation": {
            "id": "1122334455_998877",
            "version": version,
            "snippet": snippet,
            "tags": [version],
        }}
    })
    .to_string()
}

async fn an_older_conversation_version_does_not_overwrite_a_newer_one(backend: Backend) {
    let app = spawn(backend).await;
    assert_eq!(
        answer(post(&app, PANCAKE_URL, &conversation("req-1", 5, "version five")).await).await,
        (
            200,
            seed_success("conversation", r#""pageId":"1122334455""#)
        ),
        "Pancake's own layout is answered like the seed's"
    );
    app.run_pending().await;
    let updated_at = column(&app, "SELECT updated_at FROM fb_conversation").await;
    for (request_id, version, snippet) in [
        ("req-1", 5, "a retry of the same request"),
        ("req-2", 3, "version three"),
        ("req-3", 5, "version five again"),
    ] {
        let body = conversation(request_id, version, snippet);
        assert_eq!(post(&app, PANCAKE_URL, &body).await.status(), 200);
    }
    assert_eq!(app.run_pending().await, 2, "the retry was a duplicate");
    assert_eq!(
        app.rows("SELECT version, conversation_id FROM fb_conversation")
            .await,
        [some(&["5", "1122334455_998877"])]
    );
    assert_eq!(
        document(&app, "SELECT document FROM fb_conversation").await["snippet"],
        "version five",
        "a late or repeated version changes nothing"
    );
    assert_eq!(
        column(&app, "SELECT updated_at FROM fb_conversation").await,
        updated_at,
        "nor is the row rewritten"
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM deliveries WHERE status = 'processed'")
            .await,
        3,
        "the stale deliveries are processed, not failed"
    );
    let newer = conversation("req-4", 6, "version six");
    assert_eq!(post(&app, PANCAKE_URL, &newer).await.status(), 200);
    app.run_pending().await;
    let stored = document(&app, "SELECT document FROM fb_conversation").await;
    assert_eq!(
        (&stored["snippet"], &stored["version"]),
        (&json!("version six"), &json!(6))
    );
    assert_eq!(
        column(&app, "SELECT version FROM fb_conversation").await,
        some(&["6"])
    );
    assert_eq!(
        column(&app, "SELECT event_id FROM deliveries ORDER BY id").await,
        some(&["req-1", "req-2", "req-3", "req-4"]),
        "Pancake's request_id is the event id"
    );
}

/// A Pancake POS order as its webhook posts it to the orders route (trimmed).
fn pos_order(status: i64, updated_at: &str, note: &str) -> String {
    json!({
        "id": 1234,
        "system_id": 262_900_001_234_u64,
        "shop_id": 26290,
        "status": status,
        "inserted_at": "2024-11-14T03:00:00.000000",
        "updated_at": updated_at,
        "bill_full_name": "Nguyễn Văn A",
        "note": note,
        "items": [{"id": 1, "variation_id": "e190db2b", "quantity": 2, "retail_price": 140000}],
        "total_price": 280000,
        "cod": 300000,
    })
    .to_string()
}

async fn a_bare_pos_order_keeps_its_status_and_a_history_of_its_steps(backend: Backend) {
    let app = spawn(backend).await;
    let orders = format!("{POS_URL}/orders");
    let deliveries = [
        pos_order(0, "2024-11-14T03:00:00", ""),
        pos_order(1, "2024-11-14T05:12:00", ""),
        // Same status, another edit: no new step.
        pos_order(1, "2024-11-14T06:00:00", "gọi trước khi giao"),
        pos_order(2, "2024-11-15T07:44:17.123456", "gọi trước khi giao"),
    ];
    for body in &deliveries {
        assert_eq!(
            answer(post(&app, &orders, body).await).await,
            (200, seed_success("orders", r#""shopId":26290"#))
        );
        app.run_pending().await;
    }
    // A late delivery: older than what is stored, so the order keeps "shipped", but the
    // step it reports still happened.
    assert_eq!(
        post(&app, &orders, &pos_order(9, "2024-11-15T01:00:00", "late"))
            .await
            .status(),
        200
    );
    app.run_pending().await;
    assert_eq!(
        app.rows("SELECT shop_id, order_id, status_code, status, total_price FROM pc_pos_order")
            .await,
        [some(&["26290", "1234", "2", "shipped", "280000"])]
    );
    let order = document(&app, "SELECT document FROM pc_pos_order").await;
    assert_eq!(
        (&order["note"], &order["system_id"]),
        (&json!("gọi trước khi giao"), &json!(262_900_001_234_u64))
    );
    assert_eq!(
        app.rows(
            "SELECT status_code, status, source, shop_id, order_id \
             FROM pc_pos_order_status_history ORDER BY changed_at"
        )
        .await,
        [
            some(&["0", "new", "pancake-pos", "26290", "1234"]),
            some(&["1", "confirmed", "pancake-pos", "26290", "1234"]),
            some(&["9", "waiting_pickup", "pancake-pos", "26290", "1234"]),
            some(&["2", "shipped", "pancake-pos", "26290", "1234"]),
        ]
    );
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM deliveries WHERE status = 'processed' AND event_type = 'orders'"
        )
        .await,
        5
    );
    assert_eq!(
        app.rows(
            "SELECT source, external_id, amount, currency, status FROM all_orders \
             WHERE source = 'pancake-pos'"
        )
        .await,
        [some(&[
            "pancake-pos",
            "26290:1234",
            "280000",
            "VND",
            "shipped"
        ])],
        "the orders view across sources shows POS orders"
    );
}

/// The variation's `remain_quantity` and `warehouse_stock`.
async fn stock(app: &TestApp) -> (Option<String>, Value) {
    let row = app
        .one("SELECT remain_quantity, warehouse_stock FROM pc_pos_variation")
        .await;
    let warehouses = row[1].as_deref().map_or(Value::Null, |text| {
        serde_json::from_str(text).expect("json")
    });
    (row[0].clone(), warehouses)
}

async fn inventory_updates_set_a_variations_stock(backend: Backend) {
    let app = spawn(backend).await;
    let variation = json!({
        "id": "e190db2b-1163-4cc3-b956-7a9528fbf5ef",
        "product_id": "3b98a639",
        "retail_price": 140000,
        "remain_quantity": 30,
        "variations_warehouses": [
            {"warehouse_id": "a41b5d73", "remain_quantity": 20},
            {"warehouse_id": "c52e67ad", "remain_quantity": 10},
        ],
        "updated_at": "2026-03-09T01:45:58.013616",
    });
    assert_eq!(
        answer(
            post(
                &app,
                &format!("{POS_URL}/variations"),
                &variation.to_string()
            )
            .await
        )
        .await,
        (200, seed_success("variations", r#""shopId":null"#)),
        "a bare variation names no shop"
    );
    app.run_pending().await;
    assert_eq!(
        stock(&app).await,
        (
            Some("30".to_owned()),
            json!({"a41b5d73": 20, "c52e67ad": 10})
        )
    );
    // One warehouse sold 3: the total is the sum of the warehouses known.
    let sold = json!({"payload": {"eventType": "inventory_updated", "shopId": 26290,
        "timestamp": 1_773_030_000,
        "data": {"variation_id": "e190db2b-1163-4cc3-b956-7a9528fbf5ef",
                 "variations_warehouses": [{"warehouse_id": "a41b5d73", "remain_quantity": 17}],
                 "updated_at": "2026-03-09T04:20:00"}}});
    assert_eq!(post(&app, POS_URL, &sold.to_string()).await.status(), 200);
    app.run_pending().await;
    assert_eq!(
        stock(&app).await,
        (
            Some("27".to_owned()),
            json!({"a41b5d73": 17, "c52e67ad": 10})
        )
    );
    assert_eq!(
        app.one("SELECT shop_id FROM pc_pos_variation").await,
        some(&["26290"]),
        "the shop is filled in once a delivery names it"
    );
    // An absolute all-warehouse level; then a stale one that must not win.
    for (quantity, updated_at) in [(5, "2026-03-09T05:00:00"), (99, "2026-03-09T04:59:59")] {
        let level = json!({"payload": {"eventType": "inventory_updated", "shopId": 26290,
            "data": {"variation": {"id": "e190db2b-1163-4cc3-b956-7a9528fbf5ef",
                                   "remain_quantity": quantity, "updated_at": updated_at}}}});
        assert_eq!(post(&app, POS_URL, &level.to_string()).await.status(), 200);
        app.run_pending().await;
    }
    assert_eq!(stock(&app).await.0, Some("5".to_owned()));
    assert_eq!(app.count("SELECT COUNT(*) FROM pc_pos_variation").await, 1);
    let stored = document(&app, "SELECT document FROM pc_pos_variation").await;
    assert_eq!(
        (&stored["retail_price"], &stored["remain_quantity"]),
        (&json!(140000), &json!(5)),
        "the variation's other fields stay"
    );
}

async fn an_unknown_event_type_is_stored_acknowledged_and_ignored(backend: Backend) {
    let app = spawn(backend).await;
    let unknown =
        r#"{"payload":{"eventType":"page_rated","pageId":"1122334455","data":{"id":"r1"}}}"#;
    assert_eq!(
        answer(post(&app, PANCAKE_URL, unknown).await).await,
        (200, seed_success("page_rated", r#""pageId":"1122334455""#))
    );
    let pos_unknown = r#"{"payload":{"eventType":"order_deleted","shopId":26290,"data":{"id":5}}}"#;
    assert_eq!(
        answer(post(&app, POS_URL, pos_unknown).await).await,
        (200, seed_success("order_deleted", r#""shopId":26290"#))
    );
    let subscription =
        r#"{"event_type":"subscription","request_id":"sub-1","timestamp":1773020758,"data":{}}"#;
    assert_eq!(
        answer(post(&app, PANCAKE_URL, subscription).await).await,
        (200, seed_success("subscription", r#""pageId":null"#))
    );
    assert_eq!(app.run_pending().await, 3);
    assert_eq!(
        app.rows("SELECT event_type, status, last_error FROM deliveries ORDER BY id")
            .await,
        [
            some(&[
                "page_rated",
                "ignored",
                "page_rated is not a Pancake event Wharf handles"
            ]),
            some(&[
                "order_deleted",
                "ignored",
                "order_deleted is not a Pancake event Wharf handles"
            ]),
            some(&[
                "subscription",
                "ignored",
                "no seed 002 collection stores subscription events"
            ]),
        ]
    );
    assert_eq!(app.run_pending().await, 0, "ignored is final");
}

async fn a_duplicate_is_acknowledged_and_stored_once(backend: Backend) {
    let app = spawn(backend).await;
    let message = json!({"payload": {"eventType": "message_received", "pageId": "1122334455",
        "timestamp": 1_773_020_758,
        "data": {"message": {"id": "m_1", "conversation_id": "1122334455_998877",
                             "message": "Shop ơi còn hàng không?"}}}})
    .to_string();
    // The same event again, with other whitespace: the same delivery.
    let again =
        serde_json::to_string_pretty(&serde_json::from_str::<Value>(&message).expect("json"))
            .expect("json");
    for body in [&message, &message, &again] {
        assert_eq!(
            answer(post(&app, PANCAKE_URL, body).await).await,
            (
                200,
                seed_success("message_received", r#""pageId":"1122334455""#)
            )
        );
    }
    let order = pos_order(1, "2024-11-14T05:12:00", "");
    for _ in 0..2 {
        assert_eq!(
            post(&app, &format!("{POS_URL}/orders"), &order)
                .await
                .status(),
            200
        );
    }
    assert_eq!(app.run_pending().await, 2);
    assert_eq!(app.count("SELECT COUNT(*) FROM deliveries").await, 2);
    assert_eq!(
        app.rows("SELECT message_id, conversation_id FROM fb_message")
            .await,
        [some(&["m_1", "1122334455_998877"])]
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM pc_pos_order_status_history")
            .await,
        1
    );
}
