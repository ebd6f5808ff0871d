use std::io::Write as _;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support::{sale_body, TestApp};

/// A small tmpfs, unmounted on drop. Tests run as root (CI included); if mounting is not
/// possible this fails loudly rather than skipping.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().expect("mount point");
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("mount runs");
        assert!(
            output.status.success(),
            "this test fills a small tmpfs and needs to mount one (root with CAP_SYS_ADMIN): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a filler file until the filesystem is full.
    fn fill(&self) {
        let mut filler = std::fs::File::create(self.path().join("filler")).expect("filler");
        let chunk = vec![0u8; 64 * 1024];
        while filler
            .write_all(&chunk)
            .and_then(|()| filler.flush())
            .is_ok()
        {}
        let _ = filler.sync_all();
    }

    fn free(&self) {
        std::fs::remove_file(self.path().join("filler")).expect("filler removed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// SQLite only: the journal's file sits on a disk this test can fill. (PostgreSQL's disk is the
/// database server's, out of the test's reach.) The delivery log's segments are preallocated,
/// so acks go on into them while SQLite cannot grow; once the log has no room left, 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_answers_503_and_recovers_without_restart() {
    let tmpfs = Tmpfs::mount("32m");
    // A small log (four segments of 288 KiB), so that it fills soon after the disk does.
    let app = TestApp::builder()
        .database_dir(tmpfs.path())
        .env("WHARF_MAX_BODY_BYTES", "16384")
        .env("WHARF_LOG_SEGMENT_BYTES", "65536")
        .env("WHARF_LOG_MAX_SEGMENTS", "4")
        .spawn()
        .await;
    let mut acked = Vec::new();
    let first = app
        .post_cartpanda(sale_body("evt_before", "SALE_before", "sale.approved"))
        .await;
    assert_eq!(first.status(), 200);
    acked.push("evt_before".to_owned());

    tmpfs.fill();
    let mut refused = None;
    for index in 0..20_000 {
        let event = format!("evt_full_{index}");
        let response = app
            .post_cartpanda(sale_body(&event, &format!("SALE_{index}"), "sale.approved"))
            .await;
        match response.status().as_u16() {
            200 => acked.push(event),
            503 => {
                refused = Some(response);
                break;
            }
            other => panic!("unexpected status {other} while the disk is full"),
        }
    }
    let refused = refused.expect("a full disk must make ingest answer 503");
    assert!(refused.headers().get("retry-after").is_some());
    let answer: Value = refused.json().await.expect("json");
    assert_eq!(answer["error"]["code"], "journal_unavailable");
    let health = app.get("/health").await;
    assert_eq!(health.status(), 503);
    let health: Value = health.json().await.expect("json");
    assert_eq!(health["status"], "unhealthy");

    tmpfs.free();
    // As a provider does: retry until accepted. The log needs a new segment and SQLite
    // catches up with what the log kept meanwhile, both in the space just freed.
    let mut status = 0;
    for _ in 0..50 {
        status = app
            .post_cartpanda(sale_body("evt_after", "SALE_after", "sale.approved"))
            .await
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        status, 200,
        "ingest recovers once space is back, with no restart"
    );
    acked.push("evt_after".to_owned());
    let mut health = 0;
    for _ in 0..50 {
        health = app.get("/health").await.status().as_u16();
        if health == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(health, 200, "health recovers once SQLite has caught up");

    for event in &acked {
        let stored = app
            .count(&format!(
                "SELECT COUNT(*) FROM deliveries WHERE dedup_key = 'event:{event}'"
            ))
            .await;
        assert_eq!(stored, 1, "acked delivery {event} is in the journal");
    }
    app.shutdown().await;
}
