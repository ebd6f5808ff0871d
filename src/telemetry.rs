//! Logs to stderr, filtered by `RUST_LOG` (default `info`): readable text, coloured only when
//! stderr is a terminal (and `NO_COLOR` is unset), or one JSON object per line
//! (`--log-format json`, `WHARF_LOG_FORMAT=json`). Stdout is kept for the ready line and command
//! output. [`LogLimiter`] and [`KeyedLogLimiter`] keep a repeated line from flooding the log.

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;

/// Without `RUST_LOG`: `info`, but refinery's line per migration step only when it fails
/// (Wharf logs the migrations applied in one line).
const DEFAULT_FILTER: &str = "info,refinery_core=warn";

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event (the default).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, the event's fields (`message`, …) and
    /// the delivery's span (`span`: `delivery.id`, `source`, …), for log shippers.
    Json,
}

/// Installs the process's subscriber (once; later calls do nothing).
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(colour_wanted()).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

/// Escape codes only for a person at a terminal: a file, a pipe or journald gets plain text.
fn colour_wanted() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Bounds how often one call site logs: the first occurrence is logged, then at most one line
/// per interval, carrying how many were suppressed since the previous line. Lock-free, and a
/// `const fn`, so a call site keeps its own in a `static`:
///
/// ```
/// use wharf::telemetry::LogLimiter;
/// static LIMIT: LogLimiter = LogLimiter::new();
/// if let Some(suppressed) = LIMIT.allow() {
///     tracing::error!(suppressed, "the journal is unavailable");
/// }
/// ```
#[derive(Debug)]
pub struct LogLimiter {
    interval_ms: u64,
    /// Milliseconds since [`epoch`] before which nothing more is logged.
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl LogLimiter {
    /// One line per second.
    pub const fn new() -> Self {
        Self::with_interval(Duration::from_secs(1))
    }

    /// One line per `interval`.
    pub const fn with_interval(interval: Duration) -> Self {
        // `as_millis` is u128; intervals are far below u64::MAX milliseconds.
        Self {
            interval_ms: interval.as_millis() as u64,
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(suppressed)` when this occurrence should be logged, with how many occurrences
    /// were not logged since the last one that was; `None` when it should be dropped.
    pub fn allow(&self) -> Option<u64> {
        let now = epoch().elapsed().as_millis() as u64;
        let next = self.next_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now.saturating_add(self.interval_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

impl Default for LogLimiter {
    fn default() -> Self {
        Self::new()
    }
}

/// A process-wide monotonic origin for [`LogLimiter`].
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// A [`LogLimiter`] per key (a source and a cause, say), for call sites whose repeated line
/// depends on data: each key gets its first line and then one per interval. Keys beyond
/// `max_keys` share one limiter, so a flood of distinct keys cannot grow memory either.
#[derive(Debug)]
pub struct KeyedLogLimiter {
    interval: Duration,
    max_keys: usize,
    limiters: parking_lot::Mutex<HashMap<String, Arc<LogLimiter>>>,
    overflow: LogLimiter,
}

impl KeyedLogLimiter {
    pub fn new(interval: Duration, max_keys: usize) -> Self {
        Self {
            interval,
            max_keys,
            limiters: parking_lot::Mutex::new(HashMap::new()),
            overflow: LogLimiter::with_interval(interval),
        }
    }

    /// Like [`LogLimiter::allow`], counted per `key`.
    pub fn allow(&self, key: &str) -> Option<u64> {
        let limiter = {
            let mut limiters = self.limiters.lock();
            match limiters.get(key) {
                Some(limiter) => limiter.clone(),
                None if limiters.len() >= self.max_keys => return self.overflow.allow(),
                None => limiters
                    .entry(key.to_owned())
                    .or_insert_with(|| Arc::new(LogLimiter::with_interval(self.interval)))
                    .clone(),
            }
        };
        limiter.allow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_is_logged_then_one_per_interval_with_the_suppressed_count() {
        let limiter = LogLimiter::with_interval(Duration::from_millis(200));
        assert_eq!(limiter.allow(), Some(0));
        for _ in 0..1000 {
            assert_eq!(limiter.allow(), None);
        }
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(limiter.allow(), Some(1000));
        assert_eq!(limiter.allow(), None);
    }

    #[test]
    fn each_key_is_limited_on_its_own_and_extra_keys_share_one_limiter() {
        let limiter = KeyedLogLimiter::new(Duration::from_secs(60), 2);
        assert_eq!(limiter.allow("a"), Some(0));
        assert_eq!(limiter.allow("a"), None);
        assert_eq!(
            limiter.allow("b"),
            Some(0),
            "another key is not held back by a"
        );
        assert_eq!(
            limiter.allow("c"),
            Some(0),
            "the first overflow key gets a line"
        );
        assert_eq!(
            limiter.allow("d"),
            None,
            "later overflow keys share c's limiter"
        );
    }
}
