use std::collections::BTreeMap;

use crate::support::{
    on_both_backends, sale_body, sign, Backend, BinaryServer, Burst, TestDatabase,
};

const WORKERS: usize = 16;
const KILL_AFTER_ACKS: usize = 400;
/// A short lease, so that on PostgreSQL (where a claim outlives its process) the restarted
/// server takes over what the killed one had claimed within seconds; SQLite releases every
/// lease when it opens its file.
const LEASE: (&str, &str) = ("WHARF_LEASE_MS", "2000");

on_both_backends!(
    sigkill_during_a_burst_loses_no_acked_delivery_and_processes_each_once,
    sigterm_shuts_down_gracefully_and_flushes_the_journal,
);

/// SIGKILL mid-burst: every delivery that got a 2xx is in the journal after restart and ends
/// processed exactly once; the restarted server resumes what the crash left pending.
async fn sigkill_during_a_burst_loses_no_acked_delivery_and_processes_each_once(backend: Backend) {
    let database = TestDatabase::fresh(backend).await;
    let server = BinaryServer::start(database.url(), &[LEASE]).await;
    let client = reqwest::Client::new();
    let mut burst = Burst::start(std::slice::from_ref(&server.base), WORKERS, 10_000, "crash");
    burst.acked_at_least(KILL_AFTER_ACKS).await;
    server.kill_9().await;
    let acked = burst.finish().await;
    assert!(acked.len() >= KILL_AFTER_ACKS);

    let restarted = BinaryServer::start(database.url(), &[LEASE]).await;
    restarted.await_idle(&client).await;
    // Per delivery: its status and how many attempts processed it.
    let deliveries: BTreeMap<String, (String, i64)> = database
        .rows(
            "SELECT d.dedup_key, d.status, COUNT(a.delivery_id) FROM deliveries d \
             LEFT JOIN attempts a ON a.delivery_id = d.id AND a.outcome = 'processed' \
             WHERE d.source = 'cartpanda' GROUP BY d.id, d.dedup_key, d.status",
        )
        .await
        .into_iter()
        .map(|row| {
            let text = |index: usize| row[index].clone().expect("not null");
            (
                text(0),
                (text(1), text(2).parse().expect("count is an integer")),
            )
        })
        .collect();
    // Per sale id: how many rows it has.
    let sales: BTreeMap<String, i64> = database
        .rows(
            "SELECT cartpanda_id, COUNT(*) FROM sales WHERE source = 'cartpanda' \
             GROUP BY cartpanda_id",
        )
        .await
        .into_iter()
        .map(|row| {
            let text = |index: usize| row[index].clone().expect("not null");
            (text(0), text(1).parse().expect("count is an integer"))
        })
        .collect();
    for sale in &acked {
        let (status, processed) = deliveries
            .get(&format!("event:evt_{sale}"))
            .unwrap_or_else(|| panic!("acked delivery {sale} is missing from the journal"));
        assert_eq!(
            (status.as_str(), *processed, sales.get(sale).copied()),
            ("processed", 1, Some(1)),
            "delivery {sale}"
        );
    }
    assert_eq!(
        database
            .count("SELECT COUNT(*) FROM deliveries WHERE status <> 'processed'")
            .await,
        0,
        "everything stored before the kill was processed after the restart"
    );
    assert_eq!(
        database.count("SELECT COUNT(*) FROM sales").await,
        database.count("SELECT COUNT(*) FROM deliveries").await,
        "one sale per delivery, none twice"
    );
    restarted.kill_9().await;
}

/// SIGTERM: in-flight work finishes, the journal is flushed (on SQLite: the WAL checkpointed
/// and truncated), and the process exits cleanly.
async fn sigterm_shuts_down_gracefully_and_flushes_the_journal(backend: Backend) {
    let database = TestDatabase::fresh(backend).await;
    let mut server = BinaryServer::start(database.url(), &[]).await;
    let client = reqwest::Client::new();
    for index in 0..20 {
        let body = sale_body(
            &format!("evt_term_{index}"),
            &format!("TERM_{index}"),
            "sale.approved",
        );
        let response = client
            .post(format!("{}/webhook/cartpanda", server.base))
            .header("x-cartpanda-signature", sign(body.as_bytes()))
            .body(body)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200);
    }
    let pid = server.child.id().expect("running").to_string();
    let signalled = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(signalled.success());
    let status = server.child.wait().await.expect("exits");
    assert!(status.success(), "graceful exit, got {status:?}");
    if let Some(path) = database.sqlite_path() {
        let wal = std::fs::metadata(format!("{}-wal", path.display()))
            .map(|m| m.len())
            .unwrap_or(0);
        assert_eq!(
            wal, 0,
            "the WAL was checkpointed into the database on shutdown"
        );
    }
    assert_eq!(database.count("SELECT COUNT(*) FROM deliveries").await, 20);
}
