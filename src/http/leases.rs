//! Concurrency slots: take a lease, give it back.

use axum::extract::State;
use axum::http::StatusCode;

use super::error::ApiResult;
use super::extract::{IdPath, Json};
use crate::domain::id::LeaseId;
use crate::entitlements::leases::{CreateLease, Lease};
use crate::tenancy::TenantCtx;
use crate::AppState;

#[utoipa::path(post, path = "/v1/leases", tag = "usage", request_body = CreateLease,
    responses((status = 201, body = Lease), (status = 400, body = crate::http::error::ErrorBody),
              (status = 402, description = "limit_exceeded (all slots taken), not_in_plan or subscription_inactive", body = crate::http::error::ErrorBody),
              (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn create_lease(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Json(body): Json<CreateLease>,
) -> ApiResult<(StatusCode, axum::Json<Lease>)> {
    let lease = state.entitlements.take_lease(&ctx, &body).await?;
    Ok((StatusCode::CREATED, axum::Json(lease)))
}

#[utoipa::path(delete, path = "/v1/leases/{id}", tag = "usage",
    params(("id" = String, description = "Lease id")),
    responses((status = 200, description = "Released", body = Lease), (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn release_lease(
    State(state): State<AppState>,
    ctx: TenantCtx,
    IdPath(id): IdPath<LeaseId>,
) -> ApiResult<axum::Json<Lease>> {
    Ok(axum::Json(
        state.entitlements.release_lease(&ctx, &id).await?,
    ))
}
