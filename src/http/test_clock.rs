//! Test clocks: read the clock, advance it.

use axum::extract::State;

use super::error::ApiResult;
use super::extract::Json;
use crate::audit::Origin;
use crate::billing::test_clock::{self, AdvanceInput, Advanced, TestClock};
use crate::tenancy::TenantCtx;
use crate::AppState;

#[utoipa::path(get, path = "/v1/test_clock", tag = "test_clock",
    responses((status = 200, body = TestClock), (status = 403, body = crate::http::error::ErrorBody)))]
pub async fn get_clock(
    State(state): State<AppState>,
    ctx: TenantCtx,
) -> ApiResult<axum::Json<TestClock>> {
    Ok(axum::Json(test_clock::get(&ctx, &state.clock)?))
}

#[utoipa::path(post, path = "/v1/test_clock/advance", tag = "test_clock",
    request_body = AdvanceInput,
    responses((status = 200, description = "The clock stands at `to`; everything due up to it is done", body = Advanced),
              (status = 400, description = "clock_backwards or advance_too_far", body = crate::http::error::ErrorBody),
              (status = 403, body = crate::http::error::ErrorBody)))]
pub async fn advance(
    State(state): State<AppState>,
    ctx: TenantCtx,
    origin: Origin,
    Json(body): Json<AdvanceInput>,
) -> ApiResult<axum::Json<Advanced>> {
    let caller = (&ctx, &origin);
    let advanced =
        test_clock::advance(&state.db, &state.plans, &state.clock, caller, body.to).await?;
    Ok(axum::Json(advanced))
}
