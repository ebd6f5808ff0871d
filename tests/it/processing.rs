use std::sync::Arc;

use wharf::clock::{ManualClock, SharedClock};
use wharf::config::ProcessorSettings;
use wharf::metrics::Metrics;
use wharf::processor::Processor;
use wharf::sources::Registry;

use crate::support::{at, count, sale_body, TestApp};

const ORDER_UPDATED_FOR_UNKNOWN_ORDER: &str = r#"{"event":"order.updated","order":{"id":555,"email":"late@example.com","updated_at":"2024-01-05T12:00:00Z","shop":{"slug":"s"}}}"#;

fn status_and_attempts(app: &TestApp, dedup_like: &str) -> (String, i64) {
    app.db()
        .query_row(
            "SELECT status, attempts FROM deliveries WHERE dedup_key LIKE ?1",
            [dedup_like],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .expect("delivery")
}

#[tokio::test]
async fn failing_delivery_retries_with_backoff_then_goes_dead() {
    let clock = ManualClock::at(at(1_700_000_000));
    let app = TestApp::builder()
        .manual_clock(clock.clone())
        .env("WHARF_MAX_ATTEMPTS", "3")
        .spawn()
        .await;
    assert_eq!(
        app.post_cartpanda(ORDER_UPDATED_FOR_UNKNOWN_ORDER)
            .await
            .status(),
        200
    );

    assert_eq!(app.run_pending().await, 1);
    assert_eq!(
        status_and_attempts(&app, "%order:555%"),
        ("pending".into(), 1)
    );
    assert_eq!(
        app.run_pending().await,
        0,
        "the retry is not due before its backoff"
    );

    clock.advance_millis(3_600_000);
    assert_eq!(app.run_pending().await, 1);
    assert_eq!(
        status_and_attempts(&app, "%order:555%"),
        ("pending".into(), 2)
    );

    clock.advance_millis(3_600_000);
    app.run_pending().await;
    assert_eq!(status_and_attempts(&app, "%order:555%"), ("dead".into(), 3));
    let db = app.db();
    let outcomes: Vec<(String, String)> = db
        .prepare("SELECT outcome, error FROM attempts ORDER BY attempt")
        .expect("query")
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("attempts");
    let kinds: Vec<&str> = outcomes
        .iter()
        .map(|(outcome, _)| outcome.as_str())
        .collect();
    assert_eq!(kinds, ["retry", "retry", "dead"]);
    assert!(outcomes
        .iter()
        .all(|(_, error)| error.contains("does not exist yet")));
    assert_eq!(count(&db, "SELECT COUNT(*) FROM sales"), 0);
}

#[tokio::test]
async fn update_that_arrives_before_its_order_applies_once_the_order_exists() {
    let clock = ManualClock::at(at(1_700_000_000));
    let app = TestApp::builder().manual_clock(clock.clone()).spawn().await;
    app.post_cartpanda(ORDER_UPDATED_FOR_UNKNOWN_ORDER).await;
    app.run_pending().await;
    let paid = r#"{"event":"order.paid","order":{"id":555,"email":"first@example.com","total_price":"10.00","updated_at":"2024-01-05T11:00:00Z","shop":{"slug":"s"}}}"#;
    app.post_cartpanda(paid).await;
    app.run_pending().await;
    clock.advance_millis(3_600_000);
    app.run_pending().await;
    let (status, email): (String, String) = app
        .db()
        .query_row(
            "SELECT status, customer_email FROM sales WHERE cartpanda_id = '555'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("sale");
    assert_eq!(
        (status.as_str(), email.as_str()),
        ("approved", "late@example.com")
    );
    assert_eq!(
        count(
            &app.db(),
            "SELECT COUNT(*) FROM deliveries WHERE status = 'processed'"
        ),
        2
    );
}

#[tokio::test]
async fn permanent_payload_error_is_parked_as_failed_without_retries() {
    let app = TestApp::spawn().await;
    let body = sale_body("evt_bad", "SALE_BAD", "sale.approved").replace("99.90", "\"ninety\"");
    assert_eq!(app.post_cartpanda(body).await.status(), 200);
    app.run_pending().await;
    let (status, attempts) = status_and_attempts(&app, "event:evt_bad");
    assert_eq!((status.as_str(), attempts), ("failed", 1));
    let error: String = app
        .db()
        .query_row("SELECT last_error FROM deliveries", [], |r| r.get(0))
        .expect("error kept");
    assert!(error.contains("ninety"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processors_racing_apply_each_delivery_exactly_once() {
    let app = TestApp::spawn().await;
    for index in 0..300 {
        let body = sale_body(
            &format!("evt_{index}"),
            &format!("SALE_{index}"),
            "sale.approved",
        );
        assert_eq!(app.post_cartpanda(body).await.status(), 200);
    }
    let state = app.state();
    let mut sources = Registry::new();
    for route in state.routes.values() {
        sources.insert(route.source.clone());
    }
    let processor = || {
        Arc::new(Processor::new(
            state.storage.clone(),
            sources.clone(),
            state.clock.clone() as SharedClock,
            ProcessorSettings {
                batch_size: 16,
                ..ProcessorSettings::default()
            },
            Arc::new(Metrics::default()),
        ))
    };
    let (first, second) = (processor(), processor());
    let (a, b) = tokio::join!(
        tokio::spawn(async move { first.run_pending().await }),
        tokio::spawn(async move { second.run_pending().await })
    );
    a.expect("joined").expect("first processor");
    b.expect("joined").expect("second processor");
    let db = app.db();
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM deliveries WHERE status = 'processed'"
        ),
        300
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM attempts"),
        300,
        "no delivery was attempted twice"
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM sales"), 300);
}
