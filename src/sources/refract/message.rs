//! The Refract message itself: labelled lines in, one [`RefractMessage`] out. Every shape (text,
//! Discord body, flat JSON) feeds the same `Collector`, so the same message parses to the same
//! order whichever way it arrived. Pure, and it never panics, whatever the input.

use std::collections::{HashMap, HashSet};
use std::fmt;

use thiserror::Error;

use super::discord::{strip_markdown, MultipartError};
use crate::ledger::Currency;

/// What one Refract message says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefractMessage {
    Order(Box<RefractOrder>),
    /// Discord's or Refract's "Test Notification": genuine, but no order. The caller stores it
    /// as ignored and answers 2xx, so the sender's test button succeeds.
    TestNotification {
        title: String,
    },
}

/// Why a body is not a Refract message. Every message starts with "Could not parse webhook
/// content", the words seed 001's troubleshooting section tells users to look for.
#[derive(Debug, Error)]
pub enum ParseError {
    #[error("Could not parse webhook content: the body is empty")]
    Empty,
    #[error("Could not parse webhook content: the body is not valid UTF-8")]
    NotUtf8,
    #[error("Could not parse webhook content: the JSON is invalid: {0}")]
    Json(#[source] serde_json::Error),
    #[error("Could not parse webhook content: the JSON body is {0}, not an object")]
    NotAnObject(&'static str),
    #[error("Could not parse webhook content: {0}")]
    Multipart(#[source] MultipartError),
    #[error(
        "Could not parse webhook content: no order number (an `Order Number` line, embed field \
         or JSON key is the one thing a message must carry)"
    )]
    MissingOrderNumber,
}

/// An order's status.
///
/// A `Status` label, when the message has one, decides ([`StatusOrigin::Label`]); otherwise the
/// title does ([`StatusOrigin::Title`]), read from the title line, the embed title or the embed
/// author name (`Successful Checkout | Best Buy US`); otherwise the status is `verified` by
/// default ([`StatusOrigin::Default`]), which an update must not write. Both are matched on
/// whole words, case-insensitively, in this order, first match wins:
///
/// | Words in the title or `Status` value                                   | Status        |
/// |------------------------------------------------------------------------|---------------|
/// | `test`, `testing` (title only: "Test Notification")                    | not an order: [`RefractMessage::TestNotification`] |
/// | `declined`, `decline`, `denied`, `rejected` ("Card Declined")          | `declined`    |
/// | `cancelled`, `canceled`, `cancel`, `cancellation` ("Order Cancelled")  | `cancelled`   |
/// | `unsuccessful`, `failed`, `fail`, `failure`, `error` ("Checkout Failed") | `failed`    |
/// | `refunded`, `refund`                                                   | `refunded`    |
/// | `delivered`                                                            | `delivered`   |
/// | `shipped`, `dispatched`, `transit` ("Order Shipped", "In Transit")     | `shipped`     |
/// | `pending`, `queued`                                                    | `pending`     |
/// | `processing`                                                           | `processing`  |
/// | `update`, `updated` (title only: "Order Update", "Tracking Update")    | none: the status is left as it was |
/// | `successful`, `success`, `successfully`, `verified`, `checkout`, `checked`, `placed`, `confirmed`, `copped`, `purchased` ("Successful Checkout") | `verified` |
/// | anything else: a title                                                 | none          |
/// | anything else: a `Status` value                                        | [`OrderStatus::Other`], lower-cased |
///
/// Failure words come before `checkout`, so "Checkout Failed" and "Unsuccessful Checkout" are
/// failures, not checkouts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OrderStatus {
    Verified,
    Pending,
    Processing,
    Shipped,
    Delivered,
    Cancelled,
    Declined,
    Failed,
    Refunded,
    /// A `Status` value outside the table, lower-cased, e.g. `on hold`.
    Other(String),
}

impl OrderStatus {
    /// The text for the `status` column.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Verified => "verified",
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Shipped => "shipped",
            Self::Delivered => "delivered",
            Self::Cancelled => "cancelled",
            Self::Declined => "declined",
            Self::Failed => "failed",
            Self::Refunded => "refunded",
            Self::Other(text) => text,
        }
    }

    /// Reads a `Status` value, e.g. `shipped` or `Pending`.
    pub fn from_label(value: &str) -> Self {
        match classify(value) {
            Some(TitleMeaning::Status(status)) => status,
            _ => Self::Other(value.trim().to_lowercase()),
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where [`RefractOrder::status`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusOrigin {
    /// A `Status` label or key.
    Label,
    /// The title ("Successful Checkout | …").
    Title,
    /// Neither said anything: `verified`, for a new order only; it is not in
    /// [`RefractOrder::fields_present`], so an update leaves the stored status alone.
    Default,
}

/// A price as sent, and as a plain decimal where it is one recognizable amount.
///
/// Separators: when both `.` and `,` appear, the last one is the decimal point (`1,234.56`,
/// `1.234,56`). A separator that appears more than once groups thousands (`1,234,567`). A
/// single separator followed by exactly three digits, after one to three digits that do not
/// start with `0`, groups thousands (`$1,299` and `€1.299` are 1299), unless the currency has
/// three decimals (`KWD 1.250` is 1.250); any other single separator is the decimal point
/// (`12,50`, `0.999`, `1234,567`). Spaces and apostrophes group thousands (`1 299,00 €`,
/// `CHF 1'299.00`). Groups after the first must have three digits (two are accepted before
/// the last, for Indian `₹1,23,456`).
///
/// Currency: ISO codes (`USD`, `eur`) and symbols (`€ £ ¥ ₹ ₩ ₽ ₺ ₪ ₱ ฿ zł Kč`, `R$ US$ CA$
/// C$ A$ AU$ NZ$ MX$ HK$ S$ NT$`) are recognized before or after the number. A bare `$` is the
/// message's `Currency` label if it has one, else the dollar of the store's region suffix
/// (`Best Buy CA` → CAD; `US`, `CA`, `AU`, `NZ`, `SG`, `HK`, `MX`), else USD. `kr` (SEK, NOK or
/// DKK) and a bare number take the `Currency` label, or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    /// Exactly as sent, e.g. `R$ 1.299,90`.
    pub raw: String,
    /// `.` as the point, no grouping, sign kept, e.g. `1299.90`. `None` when the text is not
    /// one amount with at most a currency around it (`Free`, `2 x $10`).
    pub amount: Option<String>,
    pub currency: Option<Currency>,
}

impl Price {
    /// Parses a price on its own, a bare `$` being USD.
    pub fn parse(raw: &str) -> Self {
        parse_price(raw, &Currency::parse("USD").ok(), None)
    }
}

impl fmt::Display for Price {
    /// `299.99 USD`, `299.99` without a currency, the raw text without an amount.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.amount, &self.currency) {
            (Some(amount), Some(currency)) => write!(f, "{amount} {}", currency.code()),
            (Some(amount), None) => f.write_str(amount),
            (None, _) => f.write_str(&self.raw),
        }
    }
}

/// One order as a Refract message describes it. Everything but the order number is optional:
/// `None` means the message did not say, never "clear the stored value".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefractOrder {
    /// Without the leading `#` (`BBY01-807102506907`).
    pub order_number: String,
    pub status: OrderStatus,
    pub status_origin: StatusOrigin,
    /// From a `Store`/`Site` label, else the title (`Successful Checkout | Best Buy US`).
    pub store: Option<String>,
    pub product: Option<String>,
    pub sku: Option<String>,
    pub size: Option<String>,
    pub price: Option<Price>,
    /// `None` when not sent: the seed's default of 1 is for a new order, not for an update.
    pub quantity: Option<u32>,
    pub total: Option<Price>,
    pub commission: Option<Price>,
    pub email: Option<String>,
    pub customer_name: Option<String>,
    pub profile: Option<String>,
    /// `Proxy Details`, with any proxy password replaced by `***`.
    pub proxy: Option<String>,
    pub share_link: Option<String>,
    pub tracking_number: Option<String>,
    pub reference_number: Option<String>,
    pub payment_method: Option<String>,
    pub shipping_address: Option<String>,
    pub shipping_method: Option<String>,
    pub notes: Option<String>,
    pub mode: Option<String>,
    /// As sent (a `Checkout Time` label, else a Discord embed's `timestamp`).
    pub checkout_time: Option<String>,
    pub image_url: Option<String>,
    /// Labels this parser does not know, and known labels repeated with another value, in the
    /// order sent.
    pub extra: Vec<(String, String)>,
}

/// A field of [`RefractOrder`], named as its database column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderField {
    OrderNumber,
    Status,
    Store,
    Product,
    Sku,
    Size,
    Price,
    Quantity,
    Total,
    Commission,
    Email,
    CustomerName,
    Profile,
    Proxy,
    ShareLink,
    TrackingNumber,
    ReferenceNumber,
    PaymentMethod,
    ShippingAddress,
    ShippingMethod,
    Notes,
    Mode,
    CheckoutTime,
    ImageUrl,
}

impl OrderField {
    pub const ALL: [Self; 24] = [
        Self::OrderNumber,
        Self::Status,
        Self::Store,
        Self::Product,
        Self::Sku,
        Self::Size,
        Self::Price,
        Self::Quantity,
        Self::Total,
        Self::Commission,
        Self::Email,
        Self::CustomerName,
        Self::Profile,
        Self::Proxy,
        Self::ShareLink,
        Self::TrackingNumber,
        Self::ReferenceNumber,
        Self::PaymentMethod,
        Self::ShippingAddress,
        Self::ShippingMethod,
        Self::Notes,
        Self::Mode,
        Self::CheckoutTime,
        Self::ImageUrl,
    ];

    /// The column name, seed 001's where it has one (`proxy_list`, `reference_number`).
    pub fn column(self) -> &'static str {
        match self {
            Self::OrderNumber => "order_number",
            Self::Status => "status",
            Self::Store => "store",
            Self::Product => "product",
            Self::Sku => "sku",
            Self::Size => "size",
            Self::Price => "price",
            Self::Quantity => "quantity",
            Self::Total => "total",
            Self::Commission => "commission",
            Self::Email => "email",
            Self::CustomerName => "customer_name",
            Self::Profile => "profile",
            Self::Proxy => "proxy_list",
            Self::ShareLink => "share_link",
            Self::TrackingNumber => "tracking_number",
            Self::ReferenceNumber => "reference_number",
            Self::PaymentMethod => "payment_method",
            Self::ShippingAddress => "shipping_address",
            Self::ShippingMethod => "shipping_method",
            Self::Notes => "notes",
            Self::Mode => "mode",
            Self::CheckoutTime => "checkout_time",
            Self::ImageUrl => "image_url",
        }
    }
}

/// What changed: a known field, or an unknown label from [`RefractOrder::extra`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ChangedField {
    Field(OrderField),
    Extra(String),
}

impl ChangedField {
    /// The column, or the label as sent.
    pub fn name(&self) -> &str {
        match self {
            Self::Field(field) => field.column(),
            Self::Extra(label) => label,
        }
    }
}

/// One `order_events` row: a field a newer message changed, with the old and new text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldChange {
    pub field: ChangedField,
    /// `None` when the field was not set before.
    pub old: Option<String>,
    pub new: String,
}

impl RefractOrder {
    /// The quantity for a new order: seed 001's default is 1.
    pub fn quantity_or_default(&self) -> u32 {
        self.quantity.unwrap_or(1)
    }

    /// The total for a new order: `Total` when sent, else, as seed 001 stores `Price` as
    /// "price & total", the price times [`quantity_or_default`](Self::quantity_or_default),
    /// multiplied exactly. `None` without either, or when the price is not an amount.
    pub fn total_or_price(&self) -> Option<Price> {
        if let Some(total) = &self.total {
            return Some(total.clone());
        }
        let price = self.price.as_ref()?;
        let quantity = self.quantity_or_default();
        if quantity == 1 {
            return Some(price.clone());
        }
        Some(Price {
            raw: format!("{quantity} x {}", price.raw),
            amount: Some(multiply_decimal(price.amount.as_deref()?, quantity)?),
            currency: price.currency.clone(),
        })
    }

    /// The fields this message carries: what an upsert writes. Always the order number; the
    /// status unless it is only the default.
    pub fn fields_present(&self) -> Vec<OrderField> {
        OrderField::ALL
            .into_iter()
            .filter(|&field| match field {
                OrderField::Status => self.status_origin != StatusOrigin::Default,
                _ => self.value_of(field).is_some(),
            })
            .collect()
    }

    /// A field as text, as [`FieldChange`] records it; prices as [`Price`]'s `Display`.
    pub fn value_of(&self, field: OrderField) -> Option<String> {
        let text = |value: &Option<String>| value.clone();
        let price = |value: &Option<Price>| value.as_ref().map(Price::to_string);
        match field {
            OrderField::OrderNumber => Some(self.order_number.clone()),
            OrderField::Status => Some(self.status.as_str().to_owned()),
            OrderField::Store => text(&self.store),
            OrderField::Product => text(&self.product),
            OrderField::Sku => text(&self.sku),
            OrderField::Size => text(&self.size),
            OrderField::Price => price(&self.price),
            OrderField::Quantity => self.quantity.map(|quantity| quantity.to_string()),
            OrderField::Total => price(&self.total),
            OrderField::Commission => price(&self.commission),
            OrderField::Email => text(&self.email),
            OrderField::CustomerName => text(&self.customer_name),
            OrderField::Profile => text(&self.profile),
            OrderField::Proxy => text(&self.proxy),
            OrderField::ShareLink => text(&self.share_link),
            OrderField::TrackingNumber => text(&self.tracking_number),
            OrderField::ReferenceNumber => text(&self.reference_number),
            OrderField::PaymentMethod => text(&self.payment_method),
            OrderField::ShippingAddress => text(&self.shipping_address),
            OrderField::ShippingMethod => text(&self.shipping_method),
            OrderField::Notes => text(&self.notes),
            OrderField::Mode => text(&self.mode),
            OrderField::CheckoutTime => text(&self.checkout_time),
            OrderField::ImageUrl => text(&self.image_url),
        }
    }

    /// What this (newer) message changes in `old`: each field it carries whose text differs,
    /// in [`OrderField::ALL`] order, then its extra labels. Fields it does not carry are not
    /// changes (seed 001's "Test 3").
    pub fn changes_from(&self, old: &RefractOrder) -> Vec<FieldChange> {
        let mut changes: Vec<FieldChange> = self
            .fields_present()
            .into_iter()
            .filter_map(|field| {
                let new = self.value_of(field)?;
                let old = old.value_of(field);
                (old.as_deref() != Some(new.as_str())).then_some(FieldChange {
                    field: ChangedField::Field(field),
                    old,
                    new,
                })
            })
            .collect();
        let old_extra: HashMap<String, Vec<&str>> = old
            .extra_groups()
            .into_iter()
            .map(|(_, key, values)| (key, values))
            .collect();
        for (label, key, values) in self.extra_groups() {
            let old_values = old_extra.get(&key);
            if old_values != Some(&values) {
                changes.push(FieldChange {
                    field: ChangedField::Extra(label.to_owned()),
                    old: old_values.map(|values| values.join("\n")),
                    new: values.join("\n"),
                });
            }
        }
        changes
    }

    /// Writes onto `self` (the stored order) every field `newer` carries, and only those. An
    /// extra label `newer` carries replaces every stored value of that label.
    pub fn update_from(&mut self, newer: &RefractOrder) {
        for field in newer.fields_present() {
            self.copy_field(newer, field);
        }
        let replaced: HashSet<String> = newer.extra.iter().map(|(l, _)| label_key(l)).collect();
        self.extra
            .retain(|(label, _)| !replaced.contains(&label_key(label)));
        self.extra.extend(newer.extra.iter().cloned());
    }

    /// Extra values by label (whatever its spelling), in the order first sent: the label as
    /// first sent, its key, its values. A label may repeat with different values.
    fn extra_groups(&self) -> Vec<(&str, String, Vec<&str>)> {
        let mut groups: Vec<(&str, String, Vec<&str>)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for (label, value) in &self.extra {
            let key = label_key(label);
            match index.get(&key).and_then(|&at| groups.get_mut(at)) {
                Some(group) => group.2.push(value),
                None => {
                    index.insert(key.clone(), groups.len());
                    groups.push((label, key, vec![value]));
                }
            }
        }
        groups
    }

    fn copy_field(&mut self, from: &RefractOrder, field: OrderField) {
        fn set<T: Clone>(to: &mut Option<T>, from: &Option<T>) {
            if from.is_some() {
                to.clone_from(from);
            }
        }
        match field {
            OrderField::OrderNumber => self.order_number.clone_from(&from.order_number),
            OrderField::Status => {
                self.status = from.status.clone();
                self.status_origin = from.status_origin;
            }
            OrderField::Store => set(&mut self.store, &from.store),
            OrderField::Product => set(&mut self.product, &from.product),
            OrderField::Sku => set(&mut self.sku, &from.sku),
            OrderField::Size => set(&mut self.size, &from.size),
            OrderField::Price => set(&mut self.price, &from.price),
            OrderField::Quantity => set(&mut self.quantity, &from.quantity),
            OrderField::Total => set(&mut self.total, &from.total),
            OrderField::Commission => set(&mut self.commission, &from.commission),
            OrderField::Email => set(&mut self.email, &from.email),
            OrderField::CustomerName => set(&mut self.customer_name, &from.customer_name),
            OrderField::Profile => set(&mut self.profile, &from.profile),
            OrderField::Proxy => set(&mut self.proxy, &from.proxy),
            OrderField::ShareLink => set(&mut self.share_link, &from.share_link),
            OrderField::TrackingNumber => set(&mut self.tracking_number, &from.tracking_number),
            OrderField::ReferenceNumber => set(&mut self.reference_number, &from.reference_number),
            OrderField::PaymentMethod => set(&mut self.payment_method, &from.payment_method),
            OrderField::ShippingAddress => set(&mut self.shipping_address, &from.shipping_address),
            OrderField::ShippingMethod => set(&mut self.shipping_method, &from.shipping_method),
            OrderField::Notes => set(&mut self.notes, &from.notes),
            OrderField::Mode => set(&mut self.mode, &from.mode),
            OrderField::CheckoutTime => set(&mut self.checkout_time, &from.checkout_time),
            OrderField::ImageUrl => set(&mut self.image_url, &from.image_url),
        }
    }
}

/// Parses seed 001's text format: an optional title line (`Successful Checkout | Best Buy US`),
/// then each label on its own line with its value on the next. A label directly followed by
/// another known label (or by nothing, like the seed's trailing `Image`) has no value; blank
/// lines are skipped; `Label: value` on one line is read too.
pub fn parse_text(text: &str) -> Result<RefractMessage, ParseError> {
    if text.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    let mut collector = Collector::default();
    collector.add_lines(text, Markdown::LabelsOnly);
    collector.finish()
}

/// Parses a flat JSON object whose keys are the labels, in any spelling (`order_number`,
/// `Order Number`, `orderNumber`); a `title` or `event` key is read as the title.
pub fn parse_flat_json(
    object: &serde_json::Map<String, serde_json::Value>,
) -> Result<RefractMessage, ParseError> {
    let mut collector = Collector::default();
    for (key, value) in object {
        if let Some(text) = json_text(value) {
            collector.add_pair(key, &text);
        }
    }
    collector.finish()
}

/// A JSON value as label text: strings as they are, numbers exactly as written (the crate's
/// `arbitrary_precision`), arrays of scalars joined with `, `, anything else as compact JSON.
pub(super) fn json_text(value: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    match value {
        Value::Null => None,
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Array(items)
            if items
                .iter()
                .all(|item| !item.is_array() && !item.is_object()) =>
        {
            Some(
                items
                    .iter()
                    .filter_map(json_text)
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        }
        Value::Array(_) | Value::Object(_) => Some(value.to_string()),
    }
}

/// Which lines of a text get Discord markdown removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Markdown {
    /// Plain text: only to recognize labels (`**Order Number**`); values are kept as sent.
    LabelsOnly,
    /// Discord text: every line.
    All,
}

/// What a label means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Field(OrderField),
    Currency,
    Title,
}

/// A label's spelling without case, spaces or punctuation: `Order Number`, `order_number`,
/// `orderNumber` and `Order #` all become `ordernumber` (or `order`).
fn label_key(label: &str) -> String {
    label
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

fn label(name: &str) -> Option<Label> {
    use OrderField as F;
    let field = match label_key(name).as_str() {
        "ordernumber" | "order" | "orderno" | "ordernum" | "ordernr" | "orderid" | "ordercode" => {
            F::OrderNumber
        }
        "product" | "productname" | "producttitle" | "item" | "itemname" | "itemtitle" => {
            F::Product
        }
        "sku" | "pid" | "productid" | "productcode" | "itemid" | "stylecode" => F::Sku,
        "size" | "variant" => F::Size,
        "price" | "unitprice" | "itemprice" | "productprice" => F::Price,
        "quantity" | "qty" | "quantitypurchased" => F::Quantity,
        "total" | "ordertotal" | "totalprice" | "totalamount" | "grandtotal" => F::Total,
        "commission" | "commissionvalue" | "commissionamount" => F::Commission,
        "email" | "emailaddress" | "accountemail" | "mail" => F::Email,
        "customername" | "customer" | "fullname" | "billingname" | "shippingname" | "recipient" => {
            F::CustomerName
        }
        "profile" | "profilename" | "billingprofile" | "profilegroup" => F::Profile,
        "proxydetails" | "proxy" | "proxies" | "proxylist" | "proxygroup" => F::Proxy,
        "sharelink" | "share" | "shareurl" => F::ShareLink,
        "trackingnumber" | "tracking" | "trackingno" | "trackingnum" | "trackingid"
        | "trackingcode" => F::TrackingNumber,
        "referencenumber" | "reference" | "referenceno" | "referenceid" | "referencecode"
        | "ref" | "refnumber" => F::ReferenceNumber,
        "paymentmethod" | "payment" | "paymenttype" => F::PaymentMethod,
        "shippingaddress" | "address" | "shipto" | "deliveryaddress" => F::ShippingAddress,
        "shippingmethod" | "shipping" | "shippingtype" | "shippingspeed" | "deliverymethod" => {
            F::ShippingMethod
        }
        "status" | "orderstatus" => F::Status,
        "notes" | "note" | "comments" | "comment" => F::Notes,
        "mode" | "checkoutmode" | "taskmode" => F::Mode,
        "checkouttime" | "checkedoutat" | "checkoutdate" | "time" | "date" | "orderdate"
        | "ordertime" | "timestamp" => F::CheckoutTime,
        "image" | "imageurl" | "img" | "thumbnail" | "productimage" | "picture" => F::ImageUrl,
        "store" | "storename" | "site" | "website" | "retailer" | "shop" | "merchant" => F::Store,
        "currency" | "currencycode" => return Some(Label::Currency),
        "title" | "event" => return Some(Label::Title),
        _ => return None,
    };
    Some(Label::Field(field))
}

/// What a title says, read by [`classify`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum TitleMeaning {
    Status(OrderStatus),
    /// "Order Update", "Tracking Update": the status is not said.
    NoStatus,
    Test,
}

/// The table on [`OrderStatus`].
fn classify(text: &str) -> Option<TitleMeaning> {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .collect();
    let has = |wanted: &[&str]| words.iter().any(|word| wanted.contains(word));
    let status = |status| Some(TitleMeaning::Status(status));
    if has(&["test", "testing"]) {
        Some(TitleMeaning::Test)
    } else if has(&["declined", "decline", "denied", "rejected"]) {
        status(OrderStatus::Declined)
    } else if has(&["cancelled", "canceled", "cancel", "cancellation"]) {
        status(OrderStatus::Cancelled)
    } else if has(&["unsuccessful", "failed", "fail", "failure", "error"]) {
        status(OrderStatus::Failed)
    } else if has(&["refunded", "refund"]) {
        status(OrderStatus::Refunded)
    } else if has(&["delivered"]) {
        status(OrderStatus::Delivered)
    } else if has(&["shipped", "dispatched", "transit"]) {
        status(OrderStatus::Shipped)
    } else if has(&["pending", "queued"]) {
        status(OrderStatus::Pending)
    } else if has(&["processing"]) {
        status(OrderStatus::Processing)
    } else if has(&["update", "updated"]) {
        Some(TitleMeaning::NoStatus)
    } else if has(&[
        "successful",
        "success",
        "successfully",
        "verified",
        "checkout",
        "checked",
        "checkedout",
        "placed",
        "confirmed",
        "copped",
        "purchased",
    ]) {
        status(OrderStatus::Verified)
    } else {
        None
    }
}

/// Splits `Outcome | Store` (or `Store | Outcome`) into what it says and the store.
fn read_title(title: &str) -> (Option<TitleMeaning>, Option<String>) {
    let Some((left, right)) = title.split_once('|') else {
        return (classify(title), None);
    };
    let store = |text: &str| non_empty(text.trim());
    match (classify(left), classify(right)) {
        // A store may have "test" in its name; a real outcome on the other side wins.
        (Some(TitleMeaning::Test), Some(meaning)) if meaning != TitleMeaning::Test => {
            (Some(meaning), store(left))
        }
        (Some(meaning), _) => (Some(meaning), store(right)),
        (None, Some(meaning)) => (Some(meaning), store(left)),
        (None, None) => (None, store(right)),
    }
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

/// Characters Discord bots use to fill a field that must not be empty.
fn is_blank_char(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '\u{200b}' | '\u{200c}' | '\u{200d}' | '\u{2060}' | '\u{feff}'
        )
}

/// A value without surrounding blanks, or `None` when it says nothing (`N/A`, `none`, `-`),
/// so that an update never overwrites a stored value with a placeholder.
fn clean_value(value: &str) -> Option<String> {
    let value = value.trim_matches(is_blank_char);
    let placeholder = matches!(
        value.to_lowercase().as_str(),
        "" | "n/a" | "none" | "null" | "undefined" | "-" | "--" | "—" | "–"
    );
    (!placeholder).then(|| value.to_owned())
}

/// The order number without its `#` (`#BBY01-807102506907`, `# 123`).
fn clean_order_number(value: &str) -> Option<String> {
    clean_value(value.trim_matches(is_blank_char).trim_start_matches('#'))
}

/// One non-blank line of a labelled text.
struct Line {
    /// The value as kept: markdown removed in Discord text, as sent in plain text.
    value: String,
    /// Markdown removed, a trailing `:` dropped: what a label is recognized by.
    label: String,
    /// Markdown removed: a title line, which is read for words and a store, never kept raw.
    title: String,
}

impl Line {
    /// The lines of `text`. Discord text is unformatted whole first, so that a code block or
    /// spoiler spanning lines goes too; plain text keeps its values as sent.
    fn all(text: &str, markdown: Markdown) -> Vec<Self> {
        match markdown {
            Markdown::All => strip_markdown(text)
                .lines()
                .filter_map(|line| Self::new(line, line.to_owned()))
                .collect(),
            Markdown::LabelsOnly => text
                .lines()
                .filter_map(|raw| Self::new(raw, strip_markdown(raw)))
                .collect(),
        }
    }

    /// `None` for a blank line.
    fn new(raw: &str, unformatted: String) -> Option<Self> {
        let title = unformatted.trim_matches(is_blank_char);
        if title.is_empty() {
            return None;
        }
        let label = title
            .strip_suffix(':')
            .unwrap_or(title)
            .trim_end()
            .to_owned();
        Some(Self {
            value: raw.trim_matches(is_blank_char).to_owned(),
            label,
            title: title.to_owned(),
        })
    }

    fn is_known_label(&self) -> bool {
        label(&self.label).is_some()
    }

    /// `Label: value` on one line. The label must hold a letter and no `|`, and the value must
    /// not be the rest of a URL, so `http://…` and `12:30` are not split.
    fn inline_pair(&self) -> Option<(&str, &str)> {
        let (key, value) = self.label.split_once(':')?;
        let (key, value) = (key.trim(), value.trim());
        let plausible = !value.is_empty()
            && !value.starts_with("//")
            && key.chars().count() <= 40
            && key.chars().any(char::is_alphabetic)
            && !key.contains('|');
        plausible.then_some((key, value))
    }
}

/// Gathers label/value pairs and title candidates from any shape, then builds the message.
/// The first value of a label wins; a later, different one goes to `extra`.
#[derive(Debug, Default)]
pub(super) struct Collector {
    values: Vec<(OrderField, String)>,
    fallbacks: Vec<(OrderField, String)>,
    titles: Vec<String>,
    store_hints: Vec<String>,
    currency: Option<String>,
    extra: Vec<(String, String)>,
    /// `(label key, value)` of each extra, so a repeat is dropped in constant time.
    extra_seen: HashSet<(String, String)>,
}

impl Collector {
    /// A title candidate; earlier ones are preferred.
    pub(super) fn add_title(&mut self, title: &str) {
        if let Some(title) = clean_value(title) {
            self.titles.push(title);
        }
    }

    /// A Discord embed author name: a title when it reads like one, else the store, unless it
    /// is the bot's own name.
    pub(super) fn add_author(&mut self, name: &str) {
        let Some(name) = clean_value(name) else {
            return;
        };
        if name.contains('|') || classify(&name).is_some() {
            self.titles.push(name);
        } else if !name.to_lowercase().contains("refract") {
            self.store_hints.push(name);
        }
    }

    /// A Discord embed description: labelled lines, or, as CyberAIO-style bots send it, just
    /// the product's name, which is then the product unless a label names one.
    pub(super) fn add_description(&mut self, text: &str) {
        let lines = Line::all(text, Markdown::All);
        if let [only] = lines.as_slice() {
            let product_name = !only.is_known_label()
                && only.inline_pair().is_none()
                && !only.title.contains('|')
                && classify(&only.title).is_none();
            if product_name {
                self.add_fallback(OrderField::Product, &only.value);
                return;
            }
        }
        self.add_line_pairs(&lines);
    }

    /// A value used only when no label gives the field (an embed's image or timestamp).
    pub(super) fn add_fallback(&mut self, field: OrderField, value: &str) {
        if let Some(value) = clean_value(value) {
            self.fallbacks.push((field, value));
        }
    }

    pub(super) fn add_pair(&mut self, name: &str, value: &str) {
        let name = name.trim_matches(is_blank_char);
        let name = name.strip_suffix(':').unwrap_or(name).trim_end();
        let Some(value) = clean_value(value) else {
            return;
        };
        match label(name) {
            Some(Label::Title) => self.titles.push(value),
            Some(Label::Currency) => {
                self.currency.get_or_insert(value);
            }
            Some(Label::Field(field)) => {
                let value = match field {
                    OrderField::OrderNumber => match clean_order_number(&value) {
                        Some(number) => number,
                        None => return,
                    },
                    _ => value,
                };
                match self.values.iter().find(|(known, _)| *known == field) {
                    None => self.values.push((field, value)),
                    Some((_, first)) if *first == value => {}
                    Some(_) => self.push_extra(name, value),
                }
            }
            None if label_key(name).is_empty() => {}
            None => self.push_extra(name, value),
        }
    }

    fn push_extra(&mut self, name: &str, value: String) {
        if self.extra_seen.insert((label_key(name), value.clone())) {
            self.extra.push((name.to_owned(), value));
        }
    }

    /// Reads labelled lines (see [`parse_text`]).
    pub(super) fn add_lines(&mut self, text: &str, markdown: Markdown) {
        self.add_line_pairs(&Line::all(text, markdown));
    }

    fn add_line_pairs(&mut self, lines: &[Line]) {
        let mut rest = lines;
        if let [first, after @ ..] = rest {
            if is_title(first, after.first()) {
                self.titles.push(first.title.clone());
                rest = after;
            }
        }
        loop {
            match rest {
                [] => break,
                [line, after @ ..] if !line.is_known_label() && line.inline_pair().is_some() => {
                    if let Some((key, value)) = line.inline_pair() {
                        self.add_pair(key, value);
                    }
                    rest = after;
                }
                [line, value, after @ ..] if !value.is_known_label() => {
                    self.add_pair(&line.label, &value.value);
                    rest = after;
                }
                [_, after @ ..] => rest = after,
            }
        }
    }

    pub(super) fn finish(self) -> Result<RefractMessage, ParseError> {
        let mut meaning = None;
        let mut title_store = None;
        for title in &self.titles {
            let (said, store) = read_title(title);
            if meaning.is_none() {
                if let Some(said) = said {
                    if said == TitleMeaning::Test {
                        return Ok(RefractMessage::TestNotification {
                            title: title.clone(),
                        });
                    }
                    meaning = Some(said);
                    title_store = store.or(title_store);
                    continue;
                }
            }
            title_store = title_store.or(store);
        }
        let take = |field: OrderField| {
            self.values
                .iter()
                .chain(&self.fallbacks)
                .find(|(known, _)| *known == field)
                .map(|(_, value)| value.clone())
        };
        let order_number = take(OrderField::OrderNumber).ok_or(ParseError::MissingOrderNumber)?;
        let (status, status_origin) = match (take(OrderField::Status), meaning) {
            (Some(value), _) => (OrderStatus::from_label(&value), StatusOrigin::Label),
            (None, Some(TitleMeaning::Status(status))) => (status, StatusOrigin::Title),
            (None, _) => (OrderStatus::Verified, StatusOrigin::Default),
        };
        let store = take(OrderField::Store)
            .or(title_store)
            .or_else(|| self.store_hints.first().cloned());
        let label_currency = self
            .currency
            .as_deref()
            .and_then(|code| Currency::parse(code).ok());
        let dollar = label_currency
            .clone()
            .or_else(|| store.as_deref().and_then(regional_dollar))
            .or_else(|| Currency::parse("USD").ok());
        let price =
            |field| take(field).map(|raw| parse_price(&raw, &dollar, label_currency.as_ref()));
        let mut extra = self.extra;
        let quantity = take(OrderField::Quantity).and_then(|raw| {
            let quantity = parse_quantity(&raw);
            if quantity.is_none() {
                extra.push(("Quantity".to_owned(), raw));
            }
            quantity
        });
        Ok(RefractMessage::Order(Box::new(RefractOrder {
            order_number,
            status,
            status_origin,
            store,
            product: take(OrderField::Product),
            sku: take(OrderField::Sku),
            size: take(OrderField::Size),
            price: price(OrderField::Price),
            quantity,
            total: price(OrderField::Total),
            commission: price(OrderField::Commission),
            email: take(OrderField::Email)
                .map(|email| email.strip_prefix("mailto:").unwrap_or(&email).to_owned()),
            customer_name: take(OrderField::CustomerName),
            profile: take(OrderField::Profile),
            proxy: take(OrderField::Proxy).map(|proxy| redact_proxy_passwords(&proxy)),
            share_link: take(OrderField::ShareLink),
            tracking_number: take(OrderField::TrackingNumber),
            reference_number: take(OrderField::ReferenceNumber),
            payment_method: take(OrderField::PaymentMethod),
            shipping_address: take(OrderField::ShippingAddress),
            shipping_method: take(OrderField::ShippingMethod),
            notes: take(OrderField::Notes),
            mode: take(OrderField::Mode),
            checkout_time: take(OrderField::CheckoutTime),
            image_url: take(OrderField::ImageUrl),
            extra,
        })))
    }
}

/// The first line is a title when it is not a label and reads like one: it has a `|`, says an
/// outcome, stands alone, or is followed by a known label.
fn is_title(first: &Line, second: Option<&Line>) -> bool {
    if first.is_known_label() {
        return false;
    }
    if let Some((key, _)) = first.inline_pair() {
        if label(key).is_some() {
            return false;
        }
    }
    first.title.contains('|')
        || classify(&first.title).is_some()
        || second.is_none_or(Line::is_known_label)
}

/// `2`, `x2`, `2x`, `2.0`.
fn parse_quantity(raw: &str) -> Option<u32> {
    let text = raw
        .trim()
        .trim_start_matches(['x', 'X', '×'])
        .trim_end_matches(['x', 'X', '×'])
        .trim();
    let whole = match text.split_once('.') {
        Some((whole, zeros)) if !zeros.is_empty() && zeros.bytes().all(|b| b == b'0') => whole,
        Some(_) => return None,
        None => text,
    };
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    whole.parse().ok()
}

/// The dollar of a store's region suffix: `Best Buy CA` sells in CAD.
fn regional_dollar(store: &str) -> Option<Currency> {
    let last = store
        .split(|c: char| !c.is_alphanumeric())
        .rfind(|word| !word.is_empty())?
        .to_uppercase();
    let code = match last.as_str() {
        "US" | "USA" => "USD",
        "CA" | "CANADA" => "CAD",
        "AU" | "AUSTRALIA" => "AUD",
        "NZ" => "NZD",
        "SG" => "SGD",
        "HK" => "HKD",
        "MX" | "MEXICO" => "MXN",
        _ => return None,
    };
    Currency::parse(code).ok()
}

/// A currency mark next to an amount.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mark {
    Code(Currency),
    /// A bare `$`: which dollar depends on the message.
    Dollar,
    /// `kr`: Swedish, Norwegian or Danish.
    Ambiguous,
}

/// ISO codes accepted in lower or mixed case; any three upper-case letters are accepted too.
const COMMON_CODES: [&str; 40] = [
    "usd", "eur", "gbp", "cad", "aud", "nzd", "jpy", "cny", "brl", "mxn", "chf", "sek", "nok",
    "dkk", "pln", "czk", "huf", "inr", "krw", "sgd", "hkd", "zar", "try", "rub", "ils", "aed",
    "sar", "thb", "php", "idr", "myr", "twd", "ars", "clp", "cop", "pen", "kwd", "bhd", "ron",
    "uah",
];

fn currency_mark(token: &str) -> Option<Mark> {
    let code = |code: &str| Currency::parse(code).ok().map(Mark::Code);
    match token {
        "$" => return Some(Mark::Dollar),
        "€" => return code("EUR"),
        "£" => return code("GBP"),
        "¥" | "円" => return code("JPY"),
        "元" | "CN¥" => return code("CNY"),
        "₹" => return code("INR"),
        "₩" => return code("KRW"),
        "₽" => return code("RUB"),
        "₺" => return code("TRY"),
        "₪" => return code("ILS"),
        "₱" => return code("PHP"),
        "฿" => return code("THB"),
        "₫" => return code("VND"),
        "₴" => return code("UAH"),
        "₦" => return code("NGN"),
        _ => {}
    }
    let lower = token.to_lowercase();
    let named = match lower.as_str() {
        "us$" | "usd$" => "USD",
        "ca$" | "c$" | "cad$" => "CAD",
        "a$" | "au$" => "AUD",
        "nz$" => "NZD",
        "r$" => "BRL",
        "mx$" => "MXN",
        "hk$" => "HKD",
        "s$" | "sg$" => "SGD",
        "nt$" => "TWD",
        "zł" | "zl" => "PLN",
        "kč" => "CZK",
        "rs" | "rs." => "INR",
        "rmb" => "CNY",
        "kr" | "kr." => return Some(Mark::Ambiguous),
        _ => {
            let letters = token.len() == 3 && token.bytes().all(|b| b.is_ascii_alphabetic());
            let known = token.bytes().all(|b| b.is_ascii_uppercase())
                || COMMON_CODES.contains(&lower.as_str());
            return if letters && known { code(token) } else { None };
        }
    };
    code(named)
}

/// Reads a price (the rules are on [`Price`]). `dollar` is what a bare `$` means, `label` the
/// message's `Currency` label, used for a bare number and `kr`.
fn parse_price(raw: &str, dollar: &Option<Currency>, label: Option<&Currency>) -> Price {
    let unrecognized = || Price {
        raw: raw.to_owned(),
        amount: None,
        currency: None,
    };
    let text = raw.trim_matches(is_blank_char);
    let Some((prefix, number, suffix)) = split_number(text) else {
        return unrecognized();
    };
    let (negative, prefix) = match prefix.trim_end().strip_suffix(['-', '−']) {
        Some(rest) => (true, rest),
        None => match prefix.trim_start().strip_prefix(['-', '−']) {
            Some(rest) => (true, rest),
            None => (false, prefix),
        },
    };
    let mut marks = Vec::new();
    for token in prefix
        .split(is_blank_char)
        .chain(suffix.split(is_blank_char))
    {
        if token.is_empty() {
            continue;
        }
        match currency_mark(token) {
            Some(mark) => marks.push(mark),
            None => return unrecognized(),
        }
    }
    let codes: Vec<&Currency> = marks
        .iter()
        .filter_map(|mark| match mark {
            Mark::Code(code) => Some(code),
            _ => None,
        })
        .collect();
    let currency = match codes.as_slice() {
        [first, rest @ ..] if rest.iter().all(|code| code == first) => Some((*first).clone()),
        [_, ..] => None,
        [] if marks.contains(&Mark::Dollar) => dollar.clone(),
        [] => label.cloned(),
    };
    let three_decimals = currency.as_ref().is_some_and(|code| code.exponent() == 3);
    let amount = normalize_number(number, three_decimals).map(|amount| {
        if negative {
            format!("-{amount}")
        } else {
            amount
        }
    });
    Price {
        raw: raw.to_owned(),
        amount,
        currency,
    }
}

fn is_grouping(c: char) -> bool {
    matches!(c, ' ' | '\u{a0}' | '\u{202f}' | '\'' | '’')
}

/// Splits `R$ 1.299,90` into `R$ `, `1.299,90` and ``: the number is the first run of digits
/// with separators between them, and may start with a separator (`.99`).
fn split_number(text: &str) -> Option<(&str, &str, &str)> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let first_digit = chars.iter().position(|(_, c)| c.is_ascii_digit())?;
    let mut start = first_digit;
    if first_digit > 0 && matches!(chars[first_digit - 1].1, '.' | ',') {
        start -= 1;
    }
    let mut end = first_digit;
    let mut index = first_digit;
    while index < chars.len() {
        let c = chars[index].1;
        if c.is_ascii_digit() {
            end = index;
        } else if !(matches!(c, '.' | ',') || is_grouping(c))
            || !chars
                .get(index + 1)
                .is_some_and(|(_, next)| next.is_ascii_digit())
        {
            break;
        }
        index += 1;
    }
    let from = chars[start].0;
    let to = chars.get(end + 1).map_or(text.len(), |(at, _)| *at);
    Some((text.get(..from)?, text.get(from..to)?, text.get(to..)?))
}

/// `1.299,90` → `1299.90` (the rules are on [`Price`]); `None` when the groups are malformed.
fn normalize_number(number: &str, three_decimals: bool) -> Option<String> {
    let dots = number.matches('.').count();
    let commas = number.matches(',').count();
    let grouped = number.chars().any(is_grouping);
    let decimal = match (dots, commas) {
        (0, 0) => None,
        (_, 0) | (0, _) => {
            let sep = if dots > 0 { '.' } else { ',' };
            let (whole, fraction) = number.rsplit_once(sep)?;
            let thousands_like = fraction.len() == 3
                && (1..=3).contains(&whole.len())
                && !whole.starts_with('0')
                && !three_decimals;
            if dots + commas > 1 || (!grouped && thousands_like) {
                None
            } else {
                Some(sep)
            }
        }
        _ => number.chars().rev().find(|c| matches!(c, '.' | ',')),
    };
    let (whole, fraction) = match decimal {
        Some(sep) => number.rsplit_once(sep)?,
        None => (number, ""),
    };
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let groups: Vec<&str> = whole
        .split(|c: char| matches!(c, '.' | ',') || is_grouping(c))
        .collect();
    if let [first, rest @ ..] = groups.as_slice() {
        let all_digits = groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_digit()));
        let well_grouped = match rest {
            [] => true,
            [middle @ .., last] => {
                !first.is_empty()
                    && first.len() <= 3
                    && last.len() == 3
                    && middle.iter().all(|g| (2..=3).contains(&g.len()))
            }
        };
        if !all_digits || !well_grouped {
            return None;
        }
    }
    let digits: String = groups.concat();
    let digits = digits.trim_start_matches('0');
    let whole = if digits.is_empty() { "0" } else { digits };
    Some(if fraction.is_empty() {
        whole.to_owned()
    } else {
        format!("{whole}.{fraction}")
    })
}

/// `299.99` × 2 → `599.98`, exactly; `None` past 38 digits.
fn multiply_decimal(amount: &str, factor: u32) -> Option<String> {
    let (negative, digits) = match amount.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, amount),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let units: u128 = format!("{whole}{fraction}").parse().ok()?;
    let product = units.checked_mul(u128::from(factor))?.to_string();
    let scale = fraction.len();
    let padded = format!("{product:0>width$}", width = scale + 1);
    let (whole, fraction) = padded.split_at(padded.len() - scale);
    let sign = if negative && product != "0" { "-" } else { "" };
    Some(if scale == 0 {
        format!("{sign}{whole}")
    } else {
        format!("{sign}{whole}.{fraction}")
    })
}

/// Replaces proxy passwords with `***`, in `scheme://user:pass@host:port`, `user:pass@host:port`
/// and `host:port:user:pass`, so that a stored or displayed order does not leak them.
fn redact_proxy_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut token_start = None;
    for (at, c) in text.char_indices().chain([(text.len(), ' ')]) {
        match (c.is_whitespace(), token_start) {
            (false, None) => token_start = Some(at),
            (true, Some(start)) => {
                out.push_str(&redact_proxy_token(text.get(start..at).unwrap_or("")));
                token_start = None;
            }
            _ => {}
        }
        if c.is_whitespace() && at < text.len() {
            out.push(c);
        }
    }
    out
}

fn redact_proxy_token(token: &str) -> String {
    let (scheme, rest) = match token.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, token),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let redacted = if let Some((userinfo, host)) = authority.rsplit_once('@') {
        match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => return token.to_owned(),
        }
    } else {
        let parts: Vec<&str> = authority.split(':').collect();
        match parts.as_slice() {
            [host, port, user, password]
                if !port.is_empty()
                    && port.bytes().all(|b| b.is_ascii_digit())
                    && !password.is_empty() =>
            {
                format!("{host}:{port}:{user}:***")
            }
            _ => return token.to_owned(),
        }
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{redacted}{path}"),
        None => format!("{redacted}{path}"),
    }
}

/// Seed 001's "Supported Message Format", byte for byte.
pub const SEED_MESSAGE: &str = "Successful Checkout | Best Buy US
Product
STARLINK - Mini Kit AC Dual Band Wi-Fi System - White
Price
$299.99
Profile
Lennar #8-$48-@07
Proxy Details
Wealth Resi | http://resi-edge-pool.wealthproxies.com:5959/
Share Link
Click Here
Order Number
#BBY01-807102506907
Email
woozy_byes28@icloud.com
Image
";

#[cfg(test)]
pub(super) mod tests {
    pub(crate) use super::SEED_MESSAGE;
    use super::*;

    /// Seed 001's "Optional Fields".
    const SEED_OPTIONAL_FIELDS: &str = "Quantity
2
Total
$599.98
Commission
$50.00
Tracking Number
1Z999AA10123456784
Reference #
REF123
Payment Method
Credit Card
Shipping Address
123 Main St, City, State
Shipping Method
Express
Status
pending
Notes
Special instructions here
";

    const SEED_TEST_1: &str = "Successful Checkout | Store
Product
Test Product
Price
$99.99
Order Number
TEST-001
Email
test@example.com
";

    const SEED_TEST_2: &str = "Successful Checkout | Store
Product
Test Product
Price
$99.99
Quantity
2
Total
$199.98
Commission
$20.00
Profile
Profile 1
Proxy Details
Proxy 1
Order Number
TEST-002
Email
test@example.com
Tracking Number
1Z999AA10123456784
Reference #
REF123
Payment Method
Credit Card
Status
shipped
";

    const SEED_TEST_3: &str = "Successful Checkout | Store
Order Number
TEST-001
Status
shipped
Tracking Number
1Z999AA10123456784
";

    pub(crate) fn order(message: Result<RefractMessage, ParseError>) -> RefractOrder {
        match message {
            Ok(RefractMessage::Order(order)) => *order,
            other => panic!("expected an order, got {other:?}"),
        }
    }

    fn usd() -> Option<Currency> {
        Currency::parse("USD").ok()
    }

    fn price(raw: &str, amount: &str, currency: Option<&str>) -> Option<Price> {
        Some(Price {
            raw: raw.to_owned(),
            amount: Some(amount.to_owned()),
            currency: currency.and_then(|code| Currency::parse(code).ok()),
        })
    }

    fn some(text: &str) -> Option<String> {
        Some(text.to_owned())
    }

    /// The order seed 001's example message describes, as its "What Gets Stored" table says.
    pub(crate) fn seed_order() -> RefractOrder {
        RefractOrder {
            order_number: "BBY01-807102506907".to_owned(),
            status: OrderStatus::Verified,
            status_origin: StatusOrigin::Title,
            store: some("Best Buy US"),
            product: some("STARLINK - Mini Kit AC Dual Band Wi-Fi System - White"),
            sku: None,
            size: None,
            price: price("$299.99", "299.99", Some("USD")),
            quantity: None,
            total: None,
            commission: None,
            email: some("woozy_byes28@icloud.com"),
            customer_name: None,
            profile: some("Lennar #8-$48-@07"),
            proxy: some("Wealth Resi | http://resi-edge-pool.wealthproxies.com:5959/"),
            share_link: some("Click Here"),
            tracking_number: None,
            reference_number: None,
            payment_method: None,
            shipping_address: None,
            shipping_method: None,
            notes: None,
            mode: None,
            checkout_time: None,
            image_url: None,
            extra: vec![],
        }
    }

    #[test]
    fn the_seed_message_parses_to_the_seed_table() {
        assert_eq!(order(parse_text(SEED_MESSAGE)), seed_order());
    }

    #[test]
    fn a_new_order_gets_the_seed_defaults_for_quantity_and_total() {
        let seed = order(parse_text(SEED_MESSAGE));
        assert_eq!(seed.quantity_or_default(), 1);
        assert_eq!(seed.total_or_price(), seed.price, "Price → price & total");
        let two = order(parse_text(&format!("{SEED_MESSAGE}Quantity\n2\n")));
        assert_eq!(
            two.total_or_price(),
            price("2 x $299.99", "599.98", Some("USD"))
        );
        let sent = order(parse_text(&format!("{SEED_MESSAGE}{SEED_OPTIONAL_FIELDS}")));
        assert_eq!(
            sent.total_or_price(),
            price("$599.98", "599.98", Some("USD"))
        );
        assert_eq!(multiply_decimal("0.05", 3).as_deref(), Some("0.15"));
        assert_eq!(multiply_decimal("-1.5", 2).as_deref(), Some("-3.0"));
        assert_eq!(multiply_decimal("12", 10).as_deref(), Some("120"));
        assert_eq!(multiply_decimal("9".repeat(39).as_str(), 2), None);
    }

    #[test]
    fn the_seed_message_parses_the_same_with_crlf_and_without_the_trailing_image() {
        let crlf = SEED_MESSAGE.replace('\n', "\r\n");
        assert_eq!(order(parse_text(&crlf)), seed_order());
        let without_image = SEED_MESSAGE.replace("Image\n", "");
        assert_eq!(order(parse_text(&without_image)), seed_order());
    }

    #[test]
    fn an_image_label_followed_by_a_url_or_by_another_label_is_read_as_such() {
        let with_url = format!("{SEED_MESSAGE}https://pisces.bbystatic.com/image.jpg\n");
        assert_eq!(
            order(parse_text(&with_url)).image_url.as_deref(),
            Some("https://pisces.bbystatic.com/image.jpg")
        );
        let image_first = SEED_MESSAGE.replace("Product\n", "Image\n\nProduct\n");
        assert_eq!(order(parse_text(&image_first)), seed_order());
    }

    #[test]
    fn every_optional_field_of_the_seed_is_parsed() {
        let parsed = order(parse_text(&format!("{SEED_MESSAGE}{SEED_OPTIONAL_FIELDS}")));
        assert_eq!(parsed.quantity, Some(2));
        assert_eq!(parsed.total, price("$599.98", "599.98", Some("USD")));
        assert_eq!(parsed.commission, price("$50.00", "50.00", Some("USD")));
        assert_eq!(parsed.tracking_number, some("1Z999AA10123456784"));
        assert_eq!(parsed.reference_number, some("REF123"));
        assert_eq!(parsed.payment_method, some("Credit Card"));
        assert_eq!(parsed.shipping_address, some("123 Main St, City, State"));
        assert_eq!(parsed.shipping_method, some("Express"));
        assert_eq!(parsed.status, OrderStatus::Pending);
        assert_eq!(parsed.status_origin, StatusOrigin::Label);
        assert_eq!(parsed.notes, some("Special instructions here"));
        assert_eq!(parsed.extra, vec![]);
    }

    #[test]
    fn seed_test_1_minimal_order() {
        let parsed = order(parse_text(SEED_TEST_1));
        assert_eq!(parsed.order_number, "TEST-001");
        assert_eq!(parsed.store, some("Store"));
        assert_eq!(parsed.product, some("Test Product"));
        assert_eq!(parsed.price, price("$99.99", "99.99", Some("USD")));
        assert_eq!(parsed.email, some("test@example.com"));
        assert_eq!(parsed.status, OrderStatus::Verified);
        assert_eq!(
            parsed.fields_present(),
            vec![
                OrderField::OrderNumber,
                OrderField::Status,
                OrderField::Store,
                OrderField::Product,
                OrderField::Price,
                OrderField::Email,
            ]
        );
    }

    #[test]
    fn seed_test_2_complete_order() {
        let parsed = order(parse_text(SEED_TEST_2));
        let expected = RefractOrder {
            order_number: "TEST-002".to_owned(),
            status: OrderStatus::Shipped,
            status_origin: StatusOrigin::Label,
            store: some("Store"),
            product: some("Test Product"),
            price: price("$99.99", "99.99", Some("USD")),
            quantity: Some(2),
            total: price("$199.98", "199.98", Some("USD")),
            commission: price("$20.00", "20.00", Some("USD")),
            email: some("test@example.com"),
            profile: some("Profile 1"),
            proxy: some("Proxy 1"),
            tracking_number: some("1Z999AA10123456784"),
            reference_number: some("REF123"),
            payment_method: some("Credit Card"),
            share_link: None,
            image_url: None,
            ..seed_order()
        };
        assert_eq!(parsed, expected);
    }

    #[test]
    fn seed_test_3_updates_only_the_fields_it_carries() {
        let mut stored = order(parse_text(SEED_TEST_1));
        let update = order(parse_text(SEED_TEST_3));
        assert_eq!(
            update.fields_present(),
            vec![
                OrderField::OrderNumber,
                OrderField::Status,
                OrderField::Store,
                OrderField::TrackingNumber,
            ]
        );
        assert_eq!(
            update.changes_from(&stored),
            vec![
                FieldChange {
                    field: ChangedField::Field(OrderField::Status),
                    old: some("verified"),
                    new: "shipped".to_owned(),
                },
                FieldChange {
                    field: ChangedField::Field(OrderField::TrackingNumber),
                    old: None,
                    new: "1Z999AA10123456784".to_owned(),
                },
            ]
        );
        stored.update_from(&update);
        assert_eq!(stored.status, OrderStatus::Shipped);
        assert_eq!(stored.tracking_number, some("1Z999AA10123456784"));
        assert_eq!(stored.product, some("Test Product"), "kept");
        assert_eq!(stored.price, price("$99.99", "99.99", Some("USD")), "kept");
        assert_eq!(stored.email, some("test@example.com"), "kept");
        assert_eq!(
            update.changes_from(&stored),
            vec![],
            "applied twice: no change"
        );
    }

    #[test]
    fn a_default_status_is_not_an_update() {
        let stored = order(parse_text(SEED_TEST_2));
        let update = order(parse_text(
            "Order Update | Store\nOrder Number\nTEST-002\nNotes\nlate",
        ));
        assert_eq!(update.status_origin, StatusOrigin::Default);
        assert!(!update.fields_present().contains(&OrderField::Status));
        let changes = update.changes_from(&stored);
        assert_eq!(
            changes
                .iter()
                .map(|change| change.field.name())
                .collect::<Vec<_>>(),
            vec!["notes"]
        );
    }

    #[test]
    fn extra_labels_are_kept_compared_and_merged() {
        let first = order(parse_text(
            "Successful Checkout | Store\nOrder Number\nA-1\nCheckout Speed\n3.2s\nTask\n12",
        ));
        assert_eq!(
            first.extra,
            vec![
                ("Checkout Speed".to_owned(), "3.2s".to_owned()),
                ("Task".to_owned(), "12".to_owned()),
            ]
        );
        let later = order(parse_text("Order Number\nA-1\ncheckout_speed\n2.9s"));
        assert_eq!(
            later.changes_from(&first),
            vec![FieldChange {
                field: ChangedField::Extra("checkout_speed".to_owned()),
                old: some("3.2s"),
                new: "2.9s".to_owned(),
            }]
        );
        let mut merged = first.clone();
        merged.update_from(&later);
        assert_eq!(
            merged.extra,
            vec![
                ("Task".to_owned(), "12".to_owned()),
                ("checkout_speed".to_owned(), "2.9s".to_owned()),
            ]
        );
        assert_eq!(later.changes_from(&merged), vec![]);
    }

    #[test]
    fn a_repeated_label_keeps_its_first_value_and_the_other_in_extra() {
        let text = "Order Number\n#A-1\nEmail\na@x.test\nEmail\nb@x.test\nEmail\na@x.test";
        let parsed = order(parse_text(text));
        assert_eq!(parsed.email, some("a@x.test"));
        assert_eq!(
            parsed.extra,
            vec![("Email".to_owned(), "b@x.test".to_owned())]
        );
    }

    #[test]
    fn the_order_number_loses_its_hash_and_is_the_only_required_field() {
        assert_eq!(order(parse_text("Order Number\n#123")).order_number, "123");
        assert_eq!(order(parse_text("Order #\n# 456")).order_number, "456");
        assert_eq!(order(parse_text("Order Number: #789")).order_number, "789");
        let bare = order(parse_text("Order Number\nX-1"));
        assert_eq!(bare.status, OrderStatus::Verified);
        assert_eq!(bare.status_origin, StatusOrigin::Default);
        assert_eq!(bare.fields_present(), vec![OrderField::OrderNumber]);
    }

    #[test]
    fn without_an_order_number_the_error_says_could_not_parse_and_why() {
        for text in [
            "Successful Checkout | Store\nProduct\nTest Product\nPrice\n$99.99",
            "Successful Checkout | Store\nOrder Number\n#\nEmail\na@x.test",
            "Checkout Declined | Best Buy US\nOrder Number\nN/A",
            "Order Number\n\u{200b}",
        ] {
            let error = parse_text(text).expect_err(text);
            assert!(matches!(error, ParseError::MissingOrderNumber), "{text}");
            let message = error.to_string();
            assert!(
                message.starts_with("Could not parse webhook content: no order number"),
                "{message}"
            );
        }
        let empty = parse_text(" \n\n").expect_err("empty");
        assert_eq!(
            empty.to_string(),
            "Could not parse webhook content: the body is empty"
        );
    }

    #[test]
    fn a_test_notification_is_its_own_outcome() {
        for text in [
            "Test Notification",
            "Test Notification\nThis is a test webhook from Refract",
            "Webhook Test | Refract\nOrder Number\n#123456",
        ] {
            assert!(
                matches!(
                    parse_text(text),
                    Ok(RefractMessage::TestNotification { .. })
                ),
                "{text}"
            );
        }
        assert_eq!(
            parse_text("Test Notification").ok(),
            Some(RefractMessage::TestNotification {
                title: "Test Notification".to_owned()
            })
        );
        let store_named_test = parse_text("Successful Checkout | Test Store\nOrder Number\n1");
        assert_eq!(order(store_named_test).store, some("Test Store"));
        let store_first = parse_text("Test Store | Successful Checkout\nOrder Number\n1");
        assert_eq!(order(store_first).store, some("Test Store"));
    }

    #[test]
    fn titles_map_to_statuses_as_the_table_says() {
        let cases = [
            (
                "Successful Checkout | Best Buy US",
                Some(OrderStatus::Verified),
            ),
            (
                "✅ Checkout Successful | Target",
                Some(OrderStatus::Verified),
            ),
            ("Successfully Checked Out!", Some(OrderStatus::Verified)),
            ("Checkout Declined | Walmart", Some(OrderStatus::Declined)),
            ("Card Declined", Some(OrderStatus::Declined)),
            (
                "Payment Declined | Best Buy US",
                Some(OrderStatus::Declined),
            ),
            ("Checkout Failed | Best Buy US", Some(OrderStatus::Failed)),
            ("Unsuccessful Checkout | Target", Some(OrderStatus::Failed)),
            ("Failed Checkout", Some(OrderStatus::Failed)),
            (
                "Order Cancelled | Best Buy US",
                Some(OrderStatus::Cancelled),
            ),
            ("Order Canceled", Some(OrderStatus::Cancelled)),
            ("Order Shipped | Best Buy US", Some(OrderStatus::Shipped)),
            ("Order Delivered", Some(OrderStatus::Delivered)),
            ("Order Refunded", Some(OrderStatus::Refunded)),
            ("Order Pending", Some(OrderStatus::Pending)),
            ("Order Update | Best Buy US", None),
            ("Tracking Update | Best Buy US", None),
            ("Refract", None),
        ];
        for (title, expected) in cases {
            let parsed = order(parse_text(&format!("{title}\nOrder Number\n1")));
            match expected {
                Some(status) => {
                    assert_eq!(parsed.status, status, "{title}");
                    assert_eq!(parsed.status_origin, StatusOrigin::Title, "{title}");
                }
                None => assert_eq!(parsed.status_origin, StatusOrigin::Default, "{title}"),
            }
        }
    }

    #[test]
    fn the_status_label_beats_the_title_and_keeps_unknown_words() {
        let parsed = order(parse_text(
            "Checkout Declined\nOrder Number\n1\nStatus\nOn Hold",
        ));
        assert_eq!(parsed.status, OrderStatus::Other("on hold".to_owned()));
        assert_eq!(parsed.status.as_str(), "on hold");
        assert_eq!(OrderStatus::from_label("In Transit"), OrderStatus::Shipped);
        assert_eq!(OrderStatus::from_label("VERIFIED"), OrderStatus::Verified);
    }

    #[test]
    fn the_store_comes_from_a_label_before_the_title_and_from_either_side_of_the_bar() {
        let labelled = order(parse_text(
            "Successful Checkout | Store A\nOrder Number\n1\nSite\nStore B",
        ));
        assert_eq!(labelled.store, some("Store B"));
        let reversed = order(parse_text("Target | Successful Checkout\nOrder Number\n1"));
        assert_eq!(reversed.store, some("Target"));
        assert_eq!(reversed.status_origin, StatusOrigin::Title);
    }

    #[test]
    fn labels_match_whatever_their_case_spacing_or_markdown() {
        let text = "**Successful Checkout** | __Best Buy US__
**Product:**
STARLINK - Mini Kit AC Dual Band Wi-Fi System - White
PRICE
$299.99
profile
Lennar #8-$48-@07
proxy_details
Wealth Resi | http://resi-edge-pool.wealthproxies.com:5959/
Share Link
Click Here
Order Number:
#BBY01-807102506907
Email: woozy_byes28@icloud.com
";
        assert_eq!(order(parse_text(text)), seed_order());
    }

    #[test]
    fn placeholder_values_are_absent_so_they_never_overwrite() {
        let parsed = order(parse_text(
            "Order Number\n1\nTracking Number\nN/A\nNotes\n-\nEmail\n\u{200b}\nSize\nnone",
        ));
        assert_eq!(parsed.fields_present(), vec![OrderField::OrderNumber]);
    }

    #[test]
    fn quantities_in_several_spellings() {
        for (raw, expected) in [
            ("2", Some(2)),
            ("x3", Some(3)),
            ("4x", Some(4)),
            ("5.0", Some(5)),
        ] {
            let parsed = order(parse_text(&format!("Order Number\n1\nQty\n{raw}")));
            assert_eq!(parsed.quantity, expected, "{raw}");
        }
        let odd = order(parse_text("Order Number\n1\nQuantity\ntwo"));
        assert_eq!(odd.quantity, None);
        assert_eq!(odd.extra, vec![("Quantity".to_owned(), "two".to_owned())]);
    }

    #[test]
    fn prices_in_several_formats() {
        let dollar = usd();
        let cases: [(&str, Option<&str>, Option<&str>); 28] = [
            ("$299.99", Some("299.99"), Some("USD")),
            ("$1,299.99", Some("1299.99"), Some("USD")),
            ("$1,299", Some("1299"), Some("USD")),
            ("$ 12", Some("12"), Some("USD")),
            ("299.99 USD", Some("299.99"), Some("USD")),
            ("USD 299.99", Some("299.99"), Some("USD")),
            ("US$299.99", Some("299.99"), Some("USD")),
            ("$299.99 CAD", Some("299.99"), Some("CAD")),
            ("CA$1,049.99", Some("1049.99"), Some("CAD")),
            ("€1.299,90", Some("1299.90"), Some("EUR")),
            ("1.299,90 €", Some("1299.90"), Some("EUR")),
            ("12,50 €", Some("12.50"), Some("EUR")),
            ("€1.299", Some("1299"), Some("EUR")),
            ("1 299,00 €", Some("1299.00"), Some("EUR")),
            ("1\u{202f}299,00\u{a0}€", Some("1299.00"), Some("EUR")),
            ("£49.99", Some("49.99"), Some("GBP")),
            ("R$ 1.299,90", Some("1299.90"), Some("BRL")),
            ("R$1.234.567,89", Some("1234567.89"), Some("BRL")),
            ("¥12,800", Some("12800"), Some("JPY")),
            ("₹1,23,456.50", Some("123456.50"), Some("INR")),
            ("CHF 1'299.00", Some("1299.00"), Some("CHF")),
            ("KWD 1.250", Some("1.250"), Some("KWD")),
            ("0.999", Some("0.999"), None),
            ("1234,567", Some("1234.567"), None),
            ("-$5.00", Some("-5.00"), Some("USD")),
            ("$.99", Some("0.99"), Some("USD")),
            ("299 kr", Some("299"), None),
            ("99.99", Some("99.99"), None),
        ];
        for (raw, amount, currency) in cases {
            let parsed = parse_price(raw, &dollar, None);
            assert_eq!(parsed.raw, raw);
            assert_eq!(parsed.amount.as_deref(), amount, "{raw}");
            assert_eq!(
                parsed.currency.as_ref().map(Currency::code),
                currency,
                "{raw}"
            );
        }
        for raw in [
            "Free",
            "2 x $10",
            "$1,2,3",
            "$12.5.6",
            "Click Here",
            "$",
            "",
        ] {
            assert_eq!(parse_price(raw, &dollar, None).amount, None, "{raw}");
        }
    }

    #[test]
    fn a_bare_dollar_follows_the_currency_label_then_the_store_region() {
        let canada = order(parse_text(
            "Successful Checkout | Best Buy CA\nOrder Number\n1\nPrice\n$1,049.99",
        ));
        assert_eq!(canada.price, price("$1,049.99", "1049.99", Some("CAD")));
        let labelled = order(parse_text(
            "Order Number\n1\nPrice\n$20\nTotal\n40\nCommission\n€5\nCurrency\naud",
        ));
        assert_eq!(labelled.price, price("$20", "20", Some("AUD")));
        assert_eq!(labelled.total, price("40", "40", Some("AUD")));
        assert_eq!(labelled.commission, price("€5", "5", Some("EUR")));
        assert_eq!(
            labelled.value_of(OrderField::Price).as_deref(),
            Some("20 AUD")
        );
    }

    #[test]
    fn proxy_passwords_are_redacted() {
        let cases = [
            (
                "Wealth Resi | http://user:hunter2@resi.example:5959/",
                "Wealth Resi | http://user:***@resi.example:5959/",
            ),
            ("1.2.3.4:8080:user:hunter2", "1.2.3.4:8080:user:***"),
            ("user:hunter2@proxy.example:80", "user:***@proxy.example:80"),
            (
                "Wealth Resi | http://resi-edge-pool.wealthproxies.com:5959/",
                "Wealth Resi | http://resi-edge-pool.wealthproxies.com:5959/",
            ),
            ("Localhost", "Localhost"),
        ];
        for (raw, expected) in cases {
            assert_eq!(redact_proxy_passwords(raw), expected);
        }
    }
}
