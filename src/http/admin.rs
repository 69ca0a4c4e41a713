//! Operator endpoints (`/admin/v1`), guarded by `TOLLGATE_ADMIN_TOKEN`.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;

use super::error::ApiResult;
use super::extract::{IdPath, Json};
use crate::audit::Origin;
use crate::domain::id::TenantId;
use crate::http::idempotency::HoldsSecret;
use crate::tenancy::{self, CreatedKey, CreatedTenant};
use crate::AppState;
use axum::Extension;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    pub name: String,
    /// `test` (default) or `live`.
    pub mode: Option<String>,
}

#[utoipa::path(post, path = "/admin/v1/tenants", tag = "admin", request_body = CreateTenant,
    responses((status = 201, body = CreatedTenant), (status = 400, body = crate::http::error::ErrorBody),
              (status = 401, body = crate::http::error::ErrorBody)))]
pub async fn create_tenant(
    State(state): State<AppState>,
    origin: Origin,
    Json(body): Json<CreateTenant>,
) -> ApiResult<(
    StatusCode,
    Extension<HoldsSecret>,
    axum::Json<CreatedTenant>,
)> {
    let mode = body.mode.as_deref().unwrap_or("test");
    let now = state.clock.real_now();
    let created = tenancy::create_tenant(&state.db, &origin, &body.name, mode, now).await?;
    tracing::info!(tenant = %created.id, mode, "tenant created");
    Ok((
        StatusCode::CREATED,
        Extension(HoldsSecret),
        axum::Json(created),
    ))
}

#[utoipa::path(post, path = "/admin/v1/tenants/{id}/api_keys", tag = "admin",
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 201, body = CreatedKey), (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn create_api_key(
    State(state): State<AppState>,
    origin: Origin,
    IdPath(tenant_id): IdPath<TenantId>,
) -> ApiResult<(StatusCode, Extension<HoldsSecret>, axum::Json<CreatedKey>)> {
    let created = tenancy::create_api_key(&state.db, &state.clock, &origin, &tenant_id).await?;
    Ok((
        StatusCode::CREATED,
        Extension(HoldsSecret),
        axum::Json(created),
    ))
}
