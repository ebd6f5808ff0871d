//! Pancake POS (pos.pages.fm): [`parse_pos`] for `POST /api/v1/pancake-pos/webhook` (seed 002's
//! envelope, `shopId`) and `/api/v1/pancake-pos/webhook/{orders|customers|products|variations}`.
//!
//! Pancake POS really posts the bare object, an order as its API returns it, with no event name
//! and no signature: what it is comes from the route. Updates apply only when `updated_at` is
//! newer, and a delivery is the same event when shop, id, `updated_at` and status all match.

use serde_json::Value;

use super::envelope::SeedEnvelope;
use super::reply::{self, Language, OwnerField};
use super::{
    digest, id, integer, missing, object_id, object_in, path, present, time, value_digest,
    wrong_type, ChangeOp, CollectionChange, Effect, Guard, Ignored, PancakeError, Shape,
    StockLevel, PC_POS_CUSTOMER, PC_POS_ORDER, PC_POS_PRODUCT, PC_POS_VARIATION,
};
use crate::clock::Timestamp;
use crate::ledger::{Currency, Money};
use crate::sources::NormalizeError;

/// What a bare POS body is, from the last segment of its route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PosKind {
    Orders,
    Customers,
    Products,
    /// Variations and their stock ("inventory").
    Variations,
}

impl PosKind {
    pub const ALL: [Self; 4] = [
        Self::Orders,
        Self::Customers,
        Self::Products,
        Self::Variations,
    ];

    /// `orders`, `customers`, `products` or `variations`; anything else is not a POS route.
    pub fn from_route(segment: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.route_segment() == segment)
    }

    pub fn route_segment(self) -> &'static str {
        match self {
            Self::Orders => "orders",
            Self::Customers => "customers",
            Self::Products => "products",
            Self::Variations => "variations",
        }
    }

    pub fn collection(self) -> &'static str {
        match self {
            Self::Orders => PC_POS_ORDER,
            Self::Customers => PC_POS_CUSTOMER,
            Self::Products => PC_POS_PRODUCT,
            Self::Variations => PC_POS_VARIATION,
        }
    }

    /// The object's name in the singular, as in `data.order` or `variation_id`.
    fn object_name(self) -> &'static str {
        match self {
            Self::Orders => "order",
            Self::Customers => "customer",
            Self::Products => "product",
            Self::Variations => "variation",
        }
    }
}

/// The POS event types: seed 002's table, and the bare object Pancake really posts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PosEventType {
    /// Into `pc_pos_order`.
    OrderCreated,
    /// Updates `pc_pos_order`.
    OrderUpdated,
    /// Updates the order's status in `pc_pos_order` and adds a status history row.
    OrderStatusChanged,
    /// Into `pc_pos_product`.
    ProductCreated,
    ProductUpdated,
    /// Into `pc_pos_customer`.
    CustomerCreated,
    CustomerUpdated,
    /// Changes a variation's stock in `pc_pos_variation`.
    InventoryUpdated,
    /// A bare object posted to `/webhook/{kind}`: Pancake names no event, so the route's
    /// segment stands for one (`orders`, …).
    Entity(PosKind),
    Unknown,
}

impl PosEventType {
    const SEED: [Self; 8] = [
        Self::OrderCreated,
        Self::OrderUpdated,
        Self::OrderStatusChanged,
        Self::ProductCreated,
        Self::ProductUpdated,
        Self::CustomerCreated,
        Self::CustomerUpdated,
        Self::InventoryUpdated,
    ];

    /// A seed event name, exact and case-sensitive; never [`Self::Entity`].
    pub fn parse(event_type: &str) -> Self {
        Self::SEED
            .into_iter()
            .find(|known| known.name() == Some(event_type))
            .unwrap_or(Self::Unknown)
    }

    /// The name as sent, or the route segment for a bare object; `None` for [`Self::Unknown`].
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::OrderCreated => "order_created",
            Self::OrderUpdated => "order_updated",
            Self::OrderStatusChanged => "order_status_changed",
            Self::ProductCreated => "product_created",
            Self::ProductUpdated => "product_updated",
            Self::CustomerCreated => "customer_created",
            Self::CustomerUpdated => "customer_updated",
            Self::InventoryUpdated => "inventory_updated",
            Self::Entity(kind) => kind.route_segment(),
            Self::Unknown => return None,
        })
    }

    /// The kind of object the event is about.
    pub fn kind(self) -> Option<PosKind> {
        match self {
            Self::OrderCreated | Self::OrderUpdated | Self::OrderStatusChanged => {
                Some(PosKind::Orders)
            }
            Self::ProductCreated | Self::ProductUpdated => Some(PosKind::Products),
            Self::CustomerCreated | Self::CustomerUpdated => Some(PosKind::Customers),
            Self::InventoryUpdated => Some(PosKind::Variations),
            Self::Entity(kind) => Some(kind),
            Self::Unknown => None,
        }
    }
}

/// A Pancake POS order status, the integer `status` of an order (Pancake's OpenAPI,
/// `OrderInfo.status`). Listed in the order Pancake shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PosOrderStatus {
    /// 0, Mới.
    New,
    /// 17, Chờ xác nhận.
    WaitingConfirmation,
    /// 11, Chờ hàng: waiting for stock.
    Restocking,
    /// 12, Chờ in.
    WaitingPrint,
    /// 13, Đã in.
    Printed,
    /// 20, Đã đặt hàng: ordered from the supplier.
    Ordered,
    /// 1, Đã xác nhận.
    Confirmed,
    /// 8, Đang đóng hàng.
    Packing,
    /// 9, Chờ chuyển hàng: packed, waiting for the carrier.
    WaitingPickup,
    /// 2, Đã gửi hàng: handed to the carrier.
    Shipped,
    /// 3, Đã nhận: the customer received it.
    Received,
    /// 16, Đã thu tiền: the carrier's cash on delivery reached the shop.
    PaymentCollected,
    /// 4, Đang hoàn.
    Returning,
    /// 15, Hoàn một phần.
    PartiallyReturned,
    /// 5, Đã hoàn.
    Returned,
    /// 6, Đã hủy.
    Canceled,
    /// 7, Đã xóa.
    Deleted,
    /// A code Pancake did not document when this was written; kept, not refused.
    Other(i64),
}

impl PosOrderStatus {
    pub const KNOWN: [Self; 17] = [
        Self::New,
        Self::WaitingConfirmation,
        Self::Restocking,
        Self::WaitingPrint,
        Self::Printed,
        Self::Ordered,
        Self::Confirmed,
        Self::Packing,
        Self::WaitingPickup,
        Self::Shipped,
        Self::Received,
        Self::PaymentCollected,
        Self::Returning,
        Self::PartiallyReturned,
        Self::Returned,
        Self::Canceled,
        Self::Deleted,
    ];

    pub fn from_code(code: i64) -> Self {
        Self::KNOWN
            .into_iter()
            .find(|status| status.code() == code)
            .unwrap_or(Self::Other(code))
    }

    pub fn code(self) -> i64 {
        match self {
            Self::New => 0,
            Self::Confirmed => 1,
            Self::Shipped => 2,
            Self::Received => 3,
            Self::Returning => 4,
            Self::Returned => 5,
            Self::Canceled => 6,
            Self::Deleted => 7,
            Self::Packing => 8,
            Self::WaitingPickup => 9,
            Self::Restocking => 11,
            Self::WaitingPrint => 12,
            Self::Printed => 13,
            Self::PartiallyReturned => 15,
            Self::PaymentCollected => 16,
            Self::WaitingConfirmation => 17,
            Self::Ordered => 20,
            Self::Other(code) => code,
        }
    }

    /// A stable English name, for logs and the ledger.
    pub fn name(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::WaitingConfirmation => "waiting_confirmation",
            Self::Restocking => "restocking",
            Self::WaitingPrint => "waiting_print",
            Self::Printed => "printed",
            Self::Ordered => "ordered",
            Self::Confirmed => "confirmed",
            Self::Packing => "packing",
            Self::WaitingPickup => "waiting_pickup",
            Self::Shipped => "shipped",
            Self::Received => "received",
            Self::PaymentCollected => "payment_collected",
            Self::Returning => "returning",
            Self::PartiallyReturned => "partially_returned",
            Self::Returned => "returned",
            Self::Canceled => "canceled",
            Self::Deleted => "deleted",
            Self::Other(_) => "unknown",
        }
    }

    /// The label Pancake shows in Vietnamese.
    pub fn label_vi(self) -> &'static str {
        match self {
            Self::New => "Mới",
            Self::WaitingConfirmation => "Chờ xác nhận",
            Self::Restocking => "Chờ hàng",
            Self::WaitingPrint => "Chờ in",
            Self::Printed => "Đã in",
            Self::Ordered => "Đã đặt hàng",
            Self::Confirmed => "Đã xác nhận",
            Self::Packing => "Đang đóng hàng",
            Self::WaitingPickup => "Chờ chuyển hàng",
            Self::Shipped => "Đã gửi hàng",
            Self::Received => "Đã nhận",
            Self::PaymentCollected => "Đã thu tiền",
            Self::Returning => "Đang hoàn",
            Self::PartiallyReturned => "Hoàn một phần",
            Self::Returned => "Đã hoàn",
            Self::Canceled => "Đã hủy",
            Self::Deleted => "Đã xóa",
            Self::Other(_) => "Không xác định",
        }
    }
}

/// The order amounts read into [`PosMoney`], as Pancake names them.
pub const ORDER_AMOUNT_FIELDS: [&str; 9] = [
    "total_price",
    "total_discount",
    "total_price_after_sub_discount",
    "shipping_fee",
    "cod",
    "prepaid",
    "money_to_collect",
    "cash",
    "transfer_money",
];

/// The shop currency when an order does not name one: Pancake POS orders carry no currency
/// field, and its shops are Vietnamese.
pub const DEFAULT_CURRENCY: &str = "VND";

/// One order amount, the integer exactly as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PosAmount {
    pub field: &'static str,
    pub amount: i64,
}

/// An order's amounts with their currency. Unit: Pancake POS sends every amount as an integer
/// in the shop currency's whole units, never scaled; for VND that is whole đồng, which is also
/// VND's ISO 4217 minor unit (exponent 0), so `150000` means 150 000 ₫. Wharf keeps the integer
/// as sent and never rescales it; [`Self::money`] makes a ledger [`Money`] only where the two
/// units coincide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PosMoney {
    pub currency: Currency,
    /// The [`ORDER_AMOUNT_FIELDS`] the order has, in that order; absent and `null` are left out.
    pub amounts: Vec<PosAmount>,
}

impl PosMoney {
    pub fn amount(&self, field: &str) -> Option<i64> {
        self.amounts
            .iter()
            .find(|amount| amount.field == field)
            .map(|amount| amount.amount)
    }

    /// The amount as ledger money, when the currency's minor unit is its whole unit (VND):
    /// for a currency with cents Pancake's unit is not documented, and guessing would be off by
    /// a hundred.
    pub fn money(&self, field: &str) -> Option<Money> {
        if self.currency.exponent() != 0 {
            return None;
        }
        self.amount(field).map(|minor_units| Money {
            minor_units,
            currency: self.currency.clone(),
        })
    }
}

/// A Pancake POS webhook, read.
#[derive(Debug, Clone, PartialEq)]
pub struct PosEvent {
    pub shape: Shape,
    /// As sent; for a bare object, the route's segment (`orders`, …).
    pub event_type: String,
    pub kind: PosEventType,
    /// Always present in the seed's layout; a bare object's `shop_id` (orders always have one,
    /// variations none).
    pub shop_id: Option<String>,
    pub timestamp: Option<Timestamp>,
    /// The seed's optional `signature`, unverified.
    pub signature: Option<String>,
    /// `pancake-pos:{shop}:{event}:{id}:{updated_at}:{status}`, `-` for what the body does not
    /// say; without an `updated_at`, `sha256:{hex}` of the timestamp and data stands in for it.
    pub dedup_key: String,
    /// The object's `updated_at`.
    pub guard: Option<Guard>,
    /// An order's status.
    pub status: Option<PosOrderStatus>,
    /// An order's amounts.
    pub money: Option<PosMoney>,
    pub effect: Effect,
    shop_sent: Value,
}

impl PosEvent {
    /// The seed's success body, echoing the event type and the shop id as sent.
    pub fn reply(&self, language: Language) -> Value {
        reply::success(
            language,
            &self.event_type,
            OwnerField::ShopId,
            self.shop_sent.clone(),
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

/// Reads a body posted to `/api/v1/pancake-pos/webhook` (`route_kind: None`) or to
/// `/webhook/{kind}`. The seed's envelope, when present, says what the body is whatever the
/// route; a bare object needs the route's kind.
pub fn parse_pos(body: &[u8], route_kind: Option<PosKind>) -> Result<PosEvent, PancakeError> {
    let root = super::parse_object(body)?;
    if let Some(envelope) = SeedEnvelope::read(&root, OwnerField::ShopId)? {
        return from_envelope(envelope);
    }
    let kind = route_kind.ok_or(PancakeError::NoPosKind)?;
    from_object(&root, kind)
}

fn from_envelope(envelope: SeedEnvelope<'_>) -> Result<PosEvent, PancakeError> {
    use PosEventType as T;
    let kind = PosEventType::parse(&envelope.event_type);
    let rule = match kind {
        T::OrderStatusChanged => OpRule::StatusHistory { required: true },
        T::InventoryUpdated => OpRule::Stock { required: true },
        _ => OpRule::Upsert,
    };
    let read = match kind.kind() {
        None => Err(Ignored::UnknownEventType),
        Some(object_kind) => {
            let name = object_kind.object_name();
            let (object, object_name) = object_in(envelope.data, "payload.data", name);
            match object_id(object, &object_name, name)? {
                None => Err(Ignored::NoObjectId),
                Some(id) => Ok(read_object(Object {
                    value: object,
                    name: &object_name,
                    kind: object_kind,
                    id,
                    owner: Some(envelope.owner_id.clone()),
                    rule,
                    fallback_at: envelope.timestamp,
                })?),
            }
        }
    };
    Ok(event(
        About {
            shape: Shape::SeedEnvelope,
            kind,
            shop_id: Some(envelope.owner_id),
            shop_sent: envelope.owner_sent.clone(),
            timestamp: envelope.timestamp,
            timestamp_sent: envelope.timestamp_sent,
            signature: envelope.signature,
            data: envelope.data,
            event_type: envelope.event_type,
        },
        read,
    ))
}

/// A bare object, or the same wrapped as the API answers it (`{"success": true, "data": {…}}`).
fn from_object(root: &Value, kind: PosKind) -> Result<PosEvent, PancakeError> {
    let (value, name) = match root.get("data") {
        Some(data) if data.is_object() && root.get("id").is_none() => (data, "data"),
        _ => (root, ""),
    };
    let id =
        object_id(value, name, kind.object_name())?.ok_or_else(|| missing(&path(name, "id")))?;
    let shop_field = path(name, "shop_id");
    let shop_id = id_or_nested_shop(value, &shop_field)?;
    if kind == PosKind::Orders && shop_id.is_none() {
        // Order ids count per shop: without the shop the key would be ambiguous.
        return Err(missing(&shop_field));
    }
    let rule = match kind {
        PosKind::Orders => OpRule::StatusHistory { required: false },
        PosKind::Variations => OpRule::Stock { required: false },
        PosKind::Customers | PosKind::Products => OpRule::Upsert,
    };
    let read = read_object(Object {
        value,
        name,
        kind,
        id,
        owner: shop_id.clone(),
        rule,
        fallback_at: None,
    })?;
    Ok(event(
        About {
            shape: Shape::Native,
            event_type: kind.route_segment().to_owned(),
            kind: PosEventType::Entity(kind),
            shop_id,
            shop_sent: present(value, "shop_id").cloned().unwrap_or(Value::Null),
            timestamp: None,
            timestamp_sent: None,
            signature: None,
            data: value,
        },
        Ok(read),
    ))
}

/// `shop_id`, else `shop.id`.
fn id_or_nested_shop(value: &Value, field: &str) -> Result<Option<String>, PancakeError> {
    if let Some(found) = id(value.get("shop_id"), field)? {
        return Ok(Some(found));
    }
    match value.get("shop").filter(|shop| shop.is_object()) {
        Some(shop) => id(shop.get("id"), &field.replace("shop_id", "shop.id")),
        None => Ok(None),
    }
}

/// Which op a change takes.
#[derive(Debug, Clone, Copy)]
enum OpRule {
    Upsert,
    /// A status history row; `required`: the event says the status changed, so it must say to
    /// what.
    StatusHistory {
        required: bool,
    },
    /// A stock change; `required`: the event is about stock, so it must carry some.
    Stock {
        required: bool,
    },
}

struct Object<'a> {
    value: &'a Value,
    name: &'a str,
    kind: PosKind,
    id: String,
    owner: Option<String>,
    rule: OpRule,
    /// When the status changed if the object has no `updated_at`: the envelope's timestamp.
    fallback_at: Option<Timestamp>,
}

/// What one object yields.
struct Read {
    change: CollectionChange,
    updated_at: Option<Timestamp>,
    status: Option<PosOrderStatus>,
    money: Option<PosMoney>,
}

fn read_object(object: Object<'_>) -> Result<Read, PancakeError> {
    let Object {
        value,
        name,
        kind,
        id,
        owner,
        rule,
        fallback_at,
    } = object;
    let updated_at = time(present(value, "updated_at"), &path(name, "updated_at"))?;
    let (status, money) = if kind == PosKind::Orders {
        let status =
            integer(value.get("status"), &path(name, "status"))?.map(PosOrderStatus::from_code);
        (status, Some(order_money(value, name)?))
    } else {
        (None, None)
    };
    let op = match rule {
        OpRule::Upsert => ChangeOp::Upsert,
        OpRule::StatusHistory { required } => match status {
            Some(status) => ChangeOp::StatusHistory {
                status,
                at: updated_at.or(fallback_at),
            },
            None if required => return Err(missing(&path(name, "status"))),
            None => ChangeOp::Upsert,
        },
        OpRule::Stock { required } => {
            let levels = stock_levels(value, name)?;
            if levels.is_empty() {
                if required {
                    return Err(missing(&path(name, "remain_quantity")));
                }
                ChangeOp::Upsert
            } else {
                ChangeOp::StockChange { levels }
            }
        }
    };
    Ok(Read {
        change: CollectionChange {
            collection: kind.collection(),
            owner,
            id,
            document: super::checked_document(value, name)?,
            op,
            guard: updated_at.map(Guard::UpdatedAt),
        },
        updated_at,
        status,
        money,
    })
}

fn order_money(order: &Value, name: &str) -> Result<PosMoney, PancakeError> {
    let currency_field = path(name, "currency");
    let currency = match present(order, "currency") {
        None => Currency::parse(DEFAULT_CURRENCY),
        Some(Value::String(code)) => Currency::parse(code),
        Some(other) => return Err(wrong_type(currency_field, "a currency code", other)),
    }
    .map_err(|error| NormalizeError::Money {
        field: currency_field,
        error,
    })?;
    let mut amounts = Vec::new();
    for field in ORDER_AMOUNT_FIELDS {
        if let Some(amount) = integer(order.get(field), &path(name, field))? {
            amounts.push(PosAmount { field, amount });
        }
    }
    Ok(PosMoney { currency, amounts })
}

/// Stock levels from `variations_warehouses[]` (per warehouse) and a top-level
/// `remain_quantity` (all warehouses, or the one `warehouse_id` names). Entries without
/// `remain_quantity` say nothing about stock and are skipped.
fn stock_levels(value: &Value, name: &str) -> Result<Vec<StockLevel>, PancakeError> {
    let mut levels = Vec::new();
    if let Some(warehouses) = present(value, "variations_warehouses") {
        let field = path(name, "variations_warehouses");
        let Value::Array(items) = warehouses else {
            return Err(wrong_type(field, "an array", warehouses));
        };
        for (index, item) in items.iter().enumerate() {
            let item_name = format!("{field}.{index}");
            if !item.is_object() {
                return Err(wrong_type(item_name, "an object", item));
            }
            let quantity = integer(
                item.get("remain_quantity"),
                &path(&item_name, "remain_quantity"),
            )?;
            if let Some(remain_quantity) = quantity {
                levels.push(StockLevel {
                    warehouse_id: id(item.get("warehouse_id"), &path(&item_name, "warehouse_id"))?,
                    remain_quantity,
                });
            }
        }
    }
    if let Some(remain_quantity) =
        integer(value.get("remain_quantity"), &path(name, "remain_quantity"))?
    {
        levels.push(StockLevel {
            warehouse_id: id(value.get("warehouse_id"), &path(name, "warehouse_id"))?,
            remain_quantity,
        });
    }
    Ok(levels)
}

/// What the body says around its object.
struct About<'a> {
    shape: Shape,
    event_type: String,
    kind: PosEventType,
    shop_id: Option<String>,
    shop_sent: Value,
    timestamp: Option<Timestamp>,
    timestamp_sent: Option<&'a Value>,
    signature: Option<String>,
    data: &'a Value,
}

fn event(about: About<'_>, read: Result<Read, Ignored>) -> PosEvent {
    let (id, updated_at, status) = match &read {
        Ok(read) => (Some(read.change.id.as_str()), read.updated_at, read.status),
        Err(_) => (None, None, None),
    };
    let dedup_key = dedup_key(
        about.shop_id.as_deref(),
        &about.event_type,
        id,
        updated_at,
        status,
        about.timestamp_sent,
        about.data,
    );
    let (guard, money, effect) = match read {
        Ok(read) => (
            read.change.guard,
            read.money,
            Effect::Changes(vec![read.change]),
        ),
        Err(ignored) => (None, None, Effect::Ignored(ignored)),
    };
    PosEvent {
        shape: about.shape,
        event_type: about.event_type,
        kind: about.kind,
        shop_id: about.shop_id,
        timestamp: about.timestamp,
        signature: about.signature,
        dedup_key,
        guard,
        status,
        money,
        effect,
        shop_sent: about.shop_sent,
    }
}

fn dedup_key(
    shop: Option<&str>,
    event_type: &str,
    id: Option<&str>,
    updated_at: Option<Timestamp>,
    status: Option<PosOrderStatus>,
    timestamp_sent: Option<&Value>,
    data: &Value,
) -> String {
    let version = match updated_at {
        Some(at) => at.to_rfc3339(),
        None => {
            let sent = timestamp_sent.map_or_else(|| "-".to_owned(), Value::to_string);
            format!("sha256:{}", digest(&[&sent, &value_digest(data)]))
        }
    };
    let status = status.map_or_else(|| "-".to_owned(), |status| status.code().to_string());
    format!(
        "pancake-pos:{}:{event_type}:{}:{version}:{status}",
        shop.unwrap_or("-"),
        id.unwrap_or("-"),
    )
}
