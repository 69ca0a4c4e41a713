//! `leases`: concurrency slots held until released or expired.

use crate::domain::id::LeaseId;
use crate::domain::id::TenantId;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;

/// Serializes slot-taking for one customer and feature until the transaction ends (a
/// transaction-scoped advisory lock), so the limit holds across any number of processes.
pub async fn lock_slots(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    customer_id: &str,
    feature_key: &str,
) -> Result<(), sqlx::Error> {
    let lock_key = format!("lease\x1f{tenant_id}\x1f{customer_id}\x1f{feature_key}");
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        lock_key
    )
    .execute(&mut *conn)
    .await
    .map(drop)
}

pub struct NewLease<'a> {
    pub tenant_id: &'a TenantId,
    pub lease_id: &'a LeaseId,
    pub customer_id: &'a str,
    pub feature_key: &'a str,
    pub expires_at: DateTime<Utc>,
    pub now: DateTime<Utc>,
    /// The slots there are (`None`: unlimited).
    pub limit: Option<Decimal>,
}

/// Takes a slot if fewer than `limit` unexpired leases are held; `None` when all are taken.
/// Returns the creation time.
pub async fn take(
    conn: &mut PgConnection,
    l: &NewLease<'_>,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"INSERT INTO leases (tenant_id, lease_id, customer_id, feature_key, expires_at, created_at)
           SELECT $1, $2, $3, $4, $5, $6
           WHERE $7::numeric IS NULL
              OR (SELECT count(*) FROM leases
                   WHERE tenant_id = $1 AND customer_id = $3 AND feature_key = $4
                     AND expires_at > $6) < $7
           RETURNING created_at"#,
        l.tenant_id.as_str(),
        l.lease_id.as_str(),
        l.customer_id,
        l.feature_key,
        l.expires_at,
        l.now,
        l.limit
    )
    .fetch_optional(&mut *conn)
    .await
}

pub struct LeaseRow {
    pub lease_id: LeaseId,
    pub customer_id: String,
    pub feature_key: String,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// Releases a lease; `None` if there is none (released already).
pub async fn release(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    lease_id: &LeaseId,
) -> Result<Option<LeaseRow>, sqlx::Error> {
    sqlx::query_as!(
        LeaseRow,
        "DELETE FROM leases WHERE tenant_id = $1 AND lease_id = $2
         RETURNING lease_id AS \"lease_id: LeaseId\", customer_id, feature_key, expires_at, created_at",
        tenant_id.as_str(),
        lease_id.as_str()
    )
    .fetch_optional(&mut *conn)
    .await
}
