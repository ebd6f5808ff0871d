use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{on_both_backends, sale_body, sign, Backend, TestApp};

async fn post_signed(app: &TestApp, body: Vec<u8>) -> (u16, Value) {
    let response = app.post_cartpanda(body).await;
    let status = response.status().as_u16();
    (
        status,
        response.json().await.expect("error bodies are JSON"),
    )
}

on_both_backends!(bad_input_gets_a_clear_4xx_and_the_server_keeps_serving);

/// Declares a body over the limit and sends none of it: the server must refuse from the declared
/// length alone. (Streaming the whole body instead races the server's close: the client may get
/// a broken pipe while writing rather than the 413.)
async fn post_declaring_length(app: &TestApp, length: usize) -> (u16, Value) {
    let addr = app.base.strip_prefix("http://").expect("http base");
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    let head = format!(
        "POST /webhook/cartpanda HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         x-cartpanda-signature: {}\r\ncontent-length: {length}\r\nconnection: close\r\n\r\n",
        sign(b"unsent")
    );
    stream.write_all(head.as_bytes()).await.expect("head sent");
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("the server answers and closes without waiting for the body")
        .expect("response read");
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("an HTTP response: {response}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {head}"));
    let answer = serde_json::from_str(body).unwrap_or_else(|_| panic!("a JSON body: {response}"));
    (status, answer)
}

async fn bad_input_gets_a_clear_4xx_and_the_server_keeps_serving(backend: Backend) {
    let app = TestApp::spawn_on(backend).await;
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "malformed JSON",
            br#"{"id":"1","type":"sale.approved","data":"#.to_vec(),
            400,
            "invalid_json",
        ),
        (
            "deeply nested JSON",
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
            400,
            "json_too_deep",
        ),
        (
            "invalid UTF-8",
            b"{\"id\":\"\xff\xfe\",\"type\":\"sale.approved\"}".to_vec(),
            400,
            "invalid_utf8",
        ),
        ("empty body", Vec::new(), 400, "empty_body"),
        (
            "no event type",
            br#"{"hello":"world"}"#.to_vec(),
            400,
            "missing_field",
        ),
    ];
    for (label, body, status, code) in cases {
        let (got_status, answer) = post_signed(&app, body).await;
        assert_eq!(got_status, status, "{label}");
        assert_eq!(answer["error"]["code"], code, "{label}");
    }

    let (status, answer) = post_declaring_length(&app, 5 * 1024 * 1024).await;
    assert_eq!(status, 413);
    assert_eq!(answer["error"]["code"], "body_too_large");

    // Genuine-but-unparseable deliveries are kept, as failed, for an operator to see and replay.
    assert_eq!(
        app.count("SELECT COUNT(*) FROM deliveries WHERE status = 'failed'")
            .await,
        5
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM deliveries WHERE status <> 'failed'")
            .await,
        0
    );

    let health = app.get("/health").await;
    assert_eq!(health.status(), 200);
    let ok = app
        .post_cartpanda(sale_body("evt_ok", "SALE_OK", "sale.approved"))
        .await;
    assert_eq!(ok.status(), 200);
    app.run_pending().await;
    assert_eq!(app.count("SELECT COUNT(*) FROM sales").await, 1);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let app = TestApp::spawn().await;
    let missing = app
        .client
        .post(format!("{}/in/nope", app.base))
        .body("{}")
        .send()
        .await
        .expect("sent");
    assert_eq!(missing.status(), 404);
    let answer: Value = missing.json().await.expect("json");
    assert_eq!(answer["error"]["code"], "not_found");
    let wrong_method = app.get("/webhook/cartpanda").await;
    assert_eq!(wrong_method.status(), 405);
}

#[tokio::test]
async fn a_source_over_its_rate_limit_gets_429_with_retry_after() {
    let app = TestApp::builder()
        .toml("[cartpanda]\nrate_limit = { per_second = 1, burst = 2 }")
        .spawn()
        .await;
    let mut statuses = Vec::new();
    for index in 0..3 {
        let response = app
            .post_cartpanda(sale_body(
                &format!("e{index}"),
                &format!("S{index}"),
                "sale.approved",
            ))
            .await;
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            assert!(response.headers().get("retry-after").is_some());
        }
    }
    assert_eq!(statuses, vec![200, 200, 429]);
}
