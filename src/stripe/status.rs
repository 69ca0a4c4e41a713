//! The state of a tenant's Stripe sync: what is pending, sent and parked.

use crate::ids::TenantId;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::db;
use crate::error::Result;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SyncCounts {
    pub pending: i64,
    pub failed: i64,
    pub sent: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FailedRow {
    pub id: i64,
    /// `customer`, `invoice`, `invoice_payment`, `invoice_void` or `meter_event`.
    pub kind: String,
    /// The Tollgate id it is about (customer, invoice or usage event).
    pub resource_id: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SyncStatus {
    /// Whether the tenant has a Stripe secret key.
    pub connected: bool,
    pub counts: SyncCounts,
    /// The oldest pending row's creation time (how far behind the sync is).
    pub oldest_pending_at: Option<DateTime<Utc>>,
    /// Rows parked after their last attempt failed, newest first.
    pub failed: Vec<FailedRow>,
}

/// Counts per state and up to `limit` parked rows, newest first.
pub async fn get(db: &PgPool, tenant_id: &TenantId, limit: i64) -> Result<SyncStatus> {
    let mut conn = db.acquire().await?;
    let counts = db::outbox::counts(&mut conn, tenant_id).await?;
    let failed = db::outbox::failed(&mut conn, tenant_id, limit)
        .await?
        .into_iter()
        .map(|r| FailedRow {
            id: r.id,
            kind: r.kind,
            resource_id: r.resource_id,
            attempts: r.attempts,
            last_error: r.last_error,
            created_at: r.created_at,
        })
        .collect();
    Ok(SyncStatus {
        connected: counts.connected,
        counts: SyncCounts {
            pending: counts.pending,
            failed: counts.failed,
            sent: counts.sent,
        },
        oldest_pending_at: counts.oldest,
        failed,
    })
}
