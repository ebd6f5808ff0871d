//! The admin API of issue 12: JSON errors everywhere, the delivery list and detail, the ledger
//! tables, exports, statistics, sources, and replay after a fix.

use serde_json::Value;
use wharf::clock::ManualClock;

use crate::support::{at, on_both_backends, sale_body, Backend, TestApp, ADMIN_TOKEN};

on_both_backends!(
    every_admin_error_is_json_with_a_code,
    deliveries_filter_by_every_field_and_page_newest_first,
    delivery_detail_has_request_line_redacted_headers_body_and_attempts,
    ledger_tables_list_filter_page_and_show_a_row,
    lists_export_as_csv_and_json_lines,
    stats_count_time_and_revenue_per_source,
    sources_say_whether_a_secret_is_set_and_why_requests_were_refused,
    replay_of_a_dead_delivery_after_its_cause_is_fixed_applies_once,
);

/// GETs an admin path that must answer 200 JSON.
async fn ok_json(app: &TestApp, path: &str) -> Value {
    let response = app.admin_get(path).await;
    let status = response.status();
    let text = response.text().await.expect("body");
    assert_eq!(status, 200, "GET {path}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("GET {path} is not JSON: {text}"))
}

/// The status and `error.code` of an answer that must be a JSON error.
async fn error_of(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let body: Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: not JSON: {text}"));
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no code: {text}"));
    assert!(body["error"]["message"].is_string(), "{text}");
    (status, code.to_owned())
}

fn items(page: &Value) -> &Vec<Value> {
    page["items"].as_array().expect("items")
}

async fn every_admin_error_is_json_with_a_code(backend: Backend) {
    let app = TestApp::spawn_on(backend).await;
    let cases = [
        ("/api/deliveries?limit=abc", 400, "invalid_query"),
        ("/api/deliveries?status=sleepy", 400, "invalid_status"),
        ("/api/deliveries?since=yesterday", 400, "invalid_time"),
        ("/api/deliveries?cursor=zz", 400, "invalid_cursor"),
        ("/api/deliveries/abc", 400, "invalid_delivery_id"),
        ("/api/deliveries/99999", 404, "not_found"),
        ("/api/no/such/thing", 404, "not_found"),
        ("/api/ledger/no_such_table", 404, "not_found"),
        ("/api/ledger/sales?no_such_column=1", 400, "unknown_filter"),
        ("/api/ledger/sales?price_minor=ten", 400, "invalid_filter"),
        ("/api/ledger/sales?cursor=%%%", 400, "invalid_cursor"),
        (
            "/api/deliveries?since=2024-01-01T00:00:00Z&limit=-1",
            400,
            "invalid_query",
        ),
        ("/api/ledger/sales?cursor=bm9wZQ", 400, "invalid_cursor"),
        ("/api/ledger/sales?format=xml", 400, "invalid_query"),
        ("/api/ledger/sales/NOPE", 404, "not_found"),
        ("/api/stats?window=forever", 400, "invalid_window"),
        ("/api/stats/revenue?days=-3", 400, "invalid_query"),
        (
            "/api/admin/processor/idle?timeout_ms=soon",
            400,
            "invalid_query",
        ),
        ("/api/sources/nobody/rejections", 404, "not_found"),
    ];
    for (path, status, code) in cases {
        let answer = error_of(app.admin_get(path).await).await;
        assert_eq!(answer, (status, code.to_owned()), "GET {path}");
    }
    let delete = app
        .client
        .delete(format!("{}/api/deliveries", app.base))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("sent");
    assert_eq!(
        error_of(delete).await,
        (405, "method_not_allowed".to_owned())
    );
    let anonymous = error_of(app.get("/api/ledger").await).await;
    assert_eq!(anonymous, (401, "unauthorized".to_owned()));
    let outside = error_of(app.get("/nowhere").await).await;
    assert_eq!(outside, (404, "not_found".to_owned()));
}

async fn deliveries_filter_by_every_field_and_page_newest_first(backend: Backend) {
    let clock = ManualClock::at(at(1_700_000_000));
    let app = TestApp::builder()
        .backend(backend)
        .manual_clock(clock.clone())
        .spawn()
        .await;
    for index in 0..5 {
        let kind = if index % 2 == 0 {
            "sale.approved"
        } else {
            "sale.refunded"
        };
        let body = sale_body(&format!("evt_{index}"), &format!("SALE_{index}"), kind);
        assert_eq!(app.post_cartpanda(body).await.status(), 200);
        clock.advance_millis(60_000);
    }
    let bad = sale_body("evt_bad", "SALE_BAD", "sale.approved").replace("99.90", "\"ninety\"");
    assert_eq!(app.post_cartpanda(bad).await.status(), 200);
    app.run_pending().await;

    let all = ok_json(&app, "/api/deliveries").await;
    let ids: Vec<i64> = items(&all)
        .iter()
        .map(|d| d["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(ids.len(), 6);
    assert!(
        ids.windows(2).all(|pair| pair[0] > pair[1]),
        "newest first: {ids:?}"
    );
    assert!(all["next_cursor"].is_null());

    let mut paged = Vec::new();
    let mut path = "/api/deliveries?limit=4".to_owned();
    loop {
        let page = ok_json(&app, &path).await;
        paged.extend(items(&page).iter().map(|d| d["id"].as_i64().expect("id")));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/deliveries?limit=4&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(paged, ids, "pages cover everything once, in order");

    let count = |page: Value| items(&page).len();
    assert_eq!(
        count(ok_json(&app, "/api/deliveries?event_type=sale.refunded").await),
        2
    );
    assert_eq!(
        count(ok_json(&app, "/api/deliveries?status=failed").await),
        1
    );
    assert_eq!(
        count(ok_json(&app, "/api/deliveries?source=cartpanda&status=processed").await),
        5
    );
    assert_eq!(
        count(ok_json(&app, "/api/deliveries?source=stripe").await),
        0
    );
    let found = ok_json(&app, "/api/deliveries?q=SALE_3").await;
    assert_eq!(items(&found).len(), 1);
    assert_eq!(items(&found)[0]["event_id"], "evt_3");
    assert_eq!(count(ok_json(&app, "/api/deliveries?q=ninety").await), 1);
    // Received at 1_700_000_000 + 60·i: [+60 s, +180 s) holds evt_1 and evt_2.
    let since = at(1_700_000_060).to_rfc3339();
    let until = at(1_700_000_180).to_rfc3339();
    let window = ok_json(
        &app,
        &format!("/api/deliveries?since={since}&until={until}"),
    )
    .await;
    let events: Vec<&str> = items(&window)
        .iter()
        .map(|d| d["event_id"].as_str().expect("event id"))
        .collect();
    assert_eq!(events, ["evt_2", "evt_1"]);
}

async fn delivery_detail_has_request_line_redacted_headers_body_and_attempts(backend: Backend) {
    let app = TestApp::spawn_on(backend).await;
    let bad = sale_body("evt_bad", "SALE_BAD", "sale.approved").replace("99.90", "\"ninety\"");
    assert_eq!(app.post_cartpanda(bad).await.status(), 200);
    app.run_pending().await;
    let list = ok_json(&app, "/api/deliveries").await;
    let id = items(&list)[0]["id"].as_i64().expect("id");
    let detail = ok_json(&app, &format!("/api/deliveries/{id}")).await;
    let delivery = &detail["delivery"];
    assert_eq!(delivery["request"]["method"], "POST");
    assert_eq!(delivery["request"]["path"], "/webhook/cartpanda");
    let headers = delivery["headers"].as_object().expect("headers");
    assert!(
        headers.keys().all(|name| !name.starts_with(':')),
        "{headers:?}"
    );
    assert_eq!(headers["content-type"], "application/json");
    assert!(
        headers.contains_key("x-cartpanda-signature"),
        "signatures are kept"
    );
    assert!(
        !detail.to_string().contains(crate::support::SECRET),
        "never the secret"
    );
    assert!(delivery["body"]
        .as_str()
        .is_some_and(|body| body.contains("ninety")));
    let attempt = &detail["attempts"][0];
    assert_eq!(attempt["outcome"], "failed");
    assert!(attempt["error"]
        .as_str()
        .is_some_and(|e| e.contains("ninety")));
    assert!(attempt["duration_ms"].as_f64().is_some_and(|ms| ms >= 0.0));
}

async fn post_sales(app: &TestApp, count: usize) {
    for index in 0..count {
        let body = sale_body(
            &format!("evt_{index}"),
            &format!("SALE_{index}"),
            "sale.approved",
        );
        assert_eq!(app.post_cartpanda(body).await.status(), 200);
    }
    app.run_pending().await;
}

async fn ledger_tables_list_filter_page_and_show_a_row(backend: Backend) {
    let app = TestApp::spawn_on(backend).await;
    post_sales(&app, 5).await;
    let refund = sale_body("evt_r", "SALE_1", "sale.refunded");
    assert_eq!(app.post_cartpanda(refund).await.status(), 200);
    app.run_pending().await;

    let catalog = ok_json(&app, "/api/ledger").await;
    let tables = catalog["tables"].as_array().expect("tables");
    let sales = tables
        .iter()
        .find(|t| t["name"] == "sales")
        .expect("sales listed");
    assert_eq!(sales["key"], serde_json::json!(["source", "cartpanda_id"]));
    assert!(sales["columns"]
        .as_array()
        .expect("columns")
        .contains(&serde_json::json!({"name": "price", "type": "decimal"})));
    let payments = tables.iter().filter(|t| t["name"] == "payments").count();
    assert_eq!(payments, 1, "one table however many providers write it");

    let all = ok_json(&app, "/api/ledger/sales").await;
    assert_eq!(items(&all).len(), 5);
    // Exact decimal text: PostgreSQL's NUMERIC(10,2) says 99.90, SQLite's numeric affinity 99.9.
    let price = items(&all)[0]["price"].as_str().expect("decimal as text");
    assert_eq!(price.trim_end_matches('0'), "99.9", "{price}");
    assert_eq!(items(&all)[0]["price_minor"], 9990);
    let refunded = ok_json(&app, "/api/ledger/sales?status=refunded").await;
    assert_eq!(items(&refunded).len(), 1);
    assert_eq!(items(&refunded)[0]["cartpanda_id"], "SALE_1");
    let searched = ok_json(&app, "/api/ledger/sales?q=trx_sale_3").await;
    assert_eq!(items(&searched).len(), 1, "q is case-insensitive");
    assert_eq!(
        items(&ok_json(&app, "/api/ledger/sales?price_minor=9990&source=cartpanda").await).len(),
        5
    );

    let mut seen = Vec::new();
    let mut path = "/api/ledger/sales?limit=2".to_owned();
    loop {
        let page = ok_json(&app, &path).await;
        seen.extend(items(&page).iter().map(|row| row["cartpanda_id"].clone()));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/ledger/sales?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    let expected: Vec<Value> = (0..5).map(|i| Value::from(format!("SALE_{i}"))).collect();
    assert_eq!(seen, expected, "key order, each row once");

    let one = ok_json(&app, "/api/ledger/sales/SALE_2").await;
    assert_eq!(one["row"]["cartpanda_id"], "SALE_2");
    assert_eq!(one["row"]["customer_email"], "c@example.com");
    let scoped = ok_json(&app, "/api/ledger/sales/SALE_2?source=cartpanda").await;
    assert_eq!(scoped["row"], one["row"]);
    let (status, code) =
        error_of(app.admin_get("/api/ledger/sales/SALE_2?source=other").await).await;
    assert_eq!((status, code.as_str()), (404, "not_found"));
    let (status, code) = error_of(app.admin_get("/api/ledger/sales/SALE_2?status=x").await).await;
    assert_eq!((status, code.as_str()), (400, "unknown_filter"));
    assert_eq!(
        items(&ok_json(&app, "/api/ledger/payments").await).len(),
        0,
        "every provider's table is readable, empty or not"
    );
}

async fn lists_export_as_csv_and_json_lines(backend: Backend) {
    let app = TestApp::spawn_on(backend).await;
    post_sales(&app, 3).await;
    let csv = app.admin_get("/api/ledger/sales?format=csv&limit=1").await;
    assert_eq!(csv.status(), 200);
    assert!(csv.headers()["content-type"]
        .to_str()
        .is_ok_and(|t| t.starts_with("text/csv")));
    let text = csv.text().await.expect("csv");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        4,
        "a header and every row, whatever the page size: {text}"
    );
    assert!(lines[0].starts_with("id,source,cartpanda_id,"));
    assert!(lines[1].contains(",cartpanda,SALE_0,c@example.com,John Doe,"));

    let jsonl = app
        .admin_get("/api/deliveries?format=jsonl&status=processed")
        .await
        .text()
        .await
        .expect("jsonl");
    let rows: Vec<Value> = jsonl
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object a line"))
        .collect();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|row| row["status"] == "processed"));
    let csv = app
        .admin_get("/api/deliveries?format=csv&q=SALE_1")
        .await
        .text()
        .await
        .expect("csv");
    assert_eq!(csv.lines().count(), 2, "{csv}");
}

async fn stats_count_time_and_revenue_per_source(backend: Backend) {
    let app = TestApp::spawn_on(backend).await;
    post_sales(&app, 2).await;
    let bad = sale_body("evt_bad", "SALE_BAD", "sale.approved").replace("99.90", "\"ninety\"");
    assert_eq!(app.post_cartpanda(bad).await.status(), 200);
    app.run_pending().await;
    let forged = app
        .client
        .post(format!("{}/webhook/cartpanda", app.base))
        .header("x-cartpanda-signature", "00")
        .body("{}")
        .send()
        .await
        .expect("sent");
    assert_eq!(forged.status(), 401);

    let stats = ok_json(&app, "/api/stats?window=1h").await;
    assert_eq!(stats["window_seconds"], 3600);
    let sources = stats["sources"].as_array().expect("sources");
    let cartpanda = sources
        .iter()
        .find(|s| s["source"] == "cartpanda")
        .expect("cartpanda");
    assert_eq!(cartpanda["received"], 3);
    assert_eq!(cartpanda["processed"], 2);
    assert_eq!(cartpanda["failed"], 1);
    assert_eq!(cartpanda["dead"], 0);
    assert_eq!(cartpanda["rejected"], 1, "the forged request");
    let rate = cartpanda["success_rate"].as_f64().expect("rate");
    assert!((rate - 2.0 / 3.0).abs() < 1e-9, "{rate}");
    for percentile in ["p50_ms", "p95_ms", "p99_ms"] {
        assert!(
            cartpanda[percentile].as_f64().is_some_and(|ms| ms >= 0.0),
            "{percentile}"
        );
    }
    assert_eq!(
        stats["event_types"],
        serde_json::json!([{"source": "cartpanda", "event_type": "sale.approved", "count": 3}])
    );
    let minutes = stats["per_minute"].as_array().expect("per minute");
    let total: u64 = minutes
        .iter()
        .map(|m| m["count"].as_u64().expect("count"))
        .sum();
    assert_eq!(total, 3);
    assert!(minutes[0]["minute"]
        .as_str()
        .is_some_and(|m| m.ends_with(":00.000000Z")));

    // A sale counts on the day the ledger recorded it (UTC).
    let today = app.state().clock.now().to_rfc3339()[..10].to_owned();
    let revenue = ok_json(&app, "/api/stats/revenue?days=1").await;
    assert_eq!(
        revenue["days"],
        serde_json::json!([{"day": today, "source": "cartpanda", "currency": "BRL",
                            "amount": "199.80", "count": 2}])
    );
}

async fn sources_say_whether_a_secret_is_set_and_why_requests_were_refused(backend: Backend) {
    let app = TestApp::spawn_on(backend).await;
    post_sales(&app, 1).await;
    let forged = app
        .client
        .post(format!("{}/webhook/cartpanda", app.base))
        .header("x-cartpanda-signature", "00")
        .body("{}")
        .send()
        .await
        .expect("sent");
    assert_eq!(forged.status(), 401);
    let sources = ok_json(&app, "/api/sources").await;
    let list = sources["sources"].as_array().expect("sources");
    let cartpanda = list
        .iter()
        .find(|s| s["name"] == "cartpanda")
        .expect("cartpanda");
    assert_eq!(cartpanda["secret_configured"], true);
    assert_eq!(cartpanda["counts"]["processed"], 1);
    assert!(cartpanda["last_rejections"][0]["code"]
        .as_str()
        .is_some_and(|code| code.contains("signature")));
    assert!(cartpanda["last_rejections"][0]["cause"].is_string());
    assert!(cartpanda["routes"]
        .as_array()
        .expect("routes")
        .contains(&Value::from("POST /webhook/cartpanda")));
    let text = sources.to_string();
    assert!(!text.contains(crate::support::SECRET), "never the secret");
    let without_secret = list
        .iter()
        .filter(|s| s["secret_configured"] == false)
        .count();
    assert!(
        without_secret > 0,
        "sources without a secret say so: {text}"
    );
}

const ORDER_UPDATED_FOR_UNKNOWN_ORDER: &str = r#"{"event":"order.updated","order":{"id":555,"email":"late@example.com","updated_at":"2024-01-05T12:00:00Z","shop":{"slug":"s"}}}"#;
const ORDER_PAID: &str = r#"{"event":"order.paid","order":{"id":555,"email":"first@example.com","total_price":"10.00","updated_at":"2024-01-05T11:00:00Z","shop":{"slug":"s"}}}"#;

/// An update for an order that does not exist yet dies after its attempts; once the order
/// arrives (the cause is fixed), replaying the dead delivery applies it, and replaying it again
/// changes nothing.
async fn replay_of_a_dead_delivery_after_its_cause_is_fixed_applies_once(backend: Backend) {
    let app = TestApp::builder()
        .backend(backend)
        .env("WHARF_MAX_ATTEMPTS", "1")
        .spawn()
        .await;
    assert_eq!(
        app.post_cartpanda(ORDER_UPDATED_FOR_UNKNOWN_ORDER)
            .await
            .status(),
        200
    );
    app.run_pending().await;
    let dead = ok_json(&app, "/api/deliveries?status=dead").await;
    assert_eq!(items(&dead).len(), 1);

    assert_eq!(app.post_cartpanda(ORDER_PAID).await.status(), 200);
    app.run_pending().await;
    let sale_sql =
        "SELECT status, customer_email, price_minor FROM sales WHERE cartpanda_id = '555'";
    assert_eq!(
        app.one(sale_sql).await[1].as_deref(),
        Some("first@example.com")
    );

    let dry = ok_json_post(&app, "/api/deliveries/replay?status=dead&dry_run=true").await;
    assert_eq!(
        (dry["matched"].as_u64(), dry["replayed"].as_u64()),
        (Some(1), Some(0))
    );
    let replay = ok_json_post(&app, "/api/deliveries/replay?status=dead&source=cartpanda").await;
    assert_eq!(replay["replayed"], 1);
    assert_eq!(app.run_pending().await, 1);
    let applied = app.one(sale_sql).await;
    assert_eq!(
        applied,
        [
            Some("approved".into()),
            Some("late@example.com".into()),
            Some("1000".into())
        ]
    );
    let all_sales = app.rows("SELECT * FROM sales").await;

    let id = items(&dead)[0]["id"].as_i64().expect("id");
    assert_eq!(
        app.admin_post(&format!("/api/deliveries/{id}/replay"))
            .await
            .status(),
        202
    );
    assert_eq!(app.run_pending().await, 1);
    assert_eq!(
        app.rows("SELECT * FROM sales").await,
        all_sales,
        "applied once"
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM sales").await, 1);
    let detail = ok_json(&app, &format!("/api/deliveries/{id}")).await;
    let outcomes: Vec<&str> = detail["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| a["outcome"].as_str().expect("outcome"))
        .collect();
    assert_eq!(outcomes, ["dead", "processed", "processed"]);
}

async fn ok_json_post(app: &TestApp, path: &str) -> Value {
    let response = app.admin_post(path).await;
    let status = response.status();
    let text = response.text().await.expect("body");
    assert_eq!(status, 200, "POST {path}: {text}");
    serde_json::from_str(&text).expect("JSON")
}
