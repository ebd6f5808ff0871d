//! Refract checkout-bot messages (seed 001), parsed from bytes to a [`RefractMessage`]: the
//! labelled-line text, a Discord execute-webhook body (JSON or multipart) and flat JSON all give
//! the same order. Pure: no I/O, no storage, and no input makes it panic.

pub mod discord;
pub mod message;

use serde_json::Value;

pub use self::discord::{
    is_discord_body, multipart_boundary, parse_discord, payload_json, strip_markdown,
    MultipartError,
};
pub use self::message::{
    parse_flat_json, parse_text, ChangedField, FieldChange, OrderField, OrderStatus, ParseError,
    Price, RefractMessage, RefractOrder, StatusOrigin,
};

/// Parses a request body as it arrived. `multipart/form-data` is read through its
/// `payload_json` part; a body that is JSON (by content type, or by starting with `{` or `[`,
/// since Refract's default content type is `text/plain`) is a Discord body or flat JSON;
/// anything else is the text format.
pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<RefractMessage, ParseError> {
    if let Some(content_type) = content_type.filter(|ct| is_multipart(ct)) {
        let json = payload_json(content_type, body).map_err(ParseError::Multipart)?;
        return parse_json(json);
    }
    let text = std::str::from_utf8(body).map_err(|_| ParseError::NotUtf8)?;
    let text = text.trim_start_matches('\u{feff}');
    let start = text.trim_start();
    if start.is_empty() {
        return Err(ParseError::Empty);
    }
    let json_type = content_type.is_some_and(|ct| media_type(ct).ends_with("json"));
    if json_type || start.starts_with('{') || start.starts_with('[') {
        parse_json(text.as_bytes())
    } else {
        parse_text(text)
    }
}

/// Parses JSON: a Discord body, flat JSON, or a JSON string holding the text format.
pub fn parse_json(json: &[u8]) -> Result<RefractMessage, ParseError> {
    let value: Value = serde_json::from_slice(json).map_err(ParseError::Json)?;
    match &value {
        Value::Object(object) if is_discord_body(object) => parse_discord(object),
        Value::Object(object) => parse_flat_json(object),
        Value::String(text) => parse_text(text),
        Value::Array(_) => Err(ParseError::NotAnObject("an array")),
        Value::Number(_) => Err(ParseError::NotAnObject("a number")),
        Value::Bool(_) => Err(ParseError::NotAnObject("a boolean")),
        Value::Null => Err(ParseError::NotAnObject("null")),
    }
}

fn media_type(content_type: &str) -> String {
    let media_type = content_type.split(';').next().unwrap_or_default();
    media_type.trim().to_ascii_lowercase()
}

fn is_multipart(content_type: &str) -> bool {
    media_type(content_type) == "multipart/form-data"
}
