use serde_json::Value;

use crate::support::{on_both_backends, sale_body, Backend, TestApp};

on_both_backends!(
    admin_api_needs_the_token_and_shows_deliveries_with_attempts,
    health_and_metrics_speak_their_formats,
);

async fn admin_api_needs_the_token_and_shows_deliveries_with_attempts(backend: Backend) {
    let app = TestApp::spawn_on(backend).await;
    app.post_cartpanda(sale_body("evt_a", "SALE_A", "sale.approved"))
        .await;
    app.run_pending().await;

    let anonymous = app.get("/api/deliveries").await;
    assert_eq!(anonymous.status(), 401);
    let wrong = app
        .client
        .get(format!("{}/api/deliveries", app.base))
        .bearer_auth("nope")
        .send()
        .await
        .expect("sent");
    assert_eq!(wrong.status(), 401);

    let list: Value = app
        .admin_get("/api/deliveries?source=cartpanda")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(list["deliveries"][0]["status"], "processed");
    let id = list["deliveries"][0]["id"].as_i64().expect("id");
    let one: Value = app
        .admin_get(&format!("/api/deliveries/{id}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(one["delivery"]["event_id"], "evt_a");
    assert!(one["delivery"]["body"]
        .as_str()
        .is_some_and(|body| body.contains("SALE_A")));
    assert_eq!(one["attempts"][0]["outcome"], "processed");
    let stats: Value = app
        .admin_get("/api/stats")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(stats["deliveries"]["processed"], 1);
}

#[tokio::test]
async fn admin_api_is_off_without_a_token() {
    let app = TestApp::builder()
        .without_env("WHARF_ADMIN_TOKEN")
        .spawn()
        .await;
    let response = app.get("/api/stats").await;
    assert_eq!(response.status(), 403);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["error"]["code"], "admin_disabled");
}

async fn health_and_metrics_speak_their_formats(backend: Backend) {
    let app = TestApp::spawn_on(backend).await;
    let health: Value = app.get("/health").await.json().await.expect("json");
    assert_eq!(health["status"], "healthy");
    assert!(health["timestamp"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    app.post_cartpanda(sale_body("evt_m", "SALE_M", "sale.approved"))
        .await;
    let metrics = app.get("/metrics").await.text().await.expect("text");
    assert!(metrics.contains("wharf_deliveries_total{source=\"cartpanda\",outcome=\"stored\"} 1"));
    assert!(metrics.contains("wharf_ack_seconds_count 1"));
}
