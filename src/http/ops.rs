//! `/health` (seed 000's format) and `/metrics` (Prometheus).

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
        Ok(Ok(())) => Json(json!({ "status": "healthy", "timestamp": timestamp })).into_response(),
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
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}
