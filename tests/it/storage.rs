//! The storage conformance story: the same expectations of [`Storage`] (delivery log, leases,
//! ledger, read model) on every backend, driven directly with explicit times, no sleeping.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use wharf::clock::{ManualClock, Timestamp};
use wharf::config::Config;
use wharf::journal::{
    Appended, ClaimRequest, ClaimedDelivery, Completed, Completion, CompletionOutcome,
    DeliveryFilter, DeliveryStatus, FirstAttempt, JournalError, NewDelivery, RetryPlan, Storage,
};
use wharf::ledger::{Currency, LedgerChange, Money, SaleStatus, SaleUpsert};
use wharf::server::open_storage;

use crate::support::{at, on_both_backends, serve_command, Backend, BinaryServer, TestDatabase};

const T0: i64 = 1_700_000_000;
const LEASE: Duration = Duration::from_secs(30);

on_both_backends!(
    appending_the_same_key_twice_stores_one_delivery,
    a_claim_holds_until_its_lease_runs_out_and_only_the_latest_claim_completes,
    a_failed_attempt_retries_at_its_time_and_dead_or_ignored_is_final,
    completions_apply_ledger_changes_keyed_by_source,
    two_cartpanda_like_sources_with_the_same_order_id_do_not_collide,
    the_read_model_returns_what_was_written,
    a_first_attempt_on_arrival_lands_with_the_delivery_where_the_backend_makes_it,
);

/// Opens `backend`'s storage, as the server does, on a fresh database.
async fn open(backend: Backend) -> (Storage, TestDatabase) {
    let database = TestDatabase::fresh(backend).await;
    let env = BTreeMap::from([
        ("WHARF_DATABASE".to_owned(), database.url().to_owned()),
        ("WHARF_LOG_SEGMENT_BYTES".to_owned(), "1048576".to_owned()),
    ]);
    let config = Config::from_toml("", &env).expect("config");
    let clock = Arc::new(ManualClock::at(at(T0)));
    let (storage, _migrations) = open_storage(&config, clock).await.expect("storage opens");
    assert_eq!(storage.backend, backend);
    (storage, database)
}

fn delivery(source: &str, key: &str, received_at: Timestamp) -> NewDelivery {
    NewDelivery {
        source: source.to_owned(),
        event_id: Some(key.to_owned()),
        event_type: "sale.approved".to_owned(),
        dedup_key: format!("event:{key}"),
        received_at,
        headers_json: r#"{"content-type":"application/json"}"#.to_owned(),
        body: Bytes::from(format!(r#"{{"id":"{key}"}}"#)),
        status: DeliveryStatus::Pending,
        last_error: None,
    }
}

fn claim_at(now: Timestamp) -> ClaimRequest {
    ClaimRequest {
        now,
        limit: 10,
        lease: LEASE,
    }
}

fn brl(amount: &str) -> Money {
    Money::parse_decimal(amount, Currency::brl()).expect("decimal")
}

fn sale(order: &str, status: SaleStatus, price: &str, event_at: i64) -> LedgerChange {
    LedgerChange::Sale(Box::new(SaleUpsert {
        cartpanda_id: order.to_owned(),
        customer_email: Some("c@example.com".to_owned()),
        customer_name: Some("John Doe".to_owned()),
        product_name: Some("Product Name".to_owned()),
        product_id: Some("PROD_123".to_owned()),
        price: Some(brl(price)),
        status: Some(status),
        affiliate_code: None,
        affiliate_name: None,
        commission: Some(brl("29.97")),
        payment_method: Some("pix".to_owned()),
        transaction_id: None,
        metadata: Some(r#"{"order":"x"}"#.to_owned()),
        event_at: Some(at(event_at)),
    }))
}

/// The processor's completion of one claimed delivery, started at `now`, taking 1 ms.
fn completion(claimed: &ClaimedDelivery, now: Timestamp, outcome: CompletionOutcome) -> Completion {
    Completion {
        delivery: claimed.id,
        source: claimed.source.clone(),
        claim: claimed.claim,
        claimed_attempts: claimed.attempts,
        received_at: claimed.received_at,
        started_at: now,
        duration_micros: 1_000,
        outcome,
        if_apply_fails: RetryPlan::RetryAt(now.plus_millis(60_000)),
        verifying: claimed.verifying,
    }
}

async fn complete_one(storage: &Storage, completion: Completion) -> Completed {
    let mut done = storage
        .log
        .complete(vec![completion])
        .await
        .expect("complete");
    assert_eq!(done.len(), 1, "one result per completion");
    done.remove(0)
}

/// Claims everything due at `now` and expects exactly one delivery.
async fn claim_one(storage: &Storage, now: Timestamp) -> ClaimedDelivery {
    let mut claimed = storage.log.claim_due(claim_at(now)).await.expect("claim");
    assert_eq!(claimed.len(), 1, "one delivery due at {now:?}");
    claimed.remove(0)
}

/// Appends one delivery per source and applies `change` for each, in one batch.
async fn apply_for_sources(storage: &Storage, changes: &[(&str, &str, LedgerChange)], now: i64) {
    for (source, key, _) in changes {
        let appended = storage
            .log
            .append(delivery(source, key, at(now)))
            .await
            .expect("append");
        assert!(matches!(appended, Appended::Stored(_)), "{appended:?}");
    }
    let claimed = storage
        .log
        .claim_due(claim_at(at(now + 1)))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), changes.len());
    let batch = claimed
        .iter()
        .map(|claimed| {
            let (_, _, change) = changes
                .iter()
                .find(|(source, key, _)| {
                    claimed.source == *source && claimed.dedup_key == format!("event:{key}")
                })
                .expect("claimed what was appended");
            completion(
                claimed,
                at(now + 2),
                CompletionOutcome::Apply(vec![change.clone()]),
            )
        })
        .collect();
    let done = storage.log.complete(batch).await.expect("complete");
    assert_eq!(done, vec![Completed::Processed; changes.len()]);
}

/// Applies a sale for deliveries of `cartpanda` as they land and leaves other sources to the
/// processor; remembers what it was told landed.
#[derive(Default)]
struct SalesOnArrival {
    landed: parking_lot::Mutex<Vec<(String, Completed)>>,
}

impl FirstAttempt for SalesOnArrival {
    fn attempt(&self, delivery: &ClaimedDelivery) -> Option<Completion> {
        (delivery.source == "cartpanda").then(|| {
            completion(
                delivery,
                delivery.received_at,
                CompletionOutcome::Apply(vec![sale("1001", SaleStatus::Approved, "99.90", T0)]),
            )
        })
    }

    fn completed(&self, delivery: &ClaimedDelivery, _: &Completion, result: &Completed) {
        self.landed
            .lock()
            .push((delivery.dedup_key.clone(), result.clone()));
    }
}

fn text(value: &str) -> Option<String> {
    Some(value.to_owned())
}

async fn appending_the_same_key_twice_stores_one_delivery(backend: Backend) {
    let (storage, database) = open(backend).await;
    let first = storage
        .log
        .append(delivery("cartpanda", "evt_1", at(T0)))
        .await
        .expect("append");
    let Appended::Stored(id) = first else {
        panic!("the first append stores: {first:?}")
    };
    let again = storage
        .log
        .append(delivery("cartpanda", "evt_1", at(T0 + 5)))
        .await
        .expect("append");
    assert_eq!(again, Appended::Duplicate(id), "same (source, dedup_key)");
    let elsewhere = storage
        .log
        .append(delivery("loja-b", "evt_1", at(T0)))
        .await
        .expect("append");
    assert!(
        matches!(elsewhere, Appended::Stored(other) if other != id),
        "the same key from another source is another delivery: {elsewhere:?}"
    );
    let counts = storage.read.status_counts().await.expect("counts");
    assert_eq!(counts.pending, 2);
    let backlog = storage.read.backlog(at(T0)).await.expect("backlog");
    assert_eq!((backlog.due, backlog.pending), (2, 2));
    // On SQLite the ack comes from the delivery log; the tables follow a moment later.
    storage.read.await_visible().await;
    assert_eq!(database.count("SELECT COUNT(*) FROM deliveries").await, 2);

    storage.log.probe().await.expect("the log is writable");
    storage.log.close().await;
    let closed = storage
        .log
        .append(delivery("cartpanda", "evt_2", at(T0)))
        .await;
    assert!(
        matches!(closed, Err(JournalError::Closed)),
        "after close: {closed:?}"
    );
}

async fn a_claim_holds_until_its_lease_runs_out_and_only_the_latest_claim_completes(
    backend: Backend,
) {
    let (storage, database) = open(backend).await;
    let id = storage
        .log
        .append(delivery("cartpanda", "evt_1", at(T0)))
        .await
        .expect("append")
        .id();
    let now = at(T0 + 1);
    let first = claim_one(&storage, now).await;
    assert_eq!(first.id, id);
    assert_eq!(first.attempts, 0);
    assert_eq!(first.dedup_key, "event:evt_1");
    assert_eq!(first.body, Bytes::from(r#"{"id":"evt_1"}"#));
    assert_eq!(first.received_at, at(T0));

    assert!(
        storage
            .log
            .claim_due(claim_at(now))
            .await
            .expect("claim")
            .is_empty(),
        "a leased delivery is not claimed twice"
    );
    assert_eq!(
        storage.log.next_due().await.expect("next due"),
        Some(claim_at(now).lease_until()),
        "a leased delivery is claimable again when its lease runs out"
    );

    // The first claimer stalls past its lease; another takes the delivery over.
    let later = Timestamp(claim_at(now).lease_until().micros() + 1);
    let second = claim_one(&storage, later).await;
    assert_eq!(second.id, id);
    assert_ne!(second.claim, first.claim, "a takeover gets a new token");

    let apply_sale =
        || CompletionOutcome::Apply(vec![sale("1001", SaleStatus::Approved, "99.90", T0)]);
    assert_eq!(
        complete_one(&storage, completion(&first, later, apply_sale())).await,
        Completed::Stale,
        "the old token's completion is stale"
    );
    assert_eq!(
        complete_one(&storage, completion(&second, later, apply_sale())).await,
        Completed::Processed
    );
    assert_eq!(
        complete_one(&storage, completion(&first, later, apply_sale())).await,
        Completed::Stale,
        "and stays stale once the delivery is done"
    );
    assert!(storage
        .log
        .claim_due(claim_at(at(T0 + 86_400)))
        .await
        .expect("claim")
        .is_empty());
    assert_eq!(storage.log.next_due().await.expect("next due"), None);

    let attempts = storage.read.attempts(id).await.expect("attempts");
    assert_eq!(attempts.len(), 1, "the stale completion left no attempt");
    assert_eq!(attempts[0].outcome, "processed");
    assert_eq!(database.count("SELECT COUNT(*) FROM sales").await, 1);
    assert_eq!(
        database
            .one("SELECT status, attempts FROM deliveries")
            .await,
        [text("processed"), text("1")]
    );
}

async fn a_failed_attempt_retries_at_its_time_and_dead_or_ignored_is_final(backend: Backend) {
    let (storage, _database) = open(backend).await;
    let retried = storage
        .log
        .append(delivery("cartpanda", "evt_retry", at(T0)))
        .await
        .expect("append")
        .id();
    let mut parked = delivery("cartpanda", "evt_parked", at(T0));
    parked.status = DeliveryStatus::Failed;
    parked.last_error = Some("body is not JSON".to_owned());
    storage.log.append(parked).await.expect("append");

    let first = claim_one(&storage, at(T0 + 1)).await;
    assert_eq!(
        first.id, retried,
        "a delivery stored as failed is never claimed"
    );
    let retry_at = at(T0 + 600);
    let failed = CompletionOutcome::Fail {
        error: "upstream said no".to_owned(),
        plan: RetryPlan::RetryAt(retry_at),
    };
    assert_eq!(
        complete_one(&storage, completion(&first, at(T0 + 1), failed)).await,
        Completed::Failed(RetryPlan::RetryAt(retry_at))
    );
    let view = storage
        .read
        .delivery(retried)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!((view.status, view.attempts), (DeliveryStatus::Pending, 1));
    assert_eq!(view.last_error.as_deref(), Some("upstream said no"));
    assert_eq!(view.next_attempt_at, Some(retry_at.to_rfc3339()));
    assert_eq!(
        storage.log.next_due().await.expect("next due"),
        Some(retry_at)
    );
    assert!(
        storage
            .log
            .claim_due(claim_at(at(T0 + 599)))
            .await
            .expect("claim")
            .is_empty(),
        "not due before its retry time"
    );
    let backlog = storage.read.backlog(at(T0 + 599)).await.expect("backlog");
    assert_eq!((backlog.due, backlog.pending), (0, 1));

    let second = claim_one(&storage, retry_at).await;
    assert_eq!(second.attempts, 1);
    let dead = CompletionOutcome::Fail {
        error: "still no".to_owned(),
        plan: RetryPlan::Dead,
    };
    assert_eq!(
        complete_one(&storage, completion(&second, retry_at, dead)).await,
        Completed::Failed(RetryPlan::Dead)
    );
    assert!(storage
        .log
        .claim_due(claim_at(at(T0 + 86_400)))
        .await
        .expect("claim")
        .is_empty());

    let ignored = storage
        .log
        .append(delivery("cartpanda", "evt_ignored", at(T0 + 700)))
        .await
        .expect("append")
        .id();
    let third = claim_one(&storage, at(T0 + 701)).await;
    assert_eq!(third.id, ignored);
    assert_eq!(
        complete_one(
            &storage,
            completion(
                &third,
                at(T0 + 701),
                CompletionOutcome::Ignore("not a sale".to_owned())
            )
        )
        .await,
        Completed::Ignored
    );

    let counts = storage.read.status_counts().await.expect("counts");
    assert_eq!(
        (
            counts.pending,
            counts.processed,
            counts.failed,
            counts.dead,
            counts.ignored
        ),
        (0, 0, 1, 1, 1)
    );
    let attempts = storage.read.attempts(retried).await.expect("attempts");
    let outcomes: Vec<(u32, &str, Option<&str>)> = attempts
        .iter()
        .map(|a| (a.attempt, a.outcome.as_str(), a.error.as_deref()))
        .collect();
    assert_eq!(
        outcomes,
        [
            (1, "retry", Some("upstream said no")),
            (2, "dead", Some("still no"))
        ]
    );
}

async fn completions_apply_ledger_changes_keyed_by_source(backend: Backend) {
    let (storage, database) = open(backend).await;
    apply_for_sources(
        &storage,
        &[
            (
                "cartpanda",
                "evt_a",
                sale("1001", SaleStatus::Approved, "99.90", T0),
            ),
            (
                "loja-b",
                "evt_b",
                sale("1001", SaleStatus::Approved, "1000.00", T0),
            ),
        ],
        T0,
    )
    .await;
    assert_eq!(
        database
            .rows(
                "SELECT source, cartpanda_id, status, price_minor, commission_minor, currency \
                 FROM sales ORDER BY source"
            )
            .await,
        [
            [
                text("cartpanda"),
                text("1001"),
                text("approved"),
                text("9990"),
                text("2997"),
                text("BRL")
            ],
            [
                text("loja-b"),
                text("1001"),
                text("approved"),
                text("100000"),
                text("2997"),
                text("BRL")
            ],
        ]
    );
    // Seed 000's DECIMAL columns compare as numbers on both backends.
    assert_eq!(
        database
            .rows("SELECT source FROM sales WHERE price > 200 ORDER BY source")
            .await,
        [[text("loja-b")]]
    );
    assert_eq!(
        database
            .count("SELECT COUNT(*) FROM sales WHERE price = 99.90 AND commission_value = 29.97")
            .await,
        1
    );
}

async fn two_cartpanda_like_sources_with_the_same_order_id_do_not_collide(backend: Backend) {
    let (storage, database) = open(backend).await;
    apply_for_sources(
        &storage,
        &[
            (
                "cartpanda",
                "evt_a1",
                sale("1001", SaleStatus::Approved, "99.90", T0),
            ),
            (
                "loja-b",
                "evt_b1",
                sale("1001", SaleStatus::Approved, "10.00", T0),
            ),
        ],
        T0,
    )
    .await;
    // Store B refunds its order 1001; store A's order 1001 is another sale and stays approved.
    apply_for_sources(
        &storage,
        &[(
            "loja-b",
            "evt_b2",
            sale("1001", SaleStatus::Refunded, "10.00", T0 + 100),
        )],
        T0 + 100,
    )
    .await;
    assert_eq!(
        database
            .rows(
                "SELECT source, status, price_minor FROM sales WHERE cartpanda_id = '1001' \
                 ORDER BY source"
            )
            .await,
        [
            [text("cartpanda"), text("approved"), text("9990")],
            [text("loja-b"), text("refunded"), text("1000")],
        ]
    );
}

async fn the_read_model_returns_what_was_written(backend: Backend) {
    let (storage, _database) = open(backend).await;
    apply_for_sources(
        &storage,
        &[
            (
                "cartpanda",
                "evt_a",
                sale("1001", SaleStatus::Approved, "99.90", T0),
            ),
            (
                "loja-b",
                "evt_b",
                sale("2002", SaleStatus::Approved, "10.00", T0),
            ),
        ],
        T0,
    )
    .await;
    storage
        .log
        .append(delivery("cartpanda", "evt_c", at(T0 + 10)))
        .await
        .expect("append");

    let counts = storage.read.status_counts().await.expect("counts");
    assert_eq!((counts.pending, counts.processed), (1, 2));
    let all = storage
        .read
        .deliveries(DeliveryFilter {
            limit: 10,
            ..DeliveryFilter::default()
        })
        .await
        .expect("list");
    let keys: Vec<&str> = all.iter().map(|view| view.dedup_key.as_str()).collect();
    assert_eq!(
        keys,
        ["event:evt_c", "event:evt_b", "event:evt_a"],
        "newest first"
    );
    let cartpanda = storage
        .read
        .deliveries(DeliveryFilter {
            source: Some("cartpanda".to_owned()),
            limit: 10,
            ..DeliveryFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(cartpanda.len(), 2);
    assert!(cartpanda.iter().all(|view| view.source == "cartpanda"));
    let processed = storage
        .read
        .deliveries(DeliveryFilter {
            status: Some(DeliveryStatus::Processed),
            limit: 10,
            ..DeliveryFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(processed.len(), 2);
    let page = storage
        .read
        .deliveries(DeliveryFilter {
            before_id: Some(all[0].id.0),
            limit: 1,
            ..DeliveryFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id, all[1].id, "the page after the newest");

    let id = all[2].id;
    let view = storage
        .read
        .delivery(id)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(view.source, "cartpanda");
    assert_eq!(view.event_id.as_deref(), Some("evt_a"));
    assert_eq!(view.event_type, "sale.approved");
    assert_eq!(view.received_at, at(T0).to_rfc3339());
    assert_eq!(view.status, DeliveryStatus::Processed);
    assert_eq!(view.attempts, 1);
    assert_eq!(view.last_error, None);
    assert_eq!(view.next_attempt_at, None);
    assert!(view.processed_at.is_some());
    assert_eq!(view.body_bytes, r#"{"id":"evt_a"}"#.len());
    assert_eq!(view.body.as_deref(), Some(r#"{"id":"evt_a"}"#));
    assert_eq!(
        view.headers,
        Some(json!({"content-type": "application/json"}))
    );

    let attempts = storage.read.attempts(id).await.expect("attempts");
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].attempt, 1);
    assert_eq!(attempts[0].started_at, at(T0 + 2).to_rfc3339());
    assert_eq!(attempts[0].duration_ms, 1.0);
    assert_eq!(attempts[0].outcome, "processed");
    assert_eq!(attempts[0].error, None);

    assert!(storage
        .read
        .delivery(wharf::journal::DeliveryId(id.0 + 1_000_000))
        .await
        .expect("read")
        .is_none());
    assert!(storage
        .read
        .attempts(all[0].id)
        .await
        .expect("attempts")
        .is_empty());
}

/// One SQLite file serves one server: a second `wharf serve` on it exits with a clear message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_sqlite_file_refuses_to_start() {
    let database = TestDatabase::fresh(Backend::Sqlite).await;
    let first = BinaryServer::start(database.url(), &[]).await;
    let second = tokio::time::timeout(
        Duration::from_secs(30),
        serve_command(database.url(), &[])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output(),
    )
    .await
    .expect("the second server exits instead of serving")
    .expect("wharf runs");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success(),
        "the second server must fail: {stderr}"
    );
    assert!(stderr.contains("in use"), "stderr says why: {stderr}");
    let health = reqwest::get(format!("{}/health", first.base))
        .await
        .expect("the first server still answers");
    assert_eq!(health.status(), 200);
    first.kill_9().await;
}

on_both_backends!(migrate_applies_once_then_says_up_to_date);

/// `wharf migrate` on a new database applies the migrations; run again it changes nothing and
/// says so.
async fn migrate_applies_once_then_says_up_to_date(backend: Backend) {
    let database = TestDatabase::fresh(backend).await;
    let run = || async {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
            .arg("migrate")
            .env("WHARF_DATABASE", database.url())
            .env("RUST_LOG", "warn")
            .output()
            .await
            .expect("wharf migrate runs")
    };
    let first = run().await;
    assert!(first.status.success(), "{first:?}");
    let first = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(first.contains("applied V1__init"), "{first}");
    let second = run().await;
    assert!(second.status.success(), "{second:?}");
    let second = String::from_utf8_lossy(&second.stdout).into_owned();
    assert!(second.contains("is up to date"), "{second}");
}

on_both_backends!(the_same_key_with_another_body_is_a_duplicate_kept_as_a_conflict);

/// A provider that reuses an event id for a different payload is answered as a duplicate (the
/// ledger never sees it twice), and what it sent is kept for an operator; a plain retry of the
/// same body is not a conflict.
async fn the_same_key_with_another_body_is_a_duplicate_kept_as_a_conflict(backend: Backend) {
    let (storage, database) = open(backend).await;
    let original = delivery("cartpanda", "evt_c", at(T0));
    let Appended::Stored(id) = storage.log.append(original.clone()).await.expect("append") else {
        panic!("the first copy is stored");
    };
    let mut changed = original.clone();
    changed.body = Bytes::from_static(br#"{"id":"evt_c","price":"1.00"}"#);
    let retried = storage.log.append(original).await.expect("append");
    let conflicting = storage.log.append(changed).await.expect("append");
    assert_eq!(retried, Appended::Duplicate(id));
    assert_eq!(conflicting, Appended::Duplicate(id));
    storage.read.await_visible().await;
    assert_eq!(database.count("SELECT COUNT(*) FROM deliveries").await, 1);
    assert_eq!(
        database
            .rows(&format!(
                "SELECT body FROM delivery_conflicts WHERE delivery_id = {}",
                id.0
            ))
            .await
            .len(),
        1,
        "the changed body is kept once; the identical retry is not a conflict"
    );
    storage.log.close().await;
}

/// The embedded journal makes a delivery's first attempt in the transaction that lands it:
/// the sale, the processed status and the attempt row arrive together and nothing is left to
/// claim; a source the hook declines stays pending for the processor. PostgreSQL acks on its
/// own commit and leaves every attempt to the processor.
async fn a_first_attempt_on_arrival_lands_with_the_delivery_where_the_backend_makes_it(
    backend: Backend,
) {
    let (storage, database) = open(backend).await;
    let first = Arc::new(SalesOnArrival::default());
    storage.log.attempt_on_arrival(first.clone());
    for (source, key) in [("cartpanda", "evt_a"), ("loja-b", "evt_b")] {
        let appended = storage
            .log
            .append(delivery(source, key, at(T0)))
            .await
            .expect("append");
        assert!(matches!(appended, Appended::Stored(_)), "{appended:?}");
    }
    storage.read.await_visible().await;
    let claimed = storage
        .log
        .claim_due(claim_at(at(T0 + 1)))
        .await
        .expect("claim");
    let mut claimed_keys: Vec<&str> = claimed.iter().map(|c| c.dedup_key.as_str()).collect();
    claimed_keys.sort_unstable();
    match backend {
        Backend::Sqlite => {
            assert_eq!(claimed_keys, ["event:evt_b"], "only the declined one waits");
            assert_eq!(
                *first.landed.lock(),
                [("event:evt_a".to_owned(), Completed::Processed)]
            );
            assert_eq!(
                database
                    .rows(
                        "SELECT d.status, d.attempts, a.outcome, s.cartpanda_id FROM deliveries d \
                         JOIN attempts a ON a.delivery_id = d.id \
                         JOIN sales s ON s.source = d.source WHERE d.source = 'cartpanda'"
                    )
                    .await,
                [[
                    text("processed"),
                    text("1"),
                    text("processed"),
                    text("1001")
                ]]
            );
        }
        Backend::Postgres => {
            assert_eq!(claimed_keys, ["event:evt_a", "event:evt_b"]);
            assert!(first.landed.lock().is_empty());
            assert_eq!(database.count("SELECT COUNT(*) FROM sales").await, 0);
        }
    }
}
