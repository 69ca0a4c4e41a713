//! Plans as tenants write them: the input, its validation and the normalized definition
//! stored with each version (and compared, so that applying the same plan twice writes
//! nothing).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::entitlement::{Denial, Entitlement, FeatureType};
use super::money;
use super::period::{Interval, Reset};
use super::qty::{max_quantity, validate_quantity, Qty};
use super::seats::{self, SeatPricing, Tier, TiersMode};

/// Why a plan is refused: a stable code, the field it is about and a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{param}: {message}")]
pub struct PlanError {
    pub code: &'static str,
    pub param: String,
    pub message: String,
}

fn bad(code: &'static str, param: String, message: String) -> PlanError {
    PlanError {
        code,
        param,
        message,
    }
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceInput {
    pub interval: Interval,
    /// The price per interval, or per seat when `per_seat`. Omitted when `tiers` are given.
    #[schema(value_type = Option<String>, example = "29.00")]
    pub amount: Option<Decimal>,
    pub currency: String,
    /// Charges per seat: the customer's member count, at least `min_seats`. A plan may have,
    /// per interval, one flat price and one per-seat price.
    pub per_seat: Option<bool>,
    /// Per-seat prices: the fewest seats billed (default 1).
    pub min_seats: Option<i32>,
    /// Per-seat prices: tiers instead of `amount`, `up_to` ascending and inclusive, the last
    /// one `null`.
    pub tiers: Option<Vec<TierInput>>,
    /// With `tiers`: `volume` (every seat at the price of the tier the count falls in) or
    /// `graduated` (each tier's seats at that tier's price).
    pub tiers_mode: Option<TiersMode>,
    pub stripe_price_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TierInput {
    /// The last seat of the tier (inclusive); `null` for the last tier.
    pub up_to: Option<i64>,
    #[schema(value_type = String, example = "50.00")]
    pub unit_amount: Decimal,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OverageInput {
    #[schema(value_type = String, example = "0.10")]
    pub unit_amount: Decimal,
    pub per_units: Option<Qty>,
    #[schema(value_type = Option<String>, example = "20.00")]
    pub cap_amount: Option<Decimal>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EntitlementInput {
    pub feature: String,
    pub enabled: Option<bool>,
    /// `null` or `-1` = unlimited.
    pub limit: Option<Qty>,
    pub reset: Option<Reset>,
    pub overage: Option<OverageInput>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanInput {
    /// Required on `POST`; on `PUT` it may be omitted but must match the path.
    pub key: Option<String>,
    pub name: String,
    /// Makes this plan the tenant's default (new customers are subscribed to it).
    pub default: Option<bool>,
    #[serde(default)]
    pub prices: Vec<PriceInput>,
    pub trial_days: Option<i32>,
    pub retention_days: Option<i32>,
    #[serde(default)]
    pub entitlements: Vec<EntitlementInput>,
}

/// The normalized definition stored with each version and compared for idempotent applies.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Definition {
    pub name: String,
    pub trial_days: i32,
    pub retention_days: Option<i32>,
    pub prices: Vec<PriceDef>,
    pub entitlements: Vec<EntitlementDef>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PriceDef {
    pub interval: Interval,
    /// `None` for a tiered price.
    pub amount: Option<Decimal>,
    pub currency: String,
    pub per_seat: bool,
    #[serde(default = "one_seat")]
    pub min_seats: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiers: Option<Vec<Tier>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiers_mode: Option<TiersMode>,
    pub stripe_price_id: Option<String>,
}

fn one_seat() -> i32 {
    1
}

impl PriceDef {
    /// The price this definition describes.
    pub fn price(&self) -> Price {
        let min_seats = i64::from(self.min_seats);
        let charge = match (&self.tiers, self.tiers_mode) {
            (Some(tiers), Some(mode)) => Charge::Seats {
                pricing: SeatPricing::Tiered {
                    mode,
                    tiers: tiers.clone(),
                },
                min_seats,
            },
            _ => {
                let amount = self.amount.unwrap_or_default();
                if self.per_seat {
                    Charge::Seats {
                        pricing: SeatPricing::PerSeat(amount),
                        min_seats,
                    }
                } else {
                    Charge::Flat(amount)
                }
            }
        };
        Price {
            interval: self.interval,
            charge,
            currency: self.currency.clone(),
            stripe_price_id: self.stripe_price_id.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EntitlementDef {
    pub feature: String,
    pub enabled: bool,
    pub limit: Option<Decimal>,
    pub reset: Reset,
    pub overage: Option<OverageDef>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OverageDef {
    pub unit_amount: Decimal,
    pub per_units: Decimal,
    pub cap_amount: Option<Decimal>,
}

/// Validates a plan and normalizes it into the definition stored with its version.
/// `feature_type` gives the type of each of the tenant's features (`None`: no such feature).
pub fn normalize(
    input: &PlanInput,
    feature_type: impl Fn(&str) -> Option<FeatureType>,
) -> Result<Definition, PlanError> {
    let name = input.name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(bad(
            "invalid_name",
            "name".into(),
            "name must be 1 to 200 characters.".into(),
        ));
    }
    let trial_days = input.trial_days.unwrap_or(0);
    if !(0..=730).contains(&trial_days) {
        return Err(bad(
            "invalid_trial_days",
            "trial_days".into(),
            "trial_days must be between 0 and 730.".into(),
        ));
    }
    if let Some(r) = input.retention_days {
        if r < 1 {
            return Err(bad(
                "invalid_retention",
                "retention_days".into(),
                "retention_days must be at least 1 (null keeps events forever).".into(),
            ));
        }
    }
    let prices = normalize_prices(&input.prices)?;
    let entitlements = normalize_entitlements(&input.entitlements, feature_type)?;
    Ok(Definition {
        name: name.to_string(),
        trial_days,
        retention_days: input.retention_days,
        prices,
        entitlements,
    })
}

/// Validates a plan's prices (or a subscription's negotiated ones, SPEC §15) and normalizes
/// them, sorted by interval, flat before per-seat.
pub fn normalize_prices(input: &[PriceInput]) -> Result<Vec<PriceDef>, PlanError> {
    let mut prices = Vec::new();
    for (i, p) in input.iter().enumerate() {
        let currency = p.currency.to_ascii_lowercase();
        if !money::is_valid_currency(&currency) {
            return Err(bad(
                "invalid_currency",
                format!("prices[{i}].currency"),
                "currency must be a three-letter ISO code.".into(),
            ));
        }
        let per_seat = p.per_seat.unwrap_or(false);
        let amount_ok = |a: Decimal| {
            !a.is_sign_negative()
                && a <= max_quantity()
                && a.normalize().scale() <= money::minor_unit_scale(&currency)
        };
        let (amount, tiers, tiers_mode) = match (p.amount, &p.tiers) {
            (Some(amount), None) => {
                if !amount_ok(amount) {
                    return Err(bad(
                        "invalid_amount",
                        format!("prices[{i}].amount"),
                        "amount must be non-negative with at most the currency's minor-unit \
                         precision."
                            .into(),
                    ));
                }
                if p.tiers_mode.is_some() {
                    return Err(bad(
                        "invalid_price",
                        format!("prices[{i}].tiers_mode"),
                        "tiers_mode goes with tiers.".into(),
                    ));
                }
                (Some(money::round_to_minor(amount, &currency)), None, None)
            }
            (None, Some(tiers)) => {
                if !per_seat {
                    return Err(bad(
                        "invalid_price",
                        format!("prices[{i}].tiers"),
                        "Only a per-seat price (per_seat: true) may have tiers.".into(),
                    ));
                }
                let Some(mode) = p.tiers_mode else {
                    return Err(bad(
                        "invalid_price",
                        format!("prices[{i}].tiers_mode"),
                        "tiers need tiers_mode: volume or graduated.".into(),
                    ));
                };
                let tiers: Vec<Tier> = tiers
                    .iter()
                    .map(|t| Tier {
                        up_to: t.up_to,
                        unit_amount: t.unit_amount,
                    })
                    .collect();
                if let Err(e) = seats::check_tiers(&tiers) {
                    return Err(bad(
                        "invalid_tiers",
                        format!("prices[{i}].tiers[{}]", e.index),
                        format!("Invalid tiers: {}.", e.message),
                    ));
                }
                if let Some(j) = tiers.iter().position(|t| {
                    !amount_ok(t.unit_amount) || t.up_to.is_some_and(|u| u > MAX_SEATS)
                }) {
                    return Err(bad(
                        "invalid_tiers",
                        format!("prices[{i}].tiers[{j}]"),
                        format!(
                            "unit_amount must be non-negative with at most the currency's \
                             minor-unit precision, and up_to at most {MAX_SEATS}."
                        ),
                    ));
                }
                let tiers = tiers
                    .into_iter()
                    .map(|t| Tier {
                        up_to: t.up_to,
                        unit_amount: money::round_to_minor(t.unit_amount, &currency),
                    })
                    .collect();
                (None, Some(tiers), Some(mode))
            }
            (Some(_), Some(_)) | (None, None) => {
                return Err(bad(
                    "invalid_price",
                    format!("prices[{i}].amount"),
                    "A price has an amount or (per seat) tiers: exactly one of them.".into(),
                ));
            }
        };
        let min_seats = match p.min_seats {
            None => 1,
            Some(_) if !per_seat => {
                return Err(bad(
                    "invalid_price",
                    format!("prices[{i}].min_seats"),
                    "Only a per-seat price has min_seats.".into(),
                ));
            }
            Some(m) if !(0..=MAX_SEATS).contains(&i64::from(m)) => {
                return Err(bad(
                    "invalid_price",
                    format!("prices[{i}].min_seats"),
                    format!("min_seats must be between 0 and {MAX_SEATS}."),
                ));
            }
            Some(m) => m,
        };
        if prices
            .iter()
            .any(|q: &PriceDef| q.interval == p.interval && q.per_seat == per_seat)
        {
            return Err(bad(
                "duplicate_price",
                format!("prices[{i}].interval"),
                "A plan has at most one flat and one per-seat price per interval.".into(),
            ));
        }
        if prices
            .iter()
            .any(|q: &PriceDef| q.interval == p.interval && q.currency != currency)
        {
            return Err(bad(
                "invalid_currency",
                format!("prices[{i}].currency"),
                "The prices of one interval share a currency.".into(),
            ));
        }
        prices.push(PriceDef {
            interval: p.interval,
            amount,
            currency,
            per_seat,
            min_seats,
            tiers,
            tiers_mode,
            stripe_price_id: p.stripe_price_id.clone(),
        });
    }
    prices.sort_by_key(|p| (p.interval.as_str(), p.per_seat));
    Ok(prices)
}

/// Validates a plan's (or an add-on's) entitlements and normalizes them, sorted by feature.
pub fn normalize_entitlements(
    input: &[EntitlementInput],
    feature_type: impl Fn(&str) -> Option<FeatureType>,
) -> Result<Vec<EntitlementDef>, PlanError> {
    let mut entitlements: Vec<EntitlementDef> = Vec::new();
    for (i, e) in input.iter().enumerate() {
        let at = |field: &str| format!("entitlements[{i}].{field}");
        let ftype = feature_type(&e.feature).ok_or_else(|| {
            bad(
                "feature_not_found",
                at("feature"),
                format!("No feature with key `{}`; create it first.", e.feature),
            )
        })?;
        if entitlements.iter().any(|x| x.feature == e.feature) {
            return Err(bad(
                "duplicate_entitlement",
                at("feature"),
                format!("Feature `{}` is listed twice.", e.feature),
            ));
        }
        let limit = match e.limit {
            None => None,
            Some(Qty(l)) if l == Decimal::NEGATIVE_ONE => None,
            Some(Qty(l)) if l.is_sign_negative() => {
                return Err(bad(
                    "invalid_limit",
                    at("limit"),
                    "limit must be non-negative, or -1/null for unlimited.".into(),
                ));
            }
            Some(Qty(l)) => Some(
                validate_quantity(l)
                    .map_err(|err| bad("invalid_quantity", at("limit"), err.to_string()))?,
            ),
        };
        if ftype == FeatureType::Boolean && e.limit.is_some() {
            return Err(bad(
                "invalid_entitlement",
                at("limit"),
                "Boolean features have no limit.".into(),
            ));
        }
        if ftype != FeatureType::Metered && e.reset.is_some() {
            return Err(bad(
                "invalid_entitlement",
                at("reset"),
                "Only metered features reset.".into(),
            ));
        }
        let overage = match &e.overage {
            None => None,
            Some(o) => {
                if ftype != FeatureType::Metered {
                    return Err(bad(
                        "invalid_entitlement",
                        at("overage"),
                        "Only metered features have overage.".into(),
                    ));
                }
                if limit.is_none() {
                    return Err(bad(
                        "invalid_entitlement",
                        at("overage"),
                        "Overage needs a limit to go over.".into(),
                    ));
                }
                let per_units = o.per_units.map(|q| q.0).unwrap_or(Decimal::ONE);
                let too_big = |d: Decimal| d > max_quantity();
                if too_big(per_units) || too_big(o.unit_amount) || o.cap_amount.is_some_and(too_big)
                {
                    return Err(bad(
                        "invalid_overage",
                        at("overage"),
                        "Overage amounts and per_units may be at most 10^15.".into(),
                    ));
                }
                if o.unit_amount.is_sign_negative()
                    || per_units <= Decimal::ZERO
                    || o.cap_amount.is_some_and(|c| c.is_sign_negative())
                {
                    return Err(bad(
                        "invalid_overage",
                        at("overage"),
                        "unit_amount and cap_amount must be non-negative and per_units positive."
                            .into(),
                    ));
                }
                Some(OverageDef {
                    unit_amount: o.unit_amount.normalize(),
                    per_units: per_units.normalize(),
                    cap_amount: o.cap_amount.map(|c| c.normalize()),
                })
            }
        };
        entitlements.push(EntitlementDef {
            feature: e.feature.clone(),
            enabled: e.enabled.unwrap_or(true),
            limit,
            reset: e.reset.unwrap_or(Reset::BillingPeriod),
            overage,
        });
    }
    entitlements.sort_by(|a, b| a.feature.cmp(&b.feature));
    Ok(entitlements)
}

/// The most seats a price counts (tier bounds, `min_seats`).
pub const MAX_SEATS: i64 = 1_000_000;

/// What a price charges per interval.
#[derive(Debug, Clone, PartialEq)]
pub enum Charge {
    /// A fixed amount.
    Flat(Decimal),
    /// Per seat: the member count, at least `min_seats`.
    Seats {
        pricing: SeatPricing,
        min_seats: i64,
    },
}

/// A price of a plan version as stored: immutable once written.
#[derive(Debug, Clone)]
pub struct Price {
    pub interval: Interval,
    pub charge: Charge,
    pub currency: String,
    pub stripe_price_id: Option<String>,
}

impl Price {
    pub fn per_seat(&self) -> bool {
        matches!(self.charge, Charge::Seats { .. })
    }

    /// The charge for one interval with `members` members (a flat price ignores them).
    pub fn amount_for(&self, members: i64) -> Decimal {
        match &self.charge {
            Charge::Flat(amount) => *amount,
            Charge::Seats { pricing, min_seats } => seats::total(
                pricing,
                seats::billable_seats(members, *min_seats),
                &self.currency,
            ),
        }
    }
}

#[derive(Debug, Clone)]
pub struct PlanFeature {
    pub feature: String,
    pub entitlement: Entitlement,
    /// The Stripe Billing Meter its usage is reported to (features are immutable).
    pub stripe_meter_event_name: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PlanVersion {
    pub key: String,
    pub version: i32,
    pub name: String,
    pub trial_days: i32,
    pub retention_days: Option<i32>,
    pub prices: Vec<Price>,
    /// Sorted by feature key.
    pub features: Vec<PlanFeature>,
    pub definition: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

impl PlanVersion {
    pub fn entitlement(&self, feature: &str) -> Option<&Entitlement> {
        self.features
            .binary_search_by(|f| f.feature.as_str().cmp(feature))
            .ok()
            .map(|i| &self.features[i].entitlement)
    }

    /// The Stripe meter event name of a feature of the plan, if it is reported to Stripe.
    pub fn meter_event(&self, feature: &str) -> Option<&str> {
        self.features
            .binary_search_by(|f| f.feature.as_str().cmp(feature))
            .ok()
            .and_then(|i| self.features[i].stripe_meter_event_name.as_deref())
    }

    /// The prices of an interval: at most one flat and one per-seat.
    pub fn prices_of(&self, interval: Interval) -> impl Iterator<Item = &Price> {
        self.prices.iter().filter(move |p| p.interval == interval)
    }

    pub fn has_price(&self, interval: Interval) -> bool {
        self.prices_of(interval).next().is_some()
    }

    /// The interval's per-seat price, if it has one.
    pub fn seat_price(&self, interval: Interval) -> Option<&Price> {
        self.prices_of(interval).find(|p| p.per_seat())
    }

    /// What one interval costs with `members` members: the flat price plus the seat charge.
    pub fn base_amount(&self, interval: Interval, members: i64) -> Decimal {
        self.prices_of(interval)
            .map(|p| p.amount_for(members))
            .fold(Decimal::ZERO, |a, b| a + b)
    }

    /// The currency of the plan's prices (usd for a plan without prices).
    pub fn currency(&self) -> &str {
        self.prices
            .first()
            .map(|p| p.currency.as_str())
            .unwrap_or("usd")
    }

    /// This version with its prices of `interval` replaced by negotiated ones (SPEC §15).
    pub fn with_prices(&self, interval: Interval, overrides: &[PriceDef]) -> PlanVersion {
        let mut prices: Vec<Price> = self
            .prices
            .iter()
            .filter(|p| p.interval != interval)
            .cloned()
            .collect();
        prices.extend(overrides.iter().map(PriceDef::price));
        prices.sort_by_key(|p| (p.interval.as_str(), p.per_seat()));
        PlanVersion {
            prices,
            ..self.clone()
        }
    }

    /// The interval a new subscription gets when none is asked for.
    pub fn default_interval(&self) -> Interval {
        if self.prices.is_empty() || self.has_price(Interval::Month) {
            Interval::Month
        } else {
            Interval::Year
        }
    }
}

/// The gate every use of a feature passes before any quantity is weighed: a customer with no
/// plan (no live subscription and no default plan) is `subscription_inactive`; a feature the
/// plan does not list is `not_in_plan`. Checks, usage and leases all ask this.
pub fn gate<'a>(plan: Option<&'a PlanVersion>, feature: &str) -> Result<&'a Entitlement, Denial> {
    plan.ok_or(Denial::SubscriptionInactive)?
        .entitlement(feature)
        .ok_or(Denial::NotInPlan)
}

/// [`gate`] for using a feature (recording usage, taking a slot): a feature listed but
/// disabled is `not_in_plan` too. (A check still answers a disabled feature's figures.)
pub fn gate_use<'a>(
    plan: Option<&'a PlanVersion>,
    feature: &str,
) -> Result<&'a Entitlement, Denial> {
    gate(plan, feature).and_then(|e| {
        if e.enabled {
            Ok(e)
        } else {
            Err(Denial::NotInPlan)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(json: serde_json::Value) -> PlanInput {
        serde_json::from_value(json).unwrap()
    }

    fn metered(key: &str) -> Option<FeatureType> {
        (key != "missing").then_some(FeatureType::Metered)
    }

    #[test]
    fn a_plan_is_normalized() {
        let def = normalize(
            &plan(serde_json::json!({
                "name": " Pro ",
                "prices": [{"interval": "year", "amount": 290, "currency": "USD"},
                           {"interval": "month", "amount": 29.5, "currency": "usd"}],
                "entitlements": [{"feature": "b", "limit": -1},
                                 {"feature": "a", "limit": 10, "overage": {"unit_amount": 0.10}}]
            })),
            metered,
        )
        .unwrap();
        assert_eq!(def.name, "Pro");
        let intervals: Vec<_> = def.prices.iter().map(|p| p.interval).collect();
        assert_eq!(intervals, [Interval::Month, Interval::Year]);
        assert_eq!(def.prices[1].currency, "usd");
        let features: Vec<_> = def
            .entitlements
            .iter()
            .map(|e| e.feature.as_str())
            .collect();
        assert_eq!(features, ["a", "b"]);
        assert_eq!(def.entitlements[1].limit, None);
        assert_eq!(def.entitlements[0].reset, Reset::BillingPeriod);
        assert_eq!(
            def.entitlements[0].overage.as_ref().map(|o| o.per_units),
            Some(Decimal::ONE)
        );
    }

    fn version(features: Vec<(&str, bool)>) -> PlanVersion {
        PlanVersion {
            key: "p".into(),
            version: 1,
            name: "P".into(),
            trial_days: 0,
            retention_days: None,
            prices: vec![],
            features: features
                .into_iter()
                .map(|(f, enabled)| PlanFeature {
                    feature: f.into(),
                    stripe_meter_event_name: None,
                    entitlement: Entitlement {
                        feature_type: FeatureType::Metered,
                        aggregation: super::super::entitlement::Aggregation::Sum,
                        enabled,
                        limit: Some(Decimal::TEN),
                        reset: Reset::Month,
                        overage: None,
                    },
                })
                .collect(),
            definition: serde_json::Value::Null,
            created_at: DateTime::<Utc>::MIN_UTC,
        }
    }

    #[test]
    fn the_gate_tells_no_plan_from_not_in_plan_from_disabled() {
        let plan = version(vec![("a", true), ("b", false)]);
        assert_eq!(gate(None, "a"), Err(Denial::SubscriptionInactive));
        assert_eq!(gate(Some(&plan), "z"), Err(Denial::NotInPlan));
        assert!(gate(Some(&plan), "a").is_ok());
        assert!(
            gate(Some(&plan), "b").is_ok(),
            "a check still sees a disabled feature"
        );
        assert_eq!(gate_use(Some(&plan), "b"), Err(Denial::NotInPlan));
        assert_eq!(
            gate_use(Some(&plan), "a").map(|e| e.limit),
            Ok(Some(Decimal::TEN))
        );
    }

    #[test]
    fn bad_plans_name_the_field() {
        let err = |json| normalize(&plan(json), metered).unwrap_err();
        let e = err(serde_json::json!({"name": "P", "entitlements": [{"feature": "missing"}]}));
        assert_eq!(
            (e.code, e.param.as_str()),
            ("feature_not_found", "entitlements[0].feature")
        );
        let e = err(
            serde_json::json!({"name": "P", "entitlements": [{"feature": "a", "overage": {"unit_amount": 1}}]}),
        );
        assert_eq!(
            (e.code, e.param.as_str()),
            ("invalid_entitlement", "entitlements[0].overage")
        );
        let e = err(
            serde_json::json!({"name": "P", "prices": [{"interval": "month", "amount": 1.001, "currency": "usd"}]}),
        );
        assert_eq!(
            (e.code, e.param.as_str()),
            ("invalid_amount", "prices[0].amount")
        );
        let e =
            err(serde_json::json!({"name": "P", "entitlements": [{"feature": "a", "limit": -2}]}));
        assert_eq!(
            (e.code, e.param.as_str()),
            ("invalid_limit", "entitlements[0].limit")
        );
        let e = err(serde_json::json!({"name": ""}));
        assert_eq!((e.code, e.param.as_str()), ("invalid_name", "name"));
    }
}
