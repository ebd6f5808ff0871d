//! CartPanda (seed 000): `POST /webhook/cartpanda`, HMAC of the raw body in
//! `X-CartPanda-Signature`, sales into the `sales` table.
//!
//! Two payload shapes arrive: the seed's `{"id","type":"sale.approved","data":{…}}`, and what
//! real stores post, `{"event":"order.paid","order":{…,"shop":{"slug"}}}`, which carries no event
//! id and is signed with a scheme CartPanda does not document; hence the configurable header,
//! encoding and prefix, keyed by the store's API token.

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::json::{self, first_text, text};
use super::{
    verify_body_hmac, IdentifyError, Identity, IncomingRequest, NormalizeError, Normalized, Source,
    Verified,
};
use crate::clock::Timestamp;
use crate::journal::ClaimedDelivery;
use crate::ledger::{Currency, LedgerChange, SaleStatus, SaleUpsert};
use crate::verify::{Algorithm, Encoding, HmacScheme, SecretSet, VerifyError};

/// The header seed 000 names.
pub const DEFAULT_SIGNATURE_HEADER: &str = "x-cartpanda-signature";

/// How a CartPanda store signs its deliveries.
#[derive(Debug, Clone)]
pub struct CartPandaSettings {
    pub secrets: SecretSet,
    /// Lower-case header name.
    pub signature_header: String,
    pub scheme: HmacScheme,
}

impl CartPandaSettings {
    /// Seed 000's scheme: hex HMAC-SHA256 of the raw body, `sha256=` tolerated.
    pub fn seed_default(secrets: SecretSet) -> Self {
        Self {
            secrets,
            signature_header: DEFAULT_SIGNATURE_HEADER.to_owned(),
            scheme: HmacScheme {
                algorithm: Algorithm::Sha256,
                encoding: Encoding::Hex,
                prefix: Some("sha256=".to_owned()),
            },
        }
    }
}

#[derive(Debug)]
pub struct CartPanda {
    name: String,
    settings: CartPandaSettings,
}

impl CartPanda {
    pub fn new(name: impl Into<String>, settings: CartPandaSettings) -> Self {
        Self {
            name: name.into(),
            settings,
        }
    }
}

/// Which of the two shapes a payload has.
enum Shape<'a> {
    /// Seed 000: `type` + `data.sale_id`.
    Sale { event_type: &'a str },
    /// Real stores: `event` + `order` (or `product`).
    Store { event: &'a str },
}

fn shape(payload: &Value) -> Option<Shape<'_>> {
    if let Some(event_type) = payload.get("type").and_then(Value::as_str) {
        return Some(Shape::Sale { event_type });
    }
    payload
        .get("event")
        .and_then(Value::as_str)
        .map(|event| Shape::Store { event })
}

impl Source for CartPanda {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "cartpanda"
    }

    fn authenticate(&self, request: &IncomingRequest, _now: Timestamp) -> Result<(), VerifyError> {
        verify_body_hmac(
            request,
            &self.settings.secrets,
            &self.settings.signature_header,
            &self.settings.scheme,
        )
    }

    fn identify(&self, request: &Verified) -> Result<Identity, IdentifyError> {
        let payload = json::parse_body(&request.request().body)?;
        match shape(&payload) {
            Some(Shape::Sale { event_type }) => identify_sale(&payload, event_type),
            Some(Shape::Store { event }) => {
                identify_store(&payload, event, &request.request().body)
            }
            None => Err(IdentifyError::MissingField("type")),
        }
    }

    fn normalize(&self, delivery: &ClaimedDelivery) -> Result<Normalized, NormalizeError> {
        let payload = json::parse_stored(&delivery.body)?;
        match shape(&payload) {
            Some(Shape::Sale { event_type }) => normalize_sale(&payload, event_type),
            Some(Shape::Store { event }) => normalize_store(&payload, event),
            None => Err(NormalizeError::MissingField("type")),
        }
    }
}

fn identify_sale(payload: &Value, event_type: &str) -> Result<Identity, IdentifyError> {
    let sale_id = text(payload, "/data/sale_id");
    if event_type.starts_with("sale.") && sale_id.is_none() {
        return Err(IdentifyError::MissingField("data.sale_id"));
    }
    let event_id = text(payload, "/id");
    let dedup_key = match (&event_id, &sale_id) {
        (Some(id), _) => format!("event:{id}"),
        (None, Some(sale)) => format!("{event_type}:{sale}"),
        (None, None) => format!(
            "{event_type}:sha256:{}",
            hex_digest(payload.to_string().as_bytes())
        ),
    };
    Ok(Identity {
        event_id,
        event_type: event_type.to_owned(),
        dedup_key,
    })
}

/// Real stores send no event id: a delivery is the same event when shop, object id, event and
/// the object's `updated_at` all match.
fn identify_store(payload: &Value, event: &str, body: &[u8]) -> Result<Identity, IdentifyError> {
    let object = event.split('.').next().unwrap_or(event);
    let id =
        text(payload, &format!("/{object}/id")).ok_or(IdentifyError::MissingField("order.id"))?;
    let shop = first_text(
        payload,
        &[
            &format!("/{object}/shop/slug"),
            "/shop/slug",
            "/order/shop/slug",
        ],
    )
    .unwrap_or_else(|| "-".to_owned());
    let version = first_text(payload, &[&format!("/{object}/updated_at"), "/updated_at"])
        .unwrap_or_else(|| format!("sha256:{}", hex_digest(body)));
    Ok(Identity {
        event_id: None,
        event_type: event.to_owned(),
        dedup_key: format!("{shop}:{object}:{id}:{event}:{version}"),
    })
}

fn hex_digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn normalize_sale(payload: &Value, event_type: &str) -> Result<Normalized, NormalizeError> {
    let Some(action) = event_type.strip_prefix("sale.") else {
        return Ok(Normalized::Ignore(format!(
            "{event_type} is not a sale event"
        )));
    };
    let data = payload
        .get("data")
        .ok_or(NormalizeError::MissingField("data"))?;
    let cartpanda_id =
        text(data, "/sale_id").ok_or(NormalizeError::MissingField("data.sale_id"))?;
    let currency = match text(data, "/currency").or_else(|| text(data, "/product/currency")) {
        Some(code) => Currency::parse(&code)?,
        None => Currency::brl(),
    };
    let status = SaleStatus::parse(action)
        .or_else(|| text(data, "/payment/status").and_then(|word| SaleStatus::parse(&word)));
    Ok(Normalized::Changes(vec![LedgerChange::Sale(SaleUpsert {
        cartpanda_id,
        customer_email: text(data, "/customer/email"),
        customer_name: text(data, "/customer/name"),
        product_name: text(data, "/product/name"),
        product_id: text(data, "/product/id"),
        price: json::money(data, "/product/price", &currency)?,
        status,
        affiliate_code: text(data, "/affiliate/code"),
        affiliate_name: text(data, "/affiliate/name"),
        commission: json::money(data, "/affiliate/commission", &currency)?,
        payment_method: text(data, "/payment/method"),
        transaction_id: text(data, "/payment/transaction_id"),
        metadata: Some(data.to_string()),
        event_at: json::timestamp(data, "/updated_at")
            .or_else(|| json::timestamp(payload, "/created_at")),
    })]))
}

fn normalize_store(payload: &Value, event: &str) -> Result<Normalized, NormalizeError> {
    if !event.starts_with("order.") {
        return Ok(Normalized::Ignore(format!(
            "{event} is journaled; only order events change the sales ledger"
        )));
    }
    let order = payload
        .get("order")
        .ok_or(NormalizeError::MissingField("order"))?;
    let cartpanda_id = text(order, "/id").ok_or(NormalizeError::MissingField("order.id"))?;
    let currency = match first_text(order, &["/currency", "/presentment_currency"]) {
        Some(code) => Currency::parse(&code)?,
        None => Currency::brl(),
    };
    let status = store_event_status(event).or_else(|| {
        first_text(order, &["/financial_status", "/payment_status", "/status"])
            .and_then(|word| SaleStatus::parse(&word))
    });
    let price = ["/total_price", "/total", "/price", "/subtotal_price"]
        .iter()
        .find_map(|pointer| json::money(order, pointer, &currency).transpose())
        .transpose()?;
    Ok(Normalized::Changes(vec![LedgerChange::Sale(SaleUpsert {
        cartpanda_id,
        customer_email: first_text(order, &["/email", "/customer/email", "/contact_email"]),
        customer_name: customer_name(order),
        product_name: product_names(order),
        product_id: first_text(order, &["/line_items/0/product_id", "/line_items/0/id"]),
        price,
        status,
        affiliate_code: first_text(order, &["/affiliate/code", "/affiliate_code"]),
        affiliate_name: first_text(order, &["/affiliate/name", "/affiliate_name"]),
        commission: json::money(order, "/affiliate/commission", &currency)?,
        payment_method: first_text(
            order,
            &[
                "/payment_gateway",
                "/payment_method",
                "/gateway",
                "/payment/method",
            ],
        ),
        transaction_id: first_text(
            order,
            &[
                "/transaction_id",
                "/payment/transaction_id",
                "/checkout_token",
            ],
        ),
        metadata: Some(order.to_string()),
        event_at: json::timestamp(order, "/updated_at"),
    })]))
}

/// The status an order event itself implies; `order.updated` and `order.created` defer to the
/// order's own status fields.
fn store_event_status(event: &str) -> Option<SaleStatus> {
    match event {
        "order.paid" => Some(SaleStatus::Approved),
        "order.refunded" => Some(SaleStatus::Refunded),
        "order.cancelled" | "order.canceled" => Some(SaleStatus::Canceled),
        "order.chargeback" => Some(SaleStatus::Chargeback),
        _ => None,
    }
}

fn customer_name(order: &Value) -> Option<String> {
    if let Some(name) = first_text(order, &["/customer/name", "/customer/full_name"]) {
        return Some(name);
    }
    let parts: Vec<String> = ["/customer/first_name", "/customer/last_name"]
        .iter()
        .filter_map(|pointer| text(order, pointer))
        .collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

fn product_names(order: &Value) -> Option<String> {
    let items = order.get("line_items")?.as_array()?;
    let names: Vec<String> = items
        .iter()
        .filter_map(|item| first_text(item, &["/title", "/name", "/product_name"]))
        .collect();
    (!names.is_empty()).then(|| names.join(", "))
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue, Method};
    use bytes::Bytes;

    use super::*;
    use crate::journal::{ClaimToken, DeliveryId};
    use crate::ledger::Money;
    use crate::sources::authenticate;

    const SEED_PAYLOAD: &str = include_str!("../../tests/fixtures/cartpanda/sale_approved.json");
    const STORE_PAYLOAD: &str = include_str!("../../tests/fixtures/cartpanda/order_paid.json");

    fn source() -> CartPanda {
        CartPanda::new(
            "cartpanda",
            CartPandaSettings::seed_default(SecretSet::new([
                "old".to_owned(),
                "s3cret".to_owned(),
            ])),
        )
    }

    fn request(body: &str, signature: Option<&str>) -> IncomingRequest {
        let mut headers = HeaderMap::new();
        if let Some(signature) = signature {
            headers.insert(
                DEFAULT_SIGNATURE_HEADER,
                HeaderValue::from_str(signature).expect("ascii"),
            );
        }
        IncomingRequest {
            method: Method::POST,
            path: "/webhook/cartpanda".into(),
            query: None,
            headers,
            body: Bytes::copy_from_slice(body.as_bytes()),
            received_at: Timestamp(0),
        }
    }

    fn sign(body: &str) -> String {
        CartPandaSettings::seed_default(SecretSet::default())
            .scheme
            .sign(b"s3cret", body.as_bytes())
    }

    fn claimed(body: &str) -> ClaimedDelivery {
        ClaimedDelivery {
            id: DeliveryId(1),
            claim: ClaimToken(1),
            source: "cartpanda".into(),
            event_id: None,
            event_type: String::new(),
            dedup_key: String::new(),
            received_at: Timestamp(0),
            headers_json: "{}".into(),
            body: Bytes::copy_from_slice(body.as_bytes()),
            attempts: 0,
        }
    }

    fn sale(normalized: Normalized) -> SaleUpsert {
        match normalized {
            Normalized::Changes(changes) => match changes.into_iter().next() {
                Some(LedgerChange::Sale(sale)) => sale,
                None => panic!("no change"),
            },
            Normalized::Ignore(reason) => panic!("ignored: {reason}"),
        }
    }

    #[test]
    fn seed_signature_verifies_with_rotated_secret() {
        let prefixed = sign(SEED_PAYLOAD);
        let bare = prefixed.trim_start_matches("sha256=").to_owned();
        assert!(source()
            .authenticate(&request(SEED_PAYLOAD, Some(&bare)), Timestamp(0))
            .is_ok());
        let prefixed = format!("sha256={}", bare.to_uppercase());
        assert!(source()
            .authenticate(&request(SEED_PAYLOAD, Some(&prefixed)), Timestamp(0))
            .is_ok());
    }

    #[test]
    fn wrong_or_missing_signature_is_rejected() {
        let source = source();
        let wrong = sign("{}");
        assert_eq!(
            source.authenticate(&request(SEED_PAYLOAD, Some(&wrong)), Timestamp(0)),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            source.authenticate(&request(SEED_PAYLOAD, None), Timestamp(0)),
            Err(VerifyError::MissingSignature)
        );
    }

    #[test]
    fn source_without_secret_refuses_everything() {
        let unconfigured = CartPanda::new(
            "cartpanda",
            CartPandaSettings::seed_default(SecretSet::default()),
        );
        assert_eq!(
            unconfigured.authenticate(
                &request(SEED_PAYLOAD, Some(&sign(SEED_PAYLOAD))),
                Timestamp(0)
            ),
            Err(VerifyError::NoSecretConfigured)
        );
    }

    #[test]
    fn seed_payload_is_identified_by_event_id() {
        let verified = authenticate(
            &source(),
            request(SEED_PAYLOAD, Some(&sign(SEED_PAYLOAD))),
            Timestamp(0),
        )
        .expect("verified");
        let identity = source().identify(&verified).expect("identified");
        assert_eq!(identity.event_id.as_deref(), Some("12345"));
        assert_eq!(identity.event_type, "sale.approved");
        assert_eq!(identity.dedup_key, "event:12345");
    }

    #[test]
    fn store_payload_is_identified_by_shop_order_event_and_version() {
        let verified = authenticate(
            &source(),
            request(STORE_PAYLOAD, Some(&sign(STORE_PAYLOAD))),
            Timestamp(0),
        )
        .expect("verified");
        let identity = source().identify(&verified).expect("identified");
        assert_eq!(identity.event_id, None);
        assert_eq!(identity.event_type, "order.paid");
        assert_eq!(
            identity.dedup_key,
            "lojadoze:order:987654:order.paid:2024-01-05T10:31:00Z"
        );
    }

    #[test]
    fn seed_sale_normalizes_every_field_exactly() {
        let sale = sale(
            source()
                .normalize(&claimed(SEED_PAYLOAD))
                .expect("normalized"),
        );
        assert_eq!(sale.cartpanda_id, "SALE_12345");
        assert_eq!(sale.customer_email.as_deref(), Some("customer@example.com"));
        assert_eq!(sale.customer_name.as_deref(), Some("John Doe"));
        assert_eq!(sale.product_name.as_deref(), Some("Product Name"));
        assert_eq!(sale.product_id.as_deref(), Some("PROD_123"));
        assert_eq!(
            sale.price,
            Some(Money {
                minor_units: 9990,
                currency: Currency::brl()
            })
        );
        assert_eq!(sale.commission.map(|money| money.minor_units), Some(2997));
        assert_eq!(sale.status, Some(SaleStatus::Approved));
        assert_eq!(sale.affiliate_code.as_deref(), Some("AFF123"));
        assert_eq!(sale.affiliate_name.as_deref(), Some("Affiliate Name"));
        assert_eq!(sale.payment_method.as_deref(), Some("credit_card"));
        assert_eq!(sale.transaction_id.as_deref(), Some("TRX_12345"));
    }

    #[test]
    fn store_order_normalizes_to_a_sale() {
        let sale = sale(
            source()
                .normalize(&claimed(STORE_PAYLOAD))
                .expect("normalized"),
        );
        assert_eq!(sale.cartpanda_id, "987654");
        assert_eq!(sale.customer_email.as_deref(), Some("maria@example.com"));
        assert_eq!(sale.customer_name.as_deref(), Some("Maria Silva"));
        assert_eq!(sale.product_name.as_deref(), Some("Kit Skincare, Sabonete"));
        assert_eq!(sale.price.map(|money| money.minor_units), Some(15980));
        assert_eq!(sale.status, Some(SaleStatus::Approved));
        assert_eq!(
            sale.event_at,
            Timestamp::parse_rfc3339("2024-01-05T10:31:00Z")
        );
    }

    #[test]
    fn product_events_are_ignored_not_failed() {
        let body = r#"{"event":"product.updated","product":{"id":5,"title":"Kit"}}"#;
        assert!(matches!(
            source().normalize(&claimed(body)),
            Ok(Normalized::Ignore(_))
        ));
    }

    #[test]
    fn sale_event_without_sale_id_is_a_clear_error() {
        let body = r#"{"id":"1","type":"sale.approved","data":{}}"#;
        let verified = authenticate(&source(), request(body, Some(&sign(body))), Timestamp(0))
            .expect("verified");
        assert!(matches!(
            source().identify(&verified),
            Err(IdentifyError::MissingField("data.sale_id"))
        ));
    }
}
