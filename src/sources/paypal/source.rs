//! PayPal as a source: `POST /api/webhooks/paypal`. The request is checked for PayPal's
//! `paypal-*` headers and a certificate URL on PayPal's own hosts, stored as `verifying` and
//! acknowledged; the processor then fetches the certificate (cached) and the signature is
//! verified offline ([`crate::verify::paypal`]) before anything reaches the ledger.

use std::sync::Arc;

use reqwest::Url;
use serde::Deserialize;
use serde_json::Value;

use super::event::{read, Reading};
use super::ledger::PaypalChange;
use crate::clock::Timestamp;
use crate::config::{secrets_from_env, ConfigError, Environment};
use crate::journal::ClaimedDelivery;
use crate::ledger::{LedgerChange, Table};
use crate::lookup::{Lookup, LookupAnswer};
use crate::sources::registry::{self, Provider};
use crate::sources::{
    IdentifyError, Identity, IncomingRequest, Judgement, NormalizeError, Normalized, Route,
    SharedSource, Source, Verified,
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

/// A PayPal webhook (or several, by id).
#[derive(Debug)]
pub struct Paypal {
    name: String,
    /// PayPal's id of the webhook subscription, part of what it signs.
    webhook_ids: SecretSet,
    cert_hosts: CertHosts,
    routes: Vec<Route>,
}

impl Paypal {
    pub fn new(name: impl Into<String>, webhook_ids: SecretSet, cert_hosts: CertHosts) -> Self {
        Self {
            name: name.into(),
            webhook_ids,
            cert_hosts,
            routes: Vec::new(),
        }
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
}

impl FileSettings {
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
        let hosts = file.cert_hosts(env.var("PAYPAL_CERT_HOSTS"));
        Ok(Some(Arc::new(Paypal::seed(SecretSet::new(ids), hosts))))
    }

    fn configured(
        &self,
        name: &str,
        section: toml::Table,
        secrets: SecretSet,
    ) -> Result<SharedSource, ConfigError> {
        let mut file: FileSettings = registry::settings(&format!("sources.{name}"), section)?;
        let secrets = match file.webhook_id.take() {
            Some(id) if secrets.is_empty() => SecretSet::new([id]),
            _ => secrets,
        };
        Ok(Arc::new(Paypal::new(name, secrets, file.cert_hosts(None))))
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
    /// allowed hosts may have changed since it was stored).
    fn lookup(&self, delivery: &ClaimedDelivery) -> Result<Lookup, NormalizeError> {
        let headers = stored_headers(delivery);
        let url = header(&headers, CERT_URL).trim();
        if !self.cert_hosts.allows(url) {
            return Err(NormalizeError::Invalid(format!(
                "{CERT_URL} is not on PayPal's certificate hosts"
            )));
        }
        Ok(Lookup::cacheable_get(url))
    }

    /// Verifies the signature with the fetched certificate, against each configured webhook id.
    fn judge(
        &self,
        delivery: &ClaimedDelivery,
        answer: &LookupAnswer,
    ) -> Result<Judgement, NormalizeError> {
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
}

/// What a verified delivery changes.
fn changes(delivery: &ClaimedDelivery) -> Result<Normalized, NormalizeError> {
    Ok(match read(&delivery.body)? {
        Reading::Report(event, report) => {
            Normalized::Changes(vec![LedgerChange::Row(Arc::new(PaypalChange {
                event,
                report,
            }))])
        }
        Reading::Ignore(reason) => Normalized::Ignore(reason),
    })
}
