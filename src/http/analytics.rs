//! Billing analytics.

use axum::extract::State;

use super::error::ApiResult;
use crate::analytics::{self, Summary};
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
