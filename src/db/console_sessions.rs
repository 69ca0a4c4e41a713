//! `console_sessions`: staff sign-ins to the console; only hashes of the tokens are stored.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::db::tenants::TenantKeyRow;
use crate::domain::id::{ApiKeyId, TenantId};

pub async fn insert(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    session_id: &str,
    key_id: &ApiKeyId,
    token_hash: &[u8],
    expires_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO console_sessions (tenant_id, session_id, key_id, token_hash, expires_at)
         VALUES ($1, $2, $3, $4, $5)",
        tenant_id.as_str(),
        session_id,
        key_id.as_str(),
        token_hash,
        expires_at
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The tenant a live console session belongs to: neither expired (real time) nor made with a
/// key revoked since.
pub async fn by_token(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    token_hash: &[u8],
) -> Result<Option<TenantKeyRow>, sqlx::Error> {
    sqlx::query_as!(
        TenantKeyRow,
        r#"SELECT t.tenant_id AS "tenant_id: TenantId", t.mode, k.key_id, t.default_plan,
                  t.warning_threshold, t.critical_threshold, t.test_clock_now
           FROM console_sessions s
           JOIN api_keys k ON k.tenant_id = $1 AND k.key_id = s.key_id
           JOIN tenants t ON t.tenant_id = $1
           WHERE s.tenant_id = $1 AND s.token_hash = $2
             AND s.expires_at > now() AND k.revoked_at IS NULL"#,
        tenant_id.as_str(),
        token_hash
    )
    .fetch_optional(&mut *conn)
    .await
}

/// Signs a session out.
pub async fn delete(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    token_hash: &[u8],
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!(
        "DELETE FROM console_sessions WHERE tenant_id = $1 AND token_hash = $2",
        tenant_id.as_str(),
        token_hash
    )
    .execute(&mut *conn)
    .await?
    .rows_affected())
}
