//! The background worker. Every job is idempotent and safe to run in several processes at
//! once: due billing work (renewals, trial ends, scheduled changes, cancellations, invoice
//! finalization) for tenants on real time, and tidying (expired idempotency keys and leases).

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::billing::due::{self, Processed, Scope};
use crate::db::plans::PlanCache;

/// How often due work is looked for.
const DUE_INTERVAL: Duration = Duration::from_secs(5);
/// How often tables are tidied.
const CLEANUP_EVERY: u32 = 12;
/// Items per batch of due work, so shutdown is never kept waiting long.
const DUE_BATCH: u32 = 100;

/// Removes expired idempotency keys and long-expired leases; returns how many rows went.
pub async fn cleanup(db: &PgPool) -> Result<u64, sqlx::Error> {
    let keys =
        sqlx::query!("DELETE FROM idempotency_keys WHERE created_at < now() - interval '24 hours'")
            .execute(db)
            .await?
            .rows_affected();
    // Expired by the tenant's own clock (a test clock may stand in the past).
    let leases = sqlx::query!(
        "DELETE FROM leases l USING tenants t
         WHERE t.tenant_id = l.tenant_id
           AND l.expires_at < COALESCE(t.test_clock_now, now()) - interval '1 hour'"
    )
    .execute(db)
    .await?
    .rows_affected();
    Ok(keys + leases)
}

/// Runs all billing work due by real time, for tenants whose clock follows real time.
pub async fn run_due(db: &PgPool, plans: &PlanCache) -> crate::error::ApiResult<Processed> {
    let mut total = Processed::default();
    loop {
        let now = crate::clock::Clock.real_now();
        let done = due::run(db, plans, Scope::RealTime, now, DUE_BATCH).await?;
        let n = done.total();
        total.trial_ends += done.trial_ends;
        total.renewals += done.renewals;
        total.scheduled_changes += done.scheduled_changes;
        total.cancellations += done.cancellations;
        total.invoices_finalized += done.invoices_finalized;
        if n < DUE_BATCH {
            return Ok(total);
        }
    }
}

pub async fn run(db: PgPool, token: CancellationToken) {
    tracing::info!("worker started");
    let plans = PlanCache::default();
    let mut pass: u32 = 0;
    loop {
        match run_due(&db, &plans).await {
            Ok(done) if done.total() > 0 => tracing::info!(?done, "due billing work done"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e.message, "due billing work failed; retrying later"),
        }
        if pass % CLEANUP_EVERY == 0 {
            if let Err(e) = cleanup(&db).await {
                tracing::warn!(error = %e, "cleanup failed; retrying later");
            }
        }
        pass = pass.wrapping_add(1);
        tokio::select! {
            _ = token.cancelled() => break,
            _ = tokio::time::sleep(DUE_INTERVAL) => {}
        }
    }
    tracing::info!("worker stopped");
}
