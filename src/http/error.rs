//! One error type for every HTTP answer that is not a success: it carries the status, a
//! machine-readable code and a message, and renders in the source's own error format.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::journal::JournalError;
use crate::sources::Source;
use crate::telemetry::LogLimiter;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// The journal could not store: the provider should retry, so never a 2xx or a 4xx.
    /// Logged at most once a second: an outage answers thousands of 503s with the same error.
    pub fn journal_unavailable(error: &JournalError) -> Self {
        static LOG: LogLimiter = LogLimiter::new();
        if let Some(suppressed) = LOG.allow() {
            tracing::error!(error = %error, suppressed, "journal unavailable; answering 503");
        }
        Self {
            retry_after_secs: Some(1),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "journal_unavailable",
                "the delivery could not be stored; retry later",
            )
        }
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_secs = Some(seconds);
        self
    }

    fn default_body(&self) -> Value {
        json!({ "error": { "code": self.code, "message": self.message } })
    }

    /// Renders with the source's error format.
    pub fn for_source(self, source: &dyn Source) -> Response {
        let body = source.error_body(self.code, &self.message);
        self.render(body)
    }

    fn render(self, body: Value) -> Response {
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after_secs {
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.default_body();
        self.render(body)
    }
}
