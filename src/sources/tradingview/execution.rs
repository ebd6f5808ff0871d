//! Where orders go: an [`ExecutionAdapter`] places one order and says what the venue did. The
//! paper broker fills at the alert price (the ledger applies its fills, [`super::ledger`]);
//! [`Okx`] places real orders with OKX's v5 REST API, signed as OKX requires, through the one
//! provider-API client ([`ProviderApi`]). Nothing here is wired to run unless configured.

use async_trait::async_trait;
use axum::http::Method;
use base64::Engine as _;
use bytes::Bytes;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use thiserror::Error;

use super::alert::Side;
use super::amount::Amount;
use crate::clock::{SharedClock, Timestamp};
use crate::lookup::{Lookup, LookupError, ProviderApi};
use crate::verify::{hmac_digest, Algorithm};

/// One order to place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRequest {
    /// Ours, unique per order (the signal's delivery), so that a retried placement is one
    /// order at the venue: letters and digits, at most 32.
    pub client_order_id: String,
    /// As the alert names it (`BTCUSDT`); each adapter maps it to its venue's instrument.
    pub symbol: String,
    pub side: Side,
    pub quantity: Amount,
    /// A limit price; `None` is a market order.
    pub limit_price: Option<Amount>,
}

/// What the venue did with an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub venue_order_id: String,
    /// Filled at once (quantity, price), as the paper broker does; a real venue reports fills
    /// later.
    pub filled: Option<(Amount, Amount)>,
}

#[derive(Debug, Error)]
pub enum ExecutionError {
    /// Worth retrying: the venue could not be asked, or could not answer now.
    #[error(transparent)]
    Unavailable(#[from] LookupError),
    /// The venue refused the order (its code and message).
    #[error("the venue refused the order: {code} {message}")]
    Refused { code: String, message: String },
    /// The venue answered something this adapter cannot read.
    #[error("the venue's answer is unreadable: {0}")]
    Unreadable(String),
}

impl ExecutionError {
    pub fn is_permanent(&self) -> bool {
        !matches!(self, Self::Unavailable(_))
    }
}

/// A venue that takes orders.
#[async_trait]
pub trait ExecutionAdapter: Send + Sync {
    /// The name orders record as their broker.
    fn name(&self) -> &'static str;

    async fn place(&self, order: &OrderRequest) -> Result<Placement, ExecutionError>;
}

/// Fills every order at once at its limit price (the alert's price).
#[derive(Debug, Clone, Copy, Default)]
pub struct PaperBroker;

#[async_trait]
impl ExecutionAdapter for PaperBroker {
    fn name(&self) -> &'static str {
        "paper"
    }

    async fn place(&self, order: &OrderRequest) -> Result<Placement, ExecutionError> {
        let price = order.limit_price.ok_or_else(|| ExecutionError::Refused {
            code: "no_price".to_owned(),
            message: "the paper broker fills at a given price".to_owned(),
        })?;
        Ok(Placement {
            venue_order_id: format!("paper-{}", order.client_order_id),
            filled: Some((order.quantity, price)),
        })
    }
}

/// OKX's API key; `Debug` shows none of it.
pub struct OkxCredentials {
    pub api_key: SecretString,
    pub secret_key: SecretString,
    pub passphrase: SecretString,
}

impl std::fmt::Debug for OkxCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OkxCredentials(…)")
    }
}

/// OKX's place-order endpoint.
pub const OKX_ORDER_PATH: &str = "/api/v5/trade/order";

/// Where OKX is reached and with which key: builds OKX's signed requests, pure (the caller
/// says when). Used by the [`Okx`] adapter and by the TradingView source, whose placements
/// the processor makes after the signal is committed.
#[derive(Debug)]
pub struct OkxVenue {
    /// `https://www.okx.com`, or a test server.
    base_url: String,
    credentials: OkxCredentials,
    /// `cash` for spot.
    trade_mode: String,
    /// Sends `x-simulated-trading: 1` (OKX's demo trading).
    simulated: bool,
}

/// OKX's live REST API.
pub const OKX_BASE_URL: &str = "https://www.okx.com";

impl OkxVenue {
    pub fn new(base_url: impl Into<String>, credentials: OkxCredentials) -> Self {
        Self {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            credentials,
            trade_mode: "cash".to_owned(),
            simulated: false,
        }
    }

    pub fn simulated(mut self, simulated: bool) -> Self {
        self.simulated = simulated;
        self
    }

    /// `POST /api/v5/trade/order` for one order, signed at `now`. Not idempotent: it is sent
    /// again only when the connection failed before anything was sent.
    pub fn place_request(&self, order: &OrderRequest, now: Timestamp) -> Lookup {
        let mut body = json!({
            "instId": okx_instrument(&order.symbol),
            "tdMode": self.trade_mode,
            "clOrdId": order.client_order_id,
            "side": order.side.as_str(),
            "ordType": if order.limit_price.is_some() { "limit" } else { "market" },
            "sz": order.quantity.to_string(),
        });
        if let Some(price) = order.limit_price {
            body["px"] = Value::String(price.to_string());
        }
        let body = body.to_string();
        Lookup {
            method: Method::POST,
            url: format!("{}{OKX_ORDER_PATH}", self.base_url),
            headers: self.signed_headers("POST", OKX_ORDER_PATH, &body, now),
            body: Some(Bytes::from(body)),
            cacheable: false,
            oauth: None,
            // Placing acts: sent again only when it surely never arrived.
            idempotent: false,
        }
    }

    /// `GET /api/v5/trade/order?instId=…&clOrdId=…`: whether OKX has the order, after a
    /// placement whose answer never came.
    pub fn query_request(&self, order: &OrderRequest, now: Timestamp) -> Lookup {
        let path = format!(
            "{OKX_ORDER_PATH}?instId={}&clOrdId={}",
            okx_instrument(&order.symbol),
            order.client_order_id
        );
        Lookup {
            method: Method::GET,
            url: format!("{}{path}", self.base_url),
            headers: self.signed_headers("GET", &path, "", now),
            body: None,
            cacheable: false,
            oauth: None,
            idempotent: true,
        }
    }

    /// The four `OK-ACCESS-*` headers (and the demo-trading flag).
    fn signed_headers(
        &self,
        method: &str,
        path: &str,
        body: &str,
        now: Timestamp,
    ) -> Vec<(&'static str, String)> {
        let timestamp = okx_timestamp(now);
        let signature = okx_sign(
            self.credentials.secret_key.expose_secret().as_bytes(),
            &timestamp,
            method,
            path,
            body,
        );
        let mut headers = vec![
            ("content-type", "application/json".to_owned()),
            (
                "ok-access-key",
                self.credentials.api_key.expose_secret().to_owned(),
            ),
            ("ok-access-sign", signature),
            ("ok-access-timestamp", timestamp),
            (
                "ok-access-passphrase",
                self.credentials.passphrase.expose_secret().to_owned(),
            ),
        ];
        if self.simulated {
            headers.push(("x-simulated-trading", "1".to_owned()));
        }
        headers
    }
}

/// OKX spot (or margin) orders through `POST /api/v5/trade/order`, placed at once (the
/// [`ExecutionAdapter`] way).
#[derive(Debug)]
pub struct Okx {
    api: ProviderApi,
    venue: OkxVenue,
    clock: SharedClock,
}

impl Okx {
    pub fn new(
        api: ProviderApi,
        base_url: impl Into<String>,
        credentials: OkxCredentials,
        clock: SharedClock,
    ) -> Self {
        Self {
            api,
            venue: OkxVenue::new(base_url, credentials),
            clock,
        }
    }

    pub fn simulated(mut self, simulated: bool) -> Self {
        self.venue = self.venue.simulated(simulated);
        self
    }

    /// The signed request for one order.
    pub fn request(&self, order: &OrderRequest, now: Timestamp) -> Lookup {
        self.venue.place_request(order, now)
    }
}

#[async_trait]
impl ExecutionAdapter for Okx {
    fn name(&self) -> &'static str {
        "okx"
    }

    async fn place(&self, order: &OrderRequest) -> Result<Placement, ExecutionError> {
        let request = self.request(order, self.clock.now());
        let answer = self.api.call(&request).await?;
        read_okx_answer(&answer.body)
    }
}

/// OKX's answer to a place-order: `{"code":"0","msg":"","data":[{"ordId":…,"sCode":"0",
/// "sMsg":""}]}`; a refusal carries its reason in `sCode`/`sMsg` (or `code`/`msg` when the
/// request itself was refused, e.g. a bad signature).
pub fn read_okx_answer(body: &[u8]) -> Result<Placement, ExecutionError> {
    let answer: Value = serde_json::from_slice(body)
        .map_err(|error| ExecutionError::Unreadable(format!("not JSON: {error}")))?;
    let text = |value: Option<&Value>| value.and_then(Value::as_str).unwrap_or("").to_owned();
    let code = text(answer.get("code"));
    let first = answer.pointer("/data/0");
    let item_code = text(first.and_then(|item| item.get("sCode")));
    if code == "0" && (item_code.is_empty() || item_code == "0") {
        let venue_order_id = text(first.and_then(|item| item.get("ordId")));
        if venue_order_id.is_empty() {
            return Err(ExecutionError::Unreadable("no ordId in data".to_owned()));
        }
        return Ok(Placement {
            venue_order_id,
            filled: None,
        });
    }
    if code.is_empty() {
        return Err(ExecutionError::Unreadable("no code".to_owned()));
    }
    let (code, message) = if item_code.is_empty() || item_code == "0" {
        (code, text(answer.get("msg")))
    } else {
        (item_code, text(first.and_then(|item| item.get("sMsg"))))
    };
    Err(ExecutionError::Refused { code, message })
}

/// An order as OKX's order-details endpoint reports it (`GET /api/v5/trade/order`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OkxOrder {
    pub venue_order_id: String,
    pub state: OkxOrderState,
    /// `accFillSz`: how much of the order has filled so far.
    pub filled: Amount,
    /// `avgPx`: the average price of what filled (OKX sends `""` while nothing has).
    pub average_price: Option<Amount>,
}

/// OKX's `state` of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OkxOrderState {
    /// `live` or `partially_filled`: more may fill.
    Open(String),
    /// `filled`: all of it, at `avgPx`.
    Filled,
    /// `canceled` or `mmp_canceled`: what filled before (`accFillSz`, maybe nothing) stays.
    Canceled,
}

impl OkxOrder {
    /// What filled, once nothing more can: `(quantity, average price)`, `None` while the order
    /// is open. A final order that filled nothing has a zero quantity.
    pub fn final_fill(&self) -> Option<(Amount, Option<Amount>)> {
        match self.state {
            OkxOrderState::Open(_) => None,
            OkxOrderState::Filled | OkxOrderState::Canceled => {
                Some((self.filled, self.average_price))
            }
        }
    }
}

/// What OKX says of an order looked up by `clOrdId`: `{"code":"0","msg":"","data":[{"ordId":…,
/// "state":…,"accFillSz":…,"avgPx":…,…}]}`, or `None` when it has no such order (`51603`).
pub fn read_okx_order(body: &[u8]) -> Result<Option<OkxOrder>, ExecutionError> {
    let answer: Value = serde_json::from_slice(body)
        .map_err(|error| ExecutionError::Unreadable(format!("not JSON: {error}")))?;
    let text = |value: Option<&Value>| value.and_then(Value::as_str).unwrap_or("").to_owned();
    match text(answer.get("code")).as_str() {
        "0" => {}
        "51603" => return Ok(None),
        "" => return Err(ExecutionError::Unreadable("no code".to_owned())),
        code => {
            return Err(ExecutionError::Refused {
                code: code.to_owned(),
                message: text(answer.get("msg")),
            })
        }
    }
    let field = |name: &str| text(answer.pointer(&format!("/data/0/{name}")));
    let venue_order_id = field("ordId");
    if venue_order_id.is_empty() {
        return Ok(None);
    }
    let amount = |name: &str| -> Result<Option<Amount>, ExecutionError> {
        let value = field(name);
        if value.is_empty() {
            return Ok(None);
        }
        Amount::parse(&value)
            .map(Some)
            .map_err(|error| ExecutionError::Unreadable(format!("{name}: {error}")))
    };
    let state = match field("state").as_str() {
        "filled" => OkxOrderState::Filled,
        "canceled" | "mmp_canceled" => OkxOrderState::Canceled,
        "live" | "partially_filled" => OkxOrderState::Open(field("state")),
        other => {
            return Err(ExecutionError::Unreadable(format!(
                "unknown order state {other:?}"
            )))
        }
    };
    let filled = amount("accFillSz")?.unwrap_or(Amount::ZERO);
    let average_price = amount("avgPx")?.filter(|_| filled.is_positive());
    if state == OkxOrderState::Filled && average_price.is_none() {
        return Err(ExecutionError::Unreadable(
            "a filled order without accFillSz and avgPx".to_owned(),
        ));
    }
    Ok(Some(OkxOrder {
        venue_order_id,
        state,
        filled,
        average_price,
    }))
}

/// `OK-ACCESS-SIGN`: base64(HMAC-SHA256(secret, timestamp + METHOD + requestPath + body)).
pub fn okx_sign(secret: &[u8], timestamp: &str, method: &str, path: &str, body: &str) -> String {
    let digest = hmac_digest(
        Algorithm::Sha256,
        secret,
        &[
            timestamp.as_bytes(),
            method.as_bytes(),
            path.as_bytes(),
            body.as_bytes(),
        ],
    );
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// `OK-ACCESS-TIMESTAMP`: ISO 8601 in UTC with milliseconds, `2020-12-08T09:08:57.715Z`.
pub fn okx_timestamp(at: Timestamp) -> String {
    at.to_datetime()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// TradingView's `BTCUSDT` as OKX's `BTC-USDT`; a symbol already dashed is kept.
pub fn okx_instrument(symbol: &str) -> String {
    if symbol.contains('-') {
        return symbol.to_owned();
    }
    for quote in ["USDT", "USDC", "USD", "EUR", "BTC", "ETH"] {
        if let Some(base) = symbol.strip_suffix(quote).filter(|base| !base.is_empty()) {
            return format!("{base}-{quote}");
        }
    }
    symbol.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn okx_signature_is_base64_hmac_of_timestamp_method_path_and_body() {
        // HMAC-SHA256("secret", "2020-12-08T09:08:57.715ZGET/api/v5/account/balance"),
        // computed independently with Python's hmac module.
        let signature = okx_sign(
            b"secret",
            "2020-12-08T09:08:57.715Z",
            "GET",
            "/api/v5/account/balance",
            "",
        );
        let expected = base64::engine::general_purpose::STANDARD.encode(hmac_digest(
            Algorithm::Sha256,
            b"secret",
            &[b"2020-12-08T09:08:57.715ZGET/api/v5/account/balance"],
        ));
        assert_eq!(signature, expected);
        assert_eq!(signature.len(), 44);
    }

    #[test]
    fn okx_timestamps_have_milliseconds_and_z() {
        let at = Timestamp(1_607_418_537_715_123);
        assert_eq!(okx_timestamp(at), "2020-12-08T09:08:57.715Z");
    }

    #[test]
    fn symbols_map_to_okx_instruments() {
        assert_eq!(okx_instrument("BTCUSDT"), "BTC-USDT");
        assert_eq!(okx_instrument("ETHBTC"), "ETH-BTC");
        assert_eq!(okx_instrument("BTC-USDT-SWAP"), "BTC-USDT-SWAP");
        assert_eq!(okx_instrument("USDT"), "USDT");
    }

    #[test]
    fn okx_order_details_are_read_with_their_fill() {
        // The shape of OKX's "Get order details" answer (fields trimmed to those read and a
        // few beside them).
        let filled = br#"{"code":"0","msg":"","data":[{"instType":"SPOT","instId":"BTC-USDT","ccy":"","ordId":"680800019749904384","clOrdId":"w1","tag":"","px":"37000","sz":"0.02","pnl":"0","ordType":"limit","side":"buy","posSide":"net","tdMode":"cash","accFillSz":"0.02","fillPx":"36999.5","tradeId":"12345","fillSz":"0.01","fillTime":"1708587373361","avgPx":"36999.75","state":"filled","lever":"","fee":"-0.00002","feeCcy":"BTC","rebate":"0","rebateCcy":"USDT","uTime":"1708587373362","cTime":"1708587373361"}]}"#;
        let order = read_okx_order(filled).expect("readable").expect("found");
        assert_eq!(order.venue_order_id, "680800019749904384");
        assert_eq!(
            order.final_fill(),
            Some((
                Amount::parse("0.02").expect("amount"),
                Amount::parse("36999.75").ok()
            ))
        );
        let live = br#"{"code":"0","msg":"","data":[{"ordId":"1","state":"live","accFillSz":"0","avgPx":""}]}"#;
        let order = read_okx_order(live).expect("readable").expect("found");
        assert_eq!(order.state, OkxOrderState::Open("live".into()));
        assert_eq!(order.final_fill(), None);
        let canceled = br#"{"code":"0","msg":"","data":[{"ordId":"1","state":"canceled","accFillSz":"0","avgPx":""}]}"#;
        let order = read_okx_order(canceled).expect("readable").expect("found");
        assert_eq!(order.final_fill(), Some((Amount::ZERO, None)));
        let missing = br#"{"code":"51603","msg":"Order does not exist","data":[]}"#;
        assert_eq!(read_okx_order(missing).expect("readable"), None);
        let strange = br#"{"code":"0","msg":"","data":[{"ordId":"1","state":"exploded"}]}"#;
        assert!(matches!(
            read_okx_order(strange),
            Err(ExecutionError::Unreadable(_))
        ));
    }

    #[test]
    fn okx_answers_are_read_as_placements_or_refusals() {
        let ok = br#"{"code":"0","msg":"","data":[{"clOrdId":"w1","ordId":"312269865356374016","tag":"","sCode":"0","sMsg":""}]}"#;
        assert_eq!(
            read_okx_answer(ok).expect("placed"),
            Placement {
                venue_order_id: "312269865356374016".into(),
                filled: None
            }
        );
        let refused = br#"{"code":"1","msg":"Operation failed.","data":[{"clOrdId":"w1","ordId":"","tag":"","sCode":"51008","sMsg":"Order failed. Insufficient USDT balance in account."}]}"#;
        match read_okx_answer(refused) {
            Err(ExecutionError::Refused { code, message }) => {
                assert_eq!(code, "51008");
                assert!(message.contains("Insufficient"));
            }
            other => panic!("{other:?}"),
        }
        let bad_sign = br#"{"code":"50113","msg":"Invalid Sign","data":[]}"#;
        assert!(matches!(
            read_okx_answer(bad_sign),
            Err(ExecutionError::Refused { code, .. }) if code == "50113"
        ));
        assert!(matches!(
            read_okx_answer(b"<html>"),
            Err(ExecutionError::Unreadable(_))
        ));
    }
}
