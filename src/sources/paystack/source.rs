//! Paystack (seed 004): `POST /api/payments/paystack/webhook`, signed with an HMAC-SHA512 of
//! the raw body under the secret key in `x-paystack-signature`; and the buyer's
//! `GET /api/payments/paystack/callback?reference=…`, which nothing signs, so it is proven
//! only by asking Paystack's verify API (`GET {PAYSTACK_API_BASE}/transaction/verify/{ref}`).
//! The callback is stored as `verifying` first: if Paystack is slow or down the buyer is told
//! so and the verification is retried in the background; nothing is lost.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::ledger::{PaystackPayment, PaystackStatus};
use crate::clock::Timestamp;
use crate::config::{secrets_from_env, ConfigError, Environment};
use crate::journal::ClaimedDelivery;
use crate::ledger::LedgerChange;
use crate::lookup::{Lookup, LookupAnswer};
use crate::sources::json::text;
use crate::sources::registry::{self, Provider};
use crate::sources::{
    verify_body_hmac, IdentifyError, Identity, IncomingRequest, Judgement, NormalizeError,
    Normalized, Receipt, Reply, Route, Settlement, SharedSource, Source, Verified,
};
use crate::verify::{Algorithm, Encoding, HmacScheme, SecretSet, VerifyError};

const KIND: &str = "paystack";
pub const WEBHOOK_ROUTE: &str = "/api/payments/paystack/webhook";
pub const CALLBACK_ROUTE: &str = "/api/payments/paystack/callback";
const SIGNATURE_HEADER: &str = "x-paystack-signature";
const DEFAULT_API_BASE: &str = "https://api.paystack.co";

/// Where Paystack is reached and where buyers are sent.
#[derive(Debug, Clone)]
pub struct PaystackSettings {
    /// The secret key(s): they sign webhooks and authorize verify calls.
    pub secrets: SecretSet,
    pub api_base: String,
    pub success_url: Option<String>,
    pub failure_url: Option<String>,
}

#[derive(Debug)]
pub struct Paystack {
    name: String,
    settings: PaystackSettings,
    routes: Vec<Route>,
}

impl Paystack {
    pub fn new(name: impl Into<String>, settings: PaystackSettings) -> Self {
        Self {
            name: name.into(),
            settings,
            routes: Vec::new(),
        }
    }

    /// The built-in source, at seed 004's URLs.
    pub fn seed(settings: PaystackSettings) -> Self {
        Self {
            routes: vec![Route::post(WEBHOOK_ROUTE), Route::get(CALLBACK_ROUTE)],
            ..Self::new(KIND, settings)
        }
    }

    fn scheme() -> HmacScheme {
        HmacScheme {
            algorithm: Algorithm::Sha512,
            encoding: Encoding::Hex,
            prefix: None,
        }
    }
}

/// `[paystack]` or `[sources.NAME] kind = "paystack"`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    #[serde(default)]
    secrets: Vec<String>,
    api_base: Option<String>,
    success_url: Option<String>,
    failure_url: Option<String>,
}

impl FileSettings {
    fn resolve(self, secrets: SecretSet, env: &dyn Environment) -> PaystackSettings {
        let api_base = env
            .var("PAYSTACK_API_BASE")
            .or(self.api_base)
            .unwrap_or_else(|| DEFAULT_API_BASE.to_owned());
        PaystackSettings {
            secrets,
            api_base: api_base.trim_end_matches('/').to_owned(),
            success_url: env.var("PAYSTACK_SUCCESS_URL").or(self.success_url),
            failure_url: env.var("PAYSTACK_FAILURE_URL").or(self.failure_url),
        }
    }
}

/// Seed 004: the secret key from `PAYSTACK_SECRET_KEY` (comma-separated while rotating).
pub struct PaystackProvider;

impl Provider for PaystackProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn builtin(
        &self,
        section: toml::Table,
        env: &dyn Environment,
    ) -> Result<Option<SharedSource>, ConfigError> {
        let file: FileSettings = registry::settings(KIND, section)?;
        let secrets = secrets_from_env(env.var("PAYSTACK_SECRET_KEY"))
            .unwrap_or_else(|| file.secrets.clone());
        let settings = file.resolve(SecretSet::new(secrets), env);
        Ok(Some(Arc::new(Paystack::seed(settings))))
    }

    fn configured(
        &self,
        name: &str,
        section: toml::Table,
        secrets: SecretSet,
    ) -> Result<SharedSource, ConfigError> {
        let file: FileSettings = registry::settings(&format!("sources.{name}"), section)?;
        let no_env = std::collections::BTreeMap::new();
        Ok(Arc::new(Paystack::new(
            name,
            file.resolve(secrets, &no_env),
        )))
    }
}

/// The callback's transaction reference (`reference`, or `trxref` which Paystack also adds).
fn callback_reference(request: &IncomingRequest) -> Option<String> {
    request
        .query_param("reference")
        .or_else(|| request.query_param("trxref"))
        .filter(|reference| !reference.trim().is_empty())
}

/// The same, from a stored delivery's request line (`:query`).
fn stored_reference(delivery: &ClaimedDelivery) -> Option<String> {
    let headers: Value = serde_json::from_str(&delivery.headers_json).ok()?;
    let query = headers.get(":query")?.as_str()?;
    let request = IncomingRequest {
        method: Method::GET,
        path: String::new(),
        query: Some(query.to_owned()),
        headers: Default::default(),
        body: Default::default(),
        received_at: Timestamp(0),
        path_params: Vec::new(),
    };
    callback_reference(&request)
}

fn is_callback(request: &IncomingRequest) -> bool {
    request.method == Method::GET
}

impl Source for Paystack {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        KIND
    }

    fn routes(&self) -> Vec<Route> {
        self.routes.clone()
    }

    /// Webhooks carry their signature; a callback carries nothing, but without a secret key
    /// it could not be verified either, so it is refused the same way.
    fn secret_configured(&self) -> bool {
        !self.settings.secrets.is_empty()
    }

    fn authenticate(&self, request: &IncomingRequest, _now: Timestamp) -> Result<(), VerifyError> {
        if is_callback(request) {
            if self.settings.secrets.is_empty() {
                return Err(VerifyError::NoSecretConfigured);
            }
            return Ok(());
        }
        verify_body_hmac(
            request,
            &self.settings.secrets,
            SIGNATURE_HEADER,
            &Self::scheme(),
        )
    }

    /// Paystack sends no event id: an event is its name, the object's id (or reference) and
    /// its status. A callback is its reference (a buyer reloading the page is a duplicate).
    fn identify(&self, request: &Verified) -> Result<Identity, IdentifyError> {
        if is_callback(request.request()) {
            let reference = callback_reference(request.request())
                .ok_or(IdentifyError::MissingField("reference"))?;
            return Ok(Identity {
                event_id: Some(reference.clone()),
                event_type: "callback".to_owned(),
                dedup_key: format!("callback:{reference}"),
            });
        }
        let payload = request.json()?;
        let event = text(payload, "/event").ok_or(IdentifyError::MissingField("event"))?;
        let object = text(payload, "/data/id")
            .or_else(|| text(payload, "/data/reference"))
            .ok_or(IdentifyError::MissingField("data.id"))?;
        let status = text(payload, "/data/status").unwrap_or_default();
        Ok(Identity {
            event_id: text(payload, "/data/reference"),
            event_type: event.clone(),
            dedup_key: format!("{event}:{object}:{status}"),
        })
    }

    /// `charge.success` and `refund.processed` move the payment; the other events Paystack
    /// sends (subscriptions, invoices, transfers) are kept in the journal and marked ignored.
    fn normalize(&self, delivery: &ClaimedDelivery) -> Result<Normalized, NormalizeError> {
        let payload: Value =
            serde_json::from_slice(&delivery.body).map_err(NormalizeError::Json)?;
        let data = payload
            .get("data")
            .ok_or(NormalizeError::MissingField("data"))?;
        let status = match delivery.event_type.as_str() {
            "charge.success" => PaystackStatus::Paid,
            "refund.processed" => refund_status(data),
            other => {
                return Ok(Normalized::Ignore(format!(
                    "Paystack {other} events are kept in the journal; the ledger takes \
                     charge.success and refund.processed"
                )))
            }
        };
        let payment = PaystackPayment::from_transaction(
            data,
            status,
            &delivery.event_type,
            delivery.dedup_key.clone(),
            delivery.received_at,
        )
        .ok_or(NormalizeError::MissingField("data.reference"))?;
        Ok(Normalized::Changes(vec![LedgerChange::Row(Arc::new(
            payment,
        ))]))
    }

    fn needs_lookup(&self, request: &IncomingRequest) -> bool {
        is_callback(request)
    }

    fn settles_inline(&self, request: &IncomingRequest) -> bool {
        is_callback(request)
    }

    /// A callback (stored as `GET`) is proven by the verify API every time it is attempted.
    fn verified_by_lookup(&self, delivery: &ClaimedDelivery) -> bool {
        serde_json::from_str::<Value>(&delivery.headers_json)
            .ok()
            .and_then(|headers| {
                headers
                    .get(":method")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .as_deref()
            == Some("GET")
    }

    fn lookup(&self, delivery: &ClaimedDelivery) -> Result<Lookup, NormalizeError> {
        let reference = stored_reference(delivery)
            .ok_or_else(|| NormalizeError::Invalid("the callback has no reference".to_owned()))?;
        let key = self.settings.secrets.first_exposed().ok_or_else(|| {
            NormalizeError::Transient("no Paystack secret key is configured".to_owned())
        })?;
        Ok(Lookup {
            method: Method::GET,
            url: format!(
                "{}/transaction/verify/{}",
                self.settings.api_base,
                encode_path_segment(&reference)
            ),
            headers: vec![("authorization", format!("Bearer {key}"))],
            body: None,
            // Each verification must ask Paystack now.
            cacheable: false,
        })
    }

    /// Genuine only when Paystack says `status: true` and the transaction's own status is
    /// `success`; an unknown reference or any other status rejects the callback.
    fn judge(
        &self,
        delivery: &ClaimedDelivery,
        answer: &LookupAnswer,
    ) -> Result<Judgement, NormalizeError> {
        let reference = stored_reference(delivery).unwrap_or_default();
        let Ok(body) = serde_json::from_slice::<Value>(&answer.body) else {
            return Err(NormalizeError::Transient(format!(
                "Paystack's verify API answered {} with a body that is not JSON",
                answer.status
            )));
        };
        let confirmed = body.get("status").and_then(Value::as_bool) == Some(true);
        let transaction_status = text(&body, "/data/status");
        if !confirmed {
            let message = text(&body, "/message").unwrap_or_default();
            return Ok(Judgement::Forged(format!(
                "Paystack does not confirm reference {reference:?}: {message}"
            )));
        }
        if transaction_status.as_deref() != Some("success") {
            return Ok(Judgement::Forged(format!(
                "Paystack reports transaction {reference:?} as {}",
                transaction_status.unwrap_or_else(|| "without a status".to_owned())
            )));
        }
        let data = body.get("data").unwrap_or(&Value::Null);
        let payment = PaystackPayment::from_transaction(
            data,
            PaystackStatus::Paid,
            "callback",
            delivery.dedup_key.clone(),
            delivery.received_at,
        )
        .ok_or(NormalizeError::MissingField("data.reference"))?;
        Ok(Judgement::Genuine(Normalized::Changes(vec![
            LedgerChange::Row(Arc::new(payment)),
        ])))
    }

    /// The buyer's browser: to the success or failure page when configured, else a JSON
    /// answer; while Paystack cannot be reached, a 202 that says so.
    fn settled(
        &self,
        receipt: &Receipt<'_>,
        _request: &IncomingRequest,
        settlement: &Settlement,
    ) -> Reply {
        let reference = receipt.identity.event_id.clone().unwrap_or_default();
        let with_reference = |url: &str| {
            let separator = if url.contains('?') { '&' } else { '?' };
            format!(
                "{url}{separator}reference={}",
                encode_path_segment(&reference)
            )
        };
        match settlement {
            Settlement::Confirmed => match &self.settings.success_url {
                Some(url) => Reply::Redirect(with_reference(url)),
                None => Reply::Json(
                    StatusCode::OK,
                    json!({ "message": "Payment successful", "reference": reference }),
                ),
            },
            Settlement::Refused(reason) => match &self.settings.failure_url {
                Some(url) => Reply::Redirect(with_reference(url)),
                None => Reply::Json(
                    StatusCode::PAYMENT_REQUIRED,
                    json!({
                        "message": "Payment could not be verified",
                        "reason": reason,
                        "reference": reference,
                    }),
                ),
            },
            Settlement::Undecided => Reply::Json(
                StatusCode::ACCEPTED,
                json!({
                    "message": "Paystack could not confirm this payment yet; it is verified in \
                                the background, and nothing is lost",
                    "status": "verifying",
                    "reference": reference,
                }),
            ),
        }
    }
}

/// A refund is full when it covers the transaction's amount, as far as the event says;
/// without the transaction's amount it counts as partial.
fn refund_status(data: &Value) -> PaystackStatus {
    let refunded = data.get("amount").and_then(Value::as_i64);
    let charged = data
        .pointer("/transaction/amount")
        .or_else(|| data.get("transaction_amount"))
        .and_then(Value::as_i64);
    match (refunded, charged) {
        (Some(refunded), Some(charged)) if refunded >= charged => PaystackStatus::Refunded,
        _ => PaystackStatus::PartiallyRefunded,
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986), for a path segment or a
/// query value.
fn encode_path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
