//! Deliveries: the filtered list (newest first, cursor pages, or a streamed export), one
//! delivery in full (request line, redacted headers, raw body, every attempt), and replay.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::IntoParams;

use super::export::{self, ListFormat, PageFuture, EXPORT_PAGE};
use super::extract::{ApiPath, ApiQuery};
use super::schema::ErrorBody;
use super::schema::{
    DeliveryDetail, DeliveryInFull, DeliveryPage, ReplayedMatching, ReplayedOne, RequestLine,
};
use super::{delivery_id, limit_in, status_filter, unavailable};
use crate::clock::Timestamp;
use crate::http::error::ApiError;
use crate::http::SharedState;
use crate::journal::{DeliveryFilter, DeliveryView, ReadModel, ReplayRequest};

/// `GET /api/deliveries` filters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    pub source: Option<String>,
    pub status: Option<String>,
    pub event_type: Option<String>,
    /// RFC 3339: received at or after.
    pub since: Option<String>,
    /// RFC 3339: received before.
    pub until: Option<String>,
    /// Text that must occur in the raw body.
    pub q: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// The older name of `cursor`: a delivery id.
    pub before: Option<i64>,
    /// Deliveries per page (default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    #[serde(default)]
    pub format: ListFormat,
}

impl ListQuery {
    /// The filter this query asks for, refused as JSON when a value is malformed.
    pub fn filter(&self) -> Result<DeliveryFilter, ApiError> {
        let before_id = match &self.cursor {
            Some(cursor) => Some(parse_cursor(cursor)?),
            None => self.before,
        };
        Ok(DeliveryFilter {
            source: self.source.clone(),
            status: status_filter(self.status.as_deref())?,
            event_type: self.event_type.clone(),
            since: time_filter("since", self.since.as_deref())?,
            until: time_filter("until", self.until.as_deref())?,
            body_contains: self.q.clone().filter(|q| !q.is_empty()),
            before_id,
            limit: limit_in(self.limit, 50, 1000)?,
        })
    }
}

fn parse_cursor(cursor: &str) -> Result<i64, ApiError> {
    cursor.parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_cursor",
            format!("{cursor:?} is not a cursor this list gave"),
        )
    })
}

/// An RFC 3339 time from the query string.
pub fn time_filter(name: &str, text: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    text.map(|text| {
        Timestamp::parse_rfc3339(text).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_time",
                format!("{name}={text:?} is not an RFC 3339 time (2024-01-05T10:30:00Z)"),
            )
        })
    })
    .transpose()
}

/// A page, and the cursor of the next when this one is full.
async fn page(
    read: &dyn ReadModel,
    filter: DeliveryFilter,
) -> Result<(Vec<DeliveryView>, Option<String>), ApiError> {
    let limit = filter.limit as usize;
    let items = read.deliveries(filter).await.map_err(unavailable)?;
    let next = (items.len() == limit)
        .then(|| items.last().map(|last| last.id.to_string()))
        .flatten();
    Ok((items, next))
}

/// `GET /api/deliveries`: newest first; `format=csv|jsonl` streams every match.
#[utoipa::path(get, path = "/api/deliveries", tag = "deliveries", params(ListQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page (JSON), or every match streamed (csv, jsonl)",
         content((DeliveryPage = "application/json"), (String = "text/csv"),
                 (String = "application/jsonl"))),
        (status = 400, description = "A malformed parameter", body = ErrorBody), (status = 401, description = "No valid admin token", body = ErrorBody), (status = 503, description = "Storage unavailable", body = ErrorBody)))]
pub async fn list(
    State(state): State<SharedState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let filter = query.filter()?;
    if query.format != ListFormat::Json {
        return Ok(export_deliveries(state, filter, query.format));
    }
    let (items, next_cursor) = page(state.storage.read.as_ref(), filter).await?;
    Ok(Json(DeliveryPage { items, next_cursor }).into_response())
}

/// The columns of a delivery in an export.
const EXPORT_COLUMNS: [&str; 12] = [
    "id",
    "source",
    "event_id",
    "event_type",
    "dedup_key",
    "received_at",
    "status",
    "attempts",
    "last_error",
    "next_attempt_at",
    "processed_at",
    "body_bytes",
];

fn export_deliveries(state: SharedState, filter: DeliveryFilter, format: ListFormat) -> Response {
    let read: Arc<dyn ReadModel> = state.storage.read.clone();
    let columns = EXPORT_COLUMNS.iter().map(|c| (*c).to_owned()).collect();
    export::stream(format, "deliveries", columns, move |cursor| -> PageFuture {
        let read = read.clone();
        let mut filter = filter.clone();
        filter.limit = EXPORT_PAGE;
        Box::pin(async move {
            if let Some(cursor) = cursor {
                filter.before_id = cursor.parse().ok();
            }
            let limit = filter.limit as usize;
            let items = read.deliveries(filter).await?;
            let next = (items.len() == limit)
                .then(|| items.last().map(|last| last.id.to_string()))
                .flatten();
            let rows = items.iter().map(as_object).collect();
            Ok((rows, next))
        })
    })
}

fn as_object(view: &DeliveryView) -> Map<String, Value> {
    match serde_json::to_value(view) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// `GET /api/deliveries/{id}`: the delivery with its request line (`method`, `path`, `query`
/// from the stored pseudo-headers), the other headers (secrets redacted when stored), the raw
/// body, and every attempt.
#[utoipa::path(get, path = "/api/deliveries/{id}", tag = "deliveries",
    params(("id" = i64, Path, description = "The delivery's id")),
    security(("bearer" = [])),
    responses((status = 200, body = DeliveryDetail), (status = 400, description = "A malformed parameter", body = ErrorBody), (status = 401, description = "No valid admin token", body = ErrorBody), (status = 404, description = "No such thing", body = ErrorBody), (status = 503, description = "Storage unavailable", body = ErrorBody)))]
pub async fn show(
    State(state): State<SharedState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let id = delivery_id(&id)?;
    let delivery = state.storage.read.delivery(id).await.map_err(unavailable)?;
    let mut delivery = delivery.ok_or_else(|| ApiError::not_found(format!("no delivery {id}")))?;
    let attempts = state.storage.read.attempts(id).await.map_err(unavailable)?;
    let request = delivery
        .headers
        .as_mut()
        .map(take_request_line)
        .unwrap_or_default();
    let delivery = DeliveryInFull {
        view: delivery,
        request,
    };
    Ok(Json(DeliveryDetail { delivery, attempts }).into_response())
}

/// Moves the HTTP/2-style pseudo-headers (`:method`, `:path`, `:query`) the ingress stores
/// beside the headers into a request line of their own.
fn take_request_line(headers: &mut Value) -> RequestLine {
    let Some(map) = headers.as_object_mut() else {
        return RequestLine::default();
    };
    let mut take = |name: &str| match map.remove(name) {
        Some(Value::String(text)) => Some(text),
        _ => None,
    };
    RequestLine {
        method: take(":method"),
        path: take(":path"),
        query: take(":query"),
    }
}

/// `POST /api/deliveries/{id}/replay`: attempts a finished delivery again, through the
/// processor; its ledger effects are decided anew against the current rows, so nothing already
/// applied is applied twice.
#[utoipa::path(post, path = "/api/deliveries/{id}/replay", tag = "deliveries",
    params(("id" = i64, Path, description = "The delivery's id")),
    security(("bearer" = [])),
    responses((status = 202, description = "Back in line for the processor", body = ReplayedOne),
        (status = 400, description = "A malformed parameter", body = ErrorBody), (status = 401, description = "No valid admin token", body = ErrorBody), (status = 404, description = "No such thing", body = ErrorBody),
        (status = 409, description = "Not finished, or never identified", body = ErrorBody),
        (status = 503, description = "Storage unavailable", body = ErrorBody)))]
pub async fn replay_one(
    State(state): State<SharedState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let id = delivery_id(&id)?;
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
    let answer = ReplayedOne {
        replayed,
        delivery_id: id.0,
    };
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReplayQuery {
    source: Option<String>,
    status: Option<String>,
    event_type: Option<String>,
    /// At most this many, oldest first (default 1,000).
    #[param(minimum = 1, maximum = 100000)]
    limit: Option<u32>,
    /// Only count what would be replayed.
    #[serde(default)]
    dry_run: bool,
}

/// `POST /api/deliveries/replay?source=&status=&event_type=&limit=&dry_run=true`: replays
/// every finished delivery matching the filter (the dead ones of a source, say), oldest first,
/// at most `limit` (default 1,000, at most 100,000); `dry_run` only counts them.
#[utoipa::path(post, path = "/api/deliveries/replay", tag = "deliveries", params(ReplayQuery),
    security(("bearer" = [])),
    responses((status = 200, body = ReplayedMatching), (status = 400, description = "A malformed parameter", body = ErrorBody), (status = 401, description = "No valid admin token", body = ErrorBody), (status = 503, description = "Storage unavailable", body = ErrorBody)))]
pub async fn replay_matching(
    State(state): State<SharedState>,
    ApiQuery(query): ApiQuery<ReplayQuery>,
) -> Result<Response, ApiError> {
    let status = status_filter(query.status.as_deref())?;
    let request = ReplayRequest {
        ids: None,
        source: query.source,
        status,
        event_type: query.event_type,
        limit: limit_in(query.limit, 1_000, 100_000)?,
        now: state.clock.now(),
        dry_run: query.dry_run,
    };
    let count = state
        .storage
        .log
        .replay(request)
        .await
        .map_err(unavailable)?;
    let answer = ReplayedMatching {
        dry_run: query.dry_run,
        matched: count,
        replayed: if query.dry_run { 0 } else { count },
    };
    Ok(Json(answer).into_response())
}
