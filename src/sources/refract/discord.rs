//! Refract messages as Discord sends them: an execute-webhook body, as JSON or as the
//! `payload_json` part of `multipart/form-data`, with Discord markdown in its text. It reads
//! the body into the same `Collector` as the text format, so both give the same order.

use serde_json::{Map, Value};
use thiserror::Error;

use super::message::{json_text, Collector, Markdown, OrderField, ParseError, RefractMessage};

/// The parameters of Discord's execute-webhook body. An object with `embeds`, or with
/// `content` and nothing outside this list, is a Discord body; anything else is flat JSON.
const EXECUTE_WEBHOOK_KEYS: [&str; 14] = [
    "content",
    "username",
    "avatar_url",
    "tts",
    "embeds",
    "allowed_mentions",
    "components",
    "attachments",
    "flags",
    "thread_name",
    "applied_tags",
    "poll",
    "wait",
    "thread_id",
];

/// Whether `object` is a Discord execute-webhook body rather than flat JSON.
pub fn is_discord_body(object: &Map<String, Value>) -> bool {
    object.contains_key("embeds")
        || (object.contains_key("content")
            && object
                .keys()
                .all(|key| EXECUTE_WEBHOOK_KEYS.contains(&key.as_str())))
}

/// Parses a Discord execute-webhook body. Labels and values come from `embeds[].fields[]`
/// (`name`, `value`), then each embed's `description` (alternating label and value lines, or
/// a single line naming the product), then `content` (the text format, title line included);
/// the first value of a label wins. The outcome and store come from `embeds[].title`, else
/// `embeds[].author.name`, else a title line in the description or content. An embed's `image.url` (else `thumbnail.url`) and
/// `timestamp` fill the image and checkout time when no label does. `footer`, `username` and
/// `avatar_url` name the bot, not the order, and are not read.
pub fn parse_discord(object: &Map<String, Value>) -> Result<RefractMessage, ParseError> {
    let mut collector = Collector::default();
    let embeds: Vec<&Map<String, Value>> = object
        .get("embeds")
        .and_then(Value::as_array)
        .map(|embeds| embeds.iter().filter_map(Value::as_object).collect())
        .unwrap_or_default();
    for embed in &embeds {
        if let Some(title) = text_at(embed, &["title"]) {
            collector.add_title(&strip_markdown(&title));
        }
    }
    for embed in &embeds {
        if let Some(author) = text_at(embed, &["author", "name"]) {
            collector.add_author(&strip_markdown(&author));
        }
    }
    for embed in &embeds {
        let fields = embed.get("fields").and_then(Value::as_array);
        for field in fields.into_iter().flatten() {
            let name = field.get("name").and_then(json_text).unwrap_or_default();
            let value = field.get("value").and_then(json_text).unwrap_or_default();
            collector.add_pair(&strip_markdown(&name), &strip_markdown(&value));
        }
        if let Some(description) = text_at(embed, &["description"]) {
            collector.add_description(&description);
        }
        let image =
            text_at(embed, &["image", "url"]).or_else(|| text_at(embed, &["thumbnail", "url"]));
        if let Some(image) = image {
            collector.add_fallback(OrderField::ImageUrl, &image);
        }
        if let Some(timestamp) = text_at(embed, &["timestamp"]) {
            collector.add_fallback(OrderField::CheckoutTime, &timestamp);
        }
    }
    if let Some(content) = text_at(object, &["content"]) {
        collector.add_lines(&content, Markdown::All);
    }
    collector.finish()
}

/// The text at `path` in nested objects.
fn text_at(object: &Map<String, Value>, path: &[&str]) -> Option<String> {
    let (first, rest) = path.split_first()?;
    let mut value = object.get(*first)?;
    for key in rest {
        value = value.get(key)?;
    }
    json_text(value)
}

/// One character of text being unformatted; `literal` ones (escaped, or inside a URL or code)
/// are never markdown.
#[derive(Debug, Clone, Copy)]
struct Char {
    c: char,
    literal: bool,
}

/// Removes Discord markdown, keeping the text: `||spoiler||`, `**bold**`, `*italic*`,
/// `__underline__`, `~~strike~~`, inline code and code blocks, `# ` headings, `-# ` subtext
/// and `> ` quotes at line starts, and `\` escapes; `[text](url)` and `<url>` become the URL.
/// A marker counts only in pairs, opening before non-blank text and closing after it, and
/// never inside a URL or code, so `woozy_byes28@icloud.com`, `a || b` and
/// `https://x.test/a__b__c` are kept whole. Single `_` is left alone for the same reason.
pub fn strip_markdown(text: &str) -> String {
    let plain = !text.contains(['|', '*', '_', '~', '`', '[', '<', '\\', '#', '>']);
    if plain {
        return text.to_owned();
    }
    let lines: Vec<String> = text.split('\n').map(strip_line_prefix).collect();
    let mut chars = unescape(&lines.join("\n"));
    chars = code_spans(chars);
    chars = links(chars);
    for marker in ["||", "**", "__", "~~", "*"] {
        chars = remove_pairs(chars, marker);
    }
    chars.into_iter().map(|ch| ch.c).collect()
}

fn strip_line_prefix(line: &str) -> String {
    let trimmed = line.trim_start();
    for prefix in ["### ", "## ", "# ", "-# ", ">>> ", "> "] {
        if let Some(rest) = trimmed.strip_prefix(prefix) {
            return rest.to_owned();
        }
    }
    line.to_owned()
}

fn unescape(text: &str) -> Vec<Char> {
    let mut out = Vec::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match chars.peek() {
            Some(&next) if c == '\\' && "\\*_~`|[]()<>#-".contains(next) => {
                chars.next();
                out.push(Char {
                    c: next,
                    literal: true,
                });
            }
            _ => out.push(Char { c, literal: false }),
        }
    }
    out
}

fn is_marker(chars: &[Char], at: usize, marker: &str) -> bool {
    let mut index = at;
    for wanted in marker.chars() {
        match chars.get(index) {
            Some(ch) if ch.c == wanted && !ch.literal => index += 1,
            _ => return false,
        }
    }
    true
}

/// For each index up to `len`, the first index at or after it where `hit` holds (`len` when
/// none), so that every search here is linear in the text, whatever it holds.
fn next_where(len: usize, hit: impl Fn(usize) -> bool) -> Vec<usize> {
    let mut next = vec![len; len + 1];
    for index in (0..len).rev() {
        next[index] = if hit(index) { index } else { next[index + 1] };
    }
    next
}

/// Removes backtick pairs (triple first, with a code block's language line), marking what
/// they enclose literal.
fn code_spans(chars: Vec<Char>) -> Vec<Char> {
    let mut chars = chars;
    for fence in ["```", "`"] {
        let width = fence.chars().count();
        let next_fence = next_where(chars.len(), |at| is_marker(&chars, at, fence));
        let mut out = Vec::with_capacity(chars.len());
        let mut index = 0;
        while let Some(&ch) = chars.get(index) {
            let close = is_marker(&chars, index, fence)
                .then(|| next_fence.get(index + width).copied())
                .flatten()
                .filter(|&end| end < chars.len());
            match close {
                Some(end) => {
                    let mut inner = chars.get(index + width..end).unwrap_or_default();
                    if width == 3 {
                        inner = skip_language_line(inner);
                    }
                    out.extend(literal_run(inner));
                    index = end + width;
                }
                None => {
                    out.push(ch);
                    index += 1;
                }
            }
        }
        chars = out;
    }
    chars
}

/// "```json\n…" starts with a language name: one word, then a line break.
fn skip_language_line(inner: &[Char]) -> &[Char] {
    let Some(newline) = inner.iter().position(|ch| ch.c == '\n') else {
        return inner;
    };
    let word = inner.get(..newline).unwrap_or_default();
    let is_language = word
        .iter()
        .all(|ch| ch.c.is_ascii_alphanumeric() || matches!(ch.c, '+' | '-' | '#'));
    if is_language {
        inner.get(newline + 1..).unwrap_or_default()
    } else {
        inner
    }
}

/// Where links end, found once per text.
struct LinkEnds {
    /// The next unescaped `]`.
    bracket: Vec<usize>,
    /// The next unescaped `)` or blank.
    paren: Vec<usize>,
    /// The next `>` or blank.
    angle: Vec<usize>,
}

/// `[text](url)` → url, `<https://…>` → url, and any `http(s)://…` run marked literal.
fn links(chars: Vec<Char>) -> Vec<Char> {
    let len = chars.len();
    let ends = LinkEnds {
        bracket: next_where(len, |at| is_marker(&chars, at, "]")),
        paren: next_where(len, |at| {
            is_marker(&chars, at, ")") || chars.get(at).is_some_and(|ch| ch.c.is_whitespace())
        }),
        angle: next_where(len, |at| {
            chars
                .get(at)
                .is_some_and(|ch| ch.c == '>' || ch.c.is_whitespace())
        }),
    };
    let mut out = Vec::with_capacity(len);
    let mut index = 0;
    while let Some(&ch) = chars.get(index) {
        if let Some((url, next)) = markdown_link(&chars, index, &ends) {
            out.extend(url);
            index = next;
        } else if let Some((url, next)) = angle_link(&chars, index, &ends) {
            out.extend(url);
            index = next;
        } else if starts_url(&chars, index) {
            let run = bare_url_len(chars.get(index..).unwrap_or_default());
            out.extend(literal_run(
                chars.get(index..index + run).unwrap_or_default(),
            ));
            index += run;
        } else {
            out.push(ch);
            index += 1;
        }
    }
    out
}

/// How far a bare URL runs: to a blank or a character URLs cannot hold (`|` closes a
/// spoiler around it), less any `*`, `_` or `~` that close formatting around it.
fn bare_url_len(chars: &[Char]) -> usize {
    let run = chars
        .iter()
        .position(|ch| ch.c.is_whitespace() || matches!(ch.c, '|' | '<' | '>' | '`' | '"'))
        .unwrap_or(chars.len());
    let formatting = chars
        .get(..run)
        .unwrap_or_default()
        .iter()
        .rev()
        .take_while(|ch| matches!(ch.c, '*' | '_' | '~'))
        .count();
    run - formatting
}

fn starts_url(chars: &[Char], at: usize) -> bool {
    ["https://", "http://"].iter().any(|scheme| {
        scheme
            .chars()
            .enumerate()
            .all(|(offset, c)| chars.get(at + offset).is_some_and(|ch| ch.c == c))
    })
}

fn literal_run(chars: &[Char]) -> Vec<Char> {
    chars
        .iter()
        .map(|ch| Char {
            c: ch.c,
            literal: true,
        })
        .collect()
}

fn markdown_link(chars: &[Char], at: usize, ends: &LinkEnds) -> Option<(Vec<Char>, usize)> {
    if !is_marker(chars, at, "[") {
        return None;
    }
    let close_text = *ends.bracket.get(at + 1)?;
    if !is_marker(chars, close_text + 1, "(") {
        return None;
    }
    let url_start = close_text + 2;
    let url_end = *ends.paren.get(url_start)?;
    if !is_marker(chars, url_end, ")") || !starts_url(chars, url_start) {
        return None;
    }
    Some((literal_run(chars.get(url_start..url_end)?), url_end + 1))
}

fn angle_link(chars: &[Char], at: usize, ends: &LinkEnds) -> Option<(Vec<Char>, usize)> {
    if !is_marker(chars, at, "<") || !starts_url(chars, at + 1) {
        return None;
    }
    let end = *ends.angle.get(at + 1)?;
    let closed = chars.get(end).is_some_and(|ch| ch.c == '>');
    closed.then(|| Some((literal_run(chars.get(at + 1..end)?), end + 1)))?
}

/// Removes `marker` where it opens (before non-blank text) and later closes (after non-blank
/// text); an unmatched marker stays.
fn remove_pairs(chars: Vec<Char>, marker: &str) -> Vec<Char> {
    let width = marker.chars().count();
    // Discord shows `|| hidden ||` as a spoiler too; other markers need text against them.
    let blank = |at: Option<&Char>| {
        at.is_none_or(|ch| (ch.c.is_whitespace() && marker != "||") || ch.c == '\n')
    };
    let mut candidates = Vec::new();
    let mut index = 0;
    while index < chars.len() {
        if is_marker(&chars, index, marker) {
            candidates.push(index);
            index += width;
        } else {
            index += 1;
        }
    }
    let mut remove = vec![false; chars.len()];
    let mut open: Option<usize> = None;
    for at in candidates {
        let can_open = !blank(chars.get(at + width));
        let can_close = at > 0 && !blank(chars.get(at - 1));
        match open {
            Some(start) if can_close && at > start + width => {
                for flag in remove.iter_mut().skip(start).take(width) {
                    *flag = true;
                }
                for flag in remove.iter_mut().skip(at).take(width) {
                    *flag = true;
                }
                open = None;
            }
            _ if can_open => open = Some(at),
            _ => {}
        }
    }
    chars
        .into_iter()
        .zip(remove)
        .filter_map(|(ch, removed)| (!removed).then_some(ch))
        .collect()
}

/// Why a `multipart/form-data` body has no `payload_json` to read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MultipartError {
    #[error("the content type is not multipart/form-data")]
    NotMultipart,
    #[error("the multipart content type has no valid boundary")]
    NoBoundary,
    #[error("the multipart body has no part delimited by its boundary")]
    NoParts,
    #[error("a multipart part has no blank line after its headers")]
    MalformedPart,
    #[error("the multipart body has no payload_json part")]
    NoPayloadJson,
}

/// The boundary of a `multipart/form-data` content type (RFC 2046: 1 to 70 characters,
/// quoted or not).
pub fn multipart_boundary(content_type: &str) -> Result<String, MultipartError> {
    let (media_type, params) = content_type.split_once(';').unwrap_or((content_type, ""));
    if !media_type
        .trim()
        .eq_ignore_ascii_case("multipart/form-data")
    {
        return Err(MultipartError::NotMultipart);
    }
    parameters(params)
        .into_iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("boundary"))
        .map(|(_, value)| value)
        .filter(|value| (1..=70).contains(&value.len()))
        .ok_or(MultipartError::NoBoundary)
}

/// The content of the `payload_json` part of a Discord `multipart/form-data` body. Other parts
/// (`files[0]`, attachments) are skipped unread; CRLF and bare LF line ends are both accepted.
pub fn payload_json<'a>(content_type: &str, body: &'a [u8]) -> Result<&'a [u8], MultipartError> {
    let boundary = multipart_boundary(content_type)?;
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let mut at = next_delimiter(body, 0, delimiter).ok_or(MultipartError::NoParts)?;
    loop {
        let after = at + delimiter.len();
        let rest = body.get(after..).unwrap_or_default();
        if rest.starts_with(b"--") {
            return Err(MultipartError::NoPayloadJson);
        }
        let Some(part_start) = line_end(body, after) else {
            return Err(MultipartError::NoPayloadJson);
        };
        let Some(next) = next_delimiter(body, part_start, delimiter) else {
            return Err(MultipartError::NoPayloadJson);
        };
        let part = trim_line_break(body.get(part_start..next).unwrap_or_default());
        let (headers, content) = split_part(part).ok_or(MultipartError::MalformedPart)?;
        if part_name(headers).as_deref() == Some("payload_json") {
            return Ok(content);
        }
        at = next;
    }
}

/// Where the next delimiter starts at or after `from`: at the very start of the body or just
/// after a line feed, and followed by `--`, blanks or a line end (not a longer boundary).
fn next_delimiter(body: &[u8], from: usize, delimiter: &[u8]) -> Option<usize> {
    let mut search = from;
    while search < body.len() {
        let found = search + find(body.get(search..)?, delimiter)?;
        let at_line_start = found == 0 || body.get(found - 1) == Some(&b'\n');
        let follows = body.get(found + delimiter.len());
        let ends_well = matches!(follows, None | Some(b'-' | b'\r' | b'\n' | b' ' | b'\t'));
        if at_line_start && ends_well {
            return Some(found);
        }
        search = found + 1;
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// The index after the line end that closes a delimiter line (transport padding allowed).
fn line_end(body: &[u8], from: usize) -> Option<usize> {
    let newline = from + body.get(from..)?.iter().position(|&b| b == b'\n')?;
    let padding = body.get(from..newline)?;
    padding
        .iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\r'))
        .then_some(newline + 1)
}

/// A part without the line break that belongs to the next delimiter.
fn trim_line_break(part: &[u8]) -> &[u8] {
    let part = part.strip_suffix(b"\n").unwrap_or(part);
    part.strip_suffix(b"\r").unwrap_or(part)
}

/// Headers and content, split at the first blank line.
fn split_part(part: &[u8]) -> Option<(&[u8], &[u8])> {
    for (blank, width) in [(&b"\r\n"[..], 2), (&b"\n"[..], 1)] {
        if part.starts_with(blank) {
            return Some((&[], &part[width..]));
        }
    }
    let crlf = find(part, b"\r\n\r\n").map(|at| (at, 4));
    let lf = find(part, b"\n\n").map(|at| (at, 2));
    let (at, width) = match (crlf, lf) {
        (Some(a), Some(b)) => {
            if a.0 <= b.0 {
                a
            } else {
                b
            }
        }
        (a, b) => a.or(b)?,
    };
    Some((part.get(..at)?, part.get(at + width..)?))
}

/// The `name` of a part's `Content-Disposition: form-data; name="…"`.
fn part_name(headers: &[u8]) -> Option<String> {
    let headers = String::from_utf8_lossy(headers);
    headers.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if !name.trim().eq_ignore_ascii_case("content-disposition") {
            return None;
        }
        let (_, params) = value.split_once(';')?;
        parameters(params)
            .into_iter()
            .find(|(key, _)| key.eq_ignore_ascii_case("name"))
            .map(|(_, value)| value)
    })
}

/// `a=b; c="d;e"` → `[(a, b), (c, d;e)]`, quoted values unescaped.
fn parameters(text: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace() || *c == ';').is_some() {}
        let mut name = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && *c != ';') {
            name.push(c);
        }
        if chars.peek().is_none() && name.trim().is_empty() {
            return params;
        }
        let mut value = String::new();
        if chars.next_if_eq(&'=').is_some() {
            while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
            if chars.next_if_eq(&'"').is_some() {
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => value.extend(chars.next()),
                        _ => value.push(c),
                    }
                }
                while chars.next_if(|c| *c != ';').is_some() {}
            } else {
                while let Some(c) = chars.next_if(|c| *c != ';') {
                    value.push(c);
                }
                value = value.trim_end().to_owned();
            }
        }
        params.push((name.trim().to_owned(), value));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::sources::refract::message::tests::{order, seed_order, SEED_MESSAGE};
    use crate::sources::refract::message::{OrderStatus, StatusOrigin};

    fn discord(body: Value) -> Result<RefractMessage, ParseError> {
        match body {
            Value::Object(object) => {
                assert!(is_discord_body(&object));
                parse_discord(&object)
            }
            other => panic!("not an object: {other}"),
        }
    }

    /// The seed message as a Refract embed: fields, spoilers, code and a blank image field.
    fn seed_embed() -> Value {
        json!({
            "username": "Refract",
            "avatar_url": "https://cdn.example/refract.png",
            "embeds": [{
                "title": "Successful Checkout | Best Buy US",
                "color": 5_763_719,
                "author": { "name": "Refract" },
                "fields": [
                    { "name": "Product", "value": "**STARLINK - Mini Kit AC Dual Band Wi-Fi System - White**", "inline": false },
                    { "name": "Price", "value": "`$299.99`", "inline": true },
                    { "name": "Profile", "value": "||Lennar #8-$48-@07||", "inline": true },
                    { "name": "Proxy Details", "value": "||Wealth Resi | http://resi-edge-pool.wealthproxies.com:5959/||" },
                    { "name": "Share Link", "value": "Click Here" },
                    { "name": "Order Number", "value": "||#BBY01-807102506907||" },
                    { "name": "Email", "value": "||woozy_byes28@icloud.com||" },
                    { "name": "Image", "value": "\u{200b}" }
                ],
                "footer": { "text": "Refract v3.1.4 | Best Buy" }
            }]
        })
    }

    #[test]
    fn the_discord_embed_form_of_the_seed_gives_the_same_order() {
        assert_eq!(order(discord(seed_embed())), seed_order());
    }

    #[test]
    fn the_description_and_content_forms_give_the_same_order() {
        let description = "**Product**\nSTARLINK - Mini Kit AC Dual Band Wi-Fi System - White\n\
            **Price**\n$299.99\n**Profile**\n||Lennar #8-$48-@07||\n**Proxy Details**\n\
            Wealth Resi | http://resi-edge-pool.wealthproxies.com:5959/\n**Share Link**\n\
            Click Here\n**Order Number**\n`#BBY01-807102506907`\n**Email**\n\
            woozy_byes28@icloud.com\n**Image**\n";
        let in_description = json!({ "embeds": [{
            "title": "Successful Checkout | Best Buy US",
            "description": description,
        }]});
        assert_eq!(order(discord(in_description)), seed_order());
        let in_content = json!({ "content": SEED_MESSAGE, "username": "Refract" });
        assert_eq!(order(discord(in_content)), seed_order());
        let inline = json!({ "embeds": [{
            "author": { "name": "Successful Checkout | Best Buy US" },
            "description": "**Product:** STARLINK - Mini Kit AC Dual Band Wi-Fi System - White\n\
                **Price:** $299.99\n**Profile:** Lennar #8-$48-@07\n\
                **Proxy Details:** Wealth Resi | http://resi-edge-pool.wealthproxies.com:5959/\n\
                **Share Link:** Click Here\n**Order Number:** #BBY01-807102506907\n\
                **Email:** woozy_byes28@icloud.com",
        }]});
        assert_eq!(order(discord(inline)), seed_order());
    }

    #[test]
    fn a_code_block_or_spoiler_spanning_lines_is_unformatted_whole() {
        let body = json!({
            "content": "```\nSuccessful Checkout | Target\nOrder Number\n#T-1\n```\n||Email\nhidden@x.test||",
        });
        let parsed = order(discord(body));
        assert_eq!(parsed.order_number, "T-1");
        assert_eq!(parsed.store.as_deref(), Some("Target"));
        assert_eq!(parsed.email.as_deref(), Some("hidden@x.test"));
        assert_eq!(parsed.extra, vec![]);
    }

    #[test]
    fn fields_come_before_the_description_which_comes_before_content() {
        let body = json!({
            "content": "Order Number\nC-3\nSize\n10\nMode\nFast",
            "embeds": [{
                "title": "Successful Checkout | Nike US",
                "description": "Order Number\nD-2\nSize\n9.5",
                "fields": [{ "name": "Order Number", "value": "F-1" }],
            }],
        });
        let parsed = order(discord(body));
        assert_eq!(parsed.order_number, "F-1");
        assert_eq!(parsed.size.as_deref(), Some("9.5"));
        assert_eq!(parsed.mode.as_deref(), Some("Fast"));
        assert_eq!(
            parsed.extra,
            vec![
                ("Order Number".to_owned(), "D-2".to_owned()),
                ("Order Number".to_owned(), "C-3".to_owned()),
                ("Size".to_owned(), "10".to_owned()),
            ]
        );
    }

    #[test]
    fn the_outcome_and_store_come_from_the_title_or_the_author() {
        let declined = json!({ "embeds": [{
            "author": { "name": "Checkout Declined | Best Buy US" },
            "fields": [{ "name": "Order Number", "value": "1" }],
        }]});
        let parsed = order(discord(declined));
        assert_eq!(parsed.status, OrderStatus::Declined);
        assert_eq!(parsed.status_origin, StatusOrigin::Title);
        assert_eq!(parsed.store.as_deref(), Some("Best Buy US"));

        let store_as_author = json!({ "embeds": [{
            "title": "Checkout Failed",
            "author": { "name": "Walmart" },
            "fields": [{ "name": "Order Number", "value": "2" }],
        }]});
        let parsed = order(discord(store_as_author));
        assert_eq!(parsed.status, OrderStatus::Failed);
        assert_eq!(parsed.store.as_deref(), Some("Walmart"));

        let bot_as_author = json!({ "embeds": [{
            "title": "Successful Checkout",
            "author": { "name": "Refract AIO" },
            "fields": [{ "name": "Order Number", "value": "3" }],
        }]});
        assert_eq!(order(discord(bot_as_author)).store, None);
    }

    #[test]
    fn a_cyber_style_embed_with_the_product_as_description_is_read() {
        let body = json!({
            "username": "CyberAIO",
            "embeds": [{
                "title": "Successfully checked out!",
                "description": "Tupac Hologram Tee",
                "fields": [
                    { "name": "Store", "value": "Supreme EU", "inline": true },
                    { "name": "size", "value": "XLarge", "inline": true },
                    { "name": "Profile", "value": "||test||", "inline": true },
                    { "name": "Order", "value": "||4567891||", "inline": true },
                    { "name": "Proxy List", "value": "||test||", "inline": true },
                    { "name": "Mode", "value": "Safe", "inline": true },
                    { "name": "3D Secure", "value": "Enabled", "inline": true },
                ],
                "footer": { "text": "CyberAIO•27/02/2020 16:03:37.984" },
            }],
        });
        let parsed = order(discord(body));
        assert_eq!(parsed.order_number, "4567891");
        assert_eq!(parsed.status, OrderStatus::Verified);
        assert_eq!(parsed.store.as_deref(), Some("Supreme EU"));
        assert_eq!(parsed.product.as_deref(), Some("Tupac Hologram Tee"));
        assert_eq!(parsed.size.as_deref(), Some("XLarge"));
        assert_eq!(parsed.profile.as_deref(), Some("test"));
        assert_eq!(parsed.proxy.as_deref(), Some("test"));
        assert_eq!(parsed.mode.as_deref(), Some("Safe"));
        assert_eq!(
            parsed.extra,
            vec![("3D Secure".to_owned(), "Enabled".to_owned())]
        );
    }

    #[test]
    fn discord_test_notifications_are_recognized() {
        for body in [
            json!({ "content": "Test Notification" }),
            json!({ "embeds": [{ "title": "Test Notification", "description": "Your webhook works!" }] }),
            json!({ "embeds": [{ "author": { "name": "Refract | Test Webhook" } }] }),
            json!({ "username": "ParagonAIO", "embeds": [{ "author": { "name": "Test Webhook" } }] }),
        ] {
            assert!(
                matches!(
                    discord(body.clone()),
                    Ok(RefractMessage::TestNotification { .. })
                ),
                "{body}"
            );
        }
    }

    #[test]
    fn an_embed_image_and_timestamp_fill_in_when_no_label_does() {
        let body = json!({ "embeds": [{
            "title": "Successful Checkout | Target",
            "fields": [{ "name": "Order Number", "value": "9" }],
            "thumbnail": { "url": "https://target.scene7.com/thumb.jpg" },
            "timestamp": "2025-01-31T12:00:00.000Z",
        }]});
        let parsed = order(discord(body));
        assert_eq!(
            parsed.image_url.as_deref(),
            Some("https://target.scene7.com/thumb.jpg")
        );
        assert_eq!(
            parsed.checkout_time.as_deref(),
            Some("2025-01-31T12:00:00.000Z")
        );
        let labelled = json!({ "embeds": [{
            "fields": [
                { "name": "Order Number", "value": "9" },
                { "name": "Image", "value": "[Image](https://a.example/i.png)" },
            ],
            "image": { "url": "https://b.example/i.png" },
        }]});
        assert_eq!(
            order(discord(labelled)).image_url.as_deref(),
            Some("https://a.example/i.png")
        );
    }

    #[test]
    fn only_embeds_or_pure_execute_webhook_keys_make_a_discord_body() {
        let flat = json!({ "content": "x", "order_number": "1" });
        assert!(!is_discord_body(flat.as_object().expect("object")));
        let empty_embeds = json!({ "embeds": [] });
        assert!(is_discord_body(empty_embeds.as_object().expect("object")));
    }

    #[test]
    fn markdown_is_stripped_and_text_is_kept() {
        let cases = [
            ("||woozy_byes28@icloud.com||", "woozy_byes28@icloud.com"),
            ("|| hidden ||", " hidden "),
            ("**bold**", "bold"),
            ("*italic*", "italic"),
            ("***both***", "both"),
            ("__underline__", "underline"),
            ("~~gone~~", "gone"),
            ("`#BBY01-807102506907`", "#BBY01-807102506907"),
            ("```\nBBY01\n```", "BBY01\n"),
            ("**https://x.test/a**", "https://x.test/a"),
            ("```json\n{\"a\":1}\n```", "{\"a\":1}\n"),
            ("`**kept**`", "**kept**"),
            (
                "[Click Here](https://bestbuy.com/share?id=1_2)",
                "https://bestbuy.com/share?id=1_2",
            ),
            ("<https://x.test/a__b__c>", "https://x.test/a__b__c"),
            ("see https://x.test/a__b__c", "see https://x.test/a__b__c"),
            ("[not a link](javascript:x)", "[not a link](javascript:x)"),
            ("\\*not italic\\*", "*not italic*"),
            ("# Successful Checkout", "Successful Checkout"),
            ("-# small print", "small print"),
            ("> quoted", "quoted"),
            ("woozy_byes28@icloud.com", "woozy_byes28@icloud.com"),
            ("Lennar #8-$48-@07", "Lennar #8-$48-@07"),
            (
                "Wealth Resi | http://resi.example:5959/",
                "Wealth Resi | http://resi.example:5959/",
            ),
            ("5 * 3 * 2", "5 * 3 * 2"),
            ("a || b", "a || b"),
            ("**unclosed", "**unclosed"),
            ("****", "****"),
            ("__init__.py", "init.py"),
        ];
        for (raw, expected) in cases {
            assert_eq!(strip_markdown(raw), expected, "{raw}");
        }
    }

    const ATTACHMENT: &[u8] = b"\x89PNG\r\n\x1a\n\x00\x00--notquite\r\n\xff\xfe";

    fn multipart(boundary: &str, parts: &[(&str, &[u8])], newline: &str) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(b"preamble, ignored");
        body.extend_from_slice(newline.as_bytes());
        for (headers, content) in parts {
            body.extend_from_slice(format!("--{boundary}{newline}").as_bytes());
            for header in headers.split('\n') {
                body.extend_from_slice(format!("{header}{newline}").as_bytes());
            }
            body.extend_from_slice(newline.as_bytes());
            body.extend_from_slice(content);
            body.extend_from_slice(newline.as_bytes());
        }
        body.extend_from_slice(format!("--{boundary}--{newline}").as_bytes());
        body
    }

    #[test]
    fn payload_json_is_found_among_attachments() {
        let json = br#"{"content":"Order Number\n#1"}"#;
        let parts: [(&str, &[u8]); 3] = [
            (
                "Content-Disposition: form-data; name=\"files[0]\"; filename=\"shot.png\"\nContent-Type: image/png",
                ATTACHMENT,
            ),
            (
                "content-disposition: form-data; filename=\"payload_json\"; name=\"payload_json\"\nContent-Type: application/json",
                json,
            ),
            ("Content-Disposition: form-data; name=\"files[1]\"", b"more"),
        ];
        for newline in ["\r\n", "\n"] {
            let body = multipart("----WebKitFormBoundary7MA4YWxkTrZu0gW", &parts, newline);
            let content_type =
                "multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW";
            assert_eq!(
                payload_json(content_type, &body),
                Ok(&json[..]),
                "{newline:?}"
            );
        }
        let quoted = multipart("a b;c", &parts, "\r\n");
        assert_eq!(
            payload_json(
                "Multipart/Form-Data; charset=utf-8; Boundary=\"a b;c\"",
                &quoted
            ),
            Ok(&json[..])
        );
    }

    #[test]
    fn multipart_without_payload_json_or_boundary_says_why() {
        let parts: [(&str, &[u8]); 1] = [(
            "Content-Disposition: form-data; name=\"files[0]\"",
            ATTACHMENT,
        )];
        let body = multipart("xyz", &parts, "\r\n");
        assert_eq!(
            payload_json("multipart/form-data; boundary=xyz", &body),
            Err(MultipartError::NoPayloadJson)
        );
        assert_eq!(
            payload_json("multipart/form-data", &body),
            Err(MultipartError::NoBoundary)
        );
        assert_eq!(
            payload_json("multipart/form-data; boundary=\"\"", &body),
            Err(MultipartError::NoBoundary)
        );
        assert_eq!(
            payload_json("application/json", &body),
            Err(MultipartError::NotMultipart)
        );
        assert_eq!(
            payload_json("multipart/form-data; boundary=other", &body),
            Err(MultipartError::NoParts)
        );
        let unterminated =
            b"--xyz\r\nContent-Disposition: form-data; name=\"payload_json\"\r\n\r\n{}";
        assert_eq!(
            payload_json("multipart/form-data; boundary=xyz", unterminated),
            Err(MultipartError::NoPayloadJson)
        );
        let headless = b"--xyz\r\nContent-Disposition: form-data; name=\"payload_json\"\r\n--xyz--";
        assert_eq!(
            payload_json("multipart/form-data; boundary=xyz", headless),
            Err(MultipartError::MalformedPart)
        );
    }
}
