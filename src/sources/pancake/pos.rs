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

/// An order's amounts with their currency, each the integer exactly as Pancake POS sent it.
/// Unit: the shop currency's whole unit, as Pancake's API counts it; for VND (the default,
/// and Pancake POS's home currency) that is whole đồng, which is also VND's ISO 4217 minor unit
/// (exponent 0), so `150000` is 150 000 ₫. Wharf never rescales an amount; [`Self::money`] makes
/// a ledger [`Money`] only where Pancake's unit and the minor unit coincide.
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
    read_pos(&super::parse_object(body)?, route_kind)
}

/// [`parse_pos`] on a body already parsed (the ingress parses each body once, strictly).
pub fn read_pos(root: &Value, route_kind: Option<PosKind>) -> Result<PosEvent, PancakeError> {
    super::check_object(root)?;
    if let Some(envelope) = SeedEnvelope::read(root, OwnerField::ShopId)? {
        return from_envelope(envelope);
    }
    let kind = route_kind.ok_or(PancakeError::NoPosKind)?;
    from_object(root, kind)
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

/// An order as Pancake POS posts it to the orders route (trimmed).
pub const ORDER_SAMPLE: &str = r#"{
  "id": 1234,
  "system_id": 262900001234,
  "shop_id": 26290,
  "status": 2,
  "status_name": "shipped",
  "inserted_at": "2024-11-14T03:00:00.000000",
  "updated_at": "2024-11-15T07:44:17.123456",
  "bill_full_name": "Nguyễn Văn A",
  "bill_phone_number": "0901234567",
  "items": [{"id": 1, "variation_id": "e190db2b", "quantity": 2, "retail_price": 140000}],
  "total_price": 280000,
  "total_discount": 10000,
  "total_price_after_sub_discount": 270000,
  "shipping_fee": 30000,
  "cod": 300000,
  "prepaid": 0,
  "money_to_collect": 300000,
  "transfer_money": null,
  "partner": {"partner_id": 1, "extend_code": "GHN123"},
  "status_history": [
    {"status": 0, "updated_at": "2024-11-14T03:00:00"},
    {"status": 1, "updated_at": "2024-11-14T05:12:00"},
    {"status": 2, "updated_at": "2024-11-15T07:44:17"}
  ]
}"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::pancake::{decide, Decision};

    fn parse(body: &str, kind: Option<PosKind>) -> PosEvent {
        parse_pos(body.as_bytes(), kind).expect("a readable POS body")
    }

    fn refused(body: &str, kind: Option<PosKind>) -> PancakeError {
        match parse_pos(body.as_bytes(), kind) {
            Ok(event) => panic!("expected a refusal, got {event:?}"),
            Err(error) => error,
        }
    }

    /// The body of seed 002's curl example for `/api/v1/pancake-pos/webhook`.
    const SEED_CURL: &str = r#"{
    "payload": {
      "eventType": "order_created",
      "shopId": 123,
      "data": {},
      "timestamp": 1234567890
    }
  }"#;

    #[test]
    fn the_seed_curl_example_is_acknowledged_with_nothing_to_write() {
        let event = parse(SEED_CURL, None);
        assert_eq!(event.shape, Shape::SeedEnvelope);
        assert_eq!(event.kind, PosEventType::OrderCreated);
        assert_eq!(event.shop_id.as_deref(), Some("123"));
        assert_eq!(
            event.timestamp,
            Some(Timestamp::from_unix_seconds(1_234_567_890))
        );
        assert_eq!(event.effect, Effect::Ignored(Ignored::NoObjectId));
        assert!(event
            .dedup_key
            .starts_with("pancake-pos:123:order_created:-:sha256:"));
        assert!(event.dedup_key.ends_with(":-"));
        assert_eq!(
            event.reply(Language::Vietnamese).to_string(),
            r#"{"code":200,"message":"Webhook đã được nhận và xử lý thành công","data":{"eventType":"order_created","shopId":123},"status":"success"}"#,
            "the shop id is echoed as sent, a number"
        );
        assert_eq!(
            parse(SEED_CURL, Some(PosKind::Products)).kind,
            PosEventType::OrderCreated,
            "the envelope says what the body is, whatever the route"
        );
    }

    #[test]
    fn the_seed_payload_format_keeps_its_signature() {
        let event = parse(
            r#"{
  "payload": {
    "eventType": "order_created",
    "shopId": 123,
    "data": {
    },
    "timestamp": 1234567890
  },
  "signature": "optional_signature"
}"#,
            None,
        );
        assert_eq!(event.signature.as_deref(), Some("optional_signature"));
    }

    #[test]
    fn every_seed_event_type_writes_its_collection_keyed_by_the_object_id() {
        let table = [
            ("order_created", PC_POS_ORDER, "order"),
            ("order_updated", PC_POS_ORDER, "order"),
            ("order_status_changed", PC_POS_ORDER, "order"),
            ("product_created", PC_POS_PRODUCT, "product"),
            ("product_updated", PC_POS_PRODUCT, "product"),
            ("customer_created", PC_POS_CUSTOMER, "customer"),
            ("customer_updated", PC_POS_CUSTOMER, "customer"),
            ("inventory_updated", PC_POS_VARIATION, "variation"),
        ];
        for (event_type, collection, object) in table {
            let kind = PosEventType::parse(event_type);
            assert_eq!(kind.name(), Some(event_type));
            let body = format!(
                r#"{{"payload":{{"eventType":"{event_type}","shopId":26290,"timestamp":1731656657,
                    "data":{{"{object}":{{"id":"A-1","status":1,"remain_quantity":7,
                    "updated_at":"2024-11-15T07:44:17"}}}}}}}}"#
            );
            let event = parse(&body, None);
            let changes = event.effect.changes();
            assert_eq!(changes.len(), 1, "{event_type}");
            let change = &changes[0];
            assert_eq!(change.collection, collection, "{event_type}");
            assert_eq!(change.id, "A-1");
            assert_eq!(change.owner.as_deref(), Some("26290"));
            let at = Timestamp::from_unix_seconds(1_731_656_657);
            assert_eq!(change.guard, Some(Guard::UpdatedAt(at)));
            let expected = match event_type {
                "order_status_changed" => ChangeOp::StatusHistory {
                    status: PosOrderStatus::Confirmed,
                    at: Some(at),
                },
                "inventory_updated" => ChangeOp::StockChange {
                    levels: vec![StockLevel {
                        warehouse_id: None,
                        remain_quantity: 7,
                    }],
                },
                _ => ChangeOp::Upsert,
            };
            assert_eq!(change.op, expected, "{event_type}");
            assert_eq!(
                event.reply(Language::English)["data"],
                serde_json::json!({"eventType": event_type, "shopId": 26290})
            );
        }
    }

    #[test]
    fn a_status_change_without_updated_at_is_dated_by_the_envelope() {
        let event = parse(
            r#"{"payload":{"eventType":"order_status_changed","shopId":1,"timestamp":1700000000,
                "data":{"id":55,"status":6}}}"#,
            None,
        );
        assert_eq!(
            event.effect.changes()[0].op,
            ChangeOp::StatusHistory {
                status: PosOrderStatus::Canceled,
                at: Some(Timestamp::from_unix_seconds(1_700_000_000)),
            }
        );
        assert_eq!(event.guard, None);
    }

    #[test]
    fn status_and_stock_events_must_say_what_changed() {
        let no_status = refused(
            r#"{"payload":{"eventType":"order_status_changed","shopId":1,"data":{"id":55}}}"#,
            None,
        );
        assert_eq!(no_status.field().as_deref(), Some("payload.data.status"));
        let no_stock = refused(
            r#"{"payload":{"eventType":"inventory_updated","shopId":1,"data":{"variation_id":"v"}}}"#,
            None,
        );
        assert_eq!(
            no_stock.field().as_deref(),
            Some("payload.data.remain_quantity")
        );
    }

    #[test]
    fn an_inventory_update_names_its_variation_and_warehouses() {
        let event = parse(
            r#"{"payload":{"eventType":"inventory_updated","shopId":1,"data":{
                "variation_id":"e190db2b-1163-4cc3-b956-7a9528fbf5ef",
                "variations_warehouses":[
                    {"warehouse_id":"a41b5d73","remain_quantity":20,"actual_remain_quantity":22},
                    {"warehouse_id":"c52e67ad","actual_remain_quantity":1}
                ]}}}"#,
            None,
        );
        let change = &event.effect.changes()[0];
        assert_eq!(change.id, "e190db2b-1163-4cc3-b956-7a9528fbf5ef");
        assert_eq!(
            change.op,
            ChangeOp::StockChange {
                levels: vec![StockLevel {
                    warehouse_id: Some("a41b5d73".to_owned()),
                    remain_quantity: 20,
                }],
            },
            "a warehouse without remain_quantity says nothing about what can be sold"
        );
    }

    #[test]
    fn unknown_pos_event_types_are_ignored_not_refused() {
        let event = parse(
            r#"{"payload":{"eventType":"order_deleted","shopId":1,"data":{"id":5}}}"#,
            None,
        );
        assert_eq!(event.kind, PosEventType::Unknown);
        assert_eq!(event.effect, Effect::Ignored(Ignored::UnknownEventType));
        assert_eq!(
            event.ignore_reason().as_deref(),
            Some("order_deleted is not a Pancake event Wharf handles")
        );
        assert_eq!(PosEventType::Unknown.name(), None);
    }

    #[test]
    fn a_bare_order_from_the_orders_route() {
        let event = parse(ORDER_SAMPLE, Some(PosKind::Orders));
        assert_eq!(event.shape, Shape::Native);
        assert_eq!(event.kind, PosEventType::Entity(PosKind::Orders));
        assert_eq!(event.event_type, "orders");
        assert_eq!(event.shop_id.as_deref(), Some("26290"));
        assert_eq!(event.status, Some(PosOrderStatus::Shipped));
        let at = Timestamp(1_731_656_657_123_456);
        assert_eq!(event.guard, Some(Guard::UpdatedAt(at)));
        let change = &event.effect.changes()[0];
        assert_eq!(change.collection, PC_POS_ORDER);
        assert_eq!(change.owner.as_deref(), Some("26290"));
        assert_eq!(change.id, "1234");
        assert_eq!(
            change.document,
            serde_json::from_str::<Value>(ORDER_SAMPLE).expect("json"),
            "the order is stored as sent"
        );
        assert_eq!(
            change.op,
            ChangeOp::StatusHistory {
                status: PosOrderStatus::Shipped,
                at: Some(at),
            }
        );
        assert_eq!(
            event.dedup_key,
            "pancake-pos:26290:orders:1234:2024-11-15T07:44:17.123456Z:2"
        );
        assert_eq!(
            event.reply(Language::Vietnamese).to_string(),
            r#"{"code":200,"message":"Webhook đã được nhận và xử lý thành công","data":{"eventType":"orders","shopId":26290},"status":"success"}"#
        );
    }

    #[test]
    fn order_amounts_are_kept_as_sent_integers_with_their_currency() {
        let money = parse(ORDER_SAMPLE, Some(PosKind::Orders))
            .money
            .expect("an order has money");
        assert_eq!(money.currency.code(), "VND");
        let amounts: Vec<(&str, i64)> = money
            .amounts
            .iter()
            .map(|amount| (amount.field, amount.amount))
            .collect();
        assert_eq!(
            amounts,
            [
                ("total_price", 280_000),
                ("total_discount", 10_000),
                ("total_price_after_sub_discount", 270_000),
                ("shipping_fee", 30_000),
                ("cod", 300_000),
                ("prepaid", 0),
                ("money_to_collect", 300_000),
            ],
            "absent and null amounts are left out"
        );
        assert_eq!(
            money.money("cod").map(|cod| cod.minor_units),
            Some(300_000),
            "VND's minor unit is the đồng Pancake counts in"
        );
        let usd = parse(
            &ORDER_SAMPLE.replace(
                r#""shop_id": 26290,"#,
                r#""shop_id": 26290, "currency": "usd","#,
            ),
            Some(PosKind::Orders),
        )
        .money
        .expect("money");
        assert_eq!(usd.currency.code(), "USD");
        assert_eq!(usd.amount("cod"), Some(300_000), "never rescaled");
        assert_eq!(
            usd.money("cod"),
            None,
            "Pancake's unit for cents is unknown"
        );
    }

    #[test]
    fn a_fractional_amount_is_refused_naming_the_field() {
        let error = refused(
            &ORDER_SAMPLE.replace(r#""cod": 300000"#, r#""cod": 300000.5"#),
            Some(PosKind::Orders),
        );
        assert_eq!(error.field().as_deref(), Some("cod"));
        assert_eq!(error.code(), "VAL_001");
    }

    #[test]
    fn order_updates_apply_only_when_updated_at_is_newer() {
        let older = parse(ORDER_SAMPLE, Some(PosKind::Orders));
        let newer = parse(
            &ORDER_SAMPLE
                .replace("2024-11-15T07:44:17.123456", "2024-11-16T01:00:00")
                .replace(r#""status": 2,"#, r#""status": 3,"#),
            Some(PosKind::Orders),
        );
        assert_eq!(newer.status, Some(PosOrderStatus::Received));
        assert_eq!(
            decide(newer.guard.as_ref(), older.guard.as_ref()),
            Decision::Apply
        );
        assert_eq!(
            decide(older.guard.as_ref(), newer.guard.as_ref()),
            Decision::Stale,
            "a late 'shipped' must not overwrite 'received'"
        );
    }

    #[test]
    fn a_pos_delivery_is_the_same_event_when_shop_id_updated_at_and_status_match() {
        let first = parse(ORDER_SAMPLE, Some(PosKind::Orders));
        let retry = parse(&ORDER_SAMPLE.replace('\n', ""), Some(PosKind::Orders));
        assert_eq!(first.dedup_key, retry.dedup_key);
        let note_changed = parse(
            &ORDER_SAMPLE.replace("Nguyễn Văn A", "Nguyễn Văn B"),
            Some(PosKind::Orders),
        );
        assert_eq!(
            first.dedup_key, note_changed.dedup_key,
            "the key is shop, id, updated_at and status, nothing else"
        );
        let restatused = parse(
            &ORDER_SAMPLE.replace(r#""status": 2,"#, r#""status": 4,"#),
            Some(PosKind::Orders),
        );
        assert_ne!(first.dedup_key, restatused.dedup_key);
        let other_shop = parse(
            &ORDER_SAMPLE.replace("26290,", "26291,"),
            Some(PosKind::Orders),
        );
        assert_ne!(first.dedup_key, other_shop.dedup_key);
    }

    #[test]
    fn an_order_as_the_api_answers_it_is_unwrapped() {
        let wrapped = format!(r#"{{"success": true, "data": {ORDER_SAMPLE}}}"#);
        let event = parse(&wrapped, Some(PosKind::Orders));
        assert_eq!(event.effect.changes()[0].id, "1234");
        assert_eq!(
            event.dedup_key,
            parse(ORDER_SAMPLE, Some(PosKind::Orders)).dedup_key
        );
    }

    #[test]
    fn bare_customers_products_and_variations_upsert_their_collections() {
        let customer = parse(
            r#"{"id":"6a00ea1f-af2c-4e3e-8f96-46ed462e2243","shop_id":26290,"name":"Trần Thị B",
                "phone_numbers":["0912345678"],"purchased_amount":560000,
                "updated_at":"2024-11-15T02:32:51"}"#,
            Some(PosKind::Customers),
        );
        let change = &customer.effect.changes()[0];
        assert_eq!(change.collection, PC_POS_CUSTOMER);
        assert_eq!(change.id, "6a00ea1f-af2c-4e3e-8f96-46ed462e2243");
        assert_eq!(change.op, ChangeOp::Upsert);
        assert_eq!(customer.status, None);
        assert_eq!(customer.money, None);
        assert_eq!(
            customer.dedup_key,
            "pancake-pos:26290:customers:6a00ea1f-af2c-4e3e-8f96-46ed462e2243:\
             2024-11-15T02:32:51.000000Z:-"
        );

        let product = parse(
            r#"{"id":"3b98a639-9d40-4faa-a692-6662f20e128d","name":"Áo sơ mi",
                "variations":[{"id":"v1","remain_quantity":3}],"updated_at":"2024-11-15T07:44:17"}"#,
            Some(PosKind::Products),
        );
        let change = &product.effect.changes()[0];
        assert_eq!(change.collection, PC_POS_PRODUCT);
        assert_eq!(change.op, ChangeOp::Upsert);
        assert_eq!(
            change.owner, None,
            "a product names no shop; its UUID is unique"
        );
        assert_eq!(
            product.reply(Language::English)["data"],
            serde_json::json!({"eventType": "products", "shopId": null})
        );

        let variation = parse(
            r#"{"id":"e190db2b-1163-4cc3-b956-7a9528fbf5ef","product_id":"3b98a639",
                "retail_price":140000,"remain_quantity":20,
                "variations_warehouses":[{"warehouse_id":"a41b5d73","remain_quantity":20,
                "pending_quantity":0}],"updated_at":"2026-03-09T01:45:58.013616"}"#,
            Some(PosKind::Variations),
        );
        let change = &variation.effect.changes()[0];
        assert_eq!(change.collection, PC_POS_VARIATION);
        assert_eq!(
            change.op,
            ChangeOp::StockChange {
                levels: vec![
                    StockLevel {
                        warehouse_id: Some("a41b5d73".to_owned()),
                        remain_quantity: 20,
                    },
                    StockLevel {
                        warehouse_id: None,
                        remain_quantity: 20,
                    },
                ],
            }
        );
        assert_eq!(
            variation.guard,
            Some(Guard::UpdatedAt(Timestamp(1_773_020_758_013_616)))
        );
        let without_stock = parse(r#"{"id":"v9","retail_price":1}"#, Some(PosKind::Variations));
        assert_eq!(without_stock.effect.changes()[0].op, ChangeOp::Upsert);
        assert!(without_stock.dedup_key.contains(":variations:v9:sha256:"));
    }

    #[test]
    fn a_bare_body_needs_its_kind_an_id_and_for_orders_a_shop() {
        let no_kind = refused(ORDER_SAMPLE, None);
        assert!(matches!(no_kind, PancakeError::NoPosKind));
        assert_eq!(no_kind.field().as_deref(), Some("payload.eventType"));
        let no_id = refused(r#"{"name":"x"}"#, Some(PosKind::Customers));
        assert_eq!(no_id.field().as_deref(), Some("id"));
        let no_shop = refused(r#"{"id":5,"status":0}"#, Some(PosKind::Orders));
        assert_eq!(no_shop.field().as_deref(), Some("shop_id"));
        let nested_shop = parse(
            r#"{"id":5,"status":0,"shop":{"id":7}}"#,
            Some(PosKind::Orders),
        );
        assert_eq!(nested_shop.shop_id.as_deref(), Some("7"));
        let bad_time = refused(
            r#"{"id":5,"shop_id":7,"updated_at":"last tuesday"}"#,
            Some(PosKind::Orders),
        );
        assert!(
            matches!(bad_time, PancakeError::BadTime { ref field, .. } if field == "updated_at")
        );
        let missing_shop = refused(
            r#"{"payload":{"eventType":"order_created","data":{}}}"#,
            None,
        );
        assert_eq!(missing_shop.field().as_deref(), Some("payload.shopId"));
        assert_eq!(refused("{oops", None).code(), "VAL_002");
    }

    #[test]
    fn every_pos_order_status_code_has_a_name() {
        let table = [
            (0, "new", "Mới"),
            (1, "confirmed", "Đã xác nhận"),
            (2, "shipped", "Đã gửi hàng"),
            (3, "received", "Đã nhận"),
            (4, "returning", "Đang hoàn"),
            (5, "returned", "Đã hoàn"),
            (6, "canceled", "Đã hủy"),
            (7, "deleted", "Đã xóa"),
            (8, "packing", "Đang đóng hàng"),
            (9, "waiting_pickup", "Chờ chuyển hàng"),
            (11, "restocking", "Chờ hàng"),
            (12, "waiting_print", "Chờ in"),
            (13, "printed", "Đã in"),
            (15, "partially_returned", "Hoàn một phần"),
            (16, "payment_collected", "Đã thu tiền"),
            (17, "waiting_confirmation", "Chờ xác nhận"),
            (20, "ordered", "Đã đặt hàng"),
        ];
        assert_eq!(table.len(), PosOrderStatus::KNOWN.len());
        for (code, name, label) in table {
            let status = PosOrderStatus::from_code(code);
            assert_eq!(status.code(), code);
            assert_eq!(status.name(), name);
            assert_eq!(status.label_vi(), label);
            assert_ne!(status, PosOrderStatus::Other(code));
        }
        let undocumented = PosOrderStatus::from_code(10);
        assert_eq!(undocumented, PosOrderStatus::Other(10));
        assert_eq!((undocumented.code(), undocumented.name()), (10, "unknown"));
        let event = parse(
            r#"{"id":5,"shop_id":7,"status":"99"}"#,
            Some(PosKind::Orders),
        );
        assert_eq!(event.status, Some(PosOrderStatus::Other(99)));
    }

    #[test]
    fn routes_name_the_four_kinds() {
        for kind in PosKind::ALL {
            assert_eq!(PosKind::from_route(kind.route_segment()), Some(kind));
            assert_eq!(PosEventType::Entity(kind).kind(), Some(kind));
        }
        assert_eq!(PosKind::from_route("inventory"), None);
        assert_eq!(PosKind::Variations.collection(), PC_POS_VARIATION);
    }
}
