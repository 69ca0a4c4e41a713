//! `Idempotency-Key` on POST: the same key and body within 24 hours replays the first response;
//! the same key with another body is `409 idempotency_key_reused`.
//!
//! A key is claimed with `INSERT … ON CONFLICT DO NOTHING` before the handler runs, so two
//! concurrent requests with one key never both do the work. Server errors release the claim so
//! the client can retry. `POST /v1/usage` is mounted without this step (`auth::defer_tenant`):
//! there the key is the usage event's id, deduplicated for as long as the event is kept.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::extract::{too_large, MAX_BODY_BYTES};
use crate::db::idempotency as db;
use crate::tenancy::sessions::SessionCtx;
use crate::tenancy::TenantCtx;
use crate::AppState;
use secrecy::ExposeSecret;

pub const HEADER: &str = "idempotency-key";

/// Put on a response that holds a secret shown only once (a new API key, a customer session's
/// token, an endpoint's signing secret): the copy the cache keeps for a replay is sealed
/// under the secrets key, never stored in clear (docs/SECRETS.md). Without a key it is not
/// kept: a replay is `409 idempotent_replay_unavailable`, and the work is not done twice.
#[derive(Debug, Clone, Copy)]
pub struct HoldsSecret;

/// The `tenant_id` under which admin-API idempotency keys are kept (no tenant id has a `_`
/// prefix).
const ADMIN_SCOPE: &str = "_admin";

pub async fn idempotency(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if req.method() != Method::POST {
        return Ok(next.run(req).await);
    }
    let Some(key) = req.headers().get(HEADER) else {
        return Ok(next.run(req).await);
    };
    let key = key
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .ok_or_else(|| {
            ApiError::invalid_param(
                "invalid_idempotency_key",
                "Idempotency-Key",
                "Idempotency-Key must be 1 to 255 visible ASCII characters.",
            )
        })?
        .to_string();
    // Keys are scoped per tenant, and a customer session's within the tenant to that session
    // (so one customer's key can never replay another's response); operator (admin API)
    // requests share one scope of their own.
    let (scope, key) = match (
        req.extensions().get::<SessionCtx>(),
        req.extensions().get::<TenantCtx>(),
    ) {
        (Some(session), _) => (
            session.tenant.tenant_id.to_string(),
            format!("{}:{key}", session.session_id),
        ),
        (None, Some(tenant)) => (tenant.tenant_id.to_string(), key),
        (None, None) if req.uri().path().starts_with("/admin/") => (ADMIN_SCOPE.to_string(), key),
        (None, None) => return Ok(next.run(req).await),
    };

    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| too_large())?;
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str());
    hasher.update([0]);
    hasher.update(parts.uri.path());
    hasher.update([0]);
    hasher.update(parts.uri.query().unwrap_or(""));
    hasher.update([0]);
    hasher.update(&bytes);
    let request_hash = hasher.finalize().to_vec();

    let now = crate::clock::Clock.real_now();
    let claimed = db::claim(&state.db, (&scope, &key), &request_hash, now).await?;

    if !claimed {
        let prior = db::prior(&state.db, &scope, &key).await?;
        let Some(prior) = prior else {
            return Err(ApiError::conflict(
                "idempotency_key_in_use",
                "A request with this Idempotency-Key is in progress; retry shortly.",
            ));
        };
        if prior.request_hash != request_hash {
            return Err(ApiError::conflict(
                "idempotency_key_reused",
                "This Idempotency-Key was used with a different request.",
            )
            .with_param("Idempotency-Key"));
        }
        return match (prior.response_status, prior.response_body) {
            (Some(status), Some(body)) => {
                let body = opened(&state, (&scope, &key), body)?;
                let status = StatusCode::from_u16(status as u16).unwrap_or(StatusCode::OK);
                let mut resp = (status, body).into_response();
                resp.headers_mut().insert(
                    axum::http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                resp.headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
                Ok(resp)
            }
            _ => Err(ApiError::conflict(
                "idempotency_key_in_use",
                "A request with this Idempotency-Key is in progress; retry shortly.",
            )),
        };
    }

    let resp = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let (resp_parts, resp_body) = resp.into_parts();
    let resp_bytes = match axum::body::to_bytes(resp_body, usize::MAX).await {
        Ok(b) => b,
        Err(err) => {
            tracing::error!(error = %err, "reading a response body for idempotency");
            release(&state, &scope, &key).await;
            return Err(ApiError::internal());
        }
    };
    if resp_parts.status.is_server_error() {
        release(&state, &scope, &key).await;
    } else {
        let (status, kept) = if resp_parts.extensions.get::<HoldsSecret>().is_some() {
            sealed(&state, (&scope, &key), resp_parts.status, &resp_bytes)
        } else {
            (resp_parts.status, resp_bytes.to_vec())
        };
        let saved = db::save_response(&state.db, &scope, &key, status.as_u16() as i16, &kept).await;
        if let Err(err) = saved {
            tracing::error!(error = %err, "saving an idempotent response");
        }
    }
    Ok(Response::from_parts(resp_parts, Body::from(resp_bytes)))
}

/// The copy of a response that holds a secret, as the cache keeps it (see [`HoldsSecret`]).
fn sealed(
    state: &AppState,
    (scope, key): (&str, &str),
    status: StatusCode,
    body: &[u8],
) -> (StatusCode, Vec<u8>) {
    let text = String::from_utf8_lossy(body);
    match state.secrets.seal_replay(scope, key, &text) {
        Ok(sealed) => (status, sealed.into_bytes()),
        Err(_) => {
            let refusal = ApiError::conflict(
                "idempotent_replay_unavailable",
                "The request with this Idempotency-Key was carried out; its answer held a secret, \
                 which is kept for a replay only under a secrets key (TOLLGATE_SECRETS_KEY).",
            );
            let body = serde_json::to_vec(&refusal.body()).unwrap_or_default();
            (StatusCode::CONFLICT, body)
        }
    }
}

/// A kept response as it is replayed: opened if it was sealed.
fn opened(
    state: &AppState,
    (scope, key): (&str, &str),
    body: Vec<u8>,
) -> Result<Vec<u8>, ApiError> {
    if !body.starts_with(b"tgenc:") {
        return Ok(body);
    }
    let stored = String::from_utf8_lossy(&body);
    let opened = state
        .secrets
        .open_replay(scope, key, &stored)
        .map_err(crate::error::Error::from)?;
    Ok(opened.expose_secret().as_bytes().to_vec())
}

async fn release(state: &AppState, scope: &str, key: &str) {
    if let Err(err) = db::release(&state.db, scope, key).await {
        tracing::warn!(error = %err, "releasing an idempotency key");
    }
}
