//! Tenants and their API keys: who is calling, and creating tenants and keys.
//!
//! A key is `tg_<mode>_<tenant>_<secret>`: the tenant part lets the lookup use the
//! tenant-leading unique index, and only the SHA-256 of the whole key is stored.

pub mod console;
pub mod sessions;
pub mod settings;

use crate::ids::{ApiKeyId, PrefixedId, TenantId};
use chrono::{DateTime, Utc};
use rand::distributions::Alphanumeric;
use rand::Rng;
use rust_decimal::Decimal;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::audit::{self, Change, Origin, Resource};
use crate::clock::Clock;
use crate::db;
use crate::domain::entitlement::Thresholds;
use crate::error::{Error, Result};

/// An authenticated tenant, loaded with its key in one query.
#[derive(Debug, Clone)]
pub struct TenantCtx {
    pub tenant_id: TenantId,
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
    pub fn now(&self, clock: &Clock) -> DateTime<Utc> {
        clock.tenant_now(self.test_clock_now)
    }
}

impl From<db::tenants::TenantKeyRow> for TenantCtx {
    fn from(r: db::tenants::TenantKeyRow) -> Self {
        TenantCtx {
            tenant_id: r.tenant_id,
            mode: r.mode,
            key_id: r.key_id,
            default_plan: r.default_plan,
            warning_threshold: r.warning_threshold,
            critical_threshold: r.critical_threshold,
            test_clock_now: r.test_clock_now,
        }
    }
}

/// A key whose check is left to the operation's own query, so the hot path (`/v1/check`,
/// `/v1/usage`) authenticates, resolves the plan and reads the counter in one round trip.
#[derive(Debug, Clone)]
pub struct DeferredKey {
    pub tenant_id: TenantId,
    pub key_hash: Vec<u8>,
    /// A customer session's token (`cs_…`) rather than an API key: the query checks it
    /// against `customer_sessions`, and the customer is the session's.
    pub session: bool,
}

/// Who is calling: already authenticated, or to be authenticated by the operation's query.
#[derive(Debug, Clone)]
pub enum Caller {
    Ready(TenantCtx),
    Deferred(DeferredKey),
}

impl Caller {
    pub fn tenant_id(&self) -> &TenantId {
        match self {
            Caller::Ready(ctx) => &ctx.tenant_id,
            Caller::Deferred(k) => &k.tenant_id,
        }
    }

    /// The hash to check inside the operation's query (empty when already authenticated).
    pub fn key_hash(&self) -> &[u8] {
        match self {
            Caller::Ready(_) => &[],
            Caller::Deferred(k) => &k.key_hash,
        }
    }

    /// Whether the deferred credential is a customer session's token.
    pub fn is_session(&self) -> bool {
        matches!(self, Caller::Deferred(k) if k.session)
    }

    /// The hash of the API key whose row a usage event's recording checks has not changed
    /// (`Stamps`): the deferred key's; `None` for a customer session (checked by its own
    /// resolve) or a caller authenticated already.
    pub fn stamp_key(&self) -> Option<&[u8]> {
        match self {
            Caller::Deferred(k) if !k.session && !k.key_hash.is_empty() => Some(&k.key_hash),
            _ => None,
        }
    }
}

/// The error for a customer that does not exist (or was erased), for every service.
pub fn customer_not_found() -> Error {
    Error::not_found("customer_not_found", "No such customer.").with_param("customer")
}

pub fn invalid_key() -> Error {
    Error::unauthenticated("Invalid API key.")
}

pub fn hash_key(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// The key a bearer token names, if it is shaped like a key (the database is not asked).
pub fn parse_key(token: &str) -> Option<DeferredKey> {
    Some(DeferredKey {
        tenant_id: tenant_of_key(token)?,
        key_hash: hash_key(token),
        session: false,
    })
}

/// The tenant id a key names, if it is shaped like a key.
fn tenant_of_key(key: &str) -> Option<TenantId> {
    let rest = key
        .strip_prefix("tg_test_")
        .or_else(|| key.strip_prefix("tg_live_"))?;
    let (tenant, secret) = rest.split_once('_')?;
    if secret.len() < 20 {
        return None;
    }
    TenantId::parse(&format!("ten_{tenant}"))
}

/// Checks a key against the database: the tenant it belongs to, or 401.
pub async fn authenticate(db: &PgPool, key: &DeferredKey) -> Result<TenantCtx> {
    let mut conn = db.acquire().await?;
    db::tenants::by_key(&mut conn, &key.tenant_id, &key.key_hash)
        .await?
        .map(TenantCtx::from)
        .ok_or_else(invalid_key)
}

pub struct NewKey {
    pub key_id: ApiKeyId,
    pub secret: String,
    pub hash: Vec<u8>,
    pub hint: String,
}

/// Mints a key for a tenant; the secret is returned once and only its hash is kept.
pub fn mint_key(tenant_id: &TenantId, mode: &str) -> NewKey {
    let tenant_part = &tenant_id.as_str()[TenantId::PREFIX.len() + 1..];
    let random: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    let secret = format!("tg_{mode}_{tenant_part}_{random}");
    let hint = secret[secret.len() - 4..].to_string();
    NewKey {
        key_id: crate::ids::new(),
        hash: hash_key(&secret),
        secret,
        hint,
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedTenant {
    pub id: String,
    pub name: String,
    pub mode: String,
    /// Shown only here; store it now.
    pub api_key: String,
    pub api_key_id: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    pub id: String,
    pub tenant: String,
    /// Shown only here; store it now.
    pub api_key: String,
    pub created_at: DateTime<Utc>,
}

/// Creates a tenant and its first API key in one transaction (the admin API and
/// `tollgate tenant create`).
pub async fn create_tenant(
    db: &PgPool,
    origin: &Origin,
    name: &str,
    mode: &str,
    now: DateTime<Utc>,
) -> Result<CreatedTenant> {
    let name = name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(Error::invalid_param(
            "invalid_name",
            "name",
            "name must be 1 to 200 characters.",
        ));
    }
    if mode != "test" && mode != "live" {
        return Err(Error::invalid_param(
            "invalid_mode",
            "mode",
            "mode must be \"test\" or \"live\".",
        ));
    }
    let tenant_id: TenantId = crate::ids::new();
    let key = mint_key(&tenant_id, mode);
    let mut tx = audit::begin(db, origin).await?;
    let created_at = db::tenants::insert(&mut tx, &tenant_id, name, mode).await?;
    db::api_keys::insert(&mut tx, &tenant_id, &key.key_id, &key.hash, &key.hint).await?;
    record_key_created(&mut tx, &tenant_id, &key, created_at, now).await?;
    tx.commit().await?;
    Ok(CreatedTenant {
        id: tenant_id.into_string(),
        name: name.to_string(),
        mode: mode.to_string(),
        api_key: key.secret,
        api_key_id: key.key_id.into_string(),
        created_at,
    })
}

/// Mints another key for a tenant.
pub async fn create_api_key(
    db: &PgPool,
    clock: &Clock,
    origin: &Origin,
    tenant_id: &TenantId,
) -> Result<CreatedKey> {
    let mut tx = audit::begin(db, origin).await?;
    let mode = db::tenants::mode(&mut tx, tenant_id)
        .await?
        .ok_or_else(Error::no_such::<TenantId>)?;
    let now = clock.tenant_now(db::tenants::test_clock(&mut tx, tenant_id).await?);
    let key = mint_key(tenant_id, &mode);
    let created_at =
        db::api_keys::insert(&mut tx, tenant_id, &key.key_id, &key.hash, &key.hint).await?;
    record_key_created(&mut tx, tenant_id, &key, created_at, now).await?;
    tx.commit().await?;
    Ok(CreatedKey {
        id: key.key_id.into_string(),
        tenant: tenant_id.to_string(),
        api_key: key.secret,
        created_at,
    })
}

/// `api_key.created`: the key's id and hint, never its secret.
async fn record_key_created(
    conn: &mut sqlx::PgConnection,
    tenant_id: &TenantId,
    key: &NewKey,
    created_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<()> {
    let shown = settings::ApiKey {
        id: key.key_id.clone(),
        hint: key.hint.clone(),
        created_at,
        revoked_at: None,
    };
    let change = Change::new(Resource::ApiKey(&key.key_id), "created").after(&shown);
    audit::record(conn, tenant_id, change, now).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_keys_name_their_tenant() {
        let tenant: TenantId = crate::ids::new();
        let key = mint_key(&tenant, "test");
        assert!(key.secret.starts_with("tg_test_"));
        assert_eq!(tenant_of_key(&key.secret), Some(tenant));
        assert_eq!(key.hash, hash_key(&key.secret));
        assert_eq!(tenant_of_key("tg_test_nothex_abc"), None);
        assert_eq!(tenant_of_key("sk_live_whatever"), None);
    }
}
