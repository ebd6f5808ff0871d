//! TradingView as a source: seed 004's `POST /api/tradingview/webhook?user_id=…`. TradingView
//! cannot add headers, so the alert message carries the user's secret (`passphrase` or `secret`
//! in JSON, a `secret=` line in text), compared in constant time; a sender that can sign may
//! instead send seed 004's HMAC-SHA256 of the body in hex as `X-Signature`. Optionally, only
//! TradingView's published addresses are let in, as reported by a trusted proxy's header (the
//! ingress does not see the peer address). Signals are acknowledged once stored; the risk rules
//! and the paper broker run in the processor ([`super::ledger`]).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use axum::http::StatusCode;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::alert::{self, AlertError};
use super::amount::Amount;
use super::ledger::{
    Rules, SignalChange, Sizing, TRADING_FILLS, TRADING_ORDERS, TRADING_POSITIONS, TRADING_SIGNALS,
};
use crate::clock::Timestamp;
use crate::config::{invalid, secrets_from_env, ConfigError, Environment};
use crate::journal::ClaimedDelivery;
use crate::ledger::{LedgerChange, Table};
use crate::sources::registry::{self, Provider};
use crate::sources::{
    query_param, IdentifyError, Identity, IncomingRequest, NormalizeError, Normalized, Receipt,
    Reply, Route, SharedSource, Source, Verified,
};
use crate::verify::{verify_token, Algorithm, Encoding, HmacScheme, SecretSet, VerifyError};

const KIND: &str = "tradingview";

/// Seed 004's URL.
pub const WEBHOOK_ROUTE: &str = "/api/tradingview/webhook";

/// The user whose secret is `TRADINGVIEW_WEBHOOK_SECRET`, when the URL names none.
pub const DEFAULT_USER: &str = "default";

/// Seed 004's signature: `hmac.new(secret, payload, sha256).hexdigest()`.
pub const SIGNATURE_HEADER: &str = "x-signature";

/// The addresses TradingView sends webhooks from (its "How to configure webhook alerts").
pub const TRADINGVIEW_ADDRESSES: [&str; 4] = [
    "52.89.214.238",
    "34.212.75.30",
    "54.218.53.128",
    "52.32.178.7",
];

const WHERE_SECRET: &str =
    "a \"passphrase\" or \"secret\" field in the JSON alert, a secret= line in a text alert, \
     or an X-Signature header";

/// TradingView alerts for one or more users.
#[derive(Debug)]
pub struct TradingView {
    name: String,
    users: BTreeMap<String, SecretSet>,
    /// Set: only requests whose header (as the trusted proxy wrote it) names one of
    /// `allowed_addresses` are accepted.
    trusted_proxy_header: Option<String>,
    allowed_addresses: Vec<IpAddr>,
    rules: Arc<Rules>,
    routes: Vec<Route>,
}

impl TradingView {
    pub fn new(name: impl Into<String>, users: BTreeMap<String, SecretSet>, rules: Rules) -> Self {
        Self {
            name: name.into(),
            users,
            trusted_proxy_header: None,
            allowed_addresses: Vec::new(),
            rules: Arc::new(rules),
            routes: Vec::new(),
        }
    }

    /// Accept only requests whose `header` (set by a proxy in front of Wharf, which must
    /// overwrite or append to it) ends with one of `addresses`.
    pub fn behind_proxy(mut self, header: &str, addresses: Vec<IpAddr>) -> Self {
        self.trusted_proxy_header = Some(header.to_ascii_lowercase());
        self.allowed_addresses = addresses;
        self
    }

    fn user(request: &IncomingRequest) -> String {
        request
            .query_param("user_id")
            .filter(|user| !user.is_empty())
            .unwrap_or_else(|| DEFAULT_USER.to_owned())
    }

    fn check_address(&self, request: &IncomingRequest) -> Result<(), VerifyError> {
        let Some(header) = &self.trusted_proxy_header else {
            return Ok(());
        };
        // The proxy appends the peer it saw: the last entry is the one it vouches for.
        let reported = request
            .header(header)
            .and_then(|value| value.rsplit(',').next())
            .map(str::trim)
            .unwrap_or_default();
        match reported.parse::<IpAddr>() {
            Ok(address) if self.allowed_addresses.contains(&address) => Ok(()),
            _ => Err(VerifyError::AddressNotAllowed(if reported.is_empty() {
                "(none reported)".to_owned()
            } else {
                reported.chars().take(64).collect()
            })),
        }
    }
}

/// `[tradingview]` or `[sources.NAME] kind = "tradingview"`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    /// The default user's secrets (`TRADINGVIEW_WEBHOOK_SECRET` overrides them).
    #[serde(default)]
    secrets: Vec<String>,
    /// Per-user secrets: `users = { alice = "s1" }`, selected by `?user_id=alice`.
    #[serde(default)]
    users: BTreeMap<String, String>,
    trusted_proxy_header: Option<String>,
    /// TradingView's published addresses unless set.
    allowed_addresses: Option<Vec<String>>,
    #[serde(default)]
    risk: RiskSettings,
    sizing: Option<SizingSettings>,
}

/// A decimal setting, as text (`"0.5"`) or a whole number; never a float.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum DecimalSetting {
    Text(String),
    Whole(i64),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RiskSettings {
    #[serde(default)]
    allowed_symbols: Vec<String>,
    max_position: Option<DecimalSetting>,
    max_order_notional: Option<DecimalSetting>,
    max_orders_per_minute: Option<u32>,
    duplicate_window_secs: Option<u32>,
    starting_equity: Option<DecimalSetting>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, tag = "mode", rename_all = "snake_case")]
enum SizingSettings {
    FixedQuantity {
        quantity: DecimalSetting,
        quantity_decimals: Option<u32>,
    },
    FixedNotional {
        notional: DecimalSetting,
        quantity_decimals: Option<u32>,
    },
    PercentOfEquity {
        percent: DecimalSetting,
        quantity_decimals: Option<u32>,
    },
}

fn decimal(context: &str, field: &str, setting: DecimalSetting) -> Result<Amount, ConfigError> {
    let amount = match setting {
        DecimalSetting::Text(text) => Amount::parse(&text),
        DecimalSetting::Whole(units) => Ok(Amount::from_units(units)),
    }
    .map_err(|error| invalid(format!("{context}.{field}"), error))?;
    if !amount.is_positive() {
        return Err(invalid(
            format!("{context}.{field}"),
            "must be greater than zero",
        ));
    }
    Ok(amount)
}

impl FileSettings {
    fn rules(self, context: &str) -> Result<Rules, ConfigError> {
        let defaults = Rules::default();
        let risk_context = format!("{context}.risk");
        let risk = self.risk;
        let optional = |field: &str, value: Option<DecimalSetting>| {
            value
                .map(|value| decimal(&risk_context, field, value))
                .transpose()
        };
        let sizing_context = format!("{context}.sizing");
        let (sizing, quantity_decimals) = match self.sizing {
            None => (defaults.sizing, None),
            Some(SizingSettings::FixedQuantity {
                quantity,
                quantity_decimals,
            }) => (
                Sizing::FixedQuantity(decimal(&sizing_context, "quantity", quantity)?),
                quantity_decimals,
            ),
            Some(SizingSettings::FixedNotional {
                notional,
                quantity_decimals,
            }) => (
                Sizing::FixedNotional(decimal(&sizing_context, "notional", notional)?),
                quantity_decimals,
            ),
            Some(SizingSettings::PercentOfEquity {
                percent,
                quantity_decimals,
            }) => (
                Sizing::PercentOfEquity(decimal(&sizing_context, "percent", percent)?),
                quantity_decimals,
            ),
        };
        let quantity_decimals = quantity_decimals.unwrap_or(defaults.quantity_decimals);
        if quantity_decimals > super::amount::SCALE {
            return Err(invalid(
                format!("{sizing_context}.quantity_decimals"),
                "must be at most 8",
            ));
        }
        Ok(Rules {
            allowed_symbols: risk
                .allowed_symbols
                .iter()
                .map(|symbol| symbol.trim().to_ascii_uppercase())
                .collect(),
            max_position: optional("max_position", risk.max_position)?,
            max_order_notional: optional("max_order_notional", risk.max_order_notional)?,
            max_orders_per_minute: risk.max_orders_per_minute,
            duplicate_window_secs: risk
                .duplicate_window_secs
                .unwrap_or(defaults.duplicate_window_secs),
            sizing,
            starting_equity: optional("starting_equity", risk.starting_equity)?
                .unwrap_or(defaults.starting_equity),
            quantity_decimals,
        })
    }

    fn source(
        self,
        name: &str,
        context: &str,
        default_secrets: Vec<String>,
    ) -> Result<TradingView, ConfigError> {
        let mut users: BTreeMap<String, SecretSet> = self
            .users
            .iter()
            .map(|(user, secret)| (user.clone(), SecretSet::new([secret.clone()])))
            .collect();
        users.insert(DEFAULT_USER.to_owned(), SecretSet::new(default_secrets));
        let proxy = self.trusted_proxy_header.clone();
        let addresses = self
            .allowed_addresses
            .clone()
            .unwrap_or_else(|| TRADINGVIEW_ADDRESSES.map(str::to_owned).to_vec())
            .iter()
            .map(|address| {
                address.trim().parse::<IpAddr>().map_err(|_| {
                    invalid(
                        format!("{context}.allowed_addresses"),
                        format!("{address:?} is not an IP address"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let source = TradingView::new(name, users, self.rules(context)?);
        Ok(match proxy {
            Some(header) => source.behind_proxy(&header, addresses),
            None => source,
        })
    }
}

/// Seed 004: the default user's secret from `TRADINGVIEW_WEBHOOK_SECRET` (or the seed's
/// `TRADINGVIEW_SECRET`).
pub struct TradingViewProvider;

impl Provider for TradingViewProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn ledger_tables(&self) -> &'static [&'static Table] {
        static TABLES: [&Table; 4] = [
            &TRADING_POSITIONS,
            &TRADING_SIGNALS,
            &TRADING_ORDERS,
            &TRADING_FILLS,
        ];
        &TABLES
    }

    fn builtin(
        &self,
        section: toml::Table,
        env: &dyn Environment,
    ) -> Result<Option<SharedSource>, ConfigError> {
        let file: FileSettings = registry::settings(KIND, section)?;
        let secrets = secrets_from_env(env.var("TRADINGVIEW_WEBHOOK_SECRET"))
            .or_else(|| secrets_from_env(env.var("TRADINGVIEW_SECRET")))
            .unwrap_or_else(|| file.secrets.clone());
        let mut source = file.source(KIND, KIND, secrets)?;
        source.routes = vec![Route::post(WEBHOOK_ROUTE)];
        Ok(Some(Arc::new(source)))
    }

    fn configured(
        &self,
        name: &str,
        section: toml::Table,
        secrets: SecretSet,
    ) -> Result<SharedSource, ConfigError> {
        let context = format!("sources.{name}");
        let file: FileSettings = registry::settings(&context, section)?;
        let mut source = file.source(name, &context, Vec::new())?;
        source.users.insert(DEFAULT_USER.to_owned(), secrets);
        Ok(Arc::new(source))
    }
}

fn identify_error(error: AlertError) -> IdentifyError {
    match error {
        AlertError::Empty => IdentifyError::EmptyBody,
        AlertError::NotUtf8 => IdentifyError::NotUtf8,
        AlertError::Unrendered(names) => IdentifyError::UnrenderedPlaceholders(names),
        AlertError::Missing(field) => IdentifyError::MissingField(field),
        other => IdentifyError::Unparseable(other.to_string()),
    }
}

impl Source for TradingView {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        KIND
    }

    fn routes(&self) -> Vec<Route> {
        self.routes.clone()
    }

    /// The passphrase never reaches the journal: the stored copy has it replaced. An
    /// `X-Signature` request's stored body then no longer matches its signature; nothing
    /// verifies a stored body again (verification happened at the door).
    fn redacted_body(&self, body: &[u8]) -> Option<Bytes> {
        alert::redact_secrets(body).map(Bytes::from)
    }

    fn secret_configured(&self) -> bool {
        !self.users.values().all(SecretSet::is_empty)
    }

    fn authenticate(&self, request: &IncomingRequest, _now: Timestamp) -> Result<(), VerifyError> {
        if self.users.values().all(SecretSet::is_empty) {
            return Err(VerifyError::NoSecretConfigured);
        }
        self.check_address(request)?;
        // An unknown user is told what a wrong secret is told.
        let empty = SecretSet::new(Vec::new());
        let user = Self::user(request);
        let secrets = self.users.get(&user).unwrap_or(&empty);
        if secrets.is_empty() {
            return Err(VerifyError::WrongToken);
        }
        if let Some(signature) = request.header(SIGNATURE_HEADER) {
            let scheme = HmacScheme {
                algorithm: Algorithm::Sha256,
                encoding: Encoding::Hex,
                prefix: Some("sha256=".to_owned()),
            };
            return scheme.verify(secrets, &request.body, Some(signature));
        }
        let secret = alert::secret_in(&request.body);
        verify_token(secrets, secret.as_deref(), WHERE_SECRET)
    }

    /// Every alert is its own signal: TradingView does not retry, and an identical alert a
    /// moment later is for the duplicate-window rule to judge (and record), not for the
    /// journal to swallow. The key is the user, the arrival time and the alert's fields
    /// (never the secret, nor a hash of a body that holds it).
    fn identify(&self, request: &Verified) -> Result<Identity, IdentifyError> {
        let request = request.request();
        let alert = alert::parse(&request.body).map_err(identify_error)?;
        let user = Self::user(request);
        let fields = format!(
            "{}|{}|{}|{:?}|{:?}",
            alert.symbol,
            alert.action.as_str(),
            alert.price,
            alert.quantity.map(|q| q.to_string()),
            alert.strategy
        );
        Ok(Identity {
            event_id: None,
            event_type: format!("signal.{}", alert.action.as_str()),
            dedup_key: format!(
                "{user}:{}:{}",
                request.received_at.micros(),
                hex::encode(Sha256::digest(fields.as_bytes()))
            ),
        })
    }

    fn normalize(&self, delivery: &ClaimedDelivery) -> Result<Normalized, NormalizeError> {
        let alert = alert::parse(&delivery.body)
            .map_err(|error| NormalizeError::Invalid(error.to_string()))?;
        let headers: Value = serde_json::from_str(&delivery.headers_json).unwrap_or(Value::Null);
        let user = headers
            .get(":query")
            .and_then(Value::as_str)
            .and_then(|query| query_param(query, "user_id"))
            .filter(|user| !user.is_empty())
            .unwrap_or_else(|| DEFAULT_USER.to_owned());
        Ok(Normalized::Changes(vec![LedgerChange::Row(Arc::new(
            SignalChange {
                user,
                alert,
                delivery: delivery.id,
                rules: Arc::clone(&self.rules),
            },
        ))]))
    }

    /// Seed 004 answers `{"status": "success", …}`. The trade is decided later, so the answer
    /// names the signal (the delivery) instead of a trade; it never repeats the message.
    fn accepted(&self, receipt: &Receipt<'_>, _request: &IncomingRequest) -> Reply {
        Reply::Json(
            StatusCode::OK,
            json!({
                "status": "success",
                "signal_id": receipt.delivery_id,
                "event_type": receipt.identity.event_type,
                "duplicate": receipt.duplicate,
            }),
        )
    }

    /// FastAPI's `detail`, as seed 004's server answers, beside a machine code.
    fn error_body(&self, code: &str, message: &str) -> Value {
        json!({ "detail": message, "code": code, "message": message })
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue, Method};
    use bytes::Bytes;

    use super::*;

    struct Env(Vec<(&'static str, &'static str)>);

    impl Environment for Env {
        fn var(&self, name: &str) -> Option<String> {
            self.0
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        }
    }

    fn builtin(toml: &str, env: &[(&'static str, &'static str)]) -> SharedSource {
        let section: toml::Table = toml::from_str(toml).expect("toml");
        TradingViewProvider
            .builtin(section, &Env(env.to_vec()))
            .expect("valid")
            .expect("built in")
    }

    fn request(
        query: Option<&str>,
        headers: &[(&'static str, &str)],
        body: &str,
    ) -> IncomingRequest {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, HeaderValue::from_str(value).expect("header"));
        }
        IncomingRequest {
            method: Method::POST,
            path: WEBHOOK_ROUTE.to_owned(),
            query: query.map(str::to_owned),
            headers: map,
            body: Bytes::from(body.to_owned()),
            received_at: Timestamp(0),
            path_params: Vec::new(),
        }
    }

    const BODY: &str = r#"{"symbol":"BTCUSDT","action":"buy","price":"1","secret":"s0"}"#;

    #[test]
    fn without_a_secret_the_source_refuses_everything() {
        let source = builtin("", &[]);
        assert_eq!(
            source.authenticate(&request(None, &[], BODY), Timestamp(0)),
            Err(VerifyError::NoSecretConfigured)
        );
    }

    #[test]
    fn the_proxy_header_admits_only_tradingview_addresses_when_configured() {
        let source = builtin(
            "trusted_proxy_header = \"X-Forwarded-For\"",
            &[("TRADINGVIEW_WEBHOOK_SECRET", "s0")],
        );
        let from = |chain: &str| {
            source.authenticate(
                &request(None, &[("x-forwarded-for", chain)], BODY),
                Timestamp(0),
            )
        };
        assert_eq!(from("52.89.214.238"), Ok(()));
        assert_eq!(from("10.0.0.1, 52.32.178.7"), Ok(()));
        // Only the entry the proxy appended counts, not what the sender wrote before it.
        assert_eq!(
            from("52.89.214.238, 203.0.113.9"),
            Err(VerifyError::AddressNotAllowed("203.0.113.9".into()))
        );
        assert!(matches!(
            source.authenticate(&request(None, &[], BODY), Timestamp(0)),
            Err(VerifyError::AddressNotAllowed(_))
        ));
        // Without the setting, the header means nothing.
        let open = builtin("", &[("TRADINGVIEW_WEBHOOK_SECRET", "s0")]);
        let spoofed = request(None, &[("x-forwarded-for", "203.0.113.9")], BODY);
        assert_eq!(open.authenticate(&spoofed, Timestamp(0)), Ok(()));
    }

    #[test]
    fn users_have_their_own_secrets_and_signatures_use_them() {
        let source = builtin(
            "users = { alice = \"s1\" }",
            &[("TRADINGVIEW_WEBHOOK_SECRET", "s0")],
        );
        let alice = BODY.replace("s0", "s1");
        assert_eq!(
            source.authenticate(&request(Some("user_id=alice"), &[], &alice), Timestamp(0)),
            Ok(())
        );
        assert_eq!(
            source.authenticate(&request(Some("user_id=alice"), &[], BODY), Timestamp(0)),
            Err(VerifyError::WrongToken)
        );
        assert_eq!(
            source.authenticate(&request(Some("user_id=bob"), &[], &alice), Timestamp(0)),
            Err(VerifyError::WrongToken)
        );
        let unsigned = r#"{"symbol":"BTCUSDT","action":"buy","price":"1"}"#;
        let scheme = HmacScheme {
            algorithm: Algorithm::Sha256,
            encoding: Encoding::Hex,
            prefix: None,
        };
        let signature = scheme.sign(b"s1", unsigned.as_bytes());
        let signed = request(
            Some("user_id=alice"),
            &[("x-signature", &signature)],
            unsigned,
        );
        assert_eq!(source.authenticate(&signed, Timestamp(0)), Ok(()));
        let as_default = request(None, &[("x-signature", &signature)], unsigned);
        assert_eq!(
            source.authenticate(&as_default, Timestamp(0)),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn settings_are_exact_and_checked() {
        let section: toml::Table = toml::from_str(
            r#"
            [risk]
            allowed_symbols = ["btcusdt"]
            max_position = "0.5"
            max_order_notional = 50000
            [sizing]
            mode = "percent_of_equity"
            percent = "2.5"
            "#,
        )
        .expect("toml");
        let file: FileSettings = registry::settings(KIND, section).expect("settings");
        let rules = file.rules(KIND).expect("rules");
        assert_eq!(rules.allowed_symbols, ["BTCUSDT"]);
        assert_eq!(rules.max_position, Amount::parse("0.5").ok());
        assert_eq!(rules.max_order_notional, Some(Amount::from_units(50_000)));
        assert_eq!(
            rules.sizing,
            Sizing::PercentOfEquity(Amount::parse("2.5").expect("amount"))
        );
        for bad in [
            "[risk]\nmax_position = 0.5",
            "[risk]\nmax_position = \"-1\"",
            "[sizing]\nmode = \"martingale\"",
            "allowed_addresses = [\"not-an-ip\"]",
            "surprise = 1",
        ] {
            let section: toml::Table = toml::from_str(bad).expect("toml");
            assert!(
                TradingViewProvider
                    .builtin(section, &Env(Vec::new()))
                    .is_err(),
                "{bad}"
            );
        }
    }
}
