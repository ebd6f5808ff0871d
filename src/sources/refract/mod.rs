//! Refract checkout-bot messages (seed 001), parsed from bytes to a [`RefractMessage`]: the
//! labelled-line text, a Discord execute-webhook body (JSON or multipart) and flat JSON all give
//! the same order. Pure: no I/O, no storage, and no input makes it panic. [`source`] makes it a
//! Wharf source (routes, token, replies); [`ledger`] writes `orders` and `order_events`.

pub mod discord;
pub mod ledger;
pub mod message;
pub mod source;

use serde_json::Value;

pub use self::discord::{
    is_discord_body, multipart_boundary, parse_discord, payload_json, strip_markdown,
    MultipartError,
};
pub use self::message::{
    parse_flat_json, parse_text, ChangedField, FieldChange, OrderField, OrderStatus, ParseError,
    Price, RefractMessage, RefractOrder, StatusOrigin,
};
pub use self::source::{Refract, RefractProvider};

/// Parses a request body as it arrived. `multipart/form-data` is read through its
/// `payload_json` part. Otherwise the body decides, not the content type, which seed 001 tells
/// users to set to `text/plain` "or leave default", whatever the bot then sends: a body
/// starting with `{` or `[` is JSON (a Discord body or flat JSON), as is a JSON string when
/// the content type says JSON; anything else is the text format.
pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<RefractMessage, ParseError> {
    if let Some(content_type) = content_type.filter(|ct| is_multipart(ct)) {
        let json = payload_json(content_type, body).map_err(ParseError::Multipart)?;
        return parse_json(json);
    }
    let text = std::str::from_utf8(body).map_err(|_| ParseError::NotUtf8)?;
    let text = text.trim_start_matches('\u{feff}');
    let start = text.trim_start();
    if start.is_empty() {
        return Err(ParseError::Empty);
    }
    let json_string =
        start.starts_with('"') && content_type.is_some_and(|ct| media_type(ct).ends_with("json"));
    if json_string || start.starts_with('{') || start.starts_with('[') {
        parse_json(text.as_bytes())
    } else {
        parse_text(text)
    }
}

/// What a message says, as JSON for operators (the webhook logs): every field it carries,
/// named as its column.
pub fn message_json(message: &RefractMessage) -> Value {
    match message {
        RefractMessage::TestNotification { title } => {
            serde_json::json!({ "test_notification": true, "title": title })
        }
        RefractMessage::Order(order) => {
            let mut fields = serde_json::Map::new();
            for field in order.fields_present() {
                if let Some(value) = order.value_of(field) {
                    fields.insert(field.column().to_owned(), Value::String(value));
                }
            }
            fields
                .entry("status")
                .or_insert_with(|| Value::String(order.status.as_str().to_owned()));
            for (label, value) in &order.extra {
                fields.insert(label.clone(), Value::String(value.clone()));
            }
            Value::Object(fields)
        }
    }
}

/// Parses JSON: a Discord body, flat JSON, or a JSON string holding the text format.
pub fn parse_json(json: &[u8]) -> Result<RefractMessage, ParseError> {
    let value: Value = serde_json::from_slice(json).map_err(ParseError::Json)?;
    match &value {
        Value::Object(object) if is_discord_body(object) => parse_discord(object),
        Value::Object(object) => parse_flat_json(object),
        Value::String(text) => parse_text(text),
        Value::Array(_) => Err(ParseError::NotAnObject("an array")),
        Value::Number(_) => Err(ParseError::NotAnObject("a number")),
        Value::Bool(_) => Err(ParseError::NotAnObject("a boolean")),
        Value::Null => Err(ParseError::NotAnObject("null")),
    }
}

fn media_type(content_type: &str) -> String {
    let media_type = content_type.split(';').next().unwrap_or_default();
    media_type.trim().to_ascii_lowercase()
}

fn is_multipart(content_type: &str) -> bool {
    media_type(content_type) == "multipart/form-data"
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::message::tests::{order, seed_order, SEED_MESSAGE};
    use super::*;

    fn flat_seed() -> Value {
        json!({
            "title": "Successful Checkout | Best Buy US",
            "product": "STARLINK - Mini Kit AC Dual Band Wi-Fi System - White",
            "Price": "$299.99",
            "profile_name": "Lennar #8-$48-@07",
            "proxyDetails": "Wealth Resi | http://resi-edge-pool.wealthproxies.com:5959/",
            "Share Link": "Click Here",
            "orderNumber": "#BBY01-807102506907",
            "EMAIL": "woozy_byes28@icloud.com",
            "image": null,
        })
    }

    fn discord_seed() -> Value {
        json!({ "embeds": [{
            "title": "Successful Checkout | Best Buy US",
            "fields": [
                { "name": "Product", "value": "STARLINK - Mini Kit AC Dual Band Wi-Fi System - White" },
                { "name": "Price", "value": "$299.99" },
                { "name": "Profile", "value": "||Lennar #8-$48-@07||" },
                { "name": "Proxy Details", "value": "Wealth Resi | http://resi-edge-pool.wealthproxies.com:5959/" },
                { "name": "Share Link", "value": "Click Here" },
                { "name": "Order Number", "value": "#BBY01-807102506907" },
                { "name": "Email", "value": "||woozy_byes28@icloud.com||" },
            ],
        }]})
    }

    fn multipart_body(boundary: &str, json: &[u8]) -> Vec<u8> {
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"files[0]\"; \
             filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(b"\x89PNG\r\n\x1a\n\x00\xff");
        body.extend_from_slice(
            format!(
                "\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"payload_json\"\r\n\
                 Content-Type: application/json\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(json);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        body
    }

    #[test]
    fn every_shape_parses_to_the_same_order() {
        let discord = discord_seed().to_string();
        let flat = flat_seed().to_string();
        let json_string = Value::String(SEED_MESSAGE.to_owned()).to_string();
        let multipart = multipart_body("XyZ", discord.as_bytes());
        let shapes: [(&[u8], Option<&str>); 10] = [
            (SEED_MESSAGE.as_bytes(), Some("text/plain")),
            (SEED_MESSAGE.as_bytes(), None),
            (
                SEED_MESSAGE.as_bytes(),
                Some("application/x-www-form-urlencoded"),
            ),
            (discord.as_bytes(), Some("application/json")),
            (discord.as_bytes(), Some("text/plain")),
            (flat.as_bytes(), Some("application/json; charset=utf-8")),
            (flat.as_bytes(), None),
            (json_string.as_bytes(), Some("application/json")),
            (
                json_string.as_bytes(),
                Some("Application/JSON; charset=utf-8"),
            ),
            (&multipart, Some("multipart/form-data; boundary=XyZ")),
        ];
        for (body, content_type) in shapes {
            assert_eq!(
                order(parse(body, content_type)),
                seed_order(),
                "{content_type:?} {}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn flat_json_reads_numbers_exactly_and_keys_in_any_spelling() {
        let body = br#"{"order_number": 12345, "Price": 1299.90, "qty": 2, "currency": "eur",
            "Tracking_Number": "1Z", "status": "Delivered", "checkoutSpeed": 3.25,
            "proxies": ["a", "b"], "meta": {"x": 1}}"#;
        let parsed = order(parse(body, Some("application/json")));
        assert_eq!(parsed.order_number, "12345");
        let price = parsed.price.expect("price");
        assert_eq!(price.amount.as_deref(), Some("1299.90"));
        assert_eq!(price.currency.as_ref().map(|c| c.code()), Some("EUR"));
        assert_eq!(parsed.quantity, Some(2));
        assert_eq!(parsed.tracking_number.as_deref(), Some("1Z"));
        assert_eq!(parsed.status, OrderStatus::Delivered);
        assert_eq!(parsed.status_origin, StatusOrigin::Label);
        assert_eq!(parsed.proxy.as_deref(), Some("a, b"));
        assert_eq!(
            parsed.extra,
            vec![
                ("checkoutSpeed".to_owned(), "3.25".to_owned()),
                ("meta".to_owned(), r#"{"x":1}"#.to_owned()),
            ]
        );
    }

    #[test]
    fn a_test_notification_in_any_shape_is_recognized() {
        let bodies: [(&[u8], Option<&str>); 4] = [
            (b"Test Notification", Some("text/plain")),
            (br#"{"content":"Test Notification"}"#, None),
            (
                br#"{"embeds":[{"title":"Test Notification","color":3447003}]}"#,
                Some("application/json"),
            ),
            (br#"{"title":"Test Notification"}"#, None),
        ];
        for (body, content_type) in bodies {
            assert!(
                matches!(
                    parse(body, content_type),
                    Ok(RefractMessage::TestNotification { .. })
                ),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn every_error_says_could_not_parse_webhook_content_and_why() {
        let cases: [(&[u8], Option<&str>, &str); 8] = [
            (b"", None, "the body is empty"),
            (b"\xef\xbb\xbf \r\n", None, "the body is empty"),
            (b"Order\xff", None, "the body is not valid UTF-8"),
            (b"{\"order_number\":", None, "the JSON is invalid"),
            (b"[1,2]", None, "the JSON body is an array, not an object"),
            (b"\"\"", Some("application/json"), "the body is empty"),
            (
                b"--B\r\n\r\n{}\r\n--B--",
                Some("multipart/form-data; boundary=B"),
                "the multipart body has no payload_json part",
            ),
            (
                b"{\"product\":\"x\"}",
                None,
                "no order number (an `Order Number` line",
            ),
        ];
        for (body, content_type, reason) in cases {
            let error = parse(body, content_type).expect_err(reason).to_string();
            let expected = format!("Could not parse webhook content: {reason}");
            assert!(error.starts_with(&expected), "{error}");
        }
        let number = parse_json(b"42").expect_err("a number").to_string();
        assert_eq!(
            number,
            "Could not parse webhook content: the JSON body is a number, not an object"
        );
        let mislabelled = parse(SEED_MESSAGE.as_bytes(), Some("application/json"));
        assert_eq!(
            order(mislabelled),
            seed_order(),
            "text sent as JSON is still text"
        );
    }

    /// Text fragments that reach the parser's corners: markdown, separators, labels, JSON and
    /// multipart syntax, multi-byte and invisible characters.
    const SPICE: [&str; 44] = [
        "||",
        "**",
        "__",
        "~~",
        "*",
        "`",
        "```",
        "```json\n",
        "[",
        "](",
        "](https://x.test/",
        ")",
        "<",
        "<https://",
        ">",
        "\\",
        "# ",
        "> ",
        ":",
        ": ",
        "|",
        " | ",
        "\n",
        "\r\n",
        "\n\n",
        "$",
        "€",
        "R$",
        "kr",
        ",",
        ".",
        "'",
        "-",
        "\u{a0}",
        "\u{202f}",
        "\u{200b}",
        "é",
        "💥",
        "Order Number\n",
        "#",
        "Test Notification",
        "\"",
        "--XyZ",
        "\u{0}",
    ];

    fn mutate(rng: &mut fastrand::Rng, input: &mut Vec<u8>) {
        let len = input.len();
        let at = rng.usize(..=len);
        match rng.u8(..7) {
            0 | 1 => {
                let spice = SPICE[rng.usize(..SPICE.len())].as_bytes();
                input.splice(at..at, spice.iter().copied());
            }
            2 => {
                let end = (at + rng.usize(..=16)).min(len);
                input.drain(at..end);
            }
            3 => {
                let end = (at + rng.usize(..=64)).min(len);
                let copy = input[at..end].to_vec();
                let to = rng.usize(..=len);
                input.splice(to..to, copy);
            }
            4 => {
                let noise: Vec<u8> = (0..rng.usize(1..8)).map(|_| rng.u8(..)).collect();
                input.splice(at..at, noise);
            }
            5 => {
                let text = String::from_utf8_lossy(input).into_owned();
                let mut lines: Vec<&str> = text.split('\n').collect();
                let (a, b) = (rng.usize(..lines.len()), rng.usize(..lines.len()));
                lines.swap(a, b);
                *input = lines.join("\n").into_bytes();
            }
            _ => input.truncate(at),
        }
        input.truncate(4096);
    }

    /// What any input must give: an order with a clean order number, a test notification, or
    /// an error in the seed's words.
    fn check(result: Result<RefractMessage, ParseError>) {
        match result {
            Ok(RefractMessage::Order(order)) => {
                assert!(!order.order_number.is_empty());
                assert!(!order.order_number.starts_with('#'));
                assert_eq!(order.fields_present()[0], OrderField::OrderNumber);
                assert!(order.changes_from(&order).is_empty());
                let _ = order.total_or_price();
                let mut stored = seed_order();
                stored.update_from(&order);
                assert!(order.changes_from(&stored).is_empty());
            }
            Ok(RefractMessage::TestNotification { title }) => assert!(!title.is_empty()),
            Err(error) => assert!(error
                .to_string()
                .starts_with("Could not parse webhook content")),
        }
    }

    /// Builds JSON shapes from mutated text, so the Discord and flat readers see strange
    /// values and not only invalid JSON.
    fn shapes_of(text: &str) -> [Value; 3] {
        let lines: Vec<&str> = text.lines().collect();
        let fields: Vec<Value> = lines
            .chunks(2)
            .map(|pair| json!({ "name": pair[0], "value": pair.get(1).copied().unwrap_or("") }))
            .collect();
        let flat: serde_json::Map<String, Value> = lines
            .chunks(2)
            .map(|pair| {
                (
                    pair[0].to_owned(),
                    json!(pair.get(1).copied().unwrap_or("")),
                )
            })
            .collect();
        [
            json!({ "embeds": [{ "title": lines.first(), "fields": fields, "description": text }] }),
            json!({ "content": text, "embeds": [{ "author": { "name": lines.last() } }] }),
            Value::Object(flat),
        ]
    }

    #[test]
    fn no_input_makes_the_parser_panic() {
        let mut rng = fastrand::Rng::with_seed(0x47ae_9b88_5e4d_7396);
        let discord = discord_seed().to_string();
        let seeds: [Vec<u8>; 4] = [
            SEED_MESSAGE.as_bytes().to_vec(),
            discord.as_bytes().to_vec(),
            flat_seed().to_string().into_bytes(),
            multipart_body("XyZ", discord.as_bytes()),
        ];
        let content_types = [
            None,
            Some("text/plain"),
            Some("application/json"),
            Some("multipart/form-data; boundary=XyZ"),
            Some("multipart/form-data; boundary=\"XyZ"),
            Some("multipart/form-data"),
        ];
        for _ in 0..20_000 {
            let mut input = seeds[rng.usize(..seeds.len())].clone();
            for _ in 0..rng.usize(1..8) {
                mutate(&mut rng, &mut input);
            }
            if rng.bool() {
                input = String::from_utf8_lossy(&input).into_owned().into_bytes();
            }
            let content_type = content_types[rng.usize(..content_types.len())];
            check(parse(&input, content_type));
            if let Some(content_type) = content_type {
                let _ = payload_json(content_type, &input);
            }
            let text = String::from_utf8_lossy(&input);
            match rng.u8(..3) {
                0 => check(parse_text(&text)),
                1 => {
                    let shapes = shapes_of(&text);
                    let shape = &shapes[rng.usize(..shapes.len())];
                    check(parse_json(shape.to_string().as_bytes()));
                }
                _ => {
                    let _ = strip_markdown(&text);
                }
            }
            let line = text.lines().nth(rng.usize(..8)).unwrap_or_default();
            let price = Price::parse(line);
            assert_eq!(price.raw, line);
            if let Some(amount) = price.amount {
                let digits = amount.strip_prefix('-').unwrap_or(&amount);
                assert!(digits
                    .split_once('.')
                    .map_or(digits, |(w, _)| w)
                    .bytes()
                    .all(|b| b.is_ascii_digit()));
            }
        }
    }
}
