//! Billing analytics on the tenant's clock: MRR and ARR from the live subscriptions (annual
//! prices count as 1/12; per-seat prices at the current member count; `trialing` counts as a
//! subscription but brings no MRR), the last 30 days' new, churned and paid, and the MRR of
//! past months with its movements, from the subscription and seat histories.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;
use sqlx::PgPool;

use crate::db;
use crate::db::plans::PlanCache;
use crate::domain::addon::Attached;
use crate::domain::invoice::Off;
use crate::domain::money;
use crate::domain::mrr::{movements, subscription_mrr};
use crate::domain::period::add_months_clamped;
use crate::domain::period::Interval;
use crate::domain::plan::PriceDef;
use crate::domain::status::SubscriptionStatus;
use crate::error::{Error, Result};
use crate::ids::TenantId;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PlanMrr {
    pub plan: String,
    /// Live subscriptions on the plan (trialing, active, past due).
    pub subscriptions: i64,
    #[schema(example = "490.00")]
    pub mrr: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Summary {
    /// Monthly recurring revenue of `active` and `past_due` subscriptions.
    #[schema(example = "1234.50")]
    pub mrr: String,
    /// 12 × the exact MRR, rounded once.
    pub arr: String,
    /// Live subscriptions (trialing, active, past due), free ones included.
    pub active_subscriptions: i64,
    /// Highest MRR first, then by plan key.
    pub by_plan: Vec<PlanMrr>,
    /// Subscriptions started in the last 30 days.
    pub new_30d: i64,
    /// Subscriptions ended in the last 30 days.
    pub churned_30d: i64,
    /// `churned_30d` over the subscriptions live 30 days ago, 4 places (`"0.0000"` when there
    /// were none).
    #[schema(example = "0.0250")]
    pub churn_rate_30d: String,
    /// Amounts paid on invoices paid in the last 30 days.
    pub revenue_30d: String,
}

/// What makes up a subscription's MRR at one instant (SPEC §12, §15).
struct Terms<'a> {
    plan: (&'a str, i32),
    interval: Interval,
    members: i64,
    addons: &'a [Attached],
    overrides: Option<&'a [PriceDef]>,
    discount: (Option<&'a str>, Option<DateTime<Utc>>),
}

/// A subscription's exact MRR at `at`: its plan at its effective prices, its recurring
/// add-ons, less an active `forever` or `repeating` discount. Coupons are looked up once per
/// code (`coupons`).
async fn mrr_of(
    conn: &mut sqlx::PgConnection,
    plans: &PlanCache,
    (tenant_id, coupons): (&TenantId, &mut HashMap<String, Option<Off>>),
    terms: Terms<'_>,
    at: DateTime<Utc>,
) -> Result<(Decimal, String)> {
    let plan = plans
        .get(conn, tenant_id, terms.plan.0, terms.plan.1)
        .await?
        .ok_or_else(|| Error::internal("subscription plan version missing"))?;
    let plan = match terms.overrides {
        Some(o) => std::sync::Arc::new(plan.with_prices(terms.interval, o)),
        None => plan,
    };
    let mut per_interval = plan.base_amount(terms.interval, terms.members);
    for a in terms.addons {
        let addon = plans
            .addon(conn, tenant_id, &a.addon, a.version)
            .await?
            .ok_or_else(|| Error::internal("attached add-on version missing"))?;
        if let Some(price) = addon.recurring(terms.interval) {
            per_interval += price.amount * Decimal::from(a.quantity);
        }
    }
    let discount = match terms.discount {
        (Some(code), end) if end.is_none_or(|e| e > at) => {
            if !coupons.contains_key(code) {
                let off = db::coupons::get(conn, tenant_id, code)
                    .await?
                    .filter(|c| c.duration != "once")
                    .and_then(|c| match (c.percent_off, c.amount_off) {
                        (Some(p), _) => Some(Off::Percent(p)),
                        (None, Some(a)) => Some(Off::Amount(a)),
                        (None, None) => None,
                    });
                coupons.insert(code.to_string(), off);
            }
            coupons.get(code).copied().flatten()
        }
        _ => None,
    };
    let mrr = subscription_mrr(per_interval, terms.interval.months(), discount);
    Ok((mrr, plan.currency().to_string()))
}

/// The summary at `now` (the tenant's clock).
pub async fn summary(
    db: &PgPool,
    plans: &PlanCache,
    tenant_id: &TenantId,
    now: DateTime<Utc>,
) -> Result<Summary> {
    let mut conn = db.acquire().await?;
    let live = db::analytics::live(&mut conn, tenant_id).await?;
    let mut currency = None;
    let mut total = Decimal::ZERO;
    // plan key -> (subscriptions, exact MRR)
    let mut by_plan: BTreeMap<String, (i64, Decimal)> = BTreeMap::new();
    let mut coupons = HashMap::new();
    for s in &live {
        let terms = Terms {
            plan: (&s.plan_key, s.plan_version),
            interval: s.interval,
            members: s.members,
            addons: &s.addons,
            overrides: s.price_overrides.as_ref().map(|o| o.0.as_slice()),
            discount: (s.discount_coupon.as_deref(), s.discount_end),
        };
        let (monthly, plan_currency) =
            mrr_of(&mut conn, plans, (tenant_id, &mut coupons), terms, now).await?;
        let entry = by_plan.entry(s.plan_key.clone()).or_default();
        entry.0 += 1;
        if matches!(
            s.status,
            SubscriptionStatus::Active | SubscriptionStatus::PastDue
        ) {
            entry.1 += monthly;
            total += monthly;
        }
        if currency.is_none() && !monthly.is_zero() {
            currency = Some(plan_currency);
        }
    }
    let currency = currency.unwrap_or_else(|| "usd".to_string());
    let window = db::analytics::window(&mut conn, tenant_id, now - Duration::days(30), now).await?;
    let churn_rate = if window.live_at_start == 0 {
        Decimal::ZERO
    } else {
        Decimal::from(window.ended) / Decimal::from(window.live_at_start)
    };
    let mut churn_rate =
        churn_rate.round_dp_with_strategy(4, RoundingStrategy::MidpointAwayFromZero);
    churn_rate.rescale(4);
    let mut plans_out: Vec<(String, i64, Decimal)> = by_plan
        .into_iter()
        .map(|(plan, (subscriptions, mrr))| (plan, subscriptions, mrr))
        .collect();
    plans_out.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    Ok(Summary {
        mrr: money::format(total, &currency),
        arr: money::format(total * Decimal::from(12), &currency),
        active_subscriptions: live.len() as i64,
        by_plan: plans_out
            .into_iter()
            .map(|(plan, subscriptions, mrr)| PlanMrr {
                plan,
                subscriptions,
                mrr: money::format(mrr, &currency),
            })
            .collect(),
        new_30d: window.started,
        churned_30d: window.ended,
        churn_rate_30d: churn_rate.to_string(),
        revenue_30d: money::format(window.paid, &currency),
    })
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MonthMrr {
    /// `YYYY-MM`.
    #[schema(example = "2027-03")]
    pub month: String,
    /// MRR at the end of the month (now, for the current month).
    pub mrr: String,
    pub new: String,
    pub expansion: String,
    pub contraction: String,
    pub churned: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MrrSeries {
    /// Oldest first; the current month last.
    pub data: Vec<MonthMrr>,
}

/// The most months one series may span.
pub const MAX_MONTHS: u32 = 60;

/// MRR per customer at `at` (entries at or after `at` excluded; `inclusive` takes those at
/// `at` too), from the subscription and seat histories.
async fn mrr_by_customer(
    conn: &mut sqlx::PgConnection,
    plans: &PlanCache,
    tenant_id: &TenantId,
    (history, seats): (&[db::analytics::HistoryRow], &[db::analytics::SeatRow]),
    at: DateTime<Utc>,
    inclusive: bool,
) -> Result<BTreeMap<String, Decimal>> {
    let before = |t: DateTime<Utc>| if inclusive { t <= at } else { t < at };
    // Each subscription's latest state, each customer's latest seat count (both in order).
    let mut state: BTreeMap<&str, &db::analytics::HistoryRow> = BTreeMap::new();
    for h in history.iter().take_while(|h| before(h.at)) {
        state.insert(h.subscription_id.as_str(), h);
    }
    let mut members: BTreeMap<&str, i64> = BTreeMap::new();
    for s in seats.iter().take_while(|s| before(s.at)) {
        members.insert(s.customer_id.as_str(), i64::from(s.seats));
    }
    let mut out: BTreeMap<String, Decimal> = BTreeMap::new();
    let mut coupons = HashMap::new();
    for h in state.values() {
        if !matches!(
            h.status,
            SubscriptionStatus::Active | SubscriptionStatus::PastDue
        ) {
            continue;
        }
        let terms = Terms {
            plan: (&h.plan_key, h.plan_version),
            interval: h.interval,
            members: members.get(h.customer_id.as_str()).copied().unwrap_or(0),
            addons: &h.addons,
            overrides: h.price_overrides.as_ref().map(|o| o.0.as_slice()),
            discount: (h.discount_coupon.as_deref(), h.discount_end),
        };
        let (monthly, _) = mrr_of(conn, plans, (tenant_id, &mut coupons), terms, at).await?;
        *out.entry(h.customer_id.clone()).or_default() += monthly;
    }
    Ok(out)
}

/// The MRR at the end of each of the last `months` calendar months (the current one last,
/// at `now`), with its movements, on the tenant's clock.
pub async fn mrr_series(
    db: &PgPool,
    plans: &PlanCache,
    tenant_id: &TenantId,
    months: u32,
    now: DateTime<Utc>,
) -> Result<MrrSeries> {
    if !(1..=MAX_MONTHS).contains(&months) {
        return Err(Error::invalid_param(
            "invalid_months",
            "months",
            format!("months must be between 1 and {MAX_MONTHS}."),
        ));
    }
    let mut conn = db.acquire().await?;
    let history = db::analytics::history(&mut conn, tenant_id, now).await?;
    let seats = db::analytics::seats(&mut conn, tenant_id, now).await?;
    let current = crate::domain::period::month_containing(now).start;
    let first = add_months_clamped(current, -i64::from(months - 1));
    let mut currency = "usd".to_string();
    for h in history.iter().take(1) {
        if let Some(plan) = plans
            .get(&mut conn, tenant_id, &h.plan_key, h.plan_version)
            .await?
        {
            if !plan.prices.is_empty() {
                currency = plan.currency().to_string();
            }
        }
    }
    let mut start = mrr_by_customer(
        &mut conn,
        plans,
        tenant_id,
        (&history, &seats),
        first,
        false,
    )
    .await?;
    let mut data = Vec::with_capacity(months as usize);
    for i in 0..months {
        let month_start = add_months_clamped(first, i64::from(i));
        let last = i + 1 == months;
        let end = if last {
            mrr_by_customer(&mut conn, plans, tenant_id, (&history, &seats), now, true).await?
        } else {
            let next = add_months_clamped(first, i64::from(i) + 1);
            mrr_by_customer(&mut conn, plans, tenant_id, (&history, &seats), next, false).await?
        };
        let m = movements(&start, &end);
        let total: Decimal = end.values().copied().sum();
        let f = |d: Decimal| money::format(d, &currency);
        data.push(MonthMrr {
            month: month_start.format("%Y-%m").to_string(),
            mrr: f(total),
            new: f(m.new),
            expansion: f(m.expansion),
            contraction: f(m.contraction),
            churned: f(m.churned),
        });
        start = end;
    }
    Ok(MrrSeries { data })
}
