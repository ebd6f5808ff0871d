//! Time as a dependency: tolerance windows, backoff and timestamps read the clock through
//! [`Clock`], so tests move time instead of sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};

/// A point in time as microseconds since the Unix epoch: compact in rows, exact to compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn from_unix_seconds(seconds: i64) -> Self {
        Self(seconds.saturating_mul(1_000_000))
    }

    pub fn unix_seconds(self) -> i64 {
        self.0.div_euclid(1_000_000)
    }

    pub fn micros(self) -> i64 {
        self.0
    }

    pub fn plus_millis(self, millis: i64) -> Self {
        Self(self.0.saturating_add(millis.saturating_mul(1_000)))
    }

    pub fn to_datetime(self) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(self.0).unwrap_or_default()
    }

    /// RFC 3339 in UTC with a fixed six-digit fraction, so that text order is time order.
    /// Every ledger row and feed row writes several, so years 0 to 9999 are written digit by
    /// digit (chrono's formatter cost more than the rest of a timestamp's column); others,
    /// which chrono writes with a sign, go through chrono.
    pub fn to_rfc3339(self) -> String {
        /// 10000-01-01T00:00:00Z.
        const YEAR_10000: i64 = 253_402_300_800_000_000;
        /// 0000-01-01T00:00:00Z.
        const YEAR_0: i64 = -62_167_219_200_000_000;
        if !(YEAR_0..YEAR_10000).contains(&self.0) {
            return self
                .to_datetime()
                .to_rfc3339_opts(SecondsFormat::Micros, true);
        }
        let seconds = self.0.div_euclid(1_000_000);
        let micros = self.0.rem_euclid(1_000_000);
        let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
        let of_day = seconds.rem_euclid(86_400);
        let mut text = *b"0000-00-00T00:00:00.000000Z";
        // Every value here is in 0..100: written as the pair of digits the table holds.
        let mut pair = |at: usize, value: i64| {
            let from = value as usize * 2;
            text[at..at + 2].copy_from_slice(&DIGIT_PAIRS[from..from + 2]);
        };
        pair(0, year / 100);
        pair(2, year % 100);
        pair(5, month);
        pair(8, day);
        pair(11, of_day / 3600);
        pair(14, of_day / 60 % 60);
        pair(17, of_day % 60);
        pair(20, micros / 10_000);
        pair(22, micros / 100 % 100);
        pair(24, micros % 100);
        std::str::from_utf8(&text).map_or_else(|_| String::new(), str::to_owned)
    }

    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| Self(t.with_timezone(&Utc).timestamp_micros()))
    }
}

/// "00" to "99", two bytes each.
const DIGIT_PAIRS: &[u8; 200] = b"\
    0001020304050607080910111213141516171819202122232425262728293031323334353637383940414243444546474849\
    5051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899";

/// The proleptic Gregorian (year, month, day) of a day counted from 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let of_era = z.rem_euclid(146_097);
    let year_of_era = (of_era - of_era / 1460 + of_era / 36_524 - of_era / 146_096) / 365;
    let of_year = of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * of_year + 2) / 153;
    let day = of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Where "now" comes from.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Timestamp;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp(Utc::now().timestamp_micros())
    }
}

/// A clock that only moves when told to; for tests of tolerance windows and backoff.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn at(start: Timestamp) -> Self {
        Self(Arc::new(AtomicI64::new(start.0)))
    }

    pub fn advance_millis(&self, millis: i64) {
        self.0.fetch_add(millis * 1_000, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

pub type SharedClock = Arc<dyn Clock>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_text_sorts_like_time() {
        let early = Timestamp::from_unix_seconds(1_704_450_600).to_rfc3339();
        let late = Timestamp(Timestamp::from_unix_seconds(1_704_450_600).0 + 5).to_rfc3339();
        assert_eq!(early, "2024-01-05T10:30:00.000000Z");
        assert!(early < late);
    }

    #[test]
    fn rfc3339_text_is_chronos_at_every_kind_of_instant() {
        let chrono = |at: Timestamp| {
            at.to_datetime()
                .to_rfc3339_opts(SecondsFormat::Micros, true)
        };
        let mut instants = vec![
            0,
            -1,
            1,
            951_782_400_000_000,     // 2000-02-29
            4_107_542_399_999_999,   // 2100-02-28T23:59:59.999999
            -62_167_219_200_000_000, // 0000-01-01
            -62_167_219_200_000_001,
            253_402_300_799_999_999, // 9999-12-31T23:59:59.999999
            253_402_300_800_000_000,
            i64::MIN,
            i64::MAX,
        ];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            instants.push((state % 300_000_000_000_000_000) as i64 - 62_000_000_000_000_000);
        }
        for micros in instants {
            assert_eq!(
                Timestamp(micros).to_rfc3339(),
                chrono(Timestamp(micros)),
                "{micros}"
            );
        }
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::at(Timestamp(0));
        assert_eq!(clock.now(), Timestamp(0));
        clock.advance_millis(1500);
        assert_eq!(clock.now(), Timestamp(1_500_000));
    }
}
