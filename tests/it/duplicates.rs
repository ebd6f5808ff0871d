use serde_json::Value;
use tokio::task::JoinSet;

use crate::support::{on_both_backends, sale_body, sign, Backend, TestApp};

on_both_backends!(duplicate_storm_writes_one_row_and_one_sale);

async fn duplicate_storm_writes_one_row_and_one_sale(backend: Backend) {
    let app = TestApp::spawn_on(backend).await;
    let body = sale_body("evt_storm", "SALE_STORM", "sale.approved");
    let signature = sign(body.as_bytes());
    let mut storm = JoinSet::new();
    for _ in 0..200 {
        let request = app
            .client
            .post(format!("{}/webhook/cartpanda", app.base))
            .header("x-cartpanda-signature", signature.clone())
            .body(body.clone());
        storm.spawn(async move {
            let response = request.send().await.expect("sent");
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.expect("json")
        });
    }
    let answers = storm.join_all().await;
    let fresh = answers
        .iter()
        .filter(|answer| answer["duplicate"] == false)
        .count();
    assert_eq!(fresh, 1, "exactly one request stored the delivery");
    assert!(answers
        .iter()
        .all(|answer| answer["delivery_id"] == answers[0]["delivery_id"]));
    app.run_pending().await;
    assert_eq!(app.count("SELECT COUNT(*) FROM deliveries").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM sales").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM attempts").await, 1);
}
