//! Subscriptions: create, read, change, cancel, reactivate.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;

use super::error::ApiResult;
use super::extract::{IdPath, Json, OptionalJson, Path};
use crate::audit::Origin;
use crate::billing::subscribing::{self as subs, ChangeSubscription, CreateSubscription};
use crate::billing::views::Subscription;
use crate::domain::id::SubscriptionId;
use crate::tenancy::TenantCtx;
use crate::AppState;

#[utoipa::path(post, path = "/v1/subscriptions", tag = "subscriptions", request_body = CreateSubscription,
    responses((status = 201, body = Subscription), (status = 400, body = crate::http::error::ErrorBody),
              (status = 404, body = crate::http::error::ErrorBody), (status = 409, body = crate::http::error::ErrorBody)))]
pub async fn create_subscription(
    State(state): State<AppState>,
    ctx: TenantCtx,
    origin: Origin,
    Json(body): Json<CreateSubscription>,
) -> ApiResult<(StatusCode, axum::Json<Subscription>)> {
    let now = ctx.now(&state.clock);
    let sub = subs::subscribe(&state.db, &origin, &state.plans, &ctx.tenant_id, &body, now).await?;
    Ok((StatusCode::CREATED, axum::Json(sub)))
}

#[utoipa::path(get, path = "/v1/subscriptions/{id}", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    responses((status = 200, body = Subscription), (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn get_subscription(
    State(state): State<AppState>,
    ctx: TenantCtx,
    IdPath(id): IdPath<SubscriptionId>,
) -> ApiResult<axum::Json<Subscription>> {
    Ok(axum::Json(
        subs::find(&state.db, &ctx.tenant_id, &id).await?,
    ))
}

#[utoipa::path(get, path = "/v1/customers/{id}/subscription", tag = "subscriptions",
    params(("id" = String, Path, description = "Customer id")),
    responses((status = 200, description = "The customer's live subscription", body = Subscription),
              (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn customer_subscription(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(customer): Path<String>,
) -> ApiResult<axum::Json<Subscription>> {
    Ok(axum::Json(
        subs::live_for_customer(&state.db, &ctx.tenant_id, &customer).await?,
    ))
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/change", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    request_body = ChangeSubscription,
    responses((status = 200, body = Subscription), (status = 400, body = crate::http::error::ErrorBody),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, description = "same_plan or subscription_ended", body = crate::http::error::ErrorBody)))]
pub async fn change_subscription(
    State(state): State<AppState>,
    ctx: TenantCtx,
    origin: Origin,
    IdPath(id): IdPath<SubscriptionId>,
    Json(body): Json<ChangeSubscription>,
) -> ApiResult<axum::Json<Subscription>> {
    let now = ctx.now(&state.clock);
    let sub = subs::change(
        &state.db,
        &origin,
        &state.plans,
        &ctx.tenant_id,
        &id,
        &body,
        now,
    )
    .await?;
    Ok(axum::Json(sub))
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
    responses((status = 200, body = Subscription), (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, body = crate::http::error::ErrorBody)))]
pub async fn cancel_subscription(
    State(state): State<AppState>,
    ctx: TenantCtx,
    origin: Origin,
    IdPath(id): IdPath<SubscriptionId>,
    OptionalJson(body): OptionalJson<CancelSubscription>,
) -> ApiResult<axum::Json<Subscription>> {
    let now = ctx.now(&state.clock);
    let at_period_end = body.and_then(|b| b.at_period_end).unwrap_or(true);
    let sub = subs::cancel(
        &state.db,
        &origin,
        &state.plans,
        &ctx.tenant_id,
        &id,
        at_period_end,
        now,
    )
    .await?;
    Ok(axum::Json(sub))
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/reactivate", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    responses((status = 200, body = Subscription), (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, description = "not_canceled or subscription_ended", body = crate::http::error::ErrorBody)))]
pub async fn reactivate_subscription(
    State(state): State<AppState>,
    ctx: TenantCtx,
    origin: Origin,
    IdPath(id): IdPath<SubscriptionId>,
) -> ApiResult<axum::Json<Subscription>> {
    let now = ctx.now(&state.clock);
    Ok(axum::Json(
        subs::reactivate(&state.db, &origin, &ctx.tenant_id, &id, now).await?,
    ))
}
