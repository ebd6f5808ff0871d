//! The command line as an operator meets it: `wharf config check`, `--help` with examples on
//! every command, one clear line (never a backtrace) for a user's mistake, and the example
//! config file read by the real loader.

use std::collections::BTreeMap;
use std::path::Path;

use wharf::config::Config;

use crate::trigger::wharf;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts a failed command: exit code 1 and exactly one line on stderr, `wharf: …`, that
/// contains `expected`; no panic and no backtrace even when one is asked for.
fn assert_one_line_error(output: &std::process::Output, expected: &str) {
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = text(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.starts_with("wharf: "), "{stderr}");
    assert!(stderr.contains(expected), "{stderr}");
    for noise in ["panicked", "backtrace", "Stack", "Caused by"] {
        assert!(!stderr.contains(noise), "{stderr}");
    }
}

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("wharf.toml");
    std::fs::write(&path, text).expect("config written");
    path.display().to_string()
}

#[tokio::test]
async fn config_check_lists_sources_urls_and_secrets_without_printing_them() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = write_config(
        dir.path(),
        "listen = \"127.0.0.1:9400\"\n[sources.billing]\nkind = \"standard-webhooks\"\n",
    );
    let output = wharf(
        &["config", "check", "--config", &config],
        &[
            ("WHARF_SOURCE_BILLING_SECRET", "whsec_aGVsbG8gd29ybGQ="),
            ("STRIPE_WEBHOOK_SECRET", "whsec_stripe-value"),
            ("CARTPANDA_WEBHOOK_SECRET", ""),
        ],
    )
    .await;
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
    assert!(stdout.contains(&format!("config    {config}")), "{stdout}");
    assert!(stdout.contains("  billing (secret present)"), "{stdout}");
    assert!(
        stdout.contains("POST http://127.0.0.1:9400/in/billing"),
        "{stdout}"
    );
    assert!(stdout.contains("  cartpanda (secret MISSING)"), "{stdout}");
    assert!(
        stdout.contains("POST http://127.0.0.1:9400/api/webhooks/stripe"),
        "{stdout}"
    );
    assert!(stdout.contains("configuration OK"), "{stdout}");
    assert!(!stdout.contains("aGVsbG8gd29ybGQ="), "{stdout}");
    assert!(!stdout.contains("stripe-value"), "{stdout}");
}

#[tokio::test]
async fn config_check_fails_on_an_invalid_file_or_a_declared_source_without_secret() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = write_config(dir.path(), "lisen = \"127.0.0.1:1\"\n");
    let invalid = wharf(
        &["config", "check", "--config", &config],
        &[("RUST_BACKTRACE", "1")],
    )
    .await;
    assert_one_line_error(&invalid, "lisen");

    let config = write_config(dir.path(), "[sources.shop]\nkind = \"hmac\"\n");
    let unusable = wharf(&["config", "check", "--config", &config], &[]).await;
    assert_eq!(unusable.status.code(), Some(1));
    assert!(text(&unusable.stderr).contains("shop"), "{unusable:?}");
}

#[tokio::test]
async fn a_user_error_is_one_line_and_exit_code_1_never_a_backtrace() {
    let bad_database = wharf(
        &["serve", "--database", "mysql://db/wharf"],
        &[("RUST_BACKTRACE", "full")],
    )
    .await;
    assert_one_line_error(&bad_database, "--database");

    let missing_file = wharf(
        &["serve", "--config", "/nonexistent/wharf.toml"],
        &[("RUST_BACKTRACE", "1")],
    )
    .await;
    assert_one_line_error(&missing_file, "/nonexistent/wharf.toml");

    let unknown_source = wharf(
        &["trigger", "nope", "x", "--url", "http://127.0.0.1:9"],
        &[],
    )
    .await;
    assert_one_line_error(&unknown_source, "no source named \"nope\"");

    let unknown_flag = wharf(&["serve", "--lisen", "127.0.0.1:1"], &[]).await;
    assert_eq!(
        unknown_flag.status.code(),
        Some(2),
        "clap's usage error code"
    );
    let stderr = text(&unknown_flag.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--lisen"), "{stderr}");
}

#[tokio::test]
async fn every_command_has_examples_in_its_help() {
    for command in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["migrate", "--help"],
        vec!["sign", "--help"],
        vec!["trigger", "--help"],
        vec!["config", "check", "--help"],
    ] {
        let output = wharf(&command, &[]).await;
        assert!(output.status.success(), "{command:?}: {output:?}");
        let help = text(&output.stdout);
        assert!(help.contains("Examples:"), "{command:?}:\n{help}");
    }
    let top = text(&wharf(&["--help"], &[]).await.stdout);
    assert!(top.contains("RUST_LOG"), "{top}");
    assert!(top.contains("--log-format"), "{top}");
}

/// The example file documents every section; it must load as it is, with the real loader.
#[test]
fn the_example_config_file_loads_with_the_real_loader() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("wharf.toml.example");
    let config = Config::load(Some(&path), &BTreeMap::<String, String>::new())
        .unwrap_or_else(|error| panic!("wharf.toml.example: {error}"));
    for declared in ["billing", "shop"] {
        assert!(
            config.sources.get(declared).is_some(),
            "the example declares [sources.{declared}]"
        );
    }
}
