//! Authentication: tenant secret keys (`tg_test_…`, `tg_live_…`) and the operator's admin token.
//!
//! A key is `tg_<mode>_<tenant>_<secret>`: the tenant part lets the lookup use the
//! tenant-leading unique index, and only the SHA-256 of the whole key is stored.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use chrono::{DateTime, Utc};
use rand::distributions::Alphanumeric;
use rand::Rng;
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::domain::entitlement::Thresholds;
use crate::error::ApiError;
use crate::AppState;

/// The authenticated tenant of a request, loaded with the key in one query.
#[derive(Debug, Clone)]
pub struct TenantCtx {
    pub tenant_id: String,
    pub mode: String,
    pub key_id: String,
    pub default_plan: Option<String>,
    pub warning_threshold: Decimal,
    pub critical_threshold: Decimal,
    pub test_clock_now: Option<DateTime<Utc>>,
}

impl TenantCtx {
    pub fn thresholds(&self) -> Thresholds {
        Thresholds {
            warning: self.warning_threshold,
            critical: self.critical_threshold,
        }
    }

    /// The tenant's "now" (its test clock if frozen).
    pub fn now(&self, state: &AppState) -> DateTime<Utc> {
        state.clock.tenant_now(self.test_clock_now)
    }
}

/// A key whose check is left to the handler's own query, so the hot path (`/v1/check`,
/// `/v1/usage`) authenticates, resolves the plan and reads the counter in one round trip.
#[derive(Debug, Clone)]
pub struct DeferredKey {
    pub tenant_id: String,
    pub key_hash: Vec<u8>,
}

/// Who is calling: already authenticated, or to be authenticated by the handler's query.
#[derive(Debug, Clone)]
pub enum Caller {
    Ready(TenantCtx),
    Deferred(DeferredKey),
}

impl Caller {
    pub fn tenant_id(&self) -> &str {
        match self {
            Caller::Ready(ctx) => &ctx.tenant_id,
            Caller::Deferred(k) => &k.tenant_id,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        if let Some(ctx) = parts.extensions.get::<TenantCtx>() {
            return Ok(Caller::Ready(ctx.clone()));
        }
        parts
            .extensions
            .get::<DeferredKey>()
            .cloned()
            .map(Caller::Deferred)
            .ok_or_else(|| ApiError::unauthenticated("Missing API key."))
    }
}

/// Requests whose handler authenticates in its own query. A check carrying an
/// Idempotency-Key goes the ordinary way, since the idempotency layer needs the tenant first.
fn is_hot_path(parts: &Parts) -> bool {
    parts.method == axum::http::Method::POST
        && match parts.uri.path() {
            "/v1/usage" => true,
            "/v1/check" => !parts.headers.contains_key(super::idempotency::HEADER),
            _ => false,
        }
}

pub struct NewKey {
    pub key_id: String,
    pub secret: String,
    pub hash: Vec<u8>,
    pub hint: String,
}

pub fn hash_key(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// Mints a key for a tenant; the secret is returned once and only its hash is kept.
pub fn mint_key(tenant_id: &str, mode: &str) -> NewKey {
    let tenant_part = tenant_id.strip_prefix("ten_").unwrap_or(tenant_id);
    let random: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    let secret = format!("tg_{mode}_{tenant_part}_{random}");
    let hint = secret[secret.len() - 4..].to_string();
    NewKey {
        key_id: crate::ids::new_id("key"),
        hash: hash_key(&secret),
        secret,
        hint,
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(axum::http::header::AUTHORIZATION)?;
    let value = value.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    Some(token.trim())
}

/// The tenant id a key names, if it is shaped like a key.
fn tenant_of_key(key: &str) -> Option<String> {
    let rest = key
        .strip_prefix("tg_test_")
        .or_else(|| key.strip_prefix("tg_live_"))?;
    let (tenant, secret) = rest.split_once('_')?;
    if tenant.len() != 32 || !tenant.bytes().all(|b| b.is_ascii_hexdigit()) || secret.len() < 20 {
        return None;
    }
    Some(format!("ten_{tenant}"))
}

fn parse_key(parts: &Parts) -> Result<DeferredKey, ApiError> {
    let key = bearer(parts).ok_or_else(|| {
        ApiError::unauthenticated("Missing API key: send `Authorization: Bearer <key>`.")
    })?;
    let tenant_id = tenant_of_key(key).ok_or_else(invalid_key)?;
    Ok(DeferredKey {
        tenant_id,
        key_hash: hash_key(key),
    })
}

pub fn invalid_key() -> ApiError {
    ApiError::unauthenticated("Invalid API key.")
}

async fn authenticate(state: &AppState, parts: &Parts) -> Result<TenantCtx, ApiError> {
    let DeferredKey {
        tenant_id,
        key_hash: hash,
    } = parse_key(parts)?;
    let row = sqlx::query!(
        r#"SELECT t.tenant_id, t.mode, k.key_id, t.default_plan, t.warning_threshold,
                  t.critical_threshold, t.test_clock_now
           FROM api_keys k JOIN tenants t ON t.tenant_id = k.tenant_id
           WHERE k.tenant_id = $1 AND k.key_hash = $2 AND k.revoked_at IS NULL"#,
        tenant_id,
        hash
    )
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(invalid_key)?;
    Ok(TenantCtx {
        tenant_id: row.tenant_id,
        mode: row.mode,
        key_id: row.key_id,
        default_plan: row.default_plan,
        warning_threshold: row.warning_threshold,
        critical_threshold: row.critical_threshold,
        test_clock_now: row.test_clock_now,
    })
}

/// Middleware for `/v1`: authenticates once and leaves the tenant in the request extensions.
pub async fn require_tenant(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let (mut parts, body) = req.into_parts();
    if is_hot_path(&parts) {
        let key = parse_key(&parts)?;
        tracing::Span::current().record("tenant", key.tenant_id.as_str());
        parts.extensions.insert(key);
        // Hot paths never replay (is_hot_path excludes checks with an Idempotency-Key, and a
        // usage event's key is its id), so they skip the idempotency step.
        return Ok(next.run(Request::from_parts(parts, body)).await);
    }
    let ctx = authenticate(&state, &parts).await?;
    tracing::Span::current().record("tenant", ctx.tenant_id.as_str());
    parts.extensions.insert(ctx);
    // Idempotency-Key handling runs inside the same middleware: one layer per request.
    super::idempotency::idempotency(State(state), Request::from_parts(parts, body), next).await
}

impl<S: Send + Sync> FromRequestParts<S> for TenantCtx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<TenantCtx>()
            .cloned()
            .ok_or_else(|| ApiError::unauthenticated("Missing API key."))
    }
}

/// Middleware for `/admin/v1`: the operator's `TOLLGATE_ADMIN_TOKEN`, compared in constant time.
pub async fn require_admin(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let Some(expected) = &state.admin_token else {
        return Err(ApiError::forbidden(
            "admin_disabled",
            "The admin API is disabled: set TOLLGATE_ADMIN_TOKEN.",
        ));
    };
    let given = bearer(&parts).ok_or_else(|| {
        ApiError::unauthenticated("Missing admin token: send `Authorization: Bearer <token>`.")
    })?;
    let ok: bool = given.as_bytes().ct_eq(expected.expose().as_bytes()).into();
    if !ok {
        return Err(ApiError::unauthenticated("Invalid admin token."));
    }
    // Idempotency-Key handling runs inside the same middleware: one layer per request.
    super::idempotency::idempotency(State(state), Request::from_parts(parts, body), next).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_keys_name_their_tenant() {
        let tenant = crate::ids::new_id("ten");
        let key = mint_key(&tenant, "test");
        assert!(key.secret.starts_with("tg_test_"));
        assert_eq!(tenant_of_key(&key.secret).as_deref(), Some(tenant.as_str()));
        assert_eq!(key.hash, hash_key(&key.secret));
        assert_eq!(tenant_of_key("tg_test_nothex_abc"), None);
        assert_eq!(tenant_of_key("sk_live_whatever"), None);
    }
}
