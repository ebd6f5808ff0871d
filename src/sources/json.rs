//! Reading provider JSON: a cheap nesting-depth check that runs before any parser, lenient
//! accessors for identifying a request, and strict ones ([`Fields`]) for normalizing it, which
//! name the field and the type found when a payload does not hold what the ledger needs.
//! [`parse_strict`] refuses objects that name a key twice, which parsers read differently.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Value};

use super::{IdentifyError, NormalizeError};
use crate::clock::Timestamp;
use crate::ledger::{check_id, check_text, Currency, Money, TextError};

/// A key that one JSON object holds twice, and where that object is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateKey {
    /// The key, unescaped (`"a"` and `"\u0061"` are the same key).
    pub key: String,
    /// The JSON pointer (RFC 6901) of the object holding it; empty for the top level.
    pub pointer: String,
}

impl fmt::Display for DuplicateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = if self.pointer.is_empty() {
            "the top level"
        } else {
            &self.pointer
        };
        write!(f, "key {:?} appears twice at {at}", self.key)
    }
}

/// The nesting limit when no configuration says otherwise (`limits.max_json_depth`).
pub const DEFAULT_MAX_DEPTH: usize = 64;

/// Parses a JSON body in one pass, refusing what parsers read differently. A key that one
/// object holds twice is an error: serde_json keeps the last value, other parsers the first,
/// so a signed body with a duplicate key can mean one thing to Wharf and another to whoever
/// reads it next. Nesting beyond `max_depth` is refused before the parser goes deeper, so a
/// hostile body costs at most one pass. Empty and non-UTF-8 bodies are named apart from syntax
/// errors.
///
/// Both checks are part of building the tree (a map insert that finds the key taken, a depth
/// counter), not extra passes over the body: ingest reads every JSON body once.
pub fn parse_strict(body: &[u8], max_depth: usize) -> Result<Value, IdentifyError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(IdentifyError::EmptyBody);
    }
    let Ok(text) = std::str::from_utf8(body) else {
        return Err(IdentifyError::NotUtf8);
    };
    let max_depth = max_depth.min(MAX_DEPTH);
    let mut refused = None;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let parsed = StrictValue {
        refused: &mut refused,
        depth_left: max_depth,
    }
    .deserialize(&mut deserializer)
    .and_then(|value| deserializer.end().map(|()| value));
    match (parsed, refused) {
        (Ok(value), _) => Ok(value),
        (Err(_), Some(Refusal::Duplicate(found))) => {
            Err(IdentifyError::DuplicateKey(found.into_duplicate_key()))
        }
        (Err(_), Some(Refusal::TooDeep)) => Err(IdentifyError::TooDeep { limit: max_depth }),
        (Err(error), None) => Err(IdentifyError::InvalidJson(error)),
    }
}

/// The deepest nesting any configuration may allow: serde_json stops at its 128th level on its
/// own, and that would read as a syntax error rather than as "too deep".
pub const MAX_DEPTH: usize = 126;

/// Why the strict parse stopped on a body that may be well-formed JSON.
enum Refusal {
    Duplicate(Found),
    TooDeep,
}

/// The duplicate found, with the path to its object collected innermost first as the error
/// unwinds (so a body without duplicates builds no paths at all).
struct Found {
    key: String,
    reversed_path: Vec<String>,
}

impl Found {
    fn into_duplicate_key(self) -> DuplicateKey {
        let pointer = self
            .reversed_path
            .iter()
            .rev()
            .fold(String::new(), |mut pointer, token| {
                pointer.push('/');
                pointer.push_str(&token.replace('~', "~0").replace('/', "~1"));
                pointer
            });
        DuplicateKey {
            key: self.key,
            pointer,
        }
    }
}

/// How serde_json hands over a number under `arbitrary_precision`: a one-entry map whose key
/// is this token and whose value is the number's text (serde_json's own `Value` reads it so).
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// Builds one JSON value, refusing an object that names a key twice and nesting deeper than
/// `depth_left` more levels.
struct StrictValue<'f> {
    refused: &'f mut Option<Refusal>,
    depth_left: usize,
}

impl<'f> StrictValue<'f> {
    /// Entering an array or object: one level fewer for what it holds.
    fn descend<E: de::Error>(self) -> Result<(&'f mut Option<Refusal>, usize), E> {
        match self.depth_left.checked_sub(1) {
            Some(depth_left) => Ok((self.refused, depth_left)),
            None => {
                *self.refused = Some(Refusal::TooDeep);
                Err(E::custom("nested too deep"))
            }
        }
    }
}

impl<'de> DeserializeSeed<'de> for StrictValue<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Value, A::Error> {
        let (refused, depth_left) = self.descend()?;
        let mut values = Vec::with_capacity(items.size_hint().unwrap_or(0).min(64));
        loop {
            let item = StrictValue {
                refused: &mut *refused,
                depth_left,
            };
            match items.next_element_seed(item) {
                Ok(Some(value)) => values.push(value),
                Ok(None) => return Ok(Value::Array(values)),
                Err(error) => {
                    if let Some(Refusal::Duplicate(found)) = refused.as_mut() {
                        found.reversed_path.push(values.len().to_string());
                    }
                    return Err(error);
                }
            }
        }
    }

    /// Also reached for every number: with `arbitrary_precision` serde_json hands a number over
    /// as a one-entry map holding its text, which is no nesting.
    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Value, A::Error> {
        let Some(first_key) = entries.next_key_seed(KeySeed)? else {
            self.descend::<A::Error>()?;
            return Ok(Value::Object(Map::new()));
        };
        if first_key == NUMBER_TOKEN {
            let text: Cow<'de, str> = entries.next_value_seed(KeySeed)?;
            return text
                .parse::<serde_json::Number>()
                .map(Value::Number)
                .map_err(de::Error::custom);
        }
        let (refused, depth_left) = self.descend()?;
        let mut object = Map::new();
        let mut next_key = Some(first_key);
        while let Some(key) = next_key {
            let member = StrictValue {
                refused: &mut *refused,
                depth_left,
            };
            let value = match entries.next_value_seed(member) {
                Ok(value) => value,
                Err(error) => {
                    if let Some(Refusal::Duplicate(found)) = refused.as_mut() {
                        found.reversed_path.push(key.into_owned());
                    }
                    return Err(error);
                }
            };
            match object.entry(key) {
                Entry::Vacant(vacant) => {
                    vacant.insert(value);
                }
                Entry::Occupied(taken) => {
                    *refused = Some(Refusal::Duplicate(Found {
                        key: taken.key().clone(),
                        reversed_path: Vec::new(),
                    }));
                    return Err(de::Error::custom("duplicate key"));
                }
            }
            next_key = entries.next_key_seed(KeySeed)?;
        }
        Ok(Value::Object(object))
    }
}

/// An object key (or a number's text), borrowed from the body unless it holds escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(KeySeed)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(key))
    }

    fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(key.to_owned()))
    }

    fn visit_string<E>(self, key: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(key))
    }
}

/// Parses a JSON body, naming empty and non-UTF-8 bodies apart from syntax errors; duplicate
/// keys and excessive nesting are refused as in [`parse_strict`].
pub fn parse_body(body: &[u8]) -> Result<Value, IdentifyError> {
    parse_strict(body, DEFAULT_MAX_DEPTH)
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

/// The JSON name of a value's type, for error messages.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// What a sale amount may be written as.
const AMOUNT: &str = "a number or decimal string";
/// What a text or id field may be written as.
const SCALAR: &str = "a string or number";

/// Whether `null` for an amount means "not said" or is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NullAmount {
    /// A sale always has a price: `"price": null` is a broken payload.
    Refused,
    /// A commission is absent when no affiliate took part; `null` says so.
    MeansAbsent,
}

/// A JSON value being normalized, with its name in the payload (`data`, `order`), so that every
/// error names the field as the provider wrote it. Strict where [`text`] is lenient: a field
/// that is present with the wrong type is an error, never read as absent; text is checked for
/// NUL and ids for length ([`check_id`]), amounts for range ([`Money::check_sale_amount`]).
/// Absent, `null` and blank text all mean "this event does not say".
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    value: &'a Value,
    name: String,
}

impl<'a> Fields<'a> {
    /// `value` must be an object; `name` is where it sits in the payload.
    pub fn object(value: &'a Value, name: impl Into<String>) -> Result<Self, NormalizeError> {
        let name = name.into();
        if !value.is_object() {
            return Err(NormalizeError::WrongType {
                field: name,
                expected: "an object",
                found: type_name(value),
            });
        }
        Ok(Self { value, name })
    }

    /// The whole value, as stored.
    pub fn value(&self) -> &'a Value {
        self.value
    }

    /// The dotted payload name of `pointer` (`/product/price` in `data`: `data.product.price`).
    pub fn field(&self, pointer: &str) -> String {
        format!("{}{}", self.name, pointer.replace('/', "."))
    }

    /// The value at `pointer`, `null` included; `None` when it is absent or an object or array
    /// on the way is absent or `null` (`"affiliate": null` has no commission). A scalar on the
    /// way is a type error: `"product": "Kit"` has no `price`, and reading that as "no price"
    /// would hide the mistake.
    pub fn get(&self, pointer: &str) -> Result<Option<&'a Value>, NormalizeError> {
        let mut current = self.value;
        let mut walked = 0;
        for token in pointer.split('/').skip(1) {
            let next = match current {
                Value::Null => return Ok(None),
                Value::Object(map) => map.get(token),
                Value::Array(items) => token.parse::<usize>().ok().and_then(|i| items.get(i)),
                other => {
                    let expected = if token.parse::<usize>().is_ok() {
                        "an array"
                    } else {
                        "an object"
                    };
                    return Err(NormalizeError::WrongType {
                        field: self.field(&pointer[..walked]),
                        expected,
                        found: type_name(other),
                    });
                }
            };
            let Some(next) = next else {
                return Ok(None);
            };
            current = next;
            walked += 1 + token.len();
        }
        Ok(Some(current))
    }

    /// A string (trimmed) or number (exact text) at `pointer`, before any content check.
    fn scalar(&self, pointer: &str) -> Result<Option<String>, NormalizeError> {
        match self.get(pointer)? {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => {
                let text = text.trim();
                Ok((!text.is_empty()).then(|| text.to_owned()))
            }
            Some(Value::Number(number)) => Ok(Some(number.to_string())),
            Some(other) => Err(NormalizeError::WrongType {
                field: self.field(pointer),
                expected: SCALAR,
                found: type_name(other),
            }),
        }
    }

    /// Text the ledger will store.
    pub fn text(&self, pointer: &str) -> Result<Option<String>, NormalizeError> {
        let text = self.scalar(pointer)?;
        if let Some(text) = &text {
            check_text(text).map_err(|reason| NormalizeError::BadText {
                field: self.field(pointer),
                reason,
            })?;
        }
        Ok(text)
    }

    /// An external id, or other text that becomes a key.
    pub fn id(&self, pointer: &str) -> Result<Option<String>, NormalizeError> {
        let id = self.scalar(pointer)?;
        if let Some(id) = &id {
            check_id(id).map_err(|reason| NormalizeError::BadId {
                field: self.field(pointer),
                reason,
            })?;
        }
        Ok(id)
    }

    /// The first of several places a text field may be that says something.
    pub fn first_text(&self, pointers: &[&str]) -> Result<Option<String>, NormalizeError> {
        first(pointers, |pointer| self.text(pointer))
    }

    /// The first of several places an id may be that says something.
    pub fn first_id(&self, pointers: &[&str]) -> Result<Option<String>, NormalizeError> {
        first(pointers, |pointer| self.id(pointer))
    }

    /// A currency code at `pointer`.
    pub fn currency(&self, pointer: &str) -> Result<Option<Currency>, NormalizeError> {
        self.text(pointer)?
            .map(|code| {
                Currency::parse(&code).map_err(|error| NormalizeError::Money {
                    field: self.field(pointer),
                    error,
                })
            })
            .transpose()
    }

    /// A sale amount at `pointer`, from a JSON number (exact, thanks to arbitrary precision) or
    /// a decimal string, checked with [`Money::check_sale_amount`]. Absent is `None`; a blank
    /// string is not a decimal.
    pub fn amount(
        &self,
        pointer: &str,
        currency: &Currency,
        null: NullAmount,
    ) -> Result<Option<Money>, NormalizeError> {
        let raw = match self.get(pointer)? {
            None => return Ok(None),
            Some(Value::Null) if null == NullAmount::MeansAbsent => return Ok(None),
            Some(Value::String(text)) => text.clone(),
            Some(Value::Number(number)) => number.to_string(),
            Some(other) => {
                return Err(NormalizeError::WrongType {
                    field: self.field(pointer),
                    expected: AMOUNT,
                    found: type_name(other),
                })
            }
        };
        let money = Money::parse_decimal(&raw, currency.clone()).map_err(|error| {
            NormalizeError::Money {
                field: self.field(pointer),
                error,
            }
        })?;
        money
            .check_sale_amount()
            .map_err(|error| NormalizeError::OutOfRange {
                field: self.field(pointer),
                error,
            })?;
        Ok(Some(money))
    }

    /// The first of several places an amount may be that is present; `null` counts as present.
    pub fn first_amount(
        &self,
        pointers: &[&str],
        currency: &Currency,
        null: NullAmount,
    ) -> Result<Option<Money>, NormalizeError> {
        for pointer in pointers {
            if self.get(pointer)?.is_some() {
                return self.amount(pointer, currency, null);
            }
        }
        Ok(None)
    }

    /// Refuses a NUL anywhere in this value, keys included: the value is stored whole (as the
    /// sale's `metadata`), and PostgreSQL `JSONB` cannot hold `\u0000`.
    pub fn check_no_nul(&self) -> Result<(), NormalizeError> {
        match nul_path(self.value) {
            None => Ok(()),
            Some(path) => Err(NormalizeError::BadText {
                field: format!("{}{path}", self.name),
                reason: TextError::Nul,
            }),
        }
    }
}

fn first<T>(
    pointers: &[&str],
    mut read: impl FnMut(&str) -> Result<Option<T>, NormalizeError>,
) -> Result<Option<T>, NormalizeError> {
    for pointer in pointers {
        if let Some(found) = read(pointer)? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// The dotted path (from `value`, leading dot) of the first string or key holding a NUL. Keys are
/// written escaped, so the path itself holds no NUL.
fn nul_path(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => text.contains('\0').then(String::new),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(index, item)| nul_path(item).map(|rest| format!(".{index}{rest}"))),
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            let key_path = || format!(".{}", key.escape_debug());
            if key.contains('\0') {
                return Some(key_path());
            }
            nul_path(item).map(|rest| format!("{}{rest}", key_path()))
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => None,
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
    fn nesting_is_counted_outside_strings() {
        let too_deep = |body: &[u8], limit| {
            matches!(
                parse_strict(body, limit),
                Err(IdentifyError::TooDeep { .. })
            )
        };
        assert!(!too_deep(br#"{"a":[{"b":1}]}"#, 3));
        assert!(too_deep(br#"{"a":[{"b":[1]}]}"#, 3));
        assert!(
            too_deep(br#"{"a":[{"b":{}}]}"#, 3),
            "an empty object is a level"
        );
        assert!(
            !too_deep(br#"{"a":[{"b":1.5e3}]}"#, 3),
            "a number is no level"
        );
        assert!(!too_deep(br#"{"a":"[[[[[[[[\"[[[["}"#, 1));
        assert!(too_deep(&[b'['; 10_000], 64));
        assert!(
            too_deep(&[b'['; 10_000], 100_000),
            "at most MAX_DEPTH, whatever is asked"
        );
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

    fn payload() -> Value {
        serde_json::from_str(
            r#"{"product":{"price":"9.90","name":"  ","tags":["a",{"b":1}]},"affiliate":null,
                "total":null,"subtotal":"5.00","label":"Kit"}"#,
        )
        .expect("json")
    }

    #[test]
    fn fields_name_the_path_where_a_scalar_blocks_the_way() {
        let value = payload();
        let fields = Fields::object(&value, "data").expect("object");
        assert!(matches!(
            fields.get("/label/price"),
            Err(NormalizeError::WrongType { field, expected: "an object", found: "string" })
                if field == "data.label"
        ));
        assert!(matches!(
            fields.get("/product/tags/0/x"),
            Err(NormalizeError::WrongType { field, .. }) if field == "data.product.tags.0"
        ));
        assert!(matches!(
            fields.get("/product/tags/1/b"),
            Ok(Some(Value::Number(_)))
        ));
    }

    #[test]
    fn absent_null_parent_and_blank_text_mean_not_said() {
        let value = payload();
        let fields = Fields::object(&value, "data").expect("object");
        assert_eq!(fields.text("/missing").ok(), Some(None));
        assert_eq!(fields.text("/affiliate/name").ok(), Some(None));
        assert_eq!(fields.text("/product/name").ok(), Some(None));
        assert_eq!(
            fields.first_text(&["/product/name", "/label"]).ok(),
            Some(Some("Kit".to_owned()))
        );
        let brl = Currency::brl();
        assert_eq!(
            fields
                .amount("/affiliate/commission", &brl, NullAmount::Refused)
                .ok(),
            Some(None)
        );
    }

    #[test]
    fn a_null_amount_counts_as_present_among_alternatives() {
        let value = payload();
        let fields = Fields::object(&value, "data").expect("object");
        let brl = Currency::brl();
        assert!(matches!(
            fields.first_amount(&["/total", "/subtotal"], &brl, NullAmount::Refused),
            Err(NormalizeError::WrongType { found: "null", .. })
        ));
        assert_eq!(
            fields
                .first_amount(&["/total", "/subtotal"], &brl, NullAmount::MeansAbsent)
                .ok(),
            Some(None),
            "a null that means absent decides too: it is the field the sender chose"
        );
        assert_eq!(
            fields
                .first_amount(&["/nowhere", "/subtotal"], &brl, NullAmount::Refused)
                .ok()
                .flatten()
                .map(|m| m.minor_units),
            Some(500)
        );
    }
    fn duplicate_key(body: &[u8]) -> Option<DuplicateKey> {
        match parse_strict(body, DEFAULT_MAX_DEPTH) {
            Err(IdentifyError::DuplicateKey(duplicate)) => Some(duplicate),
            _ => None,
        }
    }

    #[test]
    fn the_strict_parse_reads_what_serde_json_reads() {
        let bodies: [&[u8]; 6] = [
            br#"{"z":1,"a":[1.10,-0.0,1e400,12345678901234567890123],"m":{"x":null,"y":true}}"#,
            br#"[]"#,
            br#"  {"s":"\u00e9\n\"","n":-12.500} "#,
            b"12.50",
            br#""text""#,
            br#"{"":{"":[{},[]]}}"#,
        ];
        for body in bodies {
            let strict = parse_strict(body, DEFAULT_MAX_DEPTH).expect("valid");
            let plain: Value = serde_json::from_slice(body).expect("valid");
            assert_eq!(strict, plain, "{}", String::from_utf8_lossy(body));
            assert_eq!(
                strict.to_string(),
                plain.to_string(),
                "same order and digits"
            );
        }
        for (body, code) in [
            (&b"  "[..], "empty_body"),
            (&b"{\"a\":\"\xff\"}"[..], "invalid_utf8"),
            (&b"{\"a\":1} x"[..], "invalid_json"),
            (&b"[[[1]]]"[..], "json_too_deep"),
        ] {
            let error = parse_strict(body, 2).expect_err("refused");
            assert_eq!(error.code(), code, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn duplicate_keys_are_found_at_any_depth_with_their_object() {
        assert_eq!(
            duplicate_key(br#"{"a":1,"b":[{"c":2}],"d":{"e":null}}"#),
            None
        );
        assert_eq!(
            duplicate_key(br#"{"id":"1","id":"2"}"#),
            Some(DuplicateKey {
                key: "id".into(),
                pointer: String::new()
            })
        );
        let nested = duplicate_key(br#"{"data":{"items":[1,{"a/b":{"x":1,"y":[],"x":2}}]}}"#)
            .expect("found");
        assert_eq!(nested.key, "x");
        assert_eq!(nested.pointer, "/data/items/1/a~1b");
        assert_eq!(
            nested.to_string(),
            r#"key "x" appears twice at /data/items/1/a~1b"#
        );
        assert_eq!(
            duplicate_key(br#"{"price":1.10,"\u0070rice":2}"#).map(|d| d.key),
            Some("price".to_owned()),
            "an escaped spelling is the same key"
        );
        assert_eq!(
            duplicate_key(br#"[{"a":1},{"a":1}]"#),
            None,
            "the same key in two objects is fine"
        );
        assert!(
            matches!(
                parse_strict(br#"{"a":1,"a":"#, DEFAULT_MAX_DEPTH),
                Err(IdentifyError::InvalidJson(_))
            ),
            "a value is read before its key is checked: a truncated body is a syntax error"
        );
        assert_eq!(
            duplicate_key(br#"{"a":1,"b":"#),
            None,
            "a syntax error is not a duplicate"
        );
        assert_eq!(duplicate_key(b"12.50"), None);
    }
}
