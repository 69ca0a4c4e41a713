//! The authenticated tenant's own settings and API keys.

use axum::extract::State;

use super::error::ApiResult;
use super::extract::{IdPath, Json, List};
use crate::audit::Origin;
use crate::domain::id::ApiKeyId;
use crate::tenancy::settings::{self, ApiKey, Tenant, TenantPatch};
use crate::tenancy::TenantCtx;
use crate::AppState;

#[utoipa::path(get, path = "/v1/tenant", tag = "tenant", responses((status = 200, body = Tenant)))]
pub async fn get_tenant(
    State(state): State<AppState>,
    ctx: TenantCtx,
) -> ApiResult<axum::Json<Tenant>> {
    Ok(axum::Json(settings::get(&state.db, &ctx.tenant_id).await?))
}

#[utoipa::path(patch, path = "/v1/tenant", tag = "tenant", request_body = TenantPatch,
    responses((status = 200, body = Tenant), (status = 400, body = crate::http::error::ErrorBody),
              (status = 409, description = "`secrets_key_missing`: a Stripe secret was given and this Tollgate has no secrets key to seal it with", body = crate::http::error::ErrorBody)))]
pub async fn patch_tenant(
    State(state): State<AppState>,
    ctx: TenantCtx,
    origin: Origin,
    Json(patch): Json<TenantPatch>,
) -> ApiResult<axum::Json<Tenant>> {
    let now = ctx.now(&state.clock);
    Ok(axum::Json(
        settings::patch(
            &state.db,
            (&origin, &state.secrets),
            &ctx.tenant_id,
            &patch,
            now,
        )
        .await?,
    ))
}

#[utoipa::path(get, path = "/v1/api_keys", tag = "tenant",
    responses((status = 200, body = List<ApiKey>)))]
pub async fn list_api_keys(
    State(state): State<AppState>,
    ctx: TenantCtx,
) -> ApiResult<axum::Json<List<ApiKey>>> {
    let data = settings::list_keys(&state.db, &ctx.tenant_id).await?;
    Ok(axum::Json(List {
        data,
        has_more: false,
    }))
}

#[utoipa::path(delete, path = "/v1/api_keys/{id}", tag = "tenant",
    params(("id" = String, description = "API key id")),
    responses((status = 200, body = ApiKey), (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn revoke_api_key(
    State(state): State<AppState>,
    ctx: TenantCtx,
    origin: Origin,
    IdPath(key_id): IdPath<ApiKeyId>,
) -> ApiResult<axum::Json<ApiKey>> {
    let now = ctx.now(&state.clock);
    Ok(axum::Json(
        settings::revoke_key(&state.db, &origin, &ctx.tenant_id, &key_id, now).await?,
    ))
}
