//! The live stream of the change feed: `GET /api/stream` (Server-Sent Events: `id:` is the
//! sequence number, `event:` the kind, `data:` the change as JSON) and `GET /api/ws` (a
//! WebSocket of JSON text frames). Both resume after `Last-Event-ID` or `?since=SEQ` with
//! exactly what was missed ([`crate::bus::Bus::follow`]). Both are behind the admin token, in
//! the `Authorization` header or, for browsers (whose `EventSource` and `WebSocket` cannot send
//! headers), as a short-lived ticket from `POST /api/stream/ticket` in `?ticket=`. A ticket is
//! an expiry signed (HMAC-SHA256) with the digest of the admin token it was issued to (see
//! [`Ticket`]): nothing is stored, and every instance sharing the database accepts it.

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
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;
use tokio::sync::mpsc;
use utoipa::{IntoParams, ToSchema};

use super::admin::auth;
use super::admin::schema::ErrorBody;
use super::error::ApiError;
use super::{AppState, SharedState};
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
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Resume after this sequence number (what the client saw last); without it (and without
    /// `Last-Event-ID`), the stream starts with the next change.
    since: Option<String>,
    /// Sources to follow, comma-separated (all when absent).
    source: Option<String>,
    /// Kinds to follow, comma-separated; a kind takes its more precise kinds too (`delivery`
    /// takes `delivery.processed`). All when absent.
    kind: Option<String>,
    /// A ticket from `POST /api/stream/ticket`, for clients that cannot send a header.
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

/// The change feed as Server-Sent Events: `id:` the sequence number, `event:` the kind
/// (`delivery.received`, `ledger.created`, …), `data:` the change as JSON. Control events:
/// `lagged` (`{"resume_from": SEQ}`: the client fell behind; what follows was read from the
/// database, nothing is lost) and `truncated` (`{"oldest": SEQ}`: the resume point was
/// pruned). The answer never ends by itself.
#[utoipa::path(get, path = "/api/stream", tag = "stream",
    params(StreamQuery,
        ("Last-Event-ID" = Option<String>, Header,
         description = "The last id seen, sent by an `EventSource` that reconnects (as `since`)")),
    security(("bearer" = []), ("ticket" = [])),
    responses(
        (status = 200, description = "An endless stream of changes", body = String,
         content_type = "text/event-stream"),
        (status = 400, description = "A malformed `since`", body = ErrorBody),
        (status = 401, description = "No valid admin token or ticket", body = ErrorBody)))]
pub async fn sse(
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

/// The change feed as a WebSocket: one JSON text frame per change (with its `seq`), or a
/// control frame whose `kind` is `lagged` or `truncated` (as on `/api/stream`). Resume with
/// `?since=SEQ`.
#[utoipa::path(get, path = "/api/ws", tag = "stream", params(StreamQuery),
    security(("bearer" = []), ("ticket" = [])),
    responses(
        (status = 101, description = "Switching Protocols: the WebSocket of changes"),
        (status = 400, description = "A malformed `since` or not a WebSocket handshake",
         body = ErrorBody),
        (status = 401, description = "No valid admin token or ticket", body = ErrorBody)))]
pub async fn websocket(
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

/// A short-lived ticket that opens the streams.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamTicket {
    /// Pass it as `?ticket=` to `/api/stream`, `/api/ws` or `/api/v2/ws/orders`; any
    /// instance sharing the database accepts it.
    pub ticket: String,
    /// Seconds it stays valid (60).
    pub expires_in: i64,
}

/// A ticket for browsers, whose `EventSource` and `WebSocket` cannot send the admin token in a
/// header: valid for 60 s, for the streams only, on every instance sharing the database, for as
/// long as the token that asked for it is accepted.
#[utoipa::path(post, path = "/api/stream/ticket", tag = "stream",
    security(("bearer" = [])),
    responses((status = 200, body = StreamTicket),
        (status = 401, description = "No valid admin token", body = ErrorBody)))]
pub async fn issue_ticket(
    State(state): State<SharedState>,
    headers: HeaderMap,
) -> Json<StreamTicket> {
    let expires = state.clock.now().unix_seconds() + TICKET_SECONDS;
    let token = auth::digest(bearer(&headers));
    Json(StreamTicket {
        ticket: Ticket::issue(&token, expires),
        expires_in: TICKET_SECONDS,
    })
}

/// A stream ticket, `EXPIRES.NONCE.MAC`: an expiry (unix seconds), 8 random bytes in hex and
/// the HMAC-SHA256 of both keyed with the SHA-256 digest of the admin token it was issued to.
///
/// Nothing is stored, yet every instance sharing the database accepts it: each knows the same
/// digests (the configured tokens' and those in `admin_tokens`), so a ticket is good wherever,
/// and for as long as, the token it came from is. Knowing a digest is what forging takes, and a
/// digest is either derived from the token itself or read from the database, whose reader sees
/// the change feed anyway. The signed text names its purpose, so a MAC made for anything else
/// never passes as a ticket, and a ticket only ever opens the streams (`?ticket=` is read by
/// [`require_token_or_ticket`] alone).
#[derive(Debug, PartialEq, Eq)]
struct Ticket<'a> {
    expires: i64,
    nonce: &'a str,
    mac: &'a str,
}

impl<'a> Ticket<'a> {
    fn issue(token: &auth::TokenDigest, expires: i64) -> String {
        let nonce = hex::encode(fastrand::u64(..).to_le_bytes());
        format!("{expires}.{nonce}.{}", Self::mac(token, expires, &nonce))
    }

    fn mac(token: &auth::TokenDigest, expires: i64, nonce: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(token)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(b"wharf stream ticket v1\n");
        mac.update(format!("{expires}.{nonce}").as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    fn parse(text: &'a str) -> Option<Self> {
        let mut parts = text.splitn(3, '.');
        let expires = parts.next()?.parse().ok()?;
        let nonce = parts.next()?;
        let mac = parts.next()?;
        Some(Self {
            expires,
            nonce,
            mac,
        })
    }

    /// Not expired at `now`, and not claiming more than a ticket's life (a forged far expiry
    /// fails here even before its MAC).
    fn fresh(&self, now: Timestamp) -> bool {
        let left = self.expires - now.unix_seconds();
        (0..=TICKET_SECONDS).contains(&left)
    }

    fn signed_with(&self, token: &auth::TokenDigest) -> bool {
        let expected = Self::mac(token, self.expires, self.nonce);
        constant_time_eq(self.mac.as_bytes(), expected.as_bytes())
    }
}

/// Whether `text` is a fresh ticket signed with a known token's digest. One unknown to this
/// instance makes it read the stored digests again, once: the token may have been minted
/// since (`wharf token create`), its ticket issued by another instance.
async fn ticket_accepted(state: &AppState, text: &str) -> bool {
    let Some(ticket) = Ticket::parse(text) else {
        return false;
    };
    if !ticket.fresh(state.clock.now()) {
        return false;
    }
    let signed = |token: &auth::TokenDigest| ticket.signed_with(token);
    if state.admin_tokens.any_known(signed) {
        return true;
    }
    state
        .admin_tokens
        .reload(state.storage.tokens.as_ref())
        .await;
    state.admin_tokens.any_known(signed)
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
        Some(ticket) if ticket_accepted(&state, &ticket).await => next.run(request).await,
        _ => unauthorized(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        Timestamp::from_unix_seconds(1_700_000_000)
    }

    #[test]
    fn a_ticket_passes_under_its_tokens_digest_until_it_expires() {
        let token = auth::digest("token");
        let text = Ticket::issue(&token, now().unix_seconds() + TICKET_SECONDS);
        let ticket = Ticket::parse(&text).expect("parses");
        assert!(ticket.fresh(now()) && ticket.signed_with(&token));
        assert!(!ticket.signed_with(&auth::digest("other token")));
        let later = Timestamp::from_unix_seconds(now().unix_seconds() + TICKET_SECONDS + 1);
        assert!(!ticket.fresh(later));
        // Two tickets for one token and expiry still differ (the nonce).
        assert_ne!(
            text,
            Ticket::issue(&token, now().unix_seconds() + TICKET_SECONDS)
        );
    }

    #[test]
    fn a_tampered_or_malformed_ticket_fails() {
        let token = auth::digest("token");
        let expires = now().unix_seconds() + TICKET_SECONDS;
        let text = Ticket::issue(&token, expires);
        // A later expiry under the same MAC: inside a ticket's life, but not what was signed.
        let moved = text.replacen(&expires.to_string(), &(expires - 1).to_string(), 1);
        let moved = Ticket::parse(&moved).expect("parses");
        assert!(moved.fresh(now()) && !moved.signed_with(&token));
        // A far expiry fails the bound before the MAC is even looked at.
        let far = text.replacen(&expires.to_string(), "9999999999", 1);
        assert!(!Ticket::parse(&far).expect("parses").fresh(now()));
        let mut flipped = text.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).expect("ascii");
        assert!(!Ticket::parse(&flipped).expect("parses").signed_with(&token));
        for garbage in ["", "garbage", "1.2", "x.y.z"] {
            let parsed = Ticket::parse(garbage);
            assert!(
                parsed.is_none_or(|ticket| !ticket.signed_with(&token)),
                "{garbage}"
            );
        }
    }
}
