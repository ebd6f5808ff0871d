//! `wharf trigger`: every sample of every source, signed from the same environment as the
//! server, is accepted by a running `wharf serve` and processed into the ledger.

use std::process::Output;

use crate::support::{on_both_backends, Backend, BinaryServer, TestDatabase, SECRET};

on_both_backends!(every_sample_of_every_source_is_accepted_and_processed);

/// The secrets of every built-in source that can sign a sample (CartPanda's comes with
/// `serve_command`).
const SECRETS: &[(&str, &str)] = &[
    ("CARTPANDA_WEBHOOK_SECRET", SECRET),
    ("REFRACT_WEBHOOK_TOKEN", "rfr-token"),
    ("PANCAKE_API_KEY", "pk-key"),
    ("PANCAKE_POS_API_KEY", "pos-key"),
    ("STRIPE_WEBHOOK_SECRET", "whsec_trigger"),
    ("PAYSTACK_SECRET_KEY", "sk_test_trigger"),
    ("TRADINGVIEW_WEBHOOK_SECRET", "tv-secret"),
];

/// `wharf ARGS` with the test's secrets, outside the repository (no stray wharf.toml).
pub async fn wharf(args: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_wharf"));
    command
        .args(args)
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .env_remove("WHARF_LOG_FORMAT");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().await.expect("wharf runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `source event` pairs from `wharf trigger --list`.
fn samples(list: &str) -> Vec<(String, String)> {
    list.lines()
        .filter(|line| !line.contains("(no samples"))
        .filter_map(|line| line.split_once(' '))
        .flat_map(|(source, events)| {
            events
                .trim()
                .split(", ")
                .map(|event| (source.to_owned(), event.trim().to_owned()))
                .collect::<Vec<_>>()
        })
        .collect()
}

async fn every_sample_of_every_source_is_accepted_and_processed(backend: Backend) {
    let database = TestDatabase::fresh(backend).await;
    let server = BinaryServer::start(database.url(), SECRETS).await;
    let listed = wharf(&["trigger", "--list"], SECRETS).await;
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let list = text(&listed.stdout);
    let samples = samples(&list);
    for kind in [
        "cartpanda",
        "refract",
        "pancake",
        "pancake-pos",
        "stripe",
        "paystack",
        "tradingview",
    ] {
        assert!(
            samples.iter().any(|(source, _)| source == kind),
            "{kind} has samples:\n{list}"
        );
    }
    assert!(
        samples.len() >= 20,
        "every Stripe fixture is a sample:\n{list}"
    );

    for (source, event) in &samples {
        let sent = wharf(&["trigger", source, event, "--url", &server.base], SECRETS).await;
        assert!(
            sent.status.success(),
            "wharf trigger {source} {event}: {}{}",
            text(&sent.stdout),
            text(&sent.stderr)
        );
        assert!(
            text(&sent.stdout).contains("-> 2"),
            "{}",
            text(&sent.stdout)
        );
    }

    server.await_idle(&reqwest::Client::new()).await;
    let rows = database
        .rows("SELECT source, event_type, status, last_error FROM deliveries ORDER BY id")
        .await;
    assert_eq!(
        rows.len(),
        samples.len(),
        "one delivery per trigger: {rows:?}"
    );
    for row in &rows {
        assert_eq!(
            row[2].as_deref(),
            Some("processed"),
            "every sample reaches the ledger: {row:?}"
        );
    }
}

#[tokio::test]
async fn paypal_cannot_be_signed_here_and_says_so_in_one_line() {
    let output = wharf(
        &[
            "trigger",
            "paypal",
            "PAYMENT.CAPTURE.COMPLETED",
            "--url",
            "http://127.0.0.1:9",
        ],
        &[("PAYPAL_WEBHOOK_ID", "WH-1")],
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("wharf: "), "{stderr}");
    assert!(stderr.contains("Simulator"), "{stderr}");
}

#[tokio::test]
async fn a_sample_without_its_secret_names_the_setting() {
    let output = wharf(
        &[
            "trigger",
            "stripe",
            "invoice.paid",
            "--url",
            "http://127.0.0.1:9",
        ],
        &[("STRIPE_WEBHOOK_SECRET", "")],
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("STRIPE_WEBHOOK_SECRET"), "{stderr}");
}
