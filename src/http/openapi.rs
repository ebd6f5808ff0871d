//! The OpenAPI 3.1 document at `/openapi.json`, generated from the handlers' `#[utoipa::path]`
//! annotations and the answer types, then completed with what only the running configuration
//! knows (each source's own routes, the names of sources and ledger tables); and the
//! interactive docs at `/docs`, Swagger UI embedded in the binary (no CDN).

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::admin::{deliveries, ledger, schema, seeds, sources, stats};
use super::{orders_ws, stream, SharedState};
use crate::sources::catalog::ledger_catalog;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Wharf",
        description = "Self-hosted inbound webhook gateway. Providers post to the ingress routes \
                       (open: each source verifies its provider's signature); operators use \
                       `/api/...` with `Authorization: Bearer TOKEN`. Every error is JSON \
                       `{\"error\": {\"code\", \"message\"}}` (ingress errors in the provider's \
                       own format where its seed asks for one)."
    ),
    paths(
        deliveries::list,
        deliveries::show,
        deliveries::replay_one,
        deliveries::replay_matching,
        ledger::tables,
        ledger::rows,
        ledger::row,
        sources::list,
        sources::rejections,
        stats::stats,
        stats::revenue,
        seeds::refract_logs,
        seeds::webhook_events,
        seeds::await_idle,
        stream::sse,
        stream::websocket,
        stream::issue_ticket,
        orders_ws::orders_socket,
        health,
        seed_health,
        metrics,
        ingress,
        openapi_json,
        docs_page,
    ),
    components(schemas(schema::ErrorBody, super::admin::export::ListFormat)),
    modifiers(&BearerToken),
    tags(
        (name = "deliveries", description = "Every delivery, its attempts, replay"),
        (name = "ledger", description = "The tables deliveries were normalized into"),
        (name = "sources", description = "Configured sources, their secrets' presence, rejections"),
        (name = "stats", description = "Seed 003's monitoring and more"),
        (name = "seeds", description = "The seeds' own admin routes"),
        (name = "stream", description = "The live change feed: Server-Sent Events, WebSocket, tickets"),
        (name = "admin", description = "Operations"),
        (name = "ops", description = "Open: health, metrics, this document"),
        (name = "ingress", description = "Where providers deliver (open; signatures verified)"),
    )
)]
struct ApiDoc;

struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        // The streams also take a ticket (`POST /api/stream/ticket`) in the query.
        components.add_security_scheme(
            "ticket",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::new("ticket"))),
        );
    }
}

/// `/health`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `healthy` or `unhealthy`.
    pub status: String,
    pub timestamp: String,
    /// Why the journal is unhealthy.
    pub journal: Option<String>,
}

#[utoipa::path(get, path = "/health", tag = "ops",
    responses((status = 200, body = Health),
              (status = 503, description = "The journal cannot store", body = Health)))]
#[allow(dead_code)]
fn health() {}

/// Seed 003's health route: the same answer as `/health`.
#[utoipa::path(get, path = "/api/webhooks/health", tag = "ops",
    responses((status = 200, body = Health),
              (status = 503, description = "The journal cannot store", body = Health)))]
#[allow(dead_code)]
fn seed_health() {}

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, body = String, content_type = "text/plain")))]
#[allow(dead_code)]
fn metrics() {}

/// Any source by name; the source's own routes are listed too. The answer is the source's:
/// what its provider expects on success, its error format otherwise.
#[utoipa::path(post, path = "/in/{source}", tag = "ingress",
    params(("source" = String, Path, description = "A configured source's name")),
    request_body(content = String, content_type = "application/json",
                 description = "The provider's payload, signed as it signs"),
    responses((status = "default", description = "The source's reply or error")))]
#[allow(dead_code)]
fn ingress() {}

#[utoipa::path(get, path = "/openapi.json", tag = "ops",
    responses((status = 200, description = "This document", body = Object)))]
#[allow(dead_code)]
fn openapi_json() {}

#[utoipa::path(get, path = "/docs", tag = "ops",
    responses((status = 200, description = "Interactive docs (Swagger UI)", body = String,
               content_type = "text/html")))]
#[allow(dead_code)]
fn docs_page() {}

/// The document for this server: the generated one, plus each source's declared routes and
/// the names a path parameter may take.
pub fn document(state: &SharedState) -> Value {
    let mut document = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    let tables: Vec<&str> = ledger_catalog().iter().map(|table| table.name).collect();
    let names: Vec<&str> = state.routes.keys().map(String::as_str).collect();
    for path in ["/api/ledger/{table}", "/api/ledger/{table}/{key}"] {
        restrict_path_parameter(&mut document, path, "table", &tables);
    }
    restrict_path_parameter(
        &mut document,
        "/api/sources/{name}/rejections",
        "name",
        &names,
    );
    restrict_path_parameter(&mut document, "/in/{source}", "source", &names);
    add_source_routes(&mut document, state);
    document
}

/// Gives a path parameter an `enum` of the values this server knows.
fn restrict_path_parameter(document: &mut Value, path: &str, name: &str, values: &[&str]) {
    let Some(item) = document["paths"]
        .get_mut(path)
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for operation in item.values_mut() {
        let Some(parameters) = operation["parameters"].as_array_mut() else {
            continue;
        };
        for parameter in parameters {
            if parameter["name"] == name && parameter["in"] == "path" {
                parameter["schema"] = json!({ "type": "string", "enum": values });
            }
        }
    }
}

/// Each source's own routes (the seeds' URLs), open, answered in the source's own format.
fn add_source_routes(document: &mut Value, state: &SharedState) {
    let Some(paths) = document["paths"].as_object_mut() else {
        return;
    };
    for (name, route) in &state.routes {
        for declared in route.source.routes() {
            let method = declared.method.as_str().to_ascii_lowercase();
            let parameters: Vec<Value> = declared
                .path
                .split('/')
                .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
                .map(|param| {
                    json!({ "name": param, "in": "path", "required": true,
                            "schema": { "type": "string" } })
                })
                .collect();
            let mut operation = json!({
                "tags": ["ingress"],
                "summary": format!("Receive a delivery for {name} ({})", route.source.kind()),
                "operationId": format!("{method}_{name}_{}", declared.path.replace(['/', '{', '}', '-', '.'], "_")),
                "parameters": parameters,
                "responses": { "default": { "description": "The source's reply or error" } },
            });
            if method != "get" {
                operation["requestBody"] = json!({
                    "description": "The provider's payload, signed as it signs",
                    "content": { "application/json": { "schema": { "type": "string" } } },
                });
            }
            let item = paths
                .entry(declared.path.clone())
                .or_insert_with(|| json!({}));
            item[method.as_str()] = operation;
        }
    }
}

/// `GET /openapi.json`.
pub async fn openapi_json_route(State(state): State<SharedState>) -> Response {
    Json(document(&state)).into_response()
}

const SWAGGER_UI_JS: &[u8] = include_bytes!("../../assets/swagger-ui/swagger-ui-bundle.js");
const SWAGGER_UI_CSS: &[u8] = include_bytes!("../../assets/swagger-ui/swagger-ui.css");

const DOCS_PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Wharf API</title>
  <link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui",
                                  persistAuthorization: true });
  </script>
</body>
</html>
"##;

/// `GET /docs`: Swagger UI over `/openapi.json`, from the binary.
pub async fn docs_route() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        DOCS_PAGE,
    )
        .into_response()
}

/// `GET /docs/swagger-ui-bundle.js` and `/docs/swagger-ui.css`.
pub async fn docs_asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let (body, content_type) = match file.as_str() {
        "swagger-ui-bundle.js" => (SWAGGER_UI_JS, "application/javascript"),
        "swagger-ui.css" => (SWAGGER_UI_CSS, "text/css"),
        _ => {
            return super::error::ApiError::not_found(format!("no docs asset {file:?}"))
                .into_response()
        }
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=86400"),
            ),
        ],
        body,
    )
        .into_response()
}
