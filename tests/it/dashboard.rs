//! The dashboard in a real headless Chromium (Debian's `chromium` and `chromium-driver`,
//! driven over WebDriver by fantoccini): the operator signs in with the token, a signed
//! CartPanda sale posted over HTTP appears in the live feed and in the sales view without a
//! reload, and filtering and replay work through the UI. With `WHARF_DASHBOARD_SCREENSHOT=PATH`
//! the dashboard under load is saved there (that is how `docs/dashboard.png` was made).
#![allow(clippy::unwrap_used)]

use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use tokio::process::{Child, Command};

use crate::support::{sale_body, TestApp, ADMIN_TOKEN};

/// `chromedriver` on a free port, killed when dropped.
struct Driver {
    _child: Child,
    url: String,
}

impl Driver {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver runs: apt-get install chromium chromium-driver (.ci/run does)");
        let url = format!("http://127.0.0.1:{port}");
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Self { _child: child, url };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("chromedriver did not listen on {port}");
    }

    async fn browser(&self) -> Client {
        // The WebDriver client speaks plain HTTP here; rustls still wants one provider chosen.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1440,1000"],
            }),
        );
        ClientBuilder::rustls()
            .expect("TLS roots")
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("a Chromium session")
    }
}

/// Waits until the element's text contains `needle` (the page updates by itself).
async fn await_text(browser: &Client, css: &str, needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(element) = browser.find(Locator::Css(css)).await {
            if let Ok(text) = element.text().await {
                if text.contains(needle) {
                    return text;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{css} never showed {needle:?}; it shows {text:?}"
                );
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{css} never appeared"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn click(browser: &Client, css: &str) {
    browser
        .wait()
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|error| panic!("{css}: {error}"))
        .click()
        .await
        .unwrap_or_else(|error| panic!("clicking {css}: {error}"));
}

async fn post_sale(app: &TestApp, n: usize) {
    let body = sale_body(
        &format!("evt_ui_{n}"),
        &format!("SALE_UI_{n}"),
        "sale.approved",
    );
    assert_eq!(app.post_cartpanda(body).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_posted_over_http_appears_live_and_can_be_filtered_and_replayed_in_the_browser() {
    let app = TestApp::spawn().await;
    let driver = Driver::start().await;
    let browser = driver.browser().await;
    browser.goto(&format!("{}/", app.base)).await.unwrap();

    // Sign in: the token is kept in sessionStorage, the live feed connects with a ticket.
    browser
        .wait()
        .for_element(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(ADMIN_TOKEN)
        .await
        .unwrap();
    click(&browser, "#sign-in").await;
    await_text(&browser, "#feed-status", "live").await;

    // A signed sale over HTTP shows up in the live feed, received then in the ledger.
    post_sale(&app, 1).await;
    await_text(&browser, "#live-feed", "delivery.received").await;
    app.run_pending().await;
    let feed = await_text(&browser, "#live-feed", "SALE_UI_1").await;
    assert!(feed.contains("ledger.created"), "{feed}");
    assert!(feed.contains("99.90"), "{feed}");

    // ...and in the sales view.
    click(&browser, "#tab-ledger").await;
    await_text(&browser, "#ledger-rows", "SALE_UI_1").await;
    post_sale(&app, 2).await;
    app.run_pending().await;
    await_text(&browser, "#ledger-rows", "SALE_UI_2").await;

    // Deliveries: filter by event type, open one, replay it through the UI.
    click(&browser, "#tab-deliveries").await;
    await_text(&browser, "#deliveries", "sale.approved").await;
    browser
        .find(Locator::Css("#filter-q"))
        .await
        .unwrap()
        .send_keys("SALE_UI_2")
        .await
        .unwrap();
    click(&browser, "#apply-filters").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let rows = browser
            .find_all(Locator::Css("#deliveries tr.clickable"))
            .await
            .unwrap();
        if rows.len() == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the filter left {} rows",
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    click(&browser, "#deliveries tr.clickable").await;
    await_text(&browser, "#raw-body", "SALE_UI_2").await;
    await_text(&browser, "#delivery-detail", "processed").await;
    click(&browser, "#replay-one").await;
    await_text(&browser, "#delivery-detail", "replayed").await;
    click(&browser, "#tab-live").await;
    await_text(&browser, "#live-feed", "delivery.replayed").await;
    app.run_pending().await;
    // Replayed: attempted again through the processor; the sale is not applied twice.
    assert_eq!(
        app.count("SELECT COUNT(*) FROM attempts WHERE outcome = 'processed'")
            .await,
        3
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM sales").await, 2);

    if let Ok(path) = std::env::var("WHARF_DASHBOARD_SCREENSHOT") {
        for n in 3..80 {
            post_sale(&app, n).await;
            if n % 10 == 0 {
                app.run_pending().await;
            }
        }
        app.run_pending().await;
        await_text(&browser, "#live-feed", "SALE_UI_79").await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        let png = browser.screenshot().await.unwrap();
        std::fs::write(&path, png).unwrap();
    }
    browser.close().await.unwrap();
    app.shutdown().await;
}
