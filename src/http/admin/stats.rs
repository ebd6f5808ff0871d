//! Statistics: seed 003's monitoring queries and more, over a window: per source received,
//! processed, failed, dead, rejected, the success rate and processing-time percentiles;
//! event types; deliveries per minute; and revenue per day from sales and payments.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::extract::ApiQuery;
use super::schema::{ErrorBody, MinuteStats, Revenue, RevenueDayStats, SourceStats, Stats};
use super::unavailable;
use crate::clock::Timestamp;
use crate::http::error::ApiError;
use crate::http::SharedState;
use crate::journal::query::SourceWindow;
use crate::ledger::{Currency, Money};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// `90s`, `15m`, `1h`, `7d`, or seconds; default one hour, at most a year.
    #[param(pattern = r"^[0-9]{1,8}[smhd]?$")]
    window: Option<String>,
}

/// Longest window: a year.
const MAX_WINDOW_SECONDS: i64 = 366 * 86_400;

/// A window length in seconds, from `30s`, `15m`, `1h`, `7d` or a bare number of seconds.
pub fn window_seconds(text: &str) -> Option<i64> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().last()? {
        (at, 's') => (&text[..at], 1),
        (at, 'm') => (&text[..at], 60),
        (at, 'h') => (&text[..at], 3_600),
        (at, 'd') => (&text[..at], 86_400),
        _ => (text, 1),
    };
    let seconds = digits.parse::<i64>().ok()?.checked_mul(unit)?;
    (1..=MAX_WINDOW_SECONDS)
        .contains(&seconds)
        .then_some(seconds)
}

/// `GET /api/stats?window=1h`.
#[utoipa::path(get, path = "/api/stats", tag = "stats", params(StatsQuery),
    security(("bearer" = [])),
    responses((status = 200, body = Stats), (status = 400, description = "A malformed parameter", body = ErrorBody), (status = 401, description = "No valid admin token", body = ErrorBody), (status = 503, description = "Storage unavailable", body = ErrorBody)))]
pub async fn stats(
    State(state): State<SharedState>,
    ApiQuery(query): ApiQuery<StatsQuery>,
) -> Result<Response, ApiError> {
    let seconds = match query.window.as_deref() {
        None => 3_600,
        Some(text) => window_seconds(text).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_window",
                format!("window={text:?}: use 30s, 15m, 1h, 7d (at most a year)"),
            )
        })?,
    };
    let now = state.clock.now();
    let since = Timestamp(now.micros() - seconds * 1_000_000);
    let read = &state.storage.read;
    let window = read.window_stats(since).await.map_err(unavailable)?;
    let counts = read.status_counts().await.map_err(unavailable)?;
    let backlog = read.backlog(now).await.map_err(unavailable)?;
    let sources = window
        .sources
        .iter()
        .map(|source| source_stats(&state, source, since))
        .collect();
    let per_minute = window
        .per_minute
        .iter()
        .map(|minute| MinuteStats {
            minute: minute.minute.to_rfc3339(),
            source: minute.source.clone(),
            count: minute.count,
        })
        .collect();
    Ok(Json(Stats {
        window_seconds: seconds,
        sources,
        event_types: window.event_types,
        per_minute,
        deliveries: counts,
        backlog,
    })
    .into_response())
}

/// One source's line. `rejected` adds the requests the ingress refused in the window (bad
/// signatures; from the in-memory rejection log) to the deliveries the provider's API
/// disproved. The success rate is over finished deliveries: processed (or ignored) out of
/// processed, ignored, failed, dead and rejected.
fn source_stats(state: &SharedState, source: &SourceWindow, since: Timestamp) -> SourceStats {
    let refused = state.routes.get(&source.source).map_or(0, |route| {
        route
            .rejections
            .recent()
            .iter()
            .filter(|rejection| {
                Timestamp::parse_rfc3339(&rejection.at).is_some_and(|at| at >= since)
            })
            .count() as u64
    });
    let succeeded = source.processed + source.ignored;
    let finished = succeeded + source.failed + source.dead + source.rejected;
    let success_rate = (finished > 0).then(|| succeeded as f64 / finished as f64);
    let ms = |micros: Option<i64>| micros.map(|us| us as f64 / 1000.0);
    SourceStats {
        source: source.source.clone(),
        received: source.received,
        pending: source.pending,
        processed: source.processed,
        ignored: source.ignored,
        failed: source.failed,
        dead: source.dead,
        rejected: source.rejected + refused,
        success_rate,
        p50_ms: ms(source.p50_us),
        p95_ms: ms(source.p95_us),
        p99_ms: ms(source.p99_us),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RevenueQuery {
    /// Days back from today (UTC), default 30.
    #[param(minimum = 1, maximum = 3660)]
    days: Option<u32>,
}

/// `GET /api/stats/revenue?days=30`: money taken per UTC day, source and currency, from
/// approved sales and paid payments (net of refunds), as exact decimal strings.
#[utoipa::path(get, path = "/api/stats/revenue", tag = "stats", params(RevenueQuery),
    security(("bearer" = [])),
    responses((status = 200, body = Revenue), (status = 400, description = "A malformed parameter", body = ErrorBody), (status = 401, description = "No valid admin token", body = ErrorBody), (status = 503, description = "Storage unavailable", body = ErrorBody)))]
pub async fn revenue(
    State(state): State<SharedState>,
    ApiQuery(query): ApiQuery<RevenueQuery>,
) -> Result<Response, ApiError> {
    let days = query.days.unwrap_or(30);
    if !(1..=3660).contains(&days) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("days={days}: from 1 to 3660"),
        ));
    }
    let today = state.clock.now().unix_seconds().div_euclid(86_400) * 86_400;
    let since = Timestamp::from_unix_seconds(today - (i64::from(days) - 1) * 86_400);
    let rows = state
        .storage
        .read
        .revenue(since)
        .await
        .map_err(unavailable)?;
    let days = rows
        .into_iter()
        .map(|row| RevenueDayStats {
            amount: decimal(row.amount_minor, &row.currency),
            day: row.day,
            source: row.source,
            currency: row.currency,
            count: row.count,
        })
        .collect();
    Ok(Json(Revenue { days }).into_response())
}

/// Minor units as a decimal string in the currency's exponent (two places when unknown).
fn decimal(minor_units: i64, currency: &str) -> String {
    match Currency::parse(currency) {
        Ok(currency) => Money {
            minor_units,
            currency,
        }
        .to_decimal_string(),
        Err(_) => format!(
            "{}{}.{:02}",
            if minor_units < 0 { "-" } else { "" },
            minor_units.unsigned_abs() / 100,
            minor_units.unsigned_abs() % 100
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_read_units_and_refuse_nonsense() {
        assert_eq!(window_seconds("90s"), Some(90));
        assert_eq!(window_seconds("15m"), Some(900));
        assert_eq!(window_seconds("1h"), Some(3600));
        assert_eq!(window_seconds("7d"), Some(604_800));
        assert_eq!(window_seconds("120"), Some(120));
        assert_eq!(window_seconds("0h"), None);
        assert_eq!(window_seconds("h"), None);
        assert_eq!(window_seconds("-1h"), None);
        assert_eq!(window_seconds("9999d"), None);
        assert_eq!(window_seconds("1w"), None);
    }

    #[test]
    fn amounts_keep_the_currency_exponent() {
        assert_eq!(decimal(12_345, "USD"), "123.45");
        assert_eq!(decimal(-5, "XXZ"), "-0.05");
    }
}
