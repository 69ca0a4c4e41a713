//! Console sign-ins (SPEC §9): a tenant API key, given once at `/console/login`, is exchanged
//! for a console session — a `tgc_<tenant>_<secret>` token for an HttpOnly cookie, of which
//! only the hash is stored. It lasts 12 hours (real time), ends at sign-out, and ends at once
//! when the key it was made with is revoked.

use chrono::Duration;
use rand::distributions::Alphanumeric;
use rand::Rng;
use sqlx::PgPool;

use super::{hash_key, parse_key, DeferredKey, TenantCtx};
use crate::clock::Clock;
use crate::db;
use crate::error::{Error, Result};
use crate::ids::{ApiKeyId, PrefixedId, TenantId};

/// The token prefix.
pub const PREFIX: &str = "tgc_";

/// How long a sign-in lasts.
pub const LIFETIME_HOURS: i64 = 12;

fn invalid() -> Error {
    Error::unauthenticated("Not signed in, or the sign-in has expired.")
}

/// Signs in with a tenant API key: the console token (shown to the browser only, as a cookie).
pub async fn sign_in(db: &PgPool, clock: &Clock, api_key: &str) -> Result<String> {
    let key = parse_key(api_key.trim()).ok_or_else(super::invalid_key)?;
    let ctx = super::authenticate(db, &key).await?;
    let key_id = ApiKeyId::parse(&ctx.key_id).ok_or_else(super::invalid_key)?;
    let tenant_part = &ctx.tenant_id.as_str()[TenantId::PREFIX.len() + 1..];
    let random: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    let token = format!("{PREFIX}{tenant_part}_{random}");
    let session_id = crate::ids::new_id("cons");
    let expires_at = clock.real_now() + Duration::hours(LIFETIME_HOURS);
    let mut conn = db.acquire().await?;
    db::console_sessions::insert(
        &mut conn,
        &ctx.tenant_id,
        &session_id,
        &key_id,
        &hash_key(&token),
        expires_at,
    )
    .await?;
    Ok(token)
}

fn parse(token: &str) -> Option<DeferredKey> {
    let rest = token.strip_prefix(PREFIX)?;
    let (tenant, secret) = rest.split_once('_')?;
    if secret.len() < 20 {
        return None;
    }
    Some(DeferredKey {
        tenant_id: TenantId::parse(&format!("ten_{tenant}"))?,
        key_hash: hash_key(token),
        session: false,
    })
}

/// The tenant a console token signs in, or 401.
pub async fn authenticate(db: &PgPool, token: &str) -> Result<TenantCtx> {
    let key = parse(token).ok_or_else(invalid)?;
    let mut conn = db.acquire().await?;
    db::console_sessions::by_token(&mut conn, &key.tenant_id, &key.key_hash)
        .await?
        .map(TenantCtx::from)
        .ok_or_else(invalid)
}

/// Signs out (a token of no session is fine: it is signed out already).
pub async fn sign_out(db: &PgPool, token: &str) -> Result<()> {
    if let Some(key) = parse(token) {
        let mut conn = db.acquire().await?;
        db::console_sessions::delete(&mut conn, &key.tenant_id, &key.key_hash).await?;
    }
    Ok(())
}
