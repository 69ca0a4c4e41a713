//! Authentication at the edge: tenant secret keys (`tg_test_…`, `tg_live_…`; checked by
//! [`crate::tenancy`]) and the operator's admin token. Which routes check the key inside
//! their own query (the hot path) is a property of the route: the layer it is mounted with
//! in `http::build_app`.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::idempotency::{self, HEADER as IDEMPOTENCY_KEY};
use crate::audit::{Actor, Origin};
use crate::ids::{ApiKeyId, PrefixedId};
use crate::tenancy::sessions::{self, SessionCtx};
use crate::tenancy::{self, Caller, DeferredKey, TenantCtx};
use crate::AppState;

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

/// Who a request acts as, for the audit log: the tenant's API key on `/v1`, the customer
/// session on `/v1/me`, the operator on `/admin/v1` (set by [`require_admin`]), with the
/// request's `x-request-id`.
impl<S: Send + Sync> FromRequestParts<S> for Origin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let request_id = parts
            .headers
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if parts.extensions.get::<AdminCaller>().is_some() {
            return Ok(Origin::new(Actor::Admin, request_id));
        }
        if let Some(session) = parts.extensions.get::<SessionCtx>() {
            let actor = Actor::Session(session.session_id.clone());
            return Ok(Origin::new(actor, request_id));
        }
        let ctx = parts
            .extensions
            .get::<TenantCtx>()
            .ok_or_else(|| ApiError::unauthenticated("Missing API key."))?;
        let key = ApiKeyId::parse(&ctx.key_id)
            .ok_or_else(|| ApiError::unauthenticated("Missing API key."))?;
        Ok(Origin::new(Actor::Key(key), request_id))
    }
}

/// Marks a request authenticated by the admin token.
#[derive(Debug, Clone, Copy)]
struct AdminCaller;

/// The header tower-http's request-id layers set and propagate.
pub const REQUEST_ID: &str = "x-request-id";

/// The customer session's token of a `/v1/me` request, parsed (not yet checked): a tenant
/// key there is `customer_session_required`.
fn session_token(parts: &Parts) -> Result<DeferredKey, ApiError> {
    let token = bearer(parts).ok_or_else(|| {
        ApiError::unauthenticated("Missing customer session: send `Authorization: Bearer cs_…`.")
    })?;
    if tenancy::parse_key(token).is_some() {
        return Err(session_required());
    }
    sessions::parse_token(token).ok_or_else(|| ApiError::from(sessions::invalid_session()))
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(axum::http::header::AUTHORIZATION)?;
    let value = value.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    Some(token.trim())
}

fn parse_key(parts: &Parts) -> Result<DeferredKey, ApiError> {
    let key = bearer(parts).ok_or_else(|| {
        ApiError::unauthenticated("Missing API key: send `Authorization: Bearer <key>`.")
    })?;
    if key.starts_with(sessions::PREFIX) {
        return Err(session_not_allowed());
    }
    tenancy::parse_key(key).ok_or_else(|| tenancy::invalid_key().into())
}

/// A customer session's token on a route that is not one of its own (SPEC §9: 403).
fn session_not_allowed() -> ApiError {
    ApiError::forbidden(
        "customer_session_not_allowed",
        "A customer session may only use the /v1/me routes.",
    )
}

/// Middleware for `/v1/me`: a customer session's token (`cs_…`), checked in one query; the
/// session (and its tenant) are left in the request extensions, then Idempotency-Key handling.
/// A tenant key here is 403: these routes act for the session's one customer.
pub async fn require_session(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let (mut parts, body) = req.into_parts();
    let token = session_token(&parts)?;
    let session = sessions::authenticate(&state.db, &token).await?;
    tracing::Span::current().record("tenant", session.tenant.tenant_id.as_str());
    parts.extensions.insert(session.tenant.clone());
    parts.extensions.insert(session);
    idempotency::idempotency(State(state), Request::from_parts(parts, body), next).await
}

/// Middleware for `POST /v1/me/check`: the session's token is only parsed here and checked
/// inside the check's own statement (`db::resolve::fetch_batch`), as `/v1/check` does with
/// keys, so a session's check is one round trip too. With an Idempotency-Key it goes the
/// ordinary way ([`require_session`]), since replaying needs the session first.
pub async fn defer_session_unless_idempotent(
    state: State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if req.headers().contains_key(IDEMPOTENCY_KEY) {
        return require_session(state, req, next).await;
    }
    let (mut parts, body) = req.into_parts();
    let key = session_token(&parts)?;
    tracing::Span::current().record("tenant", key.tenant_id.as_str());
    parts.extensions.insert(key);
    Ok(next.run(Request::from_parts(parts, body)).await)
}

/// Middleware for the `/v1/me` routes a browser calls (SPEC §9, "Browsers"): a request with
/// a session token and an `Origin` outside the tenant's non-empty `cors_origins` is `403
/// origin_not_allowed`. Requests without `Origin` (servers, not browsers) and preflights
/// (which carry no token; the CORS layer answers them) pass; a token that does not parse is
/// left to the authentication after this.
pub async fn allowed_origin(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(origin) = req.headers().get(axum::http::header::ORIGIN).cloned() else {
        return Ok(next.run(req).await);
    };
    let (parts, body) = req.into_parts();
    if let Ok(key) = session_token(&parts) {
        let origin = origin.to_str().unwrap_or_default();
        if !crate::tenancy::settings::admits_origin(&state.db, &key.tenant_id, origin).await? {
            return Err(ApiError::forbidden(
                "origin_not_allowed",
                "This tenant's customer sessions are not used from this origin \
                 (PATCH /v1/tenant cors_origins).",
            ));
        }
    }
    Ok(next.run(Request::from_parts(parts, body)).await)
}

/// A tenant key on a `/v1/me` route (SPEC §9: these act for a customer session).
fn session_required() -> ApiError {
    ApiError::forbidden(
        "customer_session_required",
        "The /v1/me routes act for a customer session; use a cs_… token \
         (POST /v1/customer_sessions).",
    )
}

/// Who a `/v1/me` check is for: a session already authenticated (its customer known), or a
/// session token the check's own statement will authenticate (its customer resolved there).
pub struct MeCaller {
    pub caller: Caller,
    /// Empty when the check resolves it from the session.
    pub customer: String,
}

impl<S: Send + Sync> FromRequestParts<S> for MeCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        if let Some(s) = parts.extensions.get::<SessionCtx>() {
            return Ok(MeCaller {
                caller: Caller::Ready(s.tenant.clone()),
                customer: s.customer_id.clone(),
            });
        }
        match parts.extensions.get::<DeferredKey>() {
            Some(key) if key.session => Ok(MeCaller {
                caller: Caller::Deferred(key.clone()),
                customer: String::new(),
            }),
            _ => Err(ApiError::unauthenticated("Missing customer session.")),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for SessionCtx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<SessionCtx>()
            .cloned()
            .ok_or_else(|| ApiError::unauthenticated("Missing customer session."))
    }
}

/// Middleware for the `/v1` routes: authenticates once (one query), leaves the tenant in the
/// request extensions, then handles `Idempotency-Key`.
pub async fn require_tenant(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let (mut parts, body) = req.into_parts();
    let key = parse_key(&parts)?;
    let ctx = tenancy::authenticate(&state.db, &key).await?;
    tracing::Span::current().record("tenant", ctx.tenant_id.as_str());
    parts.extensions.insert(ctx);
    // Idempotency-Key handling runs inside the same middleware: one layer per request.
    idempotency::idempotency(State(state), Request::from_parts(parts, body), next).await
}

/// Middleware for routes that authenticate inside their own query (`POST /v1/usage`): the
/// key is only parsed here and checked by the handler's first statement, so the hot path is
/// one round trip. These routes do not replay Idempotency-Keys (a usage event's key is its
/// id, deduplicated for as long as the event is kept).
pub async fn defer_tenant(req: Request, next: Next) -> Result<Response, ApiError> {
    let (mut parts, body) = req.into_parts();
    let key = parse_key(&parts)?;
    tracing::Span::current().record("tenant", key.tenant_id.as_str());
    parts.extensions.insert(key);
    Ok(next.run(Request::from_parts(parts, body)).await)
}

/// [`defer_tenant`] for routes that replay Idempotency-Keys (`POST /v1/check`): a request
/// carrying one goes the ordinary way ([`require_tenant`]), since replaying needs the tenant
/// first.
pub async fn defer_tenant_unless_idempotent(
    state: State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if req.headers().contains_key(IDEMPOTENCY_KEY) {
        require_tenant(state, req, next).await
    } else {
        defer_tenant(req, next).await
    }
}

/// Middleware for `/admin/v1`: the operator's `TOLLGATE_ADMIN_TOKEN`, compared in constant time.
pub async fn require_admin(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let (mut parts, body) = req.into_parts();
    let Some(expected) = &state.admin_token else {
        return Err(ApiError::forbidden(
            "admin_disabled",
            "The admin API is disabled: set TOLLGATE_ADMIN_TOKEN.",
        ));
    };
    let given = bearer(&parts).ok_or_else(|| {
        ApiError::unauthenticated("Missing admin token: send `Authorization: Bearer <token>`.")
    })?;
    let ok: bool = given
        .as_bytes()
        .ct_eq(expected.expose_secret().as_bytes())
        .into();
    if !ok {
        return Err(ApiError::unauthenticated("Invalid admin token."));
    }
    parts.extensions.insert(AdminCaller);
    // Idempotency-Key handling runs inside the same middleware: one layer per request.
    idempotency::idempotency(State(state), Request::from_parts(parts, body), next).await
}
