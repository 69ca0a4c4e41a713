//! Entitlement math: what a plan allows a customer, given what they have used.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::period::Reset;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FeatureType {
    Boolean,
    Metered,
    Limit,
    Concurrency,
}

impl FeatureType {
    pub fn as_str(self) -> &'static str {
        match self {
            FeatureType::Boolean => "boolean",
            FeatureType::Metered => "metered",
            FeatureType::Limit => "limit",
            FeatureType::Concurrency => "concurrency",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "boolean" => Some(FeatureType::Boolean),
            "metered" => Some(FeatureType::Metered),
            "limit" => Some(FeatureType::Limit),
            "concurrency" => Some(FeatureType::Concurrency),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    Sum,
    Max,
}

impl Aggregation {
    pub fn as_str(self) -> &'static str {
        match self {
            Aggregation::Sum => "sum",
            Aggregation::Max => "max",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sum" => Some(Aggregation::Sum),
            "max" => Some(Aggregation::Max),
            _ => None,
        }
    }
}

/// Overage pricing: usage past the limit is billed `unit_amount` per started package of
/// `per_units`, and refused once the period's charge would pass `cap_amount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overage {
    pub unit_amount: Decimal,
    pub per_units: Decimal,
    pub cap_amount: Option<Decimal>,
}

impl Overage {
    /// The uncapped charge for a period's usage `used` against `limit`.
    pub fn charge(&self, used: Decimal, limit: Decimal) -> Decimal {
        let over = used.saturating_sub(limit);
        if over <= Decimal::ZERO || self.per_units <= Decimal::ZERO {
            return Decimal::ZERO;
        }
        let packages = over
            .checked_div(self.per_units)
            .unwrap_or(Decimal::MAX)
            .ceil();
        packages.saturating_mul(self.unit_amount)
    }

    /// What is billed for a period's usage: the charge, never more than the cap.
    pub fn billed(&self, used: Decimal, limit: Decimal) -> Decimal {
        let charge = self.charge(used, limit);
        match self.cap_amount {
            Some(cap) => charge.min(cap),
            None => charge,
        }
    }

    /// The highest usage whose charge stays within the cap, if there is a cap.
    /// `charge(u) <= cap  <=>  u <= limit + floor(cap / unit_amount) * per_units`.
    pub fn max_usage(&self, limit: Decimal) -> Option<Decimal> {
        let cap = self.cap_amount?;
        if self.unit_amount <= Decimal::ZERO {
            return None;
        }
        let packages = cap
            .checked_div(self.unit_amount)
            .unwrap_or(Decimal::MAX)
            .floor();
        Some(limit.saturating_add(packages.saturating_mul(self.per_units)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WarningLevel {
    Safe,
    Warning,
    Critical,
    Exceeded,
}

impl WarningLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            WarningLevel::Safe => "safe",
            WarningLevel::Warning => "warning",
            WarningLevel::Critical => "critical",
            WarningLevel::Exceeded => "exceeded",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub warning: Decimal,
    pub critical: Decimal,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            warning: Decimal::new(8, 1),
            critical: Decimal::new(95, 2),
        }
    }
}

impl Thresholds {
    pub fn level(&self, used: Decimal, limit: Option<Decimal>) -> WarningLevel {
        let Some(limit) = limit else {
            return WarningLevel::Safe;
        };
        if limit <= Decimal::ZERO {
            // Nothing is included: the allowance is used up from the start.
            return WarningLevel::Exceeded;
        }
        let ratio = used.checked_div(limit).unwrap_or(Decimal::MAX);
        if ratio >= Decimal::ONE {
            WarningLevel::Exceeded
        } else if ratio >= self.critical {
            WarningLevel::Critical
        } else if ratio >= self.warning {
            WarningLevel::Warning
        } else {
            WarningLevel::Safe
        }
    }
}

/// Why a check or a usage event was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Denial {
    NotInPlan,
    LimitExceeded,
    SpendCapReached,
    SubscriptionInactive,
}

impl Denial {
    pub fn as_str(self) -> &'static str {
        match self {
            Denial::NotInPlan => "not_in_plan",
            Denial::LimitExceeded => "limit_exceeded",
            Denial::SpendCapReached => "spend_cap_reached",
            Denial::SubscriptionInactive => "subscription_inactive",
        }
    }
}

/// One feature as a plan version grants it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entitlement {
    pub feature_type: FeatureType,
    pub aggregation: Aggregation,
    pub enabled: bool,
    /// `None` = unlimited.
    pub limit: Option<Decimal>,
    pub reset: Reset,
    pub overage: Option<Overage>,
}

/// The outcome of asking for `requested` more of a feature.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub allowed: bool,
    pub reason: Option<Denial>,
    pub remaining: Option<Decimal>,
    pub percent_used: Option<Decimal>,
    pub warning_level: WarningLevel,
    pub billed_so_far: Option<Decimal>,
    pub would_bill: Option<Decimal>,
}

impl Entitlement {
    /// The counter level after an event of `quantity` (a level for `max` aggregation).
    pub fn level_after(&self, used: Decimal, quantity: Decimal) -> Decimal {
        match self.aggregation {
            Aggregation::Sum => used.saturating_add(quantity),
            Aggregation::Max => used.max(quantity),
        }
    }

    /// The highest counter level an enforced event may leave behind (`None` = no ceiling).
    pub fn ceiling(&self) -> Option<Decimal> {
        let limit = self.limit?;
        match &self.overage {
            None => Some(limit),
            Some(overage) => overage.max_usage(limit),
        }
    }

    /// The refusal reason when the ceiling is passed.
    pub fn ceiling_denial(&self) -> Denial {
        if self.overage.is_some() {
            Denial::SpendCapReached
        } else {
            Denial::LimitExceeded
        }
    }

    /// Overage billed for a period's usage `used` (capped), if the entitlement has overage.
    pub fn overage_billed(&self, used: Decimal) -> Option<Decimal> {
        let overage = self.overage.as_ref()?;
        Some(match self.limit {
            Some(limit) => overage.billed(used, limit),
            None => Decimal::ZERO,
        })
    }

    pub fn remaining(&self, used: Decimal) -> Option<Decimal> {
        self.limit.map(|l| (l - used).max(Decimal::ZERO))
    }

    pub fn percent_used(&self, used: Decimal) -> Option<Decimal> {
        let limit = self.limit?;
        if limit <= Decimal::ZERO {
            return Some(Decimal::ONE_HUNDRED);
        }
        let ratio = used.checked_div(limit).unwrap_or(Decimal::MAX);
        Some(
            ratio
                .saturating_mul(Decimal::ONE_HUNDRED)
                .round_dp(2)
                .normalize(),
        )
    }

    /// Evaluates a request for `requested` more, given the current counter value `used`
    /// (active leases for concurrency features). Never changes anything.
    pub fn evaluate(
        &self,
        used: Decimal,
        requested: Decimal,
        thresholds: &Thresholds,
    ) -> Evaluation {
        let mut eval = Evaluation {
            allowed: true,
            reason: None,
            remaining: None,
            percent_used: None,
            warning_level: WarningLevel::Safe,
            billed_so_far: None,
            would_bill: None,
        };
        if !self.enabled {
            eval.allowed = false;
            eval.reason = Some(Denial::NotInPlan);
            return eval;
        }
        match self.feature_type {
            FeatureType::Boolean => {}
            FeatureType::Limit => {
                if let Some(limit) = self.limit {
                    if requested > limit {
                        eval.allowed = false;
                        eval.reason = Some(Denial::LimitExceeded);
                    }
                }
            }
            FeatureType::Metered | FeatureType::Concurrency => {
                let after = if self.feature_type == FeatureType::Concurrency {
                    used.saturating_add(requested)
                } else {
                    self.level_after(used, requested)
                };
                if let Some(ceiling) = self.ceiling() {
                    if after > ceiling {
                        eval.allowed = false;
                        eval.reason = Some(self.ceiling_denial());
                    }
                }
                eval.remaining = self.remaining(used);
                eval.percent_used = self.percent_used(used);
                eval.warning_level = thresholds.level(used, self.limit);
                if let Some(billed) = self.overage_billed(used) {
                    eval.billed_so_far = Some(billed);
                    let next = self.overage_billed(after).unwrap_or(billed);
                    eval.would_bill = Some(if eval.allowed {
                        next - billed
                    } else {
                        Decimal::ZERO
                    });
                }
            }
        }
        eval
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn metered(limit: Option<&str>, overage: Option<Overage>) -> Entitlement {
        Entitlement {
            feature_type: FeatureType::Metered,
            aggregation: Aggregation::Sum,
            enabled: true,
            limit: limit.map(d),
            reset: Reset::BillingPeriod,
            overage,
        }
    }

    #[test]
    fn spec_example_check() {
        let e = metered(
            Some("120"),
            Some(Overage {
                unit_amount: d("0.10"),
                per_units: d("1"),
                cap_amount: Some(d("20.00")),
            }),
        );
        let ev = e.evaluate(d("100"), d("30"), &Thresholds::default());
        assert!(ev.allowed);
        assert_eq!(ev.remaining, Some(d("20")));
        assert_eq!(ev.percent_used, Some(d("83.33")));
        assert_eq!(ev.warning_level, WarningLevel::Warning);
        assert_eq!(ev.billed_so_far, Some(d("0")));
        assert_eq!(ev.would_bill, Some(d("1.00")));
    }

    #[test]
    fn seed_000_lifestyle_cap() {
        // 120 minutes, $0.10/min, capped at $20: usage up to 320 minutes is accepted.
        let e = metered(
            Some("120"),
            Some(Overage {
                unit_amount: d("0.10"),
                per_units: d("1"),
                cap_amount: Some(d("20")),
            }),
        );
        assert_eq!(e.ceiling(), Some(d("320")));
        assert!(e.evaluate(d("319"), d("1"), &Thresholds::default()).allowed);
        let refused = e.evaluate(d("320"), d("1"), &Thresholds::default());
        assert_eq!(refused.reason, Some(Denial::SpendCapReached));
        assert_eq!(e.overage_billed(d("350")), Some(d("20")));
    }

    #[test]
    fn packages_round_up() {
        let o = Overage {
            unit_amount: d("5"),
            per_units: d("100"),
            cap_amount: None,
        };
        assert_eq!(o.charge(d("1000"), d("1000")), d("0"));
        assert_eq!(o.charge(d("1001"), d("1000")), d("5"));
        assert_eq!(o.charge(d("1100"), d("1000")), d("5"));
        assert_eq!(o.charge(d("1100.5"), d("1000")), d("10"));
    }

    #[test]
    fn hard_limit_and_levels() {
        let e = metered(Some("5"), None);
        let t = Thresholds::default();
        assert!(e.evaluate(d("4"), d("1"), &t).allowed);
        let ev = e.evaluate(d("5"), d("1"), &t);
        assert_eq!(ev.reason, Some(Denial::LimitExceeded));
        assert_eq!(ev.warning_level, WarningLevel::Exceeded);
        assert!(ev.overage_none());
        assert_eq!(t.level(d("3.99"), Some(d("5"))), WarningLevel::Safe);
        assert_eq!(t.level(d("4"), Some(d("5"))), WarningLevel::Warning);
        assert_eq!(t.level(d("4.75"), Some(d("5"))), WarningLevel::Critical);
        assert_eq!(t.level(d("1"), None), WarningLevel::Safe);
    }

    impl Evaluation {
        fn overage_none(&self) -> bool {
            self.billed_so_far.is_none() && self.would_bill.is_none()
        }
    }

    #[test]
    fn max_aggregation_uses_levels() {
        let mut e = metered(Some("5"), None);
        e.aggregation = Aggregation::Max;
        assert_eq!(e.level_after(d("4"), d("3")), d("4"));
        assert!(e.evaluate(d("4"), d("5"), &Thresholds::default()).allowed);
        assert!(!e.evaluate(d("4"), d("6"), &Thresholds::default()).allowed);
    }

    #[test]
    fn extreme_values_never_panic() {
        let e = metered(
            Some("0.000000000001"),
            Some(Overage {
                unit_amount: d("0.000000000001"),
                per_units: d("0.000000000001"),
                cap_amount: Some(Decimal::MAX),
            }),
        );
        let ev = e.evaluate(Decimal::MAX, Decimal::MAX, &Thresholds::default());
        assert_eq!(ev.warning_level, WarningLevel::Exceeded);
        let _ = e.ceiling();
        let _ = e.overage_billed(Decimal::MAX);
    }

    proptest! {
        #[test]
        fn ceiling_matches_cap(
            limit in 0u32..1000, unit_cents in 1u32..500, per in 1u32..50,
            cap_cents in 0u32..10_000, used in 0u32..5000,
        ) {
            let o = Overage {
                unit_amount: Decimal::new(unit_cents as i64, 2),
                per_units: Decimal::from(per),
                cap_amount: Some(Decimal::new(cap_cents as i64, 2)),
            };
            let limit = Decimal::from(limit);
            let used = Decimal::from(used);
            let ceiling = o.max_usage(limit).unwrap();
            prop_assert_eq!(used <= ceiling, o.charge(used, limit) <= o.cap_amount.unwrap());
            prop_assert!(o.billed(used, limit) <= o.cap_amount.unwrap());
        }
    }
}
