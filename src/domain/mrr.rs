//! MRR movements between two instants, per customer, as subscription analytics count them
//! (ChartMogul's categories, netted per customer over the interval): a customer from zero to
//! some MRR is `new`, from some to zero `churned`, up `expansion`, down `contraction`. All
//! movements are positive amounts.

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::Decimal;

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
