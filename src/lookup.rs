//! Asking a provider's API whether a delivery is genuine (Paystack's verify API for its
//! unsigned callback). Sources stay pure: a source describes the request ([`Lookup`]) and reads
//! the answer ([`LookupAnswer`]); this one client makes every call, with timeouts and a few
//! quick retries, outside the ingress's hot path. The delivery is already stored as
//! `verifying`, so a slow or absent API delays it and loses nothing: the processor's own
//! backoff retries the lookup. Answers that stay true for hours (a signing certificate) may be
//! marked cacheable and are kept, bounded and for a while, by URL. An API that wants an OAuth
//! bearer token (PayPal's) names its client credentials; the token is fetched once and reused
//! until it expires (or is refused).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use bytes::Bytes;
use parking_lot::Mutex;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use thiserror::Error;

use crate::clock::{SharedClock, SystemClock, Timestamp};

/// An HTTP request to a provider's API. Header values may be secrets (an API key): `Debug`
/// shows only the names.
#[derive(Clone)]
pub struct Lookup {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<Bytes>,
    /// Whether a `200` answer may be reused for the same URL for a while (a `GET` of a
    /// document that does not depend on the headers, such as a signing certificate).
    pub cacheable: bool,
    /// Sent with `Authorization: Bearer` and a token from these client credentials.
    pub oauth: Option<ClientCredentials>,
    /// Whether the call may be sent again after it may have reached the API (a timeout, a
    /// 5xx): true for reads; false for a call that acts (placing an order), which is then
    /// retried only when the connection failed before anything was sent.
    pub idempotent: bool,
}

/// OAuth 2.0 client credentials (RFC 6749 §4.4): `POST token_url` with HTTP Basic
/// `client_id:client_secret` and `grant_type=client_credentials`, answered with an
/// `access_token` and its `expires_in` seconds.
#[derive(Clone)]
pub struct ClientCredentials {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: SecretString,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl Lookup {
    /// A `GET` of `url` whose `200` answer may be reused ([`Lookup::cacheable`]).
    pub fn cacheable_get(url: impl Into<String>) -> Self {
        Self {
            method: Method::GET,
            url: url.into(),
            headers: Vec::new(),
            body: None,
            cacheable: true,
            oauth: None,
            idempotent: true,
        }
    }
}

impl std::fmt::Debug for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(name, _)| *name).collect();
        f.debug_struct("Lookup")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("headers", &names)
            .field("cacheable", &self.cacheable)
            .field("oauth", &self.oauth)
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
    /// The OAuth token endpoint refused the client credentials, or answered no token.
    #[error("the provider's token endpoint answered {status}: {message}")]
    Unauthorized { status: u16, message: String },
}

impl LookupError {
    /// Whether the call may have reached the API (so that sending it again could act twice).
    fn may_have_arrived(&self) -> bool {
        !matches!(self, Self::Unreachable(message) if message.starts_with(CONNECT_FAILED))
    }
}

const CONNECT_FAILED: &str = "connection failed";

/// Timeouts and retries for provider API calls.
#[derive(Debug, Clone, Copy)]
pub struct LookupSettings {
    pub connect_timeout: Duration,
    /// For the whole call, body included.
    pub timeout: Duration,
    /// Tries per call before the attempt fails (and the processor's backoff takes over).
    pub tries: u32,
    pub first_backoff: Duration,
    /// How long a cacheable answer is reused.
    pub cache_ttl: Duration,
    /// How many cacheable answers are kept at most.
    pub cache_entries: usize,
}

impl Default for LookupSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(3),
            timeout: Duration::from_secs(10),
            tries: 3,
            first_backoff: Duration::from_millis(200),
            cache_ttl: Duration::from_secs(6 * 60 * 60),
            cache_entries: 64,
        }
    }
}

/// Cacheable answers by URL, each until its expiry; when full, expired entries go first, then
/// the one closest to expiring.
#[derive(Debug)]
pub struct AnswerCache {
    ttl: Duration,
    capacity: usize,
    entries: HashMap<String, (Timestamp, LookupAnswer)>,
}

impl AnswerCache {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            entries: HashMap::new(),
        }
    }

    /// The answer kept for `url`, if it has not expired at `now`.
    pub fn get(&self, url: &str, now: Timestamp) -> Option<LookupAnswer> {
        self.entries
            .get(url)
            .filter(|(expires, _)| *expires > now)
            .map(|(_, answer)| answer.clone())
    }

    /// Keeps a `200` answer for `url` until `now` plus the TTL; any other answer is not kept.
    pub fn put(&mut self, url: &str, answer: &LookupAnswer, now: Timestamp) {
        if answer.status != 200 || self.capacity == 0 {
            return;
        }
        if !self.entries.contains_key(url) && self.entries.len() >= self.capacity {
            self.entries.retain(|_, (expires, _)| *expires > now);
            if self.entries.len() >= self.capacity {
                let soonest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (expires, _))| *expires)
                    .map(|(url, _)| url.clone());
                if let Some(soonest) = soonest {
                    self.entries.remove(&soonest);
                }
            }
        }
        let ttl_millis = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        self.entries.insert(
            url.to_owned(),
            (now.plus_millis(ttl_millis), answer.clone()),
        );
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Bearer tokens by (token URL, client id), each with its expiry.
type TokenCache = HashMap<(String, String), (Timestamp, String)>;

/// The one client for provider APIs.
#[derive(Debug, Clone)]
pub struct ProviderApi {
    client: reqwest::Client,
    settings: LookupSettings,
    cache: Arc<Mutex<AnswerCache>>,
    /// Bearer tokens by (token URL, client id), each with its expiry.
    tokens: Arc<Mutex<TokenCache>>,
    /// Held while a token is fetched, so that calls made together share one token.
    token_fetch: Arc<tokio::sync::Mutex<()>>,
    clock: SharedClock,
}

impl ProviderApi {
    pub fn new(settings: LookupSettings) -> Result<Self, LookupError> {
        let client = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.timeout)
            .user_agent(concat!("wharf/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| LookupError::Unreachable(error.to_string()))?;
        Ok(Self {
            client,
            settings,
            cache: Arc::new(Mutex::new(AnswerCache::new(
                settings.cache_ttl,
                settings.cache_entries,
            ))),
            tokens: Arc::new(Mutex::new(HashMap::new())),
            token_fetch: Arc::new(tokio::sync::Mutex::new(())),
            clock: Arc::new(SystemClock),
        })
    }

    /// Cache expiry read from `clock` (the server's, so tests can move it).
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Makes the call, retrying connection failures, timeouts, 429 and 5xx with doubling
    /// pauses; any other answer (a 404 for an unknown reference included) is the answer. A
    /// [`Lookup::cacheable`] call is answered from the cache while a `200` for its URL is fresh.
    pub async fn call(&self, lookup: &Lookup) -> Result<LookupAnswer, LookupError> {
        if !lookup.cacheable {
            return self.call_with_retries(lookup).await;
        }
        if let Some(answer) = self.cache.lock().get(&lookup.url, self.clock.now()) {
            return Ok(answer);
        }
        let answer = self.call_with_retries(lookup).await?;
        self.cache
            .lock()
            .put(&lookup.url, &answer, self.clock.now());
        Ok(answer)
    }

    async fn call_with_retries(&self, lookup: &Lookup) -> Result<LookupAnswer, LookupError> {
        let mut pause = self.settings.first_backoff;
        let mut tries_left = self.settings.tries.max(1);
        loop {
            tries_left -= 1;
            match self.call_authorized(lookup).await {
                Ok(answer) => return Ok(answer),
                Err(error) if tries_left == 0 => return Err(error),
                Err(error) if !lookup.idempotent && error.may_have_arrived() => return Err(error),
                Err(_) => {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
            }
        }
    }

    /// One call, with a bearer token when the lookup names client credentials; a `401` drops
    /// the token and the call is made once more with a fresh one (tokens can be revoked early).
    async fn call_authorized(&self, lookup: &Lookup) -> Result<LookupAnswer, LookupError> {
        let Some(credentials) = &lookup.oauth else {
            return self.call_once(lookup, None).await;
        };
        let token = self.token(credentials).await?;
        let answer = self.call_once(lookup, Some(&token)).await?;
        if answer.status != 401 {
            return Ok(answer);
        }
        self.tokens
            .lock()
            .remove(&(credentials.token_url.clone(), credentials.client_id.clone()));
        let token = self.token(credentials).await?;
        self.call_once(lookup, Some(&token)).await
    }

    /// A cached token while it has a minute left, else a new one from the token endpoint.
    async fn token(&self, credentials: &ClientCredentials) -> Result<String, LookupError> {
        let key = (credentials.token_url.clone(), credentials.client_id.clone());
        let fresh = |now: Timestamp| {
            self.tokens
                .lock()
                .get(&key)
                .filter(|(expires, _)| *expires > now.plus_millis(60_000))
                .map(|(_, token)| token.clone())
        };
        if let Some(token) = fresh(self.clock.now()) {
            return Ok(token);
        }
        let _fetching = self.token_fetch.lock().await;
        let now = self.clock.now();
        if let Some(token) = fresh(now) {
            return Ok(token);
        }
        let response = self
            .client
            .post(&credentials.token_url)
            .basic_auth(
                &credentials.client_id,
                Some(credentials.client_secret.expose_secret()),
            )
            .header("accept", "application/json")
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .map_err(|error| LookupError::Unreachable(without_url(&error)))?;
        let status = response.status().as_u16();
        if status == 429 || status >= 500 {
            return Err(LookupError::Unavailable { status });
        }
        let body: Value = response
            .json()
            .await
            .map_err(|error| LookupError::Unreachable(without_url(&error)))?;
        let token = body.get("access_token").and_then(Value::as_str);
        let (200, Some(token)) = (status, token) else {
            let message = body
                .get("error_description")
                .or_else(|| body.get("error"))
                .and_then(Value::as_str)
                .unwrap_or("no access_token in the answer")
                .chars()
                .take(200)
                .collect();
            return Err(LookupError::Unauthorized { status, message });
        };
        let lifetime = body.get("expires_in").and_then(Value::as_i64).unwrap_or(0);
        let expires = now.plus_millis(lifetime.saturating_mul(1000));
        self.tokens.lock().insert(key, (expires, token.to_owned()));
        Ok(token.to_owned())
    }

    async fn call_once(
        &self,
        lookup: &Lookup,
        bearer: Option<&str>,
    ) -> Result<LookupAnswer, LookupError> {
        let mut request = self.client.request(lookup.method.clone(), &lookup.url);
        for (name, value) in &lookup.headers {
            request = request.header(*name, value);
        }
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
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
        CONNECT_FAILED
    } else {
        "request failed"
    };
    match std::error::Error::source(error) {
        Some(source) => format!("{kind}: {source}"),
        None => kind.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &'static str) -> LookupAnswer {
        LookupAnswer {
            status,
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    const HOUR_MILLIS: i64 = 60 * 60 * 1000;

    #[test]
    fn a_cached_answer_is_reused_until_its_ttl_passes() {
        let mut cache = AnswerCache::new(Duration::from_secs(3600), 4);
        let start = Timestamp::from_unix_seconds(1_700_000_000);
        cache.put("https://a.test/cert", &answer(200, "pem"), start);
        let almost = start.plus_millis(HOUR_MILLIS - 1);
        assert_eq!(
            cache.get("https://a.test/cert", almost),
            Some(answer(200, "pem"))
        );
        assert_eq!(cache.get("https://a.test/other", almost), None);
        assert_eq!(
            cache.get("https://a.test/cert", start.plus_millis(HOUR_MILLIS)),
            None
        );
    }

    #[test]
    fn only_200_answers_are_cached() {
        let mut cache = AnswerCache::new(Duration::from_secs(3600), 4);
        let now = Timestamp::from_unix_seconds(1_700_000_000);
        cache.put("https://a.test/missing", &answer(404, "no"), now);
        cache.put("https://a.test/moved", &answer(301, ""), now);
        assert!(cache.is_empty());
    }

    #[test]
    fn a_full_cache_drops_expired_entries_then_the_one_expiring_first() {
        let mut cache = AnswerCache::new(Duration::from_secs(3600), 2);
        let start = Timestamp::from_unix_seconds(1_700_000_000);
        cache.put("https://a.test/1", &answer(200, "1"), start);
        cache.put(
            "https://a.test/2",
            &answer(200, "2"),
            start.plus_millis(1000),
        );
        cache.put(
            "https://a.test/3",
            &answer(200, "3"),
            start.plus_millis(2000),
        );
        assert_eq!(cache.len(), 2);
        let now = start.plus_millis(3000);
        assert_eq!(cache.get("https://a.test/1", now), None);
        assert!(cache.get("https://a.test/2", now).is_some());
        assert!(cache.get("https://a.test/3", now).is_some());
        let later = start.plus_millis(HOUR_MILLIS + 1500);
        cache.put("https://a.test/4", &answer(200, "4"), later);
        assert_eq!(cache.len(), 2, "the expired /2 made room");
        assert!(cache.get("https://a.test/3", later).is_some());
        assert!(cache.get("https://a.test/4", later).is_some());
    }

    /// A server that answers 503 to everything, counting the requests.
    async fn unavailable_api() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let router = axum::Router::new().fallback(move || {
            let counted = Arc::clone(&counted);
            async move {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                axum::http::StatusCode::SERVICE_UNAVAILABLE
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, router).await });
        (base, calls)
    }

    #[tokio::test]
    async fn a_call_that_acts_is_not_sent_again_once_it_may_have_arrived() {
        let (base, calls) = unavailable_api().await;
        let api = ProviderApi::new(LookupSettings {
            first_backoff: Duration::from_millis(1),
            ..LookupSettings::default()
        })
        .expect("client");
        let mut lookup = Lookup {
            method: Method::POST,
            url: format!("{base}/api/v5/trade/order"),
            headers: Vec::new(),
            body: Some(Bytes::from_static(b"{}")),
            cacheable: false,
            oauth: None,
            idempotent: false,
        };
        let error = api.call(&lookup).await.expect_err("unavailable");
        assert!(matches!(error, LookupError::Unavailable { status: 503 }));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        lookup.idempotent = true;
        api.call(&lookup).await.expect_err("unavailable");
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::SeqCst),
            4,
            "a read is tried three times"
        );
    }

    #[test]
    fn a_cache_of_no_entries_keeps_nothing() {
        let mut cache = AnswerCache::new(Duration::from_secs(3600), 0);
        cache.put("https://a.test/1", &answer(200, "1"), Timestamp(0));
        assert!(cache.is_empty());
    }
}
