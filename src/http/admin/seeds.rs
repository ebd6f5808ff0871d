//! The seeds' own admin routes: seed 001's Refract logs, seed 003's event monitoring, and the
//! processor's idle signal that tests and the benchmark wait on.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::deliveries::ListQuery;
use super::extract::ApiQuery;
use super::schema::{ErrorBody, Idle, RefractLogs, WebhookEvents};
use super::{limit_in, unavailable};
use crate::http::error::ApiError;
use crate::http::SharedState;
use crate::journal::{DeliveryFilter, DeliveryStatus};

/// Longest `timeout_ms` honoured: the router lets this route run for ten minutes.
const MAX_IDLE_WAIT_MS: u64 = 590_000;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IdleQuery {
    /// How long to wait, in milliseconds (default 30,000).
    #[param(minimum = 0, maximum = 590000)]
    timeout_ms: Option<u64>,
}

/// Answers once nothing is due for processing (200), or 504 when `timeout_ms` passes first.
/// Waits on the processor's progress signal; it never polls on a timer.
#[utoipa::path(get, path = "/api/admin/processor/idle", tag = "admin", params(IdleQuery),
    security(("bearer" = [])),
    responses((status = 200, body = Idle),
        (status = 504, description = "Still busy when the timeout passed", body = Idle),
        (status = 400, description = "A malformed parameter", body = ErrorBody), (status = 401, description = "No valid admin token", body = ErrorBody), (status = 503, description = "Storage unavailable", body = ErrorBody)))]
pub async fn await_idle(
    State(state): State<SharedState>,
    ApiQuery(query): ApiQuery<IdleQuery>,
) -> Result<Response, ApiError> {
    let deadline = tokio::time::Instant::now()
        + Duration::from_millis(query.timeout_ms.unwrap_or(30_000).min(MAX_IDLE_WAIT_MS));
    let mut progress = state.processor.progress();
    loop {
        progress.borrow_and_update();
        let backlog = state
            .storage
            .read
            .backlog(state.clock.now())
            .await
            .map_err(unavailable)?;
        if backlog.due == 0 {
            return Ok(Json(Idle {
                idle: true,
                backlog,
            })
            .into_response());
        }
        tokio::select! {
            changed = progress.changed() => {
                if changed.is_err() {
                    return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "processor_stopped", "the processor has stopped"));
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                return Ok((StatusCode::GATEWAY_TIMEOUT, Json(Idle { idle: false, backlog })).into_response());
            }
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Messages (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
}

/// Seed 001's `GET /api/v2/webhooks/logs?limit=N`: the newest Refract messages, each with the
/// raw message, what was parsed from it (read again, so it is what the parser says today),
/// the outcome and the error. Behind the admin token: raw messages hold customers' emails.
#[utoipa::path(get, path = "/api/v2/webhooks/logs", tag = "seeds", params(LogsQuery),
    security(("bearer" = [])),
    responses((status = 200, body = RefractLogs), (status = 400, description = "A malformed parameter", body = ErrorBody), (status = 401, description = "No valid admin token", body = ErrorBody), (status = 503, description = "Storage unavailable", body = ErrorBody)))]
pub async fn refract_logs(
    State(state): State<SharedState>,
    ApiQuery(query): ApiQuery<LogsQuery>,
) -> Result<Response, ApiError> {
    let limit = limit_in(query.limit, 50, 200)?;
    let mut logs = Vec::new();
    let refract_sources = state
        .routes
        .iter()
        .filter(|(_, route)| route.source.kind() == "refract");
    for (name, _) in refract_sources {
        let filter = DeliveryFilter {
            source: Some(name.clone()),
            limit,
            ..DeliveryFilter::default()
        };
        let listed = state
            .storage
            .read
            .deliveries(filter)
            .await
            .map_err(unavailable)?;
        for summary in listed {
            if let Some(delivery) = state
                .storage
                .read
                .delivery(summary.id)
                .await
                .map_err(unavailable)?
            {
                logs.push(refract_log_entry(delivery));
            }
        }
    }
    logs.sort_by_key(|(id, _)| std::cmp::Reverse(*id));
    logs.truncate(limit as usize);
    let logs: Vec<_> = logs.into_iter().map(|(_, entry)| entry).collect();
    Ok(Json(RefractLogs {
        count: logs.len(),
        logs,
    })
    .into_response())
}

fn refract_log_entry(delivery: crate::journal::DeliveryView) -> (i64, serde_json::Value) {
    let content_type = delivery
        .headers
        .as_ref()
        .and_then(|headers| headers.get("content-type"))
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned);
    let raw = delivery.body.clone().unwrap_or_default();
    let (parsed, parse_error) =
        match crate::sources::refract::parse(raw.as_bytes(), content_type.as_deref()) {
            Ok(message) => (crate::sources::refract::message_json(&message), None),
            Err(error) => (serde_json::Value::Null, Some(error.to_string())),
        };
    let entry = json!({
        "id": delivery.id,
        "source": delivery.source,
        "received_at": delivery.received_at,
        "event_type": delivery.event_type,
        "outcome": delivery.status,
        "attempts": delivery.attempts,
        "error": delivery.last_error,
        "processed_at": delivery.processed_at,
        "raw_message": delivery.body,
        "raw_message_base64": delivery.body_base64,
        "parsed": parsed,
        "parse_error": parse_error,
    });
    (delivery.id.0, entry)
}

/// Seed 003's `GET /api/webhooks/events` (event monitoring, authenticated): the newest
/// deliveries as its `webhook_events` rows (`event_type`, `event_id`, `processed`,
/// `error_message`, `created_at`, `processed_at`), filtered like `/api/deliveries`.
#[utoipa::path(get, path = "/api/webhooks/events", tag = "seeds", params(ListQuery),
    security(("bearer" = [])),
    responses((status = 200, body = WebhookEvents), (status = 400, description = "A malformed parameter", body = ErrorBody), (status = 401, description = "No valid admin token", body = ErrorBody), (status = 503, description = "Storage unavailable", body = ErrorBody)))]
pub async fn webhook_events(
    State(state): State<SharedState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let filter = query.filter()?;
    let deliveries = state
        .storage
        .read
        .deliveries(filter)
        .await
        .map_err(unavailable)?;
    let events: Vec<_> = deliveries
        .into_iter()
        .map(|delivery| {
            json!({
                "id": delivery.id,
                "source": delivery.source,
                "event_type": delivery.event_type,
                "event_id": delivery.event_id,
                "processed": matches!(
                    delivery.status,
                    DeliveryStatus::Processed | DeliveryStatus::Ignored
                ),
                "status": delivery.status,
                "error_message": delivery.last_error,
                "created_at": delivery.received_at,
                "processed_at": delivery.processed_at,
            })
        })
        .collect();
    Ok(Json(WebhookEvents { events }).into_response())
}
