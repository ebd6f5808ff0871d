use serde_json::Value;

use crate::support::{on_both_backends, sale_body, Backend, TestApp};

on_both_backends!(
    admin_api_needs_the_token_and_shows_deliveries_with_attempts,
    health_and_metrics_speak_their_formats,
    replay_applies_again_through_the_processor_and_changes_nothing_twice,
    seed_003_monitoring_queries_run_on_webhook_events,
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
    assert_eq!(list["items"][0]["status"], "processed");
    let id = list["items"][0]["id"].as_i64().expect("id");
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
    // The ack waited for the delivery log's sync on SQLite; PostgreSQL's commit is its own,
    // and it has no such series.
    let log_syncs = metrics
        .lines()
        .find_map(|line| line.strip_prefix("wharf_journal_disk_seconds_count{work=\"log_sync\"} "))
        .map(|count| count.parse::<u64>().expect("a count"));
    match backend {
        Backend::Sqlite => assert!(log_syncs.is_some_and(|syncs| syncs >= 1), "{metrics}"),
        Backend::Postgres => assert_eq!(log_syncs, None, "{metrics}"),
    }
}

/// Replay puts finished deliveries back in line; the ledger decides each effect against its
/// current rows, so a replayed sale is not a second sale.
async fn replay_applies_again_through_the_processor_and_changes_nothing_twice(backend: Backend) {
    let app = TestApp::spawn_on(backend).await;
    let good = sale_body("evt_r1", "SALE_R1", "sale.approved");
    let bad = sale_body("evt_r2", "SALE_R2", "sale.approved").replace("99.90", "\"ninety\"");
    for body in [good, bad] {
        assert_eq!(app.post_cartpanda(body).await.status(), 200);
    }
    let unidentified = app.post_cartpanda(r#"{"id":"x","id":"y"}"#).await;
    assert_eq!(unidentified.status(), 400);
    assert_eq!(app.run_pending().await, 2);
    let sale_before = app.rows("SELECT * FROM sales").await;

    let dry: Value = app
        .admin_post("/api/deliveries/replay?status=failed&dry_run=true")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        dry["matched"], 1,
        "the unidentified delivery is not replayable: {dry}"
    );
    assert_eq!(dry["replayed"], 0);
    assert_eq!(app.run_pending().await, 0, "a dry run changes nothing");

    let id = |event: &'static str| {
        let app = &app;
        async move {
            app.one(&format!(
                "SELECT id FROM deliveries WHERE event_id = '{event}'"
            ))
            .await[0]
                .clone()
                .expect("id")
        }
    };
    let replayed = app
        .admin_post(&format!("/api/deliveries/{}/replay", id("evt_r1").await))
        .await;
    assert_eq!(replayed.status(), 202);
    let all_failed: Value = app
        .admin_post("/api/deliveries/replay?status=failed")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(all_failed["replayed"], 1);
    assert_eq!(app.run_pending().await, 2, "both attempted again");
    assert_eq!(
        app.rows("SELECT event_id, status, attempts FROM deliveries WHERE event_id LIKE 'evt_r%' ORDER BY id")
            .await,
        [
            [Some("evt_r1".to_owned()), Some("processed".to_owned()), Some("2".to_owned())],
            [Some("evt_r2".to_owned()), Some("failed".to_owned()), Some("2".to_owned())],
        ]
    );
    assert_eq!(
        app.rows("SELECT * FROM sales").await,
        sale_before,
        "the replayed sale changed nothing"
    );

    let pending = app
        .admin_post(&format!("/api/deliveries/{}/replay", id("evt_r1").await))
        .await;
    assert_eq!(pending.status(), 202, "finished again, so replayable again");
    let waiting = app
        .admin_post(&format!("/api/deliveries/{}/replay", id("evt_r1").await))
        .await;
    assert_eq!(waiting.status(), 409, "already waiting for its attempt");
    let body: Value = waiting.json().await.expect("json");
    assert_eq!(body["error"]["code"], "not_replayable");
    let malformed = app.admin_get("/api/deliveries/abc").await;
    assert_eq!(malformed.status(), 400);
    let body: Value = malformed
        .json()
        .await
        .expect("a JSON error, not plain text");
    assert_eq!(body["error"]["code"], "invalid_delivery_id");
}

/// Seed 003's monitoring SQL, verbatim, over the journal's `webhook_events` view.
async fn seed_003_monitoring_queries_run_on_webhook_events(backend: Backend) {
    let app = TestApp::spawn_on(backend).await;
    let good = sale_body("evt_m1", "SALE_M1", "sale.approved");
    let bad = sale_body("evt_m2", "SALE_M2", "sale.approved").replace("99.90", "\"ninety\"");
    for body in [good, bad] {
        assert_eq!(app.post_cartpanda(body).await.status(), 200);
    }
    app.run_pending().await;
    if backend == Backend::Postgres {
        let rate = app
            .one(
                "SELECT
  COUNT(*) as total,
  SUM(CASE WHEN processed THEN 1 ELSE 0 END) as successful,
  ROUND(100.0 * SUM(CASE WHEN processed THEN 1 ELSE 0 END) / COUNT(*), 2) as success_rate
FROM webhook_events
WHERE created_at > NOW() - INTERVAL '24 hours';",
            )
            .await;
        assert_eq!(
            rate,
            [
                Some("2".to_owned()),
                Some("1".to_owned()),
                Some("50.00".to_owned())
            ]
        );
    }
    let recent = app
        .rows(
            "SELECT
  event_type,
  processed,
  created_at,
  processed_at
FROM webhook_events
ORDER BY created_at DESC
LIMIT 10;",
        )
        .await;
    assert_eq!(recent.len(), 2);
    assert!(recent
        .iter()
        .all(|row| row[2].is_some() && row[3].is_some()));
    let failed = app
        .rows(
            "SELECT
  event_type,
  error_message,
  created_at
FROM webhook_events
WHERE processed = false
  AND error_message IS NOT NULL
ORDER BY created_at DESC;",
        )
        .await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0][0].as_deref(), Some("sale.approved"));
    assert!(failed[0][1].as_deref().is_some_and(|e| e.contains("price")));

    // Seed 003's routes: the health check, and the events behind the admin token.
    let health: Value = app
        .get("/api/webhooks/health")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(health["status"], "healthy");
    assert_eq!(app.get("/api/webhooks/events").await.status(), 401);
    let events: Value = app
        .admin_get("/api/webhooks/events?status=failed")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(events["events"].as_array().map(Vec::len), Some(1));
    assert_eq!(events["events"][0]["processed"], false);
    assert!(events["events"][0]["error_message"]
        .as_str()
        .is_some_and(|e| e.contains("price")));
}
