//! `idempotency_keys`: a key is claimed before the work and its response saved after it.

use sqlx::PgPool;

/// Claims a key for `request_hash` at `now` (real time); an expired record (older than 24
/// hours) is taken over. `false`: someone holds it.
pub async fn claim(
    db: &PgPool,
    (scope, key): (&str, &str),
    request_hash: &[u8],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query_scalar!(
        r#"INSERT INTO idempotency_keys (tenant_id, idempotency_key, request_hash, created_at)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (tenant_id, idempotency_key) DO UPDATE
               SET request_hash = EXCLUDED.request_hash, response_status = NULL,
                   response_body = NULL, created_at = EXCLUDED.created_at
               WHERE idempotency_keys.created_at < $5
           RETURNING true AS "claimed!""#,
        scope,
        key,
        request_hash,
        now,
        now - chrono::Duration::hours(24)
    )
    .fetch_optional(db)
    .await?
    .is_some())
}

pub struct Prior {
    pub request_hash: Vec<u8>,
    pub response_status: Option<i16>,
    pub response_body: Option<Vec<u8>>,
}

/// The record of a claimed key (`None` if it was released meanwhile).
pub async fn prior(db: &PgPool, scope: &str, key: &str) -> Result<Option<Prior>, sqlx::Error> {
    sqlx::query_as!(
        Prior,
        "SELECT request_hash, response_status, response_body FROM idempotency_keys
             WHERE tenant_id = $1 AND idempotency_key = $2",
        scope,
        key
    )
    .fetch_optional(db)
    .await
}

pub async fn save_response(
    db: &PgPool,
    scope: &str,
    key: &str,
    status: i16,
    body: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE idempotency_keys SET response_status = $3, response_body = $4
             WHERE tenant_id = $1 AND idempotency_key = $2",
        scope,
        key,
        status,
        body
    )
    .execute(db)
    .await
    .map(drop)
}

/// Gives a key back (the work failed on the server's side, so a retry may do it).
pub async fn release(db: &PgPool, scope: &str, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND idempotency_key = $2",
        scope,
        key
    )
    .execute(db)
    .await
    .map(drop)
}
