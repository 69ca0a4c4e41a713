//! Coupons (SPEC §15): `/v1/coupons` and a subscription's `/discount`.

use axum::extract::State;
use axum::http::StatusCode;

use super::error::ApiResult;
use super::extract::{IdPath, Json, List, PageParams, Path, Query};
use crate::audit::Origin;
use crate::billing::coupons::{self as discounts, ApplyCoupon};
use crate::billing::views::Subscription;
use crate::catalog::coupons::{self, Coupon, CreateCoupon};
use crate::domain::id::SubscriptionId;
use crate::tenancy::TenantCtx;
use crate::AppState;

#[utoipa::path(post, path = "/v1/coupons", tag = "coupons", request_body = CreateCoupon,
    responses((status = 201, body = Coupon),
              (status = 400, description = "`invalid_percent_off`, `invalid_amount_off`, `invalid_discount`, `invalid_duration`, …", body = crate::http::error::ErrorBody),
              (status = 409, description = "`coupon_exists`", body = crate::http::error::ErrorBody)))]
pub async fn create_coupon(
    State(state): State<AppState>,
    ctx: TenantCtx,
    origin: Origin,
    Json(body): Json<CreateCoupon>,
) -> ApiResult<(StatusCode, axum::Json<Coupon>)> {
    let now = ctx.now(&state.clock);
    let coupon = coupons::create(&state.db, &origin, &ctx.tenant_id, &body, now).await?;
    Ok((StatusCode::CREATED, axum::Json(coupon)))
}

#[utoipa::path(get, path = "/v1/coupons", tag = "coupons", params(PageParams),
    responses((status = 200, description = "The coupons not deleted, by code", body = List<Coupon>)))]
pub async fn list_coupons(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Query(page): Query<PageParams>,
) -> ApiResult<axum::Json<List<Coupon>>> {
    let limit = page.limit()?;
    let rows = coupons::list(
        &state.db,
        &ctx.tenant_id,
        page.starting_after.as_deref(),
        limit,
    )
    .await?;
    Ok(axum::Json(List::from_rows(rows, limit)))
}

#[utoipa::path(get, path = "/v1/coupons/{code}", tag = "coupons",
    params(("code" = String, Path, description = "Coupon code")),
    responses((status = 200, description = "With `times_redeemed`", body = Coupon),
              (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn get_coupon(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(code): Path<String>,
) -> ApiResult<axum::Json<Coupon>> {
    Ok(axum::Json(
        coupons::get(&state.db, &ctx.tenant_id, &code).await?,
    ))
}

#[utoipa::path(delete, path = "/v1/coupons/{code}", tag = "coupons",
    params(("code" = String, Path, description = "Coupon code")),
    responses((status = 200, description = "Deleted: no new redemptions; discounts applied run their course", body = Coupon),
              (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn delete_coupon(
    State(state): State<AppState>,
    ctx: TenantCtx,
    origin: Origin,
    Path(code): Path<String>,
) -> ApiResult<axum::Json<Coupon>> {
    let now = ctx.now(&state.clock);
    Ok(axum::Json(
        coupons::delete(&state.db, &origin, &ctx.tenant_id, &code, now).await?,
    ))
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/discount", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    request_body = ApplyCoupon,
    responses((status = 200, description = "The subscription with its new discount (it replaces a current one)", body = Subscription),
              (status = 404, description = "`subscription_not_found`, `coupon_not_found`", body = crate::http::error::ErrorBody),
              (status = 409, description = "`coupon_not_redeemable`, `coupon_not_applicable`, `subscription_inactive`", body = crate::http::error::ErrorBody)))]
pub async fn apply_discount(
    State(state): State<AppState>,
    ctx: TenantCtx,
    origin: Origin,
    IdPath(id): IdPath<SubscriptionId>,
    Json(body): Json<ApplyCoupon>,
) -> ApiResult<axum::Json<Subscription>> {
    let now = ctx.now(&state.clock);
    Ok(axum::Json(
        discounts::apply(&state.db, &origin, &ctx.tenant_id, &id, &body.coupon, now).await?,
    ))
}

#[utoipa::path(delete, path = "/v1/subscriptions/{id}/discount", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    responses((status = 200, description = "The subscription, its discount ended", body = Subscription),
              (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn remove_discount(
    State(state): State<AppState>,
    ctx: TenantCtx,
    origin: Origin,
    IdPath(id): IdPath<SubscriptionId>,
) -> ApiResult<axum::Json<Subscription>> {
    let now = ctx.now(&state.clock);
    Ok(axum::Json(
        discounts::remove(&state.db, &origin, &ctx.tenant_id, &id, now).await?,
    ))
}
