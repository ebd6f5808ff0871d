//! The "floor": the cheapest server that still does what any webhook
//! receiver must do (read the body, check the HMAC, answer). Wharf's
//! throughput is reported as a fraction of this, so the comparison isolates
//! the cost of durable ingest from the cost of HTTP + HMAC on this machine.

use std::sync::Arc;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use axum::Router;
use hmac::Mac;
use sha2::Sha256;

use super::{SIGNATURE_HEADER, WEBHOOK_PATH};

/// HMAC-SHA256 keyed once; cloning the keyed state per request avoids
/// re-deriving the padded key blocks for every body.
type HmacSha256 = hmac::Hmac<Sha256>;

/// Same answer bytes Wharf sends on success, so response sizes match.
const RECEIVED_BODY: &str = r#"{"received":true}"#;
const REJECTED_BODY: &str = r#"{"error":"invalid signature"}"#;

/// Serves `POST /webhook/cartpanda` on `listener` until the process is
/// killed: verifies the lowercase-hex HMAC-SHA256 of the raw body in
/// `X-CartPanda-Signature` with `secret`, answers 200 `{"received":true}`
/// (401 on a missing or wrong signature). Nothing is stored.
///
/// The caller binds the listener and prints the ready line
/// (`wharf ready: listening on http://ADDR`), exactly as for `wharf serve`,
/// because the bench finds the port by reading that line.
pub async fn serve_floor(listener: tokio::net::TcpListener, secret: String) -> anyhow::Result<()> {
    let key = HmacSha256::new_from_slice(secret.as_bytes())
        .map_err(|e| anyhow::anyhow!("bad floor secret: {e}"))?;
    let app = Router::new()
        .route(WEBHOOK_PATH, post(receive))
        .with_state(Arc::new(key));
    // Nagle would add delayed-ACK stalls to small keep-alive responses and
    // make the floor look slower than it is.
    let listener = listener.tap_io(|tcp| {
        // Failing to set the option only costs latency; keep serving.
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .await
        .context("floor server stopped")
}

async fn receive(State(key): State<Arc<HmacSha256>>, headers: HeaderMap, body: Bytes) -> Response {
    let status = if signature_ok(&key, &headers, &body) {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    };
    let text = if status.is_success() {
        RECEIVED_BODY
    } else {
        REJECTED_BODY
    };
    (status, [(header::CONTENT_TYPE, "application/json")], text).into_response()
}

/// Constant-time check of the hex signature header against the body.
fn signature_ok(key: &HmacSha256, headers: &HeaderMap, body: &[u8]) -> bool {
    let Some(hex_sig) = headers.get(SIGNATURE_HEADER) else {
        return false;
    };
    let mut expected = [0u8; 32];
    if hex::decode_to_slice(hex_sig.as_bytes(), &mut expected).is_err() {
        return false;
    }
    let mut mac = key.clone();
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn sign(secret: &str, body: &[u8]) -> String {
        let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("any key length");
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn accepts_correct_and_rejects_wrong_signature() {
        let key = HmacSha256::new_from_slice(b"s3cret").expect("any key length");
        let body = br#"{"id":"evt_1"}"#;
        let mut headers = HeaderMap::new();
        let good = HeaderValue::from_str(&sign("s3cret", body)).expect("hex is ascii");
        headers.insert(SIGNATURE_HEADER, good);
        assert!(signature_ok(&key, &headers, body));
        assert!(!signature_ok(&key, &headers, b"tampered"));
        let bad = HeaderValue::from_str(&sign("other", body)).expect("hex is ascii");
        headers.insert(SIGNATURE_HEADER, bad);
        assert!(!signature_ok(&key, &headers, body));
        headers.insert(SIGNATURE_HEADER, HeaderValue::from_static("zz"));
        assert!(!signature_ok(&key, &headers, body));
    }
}
