//! Usage read-outs for dashboards: the current period per feature, per-period history, and
//! per-member usage of an organisation.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

use super::Entitlements;
use crate::db::usage;
use crate::domain::entitlement::{FeatureType, WarningLevel};
use crate::domain::period::{add_months_clamped, counter_period, month_containing, Period, Reset};
use crate::domain::qty::Qty;
use crate::error::{Error, Result};
use crate::tenancy::TenantCtx;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FeatureUsage {
    pub feature: String,
    pub used: Qty,
    pub limit: Option<Qty>,
    pub remaining: Option<Qty>,
    pub percent_used: Option<Qty>,
    pub warning_level: WarningLevel,
    pub reset: Reset,
    pub period_start: Option<DateTime<Utc>>,
    pub period_end: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CurrentUsage {
    pub customer: String,
    pub data: Vec<FeatureUsage>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PeriodUsage {
    pub feature: String,
    pub period_start: Option<DateTime<Utc>>,
    pub period_end: Option<DateTime<Utc>>,
    pub used: Qty,
    pub events: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsageHistory {
    pub customer: String,
    pub data: Vec<PeriodUsage>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MemberUsage {
    pub member: String,
    pub used: Qty,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FeatureMembers {
    pub feature: String,
    pub period_start: Option<DateTime<Utc>>,
    pub period_end: Option<DateTime<Utc>>,
    /// Members with usage in the period.
    pub members: i64,
    pub total: Qty,
    pub average_per_member: Qty,
    /// The ten members with the most usage, most first.
    pub top: Vec<MemberUsage>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MembersSummary {
    pub customer: String,
    pub data: Vec<FeatureMembers>,
}

impl Entitlements {
    /// Per-feature totals of the current period (metered features).
    pub async fn current_usage(&self, ctx: &TenantCtx, customer: &str) -> Result<CurrentUsage> {
        let now = ctx.now(&self.clock);
        let mut conn = self.db.acquire().await?;
        let resolved = self.resolve(&mut conn, ctx, customer).await?;
        let customer = customer.to_string();
        let Some(plan) = resolved.plan.clone() else {
            return Ok(CurrentUsage {
                customer,
                data: vec![],
            });
        };
        let metered: Vec<_> = plan
            .features
            .iter()
            .filter(|f| f.entitlement.feature_type == FeatureType::Metered)
            .collect();
        let periods: Vec<Period> = metered
            .iter()
            .map(|f| counter_period(f.entitlement.reset, now, resolved.billing.as_ref()))
            .collect();
        let keys: Vec<_> = metered
            .iter()
            .zip(&periods)
            .map(|(f, p)| (f.feature.clone(), p.start))
            .collect();
        let used = usage::counters(&mut conn, &ctx.tenant_id, &customer, &keys).await?;
        let thresholds = ctx.thresholds();
        let data = metered
            .iter()
            .zip(periods)
            .zip(used)
            .map(|((f, p), used)| {
                let e = &f.entitlement;
                FeatureUsage {
                    feature: f.feature.clone(),
                    used: Qty(used),
                    limit: e.limit.map(Qty),
                    remaining: e.remaining(used).map(Qty),
                    percent_used: e.percent_used(used).map(Qty),
                    warning_level: thresholds.level(used, e.limit),
                    reset: e.reset,
                    period_start: (e.reset != Reset::Never).then_some(p.start),
                    period_end: p.end,
                }
            })
            .collect();
        Ok(CurrentUsage { customer, data })
    }

    /// Per-period totals over the last `months` months (1 to 36), newest first.
    pub async fn history(
        &self,
        ctx: &TenantCtx,
        customer: &str,
        months: i64,
    ) -> Result<UsageHistory> {
        if !(1..=36).contains(&months) {
            return Err(Error::invalid_param(
                "invalid_months",
                "months",
                "months must be between 1 and 36.",
            ));
        }
        let now = ctx.now(&self.clock);
        let since = add_months_clamped(month_containing(now).start, -(months - 1));
        let mut conn = self.db.acquire().await?;
        self.resolve(&mut conn, ctx, customer).await?;
        let rows = usage::history(&mut conn, &ctx.tenant_id, customer, since).await?;
        let data = rows
            .into_iter()
            .map(|r| PeriodUsage {
                feature: r.feature_key,
                period_start: r.period_end.map(|_| r.period_start),
                period_end: r.period_end,
                used: Qty(r.used),
                events: r.event_count,
            })
            .collect();
        Ok(UsageHistory {
            customer: customer.to_string(),
            data,
        })
    }

    /// Current-period usage per member of an organisation, per metered feature.
    pub async fn member_usage(&self, ctx: &TenantCtx, customer: &str) -> Result<MembersSummary> {
        let now = ctx.now(&self.clock);
        let mut conn = self.db.acquire().await?;
        let resolved = self.resolve(&mut conn, ctx, customer).await?;
        let customer = customer.to_string();
        let Some(plan) = resolved.plan.clone() else {
            return Ok(MembersSummary {
                customer,
                data: vec![],
            });
        };
        let mut data = Vec::new();
        for f in plan
            .features
            .iter()
            .filter(|f| f.entitlement.feature_type == FeatureType::Metered)
        {
            let period = counter_period(f.entitlement.reset, now, resolved.billing.as_ref());
            let rows = usage::top_members(
                &mut conn,
                &ctx.tenant_id,
                &customer,
                &f.feature,
                period.start,
            )
            .await?;
            let members = rows.first().map_or(0, |r| r.members);
            let total = rows.first().map_or(Decimal::ZERO, |r| r.total);
            let average = if members > 0 {
                (total / Decimal::from(members)).round_dp(4).normalize()
            } else {
                Decimal::ZERO
            };
            data.push(FeatureMembers {
                feature: f.feature.clone(),
                period_start: (f.entitlement.reset != Reset::Never).then_some(period.start),
                period_end: period.end,
                members,
                total: Qty(total),
                average_per_member: Qty(average),
                top: rows
                    .into_iter()
                    .map(|r| MemberUsage {
                        member: r.member_id,
                        used: Qty(r.used),
                    })
                    .collect(),
            });
        }
        Ok(MembersSummary { customer, data })
    }
}
