//! TradingView as a source: seed 004's `POST /api/tradingview/webhook?user_id=…`. TradingView
//! cannot add headers, so the alert message carries the user's secret (`passphrase` or `secret`
//! in JSON, a `secret=` line in text), compared in constant time; a sender that can sign may
//! instead send seed 004's HMAC-SHA256 of the body in hex as `X-Signature`. Optionally, only
//! TradingView's published addresses are let in, as reported by a trusted proxy's header (the
//! ingress does not see the peer address). Signals are acknowledged once stored; the risk rules
//! and the paper broker run in the processor ([`super::ledger`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::StatusCode;
use bytes::Bytes;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::alert::{self, AlertError};
use super::amount::Amount;
use super::execution::{
    read_okx_answer, read_okx_order, ExecutionError, OkxCredentials, OkxOrder, OkxOrderState,
    OkxVenue, OrderRequest, OKX_BASE_URL,
};
use super::ledger::{
    self, Broker, OrderOutcome, Placement, Rules, SignalChange, Sizing, VenueFill,
    FILL_ORDER_EVENT, PLACE_ORDER_EVENT, TRADING_FILLS, TRADING_ORDERS, TRADING_POSITIONS,
    TRADING_SIGNALS,
};
use crate::clock::Timestamp;
use crate::config::{invalid, secrets_from_env, ConfigError, Environment};
use crate::journal::{ClaimedDelivery, DeliveryId};
use crate::ledger::{LedgerChange, OwedFollowUps, Table};
use crate::lookup::{Lookup, LookupAnswer};
use crate::sources::registry::{self, Provider};
use crate::sources::{
    query_param, sample, IdentifyError, Identity, IncomingRequest, Judgement, NormalizeError,
    Normalized, Receipt, Reply, Route, SampleError, SampleRequest, SharedSource, Source, Verified,
};
use crate::verify::{
    verify_token, Algorithm, Encoding, HmacScheme, ProxiedAllowlist, SecretSet, VerifyError,
};

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
    /// Set: only requests from TradingView's addresses, as a trusted proxy reports them.
    allowlist: Option<ProxiedAllowlist>,
    rules: Arc<Rules>,
    execution: Execution,
    routes: Vec<Route>,
}

/// Which broker takes each user's orders, and OKX when configured.
#[derive(Debug, Default)]
pub struct Execution {
    pub default: Option<Broker>,
    pub users: BTreeMap<String, Broker>,
    /// OKX's key and URL; without them no user can be sent to OKX.
    pub okx: Option<OkxVenue>,
}

impl Execution {
    fn broker_for(&self, user: &str) -> Broker {
        self.users
            .get(user)
            .copied()
            .or(self.default)
            .unwrap_or(Broker::Paper)
    }
}

impl TradingView {
    pub fn new(name: impl Into<String>, users: BTreeMap<String, SecretSet>, rules: Rules) -> Self {
        Self {
            name: name.into(),
            users,
            allowlist: None,
            rules: Arc::new(rules),
            execution: Execution::default(),
            routes: Vec::new(),
        }
    }

    /// Sends users' orders where `execution` says (the paper broker otherwise).
    pub fn executing(mut self, execution: Execution) -> Self {
        self.execution = execution;
        self
    }

    /// Accept only requests from the addresses `allowlist` names, as a proxy reports them.
    pub fn behind_proxy(mut self, allowlist: ProxiedAllowlist) -> Self {
        self.allowlist = Some(allowlist);
        self
    }

    fn user(request: &IncomingRequest) -> String {
        request
            .query_param("user_id")
            .filter(|user| !user.is_empty())
            .unwrap_or_else(|| DEFAULT_USER.to_owned())
    }

    /// The venue and the order a follow-up delivery places (or asks about).
    fn placement_of(
        &self,
        delivery: &ClaimedDelivery,
    ) -> Result<(&OkxVenue, OrderRequest), NormalizeError> {
        let venue =
            self.execution.okx.as_ref().ok_or_else(|| {
                NormalizeError::Transient("OKX is no longer configured".to_owned())
            })?;
        let order = placement(delivery)?
            .order()
            .ok_or_else(|| NormalizeError::Invalid("the order has no side".to_owned()))?;
        Ok((venue, order))
    }

    fn check_address(&self, request: &IncomingRequest) -> Result<(), VerifyError> {
        match &self.allowlist {
            Some(allowlist) => allowlist.check(&request.headers),
            None => Ok(()),
        }
    }
}

/// The order a follow-up delivery carries.
fn placement(delivery: &ClaimedDelivery) -> Result<Placement, NormalizeError> {
    serde_json::from_slice(&delivery.body)
        .map_err(|error| NormalizeError::Invalid(format!("the order is unreadable: {error}")))
}

/// Whether a delivery is a follow-up about an order at a venue, not a signal.
fn is_order_follow_up(delivery: &ClaimedDelivery) -> bool {
    matches!(
        delivery.event_type.as_str(),
        PLACE_ORDER_EVENT | FILL_ORDER_EVENT
    )
}

/// The changes a venue's answer about `placement` makes: the order row's status, and when the
/// order is final (or was refused) the account, where it stops counting as open and what
/// filled moves the position. `learned_by` is the follow-up delivery that asked.
fn order_changes(
    placement: &Placement,
    outcome: OrderOutcome,
    filled: Option<Option<(Amount, Amount)>>,
    learned_by: DeliveryId,
) -> Result<Vec<LedgerChange>, NormalizeError> {
    let mut changes = vec![LedgerChange::Row(Arc::new(outcome))];
    if let Some(filled) = filled {
        let side = placement
            .side()
            .ok_or_else(|| NormalizeError::Invalid("the order has no side".to_owned()))?;
        changes.push(LedgerChange::Row(Arc::new(VenueFill {
            user: placement.user.clone(),
            signal_delivery: DeliveryId(placement.signal_delivery),
            delivery: learned_by,
            symbol: placement.symbol.clone(),
            side,
            filled,
        })));
    }
    Ok(changes)
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
    /// `"paper"` (the default) or `"okx"`: where accepted signals' orders go.
    execution: Option<String>,
    /// Per-user brokers: `user_execution = { alice = "okx" }`.
    #[serde(default)]
    user_execution: BTreeMap<String, String>,
    okx: Option<OkxSettings>,
}

/// `[tradingview.okx]`, overridden by `OKX_API_KEY`, `OKX_SECRET_KEY`, `OKX_PASSPHRASE`,
/// `OKX_BASE_URL`, `OKX_SIMULATED`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OkxSettings {
    api_key: Option<String>,
    secret_key: Option<String>,
    passphrase: Option<String>,
    base_url: Option<String>,
    /// OKX's demo trading (`x-simulated-trading: 1`).
    simulated: Option<bool>,
}

fn broker(context: &str, name: &str) -> Result<Broker, ConfigError> {
    match name.trim() {
        "paper" => Ok(Broker::Paper),
        "okx" => Ok(Broker::Okx),
        other => Err(invalid(
            context,
            format!("{other:?} is neither \"paper\" nor \"okx\""),
        )),
    }
}

impl FileSettings {
    /// The brokers, and OKX when its key is configured; sending anyone to OKX without it is an
    /// error, so that OKX is never half-configured.
    fn execution(
        &mut self,
        context: &str,
        env: &dyn Environment,
    ) -> Result<Execution, ConfigError> {
        let okx = self.okx.take().unwrap_or_default();
        let value = |name: &str, file: Option<String>| {
            env.var(name)
                .or(file)
                .filter(|value| !value.trim().is_empty())
        };
        let api_key = value("OKX_API_KEY", okx.api_key);
        let secret_key = value("OKX_SECRET_KEY", okx.secret_key);
        let passphrase = value("OKX_PASSPHRASE", okx.passphrase);
        let base_url =
            value("OKX_BASE_URL", okx.base_url).unwrap_or_else(|| OKX_BASE_URL.to_owned());
        let simulated = match env.var("OKX_SIMULATED") {
            Some(flag) => matches!(flag.trim(), "1" | "true" | "yes"),
            None => okx.simulated.unwrap_or(false),
        };
        let venue = match (api_key, secret_key, passphrase) {
            (Some(api_key), Some(secret_key), Some(passphrase)) => Some(
                OkxVenue::new(
                    base_url,
                    OkxCredentials {
                        api_key: SecretString::from(api_key),
                        secret_key: SecretString::from(secret_key),
                        passphrase: SecretString::from(passphrase),
                    },
                )
                .simulated(simulated),
            ),
            (None, None, None) => None,
            _ => {
                return Err(invalid(
                    format!("{context}.okx"),
                    "OKX needs api_key, secret_key and passphrase together",
                ))
            }
        };
        let default = value("TRADINGVIEW_EXECUTION", self.execution.take())
            .map(|name| broker(&format!("{context}.execution"), &name))
            .transpose()?;
        let users = std::mem::take(&mut self.user_execution)
            .into_iter()
            .map(|(user, name)| {
                broker(&format!("{context}.user_execution.{user}"), &name).map(|b| (user, b))
            })
            .collect::<Result<BTreeMap<_, _>, _>>()?;
        let wants_okx = default == Some(Broker::Okx) || users.values().any(|b| *b == Broker::Okx);
        if wants_okx && venue.is_none() {
            return Err(invalid(
                format!("{context}.execution"),
                "orders go to OKX, but OKX is not configured (OKX_API_KEY, OKX_SECRET_KEY, \
                 OKX_PASSPHRASE)",
            ));
        }
        Ok(Execution {
            default,
            users,
            okx: venue,
        })
    }
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
        // Checked even while unused, so that a typo is found before the header is turned on.
        let allowlist = ProxiedAllowlist::parse(
            self.trusted_proxy_header.as_deref().unwrap_or_default(),
            self.allowed_addresses.as_deref(),
            &TRADINGVIEW_ADDRESSES,
        )
        .map_err(|error| invalid(format!("{context}.allowed_addresses"), error))?;
        let allowlist = self.trusted_proxy_header.is_some().then_some(allowlist);
        let source = TradingView::new(name, users, self.rules(context)?);
        Ok(match allowlist {
            Some(allowlist) => source.behind_proxy(allowlist),
            None => source,
        })
    }
}

/// An order row's new status, as OKX said it.
fn outcome(
    placement: &Placement,
    status: &'static str,
    venue_order_id: Option<String>,
    code: Option<&str>,
    message: Option<String>,
) -> OrderOutcome {
    OrderOutcome {
        signal_delivery: DeliveryId(placement.signal_delivery),
        status,
        venue_order_id,
        code: code.map(str::to_owned),
        message,
        placement: placement.clone(),
        moved: Arc::default(),
    }
}

/// OKX's answer to the placement: accepted (its fill is asked for next) or refused (the order
/// no longer counts as open).
fn placed_changes(
    placement: &Placement,
    body: &[u8],
    learned_by: DeliveryId,
) -> Result<Vec<LedgerChange>, NormalizeError> {
    match read_okx_answer(body) {
        Ok(placed) => {
            let accepted = outcome(
                placement,
                "accepted",
                Some(placed.venue_order_id),
                Some("0"),
                None,
            );
            order_changes(placement, accepted, None, learned_by)
        }
        Err(ExecutionError::Refused { code, message }) => {
            let rejected = outcome(placement, "rejected", None, Some(&code), Some(message));
            order_changes(placement, rejected, Some(None), learned_by)
        }
        Err(error) => Err(NormalizeError::Transient(error.to_string())),
    }
}

/// OKX's answer to the query made after a placement's answer was lost.
fn found_changes(
    placement: &Placement,
    body: &[u8],
    learned_by: DeliveryId,
) -> Result<Vec<LedgerChange>, NormalizeError> {
    match read_okx_order(body) {
        Ok(Some(order)) => {
            let message = format!(
                "found by clOrdId after a lost answer; state {}",
                state(&order)
            );
            let accepted = outcome(
                placement,
                "accepted",
                Some(order.venue_order_id),
                Some("0"),
                Some(message),
            );
            order_changes(placement, accepted, None, learned_by)
        }
        Ok(None) => {
            let message = "not placed: the placement's answer was lost and OKX has no order with \
                           this clOrdId; it is not placed again on its own";
            let rejected = outcome(
                placement,
                "rejected",
                None,
                Some("51603"),
                Some(message.to_owned()),
            );
            order_changes(placement, rejected, Some(None), learned_by)
        }
        Err(error) => Err(NormalizeError::Transient(error.to_string())),
    }
}

/// OKX's answer to `order.fill`: the order's final fill, or a retry while it is open.
fn fill_changes(
    placement: &Placement,
    body: &[u8],
    learned_by: DeliveryId,
) -> Result<Vec<LedgerChange>, NormalizeError> {
    let order = read_okx_order(body)
        .map_err(|error| NormalizeError::Transient(error.to_string()))?
        .ok_or_else(|| {
            NormalizeError::Transient("OKX does not show the accepted order yet".to_owned())
        })?;
    let Some((quantity, average_price)) = order.final_fill() else {
        return Err(NormalizeError::Transient(format!(
            "the order is still {} at OKX",
            state(&order)
        )));
    };
    let filled = average_price.map(|price| (quantity, price));
    let (status, message) = match (&order.state, filled) {
        (OkxOrderState::Filled, _) => ("filled", None),
        (_, Some((quantity, _))) => (
            "canceled",
            Some(format!("canceled after {quantity} filled")),
        ),
        (_, None) => (
            "canceled",
            Some("canceled before anything filled".to_owned()),
        ),
    };
    let final_word = outcome(
        placement,
        status,
        Some(order.venue_order_id),
        Some("0"),
        message,
    );
    order_changes(placement, final_word, Some(filled), learned_by)
}

/// OKX's word for an order's state.
fn state(order: &OkxOrder) -> &str {
    match &order.state {
        OkxOrderState::Open(state) => state,
        OkxOrderState::Filled => "filled",
        OkxOrderState::Canceled => "canceled",
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
        let mut file: FileSettings = registry::settings(KIND, section)?;
        let secrets = secrets_from_env(env.var("TRADINGVIEW_WEBHOOK_SECRET"))
            .or_else(|| secrets_from_env(env.var("TRADINGVIEW_SECRET")))
            .unwrap_or_else(|| file.secrets.clone());
        let execution = file.execution(KIND, env)?;
        let mut source = file.source(KIND, KIND, secrets)?.executing(execution);
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
        let mut file: FileSettings = registry::settings(&context, section)?;
        let no_env: BTreeMap<String, String> = BTreeMap::new();
        let execution = file.execution(&context, &no_env)?;
        let mut source = file
            .source(name, &context, Vec::new())?
            .executing(execution);
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
        if is_order_follow_up(delivery) {
            return Err(NormalizeError::Invalid(
                "an order is placed only through its venue's answer".to_owned(),
            ));
        }
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
                broker: self.execution.broker_for(&user),
                user,
                alert,
                delivery: delivery.id,
                rules: Arc::clone(&self.rules),
                placement: Arc::default(),
            },
        ))]))
    }

    /// An order to place or to ask about (a follow-up of a committed signal or placement) is
    /// carried out by its lookup.
    fn verified_by_lookup(&self, delivery: &ClaimedDelivery) -> bool {
        is_order_follow_up(delivery)
    }

    /// The first attempt at an `order.place` places the order. A later one never places it
    /// again blindly: the earlier answer was lost (OKX may have the order), so it asks OKX for
    /// the order by its `clOrdId` instead; so does every `order.fill`.
    fn lookup(&self, delivery: &ClaimedDelivery, now: Timestamp) -> Result<Lookup, NormalizeError> {
        let (venue, order) = self.placement_of(delivery)?;
        Ok(
            if delivery.event_type == PLACE_ORDER_EVENT && delivery.attempts == 0 {
                venue.place_request(&order, now)
            } else {
                venue.query_request(&order, now)
            },
        )
    }

    /// OKX's answer. To a placement: recorded on the order row, accepted with its `ordId`, or
    /// rejected with `sCode`/`sMsg` (or `code`/`msg`). To an `order.fill`: the final fill on
    /// the order row and the account, or a retry (with the processor's backoff, so bounded by
    /// its attempts) while OKX still has the order live. An unreadable answer is retried.
    fn judge(
        &self,
        delivery: &ClaimedDelivery,
        answer: &LookupAnswer,
    ) -> Result<Judgement, NormalizeError> {
        let placement = placement(delivery)?;
        let changes = if delivery.event_type == FILL_ORDER_EVENT {
            fill_changes(&placement, &answer.body, delivery.id)?
        } else if delivery.attempts == 0 {
            placed_changes(&placement, &answer.body, delivery.id)?
        } else {
            found_changes(&placement, &answer.body, delivery.id)?
        };
        Ok(Judgement::Genuine(Normalized::Changes(changes)))
    }

    /// OKX's orders that are not final yet, once OKX is configured.
    fn owed_follow_ups(&self) -> Vec<OwedFollowUps> {
        if self.execution.okx.is_none() {
            return Vec::new();
        }
        ledger::owed_follow_ups(&self.name, Broker::Okx)
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

    fn sample_events(&self) -> Vec<&'static str> {
        vec!["signal.buy"]
    }

    /// Seed 004's alert (a buy, hence `signal.buy`), with the default user's secret where the seed has
    /// `your-secret-key`: TradingView cannot sign, the secret travels in the message.
    fn sample(&self, event: &str, _now: Timestamp) -> Result<SampleRequest, SampleError> {
        if event != "signal.buy" {
            return Err(sample::unknown(&self.name, event));
        }
        let secret = self
            .users
            .get(DEFAULT_USER)
            .and_then(SecretSet::first_exposed)
            .ok_or_else(|| SampleError::NoSecret {
                source_name: self.name.clone(),
                setting: "TRADINGVIEW_WEBHOOK_SECRET",
            })?;
        let mut payload = sample::fixture(alert::SEED_ALERT);
        sample::set(&mut payload, "/secret", secret.into());
        let path = self
            .routes
            .first()
            .map_or_else(|| format!("/in/{}", self.name), |route| route.path.clone());
        Ok(SampleRequest::json_post(path, &payload))
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

        fn names(&self) -> Vec<String> {
            self.0.iter().map(|(key, _)| (*key).to_owned()).collect()
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
