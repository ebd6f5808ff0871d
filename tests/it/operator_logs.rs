//! What an operator reads: the real binary's start-up summary and log lines (rejections,
//! retries, dead deliveries; text without escape codes when stderr is a pipe, or JSON), and
//! every histogram in `/metrics` observed once a delivery is processed.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Child;
use wharf::cli::READY_PREFIX;

use crate::support::{
    on_both_backends, serve_command, sign, Backend, TestApp, TestDatabase, ADMIN_TOKEN, SECRET,
};

on_both_backends!(
    startup_summary_names_the_database_without_password_and_each_source_state,
    a_delivery_that_keeps_failing_warns_at_each_retry_and_errors_once_when_dead,
    every_histogram_in_metrics_is_observed_after_a_delivery_is_processed,
);

/// An update for an order that does not exist yet: retried until the order arrives.
const UPDATE_FOR_UNKNOWN_ORDER: &str = r#"{"event":"order.updated","order":{"id":555,"email":"late@example.com","updated_at":"2024-01-05T12:00:00Z","shop":{"slug":"s"}}}"#;

/// `wharf serve` with stderr captured: the whole log can be read once it has stopped.
struct LoggedServer {
    child: Child,
    base: String,
    stderr: tokio::task::JoinHandle<String>,
    log: Arc<parking_lot::Mutex<String>>,
    seen: Arc<tokio::sync::Notify>,
    _stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl LoggedServer {
    async fn start(database_url: &str, env: &[(&str, &str)], args: &[&str]) -> Self {
        Self::start_in(None, database_url, env, args).await
    }

    async fn start_in(
        dir: Option<&Path>,
        database_url: &str,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Self {
        let mut command = serve_command(database_url, env);
        command
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = dir {
            command.current_dir(dir);
        }
        let mut child = command.spawn().expect("wharf starts");
        let log = Arc::new(parking_lot::Mutex::new(String::new()));
        let seen = Arc::new(tokio::sync::Notify::new());
        let mut stderr = child.stderr.take().expect("stderr piped");
        let stderr = {
            let (log, seen) = (log.clone(), seen.clone());
            tokio::spawn(async move {
                let mut chunk = [0u8; 4096];
                loop {
                    match stderr.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            log.lock().push_str(&String::from_utf8_lossy(&chunk[..n]));
                            seen.notify_waiters();
                        }
                    }
                }
                let text = log.lock().clone();
                text
            })
        };
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout piped")).lines();
        let addr = loop {
            let line = stdout
                .next_line()
                .await
                .expect("stdout readable")
                .unwrap_or_else(|| panic!("wharf exited before its ready line: {}", log.lock()));
            if let Some(addr) = line.strip_prefix(READY_PREFIX) {
                break addr.to_owned();
            }
        };
        Self {
            child,
            base: format!("http://{addr}"),
            stderr,
            log,
            seen,
            _stdout: stdout,
        }
    }

    /// Waits until the log holds `needle` (the server logs it on its own schedule).
    async fn await_log(&self, needle: &str) {
        let wait = async {
            loop {
                let notified = self.seen.notified();
                if self.log.lock().contains(needle) {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .is_err()
        {
            panic!("the log never said {needle:?}:\n{}", self.log.lock());
        }
    }

    /// Kills the server and returns everything it wrote to stderr.
    async fn stop(mut self) -> String {
        self.child.kill().await.expect("killed");
        self.stderr.await.expect("stderr reader")
    }
}

fn lines_with<'a>(log: &'a str, parts: &[&str]) -> Vec<&'a str> {
    log.lines()
        .filter(|line| parts.iter().all(|part| line.contains(part)))
        .collect()
}

async fn post_signed(base: &str, body: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/webhook/cartpanda"))
        .header("content-type", "application/json")
        .header("x-cartpanda-signature", sign(body.as_bytes()))
        .body(body.to_owned())
        .send()
        .await
        .expect("request sent")
}

/// The test's PostgreSQL URL with a password in it (trust auth ignores it), so that the
/// summary has one to leave out.
fn with_password(url: &str) -> String {
    url.replacen("postgres://postgres@", "postgres://postgres:hunter2@", 1)
}

async fn startup_summary_names_the_database_without_password_and_each_source_state(
    backend: Backend,
) {
    let database = TestDatabase::fresh(backend).await;
    let url = match backend {
        Backend::Sqlite => database.url().to_owned(),
        Backend::Postgres => with_password(database.url()),
    };
    let env = [
        ("WHARF_SOURCE_GHOST_SECRET", "ghost-secret-value"),
        ("STRIPE_WEBHOOK_SECRET", ""),
    ];
    let server = LoggedServer::start(&url, &env, &[]).await;
    let log = server.stop().await;

    // Absolute already on SQLite; on PostgreSQL the URL without the password given.
    let shown = database.url().to_owned();
    assert!(
        lines_with(&log, &["database", &shown]).len() == 1,
        "database shown once as {shown}:\n{log}"
    );
    assert!(!log.contains("hunter2"), "{log}");
    assert_eq!(
        lines_with(&log, &["config", "none, environment only"]).len(),
        1,
        "{log}"
    );
    let cartpanda = lines_with(&log, &["cartpanda", "secret configured"]);
    assert_eq!(cartpanda.len(), 1, "{log}");
    assert_eq!(
        lines_with(&log, &["stripe", "MISSING: refusing traffic"]).len(),
        1,
        "{log}"
    );
    assert_eq!(
        lines_with(&log, &["POST /webhook/cartpanda", "POST /in/cartpanda"]).len(),
        1,
        "{log}"
    );
    let warning = lines_with(&log, &["WARN", "WHARF_SOURCE_GHOST_SECRET"]);
    assert_eq!(warning.len(), 1, "{log}");
    for secret in [SECRET, "ghost-secret-value", ADMIN_TOKEN] {
        assert!(!log.contains(secret), "a secret was logged:\n{log}");
    }
    assert!(
        !log.contains('\u{1b}'),
        "no escape codes on a pipe:\n{log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_override_the_environment_and_a_relative_database_is_shown_absolute() {
    let dir = tempfile::tempdir().expect("temporary directory");
    // The environment names a port the test cannot bind: --listen must win.
    let server = LoggedServer::start_in(
        Some(dir.path()),
        "sqlite://./ignored.db",
        &[("WHARF_LISTEN", "127.0.0.1:1")],
        &[
            "--listen",
            "127.0.0.1:0",
            "--database",
            "sqlite://./flag.db",
        ],
    )
    .await;
    let log = server.stop().await;
    let expected = format!("sqlite://{}", dir.path().join("flag.db").display());
    let database = lines_with(&log, &["database", "flag.db"]);
    assert_eq!(database.len(), 1, "{log}");
    let shown = database[0].split_whitespace().last().unwrap_or_default();
    assert_eq!(shown, expected, "{log}");
    assert!(dir.path().join("flag.db").exists());
    assert!(!dir.path().join("ignored.db").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_request_logs_one_warn_with_its_cause_and_never_the_secret_or_body() {
    let database = TestDatabase::fresh(Backend::Sqlite).await;
    let server = LoggedServer::start(database.url(), &[], &[]).await;
    let body = r#"{"id":"evt-1","type":"sale.approved","data":{"sale_id":"BODY-MARKER"}}"#;
    let forged = "f".repeat(64);
    let response = reqwest::Client::new()
        .post(format!("{}/webhook/cartpanda", server.base))
        .header("x-cartpanda-signature", &forged)
        .body(body)
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), 401);
    server.await_log("request rejected").await;
    let log = server.stop().await;

    let rejected = lines_with(&log, &["request rejected"]);
    assert_eq!(rejected.len(), 1, "{log}");
    let line = rejected[0];
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("source=cartpanda"), "{line}");
    assert!(line.contains("signature_mismatch"), "{line}");
    for leaked in [SECRET, "BODY-MARKER", forged.as_str()] {
        assert!(!log.contains(leaked), "{leaked} was logged:\n{log}");
    }
    assert!(!log.contains('\u{1b}'), "no escape codes on a pipe");
}

async fn a_delivery_that_keeps_failing_warns_at_each_retry_and_errors_once_when_dead(
    backend: Backend,
) {
    let database = TestDatabase::fresh(backend).await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = dir.path().join("wharf.toml");
    std::fs::write(
        &config,
        "[processor]\nbackoff_base_ms = 1\nbackoff_max_ms = 2\nbatch_window_ms = 1\n",
    )
    .expect("config written");
    let config = config.display().to_string();
    let server = LoggedServer::start(
        database.url(),
        &[("WHARF_MAX_ATTEMPTS", "3")],
        &["--config", &config],
    )
    .await;
    assert_eq!(
        post_signed(&server.base, UPDATE_FOR_UNKNOWN_ORDER)
            .await
            .status(),
        200
    );
    server.await_log("delivery is dead").await;
    let log = server.stop().await;

    assert_eq!(
        lines_with(&log, &["config", &config]).len(),
        1,
        "the summary names the file:\n{log}"
    );
    let retries = lines_with(&log, &["WARN", "retry scheduled", "next_attempt_at="]);
    assert_eq!(retries.len(), 2, "attempts 1 and 2 are retried:\n{log}");
    let dead = lines_with(&log, &["ERROR", "delivery is dead"]);
    assert_eq!(dead.len(), 1, "{log}");
    for line in retries.iter().chain(&dead) {
        assert!(line.contains("delivery.id=1"), "{line}");
        assert!(line.contains("source=cartpanda"), "{line}");
    }
    assert!(dead[0].contains("attempt=3"), "{}", dead[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_the_delivery_span() {
    let database = TestDatabase::fresh(Backend::Sqlite).await;
    let server = LoggedServer::start(
        database.url(),
        &[("WHARF_MAX_ATTEMPTS", "1"), ("WHARF_LOG_FORMAT", "json")],
        &[],
    )
    .await;
    let forged = reqwest::Client::new()
        .post(format!("{}/webhook/cartpanda", server.base))
        .header("x-cartpanda-signature", "00")
        .body("{}")
        .send()
        .await
        .expect("request sent");
    assert_eq!(forged.status(), 401);
    post_signed(&server.base, UPDATE_FOR_UNKNOWN_ORDER).await;
    server.await_log("delivery is dead").await;
    let log = server.stop().await;

    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line:?}")))
        .collect();
    let summary = lines
        .iter()
        .find(|line| {
            line["message"]
                .as_str()
                .is_some_and(|m| m.contains("MISSING"))
        })
        .expect("the summary is one JSON line");
    assert_eq!(summary["level"], "INFO");
    let rejected = lines
        .iter()
        .find(|line| {
            line["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("request rejected"))
        })
        .expect("rejection logged");
    assert_eq!(rejected["level"], "WARN");
    assert_eq!(rejected["source"], "cartpanda");
    assert!(rejected["cause"].as_str().is_some(), "{rejected}");
    let dead = lines
        .iter()
        .find(|line| line["level"] == "ERROR")
        .expect("dead delivery logged");
    assert_eq!(dead["span"]["name"], "delivery", "{dead}");
    assert_eq!(dead["span"]["delivery.id"], "1", "{dead}");
    assert_eq!(dead["span"]["source"], "cartpanda", "{dead}");
}

async fn every_histogram_in_metrics_is_observed_after_a_delivery_is_processed(backend: Backend) {
    let app = TestApp::spawn_on(backend).await;
    let body = crate::support::sale_body("evt-h", "SALE-H", "sale.approved");
    assert_eq!(app.post_cartpanda(body).await.status(), 200);
    assert_eq!(app.run_pending().await, 1);
    // SQLite's WAL syncs and checkpoints are periodic (at least once a second): they are
    // observed within a few seconds of the delivery, not at once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = app.get("/metrics").await.text().await.expect("metrics");
        let never_observed = histograms_never_observed(&metrics);
        if never_observed.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never observed: {never_observed:?}\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The histograms of a Prometheus exposition with a series whose count is zero.
fn histograms_never_observed(metrics: &str) -> Vec<String> {
    let histograms: Vec<&str> = metrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.strip_suffix(" histogram"))
        .collect();
    assert!(histograms.len() >= 3, "{metrics}");
    let mut never_observed = Vec::new();
    for name in histograms {
        let counts: Vec<u64> = metrics
            .lines()
            .filter(|line| line.starts_with(&format!("{name}_count")))
            .map(|line| {
                line.rsplit(' ')
                    .next()
                    .and_then(|count| count.parse().ok())
                    .unwrap_or_else(|| panic!("a count: {line}"))
            })
            .collect();
        assert!(!counts.is_empty(), "{name} has a count:\n{metrics}");
        if counts.contains(&0) {
            never_observed.push(name.to_owned());
        }
    }
    never_observed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_forged_requests_is_logged_once_a_second_not_once_each() {
    let database = TestDatabase::fresh(Backend::Sqlite).await;
    let server = LoggedServer::start(database.url(), &[], &[]).await;
    let client = reqwest::Client::new();
    for _ in 0..100 {
        let response = client
            .post(format!("{}/webhook/cartpanda", server.base))
            .header("x-cartpanda-signature", "0".repeat(64))
            .body("{}")
            .send()
            .await
            .expect("request sent");
        assert_eq!(response.status(), 401);
    }
    server.await_log("request rejected").await;
    let log = server.stop().await;
    let lines = lines_with(&log, &["request rejected", "signature_mismatch"]);
    assert!(
        !lines.is_empty() && lines.len() <= 10,
        "100 rejections in a few seconds are a few lines:\n{log}"
    );
}
