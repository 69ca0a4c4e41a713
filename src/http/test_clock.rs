//! Test clocks (SPEC §13): a test-mode tenant's clock follows real time until first advanced,
//! then stands still where it was last moved to. Advancing runs, in time order, all the work
//! that falls due on the way.

use axum::extract::State;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::extract::Json;
use crate::billing::due::{self, Processed, Scope};
use crate::http::error::{ApiError, ApiResult};
use crate::tenancy::TenantCtx;
use crate::AppState;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TestClock {
    pub now: DateTime<Utc>,
    /// Whether the clock has been advanced (and so stands still).
    pub frozen: bool,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdvanceInput {
    pub to: DateTime<Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Advanced {
    pub now: DateTime<Utc>,
    pub frozen: bool,
    /// The work done on the way.
    pub processed: Processed,
}

/// How far one advance may move the clock (the due work is done within the request).
const MAX_ADVANCE_DAYS: i64 = 366 * 5;

fn test_mode_only(ctx: &TenantCtx) -> ApiResult<()> {
    if ctx.mode != "test" {
        return Err(ApiError::forbidden(
            "live_mode",
            "Test clocks exist only for test-mode tenants.",
        ));
    }
    Ok(())
}

#[utoipa::path(get, path = "/v1/test_clock", tag = "test_clock",
    responses((status = 200, body = TestClock), (status = 403, body = crate::http::error::ErrorBody)))]
pub async fn get_clock(
    State(state): State<AppState>,
    ctx: TenantCtx,
) -> ApiResult<axum::Json<TestClock>> {
    test_mode_only(&ctx)?;
    Ok(axum::Json(TestClock {
        now: ctx.now(&state.clock),
        frozen: ctx.test_clock_now.is_some(),
    }))
}

#[utoipa::path(post, path = "/v1/test_clock/advance", tag = "test_clock",
    request_body = AdvanceInput,
    responses((status = 200, description = "The clock stands at `to`; everything due up to it is done", body = Advanced),
              (status = 400, description = "clock_backwards or advance_too_far", body = crate::http::error::ErrorBody),
              (status = 403, body = crate::http::error::ErrorBody)))]
pub async fn advance(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Json(body): Json<AdvanceInput>,
) -> ApiResult<axum::Json<Advanced>> {
    test_mode_only(&ctx)?;
    let to = chrono::SubsecRound::trunc_subsecs(body.to, 6);
    // One advance per tenant at a time: this transaction holds the tenant's advisory lock
    // until the clock is set (and releases it if the request is dropped).
    let mut guard = state.db.begin().await?;
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended('tollgate.test_clock.' || $1, 0))",
        ctx.tenant_id
    )
    .execute(&mut *guard)
    .await?;
    // Read the clock under the lock (a concurrent advance may just have moved it).
    let current = sqlx::query_scalar!(
        "SELECT test_clock_now FROM tenants WHERE tenant_id = $1",
        ctx.tenant_id
    )
    .fetch_one(&mut *guard)
    .await?;
    let now = state.clock.tenant_now(current);
    if to < now {
        return Err(ApiError::invalid_param(
            "clock_backwards",
            "to",
            format!("The clock is at {now}; it only moves forward."),
        ));
    }
    if to - now > Duration::days(MAX_ADVANCE_DAYS) {
        return Err(ApiError::invalid_param(
            "advance_too_far",
            "to",
            "One advance may move the clock at most 5 years.",
        ));
    }
    // Freeze the clock where it is first, so the real-time worker leaves this tenant alone.
    if current.is_none() {
        sqlx::query!(
            "UPDATE tenants SET test_clock_now = $2 WHERE tenant_id = $1 AND test_clock_now IS NULL",
            ctx.tenant_id,
            now
        )
        .execute(&state.db)
        .await?;
    }
    let processed = due::run(
        &state.db,
        &state.plans,
        Scope::Tenant(&ctx.tenant_id),
        to,
        u32::MAX,
    )
    .await?;
    sqlx::query!(
        "UPDATE tenants SET test_clock_now = $2, updated_at = now() WHERE tenant_id = $1",
        ctx.tenant_id,
        to
    )
    .execute(&mut *guard)
    .await?;
    guard.commit().await?;
    Ok(axum::Json(Advanced {
        now: to,
        frozen: true,
        processed,
    }))
}
