//! Seed 004 (TradingView alerts) over HTTP: the secret in the body, validation, the risk rules
//! and the paper broker through the processor, and the OKX adapter against a fake OKX.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing;
use axum::{Json, Router};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use secrecy::SecretString;
use serde_json::{json, Value};
use sha2::Sha256;
use wharf::clock::{ManualClock, Timestamp};
use wharf::lookup::{LookupSettings, ProviderApi};
use wharf::sources::tradingview::execution::{
    ExecutionAdapter, ExecutionError, Okx, OkxCredentials, OrderRequest,
};
use wharf::sources::tradingview::{Amount, Side};

use crate::support::{on_both_backends, Backend, BinaryServer, TestApp, TestDatabase};

on_both_backends!(
    the_seed_curl_example_is_acknowledged_then_filled_by_the_paper_broker,
    a_wrong_or_missing_secret_is_401_and_per_user_secrets_select_the_user,
    a_text_plain_alert_with_a_secret_line_is_a_signal,
    unrendered_placeholders_are_400_naming_them,
    risk_rule_rejections_are_recorded_with_their_reasons,
    a_buy_then_sell_ends_flat_with_the_right_realised_pnl,
    okx_users_orders_are_placed_after_the_commit_and_okxs_answer_recorded,
    an_okx_buy_then_close_ends_flat_with_the_right_realised_pnl,
    the_max_position_rule_counts_what_okx_filled,
    a_kill_between_the_signals_commit_and_its_follow_up_still_places_the_order_once,
);

const SECRET: &str = "your-secret-key";

/// Seed 004's "Test TradingView Webhook" curl body, byte for byte.
const SEED_CURL_BODY: &str = r#"{
    "symbol": "BTCUSDT",
    "action": "buy",
    "price": "37000",
    "secret": "your-secret-key"
  }"#;

async fn app(backend: Backend, toml: &str) -> TestApp {
    TestApp::builder()
        .backend(backend)
        .env("TRADINGVIEW_WEBHOOK_SECRET", SECRET)
        .toml(toml)
        .spawn()
        .await
}

async fn post(app: &TestApp, query: &str, content_type: &str, body: &str) -> reqwest::Response {
    app.client
        .post(format!("{}/api/tradingview/webhook{query}", app.base))
        .header("content-type", content_type)
        .body(body.to_owned())
        .send()
        .await
        .expect("sent")
}

async fn post_json(app: &TestApp, body: Value) -> reqwest::Response {
    post(app, "", "application/json", &body.to_string()).await
}

fn alert(symbol: &str, action: &str, price: &str) -> Value {
    json!({ "symbol": symbol, "action": action, "price": price, "secret": SECRET })
}

const SIGNALS: &str = "SELECT user_id, symbol, action, status, reason FROM trading_signals \
                       ORDER BY delivery_id";

async fn the_seed_curl_example_is_acknowledged_then_filled_by_the_paper_broker(backend: Backend) {
    let app = app(backend, "").await;
    let response = post(&app, "", "application/json", SEED_CURL_BODY).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["status"], "success");
    assert_eq!(body["event_type"], "signal.buy");
    assert!(!body.to_string().contains(SECRET), "{body}");
    // Acknowledged once stored: nothing is decided before the processor runs.
    assert_eq!(app.count("SELECT COUNT(*) FROM trading_signals").await, 0);
    assert_eq!(app.run_pending().await, 1);
    let signal = app.one(SIGNALS).await;
    assert_eq!(
        signal,
        [
            Some("default".into()),
            Some("BTCUSDT".into()),
            Some("buy".into()),
            Some("accepted".into()),
            None
        ]
    );
    let order = app
        .one("SELECT side, quantity, price, notional, broker, status FROM trading_orders")
        .await;
    assert_eq!(
        order,
        ["buy", "1", "37000", "37000", "paper", "filled"].map(|s| Some(s.to_owned()))
    );
    let fill = app
        .one("SELECT position_after, average_price_after, realized_pnl FROM trading_fills")
        .await;
    assert_eq!(fill, ["1", "37000", "0"].map(|s| Some(s.to_owned())));
    let account = app
        .one("SELECT user_id, positions, orders_count FROM trading_positions")
        .await;
    assert_eq!(account[0].as_deref(), Some("default"));
    let positions: Value = serde_json::from_str(account[1].as_deref().unwrap_or("")).expect("json");
    assert_eq!(positions["BTCUSDT"]["quantity"], "1");
    assert_eq!(positions["BTCUSDT"]["average_price"], "37000");
    assert_eq!(account[2].as_deref(), Some("1"));
    // Nothing the processor wrote holds the secret.
    for table in [
        "trading_signals",
        "trading_orders",
        "trading_fills",
        "trading_positions",
    ] {
        let found = app
            .rows(&format!("SELECT * FROM {table}"))
            .await
            .concat()
            .into_iter()
            .flatten()
            .any(|cell| cell.contains(SECRET));
        assert!(!found, "{table} holds the secret");
    }
    assert_no_secret_in_the_journal(&app).await;
}

/// The journal's copy of every body has the secret replaced; the rest is kept.
async fn assert_no_secret_in_the_journal(app: &TestApp) {
    let sql = match app.state().storage.backend {
        Backend::Postgres => "SELECT convert_from(p.body, 'UTF8') FROM delivery_payloads p",
        Backend::Sqlite => "SELECT CAST(p.body AS TEXT) FROM delivery_payloads p",
    };
    let bodies = app.rows(sql).await;
    assert!(!bodies.is_empty());
    for body in bodies.concat().into_iter().flatten() {
        assert!(
            !body.contains(SECRET),
            "stored body holds the secret: {body}"
        );
        assert!(body.contains("[redacted]"), "{body}");
    }
}

async fn a_wrong_or_missing_secret_is_401_and_per_user_secrets_select_the_user(backend: Backend) {
    let app = app(backend, "[tradingview]\nusers = { alice = \"alice-s1\" }\n").await;
    let mut wrong = alert("BTCUSDT", "buy", "37000");
    wrong["secret"] = json!("not-it");
    let response = post_json(&app, wrong).await;
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["code"], "wrong_token");
    assert!(!body.to_string().contains("not-it"));
    let mut missing = alert("BTCUSDT", "buy", "37000");
    missing.as_object_mut().map(|o| o.remove("secret"));
    assert_eq!(post_json(&app, missing).await.status(), 401);
    // The default user's secret is not alice's, nor is an unknown user let in.
    let body = alert("BTCUSDT", "buy", "37000").to_string();
    assert_eq!(
        post(&app, "?user_id=alice", "application/json", &body)
            .await
            .status(),
        401
    );
    assert_eq!(
        post(&app, "?user_id=mallory", "application/json", &body)
            .await
            .status(),
        401
    );
    let mut alices = alert("ETHUSDT", "sell", "2500");
    alices["secret"] = json!("alice-s1");
    let response = post(
        &app,
        "?user_id=alice",
        "application/json",
        &alices.to_string(),
    )
    .await;
    assert_eq!(response.status(), 200);
    // Seed 004's signature header, for senders that can sign: HMAC-SHA256 of the body, hex.
    let unsigned = json!({"symbol":"SOLUSDT","action":"buy","price":"150"}).to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(unsigned.as_bytes());
    let signature = hex::encode(mac.finalize().into_bytes());
    let signed = |signature: String| {
        app.client
            .post(format!("{}/api/tradingview/webhook", app.base))
            .header("content-type", "application/json")
            .header("x-signature", signature)
            .body(unsigned.clone())
            .send()
    };
    assert_eq!(signed(signature).await.expect("sent").status(), 200);
    assert_eq!(signed("00".repeat(32)).await.expect("sent").status(), 401);
    assert_eq!(app.run_pending().await, 2);
    let signals = app.rows(SIGNALS).await;
    let users: Vec<_> = signals.iter().map(|row| row[0].as_deref()).collect();
    assert_eq!(users, [Some("alice"), Some("default")]);
}

async fn a_text_plain_alert_with_a_secret_line_is_a_signal(backend: Backend) {
    let app = app(backend, "").await;
    let text = format!(
        "secret={SECRET}\nsymbol=BINANCE:ETHUSDT\naction=Long\nprice=2500.5\nquantity=0.2\nstrategy=momentum\n"
    );
    let response = post(&app, "", "text/plain; charset=utf-8", &text).await;
    assert_eq!(response.status(), 200);
    assert_eq!(app.run_pending().await, 1);
    let signal = app
        .one("SELECT symbol, action, price, quantity, strategy, status FROM trading_signals")
        .await;
    assert_eq!(
        signal,
        ["ETHUSDT", "long", "2500.5", "0.2", "momentum", "accepted"].map(|s| Some(s.to_owned()))
    );
    let fill = app.one("SELECT side, quantity FROM trading_fills").await;
    assert_eq!(fill, ["buy", "0.2"].map(|s| Some(s.to_owned())));
    assert_no_secret_in_the_journal(&app).await;
}

async fn unrendered_placeholders_are_400_naming_them(backend: Backend) {
    let app = app(backend, "").await;
    let body = json!({
        "symbol": "{{ticker}}",
        "action": "{{strategy.order.action}}",
        "price": "{{close}}",
        "secret": SECRET,
    });
    let response = post_json(&app, body).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["code"], "unrendered_placeholders");
    let detail = body["detail"].as_str().unwrap_or_default();
    for name in ["{{ticker}}", "{{strategy.order.action}}", "{{close}}"] {
        assert!(detail.contains(name), "{detail}");
    }
    assert!(!detail.contains(SECRET));
    let unknown = post_json(&app, alert("BTCUSDT", "hold", "1")).await;
    assert_eq!(unknown.status(), 422);
    let missing = post_json(
        &app,
        json!({"symbol":"BTCUSDT","action":"buy","secret":SECRET}),
    )
    .await;
    assert_eq!(missing.status(), 400);
    assert_eq!(app.run_pending().await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM trading_signals").await, 0);
}

async fn risk_rule_rejections_are_recorded_with_their_reasons(backend: Backend) {
    let app = app(
        backend,
        r#"
        [tradingview.risk]
        allowed_symbols = ["btcusdt", "ETHUSDT"]
        max_order_notional = "50000"
        max_orders_per_minute = 2
        duplicate_window_secs = 60
        "#,
    )
    .await;
    let signals = [
        alert("DOGEUSDT", "buy", "0.1"),
        json!({"symbol":"BTCUSDT","action":"buy","price":"37000","quantity":"2","secret":SECRET}),
        alert("BTCUSDT", "buy", "37000"),
        alert("BTCUSDT", "buy", "37000"),
        alert("ETHUSDT", "buy", "2500"),
        alert("ETHUSDT", "sell", "2600"),
    ];
    for signal in signals {
        assert_eq!(post_json(&app, signal).await.status(), 200);
        // One at a time, in arrival order, as the processor would see a live stream.
        app.run_pending().await;
    }
    let rows = app.rows(SIGNALS).await;
    let outcomes: Vec<(Option<&str>, Option<&str>)> = rows
        .iter()
        .map(|row| (row[3].as_deref(), row[4].as_deref()))
        .collect();
    assert_eq!(
        outcomes,
        [
            (Some("rejected"), Some("symbol DOGEUSDT is not allowed")),
            (
                Some("rejected"),
                Some("order notional 74000 exceeds the maximum of 50000")
            ),
            (Some("accepted"), None),
            (
                Some("rejected"),
                Some("an identical signal was accepted within the last 60s")
            ),
            (Some("accepted"), None),
            (
                Some("rejected"),
                Some("rate limit: 2 orders in the last minute, at most 2 allowed")
            ),
        ]
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM trading_orders").await, 2);
    assert_eq!(app.count("SELECT COUNT(*) FROM trading_fills").await, 2);
}

async fn a_buy_then_sell_ends_flat_with_the_right_realised_pnl(backend: Backend) {
    let clock = ManualClock::at(Timestamp::from_unix_seconds(1_800_000_000));
    let app = TestApp::builder()
        .backend(backend)
        .env("TRADINGVIEW_WEBHOOK_SECRET", SECRET)
        .toml("[tradingview.sizing]\nmode = \"fixed_notional\"\nnotional = \"1000\"\nquantity_decimals = 4\n")
        .manual_clock(clock.clone())
        .spawn()
        .await;
    let steps = [
        json!({"symbol":"BTCUSDT","action":"buy","price":"40000","quantity":"0.05","secret":SECRET}),
        json!({"symbol":"BTCUSDT","action":"buy","price":"42000","quantity":"0.05","secret":SECRET}),
        json!({"symbol":"BTCUSDT","action":"sell","price":"43000.5","quantity":"0.04","secret":SECRET}),
        json!({"symbol":"BTCUSDT","action":"exit","price":"39000","strategy":"stop","secret":SECRET}),
    ];
    for step in steps {
        assert_eq!(post_json(&app, step).await.status(), 200);
        clock.advance_millis(1_000);
        app.run_pending().await;
    }
    let fills = app
        .rows(
            "SELECT side, quantity, price, realized_pnl, position_after, average_price_after \
             FROM trading_fills ORDER BY delivery_id",
        )
        .await;
    let fills: Vec<Vec<&str>> = fills
        .iter()
        .map(|row| {
            row.iter()
                .map(|cell| cell.as_deref().unwrap_or("-"))
                .collect()
        })
        .collect();
    // Average 41000 after two buys; selling 0.04 at 43000.5 realises 0.04 × 2000.5 = 80.02;
    // the exit sells the remaining 0.06 at 39000: 0.06 × −2000 = −120.
    assert_eq!(
        fills,
        [
            vec!["buy", "0.05", "40000", "0", "0.05", "40000"],
            vec!["buy", "0.05", "42000", "0", "0.1", "41000"],
            vec!["sell", "0.04", "43000.5", "80.02", "0.06", "41000"],
            vec!["sell", "0.06", "39000", "-120", "0", "0"],
        ]
    );
    let account = app.one("SELECT positions FROM trading_positions").await;
    let positions: Value = serde_json::from_str(account[0].as_deref().unwrap_or("")).expect("json");
    assert_eq!(positions["BTCUSDT"]["quantity"], "0");
    assert_eq!(positions["BTCUSDT"]["realized_pnl"], "-39.98");
    let total = app.one("SELECT realized_pnl FROM trading_positions").await;
    assert_eq!(total[0].as_deref(), Some("-39.98"));
}

/// A fake OKX: what it was sent, and how it answers. `lose_answers` makes it place orders
/// but answer 502, as when the answer is lost on the way back; `live_polls` is how many
/// order-details queries of each order it answers `live` before the order is `filled`. A buy
/// fills 1 below its limit price and a sell 1 above (OKX's price, not the alert's).
#[derive(Default)]
struct FakeOkx {
    bodies: Mutex<Vec<Value>>,
    lose_answers: std::sync::atomic::AtomicBool,
    live_polls: std::sync::atomic::AtomicUsize,
    simulated_headers: Mutex<Vec<String>>,
    queries: Mutex<Vec<String>>,
}

impl FakeOkx {
    /// Serves both order endpoints on a local port; returns the fake and its base URL.
    async fn serve() -> (Arc<Self>, String) {
        let fake = Arc::new(Self::default());
        let router = Router::new()
            .route(
                "/api/v5/trade/order",
                routing::post(fake_place_order).get(fake_order_details),
            )
            .with_state(Arc::clone(&fake));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, router).await });
        (fake, base)
    }

    /// The placements it received, in order.
    fn placed(&self) -> Vec<Value> {
        self.bodies.lock().expect("lock").clone()
    }

    /// The order-details queries it answered for `client_order_id`.
    fn queries_for(&self, client_order_id: &str) -> usize {
        let wanted = format!("clOrdId={client_order_id}");
        self.queries
            .lock()
            .expect("lock")
            .iter()
            .filter(|path| path.ends_with(&wanted))
            .count()
    }
}

/// OKX's `ordId` of the `index`th order placed.
fn okx_order_id(index: usize) -> String {
    (312_269_865_356_374_016_u64 + index as u64).to_string()
}

/// Whether the four `OK-ACCESS-*` headers sign `method`, `path` and `body` as OKX checks them.
fn okx_signed(headers: &HeaderMap, method: &str, path: &str, body: &str) -> bool {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let timestamp = header("ok-access-timestamp");
    let mut mac = Hmac::<Sha256>::new_from_slice(OKX_SECRET.as_bytes()).expect("key");
    mac.update(format!("{timestamp}{method}{path}{body}").as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    header("ok-access-key") == OKX_KEY
        && header("ok-access-passphrase") == OKX_PASSPHRASE
        && header("ok-access-sign") == expected
        && chrono::DateTime::parse_from_rfc3339(&timestamp).is_ok()
        && timestamp.ends_with('Z')
        && timestamp.len() == 24
}

fn invalid_sign() -> (StatusCode, Json<Value>) {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"code":"50113","msg":"Invalid Sign","data":[]})),
    )
}

/// OKX's order-details endpoint, `GET /api/v5/trade/order?instId=…&clOrdId=…`, answering as
/// OKX's "Get order details" does: `live` (nothing filled, `avgPx` empty) for the first
/// `live_polls` queries of an order, then `filled` with `accFillSz`, `avgPx`, the last fill
/// (`fillPx`, `fillSz`, `tradeId`) and its fee.
async fn fake_order_details(
    State(fake): State<Arc<FakeOkx>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> (StatusCode, Json<Value>) {
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    if !okx_signed(&headers, "GET", &path, "") {
        return invalid_sign();
    }
    fake.queries.lock().expect("lock").push(path.clone());
    let wanted = path.split("clOrdId=").nth(1).unwrap_or_default().to_owned();
    let placed = fake.placed();
    let Some(index) = placed
        .iter()
        .position(|order| order["clOrdId"] == wanted.as_str())
    else {
        return (
            StatusCode::OK,
            Json(json!({"code":"51603","msg":"Order does not exist","data":[]})),
        );
    };
    let order = &placed[index];
    let text = |name: &str| order[name].as_str().unwrap_or_default().to_owned();
    let live =
        fake.queries_for(&wanted) <= fake.live_polls.load(std::sync::atomic::Ordering::SeqCst);
    let size = text("sz");
    let limit = Amount::parse(&text("px")).expect("a limit price");
    let one = Amount::from_units(1);
    let price = match text("side").as_str() {
        "buy" => limit.checked_sub(one),
        _ => limit.checked_add(one),
    }
    .expect("in range")
    .to_string();
    let (state, filled, average, fill_price, trade_id, fee) = if live {
        (
            "live",
            "0".to_owned(),
            String::new(),
            String::new(),
            String::new(),
            "0",
        )
    } else {
        (
            "filled",
            size.clone(),
            price.clone(),
            price,
            "242589207".to_owned(),
            "-0.00001",
        )
    };
    (
        StatusCode::OK,
        Json(json!({"code":"0","msg":"","data":[{
            "instType": "SPOT", "instId": text("instId"), "ccy": "",
            "ordId": okx_order_id(index), "clOrdId": wanted, "tag": "",
            "px": text("px"), "sz": size, "pnl": "0", "ordType": text("ordType"),
            "side": text("side"), "posSide": "net", "tdMode": text("tdMode"),
            "accFillSz": filled, "fillPx": fill_price, "tradeId": trade_id,
            "fillSz": filled, "fillTime": "1708587373361", "avgPx": average,
            "state": state, "lever": "", "fee": fee, "feeCcy": "BTC",
            "rebate": "0", "rebateCcy": "USDT", "category": "normal",
            "uTime": "1708587373362", "cTime": "1708587373361"
        }]})),
    )
}

const OKX_KEY: &str = "okx-api-key";
const OKX_SECRET: &str = "okx-secret-key";
const OKX_PASSPHRASE: &str = "okx-passphrase";

/// OKX's place-order endpoint: checks the four `OK-ACCESS-*` headers as OKX does and answers
/// in OKX's format.
async fn fake_place_order(
    State(fake): State<Arc<FakeOkx>>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, Json<Value>) {
    if !okx_signed(&headers, "POST", "/api/v5/trade/order", &body) {
        return invalid_sign();
    }
    let order: Value = serde_json::from_str(&body).expect("json body");
    let index = {
        let mut bodies = fake.bodies.lock().expect("lock");
        bodies.push(order.clone());
        bodies.len() - 1
    };
    if let Some(flag) = headers
        .get("x-simulated-trading")
        .and_then(|v| v.to_str().ok())
    {
        fake.simulated_headers
            .lock()
            .expect("lock")
            .push(flag.to_owned());
    }
    if fake.lose_answers.load(std::sync::atomic::Ordering::SeqCst) {
        return (StatusCode::BAD_GATEWAY, Json(json!({})));
    }
    if order["sz"] == "1000" {
        return (
            StatusCode::OK,
            Json(json!({"code":"1","msg":"Operation failed.","data":[{
                "clOrdId": order["clOrdId"], "ordId": "", "tag": "",
                "sCode": "51008", "sMsg": "Order failed. Insufficient USDT balance in account."
            }]})),
        );
    }
    (
        StatusCode::OK,
        Json(json!({"code":"0","msg":"","data":[{
            "clOrdId": order["clOrdId"], "ordId": okx_order_id(index), "tag": "",
            "sCode": "0", "sMsg": ""
        }]})),
    )
}

async fn okx(base: &str, secret: &str) -> Okx {
    Okx::new(
        ProviderApi::new(LookupSettings::default()).expect("client"),
        base,
        OkxCredentials {
            api_key: SecretString::from(OKX_KEY),
            secret_key: SecretString::from(secret),
            passphrase: SecretString::from(OKX_PASSPHRASE),
        },
        Arc::new(wharf::clock::SystemClock),
    )
}

#[tokio::test]
async fn the_okx_adapter_places_signed_orders_and_reads_okx_answers() {
    let (fake, base) = FakeOkx::serve().await;

    let amount = |text: &str| Amount::parse(text).expect("amount");
    let order = OrderRequest {
        client_order_id: "wharf42".into(),
        symbol: "BTCUSDT".into(),
        side: Side::Buy,
        quantity: amount("0.01"),
        limit_price: Some(amount("37000")),
    };
    let adapter = okx(&base, OKX_SECRET).await;
    assert_eq!(adapter.name(), "okx");
    let placement = adapter.place(&order).await.expect("placed");
    assert_eq!(placement.venue_order_id, "312269865356374016");
    let sent = fake.bodies.lock().expect("lock").clone();
    assert_eq!(
        sent,
        [
            json!({"instId":"BTC-USDT","tdMode":"cash","clOrdId":"wharf42","side":"buy",
                "ordType":"limit","sz":"0.01","px":"37000"})
        ]
    );

    let too_big = OrderRequest {
        quantity: amount("1000"),
        limit_price: None,
        side: Side::Sell,
        ..order.clone()
    };
    match adapter.place(&too_big).await {
        Err(ExecutionError::Refused { code, message }) => {
            assert_eq!(code, "51008");
            assert!(message.contains("Insufficient"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    let wrong_key = okx(&base, "not-the-secret").await;
    match wrong_key.place(&order).await {
        Err(error @ ExecutionError::Refused { .. }) => {
            assert!(error.is_permanent());
            assert!(error.to_string().contains("50113"), "{error}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn okx_users_orders_are_placed_after_the_commit_and_okxs_answer_recorded(backend: Backend) {
    let (fake, base) = FakeOkx::serve().await;
    let clock = ManualClock::at(Timestamp::from_unix_seconds(1_800_000_000));
    let app = okx_app(backend, &base, &clock, "").await;
    let alert = |quantity: &str| alice_alert("buy", "37000", Some(quantity));
    let response = post(&app, "?user_id=alice", "application/json", &alert("0.01")).await;
    assert_eq!(
        response.status(),
        200,
        "acknowledged before anything is placed"
    );
    assert!(fake.bodies.lock().expect("lock").is_empty());
    app.run_pending().await;
    app.run_pending().await;
    const ORDER: &str = "SELECT broker, status, client_order_id, venue_order_id, venue_code, \
                         venue_message FROM trading_orders ORDER BY delivery_id";
    let rows = app.rows(ORDER).await;
    let client_order_id = rows[0][2].clone().expect("a clOrdId");
    assert_eq!(
        rows[0],
        [
            Some("okx".to_owned()),
            Some("accepted".to_owned()),
            Some(client_order_id.clone()),
            Some("312269865356374016".to_owned()),
            Some("0".to_owned()),
            None
        ]
    );
    assert!(
        client_order_id.chars().all(|c| c.is_ascii_alphanumeric()) && client_order_id.len() <= 32
    );
    let sent = fake.bodies.lock().expect("lock").clone();
    assert_eq!(
        sent,
        [
            json!({"instId":"BTC-USDT","tdMode":"cash","clOrdId": client_order_id,"side":"buy",
                "ordType":"limit","sz":"0.01","px":"37000"})
        ],
        "one signed order, in OKX's format"
    );
    assert_eq!(*fake.simulated_headers.lock().expect("lock"), ["1"]);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM trading_fills").await,
        0,
        "the venue fills OKX orders, not the paper broker"
    );
    // OKX refuses the next one: recorded with its reason.
    post(&app, "?user_id=alice", "application/json", &alert("1000")).await;
    app.run_pending().await;
    app.run_pending().await;
    let rows = app.rows(ORDER).await;
    assert_eq!(rows[1][1].as_deref(), Some("rejected"));
    assert_eq!(rows[1][4].as_deref(), Some("51008"));
    assert!(
        rows[1][5]
            .as_deref()
            .is_some_and(|m| m.contains("Insufficient")),
        "{rows:?}"
    );
    // The answer is lost: the order is not placed twice; OKX is asked for it by clOrdId.
    fake.lose_answers
        .store(true, std::sync::atomic::Ordering::SeqCst);
    post(&app, "?user_id=alice", "application/json", &alert("0.02")).await;
    app.run_pending().await;
    app.run_pending().await;
    assert_eq!(app.rows(ORDER).await[2][1].as_deref(), Some("submitting"));
    // The recovery sweep finds that order owing its placement, but its follow-up is in the
    // journal already (waiting for its retry): journaling it again changes nothing.
    assert_eq!(app.state().processor.sweep_follow_ups().await, 0);
    fake.lose_answers
        .store(false, std::sync::atomic::Ordering::SeqCst);
    clock.advance_millis(120_000);
    app.run_pending().await;
    let rows = app.rows(ORDER).await;
    assert_eq!(rows[2][1].as_deref(), Some("accepted"), "{rows:?}");
    assert_eq!(rows[2][3].as_deref(), Some(okx_order_id(2).as_str()));
    assert_eq!(fake.placed().len(), 3, "placed once, not twice");
    let lost = rows[2][2].clone().expect("a clOrdId");
    assert_eq!(fake.queries_for(&lost), 1);
    // The default user still trades on paper.
    let paper = post(&app, "", "application/json", SEED_CURL_BODY).await;
    assert_eq!(paper.status(), 200);
    app.run_pending().await;
    let rows = app.rows(ORDER).await;
    assert_eq!(
        rows[3][..2],
        [Some("paper".to_owned()), Some("filled".to_owned())]
    );
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM deliveries WHERE event_type = 'order.place' \
             AND status = 'processed'"
        )
        .await,
        3
    );
}

/// An app whose user `alice` trades at the fake OKX at `base` (the default user on paper),
/// with `risk` appended to its `[tradingview.risk]` section.
async fn okx_app(backend: Backend, base: &str, clock: &ManualClock, risk: &str) -> TestApp {
    TestApp::builder()
        .backend(backend)
        .manual_clock(clock.clone())
        .env("TRADINGVIEW_WEBHOOK_SECRET", SECRET)
        .env("OKX_API_KEY", OKX_KEY)
        .env("OKX_SECRET_KEY", OKX_SECRET)
        .env("OKX_PASSPHRASE", OKX_PASSPHRASE)
        .env("OKX_BASE_URL", base)
        .env("OKX_SIMULATED", "1")
        .toml(&format!(
            "[tradingview]\nusers = {{ alice = \"alice-secret\" }}\n\
             user_execution = {{ alice = \"okx\" }}\n[tradingview.risk]\nduplicate_window_secs = 0\n{risk}"
        ))
        .spawn()
        .await
}

/// Alice's alert, with her secret.
fn alice_alert(action: &str, price: &str, quantity: Option<&str>) -> String {
    let mut alert =
        json!({"symbol":"BTCUSDT","action":action,"price":price,"secret":"alice-secret"});
    if let Some(quantity) = quantity {
        alert["quantity"] = json!(quantity);
    }
    alert.to_string()
}

/// Drives the processor until a signal's order has gone through OKX as far as OKX lets it:
/// the signal, its placement, the question how it filled, and (past the backoff) the retries
/// of that question while OKX still shows the order live.
async fn run_through_okx(app: &TestApp, clock: &ManualClock, live_polls: usize) {
    for _ in 0..3 {
        app.run_pending().await;
    }
    for _ in 0..live_polls {
        clock.advance_millis(120_000);
        app.run_pending().await;
    }
}

const OKX_FILLS: &str = "SELECT side, quantity, price, realized_pnl, position_after, \
                         average_price_after FROM trading_fills ORDER BY delivery_id";

fn texts(rows: Vec<Vec<Option<String>>>) -> Vec<Vec<String>> {
    rows.into_iter()
        .map(|row| {
            row.into_iter()
                .map(|cell| cell.unwrap_or_default())
                .collect()
        })
        .collect()
}

async fn an_okx_buy_then_close_ends_flat_with_the_right_realised_pnl(backend: Backend) {
    let (fake, base) = FakeOkx::serve().await;
    fake.live_polls
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let clock = ManualClock::at(Timestamp::from_unix_seconds(1_800_000_000));
    let app = okx_app(backend, &base, &clock, "").await;
    let buy = alice_alert("buy", "37000", Some("0.01"));
    assert_eq!(
        post(&app, "?user_id=alice", "application/json", &buy)
            .await
            .status(),
        200
    );
    for _ in 0..3 {
        app.run_pending().await;
    }
    // Placed and live at OKX: accepted, nothing filled, no position yet.
    let order = app.one("SELECT status FROM trading_orders").await;
    assert_eq!(order[0].as_deref(), Some("accepted"));
    assert_eq!(app.count("SELECT COUNT(*) FROM trading_fills").await, 0);
    clock.advance_millis(120_000);
    app.run_pending().await;
    assert_eq!(
        texts(app.rows(OKX_FILLS).await),
        [["buy", "0.01", "36999", "0", "0.01", "36999"]],
        "OKX's fill at OKX's price (1 better than the limit)"
    );
    // `close` sizes from the position OKX filled: it sells 0.01.
    let close = alice_alert("close", "38000", None);
    assert_eq!(
        post(&app, "?user_id=alice", "application/json", &close)
            .await
            .status(),
        200
    );
    run_through_okx(&app, &clock, 1).await;
    // Sold 0.01 at 38001 against an average of 36999: 0.01 × 1002 = 10.02.
    assert_eq!(
        texts(app.rows(OKX_FILLS).await),
        [
            ["buy", "0.01", "36999", "0", "0.01", "36999"],
            ["sell", "0.01", "38001", "10.02", "0", "0"],
        ]
    );
    let orders = app
        .rows("SELECT side, status, venue_order_id FROM trading_orders ORDER BY delivery_id")
        .await;
    assert_eq!(
        texts(orders),
        [
            ["buy".to_owned(), "filled".to_owned(), okx_order_id(0)],
            ["sell".to_owned(), "filled".to_owned(), okx_order_id(1)],
        ]
    );
    let account = app
        .one("SELECT positions, realized_pnl FROM trading_positions WHERE user_id = 'alice'")
        .await;
    let positions: Value = serde_json::from_str(account[0].as_deref().unwrap_or("")).expect("json");
    assert_eq!(positions["BTCUSDT"]["quantity"], "0");
    assert_eq!(positions["BTCUSDT"]["realized_pnl"], "10.02");
    assert_eq!(account[1].as_deref(), Some("10.02"));
    assert_eq!(fake.placed().len(), 2, "each order placed once");
    // A replayed question changes nothing: the fill is applied once.
    let replayed = app
        .admin_post("/api/deliveries/replay?event_type=order.fill")
        .await;
    assert!(replayed.status().is_success(), "{}", replayed.status());
    let replayed: Value = replayed.json().await.expect("json");
    assert_eq!(replayed["replayed"], 2, "{replayed}");
    app.run_pending().await;
    assert_eq!(app.count("SELECT COUNT(*) FROM trading_fills").await, 2);
    let again = app
        .one("SELECT realized_pnl FROM trading_positions WHERE user_id = 'alice'")
        .await;
    assert_eq!(again[0].as_deref(), Some("10.02"));
}

async fn the_max_position_rule_counts_what_okx_filled(backend: Backend) {
    let (fake, base) = FakeOkx::serve().await;
    let clock = ManualClock::at(Timestamp::from_unix_seconds(1_800_000_000));
    let app = okx_app(backend, &base, &clock, "max_position = \"0.015\"\n").await;
    let buy = alice_alert("buy", "37000", Some("0.01"));
    post(&app, "?user_id=alice", "application/json", &buy).await;
    run_through_okx(&app, &clock, 0).await;
    assert_eq!(app.count("SELECT COUNT(*) FROM trading_fills").await, 1);
    clock.advance_millis(1_000);
    post(&app, "?user_id=alice", "application/json", &buy).await;
    run_through_okx(&app, &clock, 0).await;
    let signals = app
        .rows("SELECT status, reason FROM trading_signals ORDER BY delivery_id")
        .await;
    assert_eq!(
        signals[1],
        [
            Some("rejected".to_owned()),
            Some("position 0.02 BTCUSDT would exceed the maximum of 0.015".to_owned())
        ]
    );
    // Reducing the position OKX holds is allowed.
    let sell = alice_alert("sell", "37500", Some("0.01"));
    post(&app, "?user_id=alice", "application/json", &sell).await;
    run_through_okx(&app, &clock, 0).await;
    let sides: Vec<String> = fake
        .placed()
        .iter()
        .map(|order| order["side"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(sides, ["buy", "sell"], "the refused buy never reached OKX");
}

/// The environment of a real `wharf serve` whose default user trades at the fake OKX.
fn okx_server_env(base: &str) -> Vec<(&'static str, String)> {
    vec![
        ("TRADINGVIEW_WEBHOOK_SECRET", SECRET.to_owned()),
        ("TRADINGVIEW_EXECUTION", "okx".to_owned()),
        ("OKX_API_KEY", OKX_KEY.to_owned()),
        ("OKX_SECRET_KEY", OKX_SECRET.to_owned()),
        ("OKX_PASSPHRASE", OKX_PASSPHRASE.to_owned()),
        ("OKX_BASE_URL", base.to_owned()),
    ]
}

/// Polls `sql` (a count) until it is `expected`, for up to 30 s.
async fn await_count(database: &TestDatabase, sql: &str, expected: i64) {
    for _ in 0..300 {
        if database.count(sql).await == expected {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{sql} did not reach {expected}");
}

/// The real binary is stopped (failpoint) right after the signal's order commits as
/// `submitting` and before its `order.place` follow-up is journaled, then killed with SIGKILL:
/// after the restart the recovery sweep journals the follow-up and the order is placed at
/// OKX exactly once.
async fn a_kill_between_the_signals_commit_and_its_follow_up_still_places_the_order_once(
    backend: Backend,
) {
    let (fake, base) = FakeOkx::serve().await;
    let database = TestDatabase::fresh(backend).await;
    let env = okx_server_env(&base);
    let mut paused: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    paused.push((
        "FAILPOINTS",
        "processor::after_commit_before_follow_ups=pause",
    ));
    let server = BinaryServer::start(database.url(), &paused).await;
    let response = reqwest::Client::new()
        .post(format!("{}/api/tradingview/webhook", server.base))
        .header("content-type", "application/json")
        .body(SEED_CURL_BODY)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let submitting = "SELECT COUNT(*) FROM trading_orders WHERE status = 'submitting'";
    await_count(&database, submitting, 1).await;
    server.kill_9().await;
    let follow_ups = "SELECT COUNT(*) FROM deliveries WHERE event_type = 'order.place'";
    assert_eq!(
        database.count(follow_ups).await,
        0,
        "killed inside the window: committed, follow-up not journaled"
    );
    assert!(fake.placed().is_empty());

    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let restarted = BinaryServer::start(database.url(), &env).await;
    await_count(
        &database,
        "SELECT COUNT(*) FROM trading_orders WHERE status = 'filled'",
        1,
    )
    .await;
    assert_eq!(fake.placed().len(), 1, "placed exactly once");
    assert_eq!(database.count(follow_ups).await, 1);
    assert_eq!(
        database.count("SELECT COUNT(*) FROM trading_fills").await,
        1
    );
    restarted.kill_9().await;
}
