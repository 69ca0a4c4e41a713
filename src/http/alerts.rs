//! Usage alerts (SPEC §7): stored when recorded usage first crosses a level in a period.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::extract::{List, PageParams, Path, Query};
use crate::domain::qty::Qty;
use crate::http::error::ApiResult;
use crate::tenancy::TenantCtx;
use crate::AppState;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Alert {
    pub id: String,
    pub customer: String,
    pub feature: String,
    /// `warning`, `critical` or `exceeded`.
    pub level: String,
    /// The counter period it belongs to.
    pub period_start: DateTime<Utc>,
    /// The counter after the event that crossed the level.
    pub used: Qty,
    pub limit: Qty,
    pub created_at: DateTime<Utc>,
}

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
    let mut conn = state.db.acquire().await?;
    crate::customers::must_exist(&mut conn, &ctx.tenant_id, &customer).await?;
    let rows = sqlx::query!(
        "SELECT alert_id, customer_id, feature_key, level, period_start, used, limit_value,
                created_at
         FROM usage_alerts
         WHERE tenant_id = $1 AND customer_id = $2 AND ($3::text IS NULL OR alert_id < $3)
         ORDER BY alert_id DESC LIMIT $4",
        ctx.tenant_id,
        customer,
        page.starting_after,
        limit + 1
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|r| Alert {
        id: r.alert_id,
        customer: r.customer_id,
        feature: r.feature_key,
        level: r.level,
        period_start: r.period_start,
        used: Qty(r.used),
        limit: Qty(r.limit_value),
        created_at: r.created_at,
    })
    .collect();
    Ok(axum::Json(List::from_rows(rows, limit)))
}
