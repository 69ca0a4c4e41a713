//! The background worker. Every job is idempotent and safe to run in several processes at
//! once. For now it keeps tables tidy: expired idempotency keys and leases.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// One pass of every job; returns how many rows it cleaned.
pub async fn run_once(db: &PgPool) -> Result<u64, sqlx::Error> {
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

pub async fn run(db: PgPool, token: CancellationToken) {
    tracing::info!("worker started");
    loop {
        if let Err(e) = run_once(&db).await {
            tracing::warn!(error = %e, "worker pass failed; retrying later");
        }
        tokio::select! {
            _ = token.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
    }
    tracing::info!("worker stopped");
}
