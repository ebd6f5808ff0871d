//! Several `wharf serve` processes on one PostgreSQL database, as behind a load balancer: a
//! duplicate storm over all of them stores one delivery and one sale; a burst with one instance
//! SIGKILLed ends with every acked delivery processed exactly once (the survivors take over
//! the dead instance's claims when their lease runs out). Also: PostgreSQL going away answers
//! 503, never 2xx, and ingest recovers without a restart once it is back.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::support::{sale_body, sign, Backend, BinaryServer, Burst, TestDatabase};

const INSTANCES: usize = 3;
/// Short, so the survivors take over a killed instance's claims within the test.
const ENV: &[(&str, &str)] = &[("WHARF_LEASE_MS", "1500"), ("WHARF_IDLE_POLL_MS", "100")];

async fn start_instances(database: &TestDatabase) -> Vec<BinaryServer> {
    let mut servers = Vec::new();
    for _ in 0..INSTANCES {
        servers.push(BinaryServer::start(database.url(), ENV).await);
    }
    servers
}

async fn post(client: &reqwest::Client, base: &str, body: &str) -> reqwest::Result<u16> {
    let response = client
        .post(format!("{base}/webhook/cartpanda"))
        .header("content-type", "application/json")
        .header("x-cartpanda-signature", sign(body.as_bytes()))
        .body(body.to_owned())
        .send()
        .await?;
    Ok(response.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_storm_over_three_instances_stores_one_delivery_and_one_sale() {
    let database = TestDatabase::fresh(Backend::Postgres).await;
    let servers = start_instances(&database).await;
    let client = reqwest::Client::new();
    let body = sale_body("evt_storm", "SALE_STORM", "sale.approved");
    let mut storm = JoinSet::new();
    for index in 0..90 {
        let (client, base, body) = (
            client.clone(),
            servers[index % INSTANCES].base.clone(),
            body.clone(),
        );
        storm.spawn(async move { post(&client, &base, &body).await.expect("sent") });
    }
    for status in storm.join_all().await {
        assert_eq!(status, 200, "every copy is acked (stored or duplicate)");
    }
    for server in &servers {
        server.await_idle(&client).await;
    }
    assert_eq!(database.count("SELECT COUNT(*) FROM deliveries").await, 1);
    assert_eq!(database.count("SELECT COUNT(*) FROM sales").await, 1);
    assert_eq!(
        database
            .count("SELECT COUNT(*) FROM attempts WHERE outcome = 'processed'")
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_over_three_instances_with_one_killed_processes_every_ack_exactly_once() {
    let database = TestDatabase::fresh(Backend::Postgres).await;
    let mut servers = start_instances(&database).await;
    let client = reqwest::Client::new();
    let bases: Vec<String> = servers.iter().map(|server| server.base.clone()).collect();
    let mut burst = Burst::start(&bases, 12, 150, "multi");
    burst.acked_at_least(300).await;
    servers.remove(1).kill_9().await;
    let acked = burst.finish().await;
    assert!(acked.len() >= 300);
    for server in &servers {
        server.await_idle(&client).await;
    }
    let rows: BTreeMap<String, (String, String)> = database
        .rows(
            "SELECT d.dedup_key, d.status, \
             (SELECT COUNT(*) FROM attempts a WHERE a.delivery_id = d.id \
              AND a.outcome = 'processed')::text FROM deliveries d",
        )
        .await
        .into_iter()
        .map(|row| {
            let mut cells = row.into_iter().map(Option::unwrap_or_default);
            let key = cells.next().unwrap_or_default();
            let status = cells.next().unwrap_or_default();
            let processed = cells.next().unwrap_or_default();
            (key, (status, processed))
        })
        .collect();
    for sale in &acked {
        let key = format!("event:evt_{sale}");
        assert_eq!(
            rows.get(&key),
            Some(&("processed".to_owned(), "1".to_owned())),
            "acked delivery {key} is processed exactly once"
        );
    }
    assert_eq!(
        database
            .count("SELECT COUNT(*) FROM deliveries WHERE status <> 'processed'")
            .await,
        0,
        "nothing is left pending"
    );
    assert_eq!(
        database.count("SELECT COUNT(*) FROM sales").await,
        database.count("SELECT COUNT(*) FROM deliveries").await,
        "one sale per delivery"
    );
}

/// A TCP hop in front of PostgreSQL that the test can cut and restore, as a network partition
/// or a database restart looks to Wharf, without stopping the server other tests share.
struct Partition {
    port: u16,
    open: Arc<AtomicBool>,
    connections: Arc<Mutex<JoinSet<()>>>,
}

impl Partition {
    async fn in_front_of(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let open = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(Mutex::new(JoinSet::new()));
        let (upstream, gate, live) = (upstream.to_owned(), open.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !gate.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees its connection closed
                }
                let upstream = upstream.clone();
                live.lock().spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self {
            port,
            open,
            connections,
        }
    }

    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.connections.lock().abort_all();
    }

    fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_going_away_answers_503_never_2xx_and_ingest_recovers_without_restart() {
    let database = TestDatabase::fresh(Backend::Postgres).await;
    let partition = Partition::in_front_of("127.0.0.1:5432").await;
    let url = database.url().replacen(
        "127.0.0.1:5432",
        &format!("127.0.0.1:{}", partition.port),
        1,
    );
    let server = BinaryServer::start(&url, ENV).await;
    let client = reqwest::Client::new();
    let before = sale_body("evt_before", "SALE_BEFORE", "sale.approved");
    assert_eq!(
        post(&client, &server.base, &before).await.expect("sent"),
        200
    );

    partition.cut();
    for index in 0..5 {
        let body = sale_body(&format!("evt_down_{index}"), "SALE_DOWN", "sale.approved");
        let status = post(&client, &server.base, &body).await.expect("sent");
        assert_eq!(status, 503, "an unstored delivery is never acked");
    }
    let health = client
        .get(format!("{}/health", server.base))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 503);

    partition.restore();
    let after = sale_body("evt_after", "SALE_AFTER", "sale.approved");
    let mut status = 0;
    for _ in 0..50 {
        status = post(&client, &server.base, &after).await.expect("sent");
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "ingest recovers once PostgreSQL is back");
    server.await_idle(&client).await;
    assert_eq!(
        database
            .count("SELECT COUNT(*) FROM deliveries WHERE status = 'processed'")
            .await,
        2,
        "the deliveries acked before and after the outage, and nothing else"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_in_the_url_connects_over_tls() {
    let database = TestDatabase::fresh(Backend::Postgres).await;
    let url = format!("{}?sslmode=require", database.url());
    let server = BinaryServer::start(&url, ENV).await;
    let client = reqwest::Client::new();
    let body = sale_body("evt_tls", "SALE_TLS", "sale.approved");
    assert_eq!(post(&client, &server.base, &body).await.expect("sent"), 200);
    server.await_idle(&client).await;
    assert_eq!(database.count("SELECT COUNT(*) FROM sales").await, 1);
    assert!(
        database
            .count(
                "SELECT COUNT(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.application_name = 'wharf' AND a.datname = current_database() \
                 AND s.ssl"
            )
            .await
            > 0,
        "Wharf's connections are encrypted"
    );
    assert_eq!(
        database
            .count(
                "SELECT COUNT(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.application_name = 'wharf' AND a.datname = current_database() \
                 AND NOT s.ssl"
            )
            .await,
        0,
        "and none of them is plain"
    );
}
