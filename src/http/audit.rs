//! The audit log (SPEC §12).

use axum::extract::State;

use super::error::ApiResult;
use super::extract::{List, Query};
use crate::audit::{self, AuditEntry};
use crate::tenancy::TenantCtx;
use crate::AppState;

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// Only entries about this resource, `<type>/<id>` (e.g. `customer/user_123`).
    pub resource: Option<String>,
    /// Only entries by this actor (`key_…`, `admin`, `cli`, `session:<id>`,
    /// `stripe:<event id>`, `worker`).
    pub actor: Option<String>,
    /// Only entries with this action, `<type>.<verb>` (e.g. `invoice.paid`).
    pub action: Option<String>,
    /// 1 to 100, default 20.
    pub limit: Option<i64>,
    /// The id of the last entry of the previous page.
    pub starting_after: Option<String>,
}

#[utoipa::path(get, path = "/v1/audit_log", tag = "governance", params(AuditParams),
    responses((status = 200, description = "Entries newest first (equal times: the later inserted first)", body = List<AuditEntry>),
              (status = 400, body = crate::http::error::ErrorBody),
              (status = 404, description = "`starting_after` names no entry", body = crate::http::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Query(params): Query<AuditParams>,
) -> ApiResult<axum::Json<List<AuditEntry>>> {
    let limit = super::extract::PageParams {
        limit: params.limit,
        starting_after: None,
    }
    .limit()?;
    let rows = audit::list(
        &state.db,
        &ctx.tenant_id,
        &audit::Query {
            resource: params.resource.as_deref(),
            actor: params.actor.as_deref(),
            action: params.action.as_deref(),
            starting_after: params.starting_after.as_deref(),
            limit,
        },
    )
    .await?;
    Ok(axum::Json(List::from_rows(rows, limit)))
}
