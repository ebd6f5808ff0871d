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
    SECRET_HEADERS.contains(&name)
        || extra.contains(&name)
        || SECRET_FRAGMENTS
            .iter()
            .any(|fragment| name.contains(fragment))
}

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
    struct AsObject<'a>(&'a [(&'a str, &'a str)], &'a HeaderMap, &'a [&'a str]);
    impl Serialize for AsObject<'_> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let pseudo = self
                .0
                .iter()
                .map(|(name, value)| (*name, Cow::Borrowed(*value)));
            serializer.collect_map(pseudo.chain(redacted_header_pairs(self.1, self.2)))
        }
    }
    // Serializing strings into a String cannot fail.
    serde_json::to_string(&AsObject(pseudo, headers, extra_secret_names)).unwrap_or_default()
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
        let first = values.next().map_or(Cow::Borrowed(""), |value| {
            String::from_utf8_lossy(value.as_bytes())
        });
        let value = values.fold(first, |joined, value| {
            let mut joined = joined.into_owned();
            joined.push_str(", ");
            joined.push_str(&String::from_utf8_lossy(value.as_bytes()));
            Cow::Owned(joined)
        });
        (name_text, value)
    })
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
        assert_eq!(
            redacted_query("a=1&api_key=s3&token=x", &[]),
            "a=1&api_key=[redacted]&token=[redacted]"
        );
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
