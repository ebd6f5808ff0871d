//! Refract as a source: seed 001's `POST /api/v2/webhooks/orders`, and a Discord-shaped
//! `POST /api/webhooks/refract/{token}` for bots configured with a Discord webhook URL (which
//! is how Refract really posts). Refract cannot sign, so a shared token authenticates it: in
//! the Discord path, as `?token=`, or in an `X-Wharf-Token` header, compared in constant time.

use std::sync::Arc;

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::ledger::{OrderUpsert, ORDERS, ORDER_EVENTS};
use super::message::{ParseError, RefractMessage};
use crate::clock::Timestamp;
use crate::config::{secrets_from_env, ConfigError, Environment};
use crate::journal::ClaimedDelivery;
use crate::ledger::{LedgerChange, Table};
use crate::sources::registry::{self, Provider};
use crate::sources::{
    IdentifyError, Identity, IncomingRequest, NormalizeError, Normalized, Receipt, Reply, Route,
    SharedSource, Source, Verified,
};
use crate::verify::{verify_token, SecretSet, VerifyError};

const KIND: &str = "refract";

/// Seed 001's URL.
pub const ORDERS_ROUTE: &str = "/api/v2/webhooks/orders";
/// The Discord-shaped URL; the token is the last segment, as in a Discord webhook URL.
pub const DISCORD_ROUTE: &str = "/api/webhooks/refract/{token}";

const TOKEN_HEADER: &str = "x-wharf-token";
const WHERE_TOKEN: &str = "?token=…, an X-Wharf-Token header, or /api/webhooks/refract/{token}";

/// A Refract bot (or several sharing a token).
#[derive(Debug)]
pub struct Refract {
    name: String,
    tokens: SecretSet,
    routes: Vec<Route>,
}

impl Refract {
    pub fn new(name: impl Into<String>, tokens: SecretSet) -> Self {
        Self {
            name: name.into(),
            tokens,
            routes: Vec::new(),
        }
    }

    /// The built-in source, at seed 001's route and the Discord-shaped one.
    pub fn seed(tokens: SecretSet) -> Self {
        Self {
            routes: vec![Route::post(ORDERS_ROUTE), Route::post(DISCORD_ROUTE)],
            ..Self::new(KIND, tokens)
        }
    }
}

/// `[refract]` or `[sources.NAME] kind = "refract"`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    #[serde(default)]
    secrets: Vec<String>,
}

/// Seed 001: tokens from `REFRACT_WEBHOOK_TOKEN` (comma-separated for several).
pub struct RefractProvider;

impl Provider for RefractProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn ledger_tables(&self) -> &'static [&'static Table] {
        static TABLES: [&Table; 2] = [&ORDERS, &ORDER_EVENTS];
        &TABLES
    }

    fn builtin(
        &self,
        section: toml::Table,
        env: &dyn Environment,
    ) -> Result<Option<SharedSource>, ConfigError> {
        let file: FileSettings = registry::settings(KIND, section)?;
        let tokens = secrets_from_env(env.var("REFRACT_WEBHOOK_TOKEN")).unwrap_or(file.secrets);
        Ok(Some(Arc::new(Refract::seed(SecretSet::new(tokens)))))
    }

    fn configured(
        &self,
        name: &str,
        section: toml::Table,
        secrets: SecretSet,
    ) -> Result<SharedSource, ConfigError> {
        let _: FileSettings = registry::settings(&format!("sources.{name}"), section)?;
        Ok(Arc::new(Refract::new(name, secrets)))
    }
}

/// Whether the request came by the Discord-shaped route.
fn via_discord(request: &IncomingRequest) -> bool {
    request.path_param("token").is_some()
}

/// Parses what a request or a stored delivery holds.
fn parse(body: &[u8], content_type: Option<&str>) -> Result<RefractMessage, ParseError> {
    super::parse(body, content_type)
}

impl Source for Refract {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        KIND
    }

    fn routes(&self) -> Vec<Route> {
        self.routes.clone()
    }

    fn secret_path_params(&self) -> &[&'static str] {
        &["token"]
    }

    fn secret_query_params(&self) -> &[&'static str] {
        &["token"]
    }

    fn secret_headers(&self) -> &[&'static str] {
        &[TOKEN_HEADER]
    }

    fn secret_configured(&self) -> bool {
        !self.tokens.is_empty()
    }

    fn authenticate(&self, request: &IncomingRequest, _now: Timestamp) -> Result<(), VerifyError> {
        let query_token = request.query_param("token");
        let provided = request
            .path_param("token")
            .or(query_token.as_deref())
            .or_else(|| request.header(TOKEN_HEADER));
        verify_token(&self.tokens, provided, WHERE_TOKEN)
    }

    /// Each message is its own event (a later one for the same order carries other fields),
    /// so only a byte-identical resend is a duplicate. Without an order number, seed 001's
    /// route answers 422; the Discord route stores the message and ignores it, as Discord
    /// takes any message.
    fn identify(&self, request: &Verified) -> Result<Identity, IdentifyError> {
        let request = request.request();
        let dedup_key = format!("sha256:{}", hex::encode(Sha256::digest(&request.body)));
        match parse(&request.body, request.header("content-type")) {
            Ok(RefractMessage::Order(order)) => Ok(Identity {
                event_id: Some(order.order_number.clone()),
                event_type: format!("order.{}", order.status.as_str()),
                dedup_key,
            }),
            Ok(RefractMessage::TestNotification { .. }) => Ok(Identity {
                event_id: None,
                event_type: "test_notification".to_owned(),
                dedup_key,
            }),
            Err(ParseError::MissingOrderNumber) if via_discord(request) => Ok(Identity {
                event_id: None,
                event_type: "message.without_order".to_owned(),
                dedup_key,
            }),
            Err(error) => Err(IdentifyError::Unparseable(error.to_string())),
        }
    }

    fn normalize(&self, delivery: &ClaimedDelivery) -> Result<Normalized, NormalizeError> {
        let headers: Value = serde_json::from_str(&delivery.headers_json).unwrap_or(Value::Null);
        let content_type = headers.get("content-type").and_then(Value::as_str);
        match parse(&delivery.body, content_type) {
            Ok(RefractMessage::Order(order)) => Ok(Normalized::Changes(vec![LedgerChange::Row(
                Arc::new(OrderUpsert {
                    order: *order,
                    delivery: delivery.id,
                }),
            )])),
            Ok(RefractMessage::TestNotification { title }) => Ok(Normalized::Ignore(format!(
                "a test notification ({title}): no order"
            ))),
            Err(error @ ParseError::MissingOrderNumber) => {
                Ok(Normalized::Ignore(error.to_string()))
            }
            Err(error) => Err(NormalizeError::Invalid(error.to_string())),
        }
    }

    /// Seed 001's route answers with the order number; the Discord route as Discord does:
    /// `204 No Content`, or with `?wait=true` the created message.
    fn accepted(&self, receipt: &Receipt<'_>, request: &IncomingRequest) -> Reply {
        if via_discord(request) {
            if request.query_param("wait").as_deref() != Some("true") {
                return Reply::Empty(StatusCode::NO_CONTENT);
            }
            return Reply::Json(StatusCode::OK, discord_message(receipt, request));
        }
        let message = match receipt.identity.event_id {
            Some(_) if receipt.duplicate => "Order already received",
            Some(_) => "Order received",
            None => "Test notification received",
        };
        Reply::Json(
            StatusCode::OK,
            json!({
                "success": true,
                "message": message,
                "order_number": receipt.identity.event_id,
                "delivery_id": receipt.delivery_id,
                "duplicate": receipt.duplicate,
            }),
        )
    }

    /// FastAPI's `detail`, which seed 001's server answers with, beside a machine code.
    fn error_body(&self, code: &str, message: &str) -> Value {
        json!({ "detail": message, "code": code, "message": message })
    }
}

/// A Discord message object for `?wait=true`: the id is the delivery's, the content and
/// embeds those posted.
fn discord_message(receipt: &Receipt<'_>, request: &IncomingRequest) -> Value {
    let posted: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
    json!({
        "id": receipt.delivery_id.0.to_string(),
        "type": 0,
        "content": posted.get("content").cloned().unwrap_or_else(|| json!("")),
        "embeds": posted.get("embeds").cloned().unwrap_or_else(|| json!([])),
        "timestamp": request.received_at.to_rfc3339(),
        "webhook_id": "wharf",
    })
}
