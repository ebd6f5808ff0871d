//! Paystack (seed 004): `POST /api/payments/paystack/webhook`, signed with an HMAC-SHA512 of
//! the raw body under the secret key in `x-paystack-signature`; and the buyer's
//! `GET /api/payments/paystack/callback?reference=…`, which nothing signs, so it is proven
//! only by asking Paystack's verify API (`GET {PAYSTACK_API_BASE}/transaction/verify/{ref}`).
//! The callback is stored as `verifying` first: if Paystack is slow or down the buyer is told
//! so and the verification is retried in the background; nothing is lost. It is genuine only
//! when Paystack confirms it and its amount and currency are those of the payment expected for
//! the reference, which the application records when it initialises the transaction
//! (`POST /api/payments/paystack/expected`, authorized by the same secret key).

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::billing::{
    subscription_changes, InvoiceFacts, PaystackEvent, PlanChange, SubscriptionFacts,
};
use super::ledger::{PaystackPayment, PaystackStatus};
use crate::clock::Timestamp;
use crate::config::{invalid, secrets_from_env, ConfigError, Environment};
use crate::journal::ClaimedDelivery;
use crate::ledger::LedgerChange;
use crate::lookup::{Lookup, LookupAnswer};
use crate::sources::json::{first_text, text};
use crate::sources::registry::{self, Provider};
use crate::sources::{
    sample, verify_body_hmac, IdentifyError, Identity, IncomingRequest, Judgement, NormalizeError,
    Normalized, Receipt, Reply, Route, SampleError, SampleRequest, Settlement, SharedSource,
    Source, Verified,
};
use crate::verify::{
    verify_token, Algorithm, Encoding, HmacScheme, ProxiedAllowlist, SecretSet, VerifyError,
};

const KIND: &str = "paystack";
pub const WEBHOOK_ROUTE: &str = "/api/payments/paystack/webhook";
pub const CALLBACK_ROUTE: &str = "/api/payments/paystack/callback";
pub const EXPECTED_ROUTE: &str = "/api/payments/paystack/expected";
const SIGNATURE_HEADER: &str = "x-paystack-signature";
/// Paystack's `charge.success` as its documentation shows it.
const CHARGE_SUCCESS: &str = include_str!("../../../tests/fixtures/paystack/charge.success.json");
const DEFAULT_API_BASE: &str = "https://api.paystack.co";

/// The addresses Paystack sends webhooks from (its "Webhooks" guide, "IP whitelisting").
pub const PAYSTACK_ADDRESSES: [&str; 3] = ["52.31.139.75", "52.49.173.169", "52.214.14.220"];

/// The event type a recorded expected payment is stored under.
const EXPECTED_EVENT: &str = "transaction.expected";

const WHERE_KEY: &str = "an Authorization: Bearer header holding the Paystack secret key";

/// Where Paystack is reached and where buyers are sent.
#[derive(Debug, Clone)]
pub struct PaystackSettings {
    /// The secret key(s): they sign webhooks and authorize verify calls.
    pub secrets: SecretSet,
    pub api_base: String,
    pub success_url: Option<String>,
    pub failure_url: Option<String>,
    /// Set: webhooks only from Paystack's addresses, as a trusted proxy reports them (the
    /// buyer's callback comes from the buyer's browser and is never filtered).
    pub allowlist: Option<ProxiedAllowlist>,
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
            routes: vec![
                Route::post(WEBHOOK_ROUTE),
                Route::get(CALLBACK_ROUTE),
                Route::post(EXPECTED_ROUTE),
            ],
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
    /// The header a proxy in front of Wharf writes the peer address into; turns the allowlist on.
    trusted_proxy_header: Option<String>,
    /// Paystack's published addresses unless set.
    allowed_addresses: Option<Vec<String>>,
}

impl FileSettings {
    fn resolve(
        self,
        context: &str,
        secrets: SecretSet,
        env: &dyn Environment,
    ) -> Result<PaystackSettings, ConfigError> {
        let api_base = env
            .var("PAYSTACK_API_BASE")
            .or(self.api_base)
            .unwrap_or_else(|| DEFAULT_API_BASE.to_owned());
        let proxy_header = env
            .var("PAYSTACK_TRUSTED_PROXY_HEADER")
            .or(self.trusted_proxy_header)
            .filter(|header| !header.trim().is_empty());
        let allowlist = ProxiedAllowlist::parse(
            proxy_header.as_deref().unwrap_or_default(),
            self.allowed_addresses.as_deref(),
            &PAYSTACK_ADDRESSES,
        )
        .map_err(|error| invalid(format!("{context}.allowed_addresses"), error))?;
        Ok(PaystackSettings {
            secrets,
            api_base: api_base.trim_end_matches('/').to_owned(),
            success_url: env.var("PAYSTACK_SUCCESS_URL").or(self.success_url),
            failure_url: env.var("PAYSTACK_FAILURE_URL").or(self.failure_url),
            allowlist: proxy_header.is_some().then_some(allowlist),
        })
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
        let settings = file.resolve(KIND, SecretSet::new(secrets), env)?;
        Ok(Some(Arc::new(Paystack::seed(settings))))
    }

    fn configured(
        &self,
        name: &str,
        section: toml::Table,
        secrets: SecretSet,
    ) -> Result<SharedSource, ConfigError> {
        let context = format!("sources.{name}");
        let file: FileSettings = registry::settings(&context, section)?;
        let no_env = std::collections::BTreeMap::new();
        Ok(Arc::new(Paystack::new(
            name,
            file.resolve(&context, secrets, &no_env)?,
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

/// The application recording the payment it expects (see [`EXPECTED_ROUTE`]).
fn is_expected_payment(request: &IncomingRequest) -> bool {
    request.method == Method::POST && request.path.ends_with("/expected")
}

/// A bearer token's value.
fn bearer(request: &IncomingRequest) -> Option<&str> {
    let value = request.header("authorization")?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
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

    /// The secret key authorizes recording an expected payment: never stored.
    fn secret_headers(&self) -> &[&'static str] {
        &["authorization"]
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
        if is_expected_payment(request) {
            return verify_token(&self.settings.secrets, bearer(request), WHERE_KEY);
        }
        if let Some(allowlist) = &self.settings.allowlist {
            if !self.settings.secrets.is_empty() {
                allowlist.check(&request.headers)?;
            }
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
        if is_expected_payment(request.request()) {
            let reference =
                text(payload, "/reference").ok_or(IdentifyError::MissingField("reference"))?;
            return Ok(Identity {
                event_id: Some(reference.clone()),
                event_type: EXPECTED_EVENT.to_owned(),
                dedup_key: format!("{EXPECTED_EVENT}:{reference}"),
            });
        }
        let event = text(payload, "/event").ok_or(IdentifyError::MissingField("event"))?;
        // Refunds, subscriptions, invoices and transfers name their object by their own codes.
        let object = first_text(
            payload,
            &[
                "/data/id",
                "/data/reference",
                "/data/refund_reference",
                "/data/invoice_code",
                "/data/subscription_code",
                "/data/transfer_code",
                "/data/transaction_reference",
            ],
        )
        .ok_or(IdentifyError::MissingField("data.id"))?;
        let status = text(payload, "/data/status").unwrap_or_default();
        let paid = match payload.pointer("/data/paid") {
            Some(Value::Bool(paid)) => format!(":{paid}"),
            _ => String::new(),
        };
        Ok(Identity {
            event_id: first_text(
                payload,
                &[
                    "/data/reference",
                    "/data/subscription_code",
                    "/data/invoice_code",
                    "/data/transaction_reference",
                ],
            ),
            event_type: event.clone(),
            dedup_key: format!("{event}:{object}:{status}{paid}"),
        })
    }

    /// `charge.success` and `refund.processed` move the payment, subscription and invoice
    /// events the subscription and its customer's plan; an expected payment is a `pending`
    /// payment; transfers (payouts, not payments) are kept in the journal and marked ignored.
    fn normalize(&self, delivery: &ClaimedDelivery) -> Result<Normalized, NormalizeError> {
        let payload: Value =
            serde_json::from_slice(&delivery.body).map_err(NormalizeError::Json)?;
        if delivery.event_type == EXPECTED_EVENT {
            return expected_payment(&payload, delivery);
        }
        let data = payload
            .get("data")
            .ok_or(NormalizeError::MissingField("data"))?;
        let event = |at: Timestamp| PaystackEvent {
            id: delivery.dedup_key.clone(),
            name: delivery.event_type.clone(),
            at,
        };
        let status = match delivery.event_type.as_str() {
            "charge.success" => PaystackStatus::Paid,
            "refund.processed" => PaystackStatus::PartiallyRefunded,
            "subscription.create"
            | "subscription.enable"
            | "subscription.disable"
            | "subscription.not_renew" => {
                let facts = SubscriptionFacts::read(data, data)
                    .ok_or(NormalizeError::MissingField("data.subscription_code"))?;
                let at = report_time(data, delivery.received_at);
                return Ok(billing_changes(event(at), facts, None));
            }
            "invoice.create" | "invoice.update" | "invoice.payment_failed" => {
                return invoice_changes(data, &delivery.event_type, event, delivery.received_at)
            }
            other if other.starts_with("transfer.") => {
                return Ok(Normalized::Ignore(format!(
                    "Paystack {other} is a payout: kept in the journal, not a payment"
                )))
            }
            other => {
                return Ok(Normalized::Ignore(format!(
                    "Paystack {other} events are kept in the journal; the ledger takes \
                     charges, refunds, subscriptions and invoices"
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

    fn lookup(
        &self,
        delivery: &ClaimedDelivery,
        _now: Timestamp,
    ) -> Result<Lookup, NormalizeError> {
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
            oauth: None,
            idempotent: true,
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
        let mut payment = PaystackPayment::from_transaction(
            data,
            PaystackStatus::Paid,
            "callback",
            delivery.dedup_key.clone(),
            delivery.received_at,
        )
        .ok_or(NormalizeError::MissingField("data.reference"))?;
        if payment.reference != reference {
            return Ok(Judgement::Forged(format!(
                "Paystack answered for reference {:?}, not {reference:?}",
                payment.reference
            )));
        }
        payment.must_match_expected = true;
        let at = payment.event_at;
        let mut changes = vec![LedgerChange::Row(Arc::new(payment))];
        if let Some(plan) = paid_plan(data, &reference, delivery, at) {
            changes.push(LedgerChange::Row(Arc::new(plan)));
        }
        Ok(Judgement::Genuine(Normalized::Changes(changes)))
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

    fn sample_events(&self) -> Vec<&'static str> {
        vec!["charge.success"]
    }

    /// Paystack's documented `charge.success` with a fresh transaction id and reference,
    /// signed as Paystack signs (hex HMAC-SHA512 of the body with the secret key).
    fn sample(&self, event: &str, _now: Timestamp) -> Result<SampleRequest, SampleError> {
        if event != "charge.success" {
            return Err(sample::unknown(&self.name, event));
        }
        let mut payload = sample::fixture(CHARGE_SUCCESS);
        sample::set(&mut payload, "/data/id", sample::fresh_number().into());
        sample::set(
            &mut payload,
            "/data/reference",
            sample::fresh_id("ref_").into(),
        );
        let secret =
            self.settings
                .secrets
                .first_exposed()
                .ok_or_else(|| SampleError::NoSecret {
                    source_name: self.name.clone(),
                    setting: "PAYSTACK_SECRET_KEY",
                })?;
        let path = self
            .routes
            .first()
            .map_or_else(|| format!("/in/{}", self.name), |route| route.path.clone());
        let request = SampleRequest::json_post(path, &payload);
        let signature = Self::scheme().sign(secret.as_bytes(), &request.body);
        Ok(request.with_header(SIGNATURE_HEADER, signature))
    }
}

/// When a report happened. Paystack's events carry no event time, and the objects' own times
/// (`createdAt`, `paid_at`) do not move with each change, so reports are placed by when Wharf
/// received them (the lifecycle's final stages win whatever the order).
fn report_time(_data: &Value, received_at: Timestamp) -> Timestamp {
    received_at
}

fn billing_changes(
    event: PaystackEvent,
    facts: SubscriptionFacts,
    invoice: Option<InvoiceFacts>,
) -> Normalized {
    let (subscription, plan) = subscription_changes(event, facts, invoice);
    let mut changes = vec![LedgerChange::Row(Arc::new(subscription))];
    if let Some(plan) = plan {
        changes.push(LedgerChange::Row(Arc::new(plan)));
    }
    Normalized::Changes(changes)
}

/// `invoice.create / update / payment_failed`: the invoice on its subscription (as embedded),
/// and the paid transaction, if any, in `payments`.
fn invoice_changes(
    data: &Value,
    event_type: &str,
    event: impl Fn(Timestamp) -> PaystackEvent,
    received_at: Timestamp,
) -> Result<Normalized, NormalizeError> {
    let subscription = data
        .get("subscription")
        .filter(|value| value.is_object())
        .ok_or(NormalizeError::MissingField("data.subscription"))?;
    let facts = SubscriptionFacts::read(subscription, data).ok_or(NormalizeError::MissingField(
        "data.subscription.subscription_code",
    ))?;
    let paid = data.get("paid").and_then(Value::as_bool) == Some(true);
    let invoice = InvoiceFacts {
        code: text(data, "/invoice_code")
            .ok_or(NormalizeError::MissingField("data.invoice_code"))?,
        paid: paid && event_type != "invoice.payment_failed",
        status: if event_type == "invoice.payment_failed" {
            "failed".to_owned()
        } else {
            text(data, "/status").unwrap_or_else(|| "pending".to_owned())
        },
        period_end: ["/period_end"]
            .iter()
            .find_map(|pointer| text(data, pointer).and_then(|at| Timestamp::parse_rfc3339(&at))),
    };
    let at = report_time(data, received_at);
    let paid_transaction = invoice.paid.then(|| data.get("transaction")).flatten();
    let mut normalized = billing_changes(event(at), facts, Some(invoice));
    if let (Some(transaction), Normalized::Changes(changes)) = (paid_transaction, &mut normalized) {
        let with_customer = merged_transaction(transaction, data);
        if let Some(payment) = PaystackPayment::from_transaction(
            &with_customer,
            PaystackStatus::Paid,
            event_type,
            event(at).id,
            at,
        ) {
            changes.push(LedgerChange::Row(Arc::new(payment)));
        }
    }
    Ok(normalized)
}

/// An invoice's `transaction` (reference, amount, currency) with the invoice's customer.
fn merged_transaction(transaction: &Value, invoice: &Value) -> Value {
    let mut merged = transaction.clone();
    if let (Value::Object(map), Some(customer)) = (&mut merged, invoice.get("customer")) {
        map.entry("customer").or_insert_with(|| customer.clone());
        if let Some(paid_at) = invoice.get("paid_at") {
            map.entry("paid_at").or_insert_with(|| paid_at.clone());
        }
    }
    merged
}

/// The payment the application expects for a reference, recorded before the buyer pays:
/// `{"reference", "amount" (in the subunit, as Paystack's initialize takes it), "currency",
/// "email", "metadata": {"order_id", "plan", "user_id"}}`.
fn expected_payment(
    payload: &Value,
    delivery: &ClaimedDelivery,
) -> Result<Normalized, NormalizeError> {
    let amount = payload
        .get("amount")
        .and_then(Value::as_i64)
        .filter(|amount| *amount > 0)
        .ok_or(NormalizeError::MissingField(
            "amount (a positive integer subunit)",
        ))?;
    let currency = text(payload, "/currency").unwrap_or_else(|| "NGN".to_owned());
    let currency =
        crate::ledger::Currency::parse(&currency).map_err(|error| NormalizeError::Money {
            field: "currency".to_owned(),
            error,
        })?;
    let mut transaction = payload.clone();
    if let Value::Object(map) = &mut transaction {
        map.insert("amount".into(), amount.into());
        map.insert("currency".into(), currency.code().into());
        if let Some(email) = text(payload, "/email") {
            map.insert("customer".into(), serde_json::json!({ "email": email }));
        }
    }
    let mut payment = PaystackPayment::from_transaction(
        &transaction,
        PaystackStatus::Pending,
        EXPECTED_EVENT,
        delivery.dedup_key.clone(),
        delivery.received_at,
    )
    .ok_or(NormalizeError::MissingField("reference"))?;
    payment.is_expectation = true;
    Ok(Normalized::Changes(vec![LedgerChange::Row(Arc::new(
        payment,
    ))]))
}

/// A verified payment that buys a plan (seed 004's "update subscription"): the plan named by
/// the transaction's metadata, or its Paystack plan; the customer by code, else by email.
fn paid_plan(
    data: &Value,
    reference: &str,
    delivery: &ClaimedDelivery,
    at: Timestamp,
) -> Option<PlanChange> {
    let plan = first_text(
        data,
        &["/metadata/plan", "/plan_object/name", "/plan/name", "/plan"],
    )?;
    let customer = first_text(data, &["/customer/customer_code", "/customer/email"])?;
    Some(PlanChange {
        event: PaystackEvent {
            id: delivery.dedup_key.clone(),
            name: "callback".to_owned(),
            at,
        },
        customer,
        email: text(data, "/customer/email"),
        user_id: first_text(data, &["/metadata/user_id", "/customer/metadata/user_id"]),
        plan: Some(plan),
        plan_code: first_text(data, &["/plan_object/plan_code", "/plan/plan_code"])
            .or_else(|| text(data, "/plan").filter(|code| code.starts_with("PLN_"))),
        granted_by: first_text(data, &["/subscription/subscription_code"])
            .unwrap_or_else(|| reference.to_owned()),
        status: "active".to_owned(),
        period_end: None,
    })
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use axum::http::{HeaderMap, HeaderValue};

    use super::*;

    fn build(toml: &str, env: &[(&str, &str)]) -> Result<Option<SharedSource>, ConfigError> {
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        PaystackProvider.builtin(toml::from_str(toml).expect("toml"), &env)
    }

    fn webhook(forwarded_for: &str) -> IncomingRequest {
        let body = br#"{"event":"charge.success","data":{"id":1,"reference":"r"}}"#;
        let mut headers = HeaderMap::new();
        let signature = Paystack::scheme().sign(b"sk_test", body);
        headers.insert(
            "x-paystack-signature",
            HeaderValue::from_str(&signature).expect("header"),
        );
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_str(forwarded_for).expect("header"),
        );
        IncomingRequest {
            method: Method::POST,
            path: WEBHOOK_ROUTE.to_owned(),
            query: None,
            headers,
            body: bytes::Bytes::from_static(body),
            received_at: Timestamp(0),
            path_params: Vec::new(),
        }
    }

    #[test]
    fn the_allowlist_is_paystacks_published_addresses_behind_the_configured_header() {
        let source = build(
            "trusted_proxy_header = \"X-Forwarded-For\"",
            &[("PAYSTACK_SECRET_KEY", "sk_test")],
        )
        .expect("valid")
        .expect("built in");
        for address in PAYSTACK_ADDRESSES {
            assert_eq!(source.authenticate(&webhook(address), Timestamp(0)), Ok(()));
        }
        assert_eq!(
            source.authenticate(&webhook("52.31.139.75, 198.51.100.4"), Timestamp(0)),
            Err(VerifyError::AddressNotAllowed("198.51.100.4".into()))
        );
        let open = build("", &[("PAYSTACK_SECRET_KEY", "sk_test")])
            .expect("valid")
            .expect("built in");
        assert_eq!(
            open.authenticate(&webhook("198.51.100.4"), Timestamp(0)),
            Ok(()),
            "without the setting, the header means nothing"
        );
        assert!(build("allowed_addresses = [\"not-an-ip\"]", &[]).is_err());
    }

    #[test]
    fn webhooks_verify_under_any_current_key_and_refuse_a_missing_signature() {
        let rotating = build("", &[("PAYSTACK_SECRET_KEY", "sk_new,sk_test")])
            .expect("valid")
            .expect("built in");
        assert_eq!(
            rotating.authenticate(&webhook("52.31.139.75"), Timestamp(0)),
            Ok(()),
            "signed with the older of two keys"
        );
        let mut unsigned = webhook("52.31.139.75");
        unsigned.headers.remove("x-paystack-signature");
        assert_eq!(
            rotating.authenticate(&unsigned, Timestamp(0)),
            Err(VerifyError::MissingSignature)
        );
        let mut tampered = webhook("52.31.139.75");
        tampered.body = bytes::Bytes::from_static(
            br#"{"event":"charge.success","data":{"id":2,"reference":"r"}}"#,
        );
        assert_eq!(
            rotating.authenticate(&tampered, Timestamp(0)),
            Err(VerifyError::Mismatch)
        );
        let without_key = build("", &[]).expect("valid").expect("built in");
        assert_eq!(
            without_key.authenticate(&webhook("52.31.139.75"), Timestamp(0)),
            Err(VerifyError::NoSecretConfigured)
        );
    }
}
