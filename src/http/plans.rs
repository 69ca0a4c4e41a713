//! Plans and versions. `POST` creates, `PUT` makes a new version when the definition changed
//! (and is a no-op when it did not), `GET` compares plans for a pricing page.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use super::extract::{Json, List, PageParams, Path, Query};
use crate::audit::Origin;
use crate::catalog::plans::{self, Plan, WriteMode};
use crate::domain::plan::PlanInput;
use crate::tenancy::TenantCtx;
use crate::AppState;

#[utoipa::path(post, path = "/v1/plans", tag = "plans", request_body = PlanInput,
    responses((status = 201, body = Plan), (status = 400, body = crate::http::error::ErrorBody),
              (status = 409, body = crate::http::error::ErrorBody)))]
pub async fn create_plan(
    State(state): State<AppState>,
    ctx: TenantCtx,
    origin: Origin,
    Json(body): Json<PlanInput>,
) -> ApiResult<(StatusCode, axum::Json<Plan>)> {
    let key = body.key.clone().ok_or_else(|| {
        ApiError::invalid_param("missing_field", "key", "Missing required field `key`.")
    })?;
    let (plan, _) = plans::save(
        &state.db,
        &state.plans,
        &ctx.tenant_id,
        &key,
        &body,
        WriteMode::Create,
        (&origin, ctx.now(&state.clock)),
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(plan)))
}

#[utoipa::path(put, path = "/v1/plans/{key}", tag = "plans", request_body = PlanInput,
    params(("key" = String, Path, description = "Plan key")),
    responses((status = 200, description = "Unchanged, or a new version", body = Plan),
              (status = 201, description = "Created", body = Plan),
              (status = 400, body = crate::http::error::ErrorBody)))]
pub async fn put_plan(
    State(state): State<AppState>,
    ctx: TenantCtx,
    origin: Origin,
    Path(key): Path<String>,
    Json(body): Json<PlanInput>,
) -> ApiResult<(StatusCode, axum::Json<Plan>)> {
    if body.key.as_ref().is_some_and(|k| k != &key) {
        return Err(ApiError::invalid_param(
            "key_mismatch",
            "key",
            "The body's key differs from the path's.",
        ));
    }
    let (plan, written) = plans::save(
        &state.db,
        &state.plans,
        &ctx.tenant_id,
        &key,
        &body,
        WriteMode::Upsert,
        (&origin, ctx.now(&state.clock)),
    )
    .await?;
    let status = if written && plan.version == 1 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(plan)))
}

#[utoipa::path(get, path = "/v1/plans", tag = "plans", params(PageParams),
    responses((status = 200, description = "The newest version of each plan", body = List<Plan>)))]
pub async fn list_plans(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Query(page): Query<PageParams>,
) -> ApiResult<axum::Json<List<Plan>>> {
    let limit = page.limit()?;
    let rows = plans::list(
        &state.db,
        &state.plans,
        &ctx.tenant_id,
        page.starting_after.as_deref(),
        limit,
    )
    .await?;
    Ok(axum::Json(List::from_rows(rows, limit)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct VersionParam {
    /// A specific version (default: the newest).
    pub version: Option<i32>,
}

#[utoipa::path(get, path = "/v1/plans/{key}", tag = "plans",
    params(("key" = String, Path, description = "Plan key"), VersionParam),
    responses((status = 200, body = Plan), (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn get_plan(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(key): Path<String>,
    Query(q): Query<VersionParam>,
) -> ApiResult<axum::Json<Plan>> {
    let plan = plans::get(&state.db, &state.plans, &ctx.tenant_id, &key, q.version).await?;
    Ok(axum::Json(plan))
}
