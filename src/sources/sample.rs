//! Signed samples of what providers send, for `wharf trigger` (as `stripe trigger` does for
//! Stripe): each source builds its own from the payloads its tests read (`tests/fixtures/`,
//! the seeds' examples) and signs them with its configured secret through the same scheme
//! that verifies them. Every sample gets fresh ids, so a second trigger is a new delivery,
//! not a duplicate.

use axum::http::Method;
use bytes::Bytes;
use serde_json::Value;
use thiserror::Error;

/// A request as the provider would send it.
#[derive(Debug, Clone)]
pub struct SampleRequest {
    pub method: Method,
    /// The source's own route (or `/in/{name}`), with its query string.
    pub path_and_query: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl SampleRequest {
    /// A JSON POST to `path_and_query`, headers to be added.
    pub fn json_post(path_and_query: impl Into<String>, body: &Value) -> Self {
        Self {
            method: Method::POST,
            path_and_query: path_and_query.into(),
            headers: vec![("content-type".to_owned(), "application/json".to_owned())],
            body: Bytes::from(body.to_string()),
        }
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }
}

/// Why a sample cannot be built.
#[derive(Debug, Error)]
pub enum SampleError {
    #[error("{source_name} has no sample event {event:?} (wharf trigger --list shows them)")]
    UnknownEvent { source_name: String, event: String },
    /// Signing needs the secret the server verifies with.
    #[error("{source_name} has no secret configured, so no sample can be signed: set {setting}")]
    NoSecret {
        source_name: String,
        setting: &'static str,
    },
    #[error("{0}")]
    Unsupported(String),
}

/// A fresh, sortable id for a sample (`prefix` + UUIDv7 without dashes).
pub fn fresh_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::now_v7().simple())
}

/// A fresh positive integer id (for providers whose ids are numbers), from the clock's
/// microseconds: distinct across triggers.
pub fn fresh_number() -> u64 {
    let micros = chrono::Utc::now().timestamp_micros();
    u64::try_from(micros).unwrap_or(1) % 1_000_000_000_000
}

/// A payload from its JSON text (a fixture); the fixtures are part of the build, so a broken
/// one is a bug that the trigger tests catch.
pub fn fixture(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// Sets the value at a JSON pointer whose parent exists.
pub fn set(value: &mut Value, pointer: &str, new: Value) {
    if let Some(slot) = value.pointer_mut(pointer) {
        *slot = new;
    }
}

/// The error for an event this source has no sample of.
pub fn unknown(source_name: &str, event: &str) -> SampleError {
    SampleError::UnknownEvent {
        source_name: source_name.to_owned(),
        event: event.to_owned(),
    }
}
