//! Outbound webhook endpoints and their delivery log.

use axum::extract::State;
use axum::http::StatusCode;

use super::error::ApiResult;
use super::extract::{IdPath, Json, List, PageParams, Query};
use crate::audit::Origin;
use crate::domain::id::EndpointId;
use crate::http::idempotency::HoldsSecret;
use crate::tenancy::TenantCtx;
use crate::webhooks::endpoints::{self, CreateEndpoint, Delivery, Endpoint};
use crate::AppState;
use axum::Extension;

#[utoipa::path(post, path = "/v1/webhook_endpoints", tag = "webhooks", request_body = CreateEndpoint,
    responses((status = 201, description = "Created; the secret is shown only here", body = Endpoint),
              (status = 400, body = crate::http::error::ErrorBody),
              (status = 409, description = "`secrets_key_missing`: this Tollgate has no secrets key to seal the signing secret with", body = crate::http::error::ErrorBody)))]
pub async fn create_endpoint(
    State(state): State<AppState>,
    ctx: TenantCtx,
    origin: Origin,
    Json(body): Json<CreateEndpoint>,
) -> ApiResult<(StatusCode, Extension<HoldsSecret>, axum::Json<Endpoint>)> {
    let endpoint = endpoints::create(
        &state.db,
        (&origin, &state.secrets),
        &ctx.tenant_id,
        &body,
        ctx.now(&state.clock),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Extension(HoldsSecret),
        axum::Json(endpoint),
    ))
}

#[utoipa::path(get, path = "/v1/webhook_endpoints", tag = "webhooks",
    responses((status = 200, description = "Every endpoint of the tenant", body = List<Endpoint>)))]
pub async fn list_endpoints(
    State(state): State<AppState>,
    ctx: TenantCtx,
) -> ApiResult<axum::Json<List<Endpoint>>> {
    let data = endpoints::list(&state.db, &ctx.tenant_id).await?;
    Ok(axum::Json(List {
        data,
        has_more: false,
    }))
}

#[utoipa::path(delete, path = "/v1/webhook_endpoints/{id}", tag = "webhooks",
    params(("id" = String, description = "Endpoint id")),
    responses((status = 204, description = "Deleted; pending deliveries to it are given up"),
              (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn delete_endpoint(
    State(state): State<AppState>,
    ctx: TenantCtx,
    origin: Origin,
    IdPath(id): IdPath<EndpointId>,
) -> ApiResult<StatusCode> {
    endpoints::delete(
        &state.db,
        &origin,
        &ctx.tenant_id,
        &id,
        ctx.now(&state.clock),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/webhook_endpoints/{id}/deliveries", tag = "webhooks",
    params(("id" = String, description = "Endpoint id"), PageParams),
    responses((status = 200, description = "Deliveries to the endpoint, newest first", body = List<Delivery>),
              (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    ctx: TenantCtx,
    IdPath(id): IdPath<EndpointId>,
    Query(page): Query<PageParams>,
) -> ApiResult<axum::Json<List<Delivery>>> {
    let limit = page.limit()?;
    let rows = endpoints::deliveries(
        &state.db,
        &ctx.tenant_id,
        &id,
        page.starting_after.as_deref(),
        limit,
    )
    .await?;
    Ok(axum::Json(List::from_rows(rows, limit)))
}
