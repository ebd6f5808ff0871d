//! Any admin list as CSV or JSON Lines, streamed: rows are read a page at a time through the
//! list's own cursor and written as each page arrives, so an export of any size holds one page
//! in memory.

use std::future::Future;
use std::pin::Pin;

use axum::body::Body;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::journal::JournalError;

/// How a list is answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ListFormat {
    /// One page as `{"items": [...], "next_cursor": ...}`.
    #[default]
    Json,
    /// Every matching row, streamed as CSV with a header line.
    Csv,
    /// Every matching row, streamed as JSON Lines.
    Jsonl,
}

/// One page of rows and the cursor of the next, if any.
pub type Page = (Vec<Map<String, Value>>, Option<String>);

/// Reads the page at a cursor (`None`: the first page).
pub type PageFuture = Pin<Box<dyn Future<Output = Result<Page, JournalError>> + Send>>;

/// Rows read per page while exporting.
pub const EXPORT_PAGE: u32 = 1000;

/// Streams every page `fetch` returns, following cursors to the end, as `format`.
/// `columns` is the CSV header (and the order of values in each line).
pub fn stream(
    format: ListFormat,
    name: &str,
    columns: Vec<String>,
    fetch: impl Fn(Option<String>) -> PageFuture + Send + Sync + 'static,
) -> Response {
    struct State<F> {
        fetch: F,
        cursor: Option<String>,
        started: bool,
        done: bool,
    }
    let state = State {
        fetch,
        cursor: None,
        started: false,
        done: false,
    };
    let header_line =
        (format == ListFormat::Csv).then(|| csv_line(columns.iter().map(String::as_str)));
    let chunks = futures_util::stream::unfold(state, move |mut state| {
        let columns = columns.clone();
        let header_line = header_line.clone();
        async move {
            if state.done {
                return None;
            }
            let mut chunk = Vec::new();
            if !state.started {
                state.started = true;
                if let Some(line) = header_line {
                    chunk.extend_from_slice(&line);
                }
            }
            match (state.fetch)(state.cursor.take()).await {
                Ok((rows, next)) => {
                    for row in &rows {
                        write_row(format, &columns, row, &mut chunk);
                    }
                    state.done = next.is_none();
                    state.cursor = next;
                    Some((Ok::<_, JournalError>(Bytes::from(chunk)), state))
                }
                Err(error) => {
                    // The status line is gone: all the client can learn is a cut stream.
                    tracing::error!(%error, "export stopped: the journal failed mid-stream");
                    state.done = true;
                    Some((Err(error), state))
                }
            }
        }
    });
    let (content_type, extension) = match format {
        ListFormat::Csv => ("text/csv; charset=utf-8", "csv"),
        _ => ("application/jsonl", "jsonl"),
    };
    let mut response = Body::from_stream(chunks).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(value) =
        HeaderValue::from_str(&format!("attachment; filename=\"{name}.{extension}\""))
    {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

fn write_row(format: ListFormat, columns: &[String], row: &Map<String, Value>, out: &mut Vec<u8>) {
    match format {
        ListFormat::Csv => {
            let cells: Vec<String> = columns
                .iter()
                .map(|column| csv_cell(row.get(column)))
                .collect();
            out.extend_from_slice(&csv_line(cells.iter().map(String::as_str)));
        }
        _ => {
            if serde_json::to_writer(&mut *out, row).is_ok() {
                out.push(b'\n');
            }
        }
    }
}

/// A value as CSV text: strings as they are, null as empty, anything else as JSON.
fn csv_cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    }
}

/// One CSV record with its line end, quoted by the `csv` crate's rules.
fn csv_line<'a>(cells: impl Iterator<Item = &'a str>) -> Vec<u8> {
    let mut writer = csv::WriterBuilder::new().from_writer(Vec::new());
    let _ = writer.write_record(cells);
    writer.into_inner().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_quoting_and_renders_values() {
        let line = csv_line(["a", "b,c", "say \"hi\"", "x\ny"].into_iter());
        assert_eq!(
            String::from_utf8(line).expect("utf8"),
            "a,\"b,c\",\"say \"\"hi\"\"\",\"x\ny\"\n"
        );
        assert_eq!(csv_cell(None), "");
        assert_eq!(csv_cell(Some(&Value::from(3))), "3");
        assert_eq!(csv_cell(Some(&serde_json::json!({"k": 1}))), "{\"k\":1}");
    }
}
