//! The response bodies seed 002 shows, built as values: success
//! `{"code":200,"message":…,"data":{"eventType":…,"pageId"|"shopId":…},"status":"success"}` and
//! error `{"code":"VAL_002","message":…,"status":"error"}`. Keys stay in the seed's order
//! (serde_json keeps insertion order here), so the serialized bytes match the seed's.

use serde::Deserialize;
use serde_json::{json, Value};

use super::PancakeError;

/// The language of the replies' messages: Vietnamese, as in the seed, unless set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum Language {
    #[default]
    #[serde(rename = "vi")]
    Vietnamese,
    #[serde(rename = "en")]
    English,
}

impl Language {
    /// `vi` or `en`, any case, a region tolerated (`vi-VN`).
    pub fn parse(tag: &str) -> Option<Self> {
        let primary = tag.trim().split(['-', '_']).next().unwrap_or_default();
        match primary.to_ascii_lowercase().as_str() {
            "vi" => Some(Self::Vietnamese),
            "en" => Some(Self::English),
            _ => None,
        }
    }
}

/// The seed's success message.
pub const SUCCESS_VI: &str = "Webhook đã được nhận và xử lý thành công";
pub const SUCCESS_EN: &str = "Webhook received and processed successfully";
/// The seed's `VAL_002` message.
pub const INVALID_JSON_VI: &str = "Dữ liệu gửi lên không đúng định dạng JSON";
pub const INVALID_JSON_EN: &str = "The request body is not valid JSON";
/// `VAL_001`, followed by `: ` and the field at fault.
pub const INVALID_DATA_VI: &str = "Dữ liệu gửi lên thiếu hoặc sai trường bắt buộc";
pub const INVALID_DATA_EN: &str = "The request body is missing a required field or has it wrong";

/// Which id a route's envelope carries and its reply echoes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerField {
    /// `pageId`, on `/api/v1/pancake/webhook`.
    PageId,
    /// `shopId`, on `/api/v1/pancake-pos/webhook`.
    ShopId,
}

impl OwnerField {
    pub fn key(self) -> &'static str {
        match self {
            Self::PageId => "pageId",
            Self::ShopId => "shopId",
        }
    }

    /// Where it sits in the seed's envelope.
    pub fn payload_path(self) -> &'static str {
        match self {
            Self::PageId => "payload.pageId",
            Self::ShopId => "payload.shopId",
        }
    }
}

/// `200` with the event type and the page or shop id as sent (`null` when the body named
/// none). Duplicates and ignored events get the same body: the seed always answers 200 once a
/// webhook is received, so that Pancake does not retry.
pub fn success(language: Language, event_type: &str, owner: OwnerField, owner_id: Value) -> Value {
    let message = match language {
        Language::Vietnamese => SUCCESS_VI,
        Language::English => SUCCESS_EN,
    };
    let mut data = serde_json::Map::new();
    data.insert("eventType".to_owned(), Value::from(event_type));
    data.insert(owner.key().to_owned(), owner_id);
    json!({
        "code": 200,
        "message": message,
        "data": data,
        "status": "success",
    })
}

/// The error body for a body that cannot be read, sent with [`PancakeError::status`].
pub fn error(language: Language, error: &PancakeError) -> Value {
    let code = error.code();
    let message = match (code, language, error.field()) {
        ("VAL_002", Language::Vietnamese, _) => INVALID_JSON_VI.to_owned(),
        ("VAL_002", Language::English, _) => INVALID_JSON_EN.to_owned(),
        (_, Language::Vietnamese, Some(field)) => format!("{INVALID_DATA_VI}: {field}"),
        (_, Language::English, Some(field)) => format!("{INVALID_DATA_EN}: {field}"),
        (_, Language::Vietnamese, None) => INVALID_DATA_VI.to_owned(),
        (_, Language::English, None) => INVALID_DATA_EN.to_owned(),
    };
    json!({
        "code": code,
        "message": message,
        "status": "error",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_parse_from_tags() {
        assert_eq!(Language::parse("vi"), Some(Language::Vietnamese));
        assert_eq!(Language::parse("EN"), Some(Language::English));
        assert_eq!(Language::parse("vi-VN"), Some(Language::Vietnamese));
        assert_eq!(Language::parse("pt"), None);
        assert_eq!(Language::default(), Language::Vietnamese);
        let parsed: Language = serde_json::from_str("\"en\"").expect("language");
        assert_eq!(parsed, Language::English);
    }
}
