//! The embedded journal's delivery log under faults: SIGKILL at random moments over several
//! cycles with segments small enough to be reused within a burst (so kills land during segment
//! reuse and during SQLite's projection batches); a journal file deleted while running.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::{sale_body, Backend, BinaryServer, Burst, On503, TestApp, TestDatabase};

/// Small bodies allow small segments (a segment must hold the largest body twice), and four
/// of them are reused many times over in one burst.
const SMALL_LOG: &[(&str, &str)] = &[
    ("WHARF_MAX_BODY_BYTES", "16384"),
    ("WHARF_LOG_SEGMENT_BYTES", "65536"),
    ("WHARF_LOG_MAX_SEGMENTS", "6"),
];

/// One burst from 12 workers until `kill_after` acks, then SIGKILL; returns what was acked.
/// A 503 (the log full while SQLite catches up) is backpressure: not acked, the sender moves on.
async fn burst_then_kill(server: BinaryServer, cycle: usize, kill_after: usize) -> Vec<String> {
    let label = format!("C{cycle}");
    let mut burst = Burst::start_with(
        std::slice::from_ref(&server.base),
        12,
        5_000,
        &label,
        On503::NotAcked,
    );
    burst.acked_at_least(kill_after).await;
    server.kill_9().await;
    burst.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_sigkills_during_segment_reuse_lose_nothing_and_apply_each_delivery_once() {
    let database = TestDatabase::fresh(Backend::Sqlite).await;
    let mut acked = Vec::new();
    for cycle in 0..4 {
        let server = BinaryServer::start(database.url(), SMALL_LOG).await;
        let kill_after = 150 + fastrand::usize(0..450);
        acked.extend(burst_then_kill(server, cycle, kill_after).await);
    }
    let server = BinaryServer::start(database.url(), SMALL_LOG).await;
    server.await_idle(&reqwest::Client::new()).await;

    let deliveries: BTreeMap<String, (String, String)> = database
        .rows(
            "SELECT d.dedup_key, d.status, (SELECT COUNT(*) FROM attempts a \
             WHERE a.delivery_id = d.id AND a.outcome = 'processed') FROM deliveries d",
        )
        .await
        .into_iter()
        .map(|row| {
            let text = |index: usize| row[index].clone().unwrap_or_default();
            (text(0), (text(1), text(2)))
        })
        .collect();
    for sale in &acked {
        assert_eq!(
            deliveries.get(&format!("event:evt_{sale}")),
            Some(&("processed".to_owned(), "1".to_owned())),
            "acked delivery {sale} is stored and applied exactly once"
        );
    }
    assert_eq!(
        database.count("SELECT COUNT(*) FROM sales").await,
        deliveries.len() as i64,
        "one sale per delivery, none applied twice"
    );
    let log_dir = database
        .sqlite_path()
        .map(|path| format!("{}-log", path.display()))
        .expect("a SQLite database");
    let segments = std::fs::read_dir(&log_dir).expect("log directory").count();
    assert!(
        segments <= 6,
        "the log stays within its bound: {segments} segments"
    );
    server.kill_9().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_file_deleted_while_running_fails_closed_within_seconds() {
    let app = TestApp::spawn_on(Backend::Sqlite).await;
    let body = sale_body("evt_before", "SALE_BEFORE", "sale.approved");
    assert_eq!(app.post_cartpanda(body).await.status(), 200);
    let path = app
        .database()
        .sqlite_path()
        .expect("a SQLite database")
        .to_owned();
    std::fs::remove_file(&path).expect("database deleted");

    let mut health = 0;
    for _ in 0..100 {
        health = app.get("/health").await.status().as_u16();
        if health == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(health, 503, "health notices the deleted database");
    let after = sale_body("evt_after", "SALE_AFTER", "sale.approved");
    assert_eq!(
        app.post_cartpanda(after).await.status(),
        503,
        "nothing is acked into a file nobody will read again"
    );
}
