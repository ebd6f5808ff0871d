//! CartPanda (seed 000): `POST /webhook/cartpanda`, HMAC of the raw body in
//! `X-CartPanda-Signature`, sales into the `sales` table.
//!
//! Two payload shapes arrive: the seed's `{"id","type":"sale.approved","data":{…}}`, and what
//! real stores post, `{"event":"order.paid","order":{…,"shop":{"slug"}}}`, which carries no event
//! id and is signed with a scheme CartPanda does not document; hence the configurable header,
//! encoding and prefix, keyed by the store's API token.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::json::{self, first_text, text, Fields, NullAmount, Picked};
use super::registry::{self, Provider};
use super::{
    sample, verify_body_hmac, IdentifyError, Identity, IncomingRequest, NormalizeError, Normalized,
    Route, SampleError, SampleRequest, SharedSource, Source, Verified,
};
use crate::clock::Timestamp;
use crate::config::{hmac_scheme, secrets_from_env, ConfigError, Environment};
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
    routes: Vec<Route>,
}

impl CartPanda {
    /// A CartPanda store answered at `/in/{name}` only.
    pub fn new(name: impl Into<String>, settings: CartPandaSettings) -> Self {
        Self {
            name: name.into(),
            settings,
            routes: Vec::new(),
        }
    }

    /// The built-in source, also at seed 000's `POST /webhook/cartpanda`.
    pub fn seed(settings: CartPandaSettings) -> Self {
        Self {
            routes: vec![Route::post("/webhook/cartpanda")],
            ..Self::new(KIND, settings)
        }
    }
}

const KIND: &str = "cartpanda";

/// `[cartpanda]` (the built-in store) or `[sources.NAME] kind = "cartpanda"` (another store).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    #[serde(default)]
    secrets: Vec<String>,
    signature_header: Option<String>,
    algorithm: Option<String>,
    encoding: Option<String>,
    prefix: Option<String>,
}

impl FileSettings {
    /// Settings over seed 000's defaults; `env` (the seed's variables) over the file.
    fn resolve(
        self,
        context: &str,
        secrets: SecretSet,
        env: &dyn Environment,
    ) -> Result<CartPandaSettings, ConfigError> {
        let mut settings = CartPandaSettings::seed_default(secrets);
        if let Some(header) = env
            .var("CARTPANDA_SIGNATURE_HEADER")
            .or(self.signature_header)
        {
            settings.signature_header = header.to_ascii_lowercase();
        }
        settings.scheme = hmac_scheme(
            context,
            env.var("CARTPANDA_SIGNATURE_ALGORITHM")
                .as_deref()
                .or(self.algorithm.as_deref()),
            env.var("CARTPANDA_SIGNATURE_ENCODING")
                .as_deref()
                .or(self.encoding.as_deref()),
            self.prefix.as_deref(),
            Some("sha256="),
        )?;
        Ok(settings)
    }
}

/// Seed 000: one store from `CARTPANDA_WEBHOOK_SECRET` (comma-separated for several), more
/// stores as configured sources.
pub struct CartPandaProvider;

impl Provider for CartPandaProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn builtin(
        &self,
        section: toml::Table,
        env: &dyn Environment,
    ) -> Result<Option<SharedSource>, ConfigError> {
        let file: FileSettings = registry::settings(KIND, section)?;
        let secrets = secrets_from_env(env.var("CARTPANDA_WEBHOOK_SECRET"))
            .unwrap_or_else(|| file.secrets.clone());
        let settings = file.resolve(KIND, SecretSet::new(secrets), env)?;
        Ok(Some(Arc::new(CartPanda::seed(settings))))
    }

    fn configured(
        &self,
        name: &str,
        section: toml::Table,
        secrets: SecretSet,
    ) -> Result<SharedSource, ConfigError> {
        let context = format!("sources.{name}");
        let file: FileSettings = registry::settings(&context, section)?;
        let no_env = std::collections::BTreeMap::new();
        let settings = file.resolve(&context, secrets, &no_env)?;
        Ok(Arc::new(CartPanda::new(name, settings)))
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
    shape_of(payload.get("type"), payload.get("event"))
}

/// The shape told by the values of `type` and `event`.
fn shape_of<'a>(kind: Option<&'a Value>, event: Option<&'a Value>) -> Option<Shape<'a>> {
    if let Some(event_type) = kind.and_then(Value::as_str) {
        return Some(Shape::Sale { event_type });
    }
    event
        .and_then(Value::as_str)
        .map(|event| Shape::Store { event })
}

/// What either shape is identified by (a real store's event as an `order`), read in the one
/// strict pass over the body: identifying builds no tree of the whole payload.
const IDENTITY_FIELDS: &[&str] = &[
    "/type",
    "/event",
    "/id",
    "/data/sale_id",
    "/order/id",
    "/order/shop/slug",
    "/shop/slug",
    "/order/updated_at",
    "/updated_at",
];

impl Source for CartPanda {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        KIND
    }

    fn routes(&self) -> Vec<Route> {
        self.routes.clone()
    }

    fn secret_configured(&self) -> bool {
        !self.settings.secrets.is_empty()
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
        let picked = request.pick(IDENTITY_FIELDS)?;
        match shape_of(picked.get("/type"), picked.get("/event")) {
            Some(Shape::Sale { event_type }) => identify_sale(request, &picked, event_type),
            Some(Shape::Store { event }) => identify_store(request, &picked, event),
            None => Err(IdentifyError::MissingField("type")),
        }
    }

    fn normalize(&self, delivery: &ClaimedDelivery) -> Result<Normalized, NormalizeError> {
        match direct::fast_sale(&delivery.body) {
            Some(sale) => Ok(Normalized::Changes(vec![LedgerChange::Sale(Box::new(
                sale,
            ))])),
            None => normalize_tree(&delivery.body),
        }
    }

    fn sample_events(&self) -> Vec<&'static str> {
        vec!["sale.approved", "order.paid"]
    }

    /// Seed 000's `sale.approved` and a real store's `order.paid` (the fixtures the tests
    /// read), with fresh ids, signed with the first secret in the configured scheme.
    fn sample(&self, event: &str, _now: Timestamp) -> Result<SampleRequest, SampleError> {
        let payload = match event {
            "sale.approved" => {
                let mut payload = sample::fixture(SEED_SALE_APPROVED);
                sample::set(&mut payload, "/id", sample::fresh_id("evt_").into());
                sample::set(
                    &mut payload,
                    "/data/sale_id",
                    sample::fresh_id("SALE_").into(),
                );
                payload
            }
            "order.paid" => {
                let mut payload = sample::fixture(STORE_ORDER_PAID);
                sample::set(&mut payload, "/order/id", sample::fresh_number().into());
                payload
            }
            other => return Err(sample::unknown(&self.name, other)),
        };
        let secret =
            self.settings
                .secrets
                .first_exposed()
                .ok_or_else(|| SampleError::NoSecret {
                    source_name: self.name.clone(),
                    setting: "CARTPANDA_WEBHOOK_SECRET (or secrets in the source's section)",
                })?;
        let path = self
            .routes
            .first()
            .map_or_else(|| format!("/in/{}", self.name), |route| route.path.clone());
        let request = SampleRequest::json_post(path, &payload);
        let signature = self.settings.scheme.sign(secret.as_bytes(), &request.body);
        Ok(request.with_header(&self.settings.signature_header, signature))
    }
}

/// Seed 000's payload, as its guide shows it.
pub const SEED_SALE_APPROVED: &str =
    include_str!("../../tests/fixtures/cartpanda/sale_approved.json");
/// What a real CartPanda store posts for a paid order.
pub const STORE_ORDER_PAID: &str = include_str!("../../tests/fixtures/cartpanda/order_paid.json");

fn identify_sale(
    request: &Verified,
    picked: &Picked<'_>,
    event_type: &str,
) -> Result<Identity, IdentifyError> {
    let sale_id = picked.text("/data/sale_id");
    if event_type.starts_with("sale.") && sale_id.is_none() {
        return Err(IdentifyError::MissingField("data.sale_id"));
    }
    let event_id = picked.text("/id");
    let dedup_key = match (&event_id, &sale_id) {
        (Some(id), _) => format!("event:{id}"),
        (None, Some(sale)) => format!("{event_type}:{sale}"),
        (None, None) => format!(
            "{event_type}:sha256:{}",
            hex_digest(request.json()?.to_string().as_bytes())
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
fn identify_store(
    request: &Verified,
    picked: &Picked<'_>,
    event: &str,
) -> Result<Identity, IdentifyError> {
    let object = event.split('.').next().unwrap_or(event);
    let (id, object_shop, object_updated) = (
        format!("/{object}/id"),
        format!("/{object}/shop/slug"),
        format!("/{object}/updated_at"),
    );
    let wanted = [
        id.as_str(),
        object_shop.as_str(),
        "/shop/slug",
        "/order/shop/slug",
        object_updated.as_str(),
        "/updated_at",
    ];
    // An `order` was read with the rest; another object (`product`) is a second pass.
    let other;
    let picked = if wanted
        .iter()
        .all(|pointer| IDENTITY_FIELDS.contains(pointer))
    {
        picked
    } else {
        other = request.pick(&wanted)?;
        &other
    };
    let id = picked
        .text(&id)
        .ok_or(IdentifyError::MissingField("order.id"))?;
    let shop = picked
        .first_text(&[&object_shop, "/shop/slug", "/order/shop/slug"])
        .unwrap_or_else(|| "-".to_owned());
    let version = picked
        .first_text(&[&object_updated, "/updated_at"])
        .unwrap_or_else(|| format!("sha256:{}", hex_digest(&request.request().body)));
    Ok(Identity {
        event_id: None,
        event_type: event.to_owned(),
        dedup_key: format!("{shop}:{object}:{id}:{event}:{version}"),
    })
}

fn hex_digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Normalizes a stored body through its JSON tree: every shape, and every error named.
fn normalize_tree(body: &[u8]) -> Result<Normalized, NormalizeError> {
    let payload = json::parse_stored(body)?;
    match shape(&payload) {
        Some(Shape::Sale { event_type }) => normalize_sale(&payload, event_type),
        Some(Shape::Store { event }) => normalize_store(&payload, event),
        None => Err(NormalizeError::MissingField("type")),
    }
}

/// Seed 000's sale events read without a JSON tree (see [`direct::fast_sale`]).
mod direct {
    use serde::Deserialize;
    use serde_json::value::RawValue;

    use super::json::NullAmount;
    use crate::clock::Timestamp;
    use crate::ledger::{check_id, check_text, Currency, Money, SaleStatus, SaleUpsert};

    /// Seed 000's `sale.*` events read straight from the body, without building a JSON tree:
    /// the tree, its lookups and the metadata written back from it were most of a first
    /// attempt's cost. It reads only bodies whose `data` is already the text serde_json writes
    /// for it ([`compact_value`]), so that text is the metadata as it is, and gives up (`None`)
    /// on anything the tree reads in a way of its own: escapes, exponents, a field of an
    /// unexpected type, a value the ledger refuses. [`super::normalize_sale`] then reads the
    /// body and says what is wrong; what this path does read, it reads as that path does
    /// (`fast_sales_are_the_trees_sales`).
    pub(super) fn fast_sale(body: &[u8]) -> Option<SaleUpsert> {
        let body = std::str::from_utf8(body).ok()?;
        let (envelope, walked) = match walked_envelope(body) {
            Some(walked) => walked,
            None if body.trim_start().starts_with('{') => (serde_json::from_str(body).ok()?, None),
            None => return None,
        };
        let action = envelope.event_type?.strip_prefix("sale.")?;
        let raw = envelope.data?;
        let data = match walked {
            Some(data) => data,
            None => {
                let mut data = SaleData::default();
                let mut at = 0;
                let compact = object(raw, &mut at, &mut Vec::new(), 0, |key, at, keys, depth| {
                    walked_value(raw, at, keys, depth, |value| data.record(key, value))
                });
                if !compact || at != raw.len() {
                    return None;
                }
                data
            }
        };
        let [customer_email, customer_name] = nested(data.customer, ["email", "name"])?;
        let [product_currency, product_name, product_id, price] =
            nested(data.product, ["currency", "name", "id", "price"])?;
        let [affiliate_code, affiliate_name, commission] =
            nested(data.affiliate, ["code", "name", "commission"])?;
        let [payment_status, payment_method, transaction_id] =
            nested(data.payment, ["status", "method", "transaction_id"])?;
        let cartpanda_id = id(data.sale_id)??;
        let currency = match currency(data.currency)? {
            Some(currency) => currency,
            None => currency(product_currency)?.unwrap_or_else(Currency::brl),
        };
        let status = match SaleStatus::parse(action) {
            Some(status) => Some(status),
            None => lenient(payment_status)?.and_then(SaleStatus::parse),
        };
        let event_at = match lenient(data.updated_at)?.and_then(provider_time) {
            Some(at) => Some(at),
            None => lenient(envelope.created_at)?.and_then(provider_time),
        };
        Some(SaleUpsert {
            cartpanda_id: cartpanda_id.to_owned(),
            customer_email: id(customer_email)?.map(str::to_owned),
            customer_name: text(customer_name)?.map(str::to_owned),
            product_name: text(product_name)?.map(str::to_owned),
            product_id: id(product_id)?.map(str::to_owned),
            price: amount(price, &currency, NullAmount::Refused)?,
            status,
            affiliate_code: id(affiliate_code)?.map(str::to_owned),
            affiliate_name: text(affiliate_name)?.map(str::to_owned),
            commission: amount(commission, &currency, NullAmount::MeansAbsent)?,
            payment_method: text(payment_method)?.map(str::to_owned),
            transaction_id: id(transaction_id)?.map(str::to_owned),
            metadata: Some(raw.to_owned()),
            event_at,
        })
    }

    /// A field as its JSON text (`null` included); `None` when absent.
    type Raw<'a> = Option<&'a str>;

    /// `deserialize_with` for a [`Raw`] field: `null` is told apart from absence, as the tree
    /// does.
    fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Raw<'de>, D::Error> {
        <&RawValue>::deserialize(deserializer).map(|raw| Some(raw.get()))
    }

    /// The members of the body the sale is read from.
    #[derive(Default, Deserialize)]
    struct SaleEnvelope<'a> {
        #[serde(rename = "type")]
        event_type: Option<&'a str>,
        #[serde(borrow, default, deserialize_with = "present")]
        data: Raw<'a>,
        #[serde(borrow, default, deserialize_with = "present")]
        created_at: Raw<'a>,
    }

    /// The envelope of a body that is compact as a whole (as most are: providers post what
    /// their serializer wrote), with the members of its `data` when that is an object, read in
    /// the one walk that checks it; `None` for any other body.
    fn walked_envelope(body: &str) -> Option<(SaleEnvelope<'_>, Option<SaleData<'_>>)> {
        let mut envelope = SaleEnvelope::default();
        let mut data = None;
        let mut typed = true;
        let mut at = 0;
        let compact = object(body, &mut at, &mut Vec::new(), 0, |key, at, keys, depth| {
            if key == "data" && body.as_bytes().get(*at) == Some(&b'{') {
                let start = *at;
                let mut members = SaleData::default();
                let walked = object(body, at, keys, depth, |key, at, keys, depth| {
                    walked_value(body, at, keys, depth, |value| members.record(key, value))
                });
                envelope.data = body.get(start..*at);
                data = Some(members);
                return walked;
            }
            walked_value(body, at, keys, depth, |value| match key {
                "type" => match value
                    .strip_prefix('"')
                    .and_then(|text| text.strip_suffix('"'))
                {
                    Some(text) => envelope.event_type = Some(text),
                    None => typed = false,
                },
                "data" => envelope.data = Some(value),
                "created_at" => envelope.created_at = Some(value),
                _ => {}
            })
        });
        (compact && at == body.len() && typed).then_some((envelope, data))
    }

    /// The members of `data` the ledger reads.
    #[derive(Default)]
    struct SaleData<'a> {
        sale_id: Raw<'a>,
        currency: Raw<'a>,
        customer: Raw<'a>,
        product: Raw<'a>,
        affiliate: Raw<'a>,
        payment: Raw<'a>,
        updated_at: Raw<'a>,
    }

    impl<'a> SaleData<'a> {
        fn record(&mut self, key: &str, value: &'a str) {
            let field = match key {
                "sale_id" => &mut self.sale_id,
                "currency" => &mut self.currency,
                "customer" => &mut self.customer,
                "product" => &mut self.product,
                "affiliate" => &mut self.affiliate,
                "payment" => &mut self.payment,
                "updated_at" => &mut self.updated_at,
                _ => return,
            };
            *field = Some(value);
        }
    }

    /// The members `names` of an object on the way to fields (already walked by
    /// [`compact_value`]): absent or `null`, it holds none of them (as
    /// [`Fields::get`](super::Fields::get) reads it); anything but an object is the tree's to
    /// judge.
    fn nested<'a, const N: usize>(raw: Raw<'a>, names: [&str; N]) -> Option<[Raw<'a>; N]> {
        let mut found = [None; N];
        let Some(raw) = raw.filter(|raw| *raw != "null") else {
            return Some(found);
        };
        let walked = object(raw, &mut 0, &mut Vec::new(), 0, |key, at, keys, depth| {
            walked_value(raw, at, keys, depth, |value| {
                if let Some(at) = names.iter().position(|name| *name == key) {
                    found[at] = Some(value);
                }
            })
        });
        walked.then_some(found)
    }

    /// What [`Fields`](super::Fields)' scalar read gives (`Some(None)`: says nothing), or
    /// `None` where the tree must decide: an escape, an exponent (written back as `e+`), an
    /// object, an array, a boolean.
    fn scalar(raw: Raw<'_>) -> Option<Option<&str>> {
        let Some(raw) = raw else {
            return Some(None);
        };
        match raw.as_bytes().first()? {
            b'n' => Some(None),
            b'"' if !raw.contains('\\') => {
                let text = raw[1..raw.len() - 1].trim();
                Some((!text.is_empty()).then_some(text))
            }
            b'-' | b'0'..=b'9' if !raw.contains(['e', 'E']) => Some(Some(raw)),
            _ => None,
        }
    }

    /// [`Fields::text`](super::Fields::text): a scalar the ledger may store.
    fn text(raw: Raw<'_>) -> Option<Option<&str>> {
        let text = scalar(raw)?;
        match text {
            Some(text) if check_text(text).is_err() => None,
            _ => Some(text),
        }
    }

    /// [`Fields::id`](super::Fields::id): a scalar that may become a key.
    fn id(raw: Raw<'_>) -> Option<Option<&str>> {
        let id = scalar(raw)?;
        match id {
            Some(id) if check_id(id).is_err() => None,
            _ => Some(id),
        }
    }

    /// [`Fields::currency`](super::Fields::currency).
    fn currency(raw: Raw<'_>) -> Option<Option<Currency>> {
        match text(raw)? {
            Some(code) => Currency::parse(code).ok().map(Some),
            None => Some(None),
        }
    }

    /// [`Fields::amount`](super::Fields::amount): a decimal string (untrimmed, as the tree
    /// reads it) or a number, in range.
    fn amount(raw: Raw<'_>, currency: &Currency, null: NullAmount) -> Option<Option<Money>> {
        let Some(raw) = raw else {
            return Some(None);
        };
        let decimal = match raw.as_bytes().first()? {
            b'n' if null == NullAmount::MeansAbsent => return Some(None),
            b'"' if !raw.contains('\\') => &raw[1..raw.len() - 1],
            b'-' | b'0'..=b'9' if !raw.contains(['e', 'E']) => raw,
            _ => return None,
        };
        let money = Money::parse_decimal(decimal, currency.clone()).ok()?;
        money.check_sale_amount().ok()?;
        Some(Some(money))
    }

    /// [`json::text`](super::json::text)'s lenient read: anything but a non-blank string or a
    /// number says nothing.
    fn lenient(raw: Raw<'_>) -> Option<Option<&str>> {
        match raw.and_then(|raw| raw.as_bytes().first()) {
            Some(b'"' | b'-' | b'0'..=b'9') => scalar(raw),
            _ => Some(None),
        }
    }

    /// [`json::timestamp`](super::json::timestamp) of a field's text: RFC 3339,
    /// `YYYY-MM-DD HH:MM:SS` (UTC) or unix seconds.
    fn provider_time(raw: &str) -> Option<Timestamp> {
        if let Some(parsed) = Timestamp::parse_rfc3339(raw) {
            return Some(parsed);
        }
        if let Ok(naive) = chrono::NaiveDateTime::parse_from_str(raw, "%Y-%m-%d %H:%M:%S") {
            return Some(Timestamp(naive.and_utc().timestamp_micros()));
        }
        raw.parse::<i64>().ok().map(Timestamp::from_unix_seconds)
    }

    /// The deepest nesting the walk follows before leaving a body to the tree.
    const COMPACT_DEPTH: usize = 128;

    /// Walks the object at `*at` of `json` (valid JSON); `member` walks each member's value
    /// (given its key, `at`, `keys` and depth), usually through [`walked_value`]. False unless
    /// it is already the text serde_json writes for its tree (see [`compact_value`]). `keys`
    /// holds the keys of the objects being walked.
    fn object<'a>(
        json: &'a str,
        at: &mut usize,
        keys: &mut Vec<&'a str>,
        depth: usize,
        mut member: impl FnMut(&'a str, &mut usize, &mut Vec<&'a str>, usize) -> bool,
    ) -> bool {
        let bytes = json.as_bytes();
        if depth > COMPACT_DEPTH || bytes.get(*at) != Some(&b'{') {
            return false;
        }
        *at += 1;
        if bytes.get(*at) == Some(&b'}') {
            *at += 1;
            return true;
        }
        let first = keys.len();
        loop {
            let Some(key) = compact_string(json, at) else {
                return false;
            };
            if keys[first..].contains(&key) || bytes.get(*at) != Some(&b':') {
                return false;
            }
            keys.push(key);
            *at += 1;
            if !member(key, at, keys, depth + 1) {
                return false;
            }
            *at += 1;
            match bytes.get(*at - 1) {
                Some(b',') => {}
                Some(b'}') => break,
                _ => return false,
            }
        }
        keys.truncate(first);
        true
    }

    /// [`compact_value`], handing the value's text to `then` when it is compact.
    fn walked_value<'a>(
        json: &'a str,
        at: &mut usize,
        keys: &mut Vec<&'a str>,
        depth: usize,
        then: impl FnOnce(&'a str),
    ) -> bool {
        let start = *at;
        let compact = compact_value(json, at, keys, depth);
        if compact {
            then(&json[start..*at]);
        }
        compact
    }

    /// Walks the value at `*at` of `json` (valid JSON); true if it is already the text
    /// serde_json writes for its tree: no space between tokens, no escape (which may be
    /// written otherwise), no exponent (written `e+`), no key twice in one object (the tree
    /// keeps one). Such a value is the tree's compact text as it stands.
    fn compact_value<'a>(
        json: &'a str,
        at: &mut usize,
        keys: &mut Vec<&'a str>,
        depth: usize,
    ) -> bool {
        let bytes = json.as_bytes();
        let literal = |at: &mut usize, word: &[u8]| {
            let fits = bytes[*at..].starts_with(word);
            *at += word.len();
            fits
        };
        match bytes.get(*at) {
            Some(b'{') => object(json, at, keys, depth, |_, at, keys, depth| {
                compact_value(json, at, keys, depth)
            }),
            Some(b'[') => {
                if depth > COMPACT_DEPTH {
                    return false;
                }
                *at += 1;
                if bytes.get(*at) == Some(&b']') {
                    *at += 1;
                    return true;
                }
                loop {
                    if !compact_value(json, at, keys, depth + 1) {
                        return false;
                    }
                    *at += 1;
                    match bytes.get(*at - 1) {
                        Some(b',') => {}
                        Some(b']') => return true,
                        _ => return false,
                    }
                }
            }
            Some(b'"') => compact_string(json, at).is_some(),
            Some(b'-' | b'0'..=b'9') => {
                while matches!(bytes.get(*at), Some(b'-' | b'.' | b'0'..=b'9')) {
                    *at += 1;
                }
                // An exponent is left to the caller's next token, which it then is not.
                true
            }
            Some(b't') => literal(at, b"true"),
            Some(b'f') => literal(at, b"false"),
            Some(b'n') => literal(at, b"null"),
            _ => false,
        }
    }

    /// A string without escapes at `*at`, its content returned; `None` for anything else.
    fn compact_string<'a>(json: &'a str, at: &mut usize) -> Option<&'a str> {
        let bytes = json.as_bytes();
        if bytes.get(*at) != Some(&b'"') {
            return None;
        }
        let start = *at + 1;
        let length = memchr::memchr2(b'"', b'\\', bytes.get(start..)?)?;
        if bytes[start + length] == b'\\' {
            return None;
        }
        *at = start + length + 1;
        json.get(start..start + length)
    }
}

/// Normalizes a seed-shaped sale event. Every field the ledger stores is read strictly (see
/// [`Fields`]): a wrong type, an amount that is negative or beyond `DECIMAL(10,2)`, an id over
/// [`MAX_ID_BYTES`](crate::ledger::MAX_ID_BYTES) or any NUL is a permanent error naming the
/// field. An absent price is not: the event may update a sale another event creates, and the
/// ledger retries it until that event has arrived.
fn normalize_sale(payload: &Value, event_type: &str) -> Result<Normalized, NormalizeError> {
    let Some(action) = event_type.strip_prefix("sale.") else {
        return Ok(Normalized::Ignore(format!(
            "{event_type} is not a sale event"
        )));
    };
    let raw = payload
        .get("data")
        .ok_or(NormalizeError::MissingField("data"))?;
    let data = Fields::object(raw, "data")?;
    let cartpanda_id = data
        .id("/sale_id")?
        .ok_or(NormalizeError::MissingField("data.sale_id"))?;
    let currency = match data.currency("/currency")? {
        Some(currency) => currency,
        None => data
            .currency("/product/currency")?
            .unwrap_or_else(Currency::brl),
    };
    let status = SaleStatus::parse(action)
        .or_else(|| text(raw, "/payment/status").and_then(|word| SaleStatus::parse(&word)));
    let sale = SaleUpsert {
        cartpanda_id,
        customer_email: data.id("/customer/email")?,
        customer_name: data.text("/customer/name")?,
        product_name: data.text("/product/name")?,
        product_id: data.id("/product/id")?,
        price: data.amount("/product/price", &currency, NullAmount::Refused)?,
        status,
        affiliate_code: data.id("/affiliate/code")?,
        affiliate_name: data.text("/affiliate/name")?,
        commission: data.amount("/affiliate/commission", &currency, NullAmount::MeansAbsent)?,
        payment_method: data.text("/payment/method")?,
        transaction_id: data.id("/payment/transaction_id")?,
        metadata: Some(compact(raw)),
        event_at: json::timestamp(raw, "/updated_at")
            .or_else(|| json::timestamp(payload, "/created_at")),
    };
    data.check_no_nul()?;
    Ok(Normalized::Changes(vec![LedgerChange::Sale(Box::new(
        sale,
    ))]))
}

/// The payload as compact JSON text for the ledger's metadata column. `serde_json::to_string`
/// writes straight into a buffer; `Value`'s `Display` goes through `fmt::Write` piece by piece
/// and costs several times more on every sale.
fn compact(value: &Value) -> String {
    serde_json::to_string(value).expect("a JSON value serializes")
}

/// Normalizes a store-shaped order event, as strictly as [`normalize_sale`]. Where a field may
/// sit in several places, the first one that says something is read.
fn normalize_store(payload: &Value, event: &str) -> Result<Normalized, NormalizeError> {
    if !event.starts_with("order.") {
        return Ok(Normalized::Ignore(format!(
            "{event} is journaled; only order events change the sales ledger"
        )));
    }
    let raw = payload
        .get("order")
        .ok_or(NormalizeError::MissingField("order"))?;
    let order = Fields::object(raw, "order")?;
    let cartpanda_id = order
        .id("/id")?
        .ok_or(NormalizeError::MissingField("order.id"))?;
    let currency = match order.currency("/currency")? {
        Some(currency) => currency,
        None => order
            .currency("/presentment_currency")?
            .unwrap_or_else(Currency::brl),
    };
    let status = store_event_status(event).or_else(|| {
        first_text(raw, &["/financial_status", "/payment_status", "/status"])
            .and_then(|word| SaleStatus::parse(&word))
    });
    let sale = SaleUpsert {
        cartpanda_id,
        customer_email: order.first_id(&["/email", "/customer/email", "/contact_email"])?,
        customer_name: customer_name(&order)?,
        product_name: product_names(&order)?,
        product_id: order.first_id(&["/line_items/0/product_id", "/line_items/0/id"])?,
        price: order.first_amount(
            &["/total_price", "/total", "/price", "/subtotal_price"],
            &currency,
            NullAmount::Refused,
        )?,
        status,
        affiliate_code: order.first_id(&["/affiliate/code", "/affiliate_code"])?,
        affiliate_name: order.first_text(&["/affiliate/name", "/affiliate_name"])?,
        commission: order.amount("/affiliate/commission", &currency, NullAmount::MeansAbsent)?,
        payment_method: order.first_text(&[
            "/payment_gateway",
            "/payment_method",
            "/gateway",
            "/payment/method",
        ])?,
        transaction_id: order.first_id(&[
            "/transaction_id",
            "/payment/transaction_id",
            "/checkout_token",
        ])?,
        metadata: Some(compact(raw)),
        event_at: json::timestamp(raw, "/updated_at"),
    };
    order.check_no_nul()?;
    Ok(Normalized::Changes(vec![LedgerChange::Sale(Box::new(
        sale,
    ))]))
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

fn customer_name(order: &Fields<'_>) -> Result<Option<String>, NormalizeError> {
    if let Some(name) = order.first_text(&["/customer/name", "/customer/full_name"])? {
        return Ok(Some(name));
    }
    let mut parts = Vec::new();
    for pointer in ["/customer/first_name", "/customer/last_name"] {
        parts.extend(order.text(pointer)?);
    }
    Ok((!parts.is_empty()).then(|| parts.join(" ")))
}

fn product_names(order: &Fields<'_>) -> Result<Option<String>, NormalizeError> {
    let items = match order.get("/line_items")? {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(NormalizeError::WrongType {
                field: order.field("/line_items"),
                expected: "an array",
                found: json::type_name(other),
            })
        }
    };
    let mut names = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let item = Fields::object(item, order.field(&format!("/line_items/{index}")))?;
        names.extend(item.first_text(&["/title", "/name", "/product_name"])?);
    }
    Ok((!names.is_empty()).then(|| names.join(", ")))
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue, Method};
    use bytes::Bytes;

    use super::*;
    use crate::journal::{ClaimToken, DeliveryId};
    use crate::ledger::{Money, MoneyError, TextError, MAX_ID_BYTES};
    use crate::sources::authenticate;

    const SEED_PAYLOAD: &str = SEED_SALE_APPROVED;
    const STORE_PAYLOAD: &str = STORE_ORDER_PAID;

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
            path_params: Vec::new(),
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
            verifying: false,
        }
    }

    fn sale(normalized: Normalized) -> SaleUpsert {
        match normalized {
            Normalized::Changes(changes) => match changes.into_iter().next() {
                Some(LedgerChange::Sale(sale)) => *sale,
                other => panic!("not one sale: {other:?}"),
            },
            Normalized::Ignore(reason) => panic!("ignored: {reason}"),
        }
    }

    fn json(text: &str) -> Value {
        serde_json::from_str(text).expect("json")
    }

    /// `body` with the field at `pointer` set to the JSON `value` (kept exact: numbers are not
    /// routed through a float).
    fn with(body: &str, pointer: &str, value: &str) -> String {
        let mut payload = json(body);
        let (parent, key) = pointer.rsplit_once('/').expect("pointer");
        let parent = payload
            .pointer_mut(parent)
            .and_then(Value::as_object_mut)
            .expect("parent object");
        parent.insert(key.to_owned(), json(value));
        payload.to_string()
    }

    fn seed_with(pointer: &str, value: &str) -> String {
        with(SEED_PAYLOAD, pointer, value)
    }

    fn store_with(pointer: &str, value: &str) -> String {
        with(STORE_PAYLOAD, pointer, value)
    }

    fn normalized(body: &str) -> SaleUpsert {
        sale(source().normalize(&claimed(body)).expect("normalized"))
    }

    /// The error normalizing `body` fails with, which must park the delivery, not retry it.
    fn permanent_failure(body: &str) -> NormalizeError {
        let error = source()
            .normalize(&claimed(body))
            .expect_err("normalize fails");
        assert!(error.is_permanent(), "not permanent: {error}");
        error
    }

    fn failure_message(body: &str) -> String {
        permanent_failure(body).to_string()
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

    /// The fast path reads what it reads as the tree does, and gives up on the rest.
    #[test]
    fn fast_sales_are_the_trees_sales() {
        let compact = json(SEED_PAYLOAD).to_string();
        let bench = r#"{"id":"evt_cg_0_1","type":"sale.approved","data":{"sale_id":"SALE_cg_0_1","customer":{"email":"c0_1@example.com","name":"John Doe"},"product":{"id":"PROD_1","name":"Product Name","price":99.90},"affiliate":{"code":"AFF123","name":"Affiliate","commission":29.97},"payment":{"method":"credit_card","transaction_id":"TRX_cg_0_1","status":"approved"},"created_at":"2024-01-05T10:30:00Z","notes":"xxxx"}}"#;
        let taken = [
            compact.clone(),
            bench.to_owned(),
            seed_with("/data/product/price", r#""99.90""#),
            seed_with("/data/product/price", "0"),
            seed_with("/data/product/price", r#"" 99.90""#),
            seed_with("/data/affiliate/commission", "null"),
            seed_with("/data/affiliate", "null"),
            seed_with("/data/customer", "null"),
            seed_with("/data/customer/name", r#""  Ana  ""#),
            seed_with("/data/customer/name", r#""   ""#),
            seed_with("/data/customer/name", "null"),
            seed_with("/data/sale_id", "123456"),
            seed_with("/data/customer/email", "-12.50"),
            seed_with("/data/currency", r#""USD""#),
            seed_with("/data/product/currency", r#""EUR""#),
            seed_with("/data/updated_at", r#""2024-02-01 08:00:00""#),
            seed_with("/data/updated_at", "1704450600"),
            seed_with("/data/updated_at", r#""not a time""#),
            seed_with("/data/updated_at", "true"),
            seed_with("/data/payment/status", r#""refunded""#),
            seed_with("/data/customer/name", r#""João ✓""#),
            seed_with(
                "/data/extra",
                r#"[1,{"a":[],"b":{}},"x",true,false,null,-0.5]"#,
            ),
            with(&compact, "/type", r#""sale.updated""#),
            with(
                &with(&compact, "/type", r#""sale.updated""#),
                "/data/payment/status",
                r#""chargedback""#,
            ),
            with(&compact, "/created_at", r#""2024-01-05T10:30:00Z""#),
            with(
                &with(&compact, "/created_at", "1704450600"),
                "/data/updated_at",
                "[]",
            ),
        ];
        let left = [
            SEED_PAYLOAD.to_owned(),
            STORE_PAYLOAD.to_owned(),
            seed_with("/data/product/price", "9.99e1"),
            seed_with("/data/product/price", "null"),
            seed_with("/data/product/price", "-1"),
            seed_with("/data/product", r#""Kit""#),
            seed_with("/data/customer", r#"["a@example.com","Ana"]"#),
            compact.replace("John Doe", r"Jo\u00e3o"),
            compact.replace("John Doe", r"a\u0000b"),
            seed_with("/data/product/name", r#""the \"best\" kit""#),
            seed_with("/data/sale_id", &format!("{:?}", "x".repeat(256))),
            seed_with("/data/sale_id", "null"),
            seed_with("/data/extra", r#""tab\tin text""#),
            seed_with("/data/extra", "1E5"),
            compact.replace(r#""name":"John Doe""#, r#""name":"John Doe","name":"Jane""#),
            compact.replace(r#""sale_id""#, r#""notes":1,"notes":2,"sale_id""#),
            compact.replacen(',', ", ", 3),
            with(&compact, "/type", r#""product.created""#),
            with(&compact, "/data", "[]"),
            "[]".to_owned(),
        ];
        let tree = |body: &str| normalize_tree(body.as_bytes()).ok().map(sale);
        let fast_sale = direct::fast_sale;
        for body in &taken {
            let fast = fast_sale(body.as_bytes());
            assert!(fast.is_some(), "left to the tree: {body}");
            assert_eq!(fast, tree(body), "{body}");
        }
        for body in &left {
            assert_eq!(fast_sale(body.as_bytes()), None, "{body}");
        }
        let bench_sale = fast_sale(bench.as_bytes()).expect("taken");
        assert_eq!(
            bench_sale.metadata,
            Some(super::compact(&json(bench)["data"]))
        );
    }

    #[test]
    fn every_identity_is_the_same_whether_read_by_pick_or_from_the_tree() {
        let cases = [
            (
                r#"{"event":"product.updated","product":{"id":5,"shop":{"slug":"s"},"updated_at":"t"}}"#,
                "s:product:5:product.updated:t".to_owned(),
            ),
            (
                r#"{"event":"order.paid","shop":{"slug":"top"},"order":{"id":"7"}}"#,
                format!(
                    "top:order:7:order.paid:sha256:{}",
                    hex_digest(
                        br#"{"event":"order.paid","shop":{"slug":"top"},"order":{"id":"7"}}"#
                    )
                ),
            ),
            (
                r#"{"type":"custom.thing", "data": {"n": 1.50}}"#,
                format!(
                    "custom.thing:sha256:{}",
                    hex_digest(br#"{"type":"custom.thing","data":{"n":1.50}}"#)
                ),
            ),
            (
                r#"{"type":"sale.refunded","data":{"sale_id":" S9 "}}"#,
                "sale.refunded:S9".to_owned(),
            ),
        ];
        for (body, dedup_key) in cases {
            let verified = || {
                authenticate(&source(), request(body, Some(&sign(body))), Timestamp(0))
                    .expect("verified")
            };
            let picked = source().identify(&verified()).expect("identified");
            assert_eq!(picked.dedup_key, dedup_key, "{body}");
            let with_tree = verified();
            with_tree.json().expect("json");
            assert_eq!(
                source().identify(&with_tree).expect("identified"),
                picked,
                "{body}"
            );
        }
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

    #[test]
    fn negative_price_is_a_permanent_failure() {
        let error = permanent_failure(&seed_with("/data/product/price", "-5.00"));
        assert!(
            matches!(&error, NormalizeError::OutOfRange { field, .. } if field == "data.product.price")
        );
        assert_eq!(
            error.to_string(),
            "data.product.price is out of range: -5.00 BRL is negative"
        );
    }

    #[test]
    fn negative_commission_is_a_permanent_failure() {
        assert_eq!(
            failure_message(&seed_with("/data/affiliate/commission", r#""-0.01""#)),
            "data.affiliate.commission is out of range: -0.01 BRL is negative"
        );
    }

    #[test]
    fn price_above_decimal_10_2_is_rejected() {
        let error = permanent_failure(&seed_with("/data/product/price", "100000000.00"));
        assert!(matches!(error, NormalizeError::OutOfRange { .. }));
        assert_eq!(
            error.to_string(),
            "data.product.price is out of range: 100000000.00 BRL does not fit seed 000's \
             DECIMAL(10,2): sale amounts are at most 99999999.99"
        );
        assert!(matches!(
            permanent_failure(&seed_with("/data/affiliate/commission", "123456789012")),
            NormalizeError::OutOfRange { .. }
        ));
    }

    #[test]
    fn largest_decimal_10_2_price_is_accepted() {
        let sale = normalized(&seed_with("/data/product/price", "99999999.99"));
        assert_eq!(sale.price.map(|m| m.minor_units), Some(9_999_999_999));
    }

    #[test]
    fn zero_price_and_commission_are_accepted() {
        let body = seed_with("/data/product/price", "0");
        let sale = normalized(&with(&body, "/data/affiliate/commission", r#""0.00""#));
        assert_eq!(sale.price.map(|m| m.minor_units), Some(0));
        assert_eq!(sale.commission.map(|m| m.minor_units), Some(0));
    }

    #[test]
    fn store_order_amounts_are_bounded_like_seed_ones() {
        assert_eq!(
            failure_message(&store_with("/order/total_price", r#""-159.80""#)),
            "order.total_price is out of range: -159.80 BRL is negative"
        );
        assert!(matches!(
            permanent_failure(&store_with("/order/total_price", r#""100000000.00""#)),
            NormalizeError::OutOfRange { field, .. } if field == "order.total_price"
        ));
        let sale = normalized(&store_with("/order/total_price", r#""99999999.99""#));
        assert_eq!(sale.price.map(|m| m.minor_units), Some(9_999_999_999));
    }

    #[test]
    fn unparseable_or_too_precise_price_names_the_field() {
        assert_eq!(
            failure_message(&seed_with("/data/product/price", r#""ninety""#)),
            r#"data.product.price is invalid: amount "ninety" is not a decimal number"#
        );
        assert!(matches!(
            permanent_failure(&seed_with("/data/product/price", "9.999")),
            NormalizeError::Money { field, error: MoneyError::TooPrecise { .. } }
                if field == "data.product.price"
        ));
    }

    #[test]
    fn blank_price_is_not_read_as_absent() {
        assert!(matches!(
            permanent_failure(&seed_with("/data/product/price", r#""  ""#)),
            NormalizeError::Money {
                error: MoneyError::NotDecimal(_),
                ..
            }
        ));
    }

    #[test]
    fn price_as_object_is_a_type_error_not_retried() {
        let error = permanent_failure(&seed_with("/data/product/price", r#"{"amount":"9.90"}"#));
        assert!(matches!(
            &error,
            NormalizeError::WrongType { field, expected: _, found: "object" }
                if field == "data.product.price"
        ));
        assert_eq!(
            error.to_string(),
            "data.product.price must be a number or decimal string, found object"
        );
    }

    #[test]
    fn price_as_array_or_boolean_is_a_type_error() {
        assert_eq!(
            failure_message(&seed_with("/data/product/price", "[99.90]")),
            "data.product.price must be a number or decimal string, found array"
        );
        assert_eq!(
            failure_message(&seed_with("/data/product/price", "true")),
            "data.product.price must be a number or decimal string, found boolean"
        );
        assert_eq!(
            failure_message(&seed_with("/data/affiliate/commission", "{}")),
            "data.affiliate.commission must be a number or decimal string, found object"
        );
        assert_eq!(
            failure_message(&store_with("/order/total_price", "false")),
            "order.total_price must be a number or decimal string, found boolean"
        );
    }

    #[test]
    fn null_price_is_permanent() {
        assert_eq!(
            failure_message(&seed_with("/data/product/price", "null")),
            "data.product.price must be a number or decimal string, found null"
        );
        assert_eq!(
            failure_message(&store_with("/order/total_price", "null")),
            "order.total_price must be a number or decimal string, found null"
        );
    }

    #[test]
    fn null_commission_means_no_commission() {
        let sale = normalized(&seed_with("/data/affiliate/commission", "null"));
        assert_eq!(sale.commission, None);
        let sale = normalized(&seed_with("/data/affiliate", "null"));
        assert_eq!((sale.commission, sale.affiliate_code), (None, None));
    }

    #[test]
    fn absent_price_is_left_to_the_ledger_which_retries_until_the_sale_exists() {
        let mut payload = json(SEED_PAYLOAD);
        payload["data"]["product"]
            .as_object_mut()
            .expect("product")
            .remove("price");
        assert_eq!(normalized(&payload.to_string()).price, None);
    }

    #[test]
    fn customer_and_product_text_of_the_wrong_type_is_a_type_error() {
        assert_eq!(
            failure_message(&seed_with("/data/customer/email", r#"{"address":"a@b.c"}"#)),
            "data.customer.email must be a string or number, found object"
        );
        assert_eq!(
            failure_message(&seed_with("/data/customer/name", "false")),
            "data.customer.name must be a string or number, found boolean"
        );
        assert_eq!(
            failure_message(&seed_with("/data/product/name", r#"["Kit"]"#)),
            "data.product.name must be a string or number, found array"
        );
        assert_eq!(
            failure_message(&store_with("/order/customer/first_name", "{}")),
            "order.customer.first_name must be a string or number, found object"
        );
    }

    #[test]
    fn a_scalar_where_an_object_belongs_is_a_type_error() {
        assert_eq!(
            failure_message(&seed_with("/data/product", r#""Product Name""#)),
            "data.product must be an object, found string"
        );
        assert_eq!(
            failure_message(&seed_with("/data", "[]")),
            "data must be an object, found array"
        );
        assert_eq!(
            failure_message(&store_with("/order", r#""987654""#)),
            "order must be an object, found string"
        );
    }

    #[test]
    fn store_line_items_must_be_an_array_of_objects() {
        assert_eq!(
            failure_message(&store_with("/order/line_items", r#"{"title":"Kit"}"#)),
            "order.line_items must be an array, found object"
        );
        assert_eq!(
            failure_message(&store_with("/order/line_items", r#"["Kit"]"#)),
            "order.line_items.0 must be an object, found string"
        );
        assert_eq!(
            failure_message(&store_with(
                "/order/line_items",
                r#"[{"title":7.5e3}, {"title":{}}]"#
            )),
            "order.line_items.1.title must be a string or number, found object"
        );
    }

    #[test]
    fn currency_of_the_wrong_type_is_not_defaulted_to_brl() {
        assert_eq!(
            failure_message(&seed_with("/data/currency", "{}")),
            "data.currency must be a string or number, found object"
        );
        assert_eq!(
            failure_message(&store_with("/order/currency", r#""REAL""#)),
            r#"order.currency is invalid: currency "REAL" is not an ISO 4217 code"#
        );
    }

    #[test]
    fn id_longer_than_255_bytes_is_rejected() {
        let longest = format!("\"{}\"", "S".repeat(MAX_ID_BYTES));
        assert_eq!(
            normalized(&seed_with("/data/sale_id", &longest)).cartpanda_id,
            "S".repeat(255)
        );
        let too_long = format!("\"{}\"", "S".repeat(MAX_ID_BYTES + 1));
        let error = permanent_failure(&seed_with("/data/sale_id", &too_long));
        assert!(matches!(
            &error,
            NormalizeError::BadId { field, reason: TextError::TooLong { bytes: 256 } }
                if field == "data.sale_id"
        ));
        assert_eq!(
            error.to_string(),
            "data.sale_id is 256 bytes long; ids are at most 255 bytes"
        );
    }

    #[test]
    fn order_id_longer_than_255_bytes_is_rejected() {
        let digits = "9".repeat(MAX_ID_BYTES + 1);
        assert_eq!(
            failure_message(&store_with("/order/id", &digits)),
            "order.id is 256 bytes long; ids are at most 255 bytes"
        );
    }

    #[test]
    fn every_id_that_becomes_a_key_is_bounded() {
        let too_long = format!("\"{}\"", "x".repeat(MAX_ID_BYTES + 1));
        for (pointer, field) in [
            (
                "/data/payment/transaction_id",
                "data.payment.transaction_id",
            ),
            ("/data/product/id", "data.product.id"),
            ("/data/affiliate/code", "data.affiliate.code"),
            ("/data/customer/email", "data.customer.email"),
        ] {
            assert!(
                matches!(
                    permanent_failure(&seed_with(pointer, &too_long)),
                    NormalizeError::BadId { field: found, reason: TextError::TooLong { .. } }
                        if found == field
                ),
                "{pointer}"
            );
        }
        for (pointer, field) in [
            ("/order/transaction_id", "order.transaction_id"),
            ("/order/affiliate_code", "order.affiliate_code"),
            ("/order/email", "order.email"),
        ] {
            assert!(
                matches!(
                    permanent_failure(&store_with(pointer, &too_long)),
                    NormalizeError::BadId { field: found, .. } if found == field
                ),
                "{pointer}"
            );
        }
        let mut payload = json(STORE_PAYLOAD);
        payload["order"]["line_items"][0]["product_id"] = json(&too_long);
        assert!(matches!(
            permanent_failure(&payload.to_string()),
            NormalizeError::BadId { field, .. } if field == "order.line_items.0.product_id"
        ));
    }

    #[test]
    fn nul_in_id_is_rejected() {
        let error = permanent_failure(&seed_with("/data/sale_id", r#""SALE\u0000_1""#));
        assert!(matches!(
            &error,
            NormalizeError::BadId { field, reason: TextError::Nul } if field == "data.sale_id"
        ));
        assert_eq!(
            error.to_string(),
            "data.sale_id contains a NUL byte, which PostgreSQL TEXT cannot store"
        );
        assert!(matches!(
            permanent_failure(&store_with("/order/id", r#""98\u00007""#)),
            NormalizeError::BadId { field, reason: TextError::Nul } if field == "order.id"
        ));
        assert!(matches!(
            permanent_failure(&seed_with("/data/payment/transaction_id", r#""\u0000""#)),
            NormalizeError::BadId {
                reason: TextError::Nul,
                ..
            }
        ));
    }

    #[test]
    fn nul_in_stored_text_is_rejected() {
        assert_eq!(
            failure_message(&seed_with("/data/customer/name", r#""John\u0000Doe""#)),
            "data.customer.name contains a NUL byte, which PostgreSQL TEXT cannot store"
        );
        assert!(matches!(
            permanent_failure(&store_with("/order/payment_gateway", r#""pix\u0000""#)),
            NormalizeError::BadText { field, reason: TextError::Nul } if field == "order.payment_gateway"
        ));
    }

    #[test]
    fn nul_anywhere_in_the_stored_record_is_rejected() {
        assert_eq!(
            failure_message(&seed_with("/data/notes", r#"{"lines":["ok","bad\u0000"]}"#)),
            "data.notes.lines.1 contains a NUL byte, which PostgreSQL TEXT cannot store"
        );
        assert_eq!(
            failure_message(&store_with("/order/shop", r#"{"a\u0000b":1}"#)),
            "order.shop.a\\0b contains a NUL byte, which PostgreSQL TEXT cannot store"
        );
    }
}
