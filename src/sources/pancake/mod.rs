//! Pancake (pages.fm) and Pancake POS (pos.pages.fm), seed 002: reads a webhook body into the
//! collection changes it asks for, with a dedup key and an ordering guard, and builds the
//! replies the seed specifies. Pure: bytes in, values out. [`source`] makes the two providers
//! of these parsers, and [`ledger`] the tables the changes are written to. Invariant: an event
//! type nobody handles is an [`Ignored`] effect, never an error.

pub mod envelope;
pub mod ledger;
pub mod pos;
pub mod reply;
pub mod source;

use std::cmp::Ordering;

use axum::http::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};
use thiserror::Error;

pub use self::envelope::{parse_pancake, read_pancake, PancakeEvent, PancakeEventType};
pub use self::pos::{
    parse_pos, read_pos, PosAmount, PosEvent, PosEventType, PosKind, PosMoney, PosOrderStatus,
};
pub use self::reply::{Language, OwnerField};
pub use self::source::{PancakeProvider, PancakeSettings, PancakeSource, Product};
use super::json::{type_name, Fields};
use super::NormalizeError;
use crate::clock::Timestamp;
use crate::ledger::{check_id, TextError};

/// Seed 002's collections, one per kind of object.
pub const FB_CONVERSATION: &str = "fb_conversation";
pub const FB_MESSAGE: &str = "fb_message";
pub const FB_CUSTOMER: &str = "fb_customer";
pub const PC_ORDER: &str = "pc_order";
pub const PC_POS_ORDER: &str = "pc_pos_order";
pub const PC_POS_PRODUCT: &str = "pc_pos_product";
pub const PC_POS_CUSTOMER: &str = "pc_pos_customer";
pub const PC_POS_VARIATION: &str = "pc_pos_variation";

/// Which of the two layouts a body has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Seed 002's `{"payload": {"eventType", "pageId" | "shopId", "data", "timestamp"},
    /// "signature"}`.
    SeedEnvelope,
    /// What the provider really posts: Pancake's `{"page_id", "event_type", "request_id",
    /// "timestamp", "data"}`, or Pancake POS's bare object (an order as its API returns it).
    Native,
}

/// One write a ledger writer applies, to the document keyed by (`collection`, `id`), or by
/// (`collection`, `owner`, `id`) for POS orders, whose ids count per shop.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionChange {
    pub collection: &'static str,
    /// The page or shop the object belongs to, when the body says. Pancake's conversation and
    /// message ids already embed the page id, and POS customer, product and variation ids are
    /// UUIDs; only a POS order id is a per-shop counter, so orders always carry their shop.
    pub owner: Option<String>,
    /// The object's own id, as text (POS order ids are JSON numbers).
    pub id: String,
    /// The object as sent, unchanged: amounts stay the integers Pancake sent.
    pub document: Value,
    pub op: ChangeOp,
    /// Apply only when [`decide`] says so against the guard stored with the document.
    pub guard: Option<Guard>,
}

/// How a change writes its document. Every op creates the document when it is absent and
/// otherwise merges its top-level keys into the stored one: Pancake often sends part of an
/// object (a messaging event's conversation lacks fields a conversation event has), and a
/// partial object must not erase what a fuller one stored.
#[derive(Debug, Clone, PartialEq)]
pub enum ChangeOp {
    Upsert,
    /// Also sets these stock levels on the variation, absolute values as Pancake counts them
    /// (`remain_quantity`, what can still be sold), never deltas.
    StockChange {
        levels: Vec<StockLevel>,
    },
    /// Also adds (`status`, `at`) to the order's status history, even when the guard makes the
    /// document write stale (a late event still happened), but not when the history's row
    /// just before `at` already has this status: a bare order is posted on every update, and
    /// adds a row only when its status changed. `at: None`: the time the delivery arrived.
    StatusHistory {
        status: PosOrderStatus,
        at: Option<Timestamp>,
    },
}

/// A variation's sellable stock, in one warehouse or (`warehouse_id: None`) in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockLevel {
    pub warehouse_id: Option<String>,
    pub remain_quantity: i64,
}

/// What orders updates of one object: Pancake's conversation `version`, which only grows, or
/// a POS object's `updated_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Guard {
    Version(u64),
    UpdatedAt(Timestamp),
}

impl Guard {
    /// `None` when the two guards are of different kinds and so say nothing about each other.
    pub fn compare(&self, other: &Guard) -> Option<Ordering> {
        match (self, other) {
            (Self::Version(a), Self::Version(b)) => Some(a.cmp(b)),
            (Self::UpdatedAt(a), Self::UpdatedAt(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }
}

/// Whether an incoming change may overwrite what is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Apply,
    /// The stored document is as new or newer: a late or repeated update.
    Stale,
}

/// An update applies only when it is newer than the stored one. Without a guard on either side,
/// or with guards of different kinds, nothing orders them, and the update applies.
pub fn decide(incoming: Option<&Guard>, stored: Option<&Guard>) -> Decision {
    match (incoming, stored) {
        (Some(incoming), Some(stored)) => match incoming.compare(stored) {
            Some(Ordering::Less | Ordering::Equal) => Decision::Stale,
            Some(Ordering::Greater) | None => Decision::Apply,
        },
        _ => Decision::Apply,
    }
}

/// What an event asks of the ledger.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Changes(Vec<CollectionChange>),
    /// Genuine and stored, acknowledged with the usual success body, but nothing to write.
    Ignored(Ignored),
}

impl Effect {
    /// The changes; none when ignored.
    pub fn changes(&self) -> &[CollectionChange] {
        match self {
            Self::Changes(changes) => changes,
            Self::Ignored(_) => &[],
        }
    }
}

/// Why an event writes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// An event type this module does not know.
    UnknownEventType,
    /// A known event with no collection in seed 002 (Pancake's `post`, `subscription`,
    /// `connect_status`).
    NotStored,
    /// The event's data names no object (the seed's curl examples send `"data": {}`).
    NoObjectId,
}

impl Ignored {
    /// A sentence for the delivery's record, naming the event type.
    pub fn reason(self, event_type: &str) -> String {
        match self {
            Self::UnknownEventType => format!("{event_type} is not a Pancake event Wharf handles"),
            Self::NotStored => format!("no seed 002 collection stores {event_type} events"),
            Self::NoObjectId => format!("the {event_type} data names no object id"),
        }
    }
}

/// Why a body cannot be read. Each maps to one of the seed's error codes ([`Self::code`]).
#[derive(Debug, Error)]
pub enum PancakeError {
    #[error("the body is empty")]
    EmptyBody,
    #[error("the body is not valid UTF-8")]
    NotUtf8,
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(#[source] serde_json::Error),
    #[error("the payload has no {0}")]
    MissingField(String),
    #[error("{field} must be {expected}, found {found}")]
    WrongType {
        field: String,
        expected: &'static str,
        found: &'static str,
    },
    /// A time that is neither RFC 3339, Pancake's `YYYY-MM-DDTHH:MM:SS[.ffffff]` (UTC), nor
    /// unix seconds or milliseconds.
    #[error("{field} is not a time Wharf can read: {text:?}")]
    BadTime { field: String, text: String },
    /// An id that cannot be a key: too long, or holding a NUL.
    #[error("{field} {reason}")]
    BadId { field: String, reason: TextError },
    /// A document the ledger cannot store (a NUL, which `JSONB` cannot hold).
    #[error(transparent)]
    Field(#[from] NormalizeError),
    /// A bare POS object posted where the route does not say what it is.
    #[error(
        "a body without seed 002's payload envelope must be posted to \
         /api/v1/pancake-pos/webhook/{{orders|customers|products|variations}}"
    )]
    NoPosKind,
}

impl PancakeError {
    /// The seed's error code: `VAL_002` when the body is not JSON at all (the seed's example),
    /// `VAL_001` when it is JSON without what the seed requires.
    pub fn code(&self) -> &'static str {
        match self {
            Self::EmptyBody | Self::NotUtf8 | Self::InvalidJson(_) => "VAL_002",
            _ => "VAL_001",
        }
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::BAD_REQUEST
    }

    /// The field at fault, dotted as in the payload, for `VAL_001`'s message.
    pub fn field(&self) -> Option<String> {
        match self {
            Self::EmptyBody | Self::NotUtf8 | Self::InvalidJson(_) => None,
            Self::MissingField(field) => Some(field.clone()),
            Self::WrongType { field, .. }
            | Self::BadTime { field, .. }
            | Self::BadId { field, .. } => Some(field.clone()),
            Self::NoPosKind => Some("payload.eventType".to_owned()),
            Self::Field(error) => match error {
                NormalizeError::MissingField(field) => Some((*field).to_owned()),
                NormalizeError::WrongType { field, .. }
                | NormalizeError::Money { field, .. }
                | NormalizeError::OutOfRange { field, .. }
                | NormalizeError::BadId { field, .. }
                | NormalizeError::BadText { field, .. } => Some(field.clone()),
                NormalizeError::Json(_)
                | NormalizeError::Invalid(_)
                | NormalizeError::Transient(_) => None,
            },
        }
    }
}

/// Parses a body that must be a JSON object. Depth and duplicate keys are checked by the
/// ingress before any source reads a body.
fn parse_object(body: &[u8]) -> Result<Value, PancakeError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(PancakeError::EmptyBody);
    }
    if std::str::from_utf8(body).is_err() {
        return Err(PancakeError::NotUtf8);
    }
    let value: Value = serde_json::from_slice(body).map_err(PancakeError::InvalidJson)?;
    check_object(&value)?;
    Ok(value)
}

/// Refuses a body that is JSON but not an object.
fn check_object(value: &Value) -> Result<(), PancakeError> {
    if value.is_object() {
        Ok(())
    } else {
        Err(wrong_type("body", "an object", value))
    }
}

fn missing(field: &str) -> PancakeError {
    PancakeError::MissingField(field.to_owned())
}

/// A dotted payload name: `key` inside `prefix`, or `key` alone at the top level.
fn path(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

fn wrong_type(field: impl Into<String>, expected: &'static str, found: &Value) -> PancakeError {
    PancakeError::WrongType {
        field: field.into(),
        expected,
        found: type_name(found),
    }
}

/// The value at `key` of an object, `None` when absent or `null`.
fn present<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    value.get(key).filter(|found| !found.is_null())
}

/// The object an event is about: `data.<name>` when the data wraps it, else the data itself.
/// Returns the object and its dotted name in the payload.
fn object_in<'a>(data: &'a Value, data_name: &str, name: &str) -> (&'a Value, String) {
    match data.get(name) {
        Some(inner) if inner.is_object() => (inner, path(data_name, name)),
        _ => (data, data_name.to_owned()),
    }
}

/// An id: a string (trimmed) or a number (its exact text) that fits a key. Absent, `null` and
/// blank are `None`.
fn id(value: Option<&Value>, field: &str) -> Result<Option<String>, PancakeError> {
    let text = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(text)) => text.trim().to_owned(),
        Some(Value::Number(number)) => number.to_string(),
        Some(other) => return Err(wrong_type(field, "a string or number", other)),
    };
    if text.is_empty() {
        return Ok(None);
    }
    check_id(&text).map_err(|reason| PancakeError::BadId {
        field: field.to_owned(),
        reason,
    })?;
    Ok(Some(text))
}

/// An object's id: `id`, else `<name>_id` (`variation_id` in an inventory update). `None` when
/// the object names none.
fn object_id(
    object: &Value,
    object_name: &str,
    name: &str,
) -> Result<Option<String>, PancakeError> {
    if let Some(found) = id(object.get("id"), &path(object_name, "id"))? {
        return Ok(Some(found));
    }
    let key = format!("{name}_id");
    id(object.get(&key), &path(object_name, &key))
}

/// Refuses a document the ledger cannot store (a NUL anywhere, which `JSONB` cannot hold).
fn checked_document(object: &Value, field_name: &str) -> Result<Value, PancakeError> {
    if object.is_object() {
        Fields::object(object, field_name)?.check_no_nul()?;
    }
    Ok(object.clone())
}

/// A whole number, from a JSON integer, a number with only zeros after the point, or a string
/// of digits. Absent and `null` are `None`.
fn integer(value: Option<&Value>, field: &str) -> Result<Option<i64>, PancakeError> {
    let expected = "an integer";
    let Some(value) = value.filter(|value| !value.is_null()) else {
        return Ok(None);
    };
    let text = match value {
        Value::Number(number) => number.to_string(),
        Value::String(text) => text.trim().to_owned(),
        other => return Err(wrong_type(field, expected, other)),
    };
    let whole = match text.split_once('.') {
        Some((whole, fraction)) if fraction.bytes().all(|b| b == b'0') => whole,
        Some(_) => return Err(wrong_type(field, expected, value)),
        None => text.as_str(),
    };
    whole
        .parse::<i64>()
        .map(Some)
        .map_err(|_| wrong_type(field, expected, value))
}

/// Unix times at or above this are milliseconds: as seconds they would be past the year 5000.
const MILLIS_THRESHOLD: i64 = 100_000_000_000;

/// A time: RFC 3339; Pancake's naive `2026-03-09T01:45:58.013616` (and with a space instead of
/// the `T`), which is UTC; or unix seconds or milliseconds, as a number or digits.
fn time(value: Option<&Value>, field: &str) -> Result<Option<Timestamp>, PancakeError> {
    let Some(value) = value.filter(|value| !value.is_null()) else {
        return Ok(None);
    };
    let text = match value {
        Value::Number(number) => number.to_string(),
        Value::String(text) => text.trim().to_owned(),
        other => return Err(wrong_type(field, "a time", other)),
    };
    parse_time(&text).map(Some).ok_or(PancakeError::BadTime {
        field: field.to_owned(),
        text,
    })
}

fn parse_time(text: &str) -> Option<Timestamp> {
    if let Some(parsed) = Timestamp::parse_rfc3339(text) {
        return Some(parsed);
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(naive) = chrono::NaiveDateTime::parse_from_str(text, format) {
            return Some(Timestamp(naive.and_utc().timestamp_micros()));
        }
    }
    let number: i64 = text.parse().ok()?;
    if number.abs() >= MILLIS_THRESHOLD {
        Some(Timestamp(number.saturating_mul(1_000)))
    } else {
        Some(Timestamp::from_unix_seconds(number))
    }
}

/// Hex SHA-256 of lines of key material, for dedup keys that must not grow with the payload.
fn digest(lines: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for line in lines {
        hasher.update(line.as_bytes());
        hasher.update(b"\n");
    }
    hex::encode(hasher.finalize())
}

/// A value's digest in its compact form: the same for a retry of the same body whatever its
/// whitespace (numbers keep their text, keys their order).
fn value_digest(value: &Value) -> String {
    digest(&[&value.to_string()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_newer_guard_applies() {
        let v = |n| Some(Guard::Version(n));
        assert_eq!(decide(v(5).as_ref(), v(4).as_ref()), Decision::Apply);
        assert_eq!(decide(v(4).as_ref(), v(4).as_ref()), Decision::Stale);
        assert_eq!(decide(v(3).as_ref(), v(4).as_ref()), Decision::Stale);
        assert_eq!(decide(None, v(4).as_ref()), Decision::Apply);
        assert_eq!(decide(v(1).as_ref(), None), Decision::Apply);
        let at = |s| Some(Guard::UpdatedAt(Timestamp::from_unix_seconds(s)));
        assert_eq!(decide(at(10).as_ref(), at(9).as_ref()), Decision::Apply);
        assert_eq!(decide(at(9).as_ref(), at(10).as_ref()), Decision::Stale);
        assert_eq!(
            decide(v(1).as_ref(), at(10).as_ref()),
            Decision::Apply,
            "guards of different kinds do not order each other"
        );
    }

    #[test]
    fn pancake_times_parse_in_every_form_it_sends() {
        let micros = |text: &str| parse_time(text).map(Timestamp::micros);
        let base = 1_773_020_758_000_000; // 2026-03-09T01:45:58Z
        assert_eq!(micros("2026-03-09T01:45:58.013616"), Some(base + 13_616));
        assert_eq!(micros("2026-03-09T01:45:58"), Some(base));
        assert_eq!(micros("2026-03-09 01:45:58"), Some(base));
        assert_eq!(micros("2026-03-09T08:45:58+07:00"), Some(base));
        assert_eq!(micros("1773020758"), Some(base));
        assert_eq!(micros("1773020758000"), Some(base));
        assert_eq!(micros("yesterday"), None);
    }

    #[test]
    fn integers_are_whole_numbers_in_any_spelling() {
        let read = |raw: &str| {
            let value: Value = serde_json::from_str(raw).expect("json");
            integer(Some(&value), "x").ok().flatten()
        };
        assert_eq!(read("150000"), Some(150_000));
        assert_eq!(read("150000.00"), Some(150_000));
        assert_eq!(read("\"150000\""), Some(150_000));
        assert_eq!(read("-5"), Some(-5));
        assert_eq!(read("null"), None);
        let fractional: Value = serde_json::from_str("1.5").expect("json");
        assert!(matches!(
            integer(Some(&fractional), "data.cod"),
            Err(PancakeError::WrongType { field, expected: "an integer", found: "number" })
                if field == "data.cod"
        ));
    }

    #[test]
    fn errors_carry_the_seed_codes() {
        assert_eq!(PancakeError::EmptyBody.code(), "VAL_002");
        assert_eq!(PancakeError::NotUtf8.code(), "VAL_002");
        assert_eq!(missing("payload.pageId").code(), "VAL_001");
        assert_eq!(PancakeError::NoPosKind.code(), "VAL_001");
        assert_eq!(
            missing("payload.pageId").field().as_deref(),
            Some("payload.pageId")
        );
        assert_eq!(PancakeError::EmptyBody.status(), StatusCode::BAD_REQUEST);
    }
}
