//! Source health: a source refusing most of its requests (a wrong secret) and a source that
//! went silent are flagged in `/health`, in `/api/health/sources` and as the
//! `wharf_source_unhealthy` gauge.

use std::time::Duration;

use wharf::clock::ManualClock;

use crate::support::{at, on_both_backends, sale_body, Backend, TestApp};

async fn flags(app: &TestApp) -> serde_json::Value {
    app.get("/health")
        .await
        .json()
        .await
        .expect("health is JSON")
}

fn gauge(metrics: &str, source: &str, reason: &str) -> Option<u8> {
    let series = format!("wharf_source_unhealthy{{source=\"{source}\",reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .and_then(|value| value.parse().ok())
}

async fn refused_requests_outnumbering_accepted_ones_flag_the_source_everywhere(backend: Backend) {
    let app = TestApp::spawn_on(backend).await;
    let metrics = app.get("/metrics").await.text().await.expect("metrics");
    assert_eq!(gauge(&metrics, "cartpanda", "rejection_spike"), Some(0));
    assert_eq!(flags(&app).await["sources_flagged"], serde_json::json!([]));
    for n in 0..6 {
        let response = app
            .client
            .post(format!("{}/webhook/cartpanda", app.base))
            .header("content-type", "application/json")
            .header("x-cartpanda-signature", "0".repeat(64))
            .body(sale_body(
                &format!("evt_bad_{n}"),
                "SALE_BAD",
                "sale.approved",
            ))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 401);
    }
    let health = flags(&app).await;
    assert_eq!(health["status"], "healthy", "the server itself is fine");
    assert_eq!(health["sources_flagged"][0]["source"], "cartpanda");
    assert_eq!(health["sources_flagged"][0]["reason"], "rejection_spike");
    let metrics = app.get("/metrics").await.text().await.expect("metrics");
    assert_eq!(gauge(&metrics, "cartpanda", "rejection_spike"), Some(1));
    assert_eq!(gauge(&metrics, "cartpanda", "silent"), Some(0));
    let detail: serde_json::Value = app
        .admin_get("/api/health/sources")
        .await
        .json()
        .await
        .expect("JSON");
    let cartpanda = detail["sources"]
        .as_array()
        .expect("a list")
        .iter()
        .find(|source| source["source"] == "cartpanda")
        .expect("cartpanda listed")
        .clone();
    assert_eq!(cartpanda["healthy"], false);
    assert_eq!(app.get("/api/health/sources").await.status(), 401);
    app.shutdown().await;
}

async fn a_source_that_usually_receives_traffic_and_goes_quiet_is_flagged_silent(backend: Backend) {
    let clock = ManualClock::at(at(1_800_000_000));
    let app = TestApp::builder()
        .backend(backend)
        .manual_clock(clock.clone())
        .spawn()
        .await;
    // Sixty deliveries, one a minute: over the week's baseline, one every 2.8 hours, so ten
    // usual gaps make 28 hours.
    for n in 0..60 {
        let body = sale_body(
            &format!("evt_q_{n}"),
            &format!("SALE_Q_{n}"),
            "sale.approved",
        );
        assert_eq!(app.post_cartpanda(body).await.status(), 200);
        clock.advance_millis(60 * 1000);
    }
    clock.advance_millis(12 * 3600 * 1000);
    assert_eq!(flags(&app).await["sources_flagged"], serde_json::json!([]));
    clock.advance_millis(28 * 3600 * 1000);
    // The health task follows the change feed; it counts by each change's own time.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let health = flags(&app).await;
        if health["sources_flagged"][0]["reason"] == "silent" {
            assert_eq!(health["sources_flagged"][0]["source"], "cartpanda");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never flagged: {health}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = app.get("/metrics").await.text().await.expect("metrics");
    assert_eq!(gauge(&metrics, "cartpanda", "silent"), Some(1));
    app.shutdown().await;
}

on_both_backends!(
    refused_requests_outnumbering_accepted_ones_flag_the_source_everywhere,
    a_source_that_usually_receives_traffic_and_goes_quiet_is_flagged_silent,
);
