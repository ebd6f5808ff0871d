//! The live stream of the change feed: `GET /api/stream` (Server-Sent Events: `id:` is the
//! sequence number, `event:` the kind, `data:` the change as JSON) and `GET /api/ws` (a
//! WebSocket of JSON text frames). Both resume after `Last-Event-ID` or `?since=SEQ` with
//! exactly what was missed ([`crate::bus::Bus::follow`]). Both are behind the admin token, in
//! the `Authorization` header or, for browsers (whose `EventSource` and `WebSocket` cannot send
//! headers), as a short-lived ticket from `POST /api/stream/ticket` in `?ticket=`. A ticket is
//! an expiry signed (HMAC-SHA256) with a key this process drew at start: nothing is stored, and
//! a ticket opens streams on the instance that issued it (a browser asks the instance it
//! streams from).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::Stream;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;
use tokio::sync::mpsc;

use super::error::ApiError;
use super::SharedState;
use crate::bus::{ChangeFilter, StreamItem};
use crate::clock::Timestamp;
use crate::verify::constant_time_eq;

/// How long a ticket opens streams.
pub const TICKET_SECONDS: i64 = 60;
/// Items a subscriber may have waiting for its socket; beyond, it falls behind (`lagged`).
const CLIENT_BUFFER: usize = 256;
/// WebSocket pings keep proxies (and idle timeouts) from closing a quiet stream.
const PING_EVERY: Duration = Duration::from_secs(20);

pub fn router(state: SharedState) -> Router<SharedState> {
    let streams = Router::new()
        .route("/api/stream", get(sse))
        .route("/api/ws", get(websocket))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_token_or_ticket,
        ));
    let tickets = Router::new()
        .route("/api/stream/ticket", post(issue_ticket))
        .route_layer(middleware::from_fn_with_state(
            state,
            super::admin::auth::require_token,
        ));
    streams.merge(tickets)
}

/// `?since=&source=&kind=&ticket=` (lists comma-separated).
#[derive(Debug, Default, Deserialize)]
pub struct StreamQuery {
    since: Option<String>,
    source: Option<String>,
    kind: Option<String>,
    ticket: Option<String>,
}

impl StreamQuery {
    fn filter(&self) -> ChangeFilter {
        let list = |text: &Option<String>| -> Vec<String> {
            text.as_deref()
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(str::to_owned)
                .collect()
        };
        ChangeFilter {
            sources: list(&self.source),
            kinds: list(&self.kind),
        }
    }

    /// Where to resume: `?since=` first, then the `Last-Event-ID` an `EventSource` sends when
    /// it reconnects.
    pub(crate) fn since(&self, headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
        let header = headers
            .get("last-event-id")
            .and_then(|value| value.to_str().ok());
        match self.since.as_deref().or(header) {
            None | Some("") => Ok(None),
            Some(text) => text.trim().parse().map(Some).map_err(|_| {
                ApiError::bad_request(
                    "invalid_since",
                    "since (or Last-Event-ID) must be a sequence number",
                )
            }),
        }
    }
}

async fn sse(
    State(state): State<SharedState>,
    Query(query): Query<StreamQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let since = query.since(&headers)?;
    let items = state.bus.follow(since, query.filter(), CLIENT_BUFFER);
    let events = futures_util::stream::unfold(items, |mut items| async move {
        let item = items.recv().await?;
        Some((Ok(sse_event(&item)), items))
    });
    // A first comment sends the head at once, so the client knows it is connected.
    let hello = futures_util::stream::once(async { Ok(Event::default().comment("connected")) });
    Ok(Sse::new(futures_util::StreamExt::chain(hello, events)).keep_alive(KeepAlive::default()))
}

fn sse_event(item: &StreamItem) -> Event {
    match item {
        StreamItem::Change(change) => Event::default()
            .id(change.seq.to_string())
            .event(change.kind.as_str())
            .data(serde_json::to_string(change.as_ref()).unwrap_or_default()),
        StreamItem::Lagged { resume_from } => Event::default()
            .event("lagged")
            .data(json!({ "resume_from": resume_from }).to_string()),
        StreamItem::Truncated { oldest } => Event::default()
            .event("truncated")
            .data(json!({ "oldest": oldest }).to_string()),
    }
}

/// The WebSocket frame of an item: a change as JSON (with its `seq`), or a control message
/// whose `kind` is `lagged` or `truncated`.
pub fn ws_frame(item: &StreamItem) -> String {
    match item {
        StreamItem::Change(change) => serde_json::to_string(change.as_ref()).unwrap_or_default(),
        StreamItem::Lagged { resume_from } => {
            json!({ "kind": "lagged", "resume_from": resume_from }).to_string()
        }
        StreamItem::Truncated { oldest } => {
            json!({ "kind": "truncated", "oldest": oldest }).to_string()
        }
    }
}

async fn websocket(
    State(state): State<SharedState>,
    Query(query): Query<StreamQuery>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let since = query.since(&headers)?;
    let items = state.bus.follow(since, query.filter(), CLIENT_BUFFER);
    Ok(
        upgrade
            .on_upgrade(move |socket| pump_to_socket(socket, items, |item| Some(ws_frame(item)))),
    )
}

/// Writes what `items` brings to the socket as text frames (those `frame` renders), pings
/// while quiet, and ends when either side goes away. Frames from the client are read only to
/// notice a close.
pub async fn pump_to_socket(
    mut socket: WebSocket,
    mut items: mpsc::Receiver<StreamItem>,
    frame: impl Fn(&StreamItem) -> Option<String> + Send,
) {
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            item = items.recv() => {
                let Some(item) = item else { break };
                let Some(text) = frame(&item) else { continue };
                if socket.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
            _ = ping.tick() => {
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = socket.send(Message::Close(None)).await;
}

async fn issue_ticket(State(state): State<SharedState>) -> Response {
    let expires = state.clock.now().unix_seconds() + TICKET_SECONDS;
    Json(json!({
        "ticket": state.stream_tickets.sign(expires),
        "expires_in": TICKET_SECONDS,
    }))
    .into_response()
}

/// The key stream tickets are signed with: random, drawn once per process.
pub struct TicketKey(SecretString);

impl TicketKey {
    pub fn random() -> Self {
        let mut key = [0u8; 32];
        if getrandom::getrandom(&mut key).is_err() {
            // Without the OS's randomness, tickets are still unguessable enough for 60 s.
            key = std::array::from_fn(|_| fastrand::u8(..));
        }
        Self(SecretString::from(hex::encode(key)))
    }

    #[cfg(test)]
    fn from_text(text: &str) -> Self {
        Self(SecretString::from(text.to_owned()))
    }

    fn mac(&self, expires: i64) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.expose_secret().as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(b"wharf stream ticket ");
        mac.update(expires.to_string().as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// `EXPIRES.MAC`: the expiry (unix seconds) and its HMAC.
    pub fn sign(&self, expires: i64) -> String {
        format!("{expires}.{}", self.mac(expires))
    }

    /// True for a ticket this key signed that has not expired at `now`.
    pub fn accepts(&self, ticket: &str, now: Timestamp) -> bool {
        let Some((expires, mac)) = ticket.split_once('.') else {
            return false;
        };
        let Ok(expires) = expires.parse::<i64>() else {
            return false;
        };
        let genuine = constant_time_eq(mac.as_bytes(), self.mac(expires).as_bytes());
        genuine && now.unix_seconds() <= expires && expires - now.unix_seconds() <= TICKET_SECONDS
    }
}

fn bearer(headers: &HeaderMap) -> &str {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or("")
}

fn unauthorized() -> Response {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "a valid admin bearer token or stream ticket is required",
    )
    .into_response()
}

/// An admin token in the header, or a valid ticket in the query.
pub async fn require_token_or_ticket(
    State(state): State<SharedState>,
    request: Request,
    next: Next,
) -> Response {
    let presented = bearer(request.headers());
    if !presented.is_empty()
        && state
            .admin_tokens
            .allows(presented, state.storage.tokens.as_ref())
            .await
    {
        return next.run(request).await;
    }
    let ticket = Query::<StreamQuery>::try_from_uri(request.uri())
        .ok()
        .and_then(|query| query.0.ticket);
    match ticket {
        Some(ticket) if state.stream_tickets.accepts(&ticket, state.clock.now()) => {
            next.run(request).await
        }
        _ => unauthorized(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_opens_streams_until_it_expires_and_only_under_its_key() {
        let key = TicketKey::from_text("key");
        let now = Timestamp::from_unix_seconds(1_700_000_000);
        let ticket = key.sign(now.unix_seconds() + TICKET_SECONDS);
        assert!(key.accepts(&ticket, now));
        let later = Timestamp::from_unix_seconds(now.unix_seconds() + TICKET_SECONDS + 1);
        assert!(!key.accepts(&ticket, later));
        assert!(!TicketKey::from_text("other").accepts(&ticket, now));
        assert!(!TicketKey::random().accepts(&ticket, now));
        // A forged expiry far in the future fails both the MAC and the bound.
        let forged = ticket.replacen(&(now.unix_seconds() + 60).to_string(), "9999999999", 1);
        assert!(!key.accepts(&forged, now));
        assert!(!key.accepts("garbage", now));
    }
}
