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
    let text = checked_text(body)?;
    let max_depth = max_depth.min(MAX_DEPTH);
    let mut refused = None;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let parsed = StrictValue {
        refused: &mut refused,
        depth_left: max_depth,
    }
    .deserialize(&mut deserializer)
    .and_then(|value| deserializer.end().map(|()| value));
    refusal(parsed, refused, max_depth)
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

/// Checks a JSON body as strictly as [`parse_strict`] in the same single pass, without building
/// its tree, and returns the values at `pointers` (RFC 6901, as [`Value::pointer`] reads them;
/// at most 64), each `None` where the body holds nothing. Only the values asked for are built:
/// a source that identifies a delivery by a few fields reads them without paying for the rest.
pub fn pick_strict(
    body: &[u8],
    max_depth: usize,
    pointers: &[&str],
) -> Result<Vec<Option<Value>>, IdentifyError> {
    debug_assert!(pointers.len() <= 64, "at most 64 pointers per pass");
    let text = checked_text(body)?;
    let mut all = 0u64;
    let mut wanted = Wanted {
        tokens: Vec::with_capacity(pointers.len() * 2),
        spans: Vec::with_capacity(pointers.len()),
    };
    for (bit, pointer) in pointers.iter().take(64).enumerate() {
        let start = wanted.tokens.len();
        if pointer.is_empty() {
            all |= 1 << bit;
        } else if let Some(mut rest) = pointer.strip_prefix('/') {
            all |= 1 << bit;
            // Split by hand: `str::split` sets up a searcher per pointer, on every delivery.
            loop {
                let end = rest.bytes().position(|byte| byte == b'/');
                let token = &rest[..end.unwrap_or(rest.len())];
                wanted.tokens.push(if token.as_bytes().contains(&b'~') {
                    Cow::Owned(token.replace("~1", "/").replace("~0", "~"))
                } else {
                    Cow::Borrowed(token)
                });
                match end {
                    Some(end) => rest = &rest[end + 1..],
                    None => break,
                }
            }
        }
        // A pointer that does not start with `/` names nothing (as in `Value::pointer`).
        wanted.spans.push((start, wanted.tokens.len()));
    }
    let max_depth = max_depth.min(MAX_DEPTH);
    let mut refused = None;
    let mut scan = Scan {
        wanted: &wanted,
        picked: vec![None; pointers.len()],
        keys: Vec::with_capacity(32),
    };
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let walked = Walk {
        scan: &mut scan,
        refused: &mut refused,
        depth_left: max_depth,
        wanted: all,
        level: 0,
    }
    .deserialize(&mut deserializer)
    .and_then(|()| deserializer.end());
    refusal(walked, refused, max_depth)?;
    Ok(scan.picked)
}

/// The values one strict pass read at the pointers it was asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Picked<'p> {
    pointers: &'p [&'p str],
    values: Vec<Option<Value>>,
}

impl<'p> Picked<'p> {
    /// `values[i]` is what the body holds at `pointers[i]`.
    pub fn new(pointers: &'p [&'p str], values: Vec<Option<Value>>) -> Self {
        debug_assert_eq!(pointers.len(), values.len());
        Self { pointers, values }
    }

    /// The value at `pointer`, which must be one of those asked for (else `None`).
    pub fn get(&self, pointer: &str) -> Option<&Value> {
        let index = self.pointers.iter().position(|asked| *asked == pointer)?;
        self.values.get(index)?.as_ref()
    }

    /// [`text`] of the value at `pointer`.
    pub fn text(&self, pointer: &str) -> Option<String> {
        self.get(pointer).and_then(scalar_text)
    }

    /// [`first_text`] among values asked for.
    pub fn first_text(&self, pointers: &[&str]) -> Option<String> {
        pointers.iter().find_map(|pointer| self.text(pointer))
    }
}

/// The body as text, with empty and non-UTF-8 bodies named apart from syntax errors.
fn checked_text(body: &[u8]) -> Result<&str, IdentifyError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(IdentifyError::EmptyBody);
    }
    std::str::from_utf8(body).map_err(|_| IdentifyError::NotUtf8)
}

/// The error a strict pass ended with: its own refusal first, else serde_json's.
fn refusal<T>(
    parsed: Result<T, serde_json::Error>,
    refused: Option<Refusal>,
    max_depth: usize,
) -> Result<T, IdentifyError> {
    match (parsed, refused) {
        (Ok(value), _) => Ok(value),
        (Err(_), Some(Refusal::Duplicate(found))) => {
            Err(IdentifyError::DuplicateKey(found.into_duplicate_key()))
        }
        (Err(_), Some(Refusal::TooDeep)) => Err(IdentifyError::TooDeep { limit: max_depth }),
        (Err(error), None) => Err(IdentifyError::InvalidJson(error)),
    }
}

/// The reference tokens of the pointers a pass looks for, unescaped, in one list.
struct Wanted<'p> {
    tokens: Vec<Cow<'p, str>>,
    /// Where each pointer's tokens are in `tokens`; `""` (the whole document) has none.
    spans: Vec<(usize, usize)>,
}

impl Wanted<'_> {
    fn tokens(&self, bit: usize) -> &[Cow<'_, str>] {
        let (start, end) = self.spans[bit];
        &self.tokens[start..end]
    }
}

/// Whether an array index matches a pointer token, read as [`Value::pointer`] reads it (no
/// sign, no leading zero).
fn is_index(token: &str, index: usize) -> bool {
    if token.starts_with('+') || (token.starts_with('0') && token.len() != 1) {
        return false;
    }
    token.parse::<usize>().ok() == Some(index)
}

/// The indices of the bits set in `mask`, lowest first.
fn bits(mut mask: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        let bit = mask.trailing_zeros();
        (mask != 0).then(|| {
            mask &= mask - 1;
            bit as usize
        })
    })
}

/// What a [`pick_strict`] pass shares across levels.
struct Scan<'w, 'de> {
    wanted: &'w Wanted<'w>,
    picked: Vec<Option<Value>>,
    /// The keys of the objects open on the way down, outermost first: each object checks its
    /// keys against its own part of the stack and truncates it back when it ends, so the whole
    /// pass allocates this once.
    keys: Vec<Cow<'de, str>>,
}

/// Objects with more keys than this are checked through a hash set, not by scanning.
const LINEAR_KEYS: usize = 16;

/// Walks one JSON value with [`StrictValue`]'s checks, building only the values `wanted` names
/// (bits of [`Scan::wanted`] whose first `level` tokens led here).
struct Walk<'s, 'w, 'de> {
    scan: &'s mut Scan<'w, 'de>,
    refused: &'s mut Option<Refusal>,
    depth_left: usize,
    wanted: u64,
    level: usize,
}

impl<'s, 'w, 'de> Walk<'s, 'w, 'de> {
    /// The pointers among `wanted` that end at this value.
    fn ends_here(&self) -> u64 {
        self.bits()
            .filter(|&bit| self.scan.wanted.tokens(bit).len() == self.level)
            .fold(0, |mask, bit| mask | 1 << bit)
    }

    /// The pointers among `wanted` that go on through the member or item `matches` accepts.
    fn through(&self, matches: impl Fn(&str) -> bool) -> u64 {
        if self.wanted == 0 {
            return 0;
        }
        self.bits()
            .filter(|&bit| {
                self.scan
                    .wanted
                    .tokens(bit)
                    .get(self.level)
                    .is_some_and(|token| matches(token))
            })
            .fold(0, |mask, bit| mask | 1 << bit)
    }

    fn bits(&self) -> impl Iterator<Item = usize> {
        bits(self.wanted)
    }

    fn child(&mut self, wanted: u64) -> Walk<'_, 'w, 'de> {
        Walk {
            scan: &mut *self.scan,
            refused: &mut *self.refused,
            depth_left: self.depth_left,
            wanted,
            level: self.level + 1,
        }
    }

    fn descend<E: de::Error>(&mut self) -> Result<(), E> {
        match self.depth_left.checked_sub(1) {
            Some(depth_left) => {
                self.depth_left = depth_left;
                Ok(())
            }
            None => {
                *self.refused = Some(Refusal::TooDeep);
                Err(E::custom("nested too deep"))
            }
        }
    }

    /// Records `key` for the object whose keys start at `start`; a key already there is a
    /// duplicate.
    fn check_key<E: de::Error>(
        &mut self,
        start: usize,
        key: Cow<'de, str>,
        large: &mut Option<std::collections::HashSet<Cow<'de, str>>>,
    ) -> Result<(), E> {
        let taken = match large {
            Some(set) => !set.insert(key.clone()),
            None => self.scan.keys[start..].contains(&key),
        };
        if taken {
            *self.refused = Some(Refusal::Duplicate(Found {
                key: key.into_owned(),
                reversed_path: Vec::new(),
            }));
            return Err(E::custom("duplicate key"));
        }
        if large.is_none() && self.scan.keys.len() - start == LINEAR_KEYS {
            let mut set: std::collections::HashSet<Cow<'de, str>> =
                self.scan.keys[start..].iter().cloned().collect();
            set.insert(key.clone());
            *large = Some(set);
        }
        self.scan.keys.push(key);
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Walk<'_, '_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        let here = if self.wanted == 0 {
            0
        } else {
            self.ends_here()
        };
        if here == 0 {
            return deserializer.deserialize_any(self);
        }
        // A value asked for is built whole (and checked while built); pointers that go on
        // below it are read from it.
        let value = StrictValue {
            refused: &mut *self.refused,
            depth_left: self.depth_left,
        }
        .deserialize(deserializer)?;
        for bit in bits(self.wanted & !here) {
            let below =
                self.scan.wanted.tokens(bit)[self.level..]
                    .iter()
                    .try_fold(&value, |at, token| match at {
                        Value::Object(map) => map.get(token.as_ref()),
                        Value::Array(items) => (0..items.len())
                            .find(|&index| is_index(token, index))
                            .and_then(|index| items.get(index)),
                        _ => None,
                    });
            self.scan.picked[bit] = below.cloned();
        }
        for bit in bits(here) {
            self.scan.picked[bit] = Some(value.clone());
        }
        Ok(())
    }
}

impl<'de> Visitor<'de> for Walk<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut items: A) -> Result<(), A::Error> {
        self.descend()?;
        let mut index = 0;
        loop {
            let wanted = self.through(|token| is_index(token, index));
            match items.next_element_seed(self.child(wanted)) {
                Ok(Some(())) => index += 1,
                Ok(None) => return Ok(()),
                Err(error) => {
                    if let Some(Refusal::Duplicate(found)) = self.refused.as_mut() {
                        found.reversed_path.push(index.to_string());
                    }
                    return Err(error);
                }
            }
        }
    }

    /// Also reached for every number, as in [`StrictValue::visit_map`].
    fn visit_map<A: MapAccess<'de>>(mut self, mut entries: A) -> Result<(), A::Error> {
        let Some(first_key) = entries.next_key_seed(KeySeed)? else {
            return self.descend();
        };
        if first_key == NUMBER_TOKEN {
            let text: Cow<'de, str> = entries.next_value_seed(KeySeed)?;
            return text
                .parse::<serde_json::Number>()
                .map(drop)
                .map_err(de::Error::custom);
        }
        self.descend()?;
        let start = self.scan.keys.len();
        let mut large = None;
        let mut next_key = Some(first_key);
        let walked = loop {
            let Some(key) = next_key else {
                break Ok(());
            };
            let wanted = self.through(|token| token == key);
            // The value is read before its key is checked, as in `StrictValue`: a body cut off
            // after a repeated key is a syntax error.
            if let Err(error) = entries.next_value_seed(self.child(wanted)) {
                if let Some(Refusal::Duplicate(found)) = self.refused.as_mut() {
                    found.reversed_path.push(key.into_owned());
                }
                break Err(error);
            }
            if let Err(error) = self.check_key(start, key, &mut large) {
                break Err(error);
            }
            next_key = match entries.next_key_seed(KeySeed) {
                Ok(key) => key,
                Err(error) => break Err(error),
            };
        };
        self.scan.keys.truncate(start);
        walked
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
    value.pointer(pointer).and_then(scalar_text)
}

/// A scalar value as text, as [`text`] reads it.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
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

    /// What `parse_strict` says of a body, as `pick_strict` must say it too.
    fn outcome<T>(result: Result<T, IdentifyError>) -> Result<T, String> {
        result.map_err(|error| match error {
            IdentifyError::DuplicateKey(found) => format!("duplicate {found}"),
            other => other.code().to_owned(),
        })
    }

    #[test]
    fn a_pick_refuses_exactly_what_the_tree_refuses() {
        let mut wide = String::from("{");
        for index in 0..40 {
            wide.push_str(&format!("\"k{index}\":{index},"));
        }
        let wide_duplicate = format!("{wide}\"k3\":0}}");
        let wide_late_duplicate = format!("{wide}\"k39\":0}}");
        wide.push_str("\"end\":[]}");
        let bodies: Vec<&[u8]> = vec![
            br#"{"a":1,"b":[{"c":2}],"d":{"e":null}}"#,
            br#"{"id":"1","id":"2"}"#,
            br#"{"data":{"items":[1,{"a/b":{"x":1,"y":[],"x":2}}]}}"#,
            br#"{"data":{"sale_id":"S","deep":[[{"k":{"z":1,"q":{"w":1,"w":2}}}]]}}"#,
            br#"{"price":1.10,"\u0070rice":2}"#,
            br#"[{"a":1},{"a":1}]"#,
            br#"{"a":1,"a":"#,
            br#"{"a":1,"b":"#,
            br#"{"a":{"b":{"c":{}}}}"#,
            br#"{"a":[1,2,[3,[4]]]}"#,
            br#"{"$serde_json::private::Number":"12"}"#,
            br#"{"$serde_json::private::Number":"x"}"#,
            br#"{"n":-0.0,"m":1e400,"big":12345678901234567890123}"#,
            b"12.50",
            b"  ",
            b"{\"a\":\"\xff\"}",
            b"{\"a\":1} x",
            wide.as_bytes(),
            wide_duplicate.as_bytes(),
            wide_late_duplicate.as_bytes(),
        ];
        for body in bodies {
            for depth in [2, 3, DEFAULT_MAX_DEPTH] {
                let tree = outcome(parse_strict(body, depth)).map(drop);
                let picked = outcome(pick_strict(body, depth, &["/a", "/data/sale_id"])).map(drop);
                let checked = outcome(pick_strict(body, depth, &[])).map(drop);
                let shown = String::from_utf8_lossy(body);
                assert_eq!(picked, tree, "{shown} at depth {depth}");
                assert_eq!(checked, tree, "{shown} at depth {depth}");
            }
        }
    }

    #[test]
    fn a_duplicate_deep_in_a_body_is_caught_where_no_pointer_looks() {
        let body = br#"{"type":"sale.approved","id":"e1","data":{"sale_id":"S1",
            "notes":"x","items":[{"sku":"a"},{"sku":"b","meta":{"k":1,"k":2}}]}}"#;
        let error = pick_strict(body, DEFAULT_MAX_DEPTH, &["/type", "/id", "/data/sale_id"])
            .expect_err("refused");
        assert_eq!(error.code(), "duplicate_json_key");
        let IdentifyError::DuplicateKey(found) = error else {
            unreachable!("checked above")
        };
        assert_eq!(found.key, "k");
        assert_eq!(found.pointer, "/data/items/1/meta");
        let on_the_way = pick_strict(
            br#"{"data":{"sale_id":"S1","sale_id":"S2"}}"#,
            DEFAULT_MAX_DEPTH,
            &["/data/sale_id"],
        )
        .expect_err("refused");
        assert_eq!(on_the_way.code(), "duplicate_json_key");
        let inside_a_pick = pick_strict(
            br#"{"data":{"x":{"y":1,"y":2}}}"#,
            DEFAULT_MAX_DEPTH,
            &["/data"],
        )
        .expect_err("refused");
        assert!(
            matches!(&inside_a_pick, IdentifyError::DuplicateKey(found) if found.pointer == "/data/x"),
            "{inside_a_pick}"
        );
    }

    #[test]
    fn a_pick_reads_what_the_tree_holds_at_each_pointer() {
        let body = br#"{"type":"sale.approved","id":12.50,"a/b":{"~k":[10,{"x":"y"}]},
            "data":{"sale_id":"  S1 ","nested":{"deep":true}},"list":[0,1,2],"n":null}"#;
        let pointers = [
            "/type",
            "/id",
            "/a~1b/~0k/1/x",
            "/a~1b/~0k/0",
            "/data",
            "/data/sale_id",
            "/data/nested/deep",
            "/list/2",
            "/list/02",
            "/list/+1",
            "/list/3",
            "/n",
            "/missing",
            "/type/deeper",
            "",
            "no-slash",
        ];
        let tree = parse_strict(body, DEFAULT_MAX_DEPTH).expect("valid");
        let picked = pick_strict(body, DEFAULT_MAX_DEPTH, &pointers).expect("valid");
        for (pointer, value) in pointers.iter().zip(&picked) {
            assert_eq!(value.as_ref(), tree.pointer(pointer), "{pointer}");
        }
        assert_eq!(
            picked[1].as_ref().map(ToString::to_string).as_deref(),
            Some("12.50"),
            "a number keeps its exact text"
        );
        let read = Picked::new(&pointers, picked.clone());
        assert_eq!(read.text("/data/sale_id").as_deref(), Some("S1"));
        assert_eq!(read.text("/id").as_deref(), Some("12.50"));
        assert_eq!(
            read.first_text(&["/n", "/type"]).as_deref(),
            Some("sale.approved")
        );
        assert_eq!(read.get("/not-asked"), None);
    }
}
