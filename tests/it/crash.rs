use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::support::{count, open_read_only, sale_body, sign, BinaryServer};

const WORKERS: usize = 16;
const KILL_AFTER_ACKS: usize = 400;

/// SIGKILL mid-burst: every delivery that got a 2xx is in the journal after restart and ends
/// processed exactly once; the restarted server resumes what the crash left pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_burst_loses_no_acked_delivery_and_processes_each_once() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let db_path = dir.path().join("wharf.db");
    let server = BinaryServer::start(&db_path, &[]).await;
    let client = reqwest::Client::new();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let (progress, mut acks) = watch::channel(0usize);
    let progress = Arc::new(progress);
    let mut burst = JoinSet::new();
    for worker in 0..WORKERS {
        let (client, base, acked, progress) = (
            client.clone(),
            server.base.clone(),
            acked.clone(),
            progress.clone(),
        );
        burst.spawn(async move {
            for index in 0..10_000 {
                let sale = format!("W{worker}-{index}");
                let body = sale_body(&format!("evt_{sale}"), &sale, "sale.approved");
                let sent = client
                    .post(format!("{base}/webhook/cartpanda"))
                    .header("x-cartpanda-signature", sign(body.as_bytes()))
                    .body(body)
                    .send()
                    .await;
                match sent {
                    Ok(response) if response.status() == 200 => {
                        acked.lock().push(sale);
                        progress.send_modify(|n| *n += 1);
                    }
                    Ok(response) => {
                        panic!("unexpected status {} before the kill", response.status())
                    }
                    Err(_) => return, // the server is gone
                }
            }
        });
    }
    acks.wait_for(|n| *n >= KILL_AFTER_ACKS)
        .await
        .expect("acks arrive");
    server.kill_9().await;
    burst.join_all().await;
    let acked = acked.lock().clone();
    assert!(acked.len() >= KILL_AFTER_ACKS);

    let restarted = BinaryServer::start(&db_path, &[]).await;
    restarted.await_idle(&client).await;
    let db = open_read_only(&db_path);
    let mut statement = db
        .prepare(
            "SELECT d.status, (SELECT COUNT(*) FROM attempts a WHERE a.delivery_id = d.id AND a.outcome = 'processed'), \
             (SELECT COUNT(*) FROM sales s WHERE s.cartpanda_id = ?1) \
             FROM deliveries d WHERE d.source = 'cartpanda' AND d.dedup_key = 'event:evt_' || ?1",
        )
        .expect("query");
    for sale in &acked {
        let (status, processed, sales): (String, i64, i64) = statement
            .query_row([sale], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .unwrap_or_else(|error| {
                panic!("acked delivery {sale} is missing from the journal: {error}")
            });
        assert_eq!(
            (status.as_str(), processed, sales),
            ("processed", 1, 1),
            "delivery {sale}"
        );
    }
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM deliveries WHERE status <> 'processed'"
        ),
        0,
        "everything stored before the kill was processed after the restart"
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM sales"),
        count(&db, "SELECT COUNT(*) FROM deliveries"),
        "one sale per delivery, none twice"
    );
    restarted.kill_9().await;
}

/// SIGTERM: in-flight work finishes, the journal is flushed (WAL checkpointed and truncated),
/// and the process exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_gracefully_and_flushes_the_journal() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let db_path = dir.path().join("wharf.db");
    let mut server = BinaryServer::start(&db_path, &[]).await;
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
    let wal = std::fs::metadata(dir.path().join("wharf.db-wal"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert_eq!(
        wal, 0,
        "the WAL was checkpointed into the database on shutdown"
    );
    let db = open_read_only(&db_path);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM deliveries"), 20);
}
