//! The ledger tables, generic over their descriptions ([`crate::ledger::Table`]): the list of
//! tables, a table's rows with filters (cursor pages or a streamed export), one row by key.
//! A filter names a described column or it is refused; values are parsed to the column's type
//! and bound by the backend.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{Map, Value};

use super::export::{self, ListFormat, PageFuture, EXPORT_PAGE};
use super::extract::{ApiPath, ApiQuery};
use super::schema::{ErrorBody, LedgerCatalog, LedgerColumn, LedgerPage, LedgerRow, LedgerTable};
use super::{limit_in, unavailable};
use crate::clock::Timestamp;
use crate::http::error::ApiError;
use crate::http::SharedState;
use crate::journal::query::LedgerQuery;
use crate::journal::{JournalError, ReadModel};
use crate::ledger::{Cell, ColumnType, Table};
use crate::sources::catalog::{ledger_catalog, ledger_table};

/// The name of a column type in the API.
pub fn type_name(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Text => "text",
        ColumnType::Integer => "integer",
        ColumnType::Decimal => "decimal",
        ColumnType::Json => "json",
        ColumnType::Timestamp => "timestamp",
        ColumnType::Uuid => "uuid",
    }
}

/// `GET /api/ledger`: every table with its key and columns.
#[utoipa::path(get, path = "/api/ledger", tag = "ledger", security(("bearer" = [])),
    responses((status = 200, body = LedgerCatalog), (status = 401, description = "No valid admin token", body = ErrorBody)))]
pub async fn tables() -> Response {
    let tables = ledger_catalog()
        .iter()
        .map(|table| LedgerTable {
            name: table.name.to_owned(),
            key: table.key.iter().map(|name| (*name).to_owned()).collect(),
            columns: table
                .columns
                .iter()
                .map(|column| LedgerColumn {
                    name: column.name.to_owned(),
                    ty: type_name(column.ty).to_owned(),
                })
                .collect(),
        })
        .collect();
    Json(LedgerCatalog { tables }).into_response()
}

fn table_named(name: &str) -> Result<&'static Table, ApiError> {
    ledger_table(name).ok_or_else(|| ApiError::not_found(format!("no ledger table {name:?}")))
}

/// The documented parameters of a ledger list (column filters come besides them).
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct LedgerListParams {
    /// Text in any text or JSON column, case-insensitive.
    q: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Rows per page (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    format: Option<ListFormat>,
}

/// The parameters every list takes besides column filters.
#[derive(Debug, Default)]
struct ListParams {
    q: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
    format: ListFormat,
    equals: Vec<(&'static str, Cell)>,
}

fn list_params(
    table: &'static Table,
    pairs: Vec<(String, String)>,
) -> Result<ListParams, ApiError> {
    let mut params = ListParams::default();
    for (name, value) in pairs {
        match name.as_str() {
            "q" => params.q = Some(value).filter(|q| !q.is_empty()),
            "cursor" => params.cursor = Some(value),
            "limit" => {
                params.limit = Some(value.parse().map_err(|_| {
                    ApiError::bad_request(
                        "invalid_query",
                        format!("limit={value:?} is not a number"),
                    )
                })?)
            }
            "format" => {
                params.format =
                    serde_json::from_value(Value::String(value.clone())).map_err(|_| {
                        ApiError::bad_request(
                            "invalid_query",
                            format!("format={value:?}: use json, csv or jsonl"),
                        )
                    })?
            }
            column => params.equals.push(column_filter(table, column, &value)?),
        }
    }
    Ok(params)
}

/// `column=value`, with the column taken from the table description (never from the request)
/// and the value parsed to its type.
fn column_filter(
    table: &'static Table,
    name: &str,
    value: &str,
) -> Result<(&'static str, Cell), ApiError> {
    let column = table
        .columns
        .iter()
        .find(|column| column.name == name)
        .ok_or_else(|| {
            ApiError::bad_request(
                "unknown_filter",
                format!(
                    "{name:?} is not a column of {} (see GET /api/ledger)",
                    table.name
                ),
            )
        })?;
    let cell = parse_cell(column.ty, value).map_err(|expected| {
        ApiError::bad_request(
            "invalid_filter",
            format!("{name}={value:?} is not {expected}"),
        )
    })?;
    Ok((column.name, cell))
}

/// A value from a URL as a cell of type `ty`; the error names what was expected.
fn parse_cell(ty: ColumnType, text: &str) -> Result<Cell, &'static str> {
    match ty {
        ColumnType::Text => Ok(Cell::text(text)),
        ColumnType::Integer => text.parse().map(Cell::Integer).map_err(|_| "an integer"),
        ColumnType::Decimal => {
            let digits = text.strip_prefix('-').unwrap_or(text);
            let valid = !digits.is_empty()
                && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
                && digits.matches('.').count() <= 1;
            if valid {
                Ok(Cell::Decimal(text.to_owned()))
            } else {
                Err("a decimal number")
            }
        }
        ColumnType::Json => Err("filterable (a JSON column; use q= to search it)"),
        ColumnType::Timestamp => Timestamp::parse_rfc3339(text)
            .map(Cell::Timestamp)
            .ok_or("an RFC 3339 time"),
        ColumnType::Uuid => text.parse().map(Cell::Uuid).map_err(|_| "a UUID"),
    }
}

/// A cell as a JSON value (see `Cell`'s `Serialize` for the mapping).
pub fn cell_json(cell: &Cell) -> Value {
    serde_json::to_value(cell).unwrap_or(Value::Null)
}

fn row_json(table: &Table, row: &[Cell]) -> Map<String, Value> {
    table
        .columns
        .iter()
        .zip(row)
        .map(|(column, cell)| (column.name.to_owned(), cell_json(cell)))
        .collect()
}

/// The cursor after `row`: its key values, as URL-safe base64 of a JSON array.
fn cursor_after(table: &Table, row: &[Cell]) -> String {
    let key: Vec<Value> = table
        .key
        .iter()
        .filter_map(|name| table.position(name))
        .map(|at| match &row[at] {
            Cell::Json(text) => Value::String(text.clone()),
            cell => cell_json(cell),
        })
        .collect();
    URL_SAFE_NO_PAD.encode(Value::Array(key).to_string())
}

fn parse_cursor(table: &Table, cursor: &str) -> Result<Vec<Cell>, ApiError> {
    let invalid = || {
        ApiError::bad_request(
            "invalid_cursor",
            format!("{cursor:?} is not a cursor of {}", table.name),
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let values: Vec<Value> = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if values.len() != table.key.len() {
        return Err(invalid());
    }
    table
        .key
        .iter()
        .zip(values)
        .map(|(name, value)| {
            let ty = table
                .position(name)
                .map_or(ColumnType::Text, |at| table.columns[at].ty);
            let text = match value {
                Value::String(text) => text,
                Value::Number(number) => number.to_string(),
                _ => return Err(invalid()),
            };
            match ty {
                ColumnType::Json => Ok(Cell::Json(text)),
                ty => parse_cell(ty, &text).map_err(|_| invalid()),
            }
        })
        .collect()
}

/// Reads one page; the next cursor when the page is full.
async fn read_page(
    read: &dyn ReadModel,
    query: LedgerQuery,
) -> Result<(Vec<Map<String, Value>>, Option<String>), JournalError> {
    let table = query.table;
    let limit = query.page_size() as usize;
    let rows = read.ledger_rows(query).await?;
    let next = (rows.len() == limit)
        .then(|| rows.last().map(|row| cursor_after(table, row)))
        .flatten();
    let items = rows.iter().map(|row| row_json(table, row)).collect();
    Ok((items, next))
}

/// `GET /api/ledger/{table}?q=&<column>=<value>&cursor=&limit=&format=`.
#[utoipa::path(get, path = "/api/ledger/{table}", tag = "ledger",
    description = "Rows sorted by the table's key. Any column of the table (see GET /api/ledger) \
                   is a filter: `?status=approved&source=cartpanda`.",
    params(("table" = String, Path, description = "A table named by GET /api/ledger"),
           LedgerListParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page (JSON), or every match streamed (csv, jsonl)",
         content((LedgerPage = "application/json"), (String = "text/csv"),
                 (String = "application/jsonl"))),
        (status = 400, description = "A malformed parameter", body = ErrorBody), (status = 401, description = "No valid admin token", body = ErrorBody), (status = 404, description = "No such thing", body = ErrorBody), (status = 503, description = "Storage unavailable", body = ErrorBody)))]
pub async fn rows(
    State(state): State<SharedState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(pairs): ApiQuery<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let table = table_named(&name)?;
    let params = list_params(table, pairs)?;
    let after = params
        .cursor
        .as_deref()
        .map(|cursor| parse_cursor(table, cursor))
        .transpose()?;
    let query = LedgerQuery {
        table,
        equals: params.equals,
        text: params.q,
        after,
        limit: limit_in(params.limit, 50, 1000)?,
    };
    if params.format != ListFormat::Json {
        return Ok(export_rows(
            state.storage.read.clone(),
            query,
            params.format,
        ));
    }
    let (items, next_cursor) = read_page(state.storage.read.as_ref(), query)
        .await
        .map_err(unavailable)?;
    Ok(Json(LedgerPage { items, next_cursor }).into_response())
}

fn export_rows(read: Arc<dyn ReadModel>, query: LedgerQuery, format: ListFormat) -> Response {
    let table = query.table;
    let columns = table.columns.iter().map(|c| c.name.to_owned()).collect();
    export::stream(format, table.name, columns, move |cursor| -> PageFuture {
        let read = read.clone();
        let mut query = query.clone();
        query.limit = EXPORT_PAGE;
        Box::pin(async move {
            if let Some(cursor) = cursor {
                query.after = parse_cursor(table, &cursor).ok();
            }
            read_page(read.as_ref(), query).await
        })
    })
}

/// `GET /api/ledger/{table}/{key}`: the row whose last key column is `{key}`; the other key
/// columns (`source`, say) may be given as query parameters, and must be when several rows
/// share that last value.
#[utoipa::path(get, path = "/api/ledger/{table}/{key}", tag = "ledger",
    params(("table" = String, Path, description = "A table named by GET /api/ledger"),
           ("key" = String, Path, description = "The value of the table's last key column"),
           ("source" = Option<String>, Query, description = "Other key columns narrow the match")),
    security(("bearer" = [])),
    responses((status = 200, body = LedgerRow), (status = 400, description = "A malformed parameter", body = ErrorBody), (status = 401, description = "No valid admin token", body = ErrorBody), (status = 404, description = "No such thing", body = ErrorBody),
        (status = 409, description = "Several rows match: add the other key columns",
         body = ErrorBody),
        (status = 503, description = "Storage unavailable", body = ErrorBody)))]
pub async fn row(
    State(state): State<SharedState>,
    ApiPath((name, key)): ApiPath<(String, String)>,
    ApiQuery(pairs): ApiQuery<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let table = table_named(&name)?;
    let Some((last, others)) = table.key.split_last() else {
        return Err(ApiError::not_found(format!("{name} has no key")));
    };
    let mut equals = vec![column_filter(table, last, &key)?];
    for (column, value) in pairs {
        if !others.contains(&column.as_str()) {
            return Err(ApiError::bad_request(
                "unknown_filter",
                format!(
                    "{column:?} is not a key column of {name} (its key is {})",
                    table.key.join(", ")
                ),
            ));
        }
        equals.push(column_filter(table, &column, &value)?);
    }
    let query = LedgerQuery {
        table,
        equals,
        text: None,
        after: None,
        limit: 2,
    };
    let rows = state
        .storage
        .read
        .ledger_rows(query)
        .await
        .map_err(unavailable)?;
    match rows.as_slice() {
        [] => Err(ApiError::not_found(format!(
            "no {name} row with {last} = {key:?}"
        ))),
        [row] => Ok(Json(LedgerRow {
            table: name,
            row: row_json(table, row),
        })
        .into_response()),
        _ => Err(ApiError::new(
            StatusCode::CONFLICT,
            "ambiguous_key",
            format!(
                "several {name} rows have {last} = {key:?}: add the other key columns as query \
                 parameters ({})",
                others.join(", ")
            ),
        )),
    }
}
