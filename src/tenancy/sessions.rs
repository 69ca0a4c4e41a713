//! Customer sessions (SPEC §9): a short-lived token with which a frontend acts for one
//! customer — the `/v1/me` routes and the hosted portal. A token is `cs_<tenant>_<secret>`;
//! only its SHA-256 is stored, and every request checks it (revocation is immediate on every
//! process). Lifetimes run on real time, not a test clock.

use chrono::{DateTime, Duration, Utc};
use rand::distributions::Alphanumeric;
use rand::Rng;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use super::{customer_not_found, hash_key, DeferredKey, TenantCtx};
use crate::audit::{self, Change, Origin, Resource};
use crate::clock::Clock;
use crate::db;
use crate::db::sessions::{NewSession, SessionRow};
use crate::error::{Error, Result};
use crate::ids::{CustomerSessionId, PrefixedId, TenantId};

/// The token prefix.
pub const PREFIX: &str = "cs_";

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    pub customer: String,
    /// 60 to 86400 seconds, default 3600.
    pub ttl_seconds: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedSession {
    #[schema(value_type = String, example = "csn_0192f3a45b6c7d8e9f00112233445566")]
    pub id: CustomerSessionId,
    /// `cs_…`: shown only here. Give it to the customer's browser (the portal's
    /// `?session=`, or `Authorization: Bearer` on `/v1/me`).
    pub token: String,
    pub customer: String,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CustomerSession {
    #[schema(value_type = String, example = "csn_0192f3a45b6c7d8e9f00112233445566")]
    pub id: CustomerSessionId,
    pub customer: String,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl From<SessionRow> for CustomerSession {
    fn from(r: SessionRow) -> Self {
        CustomerSession {
            id: r.session_id,
            customer: r.customer_id,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
            created_at: r.created_at,
        }
    }
}

/// An authenticated session: the tenant and the one customer it acts for.
#[derive(Debug, Clone)]
pub struct SessionCtx {
    pub tenant: TenantCtx,
    pub session_id: CustomerSessionId,
    pub customer_id: String,
    pub expires_at: DateTime<Utc>,
}

pub fn invalid_session() -> Error {
    Error::unauthenticated("Invalid, expired or revoked customer session.")
}

/// The session a bearer token names, if it is shaped like one (the database is not asked).
pub fn parse_token(token: &str) -> Option<DeferredKey> {
    let rest = token.strip_prefix(PREFIX)?;
    let (tenant, secret) = rest.split_once('_')?;
    if secret.len() < 20 {
        return None;
    }
    Some(DeferredKey {
        tenant_id: TenantId::parse(&format!("ten_{tenant}"))?,
        key_hash: hash_key(token),
        session: true,
    })
}

/// Checks a session token against the database: the session, or 401.
pub async fn authenticate(db: &PgPool, token: &DeferredKey) -> Result<SessionCtx> {
    let mut conn = db.acquire().await?;
    let r = db::sessions::by_token(&mut conn, &token.tenant_id, &token.key_hash)
        .await?
        .ok_or_else(invalid_session)?;
    Ok(SessionCtx {
        tenant: TenantCtx {
            tenant_id: r.tenant_id,
            mode: r.mode,
            key_id: String::new(),
            default_plan: r.default_plan,
            warning_threshold: r.warning_threshold,
            critical_threshold: r.critical_threshold,
            test_clock_now: r.test_clock_now,
        },
        session_id: r.session_id,
        customer_id: r.customer_id,
        expires_at: r.expires_at,
    })
}

fn new_token(tenant_id: &TenantId) -> String {
    let tenant_part = &tenant_id.as_str()[TenantId::PREFIX.len() + 1..];
    let random: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    format!("{PREFIX}{tenant_part}_{random}")
}

/// Starts a session for a customer; the token is returned once. `now` is the tenant's clock
/// (for the audit log); the lifetime runs on real time.
pub async fn create(
    db: &PgPool,
    clock: &Clock,
    (origin, tenant_id): (&Origin, &TenantId),
    body: &CreateSession,
    now: DateTime<Utc>,
) -> Result<CreatedSession> {
    let ttl = body.ttl_seconds.unwrap_or(3600);
    if !(60..=86_400).contains(&ttl) {
        return Err(Error::invalid_param(
            "invalid_ttl",
            "ttl_seconds",
            "ttl_seconds must be between 60 and 86400.",
        ));
    }
    let session_id: CustomerSessionId = crate::ids::new();
    let token = new_token(tenant_id);
    let started = clock.real_now();
    let expires_at = started + Duration::seconds(ttl);
    let mut tx = audit::begin(db, origin).await?;
    let created_at = db::sessions::insert(
        &mut tx,
        &NewSession {
            tenant_id,
            session_id: &session_id,
            customer_id: &body.customer,
            token_hash: &hash_key(&token),
            created_at: started,
            expires_at,
        },
    )
    .await?
    .ok_or_else(customer_not_found)?;
    let shown = CustomerSession {
        id: session_id,
        customer: body.customer.clone(),
        expires_at,
        revoked_at: None,
        created_at,
    };
    let change = Change::new(Resource::CustomerSession(&shown.id), "created")
        .customer(&body.customer)
        .after(&shown);
    audit::record(&mut tx, tenant_id, change, now).await?;
    tx.commit().await?;
    Ok(CreatedSession {
        id: shown.id,
        token,
        customer: shown.customer,
        expires_at,
        created_at,
    })
}

/// Revokes a session at once (for every process: each request checks it).
pub async fn revoke(
    db: &PgPool,
    (origin, tenant_id): (&Origin, &TenantId),
    session_id: &CustomerSessionId,
    now: DateTime<Utc>,
) -> Result<CustomerSession> {
    let mut tx = audit::begin(db, origin).await?;
    let row = db::sessions::revoke(&mut tx, tenant_id, session_id, now)
        .await?
        .ok_or_else(Error::no_such::<CustomerSessionId>)?;
    let shown = CustomerSession::from(row);
    let change = Change::new(Resource::CustomerSession(&shown.id), "revoked")
        .customer(&shown.customer)
        .after(&shown);
    audit::record(&mut tx, tenant_id, change, now).await?;
    tx.commit().await?;
    Ok(shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_their_tenant_and_nothing_else_parses() {
        let tenant: TenantId = crate::ids::new();
        let token = new_token(&tenant);
        assert!(token.starts_with("cs_"));
        let parsed = parse_token(&token).unwrap();
        assert_eq!(parsed.tenant_id, tenant);
        assert_eq!(parsed.key_hash, hash_key(&token));
        assert!(parse_token("cs_nothex_abcdefghijklmnopqrstuvwxyz").is_none());
        assert!(parse_token(&token.replacen("cs_", "tg_test_", 1)).is_none());
        assert!(parse_token(&format!("{}_short", &token[..35])).is_none());
    }
}
