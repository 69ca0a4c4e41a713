//! Retention of raw usage events (SPEC §12): events older than the customer's current plan's
//! `retention_days` are purged in bounded batches, each its own short transaction. Period
//! totals, invoices, alerts and the audit log stay; a purged id stays a duplicate for ever.

use sqlx::PgPool;

use crate::db;
use crate::error::Result;

/// Whose raw usage events a purge looks at.
#[derive(Debug, Clone, Copy)]
pub enum PurgeScope<'a> {
    /// Every tenant whose clock is real time, at real time.
    RealTime,
    /// One tenant, with its clock at the given instant (a test-clock advance).
    Tenant(&'a crate::ids::TenantId, chrono::DateTime<chrono::Utc>),
}

/// Events deleted per statement: small enough that no lock is held for long.
pub const BATCH: i64 = 1_000;

/// Tenants looked at per real-time purge.
const TENANTS_PER_PASS: i64 = 1_000;

/// Purges everything due in `scope`, a batch at a time, at most `max_batches` batches (the
/// rest is left for the next run); returns how many events went. Every batch is one
/// tenant's (on Citus, a statement on the tenant's node); for every tenant on real time,
/// the tenants whose plans keep events for a limited time are found first, without locks.
pub async fn purge(db: &PgPool, scope: PurgeScope<'_>, max_batches: u32) -> Result<u64> {
    let mut budget = max_batches;
    match scope {
        PurgeScope::Tenant(tenant, at) => purge_tenant(db, tenant, at, &mut budget).await,
        PurgeScope::RealTime => {
            let now = crate::clock::Clock.real_now();
            let mut total = 0;
            for tenant in db::retention::retention_tenants(db, TENANTS_PER_PASS).await? {
                if budget == 0 {
                    break;
                }
                total += purge_tenant(db, &tenant, now, &mut budget).await?;
            }
            Ok(total)
        }
    }
}

/// Purges the tenant's events due at `at`, one batch of `BATCH` at a time while `budget`
/// batches are left.
async fn purge_tenant(
    db: &PgPool,
    tenant: &crate::ids::TenantId,
    at: chrono::DateTime<chrono::Utc>,
    budget: &mut u32,
) -> Result<u64> {
    let mut total = 0;
    while *budget > 0 {
        *budget -= 1;
        let mut conn = db.acquire().await?;
        let n = db::retention::purge_usage_events(&mut conn, tenant, at, BATCH).await?;
        total += n;
        if n < BATCH as u64 {
            break;
        }
    }
    Ok(total)
}
