//! Quantities: exact decimals, JSON numbers on the wire.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;

/// A quantity: a JSON number on the wire, an exact decimal inside (never a float).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Qty(pub Decimal);

impl Serialize for Qty {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let value = self.0.normalize();
        // Whole numbers (most counters and limits) straight to digits, with no text formatted
        // and parsed again on the way (a check answer carries up to five quantities).
        if value.scale() == 0 {
            if let Ok(n) = i64::try_from(value.mantissa()) {
                return s.serialize_i64(n);
            }
        }
        let text = value.to_string();
        match serde_json::Number::from_str(&text) {
            Ok(n) => n.serialize(s),
            Err(_) => s.serialize_str(&text),
        }
    }
}

impl<'de> Deserialize<'de> for Qty {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = serde_json::Number::deserialize(d)?;
        let text = n.to_string();
        let value = if text.contains(['e', 'E']) {
            Decimal::from_scientific(&text)
        } else {
            Decimal::from_str(&text)
        };
        value.map(Qty).map_err(|_| {
            serde::de::Error::custom(format!("{text} is not a representable quantity"))
        })
    }
}

impl utoipa::PartialSchema for Qty {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Number)
            .description(Some("An exact decimal quantity."))
            .into()
    }
}

impl utoipa::ToSchema for Qty {}

impl From<Decimal> for Qty {
    fn from(d: Decimal) -> Self {
        Qty(d)
    }
}

/// The largest quantity or limit accepted (10^15): far beyond any real usage, and small enough
/// that sums and prices of them stay exact in a 96-bit decimal.
pub fn max_quantity() -> Decimal {
    Decimal::from(1_000_000_000_000_000i64)
}

/// Why a quantity is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidQuantity {
    #[error("Quantities must not be negative.")]
    Negative,
    #[error("Quantities may be at most 1000000000000000 (10^15).")]
    TooLarge,
    #[error("Quantities may have at most 12 decimal places.")]
    TooPrecise,
}

/// Rejects a quantity that is negative, or too large or too precise to store sensibly;
/// returns it normalized.
pub fn validate_quantity(q: Decimal) -> Result<Decimal, InvalidQuantity> {
    if q.is_sign_negative() && !q.is_zero() {
        return Err(InvalidQuantity::Negative);
    }
    if q > max_quantity() {
        return Err(InvalidQuantity::TooLarge);
    }
    if q.normalize().scale() > 12 {
        return Err(InvalidQuantity::TooPrecise);
    }
    Ok(q.normalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_json_numbers_written_exactly() {
        let json = |s: &str| serde_json::to_string(&Qty(Decimal::from_str(s).unwrap())).unwrap();
        assert_eq!(json("0"), "0");
        assert_eq!(json("-0"), "0");
        assert_eq!(json("1000"), "1000");
        assert_eq!(json("1000.000"), "1000");
        assert_eq!(json("-42"), "-42");
        assert_eq!(json("2.50"), "2.5");
        assert_eq!(json("0.000000000001"), "0.000000000001");
        assert_eq!(json("9223372036854775807"), "9223372036854775807");
        // Past i64: still exact, through the decimal's own digits.
        assert_eq!(
            json("79228162514264337593543950335"),
            "79228162514264337593543950335"
        );
    }

    #[test]
    fn quantities_are_checked_and_normalized() {
        let d = |s: &str| Decimal::from_str(s).unwrap();
        assert_eq!(validate_quantity(d("2.50")), Ok(d("2.5")));
        assert_eq!(validate_quantity(d("-0")), Ok(Decimal::ZERO));
        assert_eq!(validate_quantity(d("-1")), Err(InvalidQuantity::Negative));
        assert_eq!(
            validate_quantity(d("1000000000000001")),
            Err(InvalidQuantity::TooLarge)
        );
        assert_eq!(
            validate_quantity(d("0.0000000000001")),
            Err(InvalidQuantity::TooPrecise)
        );
    }
}
