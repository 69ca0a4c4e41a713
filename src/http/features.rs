//! Features: the things plans grant.

use axum::extract::State;
use axum::http::StatusCode;

use super::error::ApiResult;
use super::extract::{Json, List, PageParams, Path, Query};
use crate::audit::Origin;
use crate::catalog::features::{self, CreateFeature, Feature};
use crate::tenancy::TenantCtx;
use crate::AppState;

#[utoipa::path(post, path = "/v1/features", tag = "features", request_body = CreateFeature,
    responses((status = 201, body = Feature), (status = 400, body = crate::http::error::ErrorBody),
              (status = 409, body = crate::http::error::ErrorBody)))]
pub async fn create_feature(
    State(state): State<AppState>,
    ctx: TenantCtx,
    origin: Origin,
    Json(body): Json<CreateFeature>,
) -> ApiResult<(StatusCode, axum::Json<Feature>)> {
    let now = ctx.now(&state.clock);
    let feature = features::create(&state.db, &origin, &ctx.tenant_id, &body, now).await?;
    Ok((StatusCode::CREATED, axum::Json(feature)))
}

#[utoipa::path(get, path = "/v1/features", tag = "features", params(PageParams),
    responses((status = 200, body = List<Feature>)))]
pub async fn list_features(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Query(page): Query<PageParams>,
) -> ApiResult<axum::Json<List<Feature>>> {
    let limit = page.limit()?;
    let rows = features::list(
        &state.db,
        &ctx.tenant_id,
        page.starting_after.as_deref(),
        limit,
    )
    .await?;
    Ok(axum::Json(List::from_rows(rows, limit)))
}

#[utoipa::path(get, path = "/v1/features/{key}", tag = "features",
    params(("key" = String, Path, description = "Feature key")),
    responses((status = 200, body = Feature), (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn get_feature(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(key): Path<String>,
) -> ApiResult<axum::Json<Feature>> {
    Ok(axum::Json(
        features::get(&state.db, &ctx.tenant_id, &key).await?,
    ))
}
