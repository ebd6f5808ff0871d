//! PayPal as a source: `POST /api/webhooks/paypal`. The request is checked for PayPal's
//! `paypal-*` headers and a certificate URL on PayPal's own hosts, stored as `verifying` and
//! acknowledged; the processor then proves it before anything reaches the ledger, one of two
//! ways ([`Verification`]): offline, with the certificate fetched (cached) and the signature
//! checked here ([`crate::verify::paypal`]); or by asking PayPal's
//! `POST /v1/notifications/verify-webhook-signature` with an OAuth token from the app's client
//! credentials, which answers `verification_status: SUCCESS` or `FAILURE`.

use std::sync::Arc;

use axum::http::Method;
use reqwest::Url;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::Value;

use super::event::{read, Lifecycle, Reading, Report};
use super::ledger::{OrderCaptured, PaypalChange};
use crate::clock::Timestamp;
use crate::config::{invalid, secrets_from_env, ConfigError, Environment};
use crate::journal::ClaimedDelivery;
use crate::ledger::{LedgerChange, Table};
use crate::lookup::{ClientCredentials, Lookup, LookupAnswer};
use crate::sources::registry::{self, Provider};
use crate::sources::{
    IdentifyError, Identity, IncomingRequest, Judgement, NormalizeError, Normalized, Route,
    SampleError, SampleRequest, SharedSource, Source, Verified,
};
use crate::verify::{verify_paypal, PaypalCertificate, PaypalTransmission, SecretSet, VerifyError};

const KIND: &str = "paypal";

/// The seed's URL.
pub const ROUTE: &str = "/api/webhooks/paypal";

const CERT_URL: &str = "paypal-cert-url";
const TRANSMISSION_ID: &str = "paypal-transmission-id";
const TRANSMISSION_TIME: &str = "paypal-transmission-time";
const TRANSMISSION_SIG: &str = "paypal-transmission-sig";
const AUTH_ALGO: &str = "paypal-auth-algo";

/// Where PayPal serves its signing certificates: https on these hosts (`*.` for any
/// subdomain). The vector's certificate is at `api.sandbox.paypal.com`.
pub const PAYPAL_CERT_HOSTS: &[&str] = &[
    "api.paypal.com",
    "api.sandbox.paypal.com",
    "api-m.paypal.com",
    "api-m.sandbox.paypal.com",
    "*.paypal.com",
];

/// The certificate URLs a source will fetch. An entry is a host name (https on port 443 only;
/// `*.example.com` for its subdomains) or a whole origin such as `http://127.0.0.1:8080`,
/// which is how a test or a proxy is allowed, and only when configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertHosts(Vec<String>);

impl CertHosts {
    pub fn paypal() -> Self {
        Self::new(PAYPAL_CERT_HOSTS.iter().map(|host| (*host).to_owned()))
    }

    pub fn new(entries: impl IntoIterator<Item = String>) -> Self {
        Self(
            entries
                .into_iter()
                .map(|entry| entry.trim().trim_end_matches('/').to_ascii_lowercase())
                .filter(|entry| !entry.is_empty())
                .collect(),
        )
    }

    /// Whether `url` is a certificate URL on an allowed host.
    pub fn allows(&self, url: &str) -> bool {
        let Ok(url) = Url::parse(url) else {
            return false;
        };
        if !url.username().is_empty() || url.password().is_some() {
            return false;
        }
        let Some(host) = url.host_str() else {
            return false;
        };
        self.0.iter().any(|entry| {
            if entry.contains("://") {
                return Url::parse(entry).is_ok_and(|origin| {
                    origin.scheme() == url.scheme()
                        && origin.host_str() == Some(host)
                        && origin.port_or_known_default() == url.port_or_known_default()
                });
            }
            let https = url.scheme() == "https" && url.port_or_known_default() == Some(443);
            let matches = match entry.strip_prefix("*.") {
                Some(domain) => host
                    .strip_suffix(domain)
                    .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
                None => host == entry,
            };
            https && matches
        })
    }
}

/// How a delivery is proven genuine.
#[derive(Debug, Clone)]
pub enum Verification {
    /// The signature, checked here against the certificate at `PAYPAL-CERT-URL`.
    Certificate,
    /// PayPal's verify-webhook-signature API at `api_base` (`https://api-m.paypal.com`).
    Api {
        api_base: String,
        client_id: String,
        client_secret: SecretString,
    },
}

/// PayPal's live API, where the verify-webhook-signature call goes by default.
pub const DEFAULT_API_BASE: &str = "https://api-m.paypal.com";
const TOKEN_PATH: &str = "/v1/oauth2/token";
const VERIFY_PATH: &str = "/v1/notifications/verify-webhook-signature";

/// A PayPal webhook (or several, by id).
#[derive(Debug)]
pub struct Paypal {
    name: String,
    /// PayPal's id of the webhook subscription, part of what it signs.
    webhook_ids: SecretSet,
    cert_hosts: CertHosts,
    verification: Verification,
    routes: Vec<Route>,
}

impl Paypal {
    pub fn new(name: impl Into<String>, webhook_ids: SecretSet, cert_hosts: CertHosts) -> Self {
        Self {
            name: name.into(),
            webhook_ids,
            cert_hosts,
            verification: Verification::Certificate,
            routes: Vec::new(),
        }
    }

    /// Proves deliveries the given way (the certificate by default).
    pub fn verified_by(mut self, verification: Verification) -> Self {
        self.verification = verification;
        self
    }

    /// The built-in source, at the seed's route.
    pub fn seed(webhook_ids: SecretSet, cert_hosts: CertHosts) -> Self {
        Self {
            routes: vec![Route::post(ROUTE)],
            ..Self::new(KIND, webhook_ids, cert_hosts)
        }
    }
}

/// `[paypal]` or `[sources.NAME] kind = "paypal"`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    /// Webhook ids (one per PayPal webhook posting here).
    #[serde(default)]
    secrets: Vec<String>,
    #[serde(default)]
    webhook_id: Option<String>,
    /// Allowed certificate hosts; PayPal's when absent.
    #[serde(default)]
    cert_hosts: Option<Vec<String>>,
    /// `"certificate"` or `"api"`; the API when client credentials are set, else the
    /// certificate.
    verification: Option<String>,
    api_base: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

impl FileSettings {
    /// The verification the settings (and `PAYPAL_VERIFICATION`, `PAYPAL_API_BASE`,
    /// `PAYPAL_CLIENT_ID`, `PAYPAL_CLIENT_SECRET`) ask for.
    fn verification(
        &mut self,
        context: &str,
        env: &dyn Environment,
    ) -> Result<Verification, ConfigError> {
        let non_empty = |value: Option<String>| value.filter(|v| !v.trim().is_empty());
        let client_id = non_empty(env.var("PAYPAL_CLIENT_ID").or(self.client_id.take()));
        let client_secret = non_empty(
            env.var("PAYPAL_CLIENT_SECRET")
                .or(self.client_secret.take()),
        );
        let api_base = non_empty(env.var("PAYPAL_API_BASE").or(self.api_base.take()))
            .unwrap_or_else(|| DEFAULT_API_BASE.to_owned());
        let mode = non_empty(env.var("PAYPAL_VERIFICATION").or(self.verification.take()));
        let wants_api = match mode.as_deref().map(str::trim) {
            None => client_id.is_some() && client_secret.is_some(),
            Some("api") => true,
            Some("certificate") => false,
            Some(other) => {
                return Err(invalid(
                    format!("{context}.verification"),
                    format!("{other:?} is neither \"api\" nor \"certificate\""),
                ))
            }
        };
        if !wants_api {
            return Ok(Verification::Certificate);
        }
        let (Some(client_id), Some(client_secret)) = (client_id, client_secret) else {
            return Err(invalid(
                format!("{context}.verification"),
                "\"api\" needs client_id and client_secret (PAYPAL_CLIENT_ID, PAYPAL_CLIENT_SECRET)",
            ));
        };
        Ok(Verification::Api {
            api_base: api_base.trim().trim_end_matches('/').to_owned(),
            client_id,
            client_secret: SecretString::from(client_secret),
        })
    }

    fn cert_hosts(self, env: Option<String>) -> CertHosts {
        match secrets_from_env(env).or(self.cert_hosts) {
            Some(hosts) => CertHosts::new(hosts),
            None => CertHosts::paypal(),
        }
    }
}

/// The webhook id from `PAYPAL_WEBHOOK_ID` (comma-separated for several) or `[paypal]
/// webhook_id`; allowed certificate hosts from `PAYPAL_CERT_HOSTS` or `[paypal] cert_hosts`.
pub struct PaypalProvider;

impl Provider for PaypalProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    /// `payments` and `subscriptions` are Stripe's tables, which PayPal shares and which
    /// Stripe's provider already copies whole.
    fn ledger_tables(&self) -> &'static [&'static Table] {
        &[]
    }

    fn builtin(
        &self,
        section: toml::Table,
        env: &dyn Environment,
    ) -> Result<Option<SharedSource>, ConfigError> {
        let mut file: FileSettings = registry::settings(KIND, section)?;
        let from_file = file
            .webhook_id
            .take()
            .into_iter()
            .chain(file.secrets.drain(..));
        let ids =
            secrets_from_env(env.var("PAYPAL_WEBHOOK_ID")).unwrap_or_else(|| from_file.collect());
        let verification = file.verification(KIND, env)?;
        let hosts = file.cert_hosts(env.var("PAYPAL_CERT_HOSTS"));
        Ok(Some(Arc::new(
            Paypal::seed(SecretSet::new(ids), hosts).verified_by(verification),
        )))
    }

    fn configured(
        &self,
        name: &str,
        section: toml::Table,
        secrets: SecretSet,
    ) -> Result<SharedSource, ConfigError> {
        let context = format!("sources.{name}");
        let mut file: FileSettings = registry::settings(&context, section)?;
        let secrets = match file.webhook_id.take() {
            Some(id) if secrets.is_empty() => SecretSet::new([id]),
            _ => secrets,
        };
        let no_env = std::collections::BTreeMap::new();
        let verification = file.verification(&context, &no_env)?;
        Ok(Arc::new(
            Paypal::new(name, secrets, file.cert_hosts(None)).verified_by(verification),
        ))
    }
}

/// The stored request headers, as the journal keeps them.
fn stored_headers(delivery: &ClaimedDelivery) -> Value {
    serde_json::from_str(&delivery.headers_json).unwrap_or(Value::Null)
}

fn header<'a>(headers: &'a Value, name: &str) -> &'a str {
    headers.get(name).and_then(Value::as_str).unwrap_or("")
}

impl Source for Paypal {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        KIND
    }

    fn routes(&self) -> Vec<Route> {
        self.routes.clone()
    }

    /// What can be checked without the certificate: a webhook id is configured, the signature
    /// headers are there, and the certificate would come from PayPal.
    fn secret_configured(&self) -> bool {
        !self.webhook_ids.is_empty()
    }

    fn authenticate(&self, request: &IncomingRequest, _now: Timestamp) -> Result<(), VerifyError> {
        if self.webhook_ids.is_empty() {
            return Err(VerifyError::NoSecretConfigured);
        }
        let present = |name| request.header(name).is_some_and(|v| !v.trim().is_empty());
        if !present(TRANSMISSION_SIG) {
            return Err(VerifyError::MissingSignature);
        }
        if !present(TRANSMISSION_TIME) {
            return Err(VerifyError::MissingTimestamp);
        }
        for name in [TRANSMISSION_ID, AUTH_ALGO, CERT_URL] {
            if !present(name) {
                return Err(VerifyError::MalformedSignature(format!(
                    "{name} is missing"
                )));
            }
        }
        let cert_url = request.header(CERT_URL).unwrap_or_default();
        if !self.cert_hosts.allows(cert_url.trim()) {
            return Err(VerifyError::MalformedSignature(format!(
                "{CERT_URL} is not on PayPal's certificate hosts"
            )));
        }
        Ok(())
    }

    /// Deduplicated by PayPal's event id (`WH-…`), which a resend keeps.
    fn identify(&self, request: &Verified) -> Result<Identity, IdentifyError> {
        let event = request.json()?;
        let field = |name: &'static str| {
            event
                .get(name)
                .and_then(Value::as_str)
                .filter(|value| !value.trim().is_empty())
                .ok_or(IdentifyError::MissingField(name))
        };
        let id = field("id")?;
        Ok(Identity {
            event_id: Some(id.to_owned()),
            event_type: field("event_type")?.to_owned(),
            dedup_key: id.to_owned(),
        })
    }

    fn needs_lookup(&self, _request: &IncomingRequest) -> bool {
        true
    }

    /// The signing certificate, from the URL the request named (checked again here: the
    /// allowed hosts may have changed since it was stored); or PayPal's verdict.
    fn lookup(
        &self,
        delivery: &ClaimedDelivery,
        _now: Timestamp,
    ) -> Result<Lookup, NormalizeError> {
        let headers = stored_headers(delivery);
        let url = header(&headers, CERT_URL).trim();
        if !self.cert_hosts.allows(url) {
            return Err(NormalizeError::Invalid(format!(
                "{CERT_URL} is not on PayPal's certificate hosts"
            )));
        }
        match &self.verification {
            Verification::Certificate => Ok(Lookup::cacheable_get(url)),
            Verification::Api {
                api_base,
                client_id,
                client_secret,
            } => {
                let webhook_id = self.webhook_ids.first_exposed().ok_or_else(|| {
                    NormalizeError::Transient("no PayPal webhook id is configured".to_owned())
                })?;
                Ok(Lookup {
                    method: Method::POST,
                    url: format!("{api_base}{VERIFY_PATH}"),
                    headers: vec![("content-type", "application/json".to_owned())],
                    body: Some(verify_request(&headers, webhook_id, &delivery.body)?),
                    cacheable: false,
                    oauth: Some(ClientCredentials {
                        token_url: format!("{api_base}{TOKEN_PATH}"),
                        client_id: client_id.clone(),
                        client_secret: client_secret.clone(),
                    }),
                    idempotent: true,
                })
            }
        }
    }

    /// Verifies the signature with the fetched certificate (which must have been valid when
    /// the delivery arrived), against each configured webhook id; or reads PayPal's
    /// `verification_status`.
    fn judge(
        &self,
        delivery: &ClaimedDelivery,
        answer: &LookupAnswer,
    ) -> Result<Judgement, NormalizeError> {
        if let Verification::Api { .. } = self.verification {
            return judge_by_api(delivery, answer);
        }
        if answer.status != 200 {
            return Ok(Judgement::Forged(format!(
                "the certificate URL answered {}",
                answer.status
            )));
        }
        let pem = String::from_utf8_lossy(&answer.body);
        let certificate = match PaypalCertificate::from_pem(&pem) {
            Ok(certificate) => certificate,
            Err(error) => return Ok(Judgement::Forged(error.to_string())),
        };
        // When the delivery arrived, not now: a delivery retried or replayed after PayPal
        // rotated its certificate was still signed under a valid one.
        if let Err(error) = certificate.check_valid_at(delivery.received_at) {
            return Ok(Judgement::Forged(error.to_string()));
        }
        let headers = stored_headers(delivery);
        let mut outcome = Err(VerifyError::NoSecretConfigured);
        for webhook_id in self.webhook_ids.iter_exposed() {
            let transmission = PaypalTransmission {
                transmission_id: header(&headers, TRANSMISSION_ID),
                transmission_time: header(&headers, TRANSMISSION_TIME),
                webhook_id: std::str::from_utf8(webhook_id).unwrap_or_default(),
                auth_algo: header(&headers, AUTH_ALGO),
                signature_b64: header(&headers, TRANSMISSION_SIG),
            };
            outcome = verify_paypal(&certificate, &transmission, &delivery.body);
            if outcome.is_ok() {
                break;
            }
        }
        match outcome {
            Ok(()) => Ok(Judgement::Genuine(changes(delivery)?)),
            Err(error) => Ok(Judgement::Forged(error.to_string())),
        }
    }

    /// Every attempt at a PayPal delivery checks its signature first, a replayed one too.
    fn verified_by_lookup(&self, _delivery: &ClaimedDelivery) -> bool {
        true
    }

    /// Never reached: every PayPal delivery goes through [`Source::judge`]
    /// ([`Source::verified_by_lookup`]). Kept refusing, so that nothing could ever apply a
    /// PayPal delivery whose signature was not checked.
    fn normalize(&self, delivery: &ClaimedDelivery) -> Result<Normalized, NormalizeError> {
        let _ = delivery;
        Err(NormalizeError::Invalid(
            "a PayPal delivery is applied only once its signature is verified".to_owned(),
        ))
    }

    /// None: PayPal signs with its own private key, which no one else holds.
    fn sample(&self, _event: &str, _now: Timestamp) -> Result<SampleRequest, SampleError> {
        Err(SampleError::Unsupported(
            "PayPal signs with its own private key (SHA256withRSA, certificate on PayPal's \
             hosts), so Wharf cannot sign a PayPal sample; use PayPal's Webhooks Simulator \
             (developer.paypal.com) with this server's URL"
                .to_owned(),
        ))
    }
}

/// The verify-webhook-signature request: the transmission headers as received, the webhook id,
/// and the event itself. The event is embedded as the exact bytes that arrived, not
/// re-serialized, since PayPal computes the signature over what it sent.
fn verify_request(
    headers: &Value,
    webhook_id: &str,
    body: &[u8],
) -> Result<bytes::Bytes, NormalizeError> {
    let event = std::str::from_utf8(body)
        .map_err(|_| NormalizeError::Invalid("the stored event is not UTF-8".to_owned()))?;
    let fields = serde_json::json!({
        "auth_algo": header(headers, AUTH_ALGO),
        "cert_url": header(headers, CERT_URL),
        "transmission_id": header(headers, TRANSMISSION_ID),
        "transmission_sig": header(headers, TRANSMISSION_SIG),
        "transmission_time": header(headers, TRANSMISSION_TIME),
        "webhook_id": webhook_id,
    })
    .to_string();
    let open = fields.strip_suffix('}').unwrap_or(&fields);
    Ok(bytes::Bytes::from(format!(
        "{open},\"webhook_event\":{}}}",
        event.trim()
    )))
}

/// PayPal's answer: `{"verification_status": "SUCCESS"}` proves the delivery, `FAILURE`
/// disproves it; anything else (an error answer) is retried, since it says nothing about the
/// delivery.
fn judge_by_api(
    delivery: &ClaimedDelivery,
    answer: &LookupAnswer,
) -> Result<Judgement, NormalizeError> {
    let body: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    let status = body.get("verification_status").and_then(Value::as_str);
    match (answer.status, status) {
        (200, Some("SUCCESS")) => Ok(Judgement::Genuine(changes(delivery)?)),
        (200, Some("FAILURE")) => Ok(Judgement::Forged(
            "PayPal's verify-webhook-signature answered FAILURE".to_owned(),
        )),
        (code, _) => {
            let name = body.get("name").and_then(Value::as_str).unwrap_or("");
            Err(NormalizeError::Transient(format!(
                "PayPal's verify-webhook-signature answered {code} {name}"
            )))
        }
    }
}

/// What a verified delivery changes: a completed capture also marks the order it captures.
fn changes(delivery: &ClaimedDelivery) -> Result<Normalized, NormalizeError> {
    Ok(match read(&delivery.body)? {
        Reading::Report(event, report) => {
            let mut changes = Vec::new();
            if let Report::Capture(capture) = &report {
                if let (Lifecycle::Paid, Some(order_id)) = (capture.lifecycle, &capture.order_id) {
                    changes.push(LedgerChange::Row(Arc::new(OrderCaptured {
                        event: event.clone(),
                        order_id: order_id.clone(),
                        capture_id: capture.capture_id.clone(),
                    })));
                }
            }
            changes.insert(
                0,
                LedgerChange::Row(Arc::new(PaypalChange { event, report })),
            );
            Normalized::Changes(changes)
        }
        Reading::Ignore(reason) => Normalized::Ignore(reason),
    })
}
