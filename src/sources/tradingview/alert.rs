//! A TradingView alert message, from bytes to an [`Alert`]. TradingView posts the alert's
//! message as the body: `application/json` when it is valid JSON, `text/plain` otherwise, so
//! the body decides which reader applies. The text form is `key=value` (or `key: value`) lines.
//! The secret a message carries is read by [`secret_in`] and never kept in an [`Alert`].

use std::collections::BTreeSet;

use serde_json::{Map, Value};
use thiserror::Error;

use super::amount::{Amount, AmountError};

/// Fields that carry the sender's secret; never read into an alert, never echoed.
pub const SECRET_FIELDS: [&str; 2] = ["passphrase", "secret"];

/// What the alert asks for, as TradingView's `{{strategy.order.action}}` or a hand-written
/// message spells it (case-insensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Buy,
    Sell,
    Long,
    Short,
    Close,
    Exit,
}

impl Action {
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "buy" => Some(Self::Buy),
            "sell" => Some(Self::Sell),
            "long" => Some(Self::Long),
            "short" => Some(Self::Short),
            "close" => Some(Self::Close),
            "exit" => Some(Self::Exit),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Buy => "buy",
            Self::Sell => "sell",
            Self::Long => "long",
            Self::Short => "short",
            Self::Close => "close",
            Self::Exit => "exit",
        }
    }

    /// The side of the order, or `None` for "flatten whatever is open".
    pub fn side(self) -> Option<Side> {
        match self {
            Self::Buy | Self::Long => Some(Side::Buy),
            Self::Sell | Self::Short => Some(Side::Sell),
            Self::Close | Self::Exit => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Buy => "buy",
            Self::Sell => "sell",
        }
    }
}

/// A validated alert: upper-case symbol, a known action, a positive price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub symbol: String,
    pub action: Action,
    pub price: Amount,
    /// The size the alert asks for (`quantity`, `qty`, `contracts`); otherwise the configured
    /// sizing decides.
    pub quantity: Option<Amount>,
    pub strategy: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AlertError {
    #[error("the alert is empty")]
    Empty,
    #[error("the alert is not valid UTF-8")]
    NotUtf8,
    #[error("the alert is not valid JSON: {0}")]
    Json(String),
    #[error("the alert is JSON but not an object")]
    NotAnObject,
    /// TradingView left `{{…}}` as written: the alert's template names a variable it does not
    /// know in that context.
    #[error("the alert has unrendered placeholders: {}", .0.join(", "))]
    Unrendered(Vec<String>),
    #[error("the alert has no {0}")]
    Missing(&'static str),
    #[error("action {0:?} is not one of buy, sell, long, short, close, exit")]
    UnknownAction(String),
    #[error("{field} is invalid: {error}")]
    Number {
        field: &'static str,
        #[source]
        error: AmountError,
    },
    #[error("{0} must be greater than zero")]
    NotPositive(&'static str),
    #[error("{field} must be {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("{0} is longer than 64 characters")]
    TooLong(&'static str),
}

/// The message's fields as text, secret fields included (callers decide).
type Fields = Vec<(String, Value)>;

fn is_json(text: &str) -> bool {
    text.trim_start().starts_with('{') || text.trim_start().starts_with('[')
}

fn fields(body: &[u8]) -> Result<Fields, AlertError> {
    let text = std::str::from_utf8(body).map_err(|_| AlertError::NotUtf8)?;
    let text = text.trim_start_matches('\u{feff}');
    if text.trim().is_empty() {
        return Err(AlertError::Empty);
    }
    if is_json(text) {
        let value: Value =
            serde_json::from_str(text).map_err(|error| AlertError::Json(error.to_string()))?;
        return match value {
            Value::Object(object) => Ok(object_fields(object)),
            _ => Err(AlertError::NotAnObject),
        };
    }
    Ok(text_fields(text))
}

fn object_fields(object: Map<String, Value>) -> Fields {
    object
        .into_iter()
        .map(|(key, value)| (key.to_ascii_lowercase(), value))
        .collect()
}

/// `key=value` or `key: value` lines; a line of several `key=value` tokens is split on spaces.
fn text_fields(text: &str) -> Fields {
    let mut fields = Vec::new();
    for line in text.lines().map(str::trim).filter(|line| !line.is_empty()) {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let pairs: Vec<&str> = if tokens.len() > 1 && tokens.iter().all(|t| t.contains('=')) {
            tokens
        } else {
            vec![line]
        };
        for pair in pairs {
            let split = pair.split_once('=').or_else(|| pair.split_once(':'));
            if let Some((key, value)) = split {
                fields.push((
                    key.trim().to_ascii_lowercase(),
                    Value::String(value.trim().to_owned()),
                ));
            }
        }
    }
    fields
}

/// The secret the message carries (`passphrase` or `secret`), if any. The body is read
/// leniently here: authentication must not depend on the rest of the alert being valid.
pub fn secret_in(body: &[u8]) -> Option<String> {
    let fields = fields(body).ok()?;
    SECRET_FIELDS.iter().find_map(|name| {
        fields.iter().find_map(|(key, value)| match value {
            Value::String(text) if key == name && !text.is_empty() => Some(text.clone()),
            _ => None,
        })
    })
}

/// The body with every secret field's value replaced by `[redacted]`, for the journal's copy;
/// `None` when it carries no secret. JSON stays JSON (rewritten, keys in their order); text
/// keeps its lines. Authentication has already read the secret from the original.
pub fn redact_secrets(body: &[u8]) -> Option<Vec<u8>> {
    secret_in(body)?;
    let text = std::str::from_utf8(body).ok()?;
    if is_json(text.trim_start_matches('\u{feff}')) {
        let Value::Object(mut object) = serde_json::from_str::<Value>(text).ok()? else {
            return None;
        };
        for (key, value) in object.iter_mut() {
            if SECRET_FIELDS.contains(&key.to_ascii_lowercase().as_str()) {
                *value = Value::String(REDACTED.to_owned());
            }
        }
        return serde_json::to_vec(&Value::Object(object)).ok();
    }
    let mut redacted = text.to_owned();
    for (key, value) in text_fields(text) {
        if let Value::String(secret) = value {
            if SECRET_FIELDS.contains(&key.as_str()) && !secret.is_empty() {
                redacted = redacted.replace(&secret, REDACTED);
            }
        }
    }
    Some(redacted.into_bytes())
}

const REDACTED: &str = "[redacted]";

/// Reads and validates an alert.
pub fn parse(body: &[u8]) -> Result<Alert, AlertError> {
    let fields = fields(body)?;
    let unrendered = placeholders(&fields);
    if !unrendered.is_empty() {
        return Err(AlertError::Unrendered(unrendered));
    }
    let get = |names: &[&str]| {
        names.iter().find_map(|name| {
            fields
                .iter()
                .find(|(key, value)| key == name && !value.is_null())
                .map(|(_, value)| value)
        })
    };
    let symbol = text(get(&["symbol", "ticker"]), "symbol")?
        .filter(|symbol| !symbol.is_empty())
        .ok_or(AlertError::Missing("symbol"))?;
    let symbol = strip_exchange(&symbol).to_ascii_uppercase();
    if symbol.chars().count() > 64 {
        return Err(AlertError::TooLong("symbol"));
    }
    let action = text(get(&["action", "side"]), "action")?
        .filter(|action| !action.is_empty())
        .ok_or(AlertError::Missing("action"))?;
    let action = Action::parse(&action).ok_or(AlertError::UnknownAction(action))?;
    let price = amount(get(&["price", "close"]), "price")?.ok_or(AlertError::Missing("price"))?;
    if !price.is_positive() {
        return Err(AlertError::NotPositive("price"));
    }
    let quantity = amount(get(&["quantity", "qty", "contracts", "size"]), "quantity")?;
    if quantity.is_some_and(|quantity| !quantity.is_positive()) {
        return Err(AlertError::NotPositive("quantity"));
    }
    let strategy = text(get(&["strategy"]), "strategy")?.filter(|s| !s.is_empty());
    if strategy.as_ref().is_some_and(|s| s.chars().count() > 64) {
        return Err(AlertError::TooLong("strategy"));
    }
    Ok(Alert {
        symbol,
        action,
        price,
        quantity,
        strategy,
    })
}

/// `BINANCE:BTCUSDT` (TradingView's `{{exchange}}:{{ticker}}`) is `BTCUSDT`.
fn strip_exchange(symbol: &str) -> &str {
    symbol.rsplit_once(':').map_or(symbol, |(_, ticker)| ticker)
}

fn text(value: Option<&Value>, field: &'static str) -> Result<Option<String>, AlertError> {
    match value {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.trim().to_owned())),
        Some(_) => Err(AlertError::WrongType {
            field,
            expected: "text",
        }),
    }
}

/// A number or numeric text; JSON numbers keep their exact digits (`arbitrary_precision`).
fn amount(value: Option<&Value>, field: &'static str) -> Result<Option<Amount>, AlertError> {
    let text = match value {
        None => return Ok(None),
        Some(Value::String(text)) if text.trim().is_empty() => return Ok(None),
        Some(Value::String(text)) => text.trim().to_owned(),
        Some(Value::Number(number)) => number.to_string(),
        Some(_) => {
            return Err(AlertError::WrongType {
                field,
                expected: "a number",
            })
        }
    };
    Amount::parse(&text)
        .map(Some)
        .map_err(|error| AlertError::Number { field, error })
}

/// Every `{{name}}` left in a non-secret value, in order of name.
fn placeholders(fields: &Fields) -> Vec<String> {
    let mut found = BTreeSet::new();
    for (key, value) in fields {
        if !SECRET_FIELDS.contains(&key.as_str()) {
            collect_placeholders(value, &mut found);
        }
    }
    found.into_iter().collect()
}

fn collect_placeholders(value: &Value, found: &mut BTreeSet<String>) {
    match value {
        Value::String(text) => {
            let mut rest = text.as_str();
            while let Some(start) = rest.find("{{") {
                let after = &rest[start + 2..];
                let Some(end) = after.find("}}") else { break };
                found.insert(format!("{{{{{}}}}}", after[..end].trim()));
                rest = &after[end + 2..];
            }
        }
        Value::Array(items) => items
            .iter()
            .for_each(|item| collect_placeholders(item, found)),
        Value::Object(object) => object
            .values()
            .for_each(|item| collect_placeholders(item, found)),
        _ => {}
    }
}

/// Seed 004's alert message, as TradingView posts it (the secret is the operator's own).
pub const SEED_ALERT: &str = r#"{
    "symbol": "BTCUSDT",
    "action": "buy",
    "price": "37000",
    "secret": "your-secret-key"
  }"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn a(text: &str) -> Amount {
        Amount::parse(text).expect("amount")
    }

    #[test]
    fn the_seed_alert_parses_without_its_secret() {
        let alert = parse(SEED_ALERT.as_bytes()).expect("alert");
        assert_eq!(
            alert,
            Alert {
                symbol: "BTCUSDT".into(),
                action: Action::Buy,
                price: a("37000"),
                quantity: None,
                strategy: None,
            }
        );
        assert_eq!(
            secret_in(SEED_ALERT.as_bytes()).as_deref(),
            Some("your-secret-key")
        );
    }

    #[test]
    fn text_alerts_read_key_value_lines_and_pairs() {
        let body = "secret=s1\nsymbol=binance:ethusdt\naction: SELL\nprice=2500.5\nqty=0.25\nstrategy=momentum v2\n";
        let alert = parse(body.as_bytes()).expect("alert");
        assert_eq!(alert.symbol, "ETHUSDT");
        assert_eq!(alert.action, Action::Sell);
        assert_eq!(alert.price, a("2500.5"));
        assert_eq!(alert.quantity, Some(a("0.25")));
        assert_eq!(alert.strategy.as_deref(), Some("momentum v2"));
        assert_eq!(secret_in(body.as_bytes()).as_deref(), Some("s1"));
        let one_line = "secret=s1 symbol=BTCUSDT action=Close price=37000";
        assert_eq!(
            parse(one_line.as_bytes()).expect("alert").action,
            Action::Close
        );
        assert_eq!(secret_in(one_line.as_bytes()).as_deref(), Some("s1"));
    }

    #[test]
    fn json_numbers_keep_their_exact_digits() {
        let body = br#"{"symbol":"BTCUSDT","action":"Long","price":37000.12345678,"quantity":0.1,"passphrase":"p"}"#;
        let alert = parse(body).expect("alert");
        assert_eq!(alert.price, a("37000.12345678"));
        assert_eq!(alert.quantity, Some(a("0.1")));
        assert_eq!(secret_in(body).as_deref(), Some("p"));
    }

    #[test]
    fn unrendered_placeholders_are_named() {
        let body = br#"{"symbol":"{{ticker}}","action":"{{strategy.order.action}}","price":"{{close}}","secret":"{{not-a-placeholder}}"}"#;
        assert_eq!(
            parse(body),
            Err(AlertError::Unrendered(vec![
                "{{close}}".into(),
                "{{strategy.order.action}}".into(),
                "{{ticker}}".into(),
            ]))
        );
        let text = b"symbol={{ticker}}\naction=buy\nprice=1";
        assert_eq!(
            parse(text),
            Err(AlertError::Unrendered(vec!["{{ticker}}".into()]))
        );
    }

    #[test]
    fn invalid_alerts_say_what_is_wrong() {
        let cases: [(&[u8], AlertError); 7] = [
            (b"", AlertError::Empty),
            (
                br#"{"action":"buy","price":"1"}"#,
                AlertError::Missing("symbol"),
            ),
            (
                br#"{"symbol":"X","price":"1"}"#,
                AlertError::Missing("action"),
            ),
            (
                br#"{"symbol":"X","action":"buy"}"#,
                AlertError::Missing("price"),
            ),
            (
                br#"{"symbol":"X","action":"hold","price":"1"}"#,
                AlertError::UnknownAction("hold".into()),
            ),
            (
                br#"{"symbol":"X","action":"buy","price":"0"}"#,
                AlertError::NotPositive("price"),
            ),
            (br#"[1]"#, AlertError::NotAnObject),
        ];
        for (body, error) in cases {
            assert_eq!(parse(body), Err(error), "{}", String::from_utf8_lossy(body));
        }
        assert!(matches!(
            parse(br#"{"symbol":"X","action":"buy","price":"1e3"}"#),
            Err(AlertError::Number { field: "price", .. })
        ));
        assert_eq!(secret_in(b"symbol=X"), None);
    }
}
