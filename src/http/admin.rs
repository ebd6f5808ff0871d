//! The admin API, behind `Authorization: Bearer $WHARF_ADMIN_TOKEN`. Without a configured
//! token it is off: every admin route answers 403.

use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::SharedState;
use crate::journal::{DeliveryFilter, DeliveryId, DeliveryStatus, ReplayRequest};
use crate::verify::constant_time_eq;

pub fn router(state: SharedState) -> Router<SharedState> {
    Router::new()
        .route("/api/deliveries", get(list_deliveries))
        .route("/api/deliveries/{id}", get(show_delivery))
        .route("/api/deliveries/{id}/replay", post(replay_one))
        .route("/api/deliveries/replay", post(replay_matching))
        .route("/api/sources", get(list_sources))
        .route("/api/sources/{name}/rejections", get(list_rejections))
        .route("/api/stats", get(stats))
        .route("/api/v2/webhooks/logs", get(refract_logs))
        .route("/api/webhooks/events", get(webhook_events))
        .route("/api/admin/processor/idle", get(await_idle))
        .route_layer(middleware::from_fn_with_state(state, require_token))
}

/// Checks the bearer token in constant time.
async fn require_token(State(state): State<SharedState>, request: Request, next: Next) -> Response {
    let Some(expected) = &state.admin_token else {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "the admin API is off: set WHARF_ADMIN_TOKEN",
        )
        .into_response();
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(presented.as_bytes(), expected.expose_secret().as_bytes()) {
        next.run(request).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid admin bearer token is required",
        )
        .into_response()
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    source: Option<String>,
    status: Option<String>,
    before: Option<i64>,
    limit: Option<u32>,
}

async fn list_deliveries(
    State(state): State<SharedState>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let status = status_filter(query.status.as_deref())?;
    let filter = DeliveryFilter {
        source: query.source,
        status,
        before_id: query.before,
        limit: query.limit.unwrap_or(50),
    };
    let deliveries = state
        .storage
        .read
        .deliveries(filter)
        .await
        .map_err(|error| ApiError::journal_unavailable(&error))?;
    Ok(Json(json!({ "deliveries": deliveries })).into_response())
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

async fn show_delivery(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = delivery_id(&id)?;
    let unavailable = |error| ApiError::journal_unavailable(&error);
    let delivery = state.storage.read.delivery(id).await.map_err(unavailable)?;
    let delivery = delivery.ok_or_else(|| ApiError::not_found(format!("no delivery {id}")))?;
    let attempts = state.storage.read.attempts(id).await.map_err(unavailable)?;
    Ok(Json(json!({ "delivery": delivery, "attempts": attempts })).into_response())
}

async fn list_sources(State(state): State<SharedState>) -> Response {
    let sources: Vec<_> = state
        .routes
        .iter()
        .map(|(name, route)| {
            let mut routes = vec![format!("POST /in/{name}")];
            routes.extend(
                route
                    .source
                    .routes()
                    .into_iter()
                    .map(|declared| format!("{} {}", declared.method, declared.path)),
            );
            json!({
                "name": name,
                "kind": route.source.kind(),
                "route": format!("/in/{name}"),
                "routes": routes,
                "rejected": route.rejections.total(),
            })
        })
        .collect();
    Json(json!({ "sources": sources })).into_response()
}

async fn list_rejections(
    State(state): State<SharedState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let route = state
        .routes
        .get(&name)
        .ok_or_else(|| ApiError::not_found(format!("no source named {name:?}")))?;
    Ok(Json(json!({ "source": name, "total": route.rejections.total(), "rejections": route.rejections.recent() }))
        .into_response())
}

async fn stats(State(state): State<SharedState>) -> Result<Response, ApiError> {
    let unavailable = |error| ApiError::journal_unavailable(&error);
    let counts = state
        .storage
        .read
        .status_counts()
        .await
        .map_err(unavailable)?;
    let backlog = state
        .storage
        .read
        .backlog(state.clock.now())
        .await
        .map_err(unavailable)?;
    Ok(Json(json!({ "deliveries": counts, "backlog": backlog })).into_response())
}

#[derive(Debug, Deserialize)]
struct IdleQuery {
    timeout_ms: Option<u64>,
}

/// Answers once nothing is due for processing (200), or 504 when `timeout_ms` passes first.
/// Waits on the processor's progress signal; it never polls on a timer.
async fn await_idle(
    State(state): State<SharedState>,
    Query(query): Query<IdleQuery>,
) -> Result<Response, ApiError> {
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(query.timeout_ms.unwrap_or(30_000));
    let mut progress = state.processor.progress();
    loop {
        progress.borrow_and_update();
        let backlog = state
            .storage
            .read
            .backlog(state.clock.now())
            .await
            .map_err(|error| ApiError::journal_unavailable(&error))?;
        if backlog.due == 0 {
            return Ok(Json(json!({ "idle": true, "backlog": backlog })).into_response());
        }
        tokio::select! {
            changed = progress.changed() => {
                if changed.is_err() {
                    return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "processor_stopped", "the processor has stopped"));
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                return Ok((StatusCode::GATEWAY_TIMEOUT, Json(json!({ "idle": false, "backlog": backlog }))).into_response());
            }
        }
    }
}

#[derive(Debug, Deserialize)]
struct LogsQuery {
    limit: Option<u32>,
}

/// Seed 001's `GET /api/v2/webhooks/logs?limit=N`: the newest Refract messages, each with the
/// raw message, what was parsed from it (read again, so it is what the parser says today),
/// the outcome and the error. Behind the admin token: raw messages hold customers' emails.
async fn refract_logs(
    State(state): State<SharedState>,
    Query(query): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    let limit = query.limit.unwrap_or(50).clamp(1, 200);
    let unavailable = |error| ApiError::journal_unavailable(&error);
    let mut logs = Vec::new();
    let refract_sources = state
        .routes
        .iter()
        .filter(|(_, route)| route.source.kind() == "refract");
    for (name, _) in refract_sources {
        let filter = DeliveryFilter {
            source: Some(name.clone()),
            status: None,
            before_id: None,
            limit,
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
    Ok(Json(json!({ "count": logs.len(), "logs": logs })).into_response())
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

/// `POST /api/deliveries/{id}/replay`: attempts a finished delivery again, through the
/// processor; its ledger effects are decided anew against the current rows, so nothing already
/// applied is applied twice.
async fn replay_one(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = delivery_id(&id)?;
    let unavailable = |error| ApiError::journal_unavailable(&error);
    let delivery = state.storage.read.delivery(id).await.map_err(unavailable)?;
    let delivery = delivery.ok_or_else(|| ApiError::not_found(format!("no delivery {id}")))?;
    let request = ReplayRequest {
        ids: Some(vec![id]),
        source: None,
        status: None,
        event_type: None,
        limit: 1,
        now: state.clock.now(),
        dry_run: false,
    };
    let replayed = state
        .storage
        .log
        .replay(request)
        .await
        .map_err(unavailable)?;
    if replayed == 0 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_replayable",
            format!(
                "delivery {id} is {} ({}): only finished, identified deliveries are replayed",
                delivery.status.as_str(),
                delivery.event_type
            ),
        ));
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "replayed": replayed, "delivery_id": id })),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
struct ReplayQuery {
    source: Option<String>,
    status: Option<String>,
    event_type: Option<String>,
    limit: Option<u32>,
    #[serde(default)]
    dry_run: bool,
}

/// `POST /api/deliveries/replay?source=&status=&event_type=&limit=&dry_run=true`: replays
/// every finished delivery matching the filter (the dead ones of a source, say), oldest first,
/// at most `limit` (default 1,000, at most 100,000); `dry_run` only counts them.
async fn replay_matching(
    State(state): State<SharedState>,
    Query(query): Query<ReplayQuery>,
) -> Result<Response, ApiError> {
    let status = status_filter(query.status.as_deref())?;
    let request = ReplayRequest {
        ids: None,
        source: query.source,
        status,
        event_type: query.event_type,
        limit: query.limit.unwrap_or(1_000).clamp(1, 100_000),
        now: state.clock.now(),
        dry_run: query.dry_run,
    };
    let count = state
        .storage
        .log
        .replay(request)
        .await
        .map_err(|error| ApiError::journal_unavailable(&error))?;
    let body = if query.dry_run {
        json!({ "dry_run": true, "matched": count, "replayed": 0 })
    } else {
        json!({ "dry_run": false, "matched": count, "replayed": count })
    };
    Ok((StatusCode::OK, Json(body)).into_response())
}

/// Seed 003's `GET /api/webhooks/events` (event monitoring, authenticated): the newest
/// deliveries as its `webhook_events` rows (`event_type`, `event_id`, `processed`,
/// `error_message`, `created_at`, `processed_at`), filtered like `/api/deliveries`.
async fn webhook_events(
    State(state): State<SharedState>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let filter = DeliveryFilter {
        source: query.source,
        status: status_filter(query.status.as_deref())?,
        before_id: query.before,
        limit: query.limit.unwrap_or(50).clamp(1, 500),
    };
    let deliveries = state
        .storage
        .read
        .deliveries(filter)
        .await
        .map_err(|error| ApiError::journal_unavailable(&error))?;
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
    Ok(Json(json!({ "events": events })).into_response())
}
