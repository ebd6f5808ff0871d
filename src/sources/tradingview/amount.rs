//! Exact decimal amounts for trading: prices, quantities, notionals and P&L as integers of
//! 10⁻⁸ (a satoshi, the finest step crypto venues quote). Parsed from decimal text, never from
//! a binary float; products and quotients round half away from zero back to eight places.

use std::fmt;

use thiserror::Error;

/// Digits after the point.
pub const SCALE: u32 = 8;
const ONE: i128 = 100_000_000;
/// Beyond this the decimal text would not fit the ledger's `NUMERIC` comfortably, and products
/// of two amounts could overflow `i128`.
const LIMIT: i128 = 1_000_000_000_000_000 * ONE;

/// An exact signed decimal with eight places.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(i128);

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AmountError {
    #[error("{0:?} is not a decimal number")]
    NotDecimal(String),
    #[error("{0:?} has more than 8 decimals")]
    TooPrecise(String),
    #[error("{0:?} is out of range")]
    OutOfRange(String),
}

impl Amount {
    pub const ZERO: Self = Self(0);

    /// Parses `37000`, `0.015`, `-2.5`, `+1`; exponents, `NaN` and extra precision are refused
    /// (trailing zeros are tolerated).
    pub fn parse(text: &str) -> Result<Self, AmountError> {
        let not_decimal = || AmountError::NotDecimal(text.to_owned());
        let trimmed = text.trim();
        let (negative, digits) = match trimmed.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, trimmed.strip_prefix('+').unwrap_or(trimmed)),
        };
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() && fraction.is_empty() || !all_digits(whole) || !all_digits(fraction) {
            return Err(not_decimal());
        }
        let significant = fraction.trim_end_matches('0');
        if significant.len() > SCALE as usize {
            return Err(AmountError::TooPrecise(text.to_owned()));
        }
        let whole = whole.trim_start_matches('0');
        if whole.len() > 18 {
            return Err(AmountError::OutOfRange(text.to_owned()));
        }
        let padded = format!("{whole}{significant:0<8}");
        let magnitude: i128 = padded
            .parse()
            .map_err(|_| AmountError::OutOfRange(text.to_owned()))?;
        if magnitude >= LIMIT {
            return Err(AmountError::OutOfRange(text.to_owned()));
        }
        Ok(Self(if negative { -magnitude } else { magnitude }))
    }

    pub fn from_units(units: i64) -> Self {
        Self(i128::from(units) * ONE)
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub fn is_negative(self) -> bool {
        self.0 < 0
    }

    pub fn is_positive(self) -> bool {
        self.0 > 0
    }

    pub fn abs(self) -> Self {
        Self(self.0.abs())
    }

    pub fn min(self, other: Self) -> Self {
        if self <= other {
            self
        } else {
            other
        }
    }

    pub fn checked_add(self, other: Self) -> Option<Self> {
        Self::bounded(self.0.checked_add(other.0)?)
    }

    pub fn checked_sub(self, other: Self) -> Option<Self> {
        Self::bounded(self.0.checked_sub(other.0)?)
    }

    /// `self × other`, rounded half away from zero to eight places.
    pub fn checked_mul(self, other: Self) -> Option<Self> {
        let product = self.0.checked_mul(other.0)?;
        Self::bounded(rounded_div(product, ONE)?)
    }

    /// `self ÷ other`, rounded half away from zero to eight places; `None` for zero.
    pub fn checked_div(self, other: Self) -> Option<Self> {
        if other.0 == 0 {
            return None;
        }
        let scaled = self.0.checked_mul(ONE)?;
        Self::bounded(rounded_div(scaled, other.0)?)
    }

    /// `self ÷ other` rounded toward zero to `places` decimals (an order size never exceeds
    /// what the money allows).
    pub fn div_floor(self, other: Self, places: u32) -> Option<Self> {
        if other.0 == 0 || places > SCALE {
            return None;
        }
        let step = 10_i128.pow(SCALE - places);
        let quotient = self.0.checked_mul(ONE)? / other.0;
        Self::bounded(quotient / step * step)
    }

    fn bounded(value: i128) -> Option<Self> {
        (value.abs() < LIMIT).then_some(Self(value))
    }
}

/// `numerator ÷ denominator`, rounded half away from zero.
fn rounded_div(numerator: i128, denominator: i128) -> Option<i128> {
    let quotient = numerator / denominator;
    let remainder = numerator % denominator;
    if remainder.checked_mul(2)?.abs() >= denominator.abs() {
        let away = if (numerator < 0) == (denominator < 0) {
            1
        } else {
            -1
        };
        quotient.checked_add(away)
    } else {
        Some(quotient)
    }
}

/// Plain decimal text without trailing zeros: `37000`, `0.015`, `-12.5`.
impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let magnitude = self.0.unsigned_abs();
        let whole = magnitude / ONE as u128;
        let fraction = magnitude % ONE as u128;
        if fraction == 0 {
            return write!(f, "{sign}{whole}");
        }
        let digits = format!("{fraction:08}");
        write!(f, "{sign}{whole}.{}", digits.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(text: &str) -> Amount {
        Amount::parse(text).expect("amount")
    }

    #[test]
    fn parses_and_prints_exactly() {
        for (text, shown) in [
            ("37000", "37000"),
            ("0.015", "0.015"),
            ("-2.50", "-2.5"),
            ("+1", "1"),
            (".5", "0.5"),
            ("0.00000001", "0.00000001"),
            ("100.000000000", "100"),
        ] {
            assert_eq!(a(text).to_string(), shown, "{text}");
        }
    }

    #[test]
    fn refuses_floats_exponents_and_extra_precision() {
        for text in ["1e3", "NaN", "", ".", "1.2.3", "abc", "0x10", "1,5"] {
            assert!(
                matches!(Amount::parse(text), Err(AmountError::NotDecimal(_))),
                "{text}"
            );
        }
        assert!(matches!(
            Amount::parse("0.000000001"),
            Err(AmountError::TooPrecise(_))
        ));
        assert!(matches!(
            Amount::parse("99999999999999999999"),
            Err(AmountError::OutOfRange(_))
        ));
    }

    #[test]
    fn arithmetic_rounds_half_away_from_zero_at_eight_places() {
        assert_eq!(a("37000").checked_mul(a("0.1")), Some(a("3700")));
        assert_eq!(a("0.00000001").checked_mul(a("0.5")), Some(a("0.00000001")));
        assert_eq!(
            a("-0.00000001").checked_mul(a("0.5")),
            Some(a("-0.00000001"))
        );
        assert_eq!(a("1").checked_div(a("3")), Some(a("0.33333333")));
        assert_eq!(a("2").checked_div(a("3")), Some(a("0.66666667")));
        assert_eq!(a("1").checked_div(Amount::ZERO), None);
        assert_eq!(a("1000").div_floor(a("37000"), 4), Some(a("0.027")));
        assert_eq!(a("1000").div_floor(a("3"), 0), Some(a("333")));
    }
}
