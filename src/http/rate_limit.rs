//! A token bucket per source, checked before any other work so that a flood costs little.

use std::time::Instant;

use parking_lot::Mutex;

use crate::config::RateLimit;

#[derive(Debug)]
pub struct TokenBucket {
    limit: RateLimit,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            state: Mutex::new((f64::from(limit.burst.max(1)), Instant::now())),
        }
    }

    /// Takes a token, or says in how many whole seconds one will be there.
    pub fn try_acquire(&self) -> Result<(), u64> {
        self.try_acquire_at(Instant::now())
    }

    fn try_acquire_at(&self, now: Instant) -> Result<(), u64> {
        let rate = f64::from(self.limit.per_second.max(1));
        let burst = f64::from(self.limit.burst.max(1));
        let mut state = self.state.lock();
        let (tokens, last) = &mut *state;
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * rate).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn burst_is_served_then_refilled_at_the_rate() {
        let bucket = TokenBucket::new(RateLimit {
            per_second: 2,
            burst: 3,
        });
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(bucket.try_acquire_at(start), Ok(()));
        }
        assert_eq!(bucket.try_acquire_at(start), Err(1));
        assert_eq!(
            bucket.try_acquire_at(start + Duration::from_millis(500)),
            Ok(())
        );
        assert!(bucket
            .try_acquire_at(start + Duration::from_millis(500))
            .is_err());
    }
}
