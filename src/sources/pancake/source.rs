//! The two Pancake providers as sources: `pancake` at `POST /api/v1/pancake/webhook` and
//! `pancake-pos` at `POST /api/v1/pancake-pos/webhook` and `/webhook/{kind}`.
//!
//! Authentication, which seed 002 leaves as a TODO: the API key Pancake shows on its
//! Webhook/API page, sent as an `X-API-Key` request header (the seed's setup adds it) or an
//! `?api_key=` query parameter, compared in constant time; without a configured key the source
//! refuses all traffic. When a signing secret is configured as well, each request must also
//! carry the hex HMAC-SHA256 of its raw body in `X-Pancake-Signature` (`sha256=` tolerated):
//! Pancake does not sign its webhooks, so this is for a relay that does.

use std::sync::Arc;

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use super::ledger::{self, PancakeChange};
use super::reply::{self, Language, OwnerField};
use super::{parse_pancake, parse_pos, read_pancake, read_pos, Effect, PancakeError, PosKind};
use crate::clock::Timestamp;
use crate::config::{hmac_scheme, invalid, secrets_from_env, ConfigError, Environment};
use crate::journal::ClaimedDelivery;
use crate::ledger::{LedgerChange, Table};
use crate::sources::json;
use crate::sources::registry::{self, Provider};
use crate::sources::{
    IdentifyError, Identity, IncomingRequest, NormalizeError, Normalized, Receipt, Reply, Route,
    SharedSource, Source, Verified,
};
use crate::verify::{verify_token, Algorithm, Encoding, HmacScheme, SecretSet, VerifyError};

/// The header the seed's setup adds to Pancake's webhook requests.
pub const API_KEY_HEADER: &str = "x-api-key";
/// The query parameter the seed names as the other place for the key.
pub const API_KEY_PARAM: &str = "api_key";
/// Where a request without a key is told to put one.
const API_KEY_WHERE: &str = "an X-API-Key header or ?api_key=";
/// Where a signing relay puts the HMAC of the body, unless configured otherwise.
pub const DEFAULT_SIGNATURE_HEADER: &str = "x-pancake-signature";

/// Which of the two Pancake products a source receives from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Product {
    /// Pancake (pages.fm): conversations, messages, orders and customers of pages.
    Pancake,
    /// Pancake POS (pos.pages.fm): orders, products, customers and stock of shops.
    Pos,
}

impl Product {
    pub fn kind(self) -> &'static str {
        match self {
            Self::Pancake => "pancake",
            Self::Pos => "pancake-pos",
        }
    }

    /// The variable holding the built-in source's API keys (comma-separated for a rotation).
    pub fn api_key_var(self) -> &'static str {
        match self {
            Self::Pancake => "PANCAKE_API_KEY",
            Self::Pos => "PANCAKE_POS_API_KEY",
        }
    }

    /// The variable holding the built-in source's signing secrets.
    pub fn signing_secret_var(self) -> &'static str {
        match self {
            Self::Pancake => "PANCAKE_WEBHOOK_SECRET",
            Self::Pos => "PANCAKE_POS_WEBHOOK_SECRET",
        }
    }

    /// Seed 002's URLs.
    pub fn seed_routes(self) -> Vec<Route> {
        match self {
            Self::Pancake => vec![Route::post("/api/v1/pancake/webhook")],
            Self::Pos => vec![
                Route::post("/api/v1/pancake-pos/webhook"),
                Route::post("/api/v1/pancake-pos/webhook/{kind}"),
            ],
        }
    }

    fn owner_field(self) -> OwnerField {
        match self {
            Self::Pancake => OwnerField::PageId,
            Self::Pos => OwnerField::ShopId,
        }
    }
}

/// How a Pancake source authenticates and answers.
#[derive(Debug, Clone)]
pub struct PancakeSettings {
    /// Without any, the source refuses all traffic.
    pub api_keys: SecretSet,
    /// When not empty, the body's HMAC is required too.
    pub signing_secrets: SecretSet,
    /// Lower-case header name.
    pub signature_header: String,
    pub scheme: HmacScheme,
    /// Of the messages in the seed's reply bodies.
    pub language: Language,
}

impl PancakeSettings {
    /// API keys only, replies in Vietnamese.
    pub fn with_api_keys(api_keys: SecretSet) -> Self {
        Self {
            api_keys,
            signing_secrets: SecretSet::default(),
            signature_header: DEFAULT_SIGNATURE_HEADER.to_owned(),
            scheme: HmacScheme {
                algorithm: Algorithm::Sha256,
                encoding: Encoding::Hex,
                prefix: Some("sha256=".to_owned()),
            },
            language: Language::default(),
        }
    }
}

/// A Pancake page or Pancake POS shop (or several, sharing one API key).
#[derive(Debug)]
pub struct PancakeSource {
    name: String,
    product: Product,
    settings: PancakeSettings,
    routes: Vec<Route>,
}

impl PancakeSource {
    /// A source answered at `/in/{name}` only.
    pub fn new(name: impl Into<String>, product: Product, settings: PancakeSettings) -> Self {
        Self {
            name: name.into(),
            product,
            settings,
            routes: Vec::new(),
        }
    }

    /// The built-in source, named after its kind, also at seed 002's URLs.
    pub fn seed(product: Product, settings: PancakeSettings) -> Self {
        Self {
            routes: product.seed_routes(),
            ..Self::new(product.kind(), product, settings)
        }
    }

    /// An identify error in the seed's terms: `VAL_001` with its message, for the sender.
    fn refusal(&self, error: PancakeError) -> IdentifyError {
        match error {
            PancakeError::EmptyBody => IdentifyError::EmptyBody,
            PancakeError::NotUtf8 => IdentifyError::NotUtf8,
            PancakeError::InvalidJson(error) => IdentifyError::InvalidJson(error),
            error => IdentifyError::Provider {
                code: error.code(),
                reply: reply::message(self.settings.language, &error),
                error: Box::new(error),
            },
        }
    }

    /// The success body, echoing the page or shop id as the body sent it.
    fn success(&self, event_type: &str, body: &[u8], route_kind: Option<PosKind>) -> Value {
        let language = self.settings.language;
        let read = match self.product {
            Product::Pancake => parse_pancake(body).map(|event| event.reply(language)),
            Product::Pos => parse_pos(body, route_kind).map(|event| event.reply(language)),
        };
        read.unwrap_or_else(|_| {
            reply::success(
                language,
                event_type,
                self.product.owner_field(),
                Value::Null,
            )
        })
    }
}

/// What a bare POS body is: the route's `{kind}`, else (on `/in/{name}`) a `?kind=` parameter.
/// An unknown segment says nothing; a body in the seed's envelope needs none.
fn route_kind(request: &IncomingRequest) -> Option<PosKind> {
    match request.path_param("kind") {
        Some(segment) => PosKind::from_route(segment),
        None => request
            .query_param("kind")
            .and_then(|segment| PosKind::from_route(&segment)),
    }
}

/// A parse error found again at normalization (a body stored by an older Wharf): permanent.
fn normalize_error(error: PancakeError) -> NormalizeError {
    match error {
        PancakeError::Field(error) => error,
        PancakeError::InvalidJson(error) => NormalizeError::Json(error),
        error => NormalizeError::Invalid(error.to_string()),
    }
}

impl Source for PancakeSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        self.product.kind()
    }

    fn routes(&self) -> Vec<Route> {
        self.routes.clone()
    }

    fn secret_configured(&self) -> bool {
        !self.settings.api_keys.is_empty()
    }

    fn authenticate(&self, request: &IncomingRequest, _now: Timestamp) -> Result<(), VerifyError> {
        let provided = match request.header(API_KEY_HEADER) {
            Some(key) if !key.trim().is_empty() => Some(key.to_owned()),
            _ => request.query_param(API_KEY_PARAM),
        };
        verify_token(&self.settings.api_keys, provided.as_deref(), API_KEY_WHERE)?;
        if self.settings.signing_secrets.is_empty() {
            return Ok(());
        }
        self.settings.scheme.verify(
            &self.settings.signing_secrets,
            &request.body,
            request.header(&self.settings.signature_header),
        )
    }

    fn identify(&self, request: &Verified) -> Result<Identity, IdentifyError> {
        let root = request.json()?;
        let identity = match self.product {
            Product::Pancake => read_pancake(root).map(|event| Identity {
                event_id: event.request_id,
                event_type: event.event_type,
                dedup_key: event.dedup_key,
            }),
            Product::Pos => read_pos(root, route_kind(request.request())).map(|event| Identity {
                event_id: None,
                event_type: event.event_type,
                dedup_key: event.dedup_key,
            }),
        };
        identity.map_err(|error| self.refusal(error))
    }

    fn normalize(&self, delivery: &ClaimedDelivery) -> Result<Normalized, NormalizeError> {
        let root = json::parse_stored(&delivery.body)?;
        // A bare POS body was identified with its route's kind as its event type.
        let (event_type, effect) = match self.product {
            Product::Pancake => read_pancake(&root).map(|event| (event.event_type, event.effect)),
            Product::Pos => read_pos(&root, PosKind::from_route(&delivery.event_type))
                .map(|event| (event.event_type, event.effect)),
        }
        .map_err(normalize_error)?;
        match effect {
            Effect::Ignored(ignored) => Ok(Normalized::Ignore(ignored.reason(&event_type))),
            Effect::Changes(changes) => changes
                .into_iter()
                .map(|change| {
                    PancakeChange::new(change).map(|change| LedgerChange::Row(Arc::new(change)))
                })
                .collect::<Result<_, _>>()
                .map(Normalized::Changes),
        }
    }

    fn secret_headers(&self) -> &[&'static str] {
        &[API_KEY_HEADER]
    }

    fn secret_query_params(&self) -> &[&'static str] {
        &[API_KEY_PARAM]
    }

    fn accepted(&self, receipt: &Receipt<'_>, request: &IncomingRequest) -> Reply {
        Reply::Json(
            StatusCode::OK,
            self.success(
                &receipt.identity.event_type,
                &request.body,
                route_kind(request),
            ),
        )
    }

    /// Seed 002's error layout. A body that is not JSON (or that Wharf refuses to read as
    /// JSON: nested too deep, a key twice) answers the seed's `VAL_002`; other errors keep
    /// Wharf's code (`missing_token`, `body_too_large`, …) in the same layout.
    fn error_body(&self, code: &str, message: &str) -> Value {
        match code {
            "empty_body" | "invalid_utf8" | "invalid_json" | "json_too_deep"
            | "duplicate_json_key" => {
                reply::error_body("VAL_002", reply::invalid_json(self.settings.language))
            }
            _ => reply::error_body(code, message),
        }
    }
}

/// `[pancake]`, `[pancake-pos]`, or `[sources.NAME]` with `kind = "pancake"` or `"pancake-pos"`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    /// The API keys (for a declared source, resolved by the configuration loader instead).
    #[serde(default)]
    secrets: Vec<String>,
    #[serde(default)]
    signing_secrets: Vec<String>,
    signature_header: Option<String>,
    algorithm: Option<String>,
    encoding: Option<String>,
    prefix: Option<String>,
    /// `vi` (the default) or `en`.
    language: Option<String>,
}

impl FileSettings {
    fn resolve(
        self,
        context: &str,
        api_keys: SecretSet,
        signing_secrets: Vec<String>,
    ) -> Result<PancakeSettings, ConfigError> {
        let mut settings = PancakeSettings::with_api_keys(api_keys);
        settings.signing_secrets = SecretSet::new(signing_secrets);
        if let Some(header) = self.signature_header {
            settings.signature_header = header.to_ascii_lowercase();
        }
        settings.scheme = hmac_scheme(
            context,
            self.algorithm.as_deref(),
            self.encoding.as_deref(),
            self.prefix.as_deref(),
            Some("sha256="),
        )?;
        if let Some(tag) = self.language {
            settings.language = Language::parse(&tag).ok_or_else(|| {
                invalid(
                    format!("{context}.language"),
                    format!("{tag:?} is not \"vi\" or \"en\""),
                )
            })?;
        }
        Ok(settings)
    }
}

/// Pancake or Pancake POS: one built-in source from its `[kind]` section and the seed's
/// variables, more as configured sources.
pub struct PancakeProvider(Product);

impl PancakeProvider {
    pub const PANCAKE: Self = Self(Product::Pancake);
    pub const POS: Self = Self(Product::Pos);
}

impl Provider for PancakeProvider {
    fn kind(&self) -> &'static str {
        self.0.kind()
    }

    fn builtin(
        &self,
        section: toml::Table,
        env: &dyn Environment,
    ) -> Result<Option<SharedSource>, ConfigError> {
        let product = self.0;
        let file: FileSettings = registry::settings(product.kind(), section)?;
        let api_keys = secrets_from_env(env.var(product.api_key_var()))
            .unwrap_or_else(|| file.secrets.clone());
        let signing = secrets_from_env(env.var(product.signing_secret_var()))
            .unwrap_or_else(|| file.signing_secrets.clone());
        let settings = file.resolve(product.kind(), SecretSet::new(api_keys), signing)?;
        Ok(Some(Arc::new(PancakeSource::seed(product, settings))))
    }

    fn ledger_tables(&self) -> &'static [&'static Table] {
        match self.0 {
            Product::Pancake => &ledger::PANCAKE_TABLES,
            Product::Pos => &ledger::POS_TABLES,
        }
    }

    fn configured(
        &self,
        name: &str,
        section: toml::Table,
        secrets: SecretSet,
    ) -> Result<SharedSource, ConfigError> {
        let context = format!("sources.{name}");
        let file: FileSettings = registry::settings(&context, section)?;
        let signing = file.signing_secrets.clone();
        let settings = file.resolve(&context, secrets, signing)?;
        Ok(Arc::new(PancakeSource::new(name, self.0, settings)))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use axum::http::{HeaderMap, HeaderValue, Method};
    use bytes::Bytes;

    use super::*;
    use crate::journal::{ClaimToken, DeliveryId};
    use crate::sources::authenticate;

    const KEY: &str = "pk-unit";

    fn source(product: Product) -> PancakeSource {
        PancakeSource::seed(
            product,
            PancakeSettings::with_api_keys(SecretSet::new([KEY.to_owned()])),
        )
    }

    fn request(path: &str, query: Option<&str>, key: Option<&str>, body: &str) -> IncomingRequest {
        let mut headers = HeaderMap::new();
        if let Some(key) = key {
            headers.insert(API_KEY_HEADER, HeaderValue::from_str(key).expect("ascii"));
        }
        let path_params = path
            .strip_prefix("/api/v1/pancake-pos/webhook/")
            .map(|kind| vec![("kind".to_owned(), kind.to_owned())])
            .unwrap_or_default();
        IncomingRequest {
            method: Method::POST,
            path: path.to_owned(),
            query: query.map(str::to_owned),
            headers,
            body: Bytes::copy_from_slice(body.as_bytes()),
            received_at: Timestamp(0),
            path_params,
        }
    }

    fn claimed(event_type: &str, body: &str) -> ClaimedDelivery {
        ClaimedDelivery {
            id: DeliveryId(1),
            claim: ClaimToken(1),
            source: "pancake-pos".into(),
            event_id: None,
            event_type: event_type.to_owned(),
            dedup_key: String::new(),
            received_at: Timestamp(0),
            headers_json: "{}".into(),
            body: Bytes::copy_from_slice(body.as_bytes()),
            attempts: 0,
            verifying: false,
        }
    }

    const CURL: &str = r#"{"payload":{"eventType":"conversation_updated","pageId":"123456789","data":{},"timestamp":1234567890}}"#;

    #[test]
    fn the_api_key_comes_from_the_header_or_the_query() {
        let pancake = source(Product::Pancake);
        let url = "/api/v1/pancake/webhook";
        let check =
            |query, key| pancake.authenticate(&request(url, query, key, CURL), Timestamp(0));
        assert_eq!(check(None, Some(KEY)), Ok(()));
        assert_eq!(check(Some("api_key=pk-unit"), None), Ok(()));
        assert_eq!(
            check(Some("api_key=pk-unit"), Some("")),
            Ok(()),
            "a blank header defers to the query"
        );
        assert_eq!(
            check(None, None),
            Err(VerifyError::MissingToken(API_KEY_WHERE))
        );
        assert_eq!(
            check(Some("api_key=nope"), None),
            Err(VerifyError::WrongToken)
        );
        assert_eq!(
            check(Some("api_key=pk-unit"), Some("nope")),
            Err(VerifyError::WrongToken),
            "a wrong header is not rescued by the query"
        );
        let unconfigured = PancakeSource::seed(
            Product::Pancake,
            PancakeSettings::with_api_keys(SecretSet::default()),
        );
        assert_eq!(
            unconfigured.authenticate(&request(url, None, Some(KEY), CURL), Timestamp(0)),
            Err(VerifyError::NoSecretConfigured)
        );
    }

    #[test]
    fn a_signing_secret_adds_a_body_signature_to_the_key() {
        let mut settings = PancakeSettings::with_api_keys(SecretSet::new([KEY.to_owned()]));
        settings.signing_secrets = SecretSet::new(["relay".to_owned()]);
        let signature = settings.scheme.sign(b"relay", CURL.as_bytes());
        let pancake = PancakeSource::seed(Product::Pancake, settings);
        let mut signed = request("/api/v1/pancake/webhook", None, Some(KEY), CURL);
        assert_eq!(
            pancake.authenticate(&signed, Timestamp(0)),
            Err(VerifyError::MissingSignature)
        );
        signed.headers.insert(
            DEFAULT_SIGNATURE_HEADER,
            HeaderValue::from_str(&signature).expect("ascii"),
        );
        assert_eq!(pancake.authenticate(&signed, Timestamp(0)), Ok(()));
        signed.headers.remove(API_KEY_HEADER);
        assert_eq!(
            pancake.authenticate(&signed, Timestamp(0)),
            Err(VerifyError::MissingToken(API_KEY_WHERE)),
            "the signature does not replace the key"
        );
    }

    #[test]
    fn a_bare_pos_body_is_identified_and_normalized_by_its_route() {
        let pos = source(Product::Pos);
        let body = r#"{"id":1234,"shop_id":26290,"status":2,"updated_at":"2024-11-15T07:44:17"}"#;
        let verified = authenticate(
            &pos,
            request("/api/v1/pancake-pos/webhook/orders", None, Some(KEY), body),
            Timestamp(0),
        )
        .expect("verified");
        let identity = pos.identify(&verified).expect("identified");
        assert_eq!(identity.event_type, "orders");
        assert_eq!(
            identity.dedup_key,
            "pancake-pos:26290:orders:1234:2024-11-15T07:44:17.000000Z:2"
        );
        let Normalized::Changes(changes) = pos
            .normalize(&claimed(&identity.event_type, body))
            .expect("normalized")
        else {
            panic!("an order writes its table");
        };
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].table().name, "pc_pos_order");

        let unrouted = authenticate(
            &pos,
            request(
                "/api/v1/pancake-pos/webhook/inventory",
                None,
                Some(KEY),
                body,
            ),
            Timestamp(0),
        )
        .expect("verified");
        let refused = pos.identify(&unrouted).expect_err("no kind");
        assert_eq!(refused.code(), "VAL_001");
        assert_eq!(
            refused.reply(),
            "Dữ liệu gửi lên thiếu hoặc sai trường bắt buộc: payload.eventType"
        );
        assert!(
            refused.to_string().contains("/webhook/{orders|"),
            "{refused}"
        );
        let by_query = authenticate(
            &pos,
            request("/in/shop", Some("kind=orders"), Some(KEY), body),
            Timestamp(0),
        )
        .expect("verified");
        assert_eq!(
            pos.identify(&by_query).expect("identified").event_type,
            "orders",
            "on /in/{{name}} the kind may come as ?kind="
        );
    }

    #[test]
    fn errors_take_the_seeds_layout() {
        let pancake = source(Product::Pancake);
        for code in [
            "invalid_json",
            "empty_body",
            "invalid_utf8",
            "json_too_deep",
        ] {
            assert_eq!(
                pancake.error_body(code, "whatever").to_string(),
                r#"{"code":"VAL_002","message":"Dữ liệu gửi lên không đúng định dạng JSON","status":"error"}"#
            );
        }
        assert_eq!(
            pancake
                .error_body(
                    "wrong_token",
                    "the token does not match any configured token"
                )
                .to_string(),
            r#"{"code":"wrong_token","message":"the token does not match any configured token","status":"error"}"#
        );
        assert_eq!(pancake.secret_headers(), ["x-api-key"]);
        assert_eq!(pancake.secret_query_params(), ["api_key"]);
    }

    #[test]
    fn settings_come_from_the_section_and_the_seeds_variables() {
        let env: BTreeMap<String, String> =
            BTreeMap::from([("PANCAKE_POS_API_KEY".to_owned(), "a, b".to_owned())]);
        let section: toml::Table = toml::from_str(
            "secrets = [\"file-key\"]\nlanguage = \"en\"\nsignature_header = \"X-Relay-Sig\"",
        )
        .expect("toml");
        let pos = PancakeProvider::POS
            .builtin(section.clone(), &env)
            .expect("valid")
            .expect("a built-in source");
        assert_eq!((pos.name(), pos.kind()), ("pancake-pos", "pancake-pos"));
        assert_eq!(
            pos.routes(),
            [
                Route::post("/api/v1/pancake-pos/webhook"),
                Route::post("/api/v1/pancake-pos/webhook/{kind}"),
            ]
        );
        let pancake = PancakeProvider::PANCAKE
            .builtin(section, &env)
            .expect("valid")
            .expect("a built-in source");
        let url = "/api/v1/pancake/webhook";
        assert_eq!(
            pancake.authenticate(&request(url, None, Some("file-key"), CURL), Timestamp(0)),
            Ok(()),
            "PANCAKE_POS_API_KEY is POS's alone"
        );
        assert_eq!(
            pos.authenticate(&request(url, None, Some("b"), CURL), Timestamp(0)),
            Ok(()),
            "the variable wins over the file, comma-separated"
        );
        assert_eq!(
            pancake.error_body("invalid_json", "")["message"],
            "The request body is not valid JSON"
        );
        let bad: toml::Table = toml::from_str("language = \"fr\"").expect("toml");
        let error = PancakeProvider::PANCAKE
            .builtin(bad, &env)
            .err()
            .expect("refused");
        assert!(error.to_string().contains("pancake.language"), "{error}");
        let configured = PancakeProvider::PANCAKE
            .configured(
                "page-2",
                toml::Table::new(),
                SecretSet::new(["k2".to_owned()]),
            )
            .expect("configured");
        assert!(configured.routes().is_empty(), "answered at /in/page-2");
        assert_eq!(configured.kind(), "pancake");
    }
}
