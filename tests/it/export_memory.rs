//! An export of 100,000 ledger rows streams in constant memory: the real server's anonymous
//! resident memory (`RssAnon` in `/proc/PID/status`: its heap, not the database file it maps),
//! sampled after every chunk received, is flat once the stream is under way. What the first
//! pages cost (buffers, allocator arenas of the threads that run it) is paid once; memory that
//! grew with the export would keep growing through its last three quarters.

use tokio::process::Command;

use crate::support::{on_both_backends, Backend, BinaryServer, TestDatabase, ADMIN_TOKEN};

on_both_backends!(a_100k_row_export_streams_without_memory_growth);

const ROWS: u64 = 100_000;
/// The most the server's resident memory may grow over the whole export (start-up of the
/// stream included): a sanity bound, far below the export's size.
const PEAK_GROWTH_BOUND: u64 = 64 << 20;
/// The most it may grow after the first quarter of the export, while three quarters (over
/// 50 MiB) still stream: a buffer that grew with the export would exceed it three times over.
/// Not tighter, because what a page costs is not one fixed sum: each page (1,000 rows held as
/// JSON maps) is read on whichever blocking thread is free and written on whichever worker
/// polls the stream, and the allocator keeps what each thread freed. On a loaded machine the
/// late growth was seen between 0 and 5.6 MiB, and past 8 MiB in one full-suite run of six.
const LATE_GROWTH_BOUND: u64 = 16 << 20;

/// Fills `sales` with `ROWS` rows of about 600 bytes each, straight into the database while no
/// server runs (the test's fixture, not a path the product takes).
async fn fill_sales(database: &TestDatabase) {
    match database.sqlite_path() {
        Some(path) => {
            let conn = rusqlite::Connection::open(path).expect("open the database");
            conn.execute_batch(&format!(
                "INSERT INTO sales (id, source, cartpanda_id, customer_email, customer_name, \
                 product_name, price, currency, status, price_minor, metadata, created_at, \
                 updated_at, webhook_received_at) \
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS}) \
                 SELECT printf('00000000-0000-7000-8000-%012d', i), 'cartpanda', \
                 printf('SALE_%06d', i), 'buyer@example.com', 'John Doe', 'Product Name', \
                 '99.90', 'BRL', 'approved', 9990, \
                 '{{\"note\":\"' || hex(randomblob(250)) || '\"}}', \
                 '2024-01-05T10:30:00.000000Z', '2024-01-05T10:30:00.000000Z', \
                 '2024-01-05T10:30:00.000000Z' FROM n"
            ))
            .expect("fill sales");
        }
        None => {
            database
                .rows(&format!(
                    "INSERT INTO sales (source, cartpanda_id, customer_email, customer_name, \
                     product_name, price, currency, status, price_minor, metadata, created_at) \
                     SELECT 'cartpanda', 'SALE_' || lpad(i::text, 6, '0'), 'buyer@example.com', \
                     'John Doe', 'Product Name', 99.90, 'BRL', 'approved', 9990, \
                     jsonb_build_object('note', repeat(md5(i::text), 16)), \
                     '2024-01-05T10:30:00Z' FROM generate_series(1, {ROWS}) AS i"
                ))
                .await;
        }
    }
}

/// A field of `/proc/PID/status`, in bytes.
fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let line = status
        .lines()
        .find(|line| line.starts_with(field))
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|value| value.parse().ok())
        .expect("a number of kB");
    kib * 1024
}

/// What one download saw.
struct Download {
    bytes: u64,
    lines: u64,
    /// The highest `RssAnon` sampled.
    peak: u64,
    /// The highest `RssAnon` sampled until a quarter of `expected_bytes` had arrived.
    peak_first_quarter: u64,
}

/// Downloads an export chunk by chunk, keeping only counts; samples the server's `RssAnon`
/// after each chunk.
async fn download(client: &reqwest::Client, url: &str, pid: u32, expected_bytes: u64) -> Download {
    let mut response = client
        .get(url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("export starts");
    assert_eq!(response.status(), 200);
    let mut seen = Download {
        bytes: 0,
        lines: 0,
        peak: 0,
        peak_first_quarter: 0,
    };
    while let Some(chunk) = response.chunk().await.expect("export continues") {
        seen.bytes += chunk.len() as u64;
        seen.lines += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
        let rss = proc_status_bytes(pid, "RssAnon:");
        seen.peak = seen.peak.max(rss);
        if seen.bytes <= expected_bytes / 4 {
            seen.peak_first_quarter = seen.peak;
        }
    }
    seen.peak = seen.peak.max(proc_status_bytes(pid, "RssAnon:"));
    seen
}

async fn a_100k_row_export_streams_without_memory_growth(backend: Backend) {
    let database = TestDatabase::fresh(backend).await;
    let migrated = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .arg("migrate")
        .env("WHARF_DATABASE", database.url())
        .env("RUST_LOG", "warn")
        .status()
        .await
        .expect("wharf migrate runs");
    assert!(migrated.success());
    fill_sales(&database).await;

    let server = BinaryServer::start(database.url(), &[]).await;
    let pid = server.child.id().expect("server pid");
    let client = reqwest::Client::new();
    // Warm up what any export uses once (connections, prepared statements, buffers).
    let warm = download(
        &client,
        &format!(
            "{}/api/ledger/sales?format=csv&limit=5&status=nothing",
            server.base
        ),
        pid,
        0,
    )
    .await;
    assert_eq!(warm.lines, 1, "only the header");
    let before = proc_status_bytes(pid, "RssAnon:");

    // Each CSV row is about 700 bytes: a quarter is past well before 15 MiB.
    let seen = download(
        &client,
        &format!("{}/api/ledger/sales?format=csv", server.base),
        pid,
        ROWS * 600,
    )
    .await;
    let growth = seen.peak.saturating_sub(before);
    let late_growth = seen.peak.saturating_sub(seen.peak_first_quarter);
    eprintln!(
        "export of {ROWS} rows: {} MiB streamed; server anonymous RSS {} MiB before, {} MiB \
         after the first quarter, peak {} MiB (+{} KiB in all, +{} KiB after the first \
         quarter); VmHWM {} MiB (with the mapped database file)",
        seen.bytes >> 20,
        before >> 20,
        seen.peak_first_quarter >> 20,
        seen.peak >> 20,
        growth >> 10,
        late_growth >> 10,
        proc_status_bytes(pid, "VmHWM:") >> 20
    );
    assert_eq!(seen.lines, ROWS + 1, "a header and every row");
    assert!(
        seen.bytes > PEAK_GROWTH_BOUND,
        "the export ({} bytes) is large enough for the bounds to mean something",
        seen.bytes
    );
    assert!(
        growth < PEAK_GROWTH_BOUND,
        "anonymous RSS grew by {growth} bytes while streaming {} bytes",
        seen.bytes
    );
    assert!(
        late_growth < LATE_GROWTH_BOUND,
        "anonymous RSS grew by {late_growth} bytes over the last three quarters of the export"
    );
    server.kill_9().await;
}
