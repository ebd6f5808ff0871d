//! `/health` (seed 000's format, plus the sources [`crate::health`] flags) and `/metrics`
//! (Prometheus, plus `wharf_source_unhealthy`).

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::SharedState;

/// Healthy only if the journal can be written right now.
pub async fn health(State(state): State<SharedState>) -> Response {
    let timestamp = state.clock.now().to_rfc3339();
    let probe = tokio::time::timeout(Duration::from_secs(2), state.storage.log.probe()).await;
    match probe {
        Ok(Ok(())) => Json(json!({
            "status": "healthy",
            "timestamp": timestamp,
            // Sources that look wrong: the server is fine, a provider may not be.
            "sources_flagged": state.health.flags(),
        }))
        .into_response(),
        Ok(Err(error)) => unhealthy(&timestamp, &error.to_string()),
        Err(_) => unhealthy(&timestamp, "the journal did not answer within 2 s"),
    }
}

fn unhealthy(timestamp: &str, reason: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "status": "unhealthy", "timestamp": timestamp, "journal": reason })),
    )
        .into_response()
}

pub async fn metrics(State(state): State<SharedState>) -> Response {
    let mut text = state.metrics.render();
    text.push_str(&state.health.render_metrics());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// `GET /api/health/sources` (admin): every source with its flags, flagged or not.
pub async fn source_health(State(state): State<SharedState>) -> Response {
    let flags = state.health.flags();
    let sources: Vec<_> = state
        .routes
        .keys()
        .map(|source| {
            let mine: Vec<_> = flags.iter().filter(|flag| &flag.source == source).collect();
            json!({ "source": source, "healthy": mine.is_empty(), "flags": mine })
        })
        .collect();
    Json(json!({ "sources": sources })).into_response()
}
