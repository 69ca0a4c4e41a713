//! Subscriptions (SPEC §6): create, read, change, cancel, reactivate.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::auth::TenantCtx;
use super::extract::{Json, OptionalJson, Path};
use crate::billing::lifecycle::{self, ChangeRequest, When};
use crate::db::subscriptions::{self as subs, customer_not_found, SubscriptionRow};
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
    /// When cancellation was asked for.
    pub canceled_at: Option<DateTime<Utc>>,
    /// When it ended (status `canceled`).
    pub ended_at: Option<DateTime<Utc>>,
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
            canceled_at: r.canceled_at,
            ended_at: r.ended_at,
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
    let row = crate::billing::lifecycle::start(
        &mut tx,
        &state.plans,
        &ctx.tenant_id,
        &body.customer,
        &plan,
        interval,
        trial_days,
        now,
        None,
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, axum::Json(row.into())))
}

#[utoipa::path(get, path = "/v1/subscriptions/{id}", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    responses((status = 200, body = Subscription), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_subscription(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Subscription>> {
    let mut conn = state.db.acquire().await?;
    let row = subs::get(&mut conn, &ctx.tenant_id, &id, false).await?;
    Ok(axum::Json(row.into()))
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
    let mut conn = state.db.acquire().await?;
    if let Some(r) = subs::live_for_customer(&mut conn, &ctx.tenant_id, &customer).await? {
        return Ok(axum::Json(r.into()));
    }
    let exists = sqlx::query_scalar!(
        "SELECT EXISTS (SELECT 1 FROM customers WHERE tenant_id = $1 AND customer_id = $2
                        AND deleted_at IS NULL) AS \"e!\"",
        ctx.tenant_id,
        customer
    )
    .fetch_one(&mut *conn)
    .await?;
    if !exists {
        return Err(customer_not_found());
    }
    Err(ApiError::not_found(
        "subscription_not_found",
        "The customer has no live subscription.",
    ))
}

/// A plan version to move to: `"latest"` or a version number.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum VersionSpec {
    Number(i32),
    Named(String),
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeSubscription {
    pub plan: String,
    /// Default: the current interval.
    pub interval: Option<Interval>,
    /// Default: upgrades now (with proration), downgrades at period end.
    pub when: Option<When>,
    /// `"latest"` (or a number). Default: for another plan its newest version; for the same
    /// plan the version held (so only `interval` changes).
    #[schema(value_type = Option<String>, example = "latest")]
    pub version: Option<VersionSpec>,
}

fn live_or_409(row: &SubscriptionRow) -> ApiResult<()> {
    if row.status == "canceled" {
        return Err(ApiError::conflict(
            "subscription_ended",
            "The subscription has ended.",
        ));
    }
    Ok(())
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/change", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    request_body = ChangeSubscription,
    responses((status = 200, body = Subscription), (status = 400, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody),
              (status = 409, description = "same_plan or subscription_ended", body = crate::error::ErrorBody)))]
pub async fn change_subscription(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(id): Path<String>,
    Json(body): Json<ChangeSubscription>,
) -> ApiResult<axum::Json<Subscription>> {
    let now = ctx.now(&state);
    let mut tx = state.db.begin().await?;
    let sub = subs::get(&mut tx, &ctx.tenant_id, &id, true).await?;
    live_or_409(&sub)?;
    let plan_404 = || ApiError::not_found("plan_not_found", "No such plan.").with_param("plan");
    let latest = crate::db::plans::latest_version(&mut tx, &ctx.tenant_id, &body.plan)
        .await?
        .ok_or_else(plan_404)?;
    let version = match &body.version {
        Some(VersionSpec::Named(v)) if v == "latest" => latest,
        Some(VersionSpec::Number(n)) if (1..=latest).contains(n) => *n,
        Some(_) => {
            return Err(ApiError::invalid_param(
                "invalid_version",
                "version",
                format!("version must be \"latest\" or a version from 1 to {latest}."),
            ))
        }
        None if body.plan == sub.plan_key => sub.plan_version,
        None => latest,
    };
    let plan = state
        .plans
        .get(&mut tx, &ctx.tenant_id, &body.plan, version)
        .await?
        .ok_or_else(plan_404)?;
    let interval = body
        .interval
        .unwrap_or_else(|| Interval::parse(&sub.interval).unwrap_or(Interval::Month));
    let row = lifecycle::change(
        &mut tx,
        &state.plans,
        &ctx.tenant_id,
        sub,
        ChangeRequest {
            plan: &plan,
            interval,
            when: body.when,
        },
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(axum::Json(row.into()))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelSubscription {
    /// Default true: at the end of the current period.
    pub at_period_end: Option<bool>,
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/cancel", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    request_body = CancelSubscription,
    responses((status = 200, body = Subscription), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
pub async fn cancel_subscription(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<CancelSubscription>,
) -> ApiResult<axum::Json<Subscription>> {
    let now = ctx.now(&state);
    let at_period_end = body.and_then(|b| b.at_period_end).unwrap_or(true);
    let mut tx = state.db.begin().await?;
    let sub = subs::get(&mut tx, &ctx.tenant_id, &id, true).await?;
    live_or_409(&sub)?;
    let grace = sqlx::query_scalar!(
        "SELECT invoice_grace_minutes FROM tenants WHERE tenant_id = $1",
        ctx.tenant_id
    )
    .fetch_one(&mut *tx)
    .await?;
    let row = lifecycle::cancel(
        &mut tx,
        &state.plans,
        &ctx.tenant_id,
        sub,
        at_period_end,
        grace,
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(axum::Json(row.into()))
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/reactivate", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    responses((status = 200, body = Subscription), (status = 404, body = crate::error::ErrorBody),
              (status = 409, description = "not_canceled or subscription_ended", body = crate::error::ErrorBody)))]
pub async fn reactivate_subscription(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Subscription>> {
    let now = ctx.now(&state);
    let mut tx = state.db.begin().await?;
    let sub = subs::get(&mut tx, &ctx.tenant_id, &id, true).await?;
    let row = lifecycle::reactivate(&mut tx, &ctx.tenant_id, sub, now).await?;
    tx.commit().await?;
    Ok(axum::Json(row.into()))
}
