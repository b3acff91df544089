//! Money: currencies and the one rounding rule.
//!
//! Every amount is a `rust_decimal::Decimal` tagged, at the document level, with an ISO 4217
//! currency. Arithmetic stays exact until a document line is produced; each line is rounded to
//! the currency's minor unit, half away from zero ([`Currency::round`]), and totals are sums of
//! rounded lines. Nothing here ever touches floating point.

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// An ISO 4217 currency code (three upper-case ASCII letters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

/// Currencies whose minor unit is not the cent. Everything else has two decimals.
const ZERO_DECIMALS: &[&str] = &[
    "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "VND", "VUV",
    "XAF", "XOF", "XPF",
];
const THREE_DECIMALS: &[&str] = &["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];

impl Currency {
    pub fn new(code: &str) -> Result<Self, String> {
        let bytes = code.as_bytes();
        if bytes.len() != 3 || !bytes.iter().all(|b| b.is_ascii_uppercase()) {
            return Err(format!(
                "currency {code:?} is not an ISO 4217 code (three upper-case letters, e.g. USD)"
            ));
        }
        Ok(Currency([bytes[0], bytes[1], bytes[2]]))
    }

    pub fn code(&self) -> &str {
        // Constructed only from ASCII upper-case letters.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }

    /// Number of decimals of the currency's minor unit.
    pub fn minor_unit_scale(&self) -> u32 {
        let code = self.code();
        if ZERO_DECIMALS.contains(&code) {
            0
        } else if THREE_DECIMALS.contains(&code) {
            3
        } else {
            2
        }
    }

    /// The one rounding rule of billrun: to the minor unit, half away from zero.
    pub fn round(&self, amount: Decimal) -> Decimal {
        let scale = self.minor_unit_scale();
        let mut r = amount.round_dp_with_strategy(scale, RoundingStrategy::MidpointAwayFromZero);
        r.rescale(scale);
        r
    }

    /// A unit price as printed: at least the currency's minor digits (`50.00`), more only
    /// where the price has them (`0.125`).
    pub fn price(&self, price: Decimal) -> String {
        let mut p = price.normalize();
        if p.scale() < self.minor_unit_scale() {
            p.rescale(self.minor_unit_scale());
        }
        p.to_string()
    }

    /// Zero with the currency's scale, so it prints as `0.00`.
    pub fn zero(&self) -> Decimal {
        let mut z = Decimal::ZERO;
        z.rescale(self.minor_unit_scale());
        z
    }

    /// Whether `amount` is already expressed in whole minor units.
    pub fn is_whole_minor(&self, amount: Decimal) -> bool {
        amount.round_dp(self.minor_unit_scale()) == amount
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::new(s)
    }
}

impl TryFrom<String> for Currency {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Currency::new(&s)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.code().to_string()
    }
}

/// Parse a money amount written as a decimal string ("49.99"). Money in files is always a
/// string: a TOML or JSON float would already have lost digits.
pub fn parse_amount(s: &str) -> Result<Decimal, String> {
    let t = s.trim();
    if t.is_empty() || t.contains(['e', 'E']) {
        return Err(format!("{s:?} is not a decimal amount"));
    }
    let value = Decimal::from_str_exact(t).map_err(|_| format!("{s:?} is not a decimal amount"))?;
    // Bounded so that any quantity (u32) times any period's days cannot overflow `Decimal`.
    if value.abs() >= Decimal::from(MAX_AMOUNT_DIGITS_LIMIT) {
        return Err(format!(
            "{s:?} is too large (at most 15 digits before the decimal point)"
        ));
    }
    Ok(value)
}

const MAX_AMOUNT_DIGITS_LIMIT: i64 = 1_000_000_000_000_000;

/// A computation whose result `Decimal` cannot hold (about 7.9 × 10^28). Inputs are capped
/// (`core::limits`) so one document never gets there; sums over many documents are checked
/// and end in this error instead of a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("amounts too large to compute ({0})")]
pub struct AmountOverflow(pub &'static str);

/// `a + b`, or an overflow naming `what` was being computed.
pub fn add(a: Decimal, b: Decimal, what: &'static str) -> Result<Decimal, AmountOverflow> {
    a.checked_add(b).ok_or(AmountOverflow(what))
}

/// `a − b`, checked.
pub fn sub(a: Decimal, b: Decimal, what: &'static str) -> Result<Decimal, AmountOverflow> {
    a.checked_sub(b).ok_or(AmountOverflow(what))
}

/// `a × b`, checked.
pub fn mul(a: Decimal, b: Decimal, what: &'static str) -> Result<Decimal, AmountOverflow> {
    a.checked_mul(b).ok_or(AmountOverflow(what))
}

/// The sum of `amounts`, checked.
pub fn sum(
    amounts: impl IntoIterator<Item = Decimal>,
    what: &'static str,
) -> Result<Decimal, AmountOverflow> {
    amounts
        .into_iter()
        .try_fold(Decimal::ZERO, |acc, x| add(acc, x, what))
}

/// A running total of rounded amounts in one currency, for reports over many documents (a
/// run's summary, a finance batch): kept in minor units in an `i128`, so it holds any number
/// of documents `Decimal` can hold one of. Prints like an amount (`1234.50`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Total {
    minor: i128,
    scale: u32,
}

impl Total {
    pub fn new(currency: Currency) -> Total {
        Total {
            minor: 0,
            scale: currency.minor_unit_scale(),
        }
    }

    /// Add an amount (rounded to the currency's minor unit first, as every stored amount is).
    pub fn add(&mut self, amount: Decimal) {
        let a = amount.round_dp_with_strategy(self.scale, RoundingStrategy::MidpointAwayFromZero);
        // Near Decimal's limit an amount may have fewer decimals than the currency (no room
        // for the cents): scale its mantissa up in i128 instead.
        let minor = 10i128
            .checked_pow(self.scale.saturating_sub(a.scale()))
            .and_then(|f| a.mantissa().checked_mul(f))
            .unwrap_or(if a.is_sign_negative() {
                i128::MIN
            } else {
                i128::MAX
            });
        // Decimal's mantissa is 96 bits; i128 saturates only after ~10^10 maximal amounts.
        self.minor = self.minor.saturating_add(minor);
    }

    pub fn is_zero(&self) -> bool {
        self.minor == 0
    }
}

impl fmt::Display for Total {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.minor < 0 { "-" } else { "" };
        let abs = self.minor.unsigned_abs();
        if self.scale == 0 {
            return write!(f, "{sign}{abs}");
        }
        let unit = 10u128.pow(self.scale);
        write!(
            f,
            "{sign}{}.{:0width$}",
            abs / unit,
            abs % unit,
            width = self.scale as usize
        )
    }
}

impl Serialize for Total {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str_exact(s).unwrap()
    }

    #[test]
    fn rounds_half_away_from_zero_to_minor_unit() {
        let usd = Currency::new("USD").unwrap();
        for (input, want) in [
            ("4.999", "5.00"),
            ("2.2495", "2.25"),
            ("-2.245", "-2.25"),
            ("2.244", "2.24"),
            ("827.2602", "827.26"),
            ("1", "1.00"),
        ] {
            assert_eq!(usd.round(d(input)).to_string(), want, "rounding {input}");
        }
        assert_eq!(
            Currency::new("JPY").unwrap().round(d("100.5")).to_string(),
            "101"
        );
        assert_eq!(
            Currency::new("KWD").unwrap().round(d("1.2345")).to_string(),
            "1.235"
        );
    }

    #[test]
    fn totals_hold_what_decimal_cannot() {
        let usd = Currency::new("USD").unwrap();
        let big = d("79000000000000000000000000.00");
        let mut t = Total::new(usd);
        for _ in 0..2000 {
            t.add(big);
        }
        assert_eq!(t.to_string(), "158000000000000000000000000000.00");
        assert!(sum([big; 2000], "test").is_err());
        let mut t = Total::new(usd);
        t.add(d("-1.5"));
        t.add(d("0.25"));
        assert_eq!(t.to_string(), "-1.25");
        let mut t = Total::new(Currency::new("JPY").unwrap());
        t.add(d("100"));
        assert_eq!(t.to_string(), "100");
        assert_eq!(Total::new(usd).to_string(), "0.00");
    }

    #[test]
    fn rejects_bad_codes_and_amounts() {
        assert!(Currency::new("usd").is_err());
        assert!(Currency::new("US").is_err());
        assert!(parse_amount("1e3").is_err());
        assert!(parse_amount("abc").is_err());
        assert!(parse_amount("1000000000000000").is_err());
        assert!(parse_amount("999999999999999.99").is_ok());
        assert_eq!(parse_amount(" 20.00 ").unwrap().to_string(), "20.00");
    }
}
