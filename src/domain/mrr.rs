//! MRR movements between two instants, per customer, as subscription analytics count them
//! (ChartMogul's categories, netted per customer over the interval): a customer from zero to
//! some MRR is `new`, from some to zero `churned`, up `expansion`, down `contraction`. All
//! movements are positive amounts.

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::Decimal;

use super::invoice::Off;

/// What one subscription brings in a month (SPEC §12, §15): its plan's prices (negotiated
/// ones in their place) and its recurring add-ons, `per_interval` in all, at their monthly
/// equivalent; less an active `forever` or `repeating` discount (a percentage of that, or an
/// amount off at its monthly equivalent), never below zero. Exact: rounded by the caller,
/// once, on the total.
pub fn subscription_mrr(
    per_interval: Decimal,
    interval_months: u32,
    discount: Option<Off>,
) -> Decimal {
    let months = Decimal::from(interval_months.max(1));
    let gross = per_interval / months;
    let off = match discount {
        None => Decimal::ZERO,
        Some(Off::Percent(p)) => gross * p / Decimal::ONE_HUNDRED,
        Some(Off::Amount(a)) => a / months,
    };
    (gross - off).max(Decimal::ZERO)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Movements {
    pub new: Decimal,
    pub expansion: Decimal,
    pub contraction: Decimal,
    pub churned: Decimal,
}

/// The movements from the MRR per customer at the start to that at the end.
pub fn movements(start: &BTreeMap<String, Decimal>, end: &BTreeMap<String, Decimal>) -> Movements {
    let mut m = Movements::default();
    let customers: BTreeSet<&String> = start.keys().chain(end.keys()).collect();
    for c in customers {
        let from = start.get(c).copied().unwrap_or_default();
        let to = end.get(c).copied().unwrap_or_default();
        match (from.is_zero(), to.is_zero()) {
            (true, false) => m.new += to,
            (false, true) => m.churned += from,
            (false, false) if to > from => m.expansion += to - from,
            (false, false) if to < from => m.contraction += from - to,
            _ => {}
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn mrr(pairs: &[(&str, Decimal)]) -> BTreeMap<String, Decimal> {
        pairs.iter().map(|(c, d)| (c.to_string(), *d)).collect()
    }

    #[test]
    fn a_subscriptions_mrr_takes_add_ons_in_and_discounts_out() {
        // 12 000 + 2 000 a month, 10% off forever: 12 600.
        assert_eq!(
            subscription_mrr(dec!(14000), 1, Some(Off::Percent(dec!(10)))),
            dec!(12600)
        );
        // A year's 1 200 is 100 a month; 600 off a year is 50 a month.
        assert_eq!(
            subscription_mrr(dec!(1200), 12, Some(Off::Amount(dec!(600)))),
            dec!(50)
        );
        // Never below zero.
        assert_eq!(
            subscription_mrr(dec!(10), 1, Some(Off::Amount(dec!(25)))),
            dec!(0)
        );
    }

    #[test]
    fn each_customer_moves_in_one_category() {
        let start = mrr(&[
            ("kept", dec!(10)),
            ("up", dec!(10)),
            ("down", dec!(30)),
            ("gone", dec!(5)),
        ]);
        let end = mrr(&[
            ("kept", dec!(10)),
            ("up", dec!(25)),
            ("down", dec!(20)),
            ("fresh", dec!(7)),
        ]);
        assert_eq!(
            movements(&start, &end),
            Movements {
                new: dec!(7),
                expansion: dec!(15),
                contraction: dec!(10),
                churned: dec!(5),
            }
        );
        // The movements account for the whole change of MRR.
        let total = |m: &BTreeMap<String, Decimal>| m.values().copied().sum::<Decimal>();
        let mv = movements(&start, &end);
        assert_eq!(
            total(&end) - total(&start),
            mv.new + mv.expansion - mv.contraction - mv.churned
        );
    }
}
