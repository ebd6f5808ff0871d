//! The layouts of a Pancake body, and [`parse_pancake`] for `POST /api/v1/pancake/webhook`.
//!
//! Seed 002 describes an envelope, `{"payload": {"eventType", "pageId", "data", "timestamp"},
//! "signature"}`, with its own event names (`conversation_updated`, `message_received`, …).
//! Pancake itself posts `{"page_id", "event_type", "request_id", "timestamp", "data"}` with event
//! types `messaging`, `conversation`, `post`, `subscription` and `connect_status`, unsigned.
//! Both are read; the event type, not the layout, decides the collection changes.

use serde_json::Value;

use super::reply::{self, Language, OwnerField};
use super::{
    digest, id, integer, missing, object_id, object_in, path, present, time, value_digest,
    wrong_type, ChangeOp, CollectionChange, Effect, Guard, Ignored, PancakeError, Shape,
    FB_CONVERSATION, FB_CUSTOMER, FB_MESSAGE, PC_ORDER,
};
use crate::clock::Timestamp;

/// Stands in for an absent `data`.
static NO_DATA: Value = Value::Null;

/// Seed 002's envelope, read from either route (`pageId` on one, `shopId` on the other).
#[derive(Debug)]
pub(super) struct SeedEnvelope<'a> {
    pub event_type: String,
    /// The page or shop id as text, for keys.
    pub owner_id: String,
    /// The page or shop id as sent, echoed in the reply.
    pub owner_sent: &'a Value,
    /// `null` when absent.
    pub data: &'a Value,
    pub timestamp_sent: Option<&'a Value>,
    pub timestamp: Option<Timestamp>,
    pub signature: Option<String>,
}

impl<'a> SeedEnvelope<'a> {
    /// `None` when the body has no `payload`, i.e. is not in the seed's layout. `eventType` and
    /// the owner id are required (the seed's workflow validates both); `data` may be absent.
    pub(super) fn read(root: &'a Value, owner: OwnerField) -> Result<Option<Self>, PancakeError> {
        let Some(payload) = root.get("payload") else {
            return Ok(None);
        };
        if !payload.is_object() {
            return Err(wrong_type("payload", "an object", payload));
        }
        let event_type = event_type(payload.get("eventType"), "payload.eventType")?;
        let owner_id = id(payload.get(owner.key()), owner.payload_path())?
            .ok_or_else(|| missing(owner.payload_path()))?;
        let owner_sent = payload.get(owner.key()).unwrap_or(&NO_DATA);
        let data = match payload.get("data") {
            None => &NO_DATA,
            Some(data) if data.is_object() || data.is_null() => data,
            Some(other) => return Err(wrong_type("payload.data", "an object", other)),
        };
        let timestamp_sent = present(payload, "timestamp");
        Ok(Some(Self {
            event_type,
            owner_id,
            owner_sent,
            data,
            timestamp_sent,
            timestamp: time(timestamp_sent, "payload.timestamp")?,
            signature: signature(root)?,
        }))
    }
}

/// An event type: non-blank text that fits a key.
fn event_type(value: Option<&Value>, field: &str) -> Result<String, PancakeError> {
    match value {
        None | Some(Value::Null) => Err(missing(field)),
        Some(text @ Value::String(_)) => id(Some(text), field)?.ok_or_else(|| missing(field)),
        Some(other) => Err(wrong_type(field, "a string", other)),
    }
}

/// The seed's optional top-level `signature`, kept for a verifier; nothing checks it here.
fn signature(root: &Value) -> Result<Option<String>, PancakeError> {
    match present(root, "signature") {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(other) => Err(wrong_type("signature", "a string", other)),
    }
}

/// The Pancake event types Wharf knows: seed 002's table, then Pancake's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PancakeEventType {
    /// Seed: into `fb_conversation`.
    ConversationUpdated,
    /// Seed: into `fb_message`.
    MessageReceived,
    /// Seed: into `pc_order`.
    OrderCreated,
    /// Seed: updates `pc_order`.
    OrderUpdated,
    /// Seed: updates `fb_customer`.
    CustomerUpdated,
    /// Pancake: a new or edited message or comment; `data.conversation` into `fb_conversation`,
    /// `data.message` into `fb_message` (`data.post`, a comment's post, stays in the stored
    /// delivery: seed 002 has no post collection).
    Messaging,
    /// Pancake: a conversation changed; into `fb_conversation`, ordered by its `version`.
    Conversation,
    /// Pancake: a post created or updated; nothing stored.
    Post,
    /// Pancake: the page's subscription changed; nothing stored.
    Subscription,
    /// Pancake: the page's connection status changed; nothing stored.
    ConnectStatus,
    Unknown,
}

impl PancakeEventType {
    const ALL: [Self; 10] = [
        Self::ConversationUpdated,
        Self::MessageReceived,
        Self::OrderCreated,
        Self::OrderUpdated,
        Self::CustomerUpdated,
        Self::Messaging,
        Self::Conversation,
        Self::Post,
        Self::Subscription,
        Self::ConnectStatus,
    ];

    /// Exact, case-sensitive: Pancake sends these names in lower case.
    pub fn parse(event_type: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|known| known.name() == Some(event_type))
            .unwrap_or(Self::Unknown)
    }

    /// The name as sent; `None` for [`Self::Unknown`].
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::ConversationUpdated => "conversation_updated",
            Self::MessageReceived => "message_received",
            Self::OrderCreated => "order_created",
            Self::OrderUpdated => "order_updated",
            Self::CustomerUpdated => "customer_updated",
            Self::Messaging => "messaging",
            Self::Conversation => "conversation",
            Self::Post => "post",
            Self::Subscription => "subscription",
            Self::ConnectStatus => "connect_status",
            Self::Unknown => return None,
        })
    }
}

/// A Pancake webhook, read.
#[derive(Debug, Clone, PartialEq)]
pub struct PancakeEvent {
    pub shape: Shape,
    /// As sent.
    pub event_type: String,
    pub kind: PancakeEventType,
    /// Always present in the seed's layout; Pancake's `subscription` events name no page.
    pub page_id: Option<String>,
    /// Pancake's `request_id`, the same on every retry of one request.
    pub request_id: Option<String>,
    pub timestamp: Option<Timestamp>,
    /// The seed's optional `signature`, unverified.
    pub signature: Option<String>,
    /// Unique per event: `pancake:{page}:request:{request_id}` when Pancake sends one, else
    /// `pancake:{page}:{event_type}:sha256:{hex}` over the type, page, object ids and the
    /// conversation version, or without a version the timestamp and the data.
    pub dedup_key: String,
    /// The conversation's version, when the event carries one.
    pub guard: Option<Guard>,
    pub effect: Effect,
    page_sent: Value,
}

impl PancakeEvent {
    /// The seed's success body, echoing the event type and the page id as sent.
    pub fn reply(&self, language: Language) -> Value {
        reply::success(
            language,
            &self.event_type,
            OwnerField::PageId,
            self.page_sent.clone(),
        )
    }

    /// Why nothing is written, when nothing is.
    pub fn ignore_reason(&self) -> Option<String> {
        match &self.effect {
            Effect::Ignored(ignored) => Some(ignored.reason(&self.event_type)),
            Effect::Changes(_) => None,
        }
    }
}

/// Reads a body posted to `/api/v1/pancake/webhook`, in either layout.
pub fn parse_pancake(body: &[u8]) -> Result<PancakeEvent, PancakeError> {
    let root = super::parse_object(body)?;
    let parts = match SeedEnvelope::read(&root, OwnerField::PageId)? {
        Some(envelope) => Parts {
            shape: Shape::SeedEnvelope,
            event_type: envelope.event_type,
            page_id: Some(envelope.owner_id),
            page_sent: envelope.owner_sent.clone(),
            request_id: None,
            timestamp: envelope.timestamp,
            timestamp_sent: envelope.timestamp_sent,
            signature: envelope.signature,
            data: envelope.data,
            data_name: "payload.data",
        },
        None => native_parts(&root)?,
    };
    build(&root, parts)
}

/// What both layouts say, before the event type is interpreted.
struct Parts<'a> {
    shape: Shape,
    event_type: String,
    page_id: Option<String>,
    page_sent: Value,
    request_id: Option<String>,
    timestamp: Option<Timestamp>,
    timestamp_sent: Option<&'a Value>,
    signature: Option<String>,
    data: &'a Value,
    data_name: &'static str,
}

fn native_parts(root: &Value) -> Result<Parts<'_>, PancakeError> {
    if root.get("event_type").is_none() {
        // Neither layout: name the seed's field, the documented contract.
        return Err(missing("payload.eventType"));
    }
    let data = match root.get("data") {
        None => &NO_DATA,
        Some(data) if data.is_object() || data.is_null() => data,
        Some(other) => return Err(wrong_type("data", "an object", other)),
    };
    let timestamp_sent = present(root, "timestamp");
    Ok(Parts {
        shape: Shape::Native,
        event_type: event_type(root.get("event_type"), "event_type")?,
        page_id: id(root.get("page_id"), "page_id")?,
        page_sent: present(root, "page_id").cloned().unwrap_or(Value::Null),
        request_id: id(root.get("request_id"), "request_id")?,
        timestamp: time(timestamp_sent, "timestamp")?,
        timestamp_sent,
        signature: None,
        data,
        data_name: "data",
    })
}

fn build(root: &Value, parts: Parts<'_>) -> Result<PancakeEvent, PancakeError> {
    let kind = PancakeEventType::parse(&parts.event_type);
    let effect = effect(kind, root, parts.data, parts.data_name, &parts.page_id)?;
    let changes = effect.changes();
    if !changes.is_empty() && parts.page_id.is_none() {
        return Err(missing("page_id"));
    }
    let guard = changes
        .iter()
        .find(|change| change.collection == FB_CONVERSATION)
        .and_then(|change| change.guard);
    let dedup_key = dedup_key(&parts, changes, guard);
    Ok(PancakeEvent {
        shape: parts.shape,
        kind,
        page_id: parts.page_id,
        request_id: parts.request_id,
        timestamp: parts.timestamp,
        signature: parts.signature,
        dedup_key,
        guard,
        effect,
        page_sent: parts.page_sent,
        event_type: parts.event_type,
    })
}

fn effect(
    kind: PancakeEventType,
    root: &Value,
    data: &Value,
    data_name: &str,
    page_id: &Option<String>,
) -> Result<Effect, PancakeError> {
    use PancakeEventType as T;
    let single = |collection, name| -> Result<Vec<CollectionChange>, PancakeError> {
        let (object, object_name) = object_in(data, data_name, name);
        Ok(
            change(collection, object, &object_name, name, page_id, root, data)?
                .into_iter()
                .collect(),
        )
    };
    let changes = match kind {
        T::ConversationUpdated | T::Conversation => single(FB_CONVERSATION, "conversation")?,
        T::MessageReceived => single(FB_MESSAGE, "message")?,
        T::OrderCreated | T::OrderUpdated => single(PC_ORDER, "order")?,
        T::CustomerUpdated => single(FB_CUSTOMER, "customer")?,
        T::Messaging => {
            let mut changes = Vec::new();
            for (collection, name) in [(FB_CONVERSATION, "conversation"), (FB_MESSAGE, "message")] {
                if let Some(object) = data.get(name).filter(|object| object.is_object()) {
                    let object_name = path(data_name, name);
                    changes.extend(change(
                        collection,
                        object,
                        &object_name,
                        name,
                        page_id,
                        root,
                        data,
                    )?);
                }
            }
            changes
        }
        T::Post | T::Subscription | T::ConnectStatus => {
            return Ok(Effect::Ignored(Ignored::NotStored))
        }
        T::Unknown => return Ok(Effect::Ignored(Ignored::UnknownEventType)),
    };
    Ok(if changes.is_empty() {
        Effect::Ignored(Ignored::NoObjectId)
    } else {
        Effect::Changes(changes)
    })
}

/// The upsert of one object, `None` when it names no id. A conversation is guarded by its
/// `version`, found on the conversation, else on `data`, else at the top level.
fn change(
    collection: &'static str,
    object: &Value,
    object_name: &str,
    name: &str,
    page_id: &Option<String>,
    root: &Value,
    data: &Value,
) -> Result<Option<CollectionChange>, PancakeError> {
    let Some(id) = object_id(object, object_name, name)? else {
        return Ok(None);
    };
    let guard = if collection == FB_CONVERSATION {
        version(object, object_name, data, root)?.map(Guard::Version)
    } else {
        None
    };
    Ok(Some(CollectionChange {
        collection,
        owner: page_id.clone(),
        id,
        document: super::checked_document(object, object_name)?,
        op: ChangeOp::Upsert,
        guard,
    }))
}

fn version(
    object: &Value,
    object_name: &str,
    data: &Value,
    root: &Value,
) -> Result<Option<u64>, PancakeError> {
    let field = path(object_name, "version");
    let found = [
        (present(object, "version"), field.as_str()),
        (present(data, "version"), "data.version"),
        (present(root, "version"), "version"),
    ]
    .into_iter()
    .find(|(value, _)| value.is_some());
    let Some((value, field)) = found else {
        return Ok(None);
    };
    let Some(number) = integer(value, field)? else {
        return Ok(None);
    };
    u64::try_from(number)
        .map(Some)
        .map_err(|_| PancakeError::WrongType {
            field: field.to_owned(),
            expected: "a version (a whole number, 0 or more)",
            found: "a negative number",
        })
}

fn dedup_key(parts: &Parts<'_>, changes: &[CollectionChange], guard: Option<Guard>) -> String {
    let page = parts.page_id.as_deref().unwrap_or("-");
    if let Some(request_id) = &parts.request_id {
        return format!("pancake:{page}:request:{request_id}");
    }
    let mut lines = vec![parts.event_type.clone(), page.to_owned()];
    lines.extend(
        changes
            .iter()
            .map(|change| format!("{}={}", change.collection, change.id)),
    );
    match guard {
        Some(Guard::Version(version)) => lines.push(format!("version={version}")),
        // Without a version nothing else tells two updates of one object apart: a message
        // edit keeps its id.
        _ => {
            let sent = parts
                .timestamp_sent
                .map_or_else(|| "-".to_owned(), Value::to_string);
            lines.push(format!("timestamp={sent}"));
            lines.push(format!("data={}", value_digest(parts.data)));
        }
    }
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    format!(
        "pancake:{page}:{}:sha256:{}",
        parts.event_type,
        digest(&lines)
    )
}
