//! Usage read-outs: the current period, history, and per-member usage.

use axum::extract::State;
use serde::Deserialize;

use crate::entitlements::readouts::{CurrentUsage, MembersSummary, UsageHistory};
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{Path, Query};
use crate::tenancy::TenantCtx;
use crate::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PeriodParam {
    /// Only `current` for now.
    pub period: Option<String>,
}

#[utoipa::path(get, path = "/v1/customers/{id}/usage", tag = "usage",
    params(("id" = String, Path, description = "Customer id"), PeriodParam),
    responses((status = 200, description = "Per-feature totals for the current period", body = CurrentUsage),
              (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn current_usage(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(customer): Path<String>,
    Query(q): Query<PeriodParam>,
) -> ApiResult<axum::Json<CurrentUsage>> {
    if q.period.as_deref().is_some_and(|p| p != "current") {
        return Err(ApiError::invalid_param(
            "invalid_period",
            "period",
            "period must be `current`.",
        ));
    }
    Ok(axum::Json(
        state.entitlements.current_usage(&ctx, &customer).await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HistoryParam {
    /// How many months back (1 to 36, default 6).
    pub months: Option<i64>,
}

#[utoipa::path(get, path = "/v1/customers/{id}/usage/history", tag = "usage",
    params(("id" = String, Path, description = "Customer id"), HistoryParam),
    responses((status = 200, description = "Per-period totals, newest first", body = UsageHistory),
              (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn usage_history(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(customer): Path<String>,
    Query(q): Query<HistoryParam>,
) -> ApiResult<axum::Json<UsageHistory>> {
    let months = q.months.unwrap_or(6);
    Ok(axum::Json(
        state.entitlements.history(&ctx, &customer, months).await?,
    ))
}

#[utoipa::path(get, path = "/v1/customers/{id}/usage/members", tag = "usage",
    params(("id" = String, Path, description = "Customer (organisation) id")),
    responses((status = 200, description = "Current-period usage per member of an organisation, per metered feature", body = MembersSummary),
              (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn member_usage(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(customer): Path<String>,
) -> ApiResult<axum::Json<MembersSummary>> {
    Ok(axum::Json(
        state.entitlements.member_usage(&ctx, &customer).await?,
    ))
}
