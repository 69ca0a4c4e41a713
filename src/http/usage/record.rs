//! `POST /v1/usage` and `POST /v1/usage/batch`.

use axum::extract::State;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};

use crate::entitlements::record::{BatchStatus, UsageInput, UsageResult};
use crate::http::error::{ApiError, ApiResult, ErrorDetail};
use crate::http::extract::{from_value, Json};
use crate::http::idempotency;
use crate::tenancy::{Caller, TenantCtx};
use crate::AppState;

#[utoipa::path(post, path = "/v1/usage", tag = "usage", request_body = UsageInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "Used as the event id when the body has none")),
    responses((status = 200, body = UsageResult), (status = 400, body = crate::http::error::ErrorBody),
              (status = 402, description = "limit_exceeded, spend_cap_reached, not_in_plan or subscription_inactive; nothing recorded", body = crate::http::error::ErrorBody),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, description = "period_closed: the timestamp's period is invoiced", body = crate::http::error::ErrorBody)))]
pub async fn record_usage(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Json(body): Json<UsageInput>,
) -> ApiResult<axum::Json<UsageResult>> {
    let header_id = headers
        .get(idempotency::HEADER)
        .and_then(|v| v.to_str().ok());
    let result = state.entitlements.record(&caller, body, header_id).await?;
    Ok(axum::Json(result))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchInput {
    /// Up to 1000 events, each shaped like `POST /v1/usage`'s body.
    #[schema(value_type = Vec<UsageInput>)]
    pub events: Vec<serde_json::Value>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchItem {
    pub index: usize,
    pub status: BatchStatus,
    pub result: Option<UsageResult>,
    pub error: Option<ErrorDetail>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchResult {
    pub results: Vec<BatchItem>,
}

#[utoipa::path(post, path = "/v1/usage/batch", tag = "usage", request_body = BatchInput,
    responses((status = 200, body = BatchResult), (status = 400, body = crate::http::error::ErrorBody)))]
pub async fn record_usage_batch(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Json(body): Json<BatchInput>,
) -> ApiResult<axum::Json<BatchResult>> {
    // Each event is read on its own, so one malformed event is reported in its place.
    let events = body
        .events
        .into_iter()
        .map(from_value::<UsageInput>)
        .collect();
    let outcomes = state.entitlements.record_batch(&ctx, events).await?;
    let results = outcomes
        .into_iter()
        .enumerate()
        .map(|(index, (status, outcome))| match outcome {
            Ok(result) => BatchItem {
                index,
                status,
                result: Some(result),
                error: None,
            },
            Err(e) => BatchItem {
                index,
                status,
                result: None,
                error: Some(ApiError::from(e).body().error),
            },
        })
        .collect();
    Ok(axum::Json(BatchResult { results }))
}
