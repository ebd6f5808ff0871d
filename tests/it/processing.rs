use std::sync::Arc;

use wharf::clock::{ManualClock, SharedClock};
use wharf::config::ProcessorSettings;
use wharf::metrics::Metrics;
use wharf::processor::Processor;
use wharf::sources::Registry;

use crate::support::{at, on_both_backends, sale_body, Backend, TestApp};

const ORDER_UPDATED_FOR_UNKNOWN_ORDER: &str = r#"{"event":"order.updated","order":{"id":555,"email":"late@example.com","updated_at":"2024-01-05T12:00:00Z","shop":{"slug":"s"}}}"#;

on_both_backends!(
    failing_delivery_retries_with_backoff_then_goes_dead,
    update_that_arrives_before_its_order_applies_once_the_order_exists,
    permanent_payload_error_is_parked_as_failed_without_retries,
    two_processors_racing_apply_each_delivery_exactly_once,
);

async fn status_and_attempts(app: &TestApp, dedup_like: &str) -> (String, i64) {
    let row = app
        .one(&format!(
            "SELECT status, attempts FROM deliveries WHERE dedup_key LIKE '{dedup_like}'"
        ))
        .await;
    let text = |index: usize| row[index].clone().expect("not null");
    (text(0), text(1).parse().expect("attempts is an integer"))
}

async fn failing_delivery_retries_with_backoff_then_goes_dead(backend: Backend) {
    let clock = ManualClock::at(at(1_700_000_000));
    let app = TestApp::builder()
        .backend(backend)
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
        status_and_attempts(&app, "%order:555%").await,
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
        status_and_attempts(&app, "%order:555%").await,
        ("pending".into(), 2)
    );

    clock.advance_millis(3_600_000);
    app.run_pending().await;
    assert_eq!(
        status_and_attempts(&app, "%order:555%").await,
        ("dead".into(), 3)
    );
    let outcomes = app
        .rows("SELECT outcome, error FROM attempts ORDER BY attempt")
        .await;
    let kinds: Vec<&str> = outcomes
        .iter()
        .map(|row| row[0].as_deref().unwrap_or_default())
        .collect();
    assert_eq!(kinds, ["retry", "retry", "dead"]);
    assert!(outcomes.iter().all(|row| row[1]
        .as_deref()
        .is_some_and(|error| error.contains("does not exist yet"))));
    assert_eq!(app.count("SELECT COUNT(*) FROM sales").await, 0);
}

async fn update_that_arrives_before_its_order_applies_once_the_order_exists(backend: Backend) {
    let clock = ManualClock::at(at(1_700_000_000));
    let app = TestApp::builder()
        .backend(backend)
        .manual_clock(clock.clone())
        .spawn()
        .await;
    app.post_cartpanda(ORDER_UPDATED_FOR_UNKNOWN_ORDER).await;
    app.run_pending().await;
    let paid = r#"{"event":"order.paid","order":{"id":555,"email":"first@example.com","total_price":"10.00","updated_at":"2024-01-05T11:00:00Z","shop":{"slug":"s"}}}"#;
    app.post_cartpanda(paid).await;
    app.run_pending().await;
    clock.advance_millis(3_600_000);
    app.run_pending().await;
    let sale = app
        .one("SELECT status, customer_email, price_minor FROM sales WHERE cartpanda_id = '555'")
        .await;
    assert_eq!(
        sale,
        [
            Some("approved".to_owned()),
            Some("late@example.com".to_owned()),
            Some("1000".to_owned())
        ]
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM deliveries WHERE status = 'processed'")
            .await,
        2
    );
}

async fn permanent_payload_error_is_parked_as_failed_without_retries(backend: Backend) {
    let app = TestApp::spawn_on(backend).await;
    let body = sale_body("evt_bad", "SALE_BAD", "sale.approved").replace("99.90", "\"ninety\"");
    assert_eq!(app.post_cartpanda(body).await.status(), 200);
    app.run_pending().await;
    let (status, attempts) = status_and_attempts(&app, "event:evt_bad").await;
    assert_eq!((status.as_str(), attempts), ("failed", 1));
    let error = app.one("SELECT last_error FROM deliveries").await[0]
        .clone()
        .expect("error kept");
    assert!(error.contains("ninety"), "{error}");
}

async fn two_processors_racing_apply_each_delivery_exactly_once(backend: Backend) {
    let app = TestApp::spawn_on(backend).await;
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
            wharf::lookup::ProviderApi::new(Default::default()).expect("client"),
        ))
    };
    let (first, second) = (processor(), processor());
    let (a, b) = tokio::join!(
        tokio::spawn(async move { first.run_pending().await }),
        tokio::spawn(async move { second.run_pending().await })
    );
    a.expect("joined").expect("first processor");
    b.expect("joined").expect("second processor");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM deliveries WHERE status = 'processed'")
            .await,
        300
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM attempts").await,
        300,
        "no delivery was attempted twice"
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM sales").await, 300);
}
