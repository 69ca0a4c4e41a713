//! Subscriptions: creation, and resolving which plan version a customer is on right now.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use sqlx::PgConnection;

use crate::db::plans::PlanVersion;
use crate::domain::period::{add_months_clamped, BillingCycle, Interval, Period};
use crate::error::{ApiError, ApiResult};
use crate::http::auth::TenantCtx;
use crate::AppState;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SubscriptionRow {
    pub subscription_id: String,
    pub customer_id: String,
    pub plan_key: String,
    pub plan_version: i32,
    pub interval: String,
    pub status: String,
    pub billing_anchor: DateTime<Utc>,
    pub current_period_start: DateTime<Utc>,
    pub current_period_end: DateTime<Utc>,
    pub trial_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub pending_plan_key: Option<String>,
    pub pending_plan_version: Option<i32>,
    pub pending_interval: Option<String>,
    pub pending_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// Starts a subscription in the caller's transaction. A live one already held is
/// `409 subscription_exists`.
pub async fn create(
    conn: &mut PgConnection,
    tenant_id: &str,
    customer_id: &str,
    plan: &PlanVersion,
    interval: Interval,
    trial_days: i32,
    now: DateTime<Utc>,
) -> ApiResult<SubscriptionRow> {
    let id = crate::ids::new_id("sub");
    let (status, trial_end, period_end, anchor) = if trial_days > 0 {
        let end = now + Duration::days(trial_days as i64);
        ("trialing", Some(end), end, end)
    } else {
        (
            "active",
            None,
            add_months_clamped(now, interval.months() as i64),
            now,
        )
    };
    let row = sqlx::query_as!(
        SubscriptionRow,
        "INSERT INTO subscriptions (tenant_id, subscription_id, customer_id, plan_key, plan_version,
             interval, status, billing_anchor, current_period_start, current_period_end, trial_end,
             created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $9, $9)
         RETURNING subscription_id, customer_id, plan_key, plan_version, interval, status,
             billing_anchor, current_period_start, current_period_end, trial_end,
             cancel_at_period_end, pending_plan_key, pending_plan_version, pending_interval,
             pending_at, created_at",
        tenant_id,
        id,
        customer_id,
        plan.key,
        plan.version,
        interval.as_str(),
        status,
        anchor,
        now,
        period_end,
        trial_end
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| {
        if super::is_unique_violation(&e, "subscriptions_one_live_per_customer") {
            ApiError::conflict(
                "subscription_exists",
                "The customer already has a live subscription; change it instead.",
            )
        } else {
            e.into()
        }
    })?;
    Ok(row)
}

/// What a customer is entitled to right now.
pub struct Resolved {
    /// `None`: no live subscription and no default plan.
    pub plan: Option<Arc<PlanVersion>>,
    pub billing: Option<BillingCycle>,
}

/// Resolves a customer's plan: the live subscription's version, else the tenant's default
/// plan (newest version). Unknown or deleted customers are `404 customer_not_found`.
pub async fn resolve(
    state: &AppState,
    conn: &mut PgConnection,
    ctx: &TenantCtx,
    customer_id: &str,
) -> ApiResult<Resolved> {
    let row = sqlx::query!(
        r#"SELECT s.plan_key AS "plan_key?", s.plan_version AS "plan_version?",
                  s.interval AS "interval?", s.billing_anchor AS "billing_anchor?",
                  s.current_period_start AS "current_period_start?",
                  s.current_period_end AS "current_period_end?",
                  (SELECT p.latest_version FROM plans p
                    WHERE p.tenant_id = c.tenant_id AND p.plan_key = $3) AS default_version
           FROM customers c
           LEFT JOIN subscriptions s
             ON s.tenant_id = c.tenant_id AND s.customer_id = c.customer_id
            AND s.status IN ('trialing', 'active', 'past_due')
           WHERE c.tenant_id = $1 AND c.customer_id = $2 AND c.deleted_at IS NULL"#,
        ctx.tenant_id,
        customer_id,
        ctx.default_plan
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(customer_not_found)?;

    if let (Some(key), Some(version), Some(interval), Some(anchor), Some(start), Some(end)) = (
        row.plan_key,
        row.plan_version,
        row.interval,
        row.billing_anchor,
        row.current_period_start,
        row.current_period_end,
    ) {
        let plan = state.plans.get(conn, &ctx.tenant_id, &key, version).await?;
        return Ok(Resolved {
            plan,
            billing: Some(BillingCycle {
                anchor,
                interval: Interval::parse(&interval).unwrap_or(Interval::Month),
                current: Period {
                    start,
                    end: Some(end),
                },
            }),
        });
    }
    let plan = match (&ctx.default_plan, row.default_version) {
        (Some(key), Some(version)) => state.plans.get(conn, &ctx.tenant_id, key, version).await?,
        _ => None,
    };
    Ok(Resolved {
        plan,
        billing: None,
    })
}

pub fn customer_not_found() -> ApiError {
    ApiError::not_found("customer_not_found", "No such customer.").with_param("customer")
}
