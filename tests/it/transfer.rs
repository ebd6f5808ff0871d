//! `wharf migrate --from sqlite://… --to postgres://…`: an embedded installation, made by a real
//! server, moves to PostgreSQL whole (journal, payloads, attempts, ledger, exact money), a second
//! run changes nothing, and a server still running on the file keeps the copy from starting.

use std::path::Path;
use std::process::Output;

use serde_json::Value;
use wharf::clock::{ManualClock, Timestamp};

use crate::support::{at, sale_body, Backend, TestApp, TestDatabase};

/// An update for an order that does not exist yet: retried, then applied once the order exists.
const ORDER_UPDATED: &str = r#"{"event":"order.updated","order":{"id":555,"email":"late@example.com","updated_at":"2024-01-05T12:00:00Z","shop":{"slug":"s"}}}"#;
const ORDER_PAID: &str = r#"{"event":"order.paid","order":{"id":555,"email":"first@example.com","total_price":"10.00","updated_at":"2024-01-05T11:00:00Z","shop":{"slug":"s"}}}"#;

async fn migrate(from: &Path, to: &str) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .arg("migrate")
        .arg("--from")
        .arg(format!("sqlite://{}", from.display()))
        .arg("--to")
        .arg(to)
        .env("RUST_LOG", "warn")
        .env_remove("RUST_BACKTRACE")
        .kill_on_drop(true)
        .output()
        .await
        .expect("wharf migrate runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `(copied, already present)` for a table, from the summary `table: N copied, M already present`.
fn summary(stdout: &str, table: &str) -> (i64, i64) {
    let line = stdout
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{table}: ")))
        .unwrap_or_else(|| panic!("no summary line for {table} in:\n{stdout}"));
    let numbers: Vec<i64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|part| !part.is_empty())
        .map(|part| part.parse().expect("a count"))
        .collect();
    assert_eq!(numbers.len(), 2, "unexpected summary line {line:?}");
    (numbers[0], numbers[1])
}

/// PostgreSQL's `TIMESTAMPTZ` as unix microseconds, SQLite's journal unit.
fn pg_micros(column: &str) -> String {
    format!("(EXTRACT(EPOCH FROM {column}) * 1000000)::bigint")
}

/// RFC 3339 text (SQLite's ledger times) as unix microseconds.
fn rfc3339_micros(value: &Option<String>) -> Option<String> {
    value.as_deref().map(|text| {
        Timestamp::parse_rfc3339(text)
            .unwrap_or_else(|| panic!("not RFC 3339: {text}"))
            .micros()
            .to_string()
    })
}

fn json(value: &Option<String>) -> Option<Value> {
    value
        .as_deref()
        .map(|text| serde_json::from_str(text).expect("JSON"))
}

const TABLES: [&str; 6] = [
    "deliveries",
    "delivery_payloads",
    "attempts",
    "sales",
    "orders",
    "order_events",
];

async fn counts(database: &TestDatabase) -> Vec<i64> {
    let mut counts = Vec::new();
    for table in TABLES {
        counts.push(
            database
                .count(&format!("SELECT COUNT(*) FROM {table}"))
                .await,
        );
    }
    counts
}

/// Everything the copy must carry over, read with SQL that both backends answer the same way
/// (times and JSON are compared separately, as values).
async fn same_rows(sqlite: &TestDatabase, postgres: &TestDatabase) {
    for sql in [
        "SELECT source, event_id, event_type, dedup_key, status, attempts, last_error, body_bytes \
         FROM deliveries ORDER BY id",
        "SELECT d.dedup_key, a.attempt, a.duration_us, a.outcome, a.error \
         FROM attempts a JOIN deliveries d ON d.id = a.delivery_id ORDER BY d.id, a.attempt",
        "SELECT id, source, cartpanda_id, customer_email, customer_name, product_name, \
         product_id, currency, status, affiliate_code, affiliate_name, payment_method, \
         transaction_id, price_minor, commission_minor FROM sales ORDER BY source, cartpanda_id",
        "SELECT o.source, o.order_number, o.product, o.email, o.status, o.tracking_number, \
         o.quantity, e.field, e.old_value, e.new_value FROM order_events e \
         JOIN orders o ON o.id = e.order_id ORDER BY e.delivery_id, e.field",
    ] {
        assert_eq!(sqlite.rows(sql).await, postgres.rows(sql).await, "{sql}");
    }

    let delivery_times = |micros: &dyn Fn(&str) -> String| {
        format!(
            "SELECT {}, {}, {} FROM deliveries ORDER BY id",
            micros("received_at"),
            micros("next_attempt_at"),
            micros("processed_at")
        )
    };
    let as_is = |column: &str| column.to_owned();
    assert_eq!(
        sqlite.rows(&delivery_times(&as_is)).await,
        postgres.rows(&delivery_times(&pg_micros)).await,
        "delivery times"
    );
    assert_eq!(
        sqlite
            .rows("SELECT a.started_at FROM attempts a ORDER BY a.delivery_id, a.attempt")
            .await,
        postgres
            .rows(&format!(
                "SELECT {} FROM attempts a JOIN deliveries d ON d.id = a.delivery_id \
                 ORDER BY d.id, a.attempt",
                pg_micros("a.started_at")
            ))
            .await,
        "attempt times"
    );

    let sqlite_payloads = sqlite
        .rows(
            "SELECT d.dedup_key, p.headers, p.body FROM delivery_payloads p \
             JOIN deliveries d ON d.id = p.delivery_id ORDER BY d.id",
        )
        .await;
    let postgres_payloads = postgres
        .rows(
            "SELECT d.dedup_key, p.headers::text, convert_from(p.body, 'UTF8') \
             FROM delivery_payloads p JOIN deliveries d ON d.id = p.delivery_id ORDER BY d.id",
        )
        .await;
    let payloads =
        |rows: Vec<Vec<Option<String>>>| -> Vec<(Option<String>, Option<Value>, Option<String>)> {
            rows.into_iter()
                .map(|row| (row[0].clone(), json(&row[1]), row[2].clone()))
                .collect()
        };
    assert_eq!(
        payloads(sqlite_payloads),
        payloads(postgres_payloads),
        "payloads: headers as JSON, bodies byte for byte"
    );

    let sales = "SELECT webhook_received_at, created_at, updated_at, status_event_at, metadata \
                 FROM sales ORDER BY source, cartpanda_id";
    let sqlite_sales: Vec<_> = sqlite
        .rows(sales)
        .await
        .into_iter()
        .map(|row| {
            let times: Vec<_> = row[..4].iter().map(rfc3339_micros).collect();
            (times, json(&row[4]))
        })
        .collect();
    let postgres_sales: Vec<_> = postgres
        .rows(&format!(
            "SELECT {}, {}, {}, {}, metadata::text FROM sales ORDER BY source, cartpanda_id",
            pg_micros("webhook_received_at"),
            pg_micros("created_at"),
            pg_micros("updated_at"),
            pg_micros("status_event_at")
        ))
        .await
        .into_iter()
        .map(|row| (row[..4].to_vec(), json(&row[4])))
        .collect();
    assert_eq!(sqlite_sales, postgres_sales, "sale times and metadata");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_installation_moves_to_postgres_whole_and_a_second_run_changes_nothing() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let clock = ManualClock::at(at(1_700_000_000));
    let app = TestApp::builder()
        .backend(Backend::Sqlite)
        .database_dir(dir.path())
        .manual_clock(clock.clone())
        .env("REFRACT_WEBHOOK_TOKEN", "t0k")
        .spawn()
        .await;
    let sqlite_path = dir.path().join("wharf.db");
    assert!(
        sqlite_path.is_file(),
        "the server keeps its database at {}",
        sqlite_path.display()
    );

    // Two sales, a duplicate, a payload that fails for good, an update that is retried until
    // its order exists, and one delivery left pending.
    for body in [
        sale_body("evt_1", "SALE_1", "sale.approved"),
        sale_body("evt_2", "SALE_2", "sale.approved"),
        sale_body("evt_1", "SALE_1", "sale.approved"),
        sale_body("evt_bad", "SALE_BAD", "sale.approved").replace("99.90", "\"ninety\""),
        ORDER_UPDATED.to_owned(),
    ] {
        assert_eq!(app.post_cartpanda(body).await.status(), 200);
    }
    app.run_pending().await;
    assert_eq!(app.post_cartpanda(ORDER_PAID).await.status(), 200);
    app.run_pending().await;
    clock.advance_millis(3_600_000);
    app.run_pending().await;
    // A provider's own ledger tables (Refract's orders and their history) travel too.
    for message in [
        "Successful Checkout | Store\nProduct\nKit\nPrice\n$10.00\nOrder Number\nR-1\n",
        "Order Update\nOrder Number\nR-1\nStatus\nshipped\nTracking Number\n1Z9\n",
    ] {
        let sent = app
            .client
            .post(format!("{}/api/v2/webhooks/orders?token=t0k", app.base))
            .body(message)
            .send()
            .await
            .expect("sent");
        assert_eq!(sent.status(), 200);
        app.run_pending().await;
    }
    assert_eq!(
        app.post_cartpanda(sale_body("evt_3", "SALE_3", "sale.approved"))
            .await
            .status(),
        200
    );
    let statuses = app
        .rows("SELECT status, attempts FROM deliveries ORDER BY id")
        .await;
    let statuses: Vec<(String, String)> = statuses
        .into_iter()
        .map(|row| {
            (
                row[0].clone().unwrap_or_default(),
                row[1].clone().unwrap_or_default(),
            )
        })
        .collect();
    let expected = [
        ("processed", "1"),
        ("processed", "1"),
        ("failed", "1"),
        ("processed", "2"),
        ("processed", "1"),
        ("processed", "1"),
        ("processed", "1"),
        ("pending", "0"),
    ];
    assert_eq!(
        statuses,
        expected.map(|(status, attempts)| (status.to_owned(), attempts.to_owned())),
        "the installation holds every kind of delivery"
    );

    let postgres = TestDatabase::fresh(Backend::Postgres).await;

    // A server still owns the file: the copy refuses before touching PostgreSQL.
    let refused = migrate(&sqlite_path, postgres.url()).await;
    assert!(!refused.status.success(), "copied from a live server");
    let stderr = text(&refused.stderr);
    assert!(
        stderr.contains("in use by a running wharf server"),
        "unclear refusal: {stderr}"
    );
    app.shutdown().await;

    let sqlite = TestDatabase::sqlite_in(dir.path());
    let expected_counts = counts(&sqlite).await;
    assert_eq!(expected_counts, [8, 8, 8, 3, 1, 7]);

    let first = migrate(&sqlite_path, postgres.url()).await;
    let stdout = text(&first.stdout);
    assert!(
        first.status.success(),
        "wharf migrate failed:\n{stdout}\n{}",
        text(&first.stderr)
    );
    assert_eq!(counts(&postgres).await, expected_counts);
    for (table, count) in TABLES.iter().zip(&expected_counts) {
        assert_eq!(summary(&stdout, table), (*count, 0), "{table}: {stdout}");
    }
    same_rows(&sqlite, &postgres).await;
    assert_eq!(
        postgres
            .one("SELECT price::text, commission_value::text FROM sales WHERE cartpanda_id = 'SALE_1'")
            .await,
        [Some("99.90".to_owned()), Some("29.97".to_owned())],
        "money is exact"
    );
    assert_eq!(
        postgres
            .one("SELECT price::text FROM sales WHERE cartpanda_id = '555'")
            .await,
        [Some("10.00".to_owned())]
    );
    assert_eq!(
        postgres
            .count("SELECT COUNT(*) FROM deliveries WHERE lease_token IS NOT NULL OR lease_until IS NOT NULL")
            .await,
        0,
        "leases are not copied"
    );

    let second = migrate(&sqlite_path, postgres.url()).await;
    let stdout = text(&second.stdout);
    assert!(
        second.status.success(),
        "second wharf migrate failed:\n{stdout}\n{}",
        text(&second.stderr)
    );
    assert_eq!(
        counts(&postgres).await,
        expected_counts,
        "the second run wrote"
    );
    for (table, count) in TABLES.iter().zip(&expected_counts) {
        assert_eq!(summary(&stdout, table), (0, *count), "{table}: {stdout}");
    }
    same_rows(&sqlite, &postgres).await;
}

#[tokio::test]
async fn from_and_to_must_name_the_right_engines() {
    let wrong = tokio::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args([
            "migrate",
            "--from",
            "postgres://u:hunter2@db/a",
            "--to",
            "sqlite:///tmp/x.db",
        ])
        .env_remove("RUST_BACKTRACE")
        .output()
        .await
        .expect("wharf migrate runs");
    assert!(!wrong.status.success());
    let stderr = text(&wrong.stderr);
    assert!(stderr.contains("--from must name"), "{stderr}");
    assert!(
        !stderr.contains("hunter2"),
        "the password was echoed: {stderr}"
    );
}

#[tokio::test]
async fn a_database_that_is_not_migrated_is_refused() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("old.db");
    rusqlite::Connection::open(&path)
        .and_then(|conn| conn.execute_batch("CREATE TABLE deliveries (id INTEGER PRIMARY KEY);"))
        .expect("an unmigrated database");
    // Refused before PostgreSQL is contacted, so the URL need not lead anywhere.
    let refused = migrate(&path, "postgres://nobody@127.0.0.1:1/none").await;
    assert!(!refused.status.success());
    let stderr = text(&refused.stderr);
    assert!(
        stderr.contains("schema version none") && stderr.contains("run `wharf migrate`"),
        "unclear refusal: {stderr}"
    );
}

/// The providers' own tables (seed 002's collections) move with the rest, keeping their ids,
/// documents and times; a second run finds them present.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_providers_ledger_tables_move_too() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let app = TestApp::builder()
        .backend(Backend::Sqlite)
        .database_dir(dir.path())
        .env("PANCAKE_API_KEY", "pk")
        .env("PANCAKE_POS_API_KEY", "pos")
        .spawn()
        .await;
    let deliveries = [
        (
            "/api/v1/pancake-pos/webhook/orders",
            "pos",
            r#"{"id":7,"shop_id":1,"status":0,"total_price":150000,"updated_at":"2024-11-14T03:00:00"}"#,
        ),
        (
            "/api/v1/pancake-pos/webhook/orders",
            "pos",
            r#"{"id":7,"shop_id":1,"status":1,"updated_at":"2024-11-14T05:00:00.123456"}"#,
        ),
        (
            "/api/v1/pancake-pos/webhook/variations",
            "pos",
            r#"{"id":"v-1","remain_quantity":3,"variations_warehouses":[{"warehouse_id":"w","remain_quantity":3}]}"#,
        ),
        (
            "/api/v1/pancake/webhook",
            "pk",
            r#"{"page_id":"p","event_type":"conversation","request_id":"r1","data":{"conversation":{"id":"p_1","version":4,"snippet":"Chào shop"}}}"#,
        ),
    ];
    for (path, key, body) in deliveries {
        let response = app
            .client
            .post(format!("{}{path}", app.base))
            .header("x-api-key", key)
            .body(body)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200, "{path}");
        app.run_pending().await;
    }
    app.shutdown().await;

    let sqlite = TestDatabase::sqlite_in(dir.path());
    let postgres = TestDatabase::fresh(Backend::Postgres).await;
    let sqlite_path = dir.path().join("wharf.db");
    let tables = [
        ("pc_pos_order", 1),
        ("pc_pos_order_status_history", 2),
        ("pc_pos_variation", 1),
        ("fb_conversation", 1),
        ("fb_message", 0),
    ];
    for run in [0, 1] {
        let output = migrate(&sqlite_path, postgres.url()).await;
        let stdout = text(&output.stdout);
        assert!(
            output.status.success(),
            "wharf migrate failed:\n{stdout}\n{}",
            text(&output.stderr)
        );
        for (table, rows) in tables {
            let expected = if run == 0 { (rows, 0) } else { (0, rows) };
            assert_eq!(
                summary(&stdout, table),
                expected,
                "{table} run {run}: {stdout}"
            );
        }
    }
    for sql in [
        "SELECT id, source, shop_id, order_id, status_code, status, total_price \
         FROM pc_pos_order",
        "SELECT id, shop_id, order_id, status_code, status FROM pc_pos_order_status_history \
         ORDER BY status_code",
        "SELECT id, variation_id, remain_quantity, shop_id FROM pc_pos_variation",
        "SELECT id, page_id, conversation_id, version FROM fb_conversation",
    ] {
        assert_eq!(sqlite.rows(sql).await, postgres.rows(sql).await, "{sql}");
    }
    for (table, column) in [
        ("pc_pos_order", "document"),
        ("pc_pos_order", "status_steps"),
        ("pc_pos_variation", "warehouse_stock"),
        ("fb_conversation", "document"),
    ] {
        let sql = format!("SELECT {column} FROM {table}");
        let sqlite_value = json(&sqlite.one(&sql).await[0]);
        let sql = format!("SELECT {column}::text FROM {table}");
        assert_eq!(
            sqlite_value,
            json(&postgres.one(&sql).await[0]),
            "{table}.{column}"
        );
    }
    let sqlite_times: Vec<_> = sqlite
        .rows("SELECT pos_updated_at, created_at, updated_at FROM pc_pos_order")
        .await[0]
        .iter()
        .map(rfc3339_micros)
        .collect();
    let postgres_times = postgres
        .one(&format!(
            "SELECT {}, {}, {} FROM pc_pos_order",
            pg_micros("pos_updated_at"),
            pg_micros("created_at"),
            pg_micros("updated_at")
        ))
        .await;
    assert_eq!(sqlite_times, postgres_times);
}

/// A token that worked before the move keeps working: its digest (all that is stored) moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_digests_move_too() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let app = TestApp::builder()
        .backend(Backend::Sqlite)
        .database_dir(dir.path())
        .without_env("WHARF_ADMIN_TOKEN")
        .spawn()
        .await;
    assert!(app.first_admin_token().is_some());
    app.shutdown().await;

    let sqlite = TestDatabase::sqlite_in(dir.path());
    let postgres = TestDatabase::fresh(Backend::Postgres).await;
    let output = migrate(&dir.path().join("wharf.db"), postgres.url()).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(summary(&text(&output.stdout), "admin_tokens"), (1, 0));
    let sql = "SELECT digest, label FROM admin_tokens";
    assert_eq!(sqlite.rows(sql).await, postgres.rows(sql).await);
}
