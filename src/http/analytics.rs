//! Billing analytics.

use axum::extract::State;

use super::error::ApiResult;
use super::extract::Query;
use crate::analytics::{self, MrrSeries, Summary};
use crate::tenancy::TenantCtx;
use crate::AppState;

#[utoipa::path(get, path = "/v1/analytics/summary", tag = "analytics",
    responses((status = 200, description = "MRR, ARR, subscriptions by plan and the last 30 days, on the tenant's clock", body = Summary)))]
pub async fn summary(
    State(state): State<AppState>,
    ctx: TenantCtx,
) -> ApiResult<axum::Json<Summary>> {
    let now = ctx.now(&state.clock);
    Ok(axum::Json(
        analytics::summary(&state.db, &state.plans, &ctx.tenant_id, now).await?,
    ))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct MrrParams {
    /// 1 to 60 calendar months, the current one included; default 12.
    pub months: Option<u32>,
}

#[utoipa::path(get, path = "/v1/analytics/mrr", tag = "analytics", params(MrrParams),
    responses((status = 200, description = "MRR at the end of each month, oldest first, with its movements", body = MrrSeries),
              (status = 400, body = crate::http::error::ErrorBody)))]
pub async fn mrr(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Query(params): Query<MrrParams>,
) -> ApiResult<axum::Json<MrrSeries>> {
    let now = ctx.now(&state.clock);
    Ok(axum::Json(
        analytics::mrr_series(
            &state.db,
            &state.plans,
            &ctx.tenant_id,
            params.months.unwrap_or(12),
            now,
        )
        .await?,
    ))
}
