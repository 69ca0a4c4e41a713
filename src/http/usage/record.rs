//! `POST /v1/usage` and `POST /v1/usage/batch`.

use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, SemaphorePermit};

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

/// `POST /v1/usage/batch` bodies handled at once, in KiB: a batch's events take about twenty
/// times their JSON's size in memory while they wait for their commit, so this bounds the
/// server's memory under a flood of large batches (1000 events are about 50 KiB of JSON: about
/// twenty such batches at once). Small batches never wait for it.
pub const BATCH_KIB_IN_FLIGHT: usize = 1024;

/// The allowance of batch bodies in flight, and how many batches wait for room in it.
pub struct Admission {
    kib: Semaphore,
    max_kib: usize,
    waiting: AtomicUsize,
}

impl Admission {
    pub fn new(max_kib: usize) -> Self {
        Admission {
            kib: Semaphore::new(max_kib),
            max_kib,
            waiting: AtomicUsize::new(0),
        }
    }

    /// Takes `kib` of the allowance now, if free (tests).
    pub fn hold(&self, kib: u32) -> Option<SemaphorePermit<'_>> {
        self.kib.try_acquire_many(kib).ok()
    }

    /// Batches waiting for room now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Room for a body of `bytes`, once there is some; a body larger than the whole
    /// allowance waits for all of it and then goes alone.
    pub async fn admit(&self, bytes: usize) -> Option<SemaphorePermit<'_>> {
        let kib = u32::try_from(bytes.div_ceil(1024).clamp(1, self.max_kib)).ok()?;
        if let Ok(permit) = self.kib.try_acquire_many(kib) {
            return Some(permit);
        }
        let _waiting = Waiting::start(&self.waiting);
        self.kib.acquire_many(kib).await.ok()
    }
}

/// A batch counted as waiting until dropped: admitted, or given up (its client gone, its
/// request timed out).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn start(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("tollgate_usage_batches_waiting").increment(1.0);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("tollgate_usage_batches_waiting").decrement(1.0);
    }
}

/// Admission of a `POST /v1/usage/batch` by the size of its body (its `Content-Length`; a body
/// of unknown length counts as the largest allowed): it waits until the bodies being handled
/// leave room for it. Waiting holds no memory beyond the connection: the body is not read yet.
pub async fn admit_batch(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let bytes = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(crate::http::extract::MAX_BODY_BYTES);
    let _room = state.batch_admission.admit(bytes).await;
    next.run(req).await
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
