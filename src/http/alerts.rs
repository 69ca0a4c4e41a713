//! Usage alerts of a customer.

use axum::extract::State;

use super::error::ApiResult;
use super::extract::{List, PageParams, Path, Query};
use crate::entitlements::alerts::Alert;
use crate::tenancy::TenantCtx;
use crate::AppState;

#[utoipa::path(get, path = "/v1/customers/{id}/alerts", tag = "usage",
    params(("id" = String, Path, description = "Customer id"), PageParams),
    responses((status = 200, description = "The customer's alerts, newest first", body = List<Alert>),
              (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn customer_alerts(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(customer): Path<String>,
    Query(page): Query<PageParams>,
) -> ApiResult<axum::Json<List<Alert>>> {
    let limit = page.limit()?;
    let rows = state
        .entitlements
        .alerts(
            &ctx.tenant_id,
            &customer,
            page.starting_after.as_deref(),
            limit,
        )
        .await?;
    Ok(axum::Json(List::from_rows(rows, limit)))
}
