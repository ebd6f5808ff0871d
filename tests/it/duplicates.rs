use serde_json::Value;
use tokio::task::JoinSet;

use crate::support::{count, sale_body, sign, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_storm_writes_one_row_and_one_sale() {
    let app = TestApp::spawn().await;
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
    let db = app.db();
    assert_eq!(count(&db, "SELECT COUNT(*) FROM deliveries"), 1);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM sales"), 1);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM attempts"), 1);
}
