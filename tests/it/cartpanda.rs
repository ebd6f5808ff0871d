use serde_json::Value;

use crate::support::{count, sale_body, sign, TestApp};

#[tokio::test]
async fn signed_seed_sale_lands_in_sales_with_every_field_right() {
    let app = TestApp::spawn().await;
    let body = include_str!("../fixtures/cartpanda/sale_approved.json");
    let response = app.post_cartpanda(body).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["received"], true);
    assert_eq!(answer["duplicate"], false);

    assert_eq!(app.run_pending().await, 1);
    let db = app.db();
    // Seed 000's frontend query, verbatim in spirit: newest sales first.
    let row = db
        .query_row(
            "SELECT cartpanda_id, customer_email, customer_name, product_name, product_id, price, \
             currency, status, affiliate_code, affiliate_name, commission_value, payment_method, \
             transaction_id, metadata, webhook_received_at, created_at, updated_at, id \
             FROM sales ORDER BY created_at DESC LIMIT 50",
            [],
            |row| {
                (0..18)
                    .map(|index| row.get::<_, Option<String>>(index))
                    .collect::<Result<Vec<_>, _>>()
            },
        )
        .expect("one sale");
    let field = |index: usize| row[index].clone().unwrap_or_default();
    assert_eq!(field(0), "SALE_12345");
    assert_eq!(field(1), "customer@example.com");
    assert_eq!(field(2), "John Doe");
    assert_eq!(field(3), "Product Name");
    assert_eq!(field(4), "PROD_123");
    assert_eq!(field(5), "99.90", "price is exact decimal text");
    assert_eq!(field(6), "BRL");
    assert_eq!(field(7), "approved");
    assert_eq!(field(8), "AFF123");
    assert_eq!(field(9), "Affiliate Name");
    assert_eq!(field(10), "29.97");
    assert_eq!(field(11), "credit_card");
    assert_eq!(field(12), "TRX_12345");
    let metadata: Value = serde_json::from_str(&field(13)).expect("metadata is JSON");
    assert_eq!(metadata["sale_id"], "SALE_12345");
    assert!(!field(14).is_empty() && !field(15).is_empty() && !field(16).is_empty());
    assert_eq!(field(17).len(), 36, "id is a UUID");
    let minor: (i64, i64) = db
        .query_row("SELECT price_minor, commission_minor FROM sales", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("minor units");
    assert_eq!(minor, (9990, 2997));
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM deliveries WHERE status = 'processed'"
        ),
        1
    );
}

#[tokio::test]
async fn wrong_missing_and_stale_signatures_are_401_and_store_nothing() {
    let app = TestApp::spawn().await;
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
    let db = app.db();
    assert_eq!(count(&db, "SELECT COUNT(*) FROM deliveries"), 0);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM sales"), 0);
    let log: Value = app
        .admin_get("/api/sources/cartpanda/rejections")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(log["total"], 4);
    assert_eq!(log["rejections"][0]["code"], "missing_signature");
}

#[tokio::test]
async fn source_without_secret_refuses_traffic() {
    let app = TestApp::builder()
        .without_env("CARTPANDA_WEBHOOK_SECRET")
        .spawn()
        .await;
    let response = app
        .post_cartpanda(sale_body("evt_1", "SALE_1", "sale.approved"))
        .await;
    assert_eq!(response.status(), 401);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["error"]["code"], "no_secret_configured");
    assert_eq!(count(&app.db(), "SELECT COUNT(*) FROM deliveries"), 0);
}

#[tokio::test]
async fn store_shaped_order_events_update_one_sale_in_lifecycle_order() {
    let app = TestApp::spawn().await;
    let paid = include_str!("../fixtures/cartpanda/order_paid.json");
    let refunded = paid
        .replace("order.paid", "order.refunded")
        .replace("2024-01-05T10:31:00Z", "2024-01-06T09:00:00Z");
    // The refund arrives first; the older "paid" event must not roll the sale back.
    assert_eq!(app.post_cartpanda(refunded).await.status(), 200);
    app.run_pending().await;
    assert_eq!(app.post_cartpanda(paid).await.status(), 200);
    app.run_pending().await;
    let db = app.db();
    let (status, price): (String, String) = db
        .query_row(
            "SELECT status, price FROM sales WHERE cartpanda_id = '987654'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("sale");
    assert_eq!((status.as_str(), price.as_str()), ("refunded", "159.80"));
    assert_eq!(count(&db, "SELECT COUNT(*) FROM sales"), 1);
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM deliveries WHERE status = 'processed'"
        ),
        2
    );
}

#[tokio::test]
async fn later_status_updates_the_sale_and_bumps_updated_at() {
    let app = TestApp::spawn().await;
    app.post_cartpanda(sale_body("evt_1", "SALE_9", "sale.approved"))
        .await;
    app.run_pending().await;
    let db = app.db();
    let before: String = db
        .query_row("SELECT updated_at FROM sales", [], |r| r.get(0))
        .expect("row");
    app.post_cartpanda(sale_body("evt_2", "SALE_9", "sale.refunded"))
        .await;
    app.run_pending().await;
    let (status, after): (String, String) = db
        .query_row("SELECT status, updated_at FROM sales", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("row");
    assert_eq!(status, "refunded");
    assert!(after > before, "updated_at moved: {before} -> {after}");
}
