//! Logs to stderr, filtered by `RUST_LOG` (default `info`). Stdout is kept for the ready line
//! and command output. [`LogLimiter`] keeps a repeated error from flooding the log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
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
}
