//! `POST /v1/check` and `GET /v1/customers/{id}/entitlements`.

use axum::extract::State;

use crate::entitlements::check::{CheckInput, CheckResult, EntitlementList};
use crate::http::error::ApiResult;
use crate::http::extract::{Json, Path};
use crate::tenancy::{Caller, TenantCtx};
use crate::AppState;

#[utoipa::path(post, path = "/v1/check", tag = "usage", request_body = CheckInput,
    responses((status = 200, body = CheckResult), (status = 400, body = crate::http::error::ErrorBody),
              (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn check(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CheckInput>,
) -> ApiResult<axum::Json<CheckResult>> {
    Ok(axum::Json(state.entitlements.check(&caller, &body).await?))
}

#[utoipa::path(get, path = "/v1/customers/{id}/entitlements", tag = "usage",
    params(("id" = String, Path, description = "Customer id")),
    responses((status = 200, description = "Every feature of the customer's plan, as a check for one more unit", body = EntitlementList),
              (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn entitlements(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(customer): Path<String>,
) -> ApiResult<axum::Json<EntitlementList>> {
    Ok(axum::Json(state.entitlements.list(&ctx, &customer).await?))
}
