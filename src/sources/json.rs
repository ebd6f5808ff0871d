//! Reading provider JSON: a cheap nesting-depth check that runs before any parser, and lenient
//! accessors for fields that providers send as numbers or strings.

use serde_json::Value;

use super::{IdentifyError, NormalizeError};
use crate::clock::Timestamp;
use crate::ledger::{Currency, Money};

/// Deepest nesting of arrays and objects in `body`, scanning bytes only (strings skipped), and
/// stopping early once `limit` is passed: a hostile body costs one linear pass, no allocation.
pub fn exceeds_depth(body: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in body {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Parses a JSON body, naming empty and non-UTF-8 bodies apart from syntax errors.
pub fn parse_body(body: &[u8]) -> Result<Value, IdentifyError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(IdentifyError::EmptyBody);
    }
    if std::str::from_utf8(body).is_err() {
        return Err(IdentifyError::NotUtf8);
    }
    serde_json::from_slice(body).map_err(IdentifyError::InvalidJson)
}

/// Parses a stored body for normalization.
pub fn parse_stored(body: &[u8]) -> Result<Value, NormalizeError> {
    serde_json::from_slice(body).map_err(NormalizeError::Json)
}

/// A scalar as text: strings as they are, numbers in their exact decimal form.
pub fn text(value: &Value, pointer: &str) -> Option<String> {
    match value.pointer(pointer)? {
        Value::String(text) if !text.trim().is_empty() => Some(text.trim().to_owned()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// The first of several places a field may be.
pub fn first_text(value: &Value, pointers: &[&str]) -> Option<String> {
    pointers.iter().find_map(|pointer| text(value, pointer))
}

/// An amount at `pointer`, from a JSON number (exact, thanks to arbitrary precision) or string.
pub fn money(
    value: &Value,
    pointer: &str,
    currency: &Currency,
) -> Result<Option<Money>, NormalizeError> {
    match text(value, pointer) {
        Some(amount) => Ok(Some(Money::parse_decimal(&amount, currency.clone())?)),
        None => Ok(None),
    }
}

/// A provider time: RFC 3339, `YYYY-MM-DD HH:MM:SS` (UTC), or unix seconds.
pub fn timestamp(value: &Value, pointer: &str) -> Option<Timestamp> {
    let raw = text(value, pointer)?;
    if let Some(parsed) = Timestamp::parse_rfc3339(&raw) {
        return Some(parsed);
    }
    if let Ok(naive) = chrono::NaiveDateTime::parse_from_str(&raw, "%Y-%m-%d %H:%M:%S") {
        return Some(Timestamp(naive.and_utc().timestamp_micros()));
    }
    raw.parse::<i64>().ok().map(Timestamp::from_unix_seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_scan_counts_nesting_outside_strings() {
        assert!(!exceeds_depth(br#"{"a":[{"b":1}]}"#, 3));
        assert!(exceeds_depth(br#"{"a":[{"b":[1]}]}"#, 3));
        assert!(!exceeds_depth(br#"{"a":"[[[[[[[[\"[[[["}"#, 1));
        assert!(exceeds_depth(&[b'['; 10_000], 64));
    }

    #[test]
    fn empty_and_non_utf8_bodies_are_named() {
        assert!(matches!(parse_body(b"  \n"), Err(IdentifyError::EmptyBody)));
        assert!(matches!(
            parse_body(b"{\"a\":\"\xff\"}"),
            Err(IdentifyError::NotUtf8)
        ));
        assert!(matches!(
            parse_body(b"{\"a\":"),
            Err(IdentifyError::InvalidJson(_))
        ));
    }

    #[test]
    fn numbers_keep_their_exact_decimal_text() {
        let value: Value = serde_json::from_str(r#"{"price": 99.90, "id": 12345}"#).expect("json");
        assert_eq!(text(&value, "/price").as_deref(), Some("99.90"));
        assert_eq!(text(&value, "/id").as_deref(), Some("12345"));
    }

    #[test]
    fn provider_times_parse_in_three_forms() {
        let value: Value = serde_json::from_str(
            r#"{"a":"2024-01-05T10:30:00Z","b":"2024-01-05 10:30:00","c":1704450600}"#,
        )
        .expect("json");
        let expected = Some(Timestamp::from_unix_seconds(1_704_450_600));
        assert_eq!(timestamp(&value, "/a"), expected);
        assert_eq!(timestamp(&value, "/b"), expected);
        assert_eq!(timestamp(&value, "/c"), expected);
    }
}
