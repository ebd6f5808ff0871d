//! Exact money: integer minor units and a currency, parsed from decimal text, never from a
//! binary float.

use std::fmt;

use thiserror::Error;

/// An ISO 4217 currency code, upper-case.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Currency(String);

impl Currency {
    /// Seed 000's `currency TEXT DEFAULT 'BRL'`.
    pub fn brl() -> Self {
        Self("BRL".to_owned())
    }

    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        let code = code.trim();
        if code.len() == 3 && code.bytes().all(|b| b.is_ascii_alphabetic()) {
            Ok(Self(code.to_ascii_uppercase()))
        } else {
            Err(MoneyError::Currency(code.to_owned()))
        }
    }

    pub fn code(&self) -> &str {
        &self.0
    }

    /// Digits after the decimal point in this currency's minor unit (ISO 4217).
    pub fn exponent(&self) -> u32 {
        match self.0.as_str() {
            "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF"
            | "UGX" | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
            "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
            _ => 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MoneyError {
    #[error("amount {0:?} is not a decimal number")]
    NotDecimal(String),
    #[error("amount {amount:?} has more decimals than {currency} allows")]
    TooPrecise { amount: String, currency: String },
    #[error("amount {0:?} is out of range")]
    OutOfRange(String),
    #[error("currency {0:?} is not an ISO 4217 code")]
    Currency(String),
}

/// Why an amount, exact and well-formed, still cannot be a sale's price or commission.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SaleAmountError {
    #[error("{0} is negative")]
    Negative(Money),
    #[error("{0} does not fit seed 000's DECIMAL(10,2): sale amounts are at most 99999999.99")]
    TooLarge(Money),
    #[error("{0} has more than 2 decimals, which seed 000's DECIMAL(10,2) would round away")]
    TooPrecise(Money),
}

/// Digits after the point in seed 000's sale amounts (`price`, `commission_value`), which are
/// `DECIMAL(10,2)`: ten digits in all, so at most eight before the point.
pub const SALE_AMOUNT_SCALE: u32 = 2;

/// The largest sale amount seed 000's `DECIMAL(10,2)` holds, 99,999,999.99, counted in
/// hundredths of the major unit (the column's own unit, and BRL's minor unit). PostgreSQL
/// refuses anything larger ("numeric field overflow") on every retry, so normalization refuses
/// it first, as a permanent error, and the delivery is parked where it can be replayed.
pub const SALE_AMOUNT_MAX_HUNDREDTHS: i64 = 9_999_999_999;

/// An exact amount of money.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Money {
    pub minor_units: i64,
    pub currency: Currency,
}

impl Money {
    /// Parses decimal text such as `99.90`, `-3`, `1e2` is rejected; trailing zeros beyond the
    /// currency's exponent are tolerated (`99.9000`), real extra precision is an error.
    pub fn parse_decimal(text: &str, currency: Currency) -> Result<Self, MoneyError> {
        let not_decimal = || MoneyError::NotDecimal(text.to_owned());
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
        let exponent = currency.exponent() as usize;
        let significant = fraction.trim_end_matches('0');
        if significant.len() > exponent {
            return Err(MoneyError::TooPrecise {
                amount: text.to_owned(),
                currency: currency.code().to_owned(),
            });
        }
        let padded = format!("{whole}{significant:0<exponent$}");
        let magnitude: i64 = if padded.is_empty() {
            0
        } else {
            padded
                .parse()
                .map_err(|_| MoneyError::OutOfRange(text.to_owned()))?
        };
        let minor_units = if negative { -magnitude } else { magnitude };
        Ok(Self {
            minor_units,
            currency,
        })
    }

    /// Checks that this amount can be a sale's price or commission: zero or more, and storable
    /// in seed 000's `DECIMAL(10,2)` exactly. The bound is on the value, whatever the
    /// currency's exponent: at most [`SALE_AMOUNT_MAX_HUNDREDTHS`] hundredths, and, for
    /// three-decimal currencies, no third decimal the column would round away.
    pub fn check_sale_amount(&self) -> Result<(), SaleAmountError> {
        if self.minor_units < 0 {
            return Err(SaleAmountError::Negative(self.clone()));
        }
        let minor = i128::from(self.minor_units);
        let exponent = self.currency.exponent();
        let hundredths = if exponent <= SALE_AMOUNT_SCALE {
            minor * 10i128.pow(SALE_AMOUNT_SCALE - exponent)
        } else {
            let per_hundredth = 10i128.pow(exponent - SALE_AMOUNT_SCALE);
            if minor % per_hundredth != 0 {
                return Err(SaleAmountError::TooPrecise(self.clone()));
            }
            minor / per_hundredth
        };
        if hundredths > i128::from(SALE_AMOUNT_MAX_HUNDREDTHS) {
            return Err(SaleAmountError::TooLarge(self.clone()));
        }
        Ok(())
    }

    /// The amount as decimal text with exactly the currency's number of decimals.
    pub fn to_decimal_string(&self) -> String {
        let exponent = self.currency.exponent();
        let sign = if self.minor_units < 0 { "-" } else { "" };
        let magnitude = self.minor_units.unsigned_abs();
        if exponent == 0 {
            return format!("{sign}{magnitude}");
        }
        let scale = 10u64.pow(exponent);
        format!(
            "{sign}{}.{:0width$}",
            magnitude / scale,
            magnitude % scale,
            width = exponent as usize
        )
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.to_decimal_string(), self.currency.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brl(text: &str) -> Result<Money, MoneyError> {
        Money::parse_decimal(text, Currency::brl())
    }

    #[test]
    fn decimal_text_becomes_exact_minor_units() {
        assert_eq!(brl("99.90").map(|m| m.minor_units), Ok(9990));
        assert_eq!(brl("29.97").map(|m| m.minor_units), Ok(2997));
        assert_eq!(brl("0.1").map(|m| m.minor_units), Ok(10));
        assert_eq!(brl("100").map(|m| m.minor_units), Ok(10000));
        assert_eq!(brl("-5.5").map(|m| m.minor_units), Ok(-550));
        assert_eq!(brl("99.9000").map(|m| m.minor_units), Ok(9990));
    }

    #[test]
    fn extra_precision_and_garbage_are_rejected() {
        assert!(matches!(brl("99.999"), Err(MoneyError::TooPrecise { .. })));
        assert!(matches!(brl("1e2"), Err(MoneyError::NotDecimal(_))));
        assert!(matches!(brl(""), Err(MoneyError::NotDecimal(_))));
        assert!(matches!(brl("."), Err(MoneyError::NotDecimal(_))));
        assert!(matches!(brl("12,50"), Err(MoneyError::NotDecimal(_))));
        assert!(matches!(
            brl("99999999999999999999"),
            Err(MoneyError::OutOfRange(_))
        ));
    }

    fn checked(text: &str, currency: &str) -> Result<(), SaleAmountError> {
        let currency = Currency::parse(currency).expect("iso code");
        Money::parse_decimal(text, currency)
            .expect("decimal")
            .check_sale_amount()
    }

    #[test]
    fn sale_amounts_stop_at_decimal_10_2() {
        assert_eq!(checked("0", "BRL"), Ok(()));
        assert_eq!(checked("0.00", "BRL"), Ok(()));
        assert_eq!(checked("99999999.99", "BRL"), Ok(()));
        assert!(matches!(
            checked("100000000.00", "BRL"),
            Err(SaleAmountError::TooLarge(_))
        ));
        assert!(matches!(
            checked("99999999999", "BRL"),
            Err(SaleAmountError::TooLarge(_))
        ));
        assert_eq!(
            brl("99999999.99").map(|m| m.minor_units),
            Ok(SALE_AMOUNT_MAX_HUNDREDTHS)
        );
    }

    #[test]
    fn negative_sale_amounts_are_refused() {
        assert!(matches!(
            checked("-0.01", "BRL"),
            Err(SaleAmountError::Negative(_))
        ));
        assert_eq!(checked("-0.00", "BRL"), Ok(()), "minus zero is zero");
    }

    #[test]
    fn the_sale_bound_is_on_the_value_whatever_the_currency_exponent() {
        assert_eq!(checked("99999999", "JPY"), Ok(()));
        assert!(matches!(
            checked("100000000", "JPY"),
            Err(SaleAmountError::TooLarge(_))
        ));
        assert_eq!(checked("99999999.990", "KWD"), Ok(()));
        assert!(matches!(
            checked("100000000", "KWD"),
            Err(SaleAmountError::TooLarge(_))
        ));
        assert!(matches!(
            checked("1.005", "KWD"),
            Err(SaleAmountError::TooPrecise(_))
        ));
        assert_eq!(
            Money {
                minor_units: i64::MAX,
                currency: Currency::brl()
            }
            .check_sale_amount()
            .map_err(|error| error.to_string()),
            Err(
                "92233720368547758.07 BRL does not fit seed 000's DECIMAL(10,2): \
                 sale amounts are at most 99999999.99"
                    .to_owned()
            )
        );
    }

    #[test]
    fn decimal_string_round_trips_with_currency_exponent() {
        assert_eq!(
            brl("99.9").map(|m| m.to_decimal_string()),
            Ok("99.90".into())
        );
        let yen = Money::parse_decimal("500", Currency::parse("jpy").expect("iso code"));
        assert_eq!(yen.map(|m| m.to_decimal_string()), Ok("500".into()));
        let dinar = Money::parse_decimal("1.5", Currency::parse("KWD").expect("iso code"));
        assert_eq!(dinar.map(|m| m.to_decimal_string()), Ok("1.500".into()));
        assert_eq!(
            brl("-0.05").map(|m| m.to_decimal_string()),
            Ok("-0.05".into())
        );
    }
}
