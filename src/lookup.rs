//! Asking a provider's API whether a delivery is genuine (Paystack's verify API for its
//! unsigned callback). Sources stay pure: a source describes the request ([`Lookup`]) and reads
//! the answer ([`LookupAnswer`]); this one client makes every call, with timeouts and a few
//! quick retries, outside the ingress's hot path. The delivery is already stored as
//! `verifying`, so a slow or absent API delays it and loses nothing: the processor's own
//! backoff retries the lookup.

use std::time::Duration;

use axum::http::Method;
use bytes::Bytes;
use thiserror::Error;

/// An HTTP request to a provider's API. Header values may be secrets (an API key): `Debug`
/// shows only the names.
#[derive(Clone)]
pub struct Lookup {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<Bytes>,
}

impl std::fmt::Debug for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(name, _)| *name).collect();
        f.debug_struct("Lookup")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("headers", &names)
            .finish_non_exhaustive()
    }
}

/// What the provider's API answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupAnswer {
    pub status: u16,
    pub body: Bytes,
}

/// The API could not be asked, or answered that it could not answer now (5xx, 429): the
/// delivery stays `verifying` and is retried.
#[derive(Debug, Error)]
pub enum LookupError {
    #[error("the provider's API could not be reached: {0}")]
    Unreachable(String),
    #[error("the provider's API answered {status} (retried later)")]
    Unavailable { status: u16 },
}

/// Timeouts and retries for provider API calls.
#[derive(Debug, Clone, Copy)]
pub struct LookupSettings {
    pub connect_timeout: Duration,
    /// For the whole call, body included.
    pub timeout: Duration,
    /// Tries per call before the attempt fails (and the processor's backoff takes over).
    pub tries: u32,
    pub first_backoff: Duration,
}

impl Default for LookupSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(3),
            timeout: Duration::from_secs(10),
            tries: 3,
            first_backoff: Duration::from_millis(200),
        }
    }
}

/// The one client for provider APIs.
#[derive(Debug, Clone)]
pub struct ProviderApi {
    client: reqwest::Client,
    settings: LookupSettings,
}

impl ProviderApi {
    pub fn new(settings: LookupSettings) -> Result<Self, LookupError> {
        let client = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.timeout)
            .user_agent(concat!("wharf/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| LookupError::Unreachable(error.to_string()))?;
        Ok(Self { client, settings })
    }

    /// Makes the call, retrying connection failures, timeouts, 429 and 5xx with doubling
    /// pauses; any other answer (a 404 for an unknown reference included) is the answer.
    pub async fn call(&self, lookup: &Lookup) -> Result<LookupAnswer, LookupError> {
        let mut pause = self.settings.first_backoff;
        let mut tries_left = self.settings.tries.max(1);
        loop {
            tries_left -= 1;
            match self.call_once(lookup).await {
                Ok(answer) => return Ok(answer),
                Err(error) if tries_left == 0 => return Err(error),
                Err(_) => {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
            }
        }
    }

    async fn call_once(&self, lookup: &Lookup) -> Result<LookupAnswer, LookupError> {
        let mut request = self.client.request(lookup.method.clone(), &lookup.url);
        for (name, value) in &lookup.headers {
            request = request.header(*name, value);
        }
        if let Some(body) = &lookup.body {
            request = request.body(body.clone());
        }
        let response = request
            .send()
            .await
            .map_err(|error| LookupError::Unreachable(without_url(&error)))?;
        let status = response.status().as_u16();
        if status == 429 || status >= 500 {
            return Err(LookupError::Unavailable { status });
        }
        let body = response
            .bytes()
            .await
            .map_err(|error| LookupError::Unreachable(without_url(&error)))?;
        Ok(LookupAnswer { status, body })
    }
}

/// reqwest's message without the URL, which may carry a reference or key in its query.
fn without_url(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    match std::error::Error::source(error) {
        Some(source) => format!("{kind}: {source}"),
        None => kind.to_owned(),
    }
}
