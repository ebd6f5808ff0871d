//! Receiving one delivery: limits, authentication, identification, durable append, answer.
//! The 2xx is sent only after the journal says the delivery is durable.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::rejections::{
    redacted_headers, redacted_headers_json, redacted_query, Rejection, REDACTED,
};
use super::{SharedState, SourceRoute};
use crate::journal::{Appended, DeliveryId, DeliveryStatus, NewDelivery};
use crate::metrics::IngressOutcome;
use crate::sources::{
    self, IdentifyError, Identity, IncomingRequest, Receipt, Reply, Settlement, Verified,
};
use crate::telemetry::KeyedLogLimiter;
use crate::verify::VerifyError;

/// A route a source declared (see [`crate::sources::Source::routes`]): the source is fixed
/// by the route, the method by the router.
pub async fn receive_on_route(
    state: SharedState,
    source: Arc<str>,
    path_params: Option<Path<Vec<(String, String)>>>,
    request: Request,
) -> Response {
    let path_params = path_params.map(|Path(params)| params).unwrap_or_default();
    receive_for(&state, &source, request, path_params).await
}

/// `/in/{source}`: POST, and whatever other methods the source's own routes use.
pub async fn receive(
    State(state): State<SharedState>,
    Path(source): Path<String>,
    request: Request,
) -> Response {
    let method = request.method();
    let allowed = state.routes.get(&source).is_none_or(|route| {
        method == Method::POST
            || route
                .source
                .routes()
                .iter()
                .any(|declared| declared.method == method)
    });
    if !allowed {
        let mut response = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{source} does not accept {method} requests"),
        )
        .into_response();
        // RFC 9110: a 405 lists the methods the resource accepts.
        if let Some(route) = state.routes.get(&source) {
            let mut methods = vec![Method::POST.to_string()];
            for declared in route.source.routes() {
                if !methods.contains(&declared.method.to_string()) {
                    methods.push(declared.method.to_string());
                }
            }
            if let Ok(allow) = axum::http::HeaderValue::from_str(&methods.join(", ")) {
                response
                    .headers_mut()
                    .insert(axum::http::header::ALLOW, allow);
            }
        }
        return response;
    }
    receive_for(&state, &source, request, Vec::new()).await
}

/// Takes the request whole: extracting its method, URI and headers apart would copy them.
async fn receive_for(
    state: &SharedState,
    name: &str,
    request: Request,
    path_params: Vec<(String, String)>,
) -> Response {
    let started = Instant::now();
    let (
        Parts {
            method,
            uri,
            headers,
            ..
        },
        body,
    ) = request.into_parts();
    let Some(route) = state.routes.get(name) else {
        return ApiError::not_found(format!("no source named {name:?}")).into_response();
    };
    let source = route.source.as_ref();
    if let Some(limiter) = &route.limiter {
        if let Err(retry_after) = limiter.try_acquire() {
            route.metrics.ingress(IngressOutcome::RateLimited);
            log_rejection(name, "rate_limited", &"too many requests for this source");
            return ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests for this source",
            )
            .with_retry_after(retry_after)
            .for_source(source);
        }
    }
    let body = match read_body(&headers, body, state.limits.max_body_bytes).await {
        Ok(body) => body,
        Err(error) => {
            if error.status == StatusCode::PAYLOAD_TOO_LARGE {
                route.metrics.ingress(IngressOutcome::TooLarge);
            }
            log_rejection(name, error.code, &error.message);
            return error.for_source(source);
        }
    };
    let received_at = state.clock.now();
    let request = IncomingRequest {
        method,
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers,
        body,
        received_at,
        path_params,
    };
    let verified = match sources::authenticate(source, request, received_at) {
        Ok(verified) => verified.with_max_depth(state.limits.max_json_depth),
        Err(rejected) => return reject(route, *rejected),
    };
    let identified = identify(source, &verified);
    let delivery = new_delivery(route, &verified, &identified);
    let appended = match state.storage.log.append(delivery).await {
        Ok(appended) => appended,
        Err(error) => {
            route.metrics.ingress(IngressOutcome::Unavailable);
            return ApiError::journal_unavailable(&error).for_source(source);
        }
    };
    match identified {
        Ok(identity) => {
            let duplicate = matches!(appended, Appended::Duplicate(_));
            route.metrics.ingress(if duplicate {
                IngressOutcome::Duplicate
            } else {
                IngressOutcome::Stored
            });
            state.metrics.ack_latency.observe(started.elapsed());
            let receipt = Receipt {
                delivery_id: appended.id(),
                duplicate,
                identity: &identity,
            };
            let request = verified.request();
            if source.needs_lookup(request) && source.settles_inline(request) {
                let settlement =
                    await_settlement(state, appended.id(), state.limits.inline_settle_timeout)
                        .await;
                return reply_response(source.settled(&receipt, request, &settlement));
            }
            reply_response(source.accepted(&receipt, request))
        }
        Err(error) => {
            route.metrics.ingress(IngressOutcome::Invalid);
            log_rejection(
                name,
                error.code(),
                &format_args!(
                    "genuine, but it cannot be identified ({error}); kept as failed delivery {}",
                    appended.id()
                ),
            );
            ApiError::new(error.status(), error.code(), error.reply()).for_source(source)
        }
    }
}

fn reply_response(reply: Reply) -> Response {
    match reply {
        Reply::Json(status, body) => (status, Json(body)).into_response(),
        Reply::JsonText(status, text) => {
            (status, [(header::CONTENT_TYPE, "application/json")], text).into_response()
        }
        Reply::Text(status, text) => (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            text,
        )
            .into_response(),
        Reply::Empty(status) => status.into_response(),
        Reply::Redirect(location) => Redirect::to(&location).into_response(),
    }
}

/// Waits (up to `timeout`) for a `verifying` delivery to be settled by the processor, which
/// is woken by the append; reads the journal after each processed batch, never on a timer.
async fn await_settlement(state: &SharedState, id: DeliveryId, timeout: Duration) -> Settlement {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut progress = state.processor.progress();
    loop {
        progress.borrow_and_update();
        match state.storage.read.delivery(id).await {
            Ok(Some(view)) if !view.status.is_waiting() => {
                return match view.status {
                    DeliveryStatus::Processed | DeliveryStatus::Ignored => Settlement::Confirmed,
                    _ => Settlement::Refused(view.last_error.unwrap_or_default()),
                };
            }
            Ok(_) => {}
            Err(_) => return Settlement::Undecided,
        }
        tokio::select! {
            changed = progress.changed() => {
                if changed.is_err() {
                    return Settlement::Undecided;
                }
            }
            () = tokio::time::sleep_until(deadline) => return Settlement::Undecided,
        }
    }
}

/// Reads the body up to `limit` bytes; a declared or actual excess is a 413.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is larger than {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(error) => Err(ApiError::bad_request(
            "unreadable_body",
            format!("the body could not be read: {error}"),
        )),
    }
}

fn reject(route: &SourceRoute, rejected: sources::Rejected) -> Response {
    let source = route.source.as_ref();
    let request = &rejected.request;
    route.metrics.ingress(IngressOutcome::SignatureFailed);
    log_rejection(source.name(), rejected.error.code(), &rejected.error);
    route.rejections.push(Rejection {
        at: request.received_at.to_rfc3339(),
        code: rejected.error.code(),
        message: rejected.error.to_string(),
        method: request.method.to_string(),
        path: redacted_path(request, source.secret_path_params()),
        query: request
            .query
            .as_deref()
            .map(|query| redacted_query(query, source.secret_query_params())),
        headers: redacted_headers(&request.headers, source.secret_headers()),
        body_bytes: request.body.len(),
    });
    let (status, message) = match rejected.error {
        VerifyError::NoSecretConfigured => (
            StatusCode::UNAUTHORIZED,
            "this source has no secret configured, so it refuses all traffic".to_owned(),
        ),
        ref error => (StatusCode::UNAUTHORIZED, error.to_string()),
    };
    ApiError::new(status, rejected.error.code(), message).for_source(source)
}

/// One WARN per rejected request, naming the source and the cause (never the request's
/// secret, headers or body: `VerifyError`'s messages describe, they do not quote). Anyone can
/// send these, so each (source, cause) logs at most one line a second, carrying how many were
/// held back.
fn log_rejection(source: &str, cause: &str, reason: &dyn std::fmt::Display) {
    static LOG: OnceLock<KeyedLogLimiter> = OnceLock::new();
    let limiter = LOG.get_or_init(|| KeyedLogLimiter::new(Duration::from_secs(1), 1024));
    if let Some(suppressed) = limiter.allow(&format!("{source}\n{cause}")) {
        tracing::warn!(source = %source, cause = %cause, suppressed, "request rejected: {reason}");
    }
}

fn identify(source: &dyn sources::Source, verified: &Verified) -> Result<Identity, IdentifyError> {
    let identified = source.identify(verified);
    let body = &verified.request().body;
    let looks_like_json = body
        .iter()
        .find(|byte| !byte.is_ascii_whitespace())
        .is_some_and(|byte| matches!(byte, b'{' | b'['));
    if looks_like_json {
        // Refused for every source, whether or not it reads JSON, and before anything the
        // source said; a source that read the body made this check in the same pass.
        verified.check_json()?;
    }
    identified
}

/// The request's path with the values of its secret path segments (a token in the URL)
/// replaced: what the journal and the rejection log keep.
fn redacted_path(request: &IncomingRequest, secret_params: &[&str]) -> String {
    let mut path = request.path.clone();
    for (name, value) in &request.path_params {
        if secret_params.contains(&name.as_str()) && !value.is_empty() {
            path = path.replace(value.as_str(), REDACTED);
        }
    }
    path
}

/// The journal row for a verified request; one that could not be identified is kept as
/// `failed`, keyed by its body's hash so that the provider's retries stay one row.
fn new_delivery(
    route: &SourceRoute,
    verified: &Verified,
    identified: &Result<Identity, IdentifyError>,
) -> NewDelivery {
    let request = verified.request();
    let source = route.source.as_ref();
    let path = redacted_path(request, source.secret_path_params());
    let query = request
        .query
        .as_deref()
        .map(|query| redacted_query(query, source.secret_query_params()));
    let mut request_line = vec![
        (":method", request.method.as_str()),
        (":path", path.as_str()),
    ];
    if let Some(query) = &query {
        request_line.push((":query", query.as_str()));
    }
    let headers = redacted_headers_json(&request_line, &request.headers, source.secret_headers());
    let (event_id, event_type, dedup_key, status, last_error) = match identified {
        Ok(identity) => (
            identity.event_id.clone(),
            identity.event_type.clone(),
            identity.dedup_key.clone(),
            if source.needs_lookup(request) {
                DeliveryStatus::Verifying
            } else {
                DeliveryStatus::Pending
            },
            None,
        ),
        Err(error) => (
            None,
            "unidentified".to_owned(),
            format!(
                "unidentified:sha256:{}",
                hex::encode(Sha256::digest(&request.body))
            ),
            DeliveryStatus::Failed,
            Some(format!("{}: {error}", error.code())),
        ),
    };
    NewDelivery {
        source: route.source.name().to_owned(),
        event_id,
        event_type,
        dedup_key,
        received_at: request.received_at,
        headers_json: headers,
        body: source
            .redacted_body(&request.body)
            .unwrap_or_else(|| request.body.clone()),
        status,
        last_error,
    }
}
