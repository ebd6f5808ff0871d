//! Sources as an operator sees them: routes, whether a secret is configured (never the
//! secret), delivery counts, and the last requests the ingress refused, with their cause.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::extract::ApiPath;
use super::schema::{
    ErrorBody, RejectionSummary, SourceCounts, SourceRejections, SourceView, Sources,
};
use super::unavailable;
use crate::clock::Timestamp;
use crate::http::error::ApiError;
use crate::http::{SharedState, SourceRoute};
use crate::journal::query::SourceWindow;

/// Rejections listed per source in `GET /api/sources`.
const LAST_REJECTIONS: usize = 5;

/// `GET /api/sources`.
#[utoipa::path(get, path = "/api/sources", tag = "sources", security(("bearer" = [])),
    responses((status = 200, body = Sources), (status = 401, description = "No valid admin token", body = ErrorBody), (status = 503, description = "Storage unavailable", body = ErrorBody)))]
pub async fn list(State(state): State<SharedState>) -> Result<Response, ApiError> {
    let counts = state
        .storage
        .read
        .source_counts(Timestamp(0))
        .await
        .map_err(unavailable)?;
    let sources = state
        .routes
        .iter()
        .map(|(name, route)| {
            let counts = counts
                .iter()
                .find(|window| &window.source == name)
                .cloned()
                .unwrap_or_default();
            source_view(name, route, &counts)
        })
        .collect();
    Ok(Json(Sources { sources }).into_response())
}

fn source_view(name: &str, route: &SourceRoute, counts: &SourceWindow) -> SourceView {
    let mut routes = vec![format!("POST /in/{name}")];
    routes.extend(
        route
            .source
            .routes()
            .into_iter()
            .map(|declared| format!("{} {}", declared.method, declared.path)),
    );
    let last_rejections = route
        .rejections
        .recent()
        .into_iter()
        .take(LAST_REJECTIONS)
        .map(|rejection| RejectionSummary {
            at: rejection.at,
            code: rejection.code.to_owned(),
            cause: rejection.message,
            method: rejection.method,
            path: rejection.path,
        })
        .collect();
    SourceView {
        name: name.to_owned(),
        kind: route.source.kind().to_owned(),
        route: format!("/in/{name}"),
        routes,
        secret_configured: route.source.secret_configured(),
        counts: SourceCounts {
            received: counts.received,
            pending: counts.pending,
            processed: counts.processed,
            ignored: counts.ignored,
            failed: counts.failed,
            dead: counts.dead,
            rejected: counts.rejected,
        },
        rejected: route.rejections.total(),
        last_rejections,
    }
}

/// `GET /api/sources/{name}/rejections`: every rejection the log keeps, newest first.
#[utoipa::path(get, path = "/api/sources/{name}/rejections", tag = "sources",
    params(("name" = String, Path, description = "A source's name")),
    security(("bearer" = [])),
    responses((status = 200, body = SourceRejections), (status = 401, description = "No valid admin token", body = ErrorBody), (status = 404, description = "No such thing", body = ErrorBody)))]
pub async fn rejections(
    State(state): State<SharedState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Response, ApiError> {
    let route = state
        .routes
        .get(&name)
        .ok_or_else(|| ApiError::not_found(format!("no source named {name:?}")))?;
    Ok(Json(SourceRejections {
        total: route.rejections.total(),
        rejections: route.rejections.recent(),
        source: name,
    })
    .into_response())
}
