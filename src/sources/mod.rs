//! One module per provider. A source is pure: it authenticates a raw request, identifies the
//! event in it, and later normalizes the stored delivery into ledger changes, all from bytes
//! to values. All I/O happens in the journal and the processor.

pub mod cartpanda;
pub mod catalog;
pub mod generic_hmac;
pub mod json;
pub mod pancake;
pub mod paypal;
pub mod paystack;
pub mod refract;
pub mod registry;
pub mod sample;
pub mod standard_webhooks;
pub mod stripe;
pub mod tradingview;

use std::sync::{Arc, OnceLock};

use axum::http::{HeaderMap, Method, StatusCode};
use bytes::Bytes;
use serde_json::{json, Value};
use thiserror::Error;

pub use self::registry::{provider, Provider, Registry, PROVIDERS};
pub use self::sample::{SampleError, SampleRequest};
use crate::clock::Timestamp;
use crate::journal::{ClaimedDelivery, DeliveryId};
use crate::ledger::{LedgerChange, MoneyError, SaleAmountError, TextError};
use crate::lookup::{Lookup, LookupAnswer};
use crate::verify::{HmacScheme, SecretSet, VerifyError};

/// A request as it arrived, before anyone trusts it.
#[derive(Debug, Clone)]
pub struct IncomingRequest {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub received_at: Timestamp,
    /// The route's `{name}` segments (a token in the path, an entity kind), as matched.
    pub path_params: Vec<(String, String)>,
}

impl IncomingRequest {
    /// A header's value as text; `None` when absent or not visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// A path segment the route names, e.g. `token` in `/api/webhooks/refract/{token}`.
    pub fn path_param(&self, name: &str) -> Option<&str> {
        self.path_params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// A query-string parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        query_param(self.query.as_deref()?, name)
    }
}

/// A parameter of a query string (a request's, or the `:query` a delivery was stored with),
/// percent-decoded.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(key) == name).then(|| percent_decode(value))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'+' => out.push(b' '),
            b'%' if index + 2 < bytes.len() => {
                match u8::from_str_radix(text.get(index + 1..index + 3).unwrap_or(""), 16) {
                    Ok(byte) => {
                        out.push(byte);
                        index += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A request its source has authenticated. Only [`authenticate`] makes one, so code that holds
/// a `Verified` cannot be looking at an unverified request.
#[derive(Debug)]
pub struct Verified {
    request: IncomingRequest,
    /// The body as JSON, parsed at most once per request (by the first source that asks).
    json: OnceLock<Value>,
    /// Set once one strict pass over the body succeeded (a tree or a pick): the ingress's own
    /// check then costs nothing.
    checked: OnceLock<()>,
    /// The nesting limit of every strict pass over this body.
    max_depth: usize,
}

impl Verified {
    pub fn request(&self) -> &IncomingRequest {
        &self.request
    }

    /// Strict passes over this body refuse nesting beyond `max_depth` (the configured
    /// `limits.max_json_depth`) rather than [`json::DEFAULT_MAX_DEPTH`].
    pub fn with_max_depth(mut self, max_depth: usize) -> Self {
        self.max_depth = max_depth;
        self
    }

    /// The body parsed strictly ([`json::parse_strict`]: no duplicate keys, bounded nesting);
    /// later calls return the same tree.
    pub fn json(&self) -> Result<&Value, IdentifyError> {
        if let Some(value) = self.json.get() {
            return Ok(value);
        }
        let value = json::parse_strict(&self.request.body, self.max_depth)?;
        let _ = self.checked.set(());
        Ok(self.json.get_or_init(|| value))
    }

    /// The values at `pointers` (see [`json::pick_strict`]), from the tree if one was built,
    /// else from one strict pass that builds only them. For sources that identify a delivery
    /// by a few fields: the whole body is checked all the same.
    pub fn pick<'p>(&self, pointers: &'p [&'p str]) -> Result<json::Picked<'p>, IdentifyError> {
        let values = match self.json.get() {
            Some(value) => pointers
                .iter()
                .map(|pointer| value.pointer(pointer).cloned())
                .collect(),
            None => {
                let values = json::pick_strict(&self.request.body, self.max_depth, pointers)?;
                let _ = self.checked.set(());
                values
            }
        };
        Ok(json::Picked::new(pointers, values))
    }

    /// Refuses a body that is not strict JSON, in one pass that builds nothing unless no
    /// source read it yet.
    pub fn check_json(&self) -> Result<(), IdentifyError> {
        if self.checked.get().is_some() {
            return Ok(());
        }
        self.pick(&[]).map(drop)
    }
}

/// A request that failed authentication, kept whole for the rejection log.
#[derive(Debug)]
pub struct Rejected {
    pub request: IncomingRequest,
    pub error: VerifyError,
}

/// Turns an incoming request into a [`Verified`] one, or says why not.
pub fn authenticate(
    source: &dyn Source,
    request: IncomingRequest,
    now: Timestamp,
) -> Result<Verified, Box<Rejected>> {
    match source.authenticate(&request, now) {
        Ok(()) => Ok(Verified {
            request,
            json: OnceLock::new(),
            checked: OnceLock::new(),
            max_depth: json::DEFAULT_MAX_DEPTH,
        }),
        Err(error) => Err(Box::new(Rejected { request, error })),
    }
}

/// Checks the most common scheme: an HMAC of the raw body in one header. No secret means
/// refusal, never acceptance.
pub fn verify_body_hmac(
    request: &IncomingRequest,
    secrets: &SecretSet,
    header: &str,
    scheme: &HmacScheme,
) -> Result<(), VerifyError> {
    if secrets.is_empty() {
        return Err(VerifyError::NoSecretConfigured);
    }
    scheme.verify(secrets, &request.body, request.header(header))
}

/// What a source reads off a verified request before it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub event_id: Option<String>,
    pub event_type: String,
    /// Unique per source; a repeat is answered "duplicate" and stored once.
    pub dedup_key: String,
}

/// Why a verified request cannot be identified. The request is still stored (as `failed`),
/// and the provider gets a 4xx naming the problem.
#[derive(Debug, Error)]
pub enum IdentifyError {
    #[error("the body is empty")]
    EmptyBody,
    #[error("the body is not valid UTF-8")]
    NotUtf8,
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(#[source] serde_json::Error),
    #[error("the JSON is nested deeper than {limit} levels")]
    TooDeep { limit: usize },
    /// Parsers disagree on which value of a repeated key counts, so none is chosen.
    #[error("the JSON is ambiguous: {0}")]
    DuplicateKey(json::DuplicateKey),
    #[error("the payload has no {0}")]
    MissingField(&'static str),
    #[error("the payload is not a known {source_kind} event")]
    UnknownShape { source_kind: &'static str },
    #[error("content type {0:?} is not accepted here")]
    UnsupportedMediaType(String),
    /// Well-formed, but not a message this source can read (the text says why, in the
    /// provider's words).
    #[error("{0}")]
    Unparseable(String),
    /// A templated message whose `{{…}}` variables were sent as written (TradingView leaves a
    /// variable it cannot fill in that alert's context).
    #[error("the message has unrendered placeholders: {}", .0.join(", "))]
    UnrenderedPlaceholders(Vec<String>),
    /// Refused in the provider's own terms: `code` and `reply` are what its error body says
    /// (Pancake's `VAL_001` and its message, in the configured language); `error` is why, for
    /// the journal and the logs.
    #[error("{error}")]
    Provider {
        code: &'static str,
        reply: String,
        #[source]
        error: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl IdentifyError {
    /// Machine-readable error code for the response body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::EmptyBody => "empty_body",
            Self::NotUtf8 => "invalid_utf8",
            Self::InvalidJson(_) => "invalid_json",
            Self::TooDeep { .. } => "json_too_deep",
            Self::DuplicateKey(_) => "duplicate_json_key",
            Self::MissingField(_) => "missing_field",
            Self::UnknownShape { .. } => "unknown_payload",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::Unparseable(_) => "unparseable_content",
            Self::UnrenderedPlaceholders(_) => "unrendered_placeholders",
            Self::Provider { code, .. } => code,
        }
    }

    /// The message the sender reads: the provider's own where it has one, else the error.
    pub fn reply(&self) -> String {
        match self {
            Self::Provider { reply, .. } => reply.clone(),
            _ => self.to_string(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unparseable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// Why a stored delivery could not be normalized. Fields are named as in the payload, dotted
/// (`data.product.price`, `order.line_items.0.title`).
#[derive(Debug, Error)]
pub enum NormalizeError {
    #[error("the stored body is not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("the payload has no {0}")]
    MissingField(&'static str),
    /// A field holds a JSON type its meaning does not allow, e.g. a price that is an object or
    /// `null`.
    #[error("{field} must be {expected}, found {found}")]
    WrongType {
        field: String,
        expected: &'static str,
        found: &'static str,
    },
    /// An amount or currency that does not parse.
    #[error("{field} is invalid: {error}")]
    Money {
        field: String,
        #[source]
        error: MoneyError,
    },
    /// An amount that parses but cannot be a sale amount (negative, or beyond the ledger's
    /// column).
    #[error("{field} is out of range: {error}")]
    OutOfRange {
        field: String,
        #[source]
        error: SaleAmountError,
    },
    /// An id, or other text that becomes a key, that is too long or holds a NUL.
    #[error("{field} {reason}")]
    BadId { field: String, reason: TextError },
    /// Text the ledger would store that it cannot hold (a NUL).
    #[error("{field} {reason}")]
    BadText { field: String, reason: TextError },
    #[error("{0}")]
    Invalid(String),
    /// Worth retrying: the cause is outside the payload.
    #[error("{0}")]
    Transient(String),
}

impl NormalizeError {
    /// A permanent error parks the delivery as `failed` at once: retrying the same bytes with
    /// the same code cannot succeed. It stays replayable after a fix.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, Self::Transient(_))
    }
}

/// What a delivery means for the ledger.
#[derive(Debug, Clone, PartialEq)]
pub enum Normalized {
    Changes(Vec<LedgerChange>),
    /// Genuine, but nothing in the ledger follows from it.
    Ignore(String),
}

/// What a provider's API said about a `verifying` delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Judgement {
    /// Confirmed; what it means for the ledger (read from the request and the API's answer).
    Genuine(Normalized),
    /// The API disproves it: rejected with this reason.
    Forged(String),
}

/// What the ingress tells the provider after storing.
#[derive(Debug, Clone, Copy)]
pub struct Receipt<'a> {
    pub delivery_id: DeliveryId,
    pub duplicate: bool,
    pub identity: &'a Identity,
}

impl Receipt<'_> {
    /// The standard answer, `{"received":true,"duplicate":…,"delivery_id":…,"event_type":…}`.
    pub fn to_json(&self) -> String {
        #[derive(serde::Serialize)]
        struct Standard<'a> {
            received: bool,
            duplicate: bool,
            delivery_id: DeliveryId,
            event_type: &'a str,
        }
        // Serializing plain fields into a String cannot fail.
        serde_json::to_string(&Standard {
            received: true,
            duplicate: self.duplicate,
            delivery_id: self.delivery_id,
            event_type: &self.identity.event_type,
        })
        .unwrap_or_default()
    }
}

/// A URL a source answers besides `/in/{name}`, with its method. `{name}` segments are
/// captured into [`IncomingRequest::path_params`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub method: Method,
    pub path: String,
}

impl Route {
    pub fn post(path: impl Into<String>) -> Self {
        Self {
            method: Method::POST,
            path: path.into(),
        }
    }

    pub fn get(path: impl Into<String>) -> Self {
        Self {
            method: Method::GET,
            path: path.into(),
        }
    }
}

/// What a source answers once a delivery is stored: whatever its sender expects to read.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Json(StatusCode, Value),
    /// JSON already written: the standard receipt, written straight from its fields because it
    /// answers most deliveries.
    JsonText(StatusCode, String),
    /// A `text/plain` answer, e.g. `OK`.
    Text(StatusCode, String),
    /// No body, e.g. Discord's `204 No Content`.
    Empty(StatusCode),
    /// `303 See Other` to this URL (a payment callback sending the buyer to a result page).
    Redirect(String),
}

/// Where a `verifying` delivery stood when the ingress stopped waiting for it (see
/// [`Source::settles_inline`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// Confirmed and applied (or genuine but changing nothing).
    Confirmed,
    /// The provider's API disproved it, or it could not be applied; the reason.
    Refused(String),
    /// Not settled in time (the API is slow or down): it is retried in the background.
    Undecided,
}

/// A webhook provider, or a configured family of senders.
pub trait Source: Send + Sync + 'static {
    /// The name in routes (`/in/{name}`), metrics and the journal.
    fn name(&self) -> &str;

    /// The provider scheme, e.g. `cartpanda` or `standard-webhooks`.
    fn kind(&self) -> &'static str;

    /// Whether the secret (key, token, webhook id) that [`Source::authenticate`] needs is
    /// configured; without it the source answers `no_secret_configured` to everything. Said
    /// at start-up and by `wharf config check`, never the secret itself.
    fn secret_configured(&self) -> bool;

    /// Checks the request the way the provider signs it. A source without a secret returns
    /// [`VerifyError::NoSecretConfigured`]: it refuses traffic, it never silently accepts.
    fn authenticate(&self, request: &IncomingRequest, now: Timestamp) -> Result<(), VerifyError>;

    /// Reads the event id, type and dedup key off a verified request.
    fn identify(&self, request: &Verified) -> Result<Identity, IdentifyError>;

    /// Turns a stored delivery into ledger changes.
    fn normalize(&self, delivery: &ClaimedDelivery) -> Result<Normalized, NormalizeError>;

    /// Header names (lower-case) that carry secrets for this source, redacted before storing.
    fn secret_headers(&self) -> &[&'static str] {
        &[]
    }

    /// Query parameters that carry secrets, redacted from the rejection log.
    fn secret_query_params(&self) -> &[&'static str] {
        &[]
    }

    /// Whether this request can be trusted only once the provider's API confirms it (an
    /// unsigned callback). Such a delivery is stored as `verifying`, and the processor makes
    /// the [`Source::lookup`] before normalizing it through [`Source::judge`].
    fn needs_lookup(&self, request: &IncomingRequest) -> bool {
        let _ = request;
        false
    }

    /// Whether a stored delivery can be trusted only through [`Source::lookup`], whatever its
    /// status: a replayed one (back to `pending` after it went dead unverified, or re-applied
    /// after it was processed) is then verified again instead of normalized unproven.
    fn verified_by_lookup(&self, delivery: &ClaimedDelivery) -> bool {
        let _ = delivery;
        false
    }

    /// The provider API call that proves or disproves a `verifying` delivery (or carries out
    /// a follow-up), made at `now` (a signed request may carry its time).
    fn lookup(&self, delivery: &ClaimedDelivery, now: Timestamp) -> Result<Lookup, NormalizeError> {
        let _ = (delivery, now);
        Err(NormalizeError::Invalid(format!(
            "{} deliveries are never verified by lookup",
            self.kind()
        )))
    }

    /// Reads the API's answer to [`Source::lookup`].
    fn judge(
        &self,
        delivery: &ClaimedDelivery,
        answer: &LookupAnswer,
    ) -> Result<Judgement, NormalizeError> {
        let _ = (delivery, answer);
        Err(NormalizeError::Invalid(format!(
            "{} deliveries are never verified by lookup",
            self.kind()
        )))
    }

    /// The rows of this source's tables that may still owe a follow-up
    /// ([`crate::ledger::RowChange::follow_up`]), for the processor's recovery sweep.
    fn owed_follow_ups(&self) -> Vec<crate::ledger::OwedFollowUps> {
        Vec::new()
    }

    /// The body as the journal keeps it, when it must differ from what arrived: a secret the
    /// sender can only put in the body (TradingView's passphrase) is replaced, after
    /// authentication read it. `None` keeps the body exactly as received.
    fn redacted_body(&self, body: &[u8]) -> Option<Bytes> {
        let _ = body;
        None
    }

    /// The seed's own URLs for this source, with their methods; `/in/{name}` always works too.
    fn routes(&self) -> Vec<Route> {
        Vec::new()
    }

    /// Path segments (from [`Source::routes`]) that carry secrets: redacted before storing.
    fn secret_path_params(&self) -> &[&'static str] {
        &[]
    }

    /// Whether the sender waits for the verification of this `verifying` request (a buyer's
    /// browser on a payment callback): the ingress then holds the answer until the lookup
    /// settles or a short deadline passes, and answers with [`Source::settled`].
    fn settles_inline(&self, request: &IncomingRequest) -> bool {
        let _ = request;
        false
    }

    /// The answer to a request that [`Source::settles_inline`], once settled or not.
    fn settled(
        &self,
        receipt: &Receipt<'_>,
        request: &IncomingRequest,
        settlement: &Settlement,
    ) -> Reply {
        let _ = settlement;
        self.accepted(receipt, request)
    }

    /// The answer once the delivery is durable (or known as a duplicate).
    fn accepted(&self, receipt: &Receipt<'_>, request: &IncomingRequest) -> Reply {
        let _ = request;
        Reply::JsonText(StatusCode::OK, receipt.to_json())
    }

    /// The events [`Source::sample`] builds, in the provider's own names (`wharf trigger
    /// --list`).
    fn sample_events(&self) -> Vec<&'static str> {
        Vec::new()
    }

    /// A sample of `event` in the provider's real payload shape, signed with this source's
    /// secret as the provider signs, with fresh ids: what `wharf trigger` posts.
    fn sample(&self, event: &str, now: Timestamp) -> Result<SampleRequest, SampleError> {
        let _ = now;
        Err(sample::unknown(self.name(), event))
    }

    /// The body of an error answer, in the provider's own format where it has one.
    fn error_body(&self, code: &str, message: &str) -> Value {
        json!({ "error": { "code": code, "message": message } })
    }
}

pub type SharedSource = Arc<dyn Source>;
