//! `wharf tail`: follows a server's `/api/stream` and prints each delivery step and ledger
//! change as it happens, one line each. It reconnects by itself and resumes after the last
//! event it printed (`Last-Event-ID`), so a restart of the server loses nothing on screen.
#![allow(clippy::print_stdout)]

use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

/// `wharf tail [--url URL] [--source NAME] [--kind KIND] [--since SEQ] [--json]`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// The server to follow.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The admin token (sent as a bearer token).
    #[arg(long, env = "WHARF_ADMIN_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Only these sources (comma-separated).
    #[arg(long)]
    pub source: Option<String>,
    /// Only these kinds: `delivery`, `ledger`, or precise ones like `delivery.dead`.
    #[arg(long)]
    pub kind: Option<String>,
    /// Start after this sequence number instead of now.
    #[arg(long)]
    pub since: Option<u64>,
    /// Print each change as its JSON line instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// One Server-Sent Event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// Splits a byte stream into Server-Sent Events (the `text/event-stream` format: `field:
/// value` lines, a blank line ends an event, `:` lines are comments).
#[derive(Debug, Default)]
pub struct SseParser {
    buffer: Vec<u8>,
    current: SseEvent,
    has_data: bool,
}

impl SseParser {
    /// Feeds bytes as they arrive; returns the events they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.iter().position(|&byte| byte == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if self.has_data || self.current.event.is_some() {
                    events.push(std::mem::take(&mut self.current));
                }
                self.has_data = false;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => self.current.id = Some(value.to_owned()),
                "event" => self.current.event = Some(value.to_owned()),
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        events
    }
}

/// Follows the stream until interrupted.
pub async fn run(args: TailArgs) -> anyhow::Result<()> {
    let token = SecretString::from(args.token.clone());
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .context("cannot build the HTTP client")?;
    let mut last_id = args.since.map(|seq| seq.to_string());
    loop {
        match follow(&client, &args, &token, &mut last_id).await {
            Ok(()) => eprintln!("stream ended; reconnecting"),
            Err(error) if is_refused(&error) => return Err(error),
            Err(error) => eprintln!("stream interrupted ({error:#}); reconnecting"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Errors a reconnect cannot fix (a wrong token, a bad filter).
fn is_refused(error: &anyhow::Error) -> bool {
    error.downcast_ref::<Refused>().is_some()
}

#[derive(Debug, thiserror::Error)]
#[error("the server refused the stream: {0}")]
struct Refused(String);

async fn follow(
    client: &reqwest::Client,
    args: &TailArgs,
    token: &SecretString,
    last_id: &mut Option<String>,
) -> anyhow::Result<()> {
    let mut query: Vec<(&str, String)> = Vec::new();
    if let Some(source) = &args.source {
        query.push(("source", source.clone()));
    }
    if let Some(kind) = &args.kind {
        query.push(("kind", kind.clone()));
    }
    let mut request = client
        .get(format!("{}/api/stream", args.url.trim_end_matches('/')))
        .bearer_auth(token.expose_secret())
        .query(&query);
    if let Some(id) = last_id.as_deref() {
        request = request.header("last-event-id", id);
    }
    let mut response = request.send().await.context("cannot reach the server")?;
    let status = response.status();
    if status.is_client_error() {
        let body = response.text().await.unwrap_or_default();
        return Err(Refused(format!("{status}: {body}")).into());
    }
    anyhow::ensure!(status.is_success(), "the server answered {status}");
    let mut parser = SseParser::default();
    while let Some(chunk) = response.chunk().await.context("reading the stream")? {
        for event in parser.push(&chunk) {
            if let Some(id) = &event.id {
                *last_id = Some(id.clone());
            }
            println!("{}", render(&event, args.json));
        }
    }
    Ok(())
}

/// One line for an event: the change's JSON, or `SEQ TIME KIND SOURCE …` for people.
pub fn render(event: &SseEvent, json: bool) -> String {
    if json {
        return event.data.clone();
    }
    let kind = event.event.as_deref().unwrap_or("message");
    let change: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
    let text = |field: &str| change.get(field).and_then(Value::as_str).unwrap_or("");
    match kind {
        "lagged" | "truncated" => format!("-- {kind}: {}", event.data),
        _ if kind.starts_with("ledger.") => format!(
            "{:>8} {} {:<18} {:<12} {} {}",
            event.id.as_deref().unwrap_or(""),
            text("at"),
            kind,
            text("source"),
            text("table"),
            change.get("key").map(Value::to_string).unwrap_or_default(),
        ),
        _ => {
            let data = change.get("data").cloned().unwrap_or(Value::Null);
            let error = data.get("error").and_then(Value::as_str).unwrap_or("");
            format!(
                "{:>8} {} {:<18} {:<12} #{} {} {}",
                event.id.as_deref().unwrap_or(""),
                text("at"),
                kind,
                text("source"),
                change
                    .get("delivery_id")
                    .map(Value::to_string)
                    .unwrap_or_default(),
                text("event_type"),
                error,
            )
            .trim_end()
            .to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_cut_at_blank_lines_across_chunk_boundaries() {
        let mut parser = SseParser::default();
        assert!(parser
            .push(b": keep-alive\n\nid: 7\nevent: delivery.rec")
            .is_empty());
        let events = parser.push(b"eived\ndata: {\"a\":1}\n\nid: 8\ndata: x\ndata: y\r\n\r\n");
        assert_eq!(
            events,
            vec![
                SseEvent {
                    id: Some("7".into()),
                    event: Some("delivery.received".into()),
                    data: "{\"a\":1}".into(),
                },
                SseEvent {
                    id: Some("8".into()),
                    event: None,
                    data: "x\ny".into(),
                },
            ]
        );
    }

    #[test]
    fn a_delivery_step_renders_as_one_line_with_its_error() {
        let event = SseEvent {
            id: Some("12".into()),
            event: Some("delivery.dead".into()),
            data: r#"{"seq":12,"at":"2026-01-01T00:00:00Z","kind":"delivery.dead","source":"cartpanda","delivery_id":3,"event_type":"order.paid","data":{"status":"dead","attempts":5,"error":"boom"}}"#.into(),
        };
        let line = render(&event, false);
        assert!(line.contains("delivery.dead"), "{line}");
        assert!(line.contains("#3 order.paid boom"), "{line}");
    }
}
