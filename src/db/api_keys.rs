//! `api_keys`: only hashes of the keys are stored.

use crate::domain::id::ApiKeyId;
use crate::domain::id::TenantId;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

pub async fn insert(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    key_id: &ApiKeyId,
    hash: &[u8],
    hint: &str,
) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar!(
        "INSERT INTO api_keys (tenant_id, key_id, key_hash, key_hint) VALUES ($1, $2, $3, $4)
         RETURNING created_at",
        tenant_id.as_str(),
        key_id.as_str(),
        hash,
        hint
    )
    .fetch_one(&mut *conn)
    .await
}

pub struct KeyRow {
    pub id: ApiKeyId,
    pub hint: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

pub async fn list(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
) -> Result<Vec<KeyRow>, sqlx::Error> {
    sqlx::query_as!(
        KeyRow,
        "SELECT key_id AS \"id: ApiKeyId\", key_hint AS hint, created_at, revoked_at FROM api_keys
         WHERE tenant_id = $1 ORDER BY key_id",
        tenant_id.as_str()
    )
    .fetch_all(&mut *conn)
    .await
}

/// Revokes a key (at once, for every process: each request checks it); `None` if missing.
pub async fn revoke(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    key_id: &ApiKeyId,
    now: DateTime<Utc>,
) -> Result<Option<KeyRow>, sqlx::Error> {
    sqlx::query_as!(
        KeyRow,
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $3)
         WHERE tenant_id = $1 AND key_id = $2
         RETURNING key_id AS \"id: ApiKeyId\", key_hint AS hint, created_at, revoked_at",
        tenant_id.as_str(),
        key_id.as_str(),
        now
    )
    .fetch_optional(&mut *conn)
    .await
}
