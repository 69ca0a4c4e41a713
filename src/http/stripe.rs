//! Stripe: webhooks in (authenticated by Stripe's signature, not by a key), and the state of
//! the outbox sync.

use axum::extract::State;
use axum::http::HeaderMap;
use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use super::extract::{IdPath, Query};
use crate::domain::id::TenantId;
use crate::stripe::inbound::{self, WebhookReceived};
use crate::stripe::status::{self, SyncStatus};
use crate::tenancy::TenantCtx;
use crate::AppState;

#[utoipa::path(post, path = "/v1/stripe/webhooks/{tenant_id}", tag = "stripe",
    params(("tenant_id" = String, Path, description = "The tenant the Stripe account belongs to"),
           ("Stripe-Signature" = String, Header, description = "Stripe's signature of the body")),
    request_body(content = Object, description = "A Stripe event, as Stripe sends it"),
    responses((status = 200, body = WebhookReceived),
              (status = 400, description = "Missing or bad signature, expired timestamp, or not JSON; nothing applied", body = crate::http::error::ErrorBody),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 503, description = "`secrets_unreadable`: this server's secrets key does not open the tenant's webhook secret (it was rotated and the server not yet restarted); Stripe retries", body = crate::http::error::ErrorBody)))]
pub async fn stripe_webhook(
    State(state): State<AppState>,
    IdPath(tenant_id): IdPath<TenantId>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<axum::Json<WebhookReceived>> {
    let signature = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    let request_id = headers
        .get(super::auth::REQUEST_ID)
        .and_then(|v| v.to_str().ok());
    let received = inbound::receive(
        &state.db,
        (&state.plans, &state.secrets),
        (&state.clock, request_id),
        &tenant_id,
        signature,
        &body,
    )
    .await?;
    Ok(axum::Json(received))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SyncParams {
    /// How many failed rows to list (1 to 100, default 20).
    pub limit: Option<i64>,
}

#[utoipa::path(get, path = "/v1/stripe/sync", tag = "stripe",
    params(SyncParams),
    responses((status = 200, body = SyncStatus)))]
pub async fn sync_status(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Query(params): Query<SyncParams>,
) -> ApiResult<axum::Json<SyncStatus>> {
    let limit = match params.limit {
        None => 20,
        Some(n) if (1..=100).contains(&n) => n,
        Some(_) => {
            return Err(ApiError::invalid_param(
                "invalid_limit",
                "limit",
                "limit must be between 1 and 100.",
            ))
        }
    };
    Ok(axum::Json(
        status::get(&state.db, &ctx.tenant_id, limit).await?,
    ))
}
