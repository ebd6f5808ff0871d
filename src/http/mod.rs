//! The HTTP surface. [`router`] lists every URL in one place: ingress routes (the seeds' paths
//! kept as aliases of `/in/{source}`), health and metrics, and the token-guarded admin API.
//! [`serve`] is the accept loop that runs it, with the connection-level limits.

pub mod admin;
pub mod dashboard;
pub mod error;
pub mod ingress;
pub mod openapi;
pub mod ops;
pub mod orders_ws;
pub mod rate_limit;
pub mod rejections;
pub mod serve;
pub mod stream;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, MethodFilter, MethodRouter};
use axum::Router;

use self::error::ApiError;
use self::rate_limit::TokenBucket;
use self::rejections::RejectionLog;
use crate::bus::Bus;
use crate::clock::SharedClock;
use crate::config::{Config, Limits};
use crate::health::SourceHealth;
use crate::journal::Storage;
use crate::metrics::{Metrics, SourceMetrics};
use crate::processor::Processor;
use crate::sources::SharedSource;

/// A source with what the ingress keeps beside it.
pub struct SourceRoute {
    pub source: SharedSource,
    pub limiter: Option<TokenBucket>,
    pub rejections: RejectionLog,
    pub metrics: Arc<SourceMetrics>,
}

/// Everything a handler may reach.
pub struct AppState {
    pub storage: Storage,
    pub routes: BTreeMap<String, SourceRoute>,
    pub clock: SharedClock,
    pub limits: Limits,
    pub metrics: Arc<Metrics>,
    /// The admin API's tokens (digests only); check one with [`admin::auth::AdminTokens::allows`].
    pub admin_tokens: admin::auth::AdminTokens,
    pub processor: Arc<Processor>,
    /// The live change feed, for `/api/stream`, `/api/ws` and seed 001's broadcast.
    pub bus: Arc<Bus>,
    /// Per-source flags (silent, rejection or dead spikes) for `/health` and `/metrics`.
    pub health: Arc<SourceHealth>,
}

impl AppState {
    pub fn new(
        config: &Config,
        storage: Storage,
        clock: SharedClock,
        metrics: Arc<Metrics>,
        processor: Arc<Processor>,
    ) -> Self {
        let routes = config
            .sources
            .iter()
            .map(|source| {
                let name = source.name().to_owned();
                let limit = config
                    .source_rate_limits
                    .get(&name)
                    .copied()
                    .or(config.limits.rate_limit);
                let route = SourceRoute {
                    source: source.clone(),
                    limiter: limit.map(TokenBucket::new),
                    rejections: RejectionLog::default(),
                    metrics: metrics.source(&name).cloned().unwrap_or_default(),
                };
                (name, route)
            })
            .collect();
        let bus = Bus::start(storage.feed.clone(), config.limits.stream_buffer);
        let health = SourceHealth::new(
            config.sources.iter().map(|s| s.name().to_owned()),
            metrics.clone(),
            clock.clone(),
        );
        health.start(&bus, storage.read.clone());
        Self {
            storage,
            routes,
            clock,
            limits: config.limits.clone(),
            metrics,
            admin_tokens: admin::auth::AdminTokens::new(
                &config
                    .admin_token
                    .iter()
                    .chain(&config.admin_tokens)
                    .cloned()
                    .collect::<Vec<_>>(),
            ),
            processor,
            bus,
            health,
        }
    }
}

pub type SharedState = Arc<AppState>;

/// The whole URL surface: each source's own routes (see [`crate::sources::Source::routes`]),
/// `/in/{source}` for every source, health, metrics and the admin API.
pub fn router(state: SharedState) -> Router {
    let timeout = state.limits.request_timeout;
    source_routes(&state)
        .route("/in/{source}", any(ingress::receive))
        .route("/health", get(ops::health))
        // Seed 003's health route, the same answer.
        .route("/api/webhooks/health", get(ops::health))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(openapi::openapi_json_route))
        .route("/docs", get(openapi::docs_route))
        .route("/docs/{file}", get(openapi::docs_asset))
        .merge(admin::router(state.clone()))
        .merge(stream::router(state.clone()))
        .merge(orders_ws::router(state.clone()))
        .merge(dashboard::router())
        .merge(
            Router::new()
                .route("/api/health/sources", get(ops::source_health))
                .route_layer(middleware::from_fn_with_state(
                    state.clone(),
                    admin::auth::require_token,
                )),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(timeout, deadline))
        .with_state(state)
}

/// The routes sources declared, grouped by path. Two sources claiming the same method on the
/// same path were refused when the configuration was loaded.
fn source_routes(state: &SharedState) -> Router<SharedState> {
    let mut router = Router::new();
    for (path, methods) in declared_routes(state.routes.values().map(|r| &r.source)) {
        let mut method_router = MethodRouter::new();
        for (method, source) in methods {
            let Ok(filter) = MethodFilter::try_from(method) else {
                continue;
            };
            let source: Arc<str> = Arc::from(source);
            method_router = method_router.on(
                filter,
                move |State(state): State<SharedState>, params, request| {
                    ingress::receive_on_route(state, source, params, request)
                },
            );
        }
        router = router.route(&path, method_router);
    }
    router
}

/// Path → (method, source name) for every declared route.
fn declared_routes<'a>(
    sources: impl Iterator<Item = &'a SharedSource>,
) -> BTreeMap<String, Vec<(axum::http::Method, String)>> {
    let mut paths: BTreeMap<String, Vec<(axum::http::Method, String)>> = BTreeMap::new();
    for source in sources {
        for route in source.routes() {
            let methods = paths.entry(route.path).or_default();
            if !methods.iter().any(|(method, _)| *method == route.method) {
                methods.push((route.method, source.name().to_owned()));
            }
        }
    }
    paths
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

/// Bounds every request's time in the server. A delivery stored after its deadline is still
/// stored: the provider's retry is then answered "duplicate".
async fn deadline(State(timeout): State<Duration>, request: Request, next: Next) -> Response {
    let allowed = if request
        .uri()
        .path()
        .starts_with("/api/admin/processor/idle")
    {
        Duration::from_secs(600)
    } else {
        timeout
    };
    match tokio::time::timeout(allowed, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "the request took longer than the server allows",
        )
        .with_retry_after(1)
        .into_response(),
    }
}
