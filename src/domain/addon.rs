//! Add-ons (SPEC §15): what a tenant sells beside its plans. Their input, validation and
//! normalized definition (versioned like a plan's); the add-ons attached to a subscription;
//! how their entitlements stack on the plan's; and the lines they bill.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::entitlement::{Entitlement, FeatureType};
use super::invoice::{prorate, Line, LineType};
use super::money;
use super::period::Interval;
use super::plan::{normalize_entitlements, EntitlementDef, EntitlementInput, PlanError};
use super::plan::{PlanFeature, PlanVersion};
use super::qty::{max_quantity, Qty};

/// What an add-on's price is charged for: each month or year of the subscription, or once.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AddonInterval {
    Month,
    Year,
    OneTime,
}

impl From<Interval> for AddonInterval {
    fn from(i: Interval) -> Self {
        match i {
            Interval::Month => AddonInterval::Month,
            Interval::Year => AddonInterval::Year,
        }
    }
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddonPriceInput {
    pub interval: AddonInterval,
    #[schema(value_type = String, example = "2000.00")]
    pub amount: Decimal,
    pub currency: String,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddonInput {
    /// Required on `POST`; on `PUT` it may be omitted but must match the path.
    pub key: Option<String>,
    pub name: String,
    pub prices: Vec<AddonPriceInput>,
    /// In the plan entitlement shape (SPEC §4); they stack on the plan's.
    #[serde(default)]
    pub entitlements: Vec<EntitlementInput>,
}

/// A price of an add-on version.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AddonPrice {
    pub interval: AddonInterval,
    pub amount: Decimal,
    pub currency: String,
}

/// The normalized definition stored with each version and compared for idempotent applies.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AddonDefinition {
    pub name: String,
    /// Sorted by interval; at most one per interval.
    pub prices: Vec<AddonPrice>,
    /// Sorted by feature key.
    pub entitlements: Vec<EntitlementDef>,
}

fn bad(code: &'static str, param: String, message: String) -> PlanError {
    PlanError {
        code,
        param,
        message,
    }
}

/// Validates an add-on and normalizes it into the definition stored with its version.
/// `feature_type` gives the type of each of the tenant's features (`None`: no such feature).
pub fn normalize(
    input: &AddonInput,
    feature_type: impl Fn(&str) -> Option<FeatureType>,
) -> Result<AddonDefinition, PlanError> {
    let name = input.name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(bad(
            "invalid_name",
            "name".into(),
            "name must be 1 to 200 characters.".into(),
        ));
    }
    if input.prices.is_empty() {
        return Err(bad(
            "invalid_price",
            "prices".into(),
            "An add-on has at least one price (month, year or one_time).".into(),
        ));
    }
    let mut prices: Vec<AddonPrice> = Vec::new();
    for (i, p) in input.prices.iter().enumerate() {
        let currency = p.currency.to_ascii_lowercase();
        if !money::is_valid_currency(&currency) {
            return Err(bad(
                "invalid_currency",
                format!("prices[{i}].currency"),
                "currency must be a three-letter ISO code.".into(),
            ));
        }
        if p.amount.is_sign_negative()
            || p.amount > max_quantity()
            || p.amount.normalize().scale() > money::minor_unit_scale(&currency)
        {
            return Err(bad(
                "invalid_amount",
                format!("prices[{i}].amount"),
                "amount must be non-negative with at most the currency's minor-unit precision."
                    .into(),
            ));
        }
        if prices.iter().any(|q| q.interval == p.interval) {
            return Err(bad(
                "duplicate_price",
                format!("prices[{i}].interval"),
                "An add-on has at most one price per interval.".into(),
            ));
        }
        prices.push(AddonPrice {
            interval: p.interval,
            amount: money::round_to_minor(p.amount, &currency),
            currency,
        });
    }
    prices.sort_by_key(|p| p.interval);
    let entitlements = normalize_entitlements(&input.entitlements, feature_type)?;
    Ok(AddonDefinition {
        name: name.to_string(),
        prices,
        entitlements,
    })
}

/// An add-on version as stored: immutable once written.
#[derive(Debug, Clone)]
pub struct AddonVersion {
    pub key: String,
    pub version: i32,
    pub name: String,
    pub prices: Vec<AddonPrice>,
    /// Sorted by feature key.
    pub features: Vec<PlanFeature>,
    pub created_at: DateTime<Utc>,
}

/// How an add-on is charged on a subscription of a given interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Billing<'a> {
    /// Each period, in advance.
    Recurring(&'a AddonPrice),
    /// Once, at attach; not kept on the subscription.
    OneTime(&'a AddonPrice),
}

impl AddonVersion {
    /// How this add-on is charged on a subscription billed each `interval`: its price for that
    /// interval, else its one-time price; `None` (`addon_interval_mismatch`) if it has neither.
    pub fn billing(&self, interval: Interval) -> Option<Billing<'_>> {
        let find = |i: AddonInterval| self.prices.iter().find(|p| p.interval == i);
        find(interval.into())
            .map(Billing::Recurring)
            .or_else(|| find(AddonInterval::OneTime).map(Billing::OneTime))
    }

    /// Its recurring price for `interval`, if it has one.
    pub fn recurring(&self, interval: Interval) -> Option<&AddonPrice> {
        match self.billing(interval) {
            Some(Billing::Recurring(p)) => Some(p),
            _ => None,
        }
    }
}

/// An add-on attached to a subscription, as the subscription row stores it (SPEC §15).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Attached {
    pub addon: String,
    pub version: i32,
    pub quantity: i64,
    /// Set when it is removed at the period end: it counts until then.
    pub removes_at: Option<DateTime<Utc>>,
}

/// The most of one add-on a subscription may hold.
pub const MAX_QUANTITY: i64 = 1_000_000;

/// An add-on quantity as asked for: a whole number from 1 to [`MAX_QUANTITY`] (default 1).
pub fn quantity(q: Option<Qty>) -> Result<i64, PlanError> {
    let q = q.map_or(Decimal::ONE, |q| q.0);
    let whole = q.fract().is_zero() && q >= Decimal::ONE && q <= Decimal::from(MAX_QUANTITY);
    match whole.then(|| i64::try_from(q).ok()).flatten() {
        Some(n) => Ok(n),
        None => Err(bad(
            "invalid_quantity",
            "quantity".into(),
            format!("quantity must be a whole number from 1 to {MAX_QUANTITY}."),
        )),
    }
}

/// Combines two entitlements of one feature (SPEC §15): counted features (`metered`,
/// `concurrency`) add their limits, `limit` features take the highest, and any unlimited one
/// makes the whole unlimited; a `boolean` is granted if either grants it. The first's reset
/// and overage stay. A disabled entitlement grants nothing.
fn combine(base: &Entitlement, add: &Entitlement, times: i64) -> Entitlement {
    if !add.enabled {
        return base.clone();
    }
    if !base.enabled {
        return scaled(add, times);
    }
    let limit = match (base.limit, add.limit) {
        (None, _) | (_, None) => None,
        (Some(a), Some(b)) => Some(match base.feature_type {
            FeatureType::Limit => a.max(b),
            _ => a.saturating_add(b.saturating_mul(Decimal::from(times))),
        }),
    };
    Entitlement {
        limit,
        // Unlimited: nothing to go over.
        overage: base.overage.clone().filter(|_| limit.is_some()),
        ..base.clone()
    }
}

/// An add-on's entitlement for `times` units of it: a counted limit times the quantity (a
/// `limit` feature's value is not multiplied).
fn scaled(add: &Entitlement, times: i64) -> Entitlement {
    let mut e = add.clone();
    if e.feature_type != FeatureType::Limit {
        e.limit = e.limit.map(|l| l.saturating_mul(Decimal::from(times)));
    }
    e
}

/// The entitlements of a plan with add-ons attached (each with its quantity): the plan's,
/// each stacked with the add-ons' of the same feature, and the features only an add-on
/// grants (with that add-on's reset and overage). Prices are the plan's.
pub fn stack(plan: &PlanVersion, addons: &[(&AddonVersion, i64)]) -> PlanVersion {
    let mut features = plan.features.clone();
    for (addon, quantity) in addons {
        for f in &addon.features {
            match features.binary_search_by(|x| x.feature.cmp(&f.feature)) {
                Ok(i) => {
                    let combined = combine(&features[i].entitlement, &f.entitlement, *quantity);
                    features[i].entitlement = combined;
                }
                Err(i) => features.insert(
                    i,
                    PlanFeature {
                        entitlement: scaled(&f.entitlement, *quantity),
                        ..f.clone()
                    },
                ),
            }
        }
    }
    PlanVersion {
        features,
        ..plan.clone()
    }
}

fn cadence(interval: AddonInterval) -> &'static str {
    match interval {
        AddonInterval::Month => "monthly",
        AddonInterval::Year => "yearly",
        AddonInterval::OneTime => "one-time",
    }
}

/// The `addon` line billing `quantity` of an add-on in full: one period in advance, or its
/// one-time price.
pub fn full_line(
    name: &str,
    price: &AddonPrice,
    quantity: i64,
    (start, end): (DateTime<Utc>, DateTime<Utc>),
) -> Line {
    let unit = price.amount;
    Line {
        kind: LineType::Addon,
        description: format!("{name} × {quantity} ({})", cadence(price.interval)),
        feature: None,
        quantity: Decimal::from(quantity),
        unit_amount: unit,
        amount: money::round_to_minor(unit * Decimal::from(quantity), &price.currency),
        period_start: start,
        period_end: end,
    }
}

/// The `addon` line of a change of `delta` units of a recurring add-on at `at`, for the rest
/// of the period `[start, end)`: `delta × amount × remaining / length`, rounded once
/// (negative: a credit).
pub fn prorated_line(
    name: &str,
    price: &AddonPrice,
    delta: i64,
    (start, end): (DateTime<Utc>, DateTime<Utc>),
    at: DateTime<Utc>,
) -> Line {
    let amount = money::round_to_minor(
        prorate(price.amount * Decimal::from(delta), start, end, at),
        &price.currency,
    );
    let when = at.format("%Y-%m-%d %H:%M:%S UTC");
    let description = if delta >= 0 {
        format!("{name} × {delta} (remaining time after {when})")
    } else {
        format!("Unused time on {name} × {} after {when}", -delta)
    };
    Line {
        kind: LineType::Addon,
        description,
        feature: None,
        quantity: Decimal::from(delta),
        // What one unit of the change came to (the amount is rounded once, as a whole).
        unit_amount: money::round_to_minor(amount / Decimal::from(delta), &price.currency),
        amount,
        period_start: at,
        period_end: end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::entitlement::Aggregation;
    use crate::domain::period::Reset;
    use chrono::TimeZone;
    use rust_decimal_macros::dec;

    fn ent(t: FeatureType, limit: Option<Decimal>) -> Entitlement {
        Entitlement {
            feature_type: t,
            aggregation: Aggregation::Sum,
            enabled: true,
            limit,
            reset: Reset::BillingPeriod,
            overage: None,
        }
    }

    fn feature(key: &str, e: Entitlement) -> PlanFeature {
        PlanFeature {
            feature: key.into(),
            entitlement: e,
            stripe_meter_event_name: None,
        }
    }

    fn plan(features: Vec<PlanFeature>) -> PlanVersion {
        PlanVersion {
            key: "pro".into(),
            version: 1,
            name: "Pro".into(),
            trial_days: 0,
            retention_days: None,
            prices: vec![],
            features,
            definition: serde_json::json!({}),
            created_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        }
    }

    fn addon(key: &str, features: Vec<PlanFeature>) -> AddonVersion {
        AddonVersion {
            key: key.into(),
            version: 1,
            name: key.into(),
            prices: vec![],
            features,
            created_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        }
    }

    #[test]
    fn entitlements_stack_by_feature_type() {
        let p = plan(vec![
            feature("calls", ent(FeatureType::Metered, Some(dec!(50)))),
            feature("files", ent(FeatureType::Limit, Some(dec!(50)))),
            feature("jobs", ent(FeatureType::Concurrency, Some(dec!(1)))),
            feature("sso", ent(FeatureType::Boolean, None)),
        ]);
        let a = addon(
            "extra",
            vec![
                feature("analytics", ent(FeatureType::Boolean, None)),
                feature("calls", ent(FeatureType::Metered, Some(dec!(25)))),
                feature("files", ent(FeatureType::Limit, Some(dec!(200)))),
                feature("jobs", ent(FeatureType::Concurrency, Some(dec!(2)))),
                feature("tokens", ent(FeatureType::Metered, Some(dec!(10)))),
            ],
        );
        let s = stack(&p, &[(&a, 2)]);
        let limit = |f: &str| s.entitlement(f).unwrap().limit;
        // 50 + 25 × 2; the highest of 50 and 200; 1 + 2 × 2; 10 × 2 (only the add-on's).
        assert_eq!(limit("calls"), Some(dec!(100)));
        assert_eq!(limit("files"), Some(dec!(200)));
        assert_eq!(limit("jobs"), Some(dec!(5)));
        assert_eq!(limit("tokens"), Some(dec!(20)));
        assert!(s.entitlement("analytics").unwrap().enabled);
        assert!(s.entitlement("sso").unwrap().enabled);
        // Still sorted, so lookups by binary search work.
        let keys: Vec<&str> = s.features.iter().map(|f| f.feature.as_str()).collect();
        assert_eq!(
            keys,
            ["analytics", "calls", "files", "jobs", "sso", "tokens"]
        );
    }

    #[test]
    fn an_unlimited_one_makes_the_whole_unlimited_and_a_disabled_one_grants_nothing() {
        let p = plan(vec![
            feature("calls", ent(FeatureType::Metered, Some(dec!(50)))),
            feature(
                "sso",
                Entitlement {
                    enabled: false,
                    ..ent(FeatureType::Boolean, None)
                },
            ),
        ]);
        let unlimited = addon(
            "u",
            vec![
                feature("calls", ent(FeatureType::Metered, None)),
                feature("sso", ent(FeatureType::Boolean, None)),
            ],
        );
        let s = stack(&p, &[(&unlimited, 1)]);
        assert_eq!(s.entitlement("calls").unwrap().limit, None);
        assert!(s.entitlement("sso").unwrap().enabled);
        let off = addon(
            "off",
            vec![feature(
                "calls",
                Entitlement {
                    enabled: false,
                    ..ent(FeatureType::Metered, Some(dec!(1000)))
                },
            )],
        );
        let s = stack(&p, &[(&off, 3)]);
        assert_eq!(s.entitlement("calls").unwrap().limit, Some(dec!(50)));
    }

    #[test]
    fn quantities_are_whole_numbers_from_one() {
        assert_eq!(quantity(None), Ok(1));
        assert_eq!(quantity(Some(Qty(dec!(3)))), Ok(3));
        assert_eq!(quantity(Some(Qty(dec!(3.0)))), Ok(3));
        for bad in [dec!(0), dec!(1.5), dec!(-1), dec!(1000001)] {
            assert_eq!(
                quantity(Some(Qty(bad))).unwrap_err().code,
                "invalid_quantity"
            );
        }
    }

    #[test]
    fn a_change_is_prorated_to_the_second_and_rounded_once() {
        let price = AddonPrice {
            interval: AddonInterval::Month,
            amount: dec!(2000),
            currency: "usd".into(),
        };
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let end = Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap();
        // 10 days and 1 second of 31 days left: 2 × 2000 × 864001 / 2678400 = 1290.3241...
        let at = Utc.with_ymd_and_hms(2026, 1, 21, 23, 59, 59).unwrap();
        let line = prorated_line("Analytics", &price, 2, (start, end), at);
        assert_eq!(line.amount, dec!(1290.32));
        assert_eq!(line.quantity, dec!(2));
        let credit = prorated_line("Analytics", &price, -1, (start, end), at);
        // −2000 × 864001 / 2678400 = −645.1620...
        assert_eq!(credit.amount, dec!(-645.16));
        let full = full_line("Analytics", &price, 3, (start, end));
        assert_eq!(full.amount, dec!(6000));
    }
}
