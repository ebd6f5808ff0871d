//! Seed 001's WebSocket broadcast ("Database stores order → WebSocket broadcasts to
//! frontend") on its own path, `GET /api/v2/ws/orders`, in its own message shape: one JSON
//! text frame per Refract order created or updated,
//! `{"type":"order_created"|"order_updated","seq":N,"order":{…the orders row…}}`. It rides the
//! same change feed as `/api/ws` (same auth: admin token or ticket; `?since=SEQ` resumes), so
//! an order is broadcast only once it is committed, and never twice.

use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::middleware;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use super::admin::schema::ErrorBody;
use super::error::ApiError;
use super::stream::{pump_to_socket, require_token_or_ticket, StreamQuery};
use super::SharedState;
use crate::bus::{ChangeFilter, StreamItem};
use crate::journal::feed::{LEDGER_CREATED, LEDGER_UPDATED};

/// The ledger table seed 001's orders live in.
const ORDERS: &str = "orders";
/// Frames a client may have waiting before it is told to resync.
const CLIENT_BUFFER: usize = 256;

pub fn router(state: SharedState) -> Router<SharedState> {
    Router::new()
        .route("/api/v2/ws/orders", get(orders_socket))
        .route_layer(middleware::from_fn_with_state(
            state,
            require_token_or_ticket,
        ))
}

/// Seed 001's broadcast: a WebSocket of one JSON text frame per Refract order created or
/// updated, `{"type": "order_created" | "order_updated", "seq": N, "order": {…}}`; after a
/// stall or a pruned `since`, `{"type": "resync", …}` (refetch the list). Resume with
/// `?since=SEQ`; `source` and `kind` are ignored (orders only).
#[utoipa::path(get, path = "/api/v2/ws/orders", tag = "seeds", params(StreamQuery),
    security(("bearer" = []), ("ticket" = [])),
    responses(
        (status = 101, description = "Switching Protocols: the WebSocket of orders"),
        (status = 400, description = "A malformed `since` or not a WebSocket handshake",
         body = ErrorBody),
        (status = 401, description = "No valid admin token or ticket", body = ErrorBody)))]
pub async fn orders_socket(
    State(state): State<SharedState>,
    Query(query): Query<StreamQuery>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let since = query.since(&headers)?;
    let filter = ChangeFilter {
        sources: Vec::new(),
        kinds: vec![LEDGER_CREATED.to_owned(), LEDGER_UPDATED.to_owned()],
    };
    let items = state.bus.follow(since, filter, CLIENT_BUFFER);
    Ok(upgrade.on_upgrade(move |socket| pump_to_socket(socket, items, order_frame)))
}

/// Seed 001's frame for a change to `orders`; nothing for any other change.
pub fn order_frame(item: &StreamItem) -> Option<String> {
    match item {
        StreamItem::Change(change) if change.table.as_deref() == Some(ORDERS) => {
            let kind = if change.kind == LEDGER_CREATED {
                "order_created"
            } else {
                "order_updated"
            };
            Some(json!({ "type": kind, "seq": change.seq, "order": change.data }).to_string())
        }
        StreamItem::Change(_) => None,
        // The subscriber catches up by itself; the client may refetch its list meanwhile.
        StreamItem::Lagged { resume_from } => {
            Some(json!({ "type": "resync", "seq": resume_from }).to_string())
        }
        StreamItem::Truncated { oldest } => {
            Some(json!({ "type": "resync", "oldest": oldest, "order": Value::Null }).to_string())
        }
    }
}
