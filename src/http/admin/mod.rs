//! The admin API, behind `Authorization: Bearer TOKEN` ([`auth`]: configured tokens, or the
//! one `wharf serve` mints at first start when none is configured). Every answer that is not a success is
//! [`ApiError`] JSON, malformed query strings and path parameters included ([`extract`]).

pub mod auth;
pub mod deliveries;
pub mod export;
pub mod extract;
pub mod ledger;
pub mod schema;
pub mod seeds;
pub mod sources;
pub mod stats;

use axum::middleware;
use axum::routing::{any, get, post};
use axum::Router;

use super::error::ApiError;
use super::SharedState;
use crate::journal::{DeliveryId, DeliveryStatus, JournalError};

pub fn router(state: SharedState) -> Router<SharedState> {
    Router::new()
        .route("/api/deliveries", get(deliveries::list))
        .route("/api/deliveries/{id}", get(deliveries::show))
        .route("/api/deliveries/{id}/replay", post(deliveries::replay_one))
        .route("/api/deliveries/replay", post(deliveries::replay_matching))
        .route("/api/ledger", get(ledger::tables))
        .route("/api/ledger/{table}", get(ledger::rows))
        .route("/api/ledger/{table}/{key}", get(ledger::row))
        .route("/api/sources", get(sources::list))
        .route("/api/sources/{name}/rejections", get(sources::rejections))
        .route("/api/stats", get(stats::stats))
        .route("/api/stats/revenue", get(stats::revenue))
        .route("/api/v2/webhooks/logs", get(seeds::refract_logs))
        .route("/api/webhooks/events", get(seeds::webhook_events))
        .route("/api/admin/processor/idle", get(seeds::await_idle))
        // Anything else under /api: a JSON 404 once the caller is known to be an operator.
        .route("/api/{*rest}", any(unknown_route))
        .route_layer(middleware::from_fn_with_state(state, auth::require_token))
}

async fn unknown_route() -> ApiError {
    ApiError::not_found("no such admin route")
}

/// The journal could not answer a read.
fn unavailable(error: JournalError) -> ApiError {
    ApiError::journal_unavailable(&error)
}

/// A `limit=` within `1..=max` (`default` when absent), refused as JSON otherwise: the
/// OpenAPI document states each range, and a request outside it is a client's mistake.
fn limit_in(value: Option<u32>, default: u32, max: u32) -> Result<u32, ApiError> {
    match value {
        None => Ok(default),
        Some(limit) if (1..=max).contains(&limit) => Ok(limit),
        Some(limit) => Err(ApiError::bad_request(
            "invalid_query",
            format!("limit={limit}: from 1 to {max}"),
        )),
    }
}

/// A `status=` filter, refused as JSON when it names no delivery status.
fn status_filter(word: Option<&str>) -> Result<Option<DeliveryStatus>, ApiError> {
    word.map(|word| {
        DeliveryStatus::parse(word).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_status",
                format!("{word:?} is not a delivery status"),
            )
        })
    })
    .transpose()
}

/// A delivery id from the path, refused as JSON (not axum's plain text) when it is not one.
fn delivery_id(text: &str) -> Result<DeliveryId, ApiError> {
    text.parse().map(DeliveryId).map_err(|_| {
        ApiError::bad_request(
            "invalid_delivery_id",
            format!("{text:?} is not a delivery id (a positive integer)"),
        )
    })
}
