//! The dashboard at `/`: a Preact + htm app bundled by esbuild (`dashboard/`, `npm run build`)
//! whose output is committed under `assets/` and embedded here with `include_str!`, so a fresh
//! `cargo build` serves it without npm, and it works offline (no CDN). The page itself is
//! public; everything it shows comes from the admin API with the token the operator enters.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::SharedState;

const INDEX: &str = include_str!("assets/index.html");
const APP: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");

/// Scripts and styles only from this origin; no inline script, no framing.
const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                      img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'";

pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/", get(index))
        .route("/assets/app.js", get(app))
        .route("/assets/style.css", get(style))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

async fn app() -> Response {
    asset("text/javascript; charset=utf-8", APP)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}
