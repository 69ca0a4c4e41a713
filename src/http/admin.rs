//! Operator endpoints (`/admin/v1`), guarded by `TOLLGATE_ADMIN_TOKEN`.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use super::extract::{Json, Path};
use crate::error::{ApiError, ApiResult};
use crate::AppState;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    pub name: String,
    /// `test` (default) or `live`.
    pub mode: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedTenant {
    pub id: String,
    pub name: String,
    pub mode: String,
    /// Shown only here; store it now.
    pub api_key: String,
    pub api_key_id: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    pub id: String,
    pub tenant: String,
    /// Shown only here; store it now.
    pub api_key: String,
    pub created_at: DateTime<Utc>,
}

/// Creates a tenant and its first API key in one transaction.
pub async fn create_tenant_in(db: &PgPool, name: &str, mode: &str) -> ApiResult<CreatedTenant> {
    let name = name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(ApiError::invalid_param(
            "invalid_name",
            "name",
            "name must be 1 to 200 characters.",
        ));
    }
    if mode != "test" && mode != "live" {
        return Err(ApiError::invalid_param(
            "invalid_mode",
            "mode",
            "mode must be \"test\" or \"live\".",
        ));
    }
    let tenant_id = crate::ids::new_id("ten");
    let key = super::auth::mint_key(&tenant_id, mode);
    let mut tx = db.begin().await?;
    let created_at = sqlx::query_scalar!(
        "INSERT INTO tenants (tenant_id, name, mode) VALUES ($1, $2, $3) RETURNING created_at",
        tenant_id,
        name,
        mode
    )
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query!(
        "INSERT INTO api_keys (tenant_id, key_id, key_hash, key_hint) VALUES ($1, $2, $3, $4)",
        tenant_id,
        key.key_id,
        key.hash,
        key.hint
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(CreatedTenant {
        id: tenant_id,
        name: name.to_string(),
        mode: mode.to_string(),
        api_key: key.secret,
        api_key_id: key.key_id,
        created_at,
    })
}

#[utoipa::path(post, path = "/admin/v1/tenants", tag = "admin", request_body = CreateTenant,
    responses((status = 201, body = CreatedTenant), (status = 400, body = crate::error::ErrorBody),
              (status = 401, body = crate::error::ErrorBody)))]
pub async fn create_tenant(
    State(state): State<AppState>,
    Json(body): Json<CreateTenant>,
) -> ApiResult<(StatusCode, axum::Json<CreatedTenant>)> {
    let mode = body.mode.as_deref().unwrap_or("test");
    let created = create_tenant_in(&state.db, &body.name, mode).await?;
    tracing::info!(tenant = %created.id, mode, "tenant created");
    Ok((StatusCode::CREATED, axum::Json(created)))
}

#[utoipa::path(post, path = "/admin/v1/tenants/{id}/api_keys", tag = "admin",
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 201, body = CreatedKey), (status = 404, body = crate::error::ErrorBody)))]
pub async fn create_api_key(
    State(state): State<AppState>,
    Path(tenant_id): Path<String>,
) -> ApiResult<(StatusCode, axum::Json<CreatedKey>)> {
    let mode = sqlx::query_scalar!("SELECT mode FROM tenants WHERE tenant_id = $1", tenant_id)
        .fetch_optional(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant_not_found", "No such tenant."))?;
    let key = super::auth::mint_key(&tenant_id, &mode);
    let created_at = sqlx::query_scalar!(
        "INSERT INTO api_keys (tenant_id, key_id, key_hash, key_hint) VALUES ($1, $2, $3, $4)
         RETURNING created_at",
        tenant_id,
        key.key_id,
        key.hash,
        key.hint
    )
    .fetch_one(&state.db)
    .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedKey {
            id: key.key_id,
            tenant: tenant_id,
            api_key: key.secret,
            created_at,
        }),
    ))
}
