//! Ingress under abuse: slow, idle, oversized and half-closed connections, too many sockets for
//! the process's file limit, and bodies whose duplicate keys parsers read differently. Raw TCP,
//! so that the test controls every byte and every pause.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;
use wharf::cli::READY_PREFIX;

use crate::support::{
    on_both_backends, sale_body, sign, Backend, TestApp, TestDatabase, ADMIN_TOKEN, SECRET,
};

// What ingress refuses must leave no trace, or the trace it must leave, on either backend.
on_both_backends!(
    oversized_headers_are_refused_with_431_and_nothing_is_stored,
    duplicate_json_keys_are_refused_and_kept_as_failed,
);

/// `host:port` of a base URL.
fn host(base: &str) -> &str {
    base.strip_prefix("http://").expect("http base")
}

/// How a connection ended, as the client saw it.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// An orderly close (FIN).
    Closed,
    /// The server reset it (it closed with bytes of ours unread).
    Reset,
}

/// Reads until the server ends the connection; panics if it is still open after `limit`.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, Ended) {
    let mut received = Vec::new();
    let mut buf = [0u8; 8192];
    let outcome = tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return Ended::Closed,
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(_) => return Ended::Reset,
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the server kept the connection open longer than {limit:?}"));
    (received, outcome)
}

/// Reads one response (head and a `content-length` body) off a kept-alive connection.
async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut received = Vec::new();
    let mut buf = [0u8; 8192];
    let response = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length:"))
                    .and_then(|value| value.trim().parse().ok())
                    .unwrap_or(0);
                if received.len() >= end + 4 + length {
                    let status = head
                        .split(' ')
                        .nth(1)
                        .and_then(|code| code.parse().ok())
                        .unwrap_or_else(|| panic!("a status line: {head}"));
                    let body = String::from_utf8_lossy(&received[end + 4..end + 4 + length]);
                    return (status, body.into_owned());
                }
            }
            let n = stream.read(&mut buf).await.expect("response readable");
            assert!(n > 0, "connection closed mid-response: {received:?}");
            received.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("a response within 10 s");
    response
}

fn health_request(addr: &str) -> String {
    format!("GET /health HTTP/1.1\r\nhost: {addr}\r\n\r\n")
}

/// A signed CartPanda POST, whole, with `extra` header lines (each ending in CRLF).
fn signed_post(addr: &str, body: &str, extra: &str) -> Vec<u8> {
    format!(
        "POST /webhook/cartpanda HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         x-cartpanda-signature: {}\r\ncontent-length: {}\r\n{extra}\r\n{body}",
        sign(body.as_bytes()),
        body.len()
    )
    .into_bytes()
}

async fn deliveries(app: &TestApp, query: &str) -> Vec<Value> {
    let response = app.admin_get(&format!("/api/deliveries?{query}")).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("json");
    answer["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_headers_are_cut_off_while_health_answers() {
    let app = TestApp::builder()
        .toml("[limits]\nheader_read_timeout_ms = 300\nidle_timeout_ms = 30000")
        .spawn()
        .await;
    let addr = host(&app.base).to_owned();
    let mut attackers = Vec::new();
    for _ in 0..20 {
        let addr = addr.clone();
        attackers.push(tokio::spawn(async move {
            let stream = TcpStream::connect(&addr).await.expect("connects");
            let (mut reader, mut writer) = stream.into_split();
            let started = Instant::now();
            // Half a head, then one more byte every 50 ms: never a blank line.
            let trickle = tokio::spawn(async move {
                let head = format!("POST /webhook/cartpanda HTTP/1.1\r\nhost: {addr}\r\nx-a: ");
                if writer.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                for _ in 0..200 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if writer.write_all(b"a").await.is_err() {
                        return;
                    }
                }
            });
            let mut buf = [0u8; 1024];
            let ended = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    match reader.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            trickle.abort();
            assert!(ended.is_ok(), "a trickled head was still open after 5 s");
            started.elapsed()
        }));
    }
    // While the attackers trickle, the server answers on fresh connections.
    for _ in 0..3 {
        let health = app.get("/health").await;
        assert_eq!(health.status(), 200);
    }
    for attacker in attackers {
        let lasted = attacker.await.expect("attacker task");
        assert!(
            lasted >= Duration::from_millis(250) && lasted < Duration::from_secs(3),
            "cut off after {lasted:?}, expected about 300 ms"
        );
    }
    assert!(deliveries(&app, "").await.is_empty());
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_close_after_the_idle_timeout_not_the_header_timeout() {
    let app = TestApp::builder()
        .toml("[limits]\nheader_read_timeout_ms = 300\nidle_timeout_ms = 1500")
        .spawn()
        .await;
    let addr = host(&app.base).to_owned();

    // Silent from the start: closed once idle for 1.5 s.
    let mut silent = TcpStream::connect(&addr).await.expect("connects");
    let connected = Instant::now();

    // Kept alive: idle twice as long as the header timeout between two requests is fine.
    let mut kept = TcpStream::connect(&addr).await.expect("connects");
    kept.write_all(health_request(&addr).as_bytes())
        .await
        .expect("sent");
    assert_eq!(read_response(&mut kept).await.0, 200);
    tokio::time::sleep(Duration::from_millis(600)).await;
    kept.write_all(health_request(&addr).as_bytes())
        .await
        .expect("the connection is still open after 600 ms idle");
    assert_eq!(read_response(&mut kept).await.0, 200);
    let answered = Instant::now();

    let (rest, _) = read_until_closed(&mut kept, Duration::from_secs(10)).await;
    assert!(rest.is_empty(), "nothing more is sent: {rest:?}");
    let idle = answered.elapsed();
    assert!(
        idle >= Duration::from_millis(1300) && idle < Duration::from_secs(6),
        "kept-alive connection closed after {idle:?} idle, expected about 1.5 s"
    );

    let (bytes, _) = read_until_closed(&mut silent, Duration::from_secs(10)).await;
    assert!(bytes.is_empty());
    let silent_for = connected.elapsed();
    assert!(
        silent_for >= Duration::from_millis(1300) && silent_for < Duration::from_secs(6),
        "silent connection closed after {silent_for:?}, expected about 1.5 s"
    );
    app.shutdown().await;
}

async fn oversized_headers_are_refused_with_431_and_nothing_is_stored(backend: Backend) {
    let app = TestApp::spawn_on(backend).await;
    let addr = host(&app.base).to_owned();
    let body = sale_body("evt_big_head", "SALE_BIG", "sale.approved");

    // 100 KB of headers on a genuine, signed delivery.
    let padding: String = (0..4)
        .map(|index| format!("x-pad-{index}: {}\r\n", "a".repeat(25_000)))
        .collect();
    let mut stream = TcpStream::connect(&addr).await.expect("connects");
    // The server may close before it has read everything; a failed write is part of the answer.
    let _ = stream.write_all(&signed_post(&addr, &body, &padding)).await;
    let (response, ended) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    let response = String::from_utf8_lossy(&response);
    if !(response.is_empty() && ended == Ended::Reset) {
        // (A reset can beat the answer to the client: the server closes with bytes unread.)
        assert!(
            response.starts_with("HTTP/1.1 431"),
            "expected a 431, got {ended:?}: {response:?}"
        );
        let body = response.split_once("\r\n\r\n").map(|(_, body)| body);
        let answer: Value = serde_json::from_str(body.unwrap_or_default()).expect("a JSON body");
        assert_eq!(answer["error"]["code"], "headers_too_large", "{answer}");
    }

    // Under the limit (40 KB of headers) the same delivery is accepted, and the limit is per
    // request: a second such request on the same connection is answered too.
    let padding = format!("x-pad: {}\r\n", "a".repeat(40_000));
    let mut stream = TcpStream::connect(&addr).await.expect("connects");
    for duplicate in [false, true] {
        stream
            .write_all(&signed_post(&addr, &body, &padding))
            .await
            .expect("sent");
        let (status, answer) = read_response(&mut stream).await;
        assert_eq!(status, 200, "{answer}");
        assert!(
            answer.contains(&format!(r#""duplicate":{duplicate}"#)),
            "{answer}"
        );
    }
    let stored = deliveries(&app, "").await;
    assert_eq!(
        stored.len(),
        1,
        "only the delivery under the limit is stored"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_half_closes_after_its_request_still_gets_the_answer() {
    let app = TestApp::spawn().await;
    let addr = host(&app.base).to_owned();
    let body = sale_body("evt_half_close", "SALE_HALF", "sale.approved");
    let mut stream = TcpStream::connect(&addr).await.expect("connects");
    stream
        .write_all(&signed_post(&addr, &body, ""))
        .await
        .expect("sent");
    stream.shutdown().await.expect("write side shut down");
    let (response, ended) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    let response = String::from_utf8_lossy(&response);
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "got {ended:?}: {response:?}"
    );
    assert!(response.contains(r#""duplicate":false"#), "{response}");
    assert_eq!(deliveries(&app, "status=pending").await.len(), 1);
    app.shutdown().await;
}

async fn duplicate_json_keys_are_refused_and_kept_as_failed(backend: Backend) {
    let app = TestApp::spawn_on(backend).await;
    let clean = sale_body("evt_dup", "SALE_DUP", "sale.approved");
    let cases = [
        (
            clean.replacen(
                r#""id":"evt_dup","#,
                r#""id":"evt_dup","id":"evt_other","#,
                1,
            ),
            r#"key "id" appears twice at the top level"#,
        ),
        (
            clean.replacen(
                r#""sale_id":"SALE_DUP","#,
                r#""sale_id":"SALE_DUP","sale_id":"SALE_OTHER","#,
                1,
            ),
            r#"key "sale_id" appears twice at /data"#,
        ),
        (
            clean.replacen(r#""price":99.90"#, r#""price":99.90,"price":0.01"#, 1),
            r#"key "price" appears twice at /data/product"#,
        ),
    ];
    for (body, message) in &cases {
        assert_ne!(body, &clean, "the case changed the body");
        let response = app.post_cartpanda(body.clone()).await;
        assert_eq!(response.status(), 400, "{message}");
        let answer: Value = response.json().await.expect("json");
        assert_eq!(answer["error"]["code"], "duplicate_json_key", "{answer}");
        let said = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(said.contains(message), "{said:?} names {message:?}");
    }
    // The provider's retry of the same bytes is the same failed row.
    let retry = app.post_cartpanda(cases[2].0.clone()).await;
    assert_eq!(retry.status(), 400);

    let failed = deliveries(&app, "status=failed").await;
    assert_eq!(failed.len(), 3, "{failed:?}");
    for delivery in &failed {
        let error = delivery["last_error"].as_str().unwrap_or_default();
        assert!(error.starts_with("duplicate_json_key"), "{error}");
    }
    assert_eq!(deliveries(&app, "").await.len(), 3, "nothing else stored");

    let ok = app.post_cartpanda(clean).await;
    assert_eq!(ok.status(), 200);
    app.run_pending().await;
    let sale = app.one("SELECT price_minor FROM sales").await;
    assert_eq!(sale[0].as_deref(), Some("9990"));
    app.shutdown().await;
}

/// Whether the server has closed (or reset) a connection we never wrote on, without waiting.
fn is_closed(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 16];
    match stream.try_read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(error) => error.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// Lines a child process writes to stderr, collected as they come.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn contains(&self, needle: &str) -> bool {
        self.0
            .lock()
            .map(|lines| lines.iter().any(|line| line.contains(needle)))
            .unwrap_or(false)
    }

    async fn wait_for(&self, needle: &str, limit: Duration) {
        let started = Instant::now();
        while !self.contains(needle) {
            assert!(
                started.elapsed() < limit,
                "the server never logged {needle:?}; it logged: {:?}",
                self.0.lock().map(|lines| lines.clone()).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_beyond_the_open_file_limit_never_take_health_offline() {
    const OPEN_FILES: usize = 256;
    const ATTACKERS: usize = 400;
    let temp = tempfile::tempdir().expect("temporary directory");
    let database = TestDatabase::sqlite_in(temp.path());
    // The real binary with a low open-file limit, as under systemd's default 1024 but smaller.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {OPEN_FILES} && exec \"$0\" serve"))
        .arg(env!("CARGO_BIN_EXE_wharf"))
        .env("WHARF_LISTEN", "127.0.0.1:0")
        .env("WHARF_DATABASE", database.url())
        .env("CARTPANDA_WEBHOOK_SECRET", SECRET)
        .env("WHARF_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("RUST_LOG", "warn")
        .env("WHARF_LOG_SEGMENT_BYTES", "1048576")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("wharf starts under sh");
    let log = Log::default();
    let stderr = child.stderr.take().expect("stderr piped");
    let collected = log.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("wharf: {line}");
            if let Ok(mut all) = collected.0.lock() {
                all.push(line);
            }
        }
    });
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout piped")).lines();
    let addr = loop {
        let line = tokio::time::timeout(Duration::from_secs(30), stdout.next_line())
            .await
            .expect("ready within 30 s")
            .expect("stdout readable")
            .expect("wharf printed its ready line before exiting");
        if let Some(addr) = line.strip_prefix(READY_PREFIX) {
            break addr.to_owned();
        }
    };
    log.wait_for("connection cap lowered", Duration::from_secs(5))
        .await;

    // More idle sockets than the server has file descriptors.
    let mut attackers = Vec::with_capacity(ATTACKERS);
    for _ in 0..ATTACKERS {
        attackers.push(TcpStream::connect(&addr).await.expect("the kernel accepts"));
    }
    log.wait_for("connection cap reached", Duration::from_secs(10))
        .await;

    // A fresh connection is answered, again and again, while the attackers hold theirs.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    for _ in 0..5 {
        let health = client
            .get(format!("http://{addr}/health"))
            .send()
            .await
            .expect("health answered");
        assert_eq!(health.status(), 200);
    }
    let body = sale_body("evt_under_siege", "SALE_SIEGE", "sale.approved");
    let stored = client
        .post(format!("http://{addr}/webhook/cartpanda"))
        .header("content-type", "application/json")
        .header("x-cartpanda-signature", sign(body.as_bytes()))
        .body(body)
        .send()
        .await
        .expect("delivery answered");
    assert_eq!(stored.status(), 200);

    // The server closed the oldest idle sockets to stay under its cap.
    let cap = OPEN_FILES - 64;
    let started = Instant::now();
    loop {
        let closed = attackers.iter().filter(|stream| is_closed(stream)).count();
        if closed >= ATTACKERS - cap {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "only {closed} of {ATTACKERS} idle sockets closed; the cap is {cap}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        child.try_wait().expect("child status").is_none(),
        "the server is still running"
    );
    child.kill().await.expect("killed");
}
