use serde_json::Value;

use crate::support::{on_both_backends, sale_body, sign, Backend, TestApp};

on_both_backends!(
    signed_seed_sale_lands_in_sales_with_every_field_right,
    wrong_missing_and_stale_signatures_are_401_and_store_nothing,
    source_without_secret_refuses_traffic,
    store_shaped_order_events_update_one_sale_in_lifecycle_order,
    later_status_updates_the_sale_and_bumps_updated_at,
    prices_compare_and_sort_as_numbers_in_sql,
    an_out_of_range_or_negative_amount_fails_at_once_and_never_reaches_the_ledger,
);

fn sale_priced(sale_id: &str, price: &str) -> String {
    sale_body(&format!("evt_{sale_id}"), sale_id, "sale.approved")
        .replace("\"price\":99.90", &format!("\"price\":{price}"))
}

/// Text prices would sort "1000.00" before "99.90" and miss it in `price > 200`.
async fn prices_compare_and_sort_as_numbers_in_sql(backend: Backend) {
    let app = TestApp::spawn_on(backend).await;
    for (sale, price) in [("CHEAP", "99.90"), ("DEAR", "1000.00"), ("MID", "200.50")] {
        assert_eq!(
            app.post_cartpanda(sale_priced(sale, price)).await.status(),
            200
        );
    }
    assert_eq!(app.run_pending().await, 3);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sales WHERE price > 200")
            .await,
        2
    );
    let ordered: Vec<Option<String>> = app
        .rows("SELECT cartpanda_id FROM sales ORDER BY price DESC")
        .await
        .into_iter()
        .map(|row| row[0].clone())
        .collect();
    let expected = ["DEAR", "MID", "CHEAP"].map(|id| Some(id.to_owned()));
    assert_eq!(ordered, expected);
    assert_eq!(
        app.one("SELECT SUM(price_minor) FROM sales").await,
        [Some("130040".to_owned())],
        "exact minor units add up exactly"
    );
}

/// Seed 000's `DECIMAL(10,2)` cannot hold these: the delivery is failed on its first attempt,
/// with the reason, and never retried.
async fn an_out_of_range_or_negative_amount_fails_at_once_and_never_reaches_the_ledger(
    backend: Backend,
) {
    let app = TestApp::spawn_on(backend).await;
    for (sale, price) in [("HUGE", "100000000.00"), ("NEGATIVE", "-5.00")] {
        assert_eq!(
            app.post_cartpanda(sale_priced(sale, price)).await.status(),
            200
        );
    }
    assert_eq!(app.run_pending().await, 2);
    assert_eq!(app.count("SELECT COUNT(*) FROM sales").await, 0);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM deliveries WHERE status = 'failed' AND attempts = 1")
            .await,
        2
    );
    let errors: Vec<String> = app
        .rows("SELECT last_error FROM deliveries ORDER BY id")
        .await
        .into_iter()
        .filter_map(|row| row[0].clone())
        .collect();
    assert!(errors[0].contains("DECIMAL(10,2)"), "{errors:?}");
    assert!(errors[1].contains("negative"), "{errors:?}");
    assert_eq!(app.run_pending().await, 0, "nothing is retried");
}

async fn signed_seed_sale_lands_in_sales_with_every_field_right(backend: Backend) {
    let app = TestApp::spawn_on(backend).await;
    let body = include_str!("../fixtures/cartpanda/sale_approved.json");
    let response = app.post_cartpanda(body).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["received"], true);
    assert_eq!(answer["duplicate"], false);

    assert_eq!(app.run_pending().await, 1);
    // Seed 000's frontend query, verbatim in spirit: newest sales first.
    let row = app
        .one(
            "SELECT cartpanda_id, customer_email, customer_name, product_name, product_id, price, \
             currency, status, affiliate_code, affiliate_name, commission_value, payment_method, \
             transaction_id, metadata, webhook_received_at, created_at, updated_at, id, source \
             FROM sales ORDER BY created_at DESC LIMIT 50",
        )
        .await;
    let field = |index: usize| row[index].clone().unwrap_or_default();
    assert_eq!(field(0), "SALE_12345");
    assert_eq!(field(1), "customer@example.com");
    assert_eq!(field(2), "John Doe");
    assert_eq!(field(3), "Product Name");
    assert_eq!(field(4), "PROD_123");
    assert!(!field(5).is_empty(), "price is set");
    assert_eq!(field(6), "BRL");
    assert_eq!(field(7), "approved");
    assert_eq!(field(8), "AFF123");
    assert_eq!(field(9), "Affiliate Name");
    assert!(!field(10).is_empty(), "commission_value is set");
    assert_eq!(field(11), "credit_card");
    assert_eq!(field(12), "TRX_12345");
    let metadata: Value = serde_json::from_str(&field(13)).expect("metadata is JSON");
    assert_eq!(metadata["sale_id"], "SALE_12345");
    assert!(!field(14).is_empty() && !field(15).is_empty() && !field(16).is_empty());
    assert_eq!(field(17).len(), 36, "id is a UUID");
    assert_eq!(field(18), "cartpanda");
    // Exact amounts live in minor units; the DECIMAL columns compare as numbers on both
    // backends (their text differs: SQLite keeps 99.9, PostgreSQL's NUMERIC(10,2) says 99.90).
    assert_eq!(
        app.one("SELECT price_minor, commission_minor FROM sales")
            .await,
        [Some("9990".to_owned()), Some("2997".to_owned())]
    );
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM sales WHERE price = 99.90 AND commission_value = 29.97 \
             AND price > 99.8 AND price < 100"
        )
        .await,
        1,
        "price and commission_value hold the amounts as numbers"
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM deliveries WHERE status = 'processed'")
            .await,
        1
    );
}

async fn wrong_missing_and_stale_signatures_are_401_and_store_nothing(backend: Backend) {
    let app = TestApp::spawn_on(backend).await;
    let body = sale_body("evt_1", "SALE_1", "sale.approved");
    let url = format!("{}/webhook/cartpanda", app.base);
    let stale = sign(sale_body("evt_0", "SALE_0", "sale.approved").as_bytes());
    let attempts = [
        ("wrong", Some(sign(b"another body"))),
        ("stale", Some(stale)),
        ("garbage", Some("zz-not-hex".to_owned())),
        ("missing", None),
    ];
    for (label, signature) in attempts {
        let mut request = app.client.post(&url).body(body.clone());
        if let Some(signature) = signature {
            request = request.header("x-cartpanda-signature", signature);
        }
        let response = request.send().await.expect("sent");
        assert_eq!(response.status(), 401, "{label} signature");
        let answer: Value = response.json().await.expect("json");
        assert!(
            answer["error"]["code"].as_str().is_some(),
            "{label}: machine-readable code"
        );
    }
    app.run_pending().await;
    assert_eq!(app.count("SELECT COUNT(*) FROM deliveries").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM sales").await, 0);
    let log: Value = app
        .admin_get("/api/sources/cartpanda/rejections")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(log["total"], 4);
    assert_eq!(log["rejections"][0]["code"], "missing_signature");
}

async fn source_without_secret_refuses_traffic(backend: Backend) {
    let app = TestApp::builder()
        .backend(backend)
        .without_env("CARTPANDA_WEBHOOK_SECRET")
        .spawn()
        .await;
    let response = app
        .post_cartpanda(sale_body("evt_1", "SALE_1", "sale.approved"))
        .await;
    assert_eq!(response.status(), 401);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["error"]["code"], "no_secret_configured");
    assert_eq!(app.count("SELECT COUNT(*) FROM deliveries").await, 0);
}

async fn store_shaped_order_events_update_one_sale_in_lifecycle_order(backend: Backend) {
    let app = TestApp::spawn_on(backend).await;
    let paid = include_str!("../fixtures/cartpanda/order_paid.json");
    let refunded = paid
        .replace("order.paid", "order.refunded")
        .replace("2024-01-05T10:31:00Z", "2024-01-06T09:00:00Z");
    // The refund arrives first; the older "paid" event must not roll the sale back.
    assert_eq!(app.post_cartpanda(refunded).await.status(), 200);
    app.run_pending().await;
    assert_eq!(app.post_cartpanda(paid).await.status(), 200);
    app.run_pending().await;
    let sale = app
        .one("SELECT status, price_minor FROM sales WHERE cartpanda_id = '987654'")
        .await;
    assert_eq!(
        sale,
        [Some("refunded".to_owned()), Some("15980".to_owned())]
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sales WHERE cartpanda_id = '987654' AND price = 159.80")
            .await,
        1
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM sales").await, 1);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM deliveries WHERE status = 'processed'")
            .await,
        2
    );
}

async fn later_status_updates_the_sale_and_bumps_updated_at(backend: Backend) {
    let app = TestApp::spawn_on(backend).await;
    app.post_cartpanda(sale_body("evt_1", "SALE_9", "sale.approved"))
        .await;
    app.run_pending().await;
    let before = app.one("SELECT updated_at FROM sales").await[0]
        .clone()
        .expect("updated_at set");
    app.post_cartpanda(sale_body("evt_2", "SALE_9", "sale.refunded"))
        .await;
    app.run_pending().await;
    assert_eq!(
        app.one("SELECT status FROM sales").await,
        [Some("refunded".to_owned())]
    );
    // Compared in SQL, where updated_at is a time on PostgreSQL and RFC 3339 text on SQLite.
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM sales WHERE updated_at > '{before}' AND updated_at > created_at"
        ))
        .await,
        1,
        "updated_at moved past {before}"
    );
}
