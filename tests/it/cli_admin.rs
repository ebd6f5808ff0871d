//! `wharf replay` and `wharf export` against a running server's admin API.

use tokio::process::Command;

use crate::support::{sale_body, TestApp, ADMIN_TOKEN};

async fn wharf(args: &[&str], token: Option<&str>) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wharf"));
    // What a user sees: no backtrace variables set (`main` prints one line either way once it
    // formats errors itself).
    command
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("WHARF_ADMIN_TOKEN")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE");
    if let Some(token) = token {
        command.env("WHARF_ADMIN_TOKEN", token);
    }
    let output = command.output().await.expect("wharf runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_writes_every_row_and_replay_counts_then_replays() {
    let app = TestApp::spawn().await;
    for index in 0..3 {
        let body = sale_body(
            &format!("evt_{index}"),
            &format!("SALE_{index}"),
            "sale.approved",
        );
        assert_eq!(app.post_cartpanda(body).await.status(), 200);
    }
    let bad = sale_body("evt_bad", "SALE_BAD", "sale.approved").replace("99.90", "\"ninety\"");
    assert_eq!(app.post_cartpanda(bad).await.status(), 200);
    app.run_pending().await;
    let dir = tempfile::tempdir().expect("dir");

    let sales = dir.path().join("sales.csv");
    let sales_text = sales.to_str().expect("utf8 path");
    let (ok, stdout, stderr) = wharf(
        &[
            "export",
            "--url",
            &app.base,
            "--table",
            "sales",
            "--filter",
            "source=cartpanda",
            "--format",
            "csv",
            "--out",
            sales_text,
        ],
        Some(ADMIN_TOKEN),
    )
    .await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("3 rows"), "{stdout}");
    let csv = std::fs::read_to_string(&sales).expect("written");
    assert_eq!(csv.lines().count(), 4);
    assert!(csv.starts_with("id,source,cartpanda_id"));

    let deliveries = dir.path().join("failed.jsonl");
    let (ok, _, stderr) = wharf(
        &[
            "export",
            "--url",
            &app.base,
            "--status",
            "failed",
            "--format",
            "jsonl",
            "--out",
            deliveries.to_str().expect("utf8"),
        ],
        Some(ADMIN_TOKEN),
    )
    .await;
    assert!(ok, "{stderr}");
    let jsonl = std::fs::read_to_string(&deliveries).expect("written");
    let row: serde_json::Value =
        serde_json::from_str(jsonl.lines().next().expect("a line")).expect("json");
    assert_eq!(row["event_id"], "evt_bad");

    let (ok, stdout, stderr) = wharf(
        &[
            "replay",
            "--url",
            &app.base,
            "--status",
            "failed",
            "--dry-run",
        ],
        Some(ADMIN_TOKEN),
    )
    .await;
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), "1 deliveries would be replayed");
    let (ok, stdout, stderr) = wharf(
        &[
            "replay",
            "--url",
            &app.base,
            "--status",
            "failed",
            "--no-wait",
        ],
        Some(ADMIN_TOKEN),
    )
    .await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("1 deliveries replayed"), "{stdout}");
    assert_eq!(app.run_pending().await, 1, "back in line for the processor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_error_is_one_clear_line_without_a_backtrace() {
    let app = TestApp::spawn().await;
    let cases: [(&[&str], Option<&str>, &str); 4] = [
        (
            &["replay", "--url", &app.base, "--status", "dead"],
            None,
            "WHARF_ADMIN_TOKEN",
        ),
        (
            &["replay", "--url", &app.base, "--status", "dead"],
            Some("wrong"),
            "unauthorized",
        ),
        (
            &["replay", "--url", &app.base, "--status", "sleepy"],
            Some(ADMIN_TOKEN),
            "invalid_status",
        ),
        (
            &[
                "export",
                "--url",
                "http://127.0.0.1:9",
                "--format",
                "csv",
                "--out",
                "/tmp/x.csv",
            ],
            Some(ADMIN_TOKEN),
            "cannot reach",
        ),
    ];
    for (args, token, expected) in cases {
        let (ok, _, stderr) = wharf(args, token).await;
        assert!(!ok, "{args:?} fails");
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|line| !line.trim().is_empty())
            .collect();
        assert!(
            lines.iter().any(|line| line.contains(expected)),
            "{args:?}: {stderr}"
        );
        assert!(
            !stderr.contains("backtrace") && !stderr.contains("panicked"),
            "{stderr}"
        );
        assert!(lines.len() <= 2, "one clear line: {stderr}");
    }
}
