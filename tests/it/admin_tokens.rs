//! Admin tokens: minted at first start when none is configured (only the digest stored), kept
//! across restarts, several from the configuration, and `wharf token create`.

use sha2::{Digest as _, Sha256};
use tokio::process::Command;

use crate::support::{on_both_backends, Backend, TestApp, TestDatabase, ADMIN_TOKEN};

on_both_backends!(
    the_first_start_without_a_token_mints_one_and_stores_only_its_digest,
    wharf_token_create_mints_a_token_a_running_server_accepts_on_postgres_or_after_a_restart,
);

async fn status_with(app: &TestApp, token: &str) -> u16 {
    app.client
        .get(format!("{}/api/stats", app.base))
        .bearer_auth(token)
        .send()
        .await
        .expect("sent")
        .status()
        .as_u16()
}

async fn the_first_start_without_a_token_mints_one_and_stores_only_its_digest(backend: Backend) {
    let app = TestApp::builder()
        .backend(backend)
        .without_env("WHARF_ADMIN_TOKEN")
        .spawn()
        .await;
    let token = app.first_admin_token().expect("a token was minted");
    assert!(token.starts_with("wharf_") && token.len() > 40, "{token}");
    assert_eq!(status_with(&app, &token).await, 200);
    assert_eq!(status_with(&app, ADMIN_TOKEN).await, 401);
    assert_eq!(app.get("/api/stats").await.status(), 401);
    let stored = app.rows("SELECT digest, label FROM admin_tokens").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0][0].as_deref(),
        Some(hex::encode(Sha256::digest(token.as_bytes())).as_str())
    );
    assert!(
        !format!("{stored:?}").contains(&token),
        "never the token itself"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_first_token_and_mints_no_other() {
    let dir = tempfile::tempdir().expect("dir");
    let first = TestApp::builder()
        .without_env("WHARF_ADMIN_TOKEN")
        .database_dir(dir.path())
        .spawn()
        .await;
    let token = first.first_admin_token().expect("minted");
    first.shutdown().await;
    let again = TestApp::builder()
        .without_env("WHARF_ADMIN_TOKEN")
        .database_dir(dir.path())
        .spawn()
        .await;
    assert_eq!(
        again.first_admin_token(),
        None,
        "printed once, at the first start"
    );
    assert_eq!(status_with(&again, &token).await, 200);
    assert_eq!(again.count("SELECT COUNT(*) FROM admin_tokens").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_configured_token_works_and_none_is_minted() {
    let app = TestApp::builder()
        .toml("admin_tokens = [\"first-file-token\", \"second-file-token\"]")
        .spawn()
        .await;
    assert_eq!(app.first_admin_token(), None);
    for token in [ADMIN_TOKEN, "first-file-token", "second-file-token"] {
        assert_eq!(status_with(&app, token).await, 200, "{token}");
    }
    for wrong in ["first-file-toke", "first-file-token2", "", " "] {
        assert_eq!(status_with(&app, wrong).await, 401, "{wrong:?}");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM admin_tokens").await, 0);
}

/// Runs `wharf token create` against a database; returns the printed token.
pub(crate) async fn token_create(database: &TestDatabase) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["token", "create", "--label", "ci"])
        .env("WHARF_DATABASE", database.url())
        .env_remove("WHARF_ADMIN_TOKEN")
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("wharf token create runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let token = String::from_utf8(output.stdout).expect("utf8");
    token.trim().to_owned()
}

async fn wharf_token_create_mints_a_token_a_running_server_accepts_on_postgres_or_after_a_restart(
    backend: Backend,
) {
    match backend {
        Backend::Postgres => {
            let app = TestApp::spawn_on(backend).await;
            let token = token_create(app.database()).await;
            assert!(token.starts_with("wharf_"), "{token}");
            assert_eq!(
                status_with(&app, &token).await,
                200,
                "accepted without a restart"
            );
            let label = app.one("SELECT label FROM admin_tokens").await;
            assert_eq!(label, [Some("ci".to_owned())]);
        }
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("dir");
            let database = TestDatabase::sqlite_in(dir.path());
            let token = token_create(&database).await;
            let app = TestApp::builder()
                .without_env("WHARF_ADMIN_TOKEN")
                .database_dir(dir.path())
                .spawn()
                .await;
            assert_eq!(app.first_admin_token(), None, "a token exists already");
            assert_eq!(status_with(&app, &token).await, 200);
            // While a server holds the SQLite database, the command says so in one line.
            let output = Command::new(env!("CARGO_BIN_EXE_wharf"))
                .args(["token", "create"])
                .env("WHARF_DATABASE", database.url())
                .env_remove("RUST_BACKTRACE")
                .env_remove("RUST_LIB_BACKTRACE")
                .env("RUST_LOG", "warn")
                .output()
                .await
                .expect("runs");
            assert!(!output.status.success());
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(stderr.contains("stop the server first"), "{stderr}");
            assert!(!stderr.contains("backtrace"), "{stderr}");
        }
    }
}
