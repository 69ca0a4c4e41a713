//! Subscriptions (SPEC §6, the basic part: create and read).

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::auth::TenantCtx;
use super::extract::{Json, Path};
use crate::db::subscriptions::{customer_not_found, SubscriptionRow};
use crate::domain::period::Interval;
use crate::error::{ApiError, ApiResult};
use crate::AppState;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSubscription {
    pub customer: String,
    pub plan: String,
    pub interval: Option<Interval>,
    /// Overrides the plan's trial_days.
    pub trial_days: Option<i32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PendingChange {
    pub plan: String,
    pub interval: Option<String>,
    pub at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Subscription {
    pub id: String,
    pub customer: String,
    pub plan: String,
    pub plan_version: i32,
    pub interval: String,
    pub status: String,
    pub current_period_start: DateTime<Utc>,
    pub current_period_end: DateTime<Utc>,
    pub trial_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub pending_change: Option<PendingChange>,
    pub created_at: DateTime<Utc>,
}

impl From<SubscriptionRow> for Subscription {
    fn from(r: SubscriptionRow) -> Self {
        Subscription {
            pending_change: r.pending_plan_key.map(|plan| PendingChange {
                plan,
                interval: r.pending_interval,
                at: r.pending_at,
            }),
            id: r.subscription_id,
            customer: r.customer_id,
            plan: r.plan_key,
            plan_version: r.plan_version,
            interval: r.interval,
            status: r.status,
            current_period_start: r.current_period_start,
            current_period_end: r.current_period_end,
            trial_end: r.trial_end,
            cancel_at_period_end: r.cancel_at_period_end,
            created_at: r.created_at,
        }
    }
}

#[utoipa::path(post, path = "/v1/subscriptions", tag = "subscriptions", request_body = CreateSubscription,
    responses((status = 201, body = Subscription), (status = 400, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub async fn create_subscription(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Json(body): Json<CreateSubscription>,
) -> ApiResult<(StatusCode, axum::Json<Subscription>)> {
    if body.trial_days.is_some_and(|d| !(0..=730).contains(&d)) {
        return Err(ApiError::invalid_param(
            "invalid_trial_days",
            "trial_days",
            "trial_days must be between 0 and 730.",
        ));
    }
    let now = ctx.now(&state);
    let mut tx = state.db.begin().await?;
    let exists = sqlx::query_scalar!(
        "SELECT EXISTS (SELECT 1 FROM customers WHERE tenant_id = $1 AND customer_id = $2
                        AND deleted_at IS NULL) AS \"e!\"",
        ctx.tenant_id,
        body.customer
    )
    .fetch_one(&mut *tx)
    .await?;
    if !exists {
        return Err(customer_not_found());
    }
    let version = crate::db::plans::latest_version(&mut tx, &ctx.tenant_id, &body.plan)
        .await?
        .ok_or_else(|| ApiError::not_found("plan_not_found", "No such plan.").with_param("plan"))?;
    let plan = state
        .plans
        .get(&mut tx, &ctx.tenant_id, &body.plan, version)
        .await?
        .ok_or_else(|| ApiError::not_found("plan_not_found", "No such plan.").with_param("plan"))?;
    let interval = body.interval.unwrap_or_else(|| plan.default_interval());
    if !plan.prices.is_empty() && plan.price(interval).is_none() {
        return Err(ApiError::invalid_param(
            "price_not_found",
            "interval",
            format!("Plan `{}` has no {} price.", plan.key, interval.as_str()),
        ));
    }
    let trial_days = body.trial_days.unwrap_or(plan.trial_days);
    let row = crate::db::subscriptions::create(
        &mut tx,
        &ctx.tenant_id,
        &body.customer,
        &plan,
        interval,
        trial_days,
        now,
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, axum::Json(row.into())))
}

const SELECT: &str =
    "SELECT subscription_id, customer_id, plan_key, plan_version, interval, status,
    billing_anchor, current_period_start, current_period_end, trial_end, cancel_at_period_end,
    pending_plan_key, pending_plan_version, pending_interval, pending_at, created_at
    FROM subscriptions";

#[utoipa::path(get, path = "/v1/subscriptions/{id}", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    responses((status = 200, body = Subscription), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_subscription(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Subscription>> {
    let row: Option<SubscriptionRow> = sqlx::query_as(&format!(
        "{SELECT} WHERE tenant_id = $1 AND subscription_id = $2"
    ))
    .bind(&ctx.tenant_id)
    .bind(&id)
    .fetch_optional(&state.db)
    .await?;
    row.map(|r| axum::Json(r.into()))
        .ok_or_else(|| ApiError::not_found("subscription_not_found", "No such subscription."))
}

#[utoipa::path(get, path = "/v1/customers/{id}/subscription", tag = "subscriptions",
    params(("id" = String, Path, description = "Customer id")),
    responses((status = 200, description = "The customer's live subscription", body = Subscription),
              (status = 404, body = crate::error::ErrorBody)))]
pub async fn customer_subscription(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(customer): Path<String>,
) -> ApiResult<axum::Json<Subscription>> {
    let row = sqlx::query_as!(
        SubscriptionRow,
        "SELECT subscription_id, customer_id, plan_key, plan_version, interval, status,
             billing_anchor, current_period_start, current_period_end, trial_end,
             cancel_at_period_end, pending_plan_key, pending_plan_version, pending_interval,
             pending_at, created_at
         FROM subscriptions
         WHERE tenant_id = $1 AND customer_id = $2 AND status IN ('trialing', 'active', 'past_due')",
        ctx.tenant_id,
        customer
    )
    .fetch_optional(&state.db)
    .await?;
    if let Some(r) = row {
        return Ok(axum::Json(r.into()));
    }
    let exists = sqlx::query_scalar!(
        "SELECT EXISTS (SELECT 1 FROM customers WHERE tenant_id = $1 AND customer_id = $2
                        AND deleted_at IS NULL) AS \"e!\"",
        ctx.tenant_id,
        customer
    )
    .fetch_one(&state.db)
    .await?;
    if !exists {
        return Err(customer_not_found());
    }
    Err(ApiError::not_found(
        "subscription_not_found",
        "The customer has no live subscription.",
    ))
}
