//! Invoice lines and their arithmetic: proration to the second, per-line rounding to the
//! currency's minor unit (half away from zero), totals as sums of rounded lines.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::money::round_to_minor;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LineType {
    Subscription,
    Proration,
    Overage,
    Seat,
    Addon,
    /// A one-off charge (an invoice item, SPEC §15).
    Charge,
    Discount,
}

impl LineType {
    pub fn as_str(self) -> &'static str {
        match self {
            LineType::Subscription => "subscription",
            LineType::Proration => "proration",
            LineType::Overage => "overage",
            LineType::Seat => "seat",
            LineType::Addon => "addon",
            LineType::Charge => "charge",
            LineType::Discount => "discount",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "subscription" => LineType::Subscription,
            "proration" => LineType::Proration,
            "overage" => LineType::Overage,
            "seat" => LineType::Seat,
            "addon" => LineType::Addon,
            "charge" => LineType::Charge,
            "discount" => LineType::Discount,
            _ => return None,
        })
    }
}

/// One invoice line. `amount` is already rounded to the minor unit.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub kind: LineType,
    pub description: String,
    pub feature: Option<String>,
    pub quantity: Decimal,
    pub unit_amount: Decimal,
    pub amount: Decimal,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
}

/// `amount × (end − at) / (end − start)`, exact (to the second), before rounding. Zero when `at`
/// is outside the period.
pub fn prorate(
    amount: Decimal,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    at: DateTime<Utc>,
) -> Decimal {
    let length = (end - start).num_seconds();
    let remaining = (end - at).num_seconds().clamp(0, length.max(0));
    if length <= 0 || remaining == 0 {
        return Decimal::ZERO;
    }
    // Multiply first: the division is then the only inexact step (28 significant digits).
    amount
        .checked_mul(Decimal::from(remaining))
        .and_then(|x| x.checked_div(Decimal::from(length)))
        .unwrap_or(Decimal::ZERO)
}

/// The two proration lines of an immediate plan change at `at` within `[start, end)`: a credit
/// for the unused part of the old price and a charge for the rest of the period at the new
/// one, each rounded on its own.
pub fn proration_lines(
    (old_name, old_price): (&str, Decimal),
    (new_name, new_price): (&str, Decimal),
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    at: DateTime<Utc>,
    currency: &str,
) -> Vec<Line> {
    let credit = round_to_minor(-prorate(old_price, start, end, at), currency);
    let charge = round_to_minor(prorate(new_price, start, end, at), currency);
    let when = at.format("%Y-%m-%d %H:%M:%S UTC");
    vec![
        Line {
            kind: LineType::Proration,
            description: format!("Unused time on {old_name} after {when}"),
            feature: None,
            quantity: Decimal::ONE,
            unit_amount: credit,
            amount: credit,
            period_start: at,
            period_end: end,
        },
        Line {
            kind: LineType::Proration,
            description: format!("Remaining time on {new_name} after {when}"),
            feature: None,
            quantity: Decimal::ONE,
            unit_amount: charge,
            amount: charge,
            period_start: at,
            period_end: end,
        },
    ]
}

/// An invoice's number as shown: `INV-000001` (per tenant, gapless).
pub fn number(n: i64) -> String {
    format!("INV-{n:06}")
}

/// The sum of the (already rounded) line amounts.
pub fn total(lines: &[Line]) -> Decimal {
    lines
        .iter()
        .fold(Decimal::ZERO, |acc, l| acc.saturating_add(l.amount))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }
    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn half_of_a_30_day_period_is_exactly_half() {
        let (s, e) = (at("2026-11-01T00:00:00Z"), at("2026-12-01T00:00:00Z"));
        let mid = at("2026-11-16T00:00:00Z");
        assert_eq!(prorate(d("30.00"), s, e, mid), d("15"));
        let lines = proration_lines(
            ("Starter", d("30.00")),
            ("Premium", d("99.00")),
            s,
            e,
            mid,
            "usd",
        );
        assert_eq!(lines[0].amount, d("-15.00"));
        assert_eq!(lines[1].amount, d("49.50"));
        assert_eq!(total(&lines), d("34.50"));
    }

    #[test]
    fn proration_is_to_the_second_and_rounds_each_line() {
        let (s, e) = (at("2026-11-01T00:00:00Z"), at("2026-12-01T00:00:00Z"));
        // One second in: 2591999 of 2592000 seconds remain.
        let t = at("2026-11-01T00:00:01Z");
        assert_eq!(
            prorate(d("30"), s, e, t),
            d("29.999988425925925925925925926")
        );
        let lines = proration_lines(("A", d("30")), ("B", d("10")), s, e, t, "usd");
        assert_eq!(lines[0].amount, d("-30.00"));
        assert_eq!(lines[1].amount, d("10.00"));
        assert_eq!(prorate(d("30"), s, e, e), Decimal::ZERO);
        assert_eq!(prorate(d("30"), s, e, s), d("30"));
    }

    proptest! {
        #[test]
        fn prorated_amounts_stay_within_the_price(
            cents in 0i64..100_000_000, len in 1i64..40_000_000, into in 0i64..40_000_000,
        ) {
            let price = Decimal::new(cents, 2);
            let s = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap();
            let e = s + chrono::Duration::seconds(len);
            let t = s + chrono::Duration::seconds(into.min(len));
            let p = prorate(price, s, e, t);
            prop_assert!(p >= Decimal::ZERO && p <= price);
            // Credit of the old price plus charge of the same price nets to zero.
            let lines = proration_lines(("A", price), ("A", price), s, e, t, "usd");
            prop_assert_eq!(total(&lines), Decimal::ZERO);
        }
    }
}

/// What a coupon takes off (SPEC §15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Off {
    /// A percentage of the subtotal, 0 < p ≤ 100.
    Percent(Decimal),
    /// A fixed amount, in the invoice's currency.
    Amount(Decimal),
}

/// The amount of an invoice's `discount` line (zero or negative) for its `subtotal` (the sum
/// of every other line): the percentage rounded once to the minor unit, or the fixed amount,
/// never more than the subtotal (an unused rest is lost, as in Stripe); nothing when the
/// subtotal is zero or less.
pub fn discount_amount(subtotal: Decimal, off: Off, currency: &str) -> Decimal {
    if subtotal <= Decimal::ZERO {
        return Decimal::ZERO;
    }
    let off = match off {
        Off::Percent(p) => round_to_minor(subtotal * p / Decimal::ONE_HUNDRED, currency),
        Off::Amount(a) => a,
    };
    -off.min(subtotal)
}

#[cfg(test)]
mod discount_tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn discounts_are_rounded_once_and_capped_at_the_subtotal() {
        // 15% of 49.99 = 7.4985, rounded half away from zero: 7.50.
        assert_eq!(
            discount_amount(dec!(49.99), Off::Percent(dec!(15)), "usd"),
            dec!(-7.50)
        );
        // $100 off a $49.99 invoice takes 49.99; the rest is lost.
        assert_eq!(
            discount_amount(dec!(49.99), Off::Amount(dec!(100)), "usd"),
            dec!(-49.99)
        );
        assert_eq!(
            discount_amount(dec!(30), Off::Amount(dec!(5)), "usd"),
            dec!(-5)
        );
        assert_eq!(
            discount_amount(dec!(30), Off::Percent(dec!(100)), "usd"),
            dec!(-30.00)
        );
        // 12.5% of 0.99 = 0.12375: 0.12.
        assert_eq!(
            discount_amount(dec!(0.99), Off::Percent(dec!(12.5)), "usd"),
            dec!(-0.12)
        );
        assert_eq!(
            discount_amount(dec!(0), Off::Percent(dec!(15)), "usd"),
            dec!(0)
        );
        assert_eq!(
            discount_amount(dec!(-10), Off::Amount(dec!(5)), "usd"),
            dec!(0)
        );
        assert_eq!(
            discount_amount(dec!(999), Off::Percent(dec!(10)), "jpy"),
            dec!(-100)
        );
    }
}
