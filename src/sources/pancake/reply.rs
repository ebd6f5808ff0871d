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
    error_body(error.code(), &message(language, error))
}

/// The message of [`error`]'s body: the seed's `VAL_002` sentence, or `VAL_001`'s naming the
/// field at fault.
pub fn message(language: Language, error: &PancakeError) -> String {
    match (error.code(), language, error.field()) {
        ("VAL_002", _, _) => invalid_json(language).to_owned(),
        (_, Language::Vietnamese, Some(field)) => format!("{INVALID_DATA_VI}: {field}"),
        (_, Language::English, Some(field)) => format!("{INVALID_DATA_EN}: {field}"),
        (_, Language::Vietnamese, None) => INVALID_DATA_VI.to_owned(),
        (_, Language::English, None) => INVALID_DATA_EN.to_owned(),
    }
}

/// The seed's `VAL_002` sentence: the body is not JSON.
pub fn invalid_json(language: Language) -> &'static str {
    match language {
        Language::Vietnamese => INVALID_JSON_VI,
        Language::English => INVALID_JSON_EN,
    }
}

/// The seed's error layout for any code and message, keys in the seed's order.
pub fn error_body(code: &str, message: &str) -> Value {
    json!({
        "code": code,
        "message": message,
        "status": "error",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::pancake::{parse_pancake, parse_pos, PosKind};

    /// Seed 002's "Success Response (200 OK)", byte for byte.
    const SEED_SUCCESS: &str = r#"{
  "code": 200,
  "message": "Webhook đã được nhận và xử lý thành công",
  "data": {
    "eventType": "order_created",
    "pageId": "123456789"
  },
  "status": "success"
}"#;

    /// Seed 002's "Error Response (400 Bad Request)", byte for byte.
    const SEED_ERROR: &str = r#"{
  "code": "VAL_002",
  "message": "Dữ liệu gửi lên không đúng định dạng JSON",
  "status": "error"
}"#;

    fn pretty(value: &Value) -> String {
        serde_json::to_string_pretty(value).expect("serializable")
    }

    #[test]
    fn the_success_body_is_the_seeds_byte_for_byte() {
        let body = success(
            Language::Vietnamese,
            "order_created",
            OwnerField::PageId,
            Value::from("123456789"),
        );
        assert_eq!(pretty(&body), SEED_SUCCESS);
        assert_eq!(
            body.to_string(),
            r#"{"code":200,"message":"Webhook đã được nhận và xử lý thành công","data":{"eventType":"order_created","pageId":"123456789"},"status":"success"}"#
        );
        let event = parse_pancake(
            br#"{"payload":{"eventType":"order_created","pageId":"123456789","data":{}}}"#,
        )
        .expect("event");
        assert_eq!(pretty(&event.reply(Language::default())), SEED_SUCCESS);
    }

    #[test]
    fn the_invalid_json_body_is_the_seeds_byte_for_byte() {
        let not_json = parse_pancake(b"{\"payload\": {").expect_err("not JSON");
        assert_eq!(not_json.code(), "VAL_002");
        assert_eq!(pretty(&error(Language::Vietnamese, &not_json)), SEED_ERROR);
        let pos = parse_pos(b"not json", Some(PosKind::Orders)).expect_err("not JSON");
        assert_eq!(pretty(&error(Language::Vietnamese, &pos)), SEED_ERROR);
        let empty = parse_pos(b"", None).expect_err("empty");
        assert_eq!(
            error(Language::Vietnamese, &empty).to_string(),
            r#"{"code":"VAL_002","message":"Dữ liệu gửi lên không đúng định dạng JSON","status":"error"}"#
        );
    }

    #[test]
    fn english_bodies_keep_the_seeds_shape() {
        let body = success(
            Language::English,
            "order_created",
            OwnerField::ShopId,
            Value::from(123),
        );
        assert_eq!(
            pretty(&body),
            r#"{
  "code": 200,
  "message": "Webhook received and processed successfully",
  "data": {
    "eventType": "order_created",
    "shopId": 123
  },
  "status": "success"
}"#
        );
        let not_json = parse_pancake(b"<xml/>").expect_err("not JSON");
        assert_eq!(
            error(Language::English, &not_json).to_string(),
            r#"{"code":"VAL_002","message":"The request body is not valid JSON","status":"error"}"#
        );
    }

    #[test]
    fn a_missing_field_answers_val_001_naming_it() {
        let missing =
            parse_pancake(br#"{"payload":{"eventType":"order_created"}}"#).expect_err("no page id");
        assert_eq!(
            error(Language::Vietnamese, &missing).to_string(),
            r#"{"code":"VAL_001","message":"Dữ liệu gửi lên thiếu hoặc sai trường bắt buộc: payload.pageId","status":"error"}"#
        );
        assert_eq!(
            error(Language::English, &missing).to_string(),
            r#"{"code":"VAL_001","message":"The request body is missing a required field or has it wrong: payload.pageId","status":"error"}"#
        );
        let no_kind = parse_pos(br#"{"id":1}"#, None).expect_err("no kind");
        assert_eq!(
            error(Language::English, &no_kind)["message"],
            "The request body is missing a required field or has it wrong: payload.eventType"
        );
    }

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
