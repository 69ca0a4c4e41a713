//! `stripe_outbox`: what Stripe must learn, written in the transaction of each change.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

/// Rows per state, the oldest pending one, and whether the tenant is connected.
pub struct Counts {
    pub pending: i64,
    pub failed: i64,
    pub sent: i64,
    pub oldest: Option<DateTime<Utc>>,
    pub connected: bool,
}

pub async fn counts(conn: &mut PgConnection, tenant_id: &str) -> Result<Counts, sqlx::Error> {
    sqlx::query_as!(
        Counts,
        r#"SELECT count(*) FILTER (WHERE o.status = 'pending') AS "pending!",
                  count(*) FILTER (WHERE o.status = 'failed') AS "failed!",
                  count(*) FILTER (WHERE o.status = 'sent') AS "sent!",
                  min(o.created_at) FILTER (WHERE o.status = 'pending') AS oldest,
                  (SELECT t.stripe_secret_key IS NOT NULL FROM tenants t WHERE t.tenant_id = $1) AS "connected!"
           FROM stripe_outbox o WHERE o.tenant_id = $1"#,
        tenant_id
    )
    .fetch_one(&mut *conn)
    .await
}

/// A row parked after its last attempt failed.
pub struct FailedRow {
    pub id: i64,
    pub kind: String,
    pub resource_id: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
}

pub async fn failed(
    conn: &mut PgConnection,
    tenant_id: &str,
    limit: i64,
) -> Result<Vec<FailedRow>, sqlx::Error> {
    sqlx::query_as!(
        FailedRow,
        "SELECT outbox_id AS id, kind, resource_id, attempts, last_error, created_at
         FROM stripe_outbox WHERE tenant_id = $1 AND status = 'failed'
         ORDER BY outbox_id DESC LIMIT $2",
        tenant_id,
        limit
    )
    .fetch_all(&mut *conn)
    .await
}
