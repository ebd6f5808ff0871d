//! A bounded log of requests a source refused, so an operator can see what a real sender
//! posts (header names, the cause) without the journal ever storing unverified bytes.

use std::borrow::Cow;
use std::collections::VecDeque;

use axum::http::HeaderMap;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{Map, Value};

const CAPACITY: usize = 100;

/// Header names whose values are secrets everywhere.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "api-key",
    "apikey",
];

const SECRET_FRAGMENTS: &[&str] = &["secret", "password", "token", "api_key", "apikey"];

pub const REDACTED: &str = "[redacted]";

fn is_secret(name: &str, extra: &[&str]) -> bool {
    SECRET_HEADERS.contains(&name) || extra.contains(&name) || holds_secret_fragment(name)
}

/// Whether `name` contains one of [`SECRET_FRAGMENTS`], in one pass that compares a fragment
/// only where a byte could start one: `str::contains` builds a searcher per fragment, which cost
/// more than all the rest of storing a header, for every header of every delivery.
fn holds_secret_fragment(name: &str) -> bool {
    let name = name.as_bytes();
    (0..name.len()).any(|at| {
        STARTS_A_FRAGMENT[usize::from(name[at])]
            && SECRET_FRAGMENTS
                .iter()
                .any(|fragment| name[at..].starts_with(fragment.as_bytes()))
    })
}

/// The bytes [`SECRET_FRAGMENTS`] begin with.
const STARTS_A_FRAGMENT: [bool; 256] = {
    let mut table = [false; 256];
    let mut index = 0;
    while index < SECRET_FRAGMENTS.len() {
        table[SECRET_FRAGMENTS[index].as_bytes()[0] as usize] = true;
        index += 1;
    }
    table
};

/// Headers as a JSON object, secret values replaced; repeated headers joined with ", ".
pub fn redacted_headers(headers: &HeaderMap, extra_secret_names: &[&str]) -> Map<String, Value> {
    redacted_header_pairs(headers, extra_secret_names)
        .map(|(name, value)| (name.to_owned(), Value::String(value.into_owned())))
        .collect()
}

/// The same object as [`redacted_headers`], as JSON text, after `pseudo` entries (the request
/// line as HTTP/2 pseudo-headers, `:method`, `:path`, `:query`), written straight from the
/// header map: this runs for every delivery, so it builds no intermediate tree.
pub fn redacted_headers_json(
    pseudo: &[(&str, &str)],
    headers: &HeaderMap,
    extra_secret_names: &[&str],
) -> String {
    let mut out = String::with_capacity(256);
    out.push('{');
    let entries = pseudo
        .iter()
        .map(|(name, value)| (*name, Cow::Borrowed(*value)))
        .chain(redacted_header_pairs(headers, extra_secret_names));
    for (index, (name, value)) in entries.enumerate() {
        if index > 0 {
            out.push(',');
        }
        push_json_string(&mut out, name);
        out.push(':');
        push_json_string(&mut out, &value);
    }
    out.push('}');
    out
}

/// Writes `text` as a JSON string exactly as serde_json writes it; text with nothing to escape
/// (every header name and nearly every value) is copied as it is.
fn push_json_string(out: &mut String, text: &str) {
    if !needs_escape(text.as_bytes()) {
        out.push('"');
        out.push_str(text);
        out.push('"');
    } else {
        // Serializing a string into a String cannot fail.
        out.push_str(&serde_json::to_string(text).unwrap_or_default());
    }
}

fn redacted_header_pairs<'a>(
    headers: &'a HeaderMap,
    extra_secret_names: &'a [&'a str],
) -> impl Iterator<Item = (&'a str, Cow<'a, str>)> + 'a {
    headers.keys().map(move |name| {
        let name_text = name.as_str();
        if is_secret(name_text, extra_secret_names) {
            return (name_text, Cow::Borrowed(REDACTED));
        }
        let mut values = headers.get_all(name).iter();
        let first = values
            .next()
            .map_or(Cow::Borrowed(""), |value| lossy_text(value.as_bytes()));
        let value = values.fold(first, |joined, value| {
            let mut joined = joined.into_owned();
            joined.push_str(", ");
            joined.push_str(&lossy_text(value.as_bytes()));
            Cow::Owned(joined)
        });
        (name_text, value)
    })
}

/// Whether JSON must escape any of `bytes` (a control character, `"` or `\\`), eight bytes at a
/// time: the classic "has a byte less than n" test, exact for whether any byte matches.
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let has_zero = |word: u64| word.wrapping_sub(ONES) & !word & HIGHS != 0;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut eight = [0; 8];
        eight.copy_from_slice(word);
        let word = u64::from_ne_bytes(eight);
        if word.wrapping_sub(ONES * 0x20) & !word & HIGHS != 0
            || has_zero(word ^ (ONES * u64::from(b'"')))
            || has_zero(word ^ (ONES * u64::from(b'\\')))
        {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&byte| byte < 0x20 || byte == b'"' || byte == b'\\')
}

/// A header value as text, invalid UTF-8 replaced as by `String::from_utf8_lossy`; valid text
/// (every header a provider sends) takes the quicker check.
fn lossy_text(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// A query string with secret parameter values replaced.
pub fn redacted_query(query: &str, extra_secret_names: &[&str]) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if is_secret(&key.to_ascii_lowercase(), extra_secret_names) => {
                format!("{key}={REDACTED}")
            }
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Rejection {
    pub at: String,
    pub code: &'static str,
    pub message: String,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    #[schema(value_type = Object)]
    pub headers: Map<String, Value>,
    pub body_bytes: usize,
}

#[derive(Debug, Default)]
pub struct RejectionLog {
    entries: Mutex<VecDeque<Rejection>>,
    total: std::sync::atomic::AtomicU64,
}

impl RejectionLog {
    pub fn push(&self, rejection: Rejection) {
        self.total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut entries = self.entries.lock();
        if entries.len() == CAPACITY {
            entries.pop_front();
        }
        entries.push_back(rejection);
    }

    /// Newest first.
    pub fn recent(&self) -> Vec<Rejection> {
        self.entries.lock().iter().rev().cloned().collect()
    }

    pub fn total(&self) -> u64 {
        self.total.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn secrets_are_redacted_and_signatures_kept() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer abc"));
        headers.insert("x-shop-token", HeaderValue::from_static("t0k"));
        headers.insert(
            "x-cartpanda-signature",
            HeaderValue::from_static("deadbeef"),
        );
        headers.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        headers.append("x-forwarded-for", HeaderValue::from_static("\"10.0.0.2\""));
        let shown = Value::Object(redacted_headers(&headers, &[])).to_string();
        assert!(!shown.contains("abc") && !shown.contains("t0k"), "{shown}");
        assert!(shown.contains("deadbeef"));
        assert!(
            shown.contains(r#""x-forwarded-for":"10.0.0.1, \"10.0.0.2\"""#),
            "{shown}"
        );
        assert_eq!(
            redacted_headers_json(&[], &headers, &[]),
            shown,
            "the stored text and the tree agree"
        );
        let mut odd = HeaderMap::new();
        odd.insert(
            "x-odd",
            HeaderValue::from_bytes(b"tab\there \\ \"q\" caf\xc3\xa9 \xff").expect("header"),
        );
        odd.insert("x-plain", HeaderValue::from_static("plain"));
        let pseudo = [(":method", "POST"), (":path", "/a\"b\u{7f}\u{1}\n")];
        let mut tree = Map::new();
        for (name, value) in pseudo {
            tree.insert(name.to_owned(), Value::String(value.to_owned()));
        }
        tree.extend(redacted_headers(&odd, &[]));
        assert_eq!(
            redacted_headers_json(&pseudo, &odd, &[]),
            Value::Object(tree).to_string(),
            "escapes, control characters and invalid UTF-8 are written as serde_json writes them"
        );
        assert_eq!(
            redacted_query("a=1&api_key=s3&token=x", &[]),
            "a=1&api_key=[redacted]&token=[redacted]"
        );
    }

    #[test]
    fn escapes_are_found_at_every_position_in_a_word() {
        for length in 0..20 {
            for at in 0..length {
                for byte in 0..=255u8 {
                    let mut text = vec![b'a'; length];
                    text[at] = byte;
                    let expected = byte < 0x20 || byte == b'"' || byte == b'\\';
                    assert_eq!(needs_escape(&text), expected, "{byte} at {at} of {length}");
                }
            }
        }
        assert!(!needs_escape(b""));
        assert!(!needs_escape(
            "caf\u{e9} \u{7f} x-cartpanda-signature".as_bytes()
        ));
    }

    #[test]
    fn a_secret_fragment_is_found_anywhere_in_a_name() {
        for name in [
            "x-webhook-secret",
            "secret",
            "x-shop-token-id",
            "my_password",
            "x-api_key",
            "apikey2",
            "tokentoken",
            "x-s-secret",
        ] {
            assert!(holds_secret_fragment(name), "{name}");
        }
        for name in [
            "",
            "x-cartpanda-signature",
            "content-type",
            "secre",
            "tokn",
            "api-key",
            "s",
        ] {
            assert!(!holds_secret_fragment(name), "{name}");
        }
        assert!(is_secret("api-key", &[]), "a whole secret name");
        assert!(is_secret("x-signature", &["x-signature"]), "a source's own");
    }

    #[test]
    fn log_keeps_only_the_newest_entries() {
        let log = RejectionLog::default();
        for index in 0..(CAPACITY + 5) {
            log.push(Rejection {
                at: String::new(),
                code: "signature_mismatch",
                message: index.to_string(),
                method: "POST".into(),
                path: "/".into(),
                query: None,
                headers: Map::new(),
                body_bytes: 0,
            });
        }
        let recent = log.recent();
        assert_eq!(recent.len(), CAPACITY);
        assert_eq!(recent[0].message, (CAPACITY + 4).to_string());
        assert_eq!(log.total(), (CAPACITY + 5) as u64);
    }
}
