//! Retention of raw usage events (SPEC §12): events older than the customer's current plan's
//! `retention_days` are purged in bounded batches, each its own short transaction. Period
//! totals, invoices, alerts and the audit log stay; a purged id stays a duplicate for ever.

use sqlx::PgPool;

use crate::db;
pub use crate::db::retention::PurgeScope;
use crate::error::Result;

/// Events deleted per statement: small enough that no lock is held for long.
pub const BATCH: i64 = 1_000;

/// Purges everything due in `scope`, a batch at a time, at most `max_batches` batches (the
/// rest is left for the next run); returns how many events went.
pub async fn purge(db: &PgPool, scope: PurgeScope<'_>, max_batches: u32) -> Result<u64> {
    let mut total = 0;
    for _ in 0..max_batches {
        let mut conn = db.acquire().await?;
        let n = db::retention::purge_usage_events(&mut conn, scope, BATCH).await?;
        total += n;
        if n < BATCH as u64 {
            break;
        }
    }
    Ok(total)
}
