//! Billing analytics on the tenant's clock: MRR and ARR from the live subscriptions (annual
//! prices count as 1/12; per-seat prices at the current member count; `trialing` counts as a
//! subscription but brings no MRR), and the last 30 days' new, churned and paid.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;
use sqlx::PgPool;

use crate::db;
use crate::db::plans::PlanCache;
use crate::domain::money;
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
    for s in &live {
        let plan = plans
            .get(&mut conn, tenant_id, &s.plan_key, s.plan_version)
            .await?
            .ok_or_else(|| Error::internal("subscription plan version missing"))?;
        let entry = by_plan.entry(s.plan_key.clone()).or_default();
        entry.0 += 1;
        if matches!(
            s.status,
            SubscriptionStatus::Active | SubscriptionStatus::PastDue
        ) {
            let monthly =
                plan.base_amount(s.interval, s.members) / Decimal::from(s.interval.months());
            entry.1 += monthly;
            total += monthly;
        }
        if currency.is_none() && !plan.prices.is_empty() {
            currency = Some(plan.currency().to_string());
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
