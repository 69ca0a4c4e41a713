//! Money: exact decimals, rounded in exactly one place.

use rust_decimal::{Decimal, RoundingStrategy};

/// Number of decimal places of a currency's minor unit (ISO 4217).
pub fn minor_unit_scale(currency: &str) -> u32 {
    match currency {
        "bif" | "clp" | "djf" | "gnf" | "isk" | "jpy" | "kmf" | "krw" | "pyg" | "rwf" | "ugx"
        | "vnd" | "vuv" | "xaf" | "xof" | "xpf" => 0,
        "bhd" | "jod" | "kwd" | "omr" | "tnd" => 3,
        _ => 2,
    }
}

/// Rounds an amount to the currency's minor unit, half away from zero. The one rounding rule
/// for money in Tollgate.
pub fn round_to_minor(amount: Decimal, currency: &str) -> Decimal {
    let scale = minor_unit_scale(currency);
    let mut rounded = amount.round_dp_with_strategy(scale, RoundingStrategy::MidpointAwayFromZero);
    rounded.rescale(scale);
    rounded
}

/// Formats money for the API: a decimal string with exactly the minor-unit precision.
pub fn format(amount: Decimal, currency: &str) -> String {
    round_to_minor(amount, currency).to_string()
}

/// Formats a unit price: at least the currency's minor-unit precision, more if it has more
/// (per-unit prices may be fractions of a cent).
pub fn format_unit(amount: Decimal, currency: &str) -> String {
    let scale = minor_unit_scale(currency);
    let mut a = amount.normalize();
    if a.scale() < scale {
        a.rescale(scale);
    }
    a.to_string()
}

/// Is `code` a plausible lowercase ISO 4217 code?
pub fn is_valid_currency(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|b| b.is_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn rounds_half_away_from_zero() {
        assert_eq!(format(d("0.125"), "usd"), "0.13");
        assert_eq!(format(d("-0.125"), "usd"), "-0.13");
        assert_eq!(format(d("0.124"), "usd"), "0.12");
        assert_eq!(format(d("29"), "usd"), "29.00");
        assert_eq!(format(d("1.5"), "jpy"), "2");
        assert_eq!(format(d("1.0005"), "kwd"), "1.001");
        assert_eq!(format_unit(d("0.1"), "usd"), "0.10");
        assert_eq!(format_unit(d("0.0025"), "usd"), "0.0025");
    }
}
