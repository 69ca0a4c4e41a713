//! `customer_sessions`: only hashes of the tokens are stored.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;

use crate::domain::id::{CustomerSessionId, TenantId};

pub struct NewSession<'a> {
    pub tenant_id: &'a TenantId,
    pub session_id: &'a CustomerSessionId,
    pub customer_id: &'a str,
    pub token_hash: &'a [u8],
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Starts a session for a live customer; `None` if there is no such customer.
pub async fn insert(
    conn: &mut PgConnection,
    s: &NewSession<'_>,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar!(
        "INSERT INTO customer_sessions
             (tenant_id, session_id, customer_id, token_hash, created_at, expires_at)
         SELECT tenant_id, $2, customer_id, $4, $5, $6 FROM customers
         WHERE tenant_id = $1 AND customer_id = $3 AND deleted_at IS NULL
         RETURNING created_at",
        s.tenant_id.as_str(),
        s.session_id.as_str(),
        s.customer_id,
        s.token_hash,
        s.created_at,
        s.expires_at
    )
    .fetch_optional(&mut *conn)
    .await
}

/// A session as the API shows it.
#[derive(Debug, Clone)]
pub struct SessionRow {
    pub session_id: CustomerSessionId,
    pub customer_id: String,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// Revokes a session at once; `None` if the tenant has no such session.
pub async fn revoke(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    session_id: &CustomerSessionId,
    now: DateTime<Utc>,
) -> Result<Option<SessionRow>, sqlx::Error> {
    sqlx::query_as!(
        SessionRow,
        r#"UPDATE customer_sessions SET revoked_at = COALESCE(revoked_at, $3)
           WHERE tenant_id = $1 AND session_id = $2
           RETURNING session_id AS "session_id: CustomerSessionId", customer_id, expires_at,
                     revoked_at, created_at"#,
        tenant_id.as_str(),
        session_id.as_str(),
        now
    )
    .fetch_optional(&mut *conn)
    .await
}

/// A live session with its tenant, loaded in one query: what a session token authenticates.
pub struct SessionTenantRow {
    pub session_id: CustomerSessionId,
    pub customer_id: String,
    pub expires_at: DateTime<Utc>,
    pub tenant_id: TenantId,
    pub mode: String,
    pub default_plan: Option<String>,
    pub warning_threshold: Decimal,
    pub critical_threshold: Decimal,
    pub test_clock_now: Option<DateTime<Utc>>,
}

/// The session a token names, if it is neither expired (on real time) nor revoked, and its
/// customer still exists.
pub async fn by_token(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    token_hash: &[u8],
) -> Result<Option<SessionTenantRow>, sqlx::Error> {
    sqlx::query_as!(
        SessionTenantRow,
        r#"SELECT s.session_id AS "session_id: CustomerSessionId", s.customer_id, s.expires_at,
                  t.tenant_id AS "tenant_id: TenantId", t.mode, t.default_plan,
                  t.warning_threshold, t.critical_threshold, t.test_clock_now
           FROM customer_sessions s
           JOIN tenants t ON t.tenant_id = $1
           JOIN customers c ON c.tenant_id = $1 AND c.customer_id = s.customer_id
           WHERE s.tenant_id = $1 AND s.token_hash = $2
             AND s.revoked_at IS NULL AND s.expires_at > now() AND c.deleted_at IS NULL"#,
        tenant_id.as_str(),
        token_hash
    )
    .fetch_optional(&mut *conn)
    .await
}
