//! Test support: runs the background jobs synchronously and reads internal counters, so the
//! black-box tests in `tests/` drive the worker without reaching into module paths that
//! move when the code is reorganized. Nothing here is used by the server itself.

use crate::ids::TenantId;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

pub use crate::billing::due::Processed;
use crate::db::hot_pool::HotConn;
use crate::db::plans::PlanCache;
use crate::error::Result;
pub use crate::stripe::sync::SyncConfig;
pub use crate::webhooks::DeliveryConfig;
use crate::AppState;

/// A Stripe sync configuration with millisecond backoff, for tests.
pub fn fast_stripe_sync() -> SyncConfig {
    SyncConfig {
        timeout: Duration::from_secs(5),
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(4),
        max_attempts: 100,
        batch: 8,
    }
}

/// A webhook delivery configuration with millisecond backoff, for tests.
pub fn fast_webhook_delivery() -> DeliveryConfig {
    DeliveryConfig {
        timeout: Duration::from_secs(5),
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(4),
        give_up_after: Duration::from_secs(3600),
    }
}

/// One pass of the Stripe outbox worker: sends what is due; returns how many rows it took.
pub async fn send_stripe_outbox(state: &AppState, cfg: &SyncConfig) -> Result<usize> {
    crate::stripe::sync::drain(&state.db, &state.plans, cfg).await
}

/// Outbox rows not yet sent (nor parked).
pub async fn pending_stripe_rows(db: &PgPool) -> Result<i64> {
    Ok(crate::db::outbox::pending_count(db).await?)
}

/// Webhook deliveries not yet made (nor given up).
pub async fn pending_deliveries(db: &PgPool) -> Result<i64> {
    Ok(crate::db::webhooks::pending_count(db).await?)
}

/// One pass of the webhook worker: delivers up to `max` due deliveries.
pub async fn deliver_webhooks(
    db: &PgPool,
    http: &reqwest::Client,
    cfg: &DeliveryConfig,
    max: i64,
) -> Result<usize> {
    Ok(crate::webhooks::deliver_due(db, http, cfg, max).await?)
}

/// Runs the due billing work of every real-time tenant, as the worker's loop does.
pub async fn run_due(db: &PgPool) -> Result<Processed> {
    crate::worker::run_due(db, &PlanCache::default()).await
}

/// Runs one tenant's due billing work up to `until` (what a test-clock advance runs).
pub async fn run_due_for_tenant(
    db: &PgPool,
    tenant_id: &TenantId,
    until: DateTime<Utc>,
) -> Result<Processed> {
    crate::billing::due::run(
        db,
        &PlanCache::default(),
        crate::billing::due::Scope::Tenant(tenant_id),
        until,
        u32::MAX,
    )
    .await
}

/// The worker's retention cleanup; returns the rows removed.
pub async fn cleanup(db: &PgPool) -> Result<u64> {
    Ok(crate::worker::cleanup(db).await?)
}

/// Sets a tenant's test clock to `at` directly, even backwards (test setup starting at a fixed
/// date; the API only moves a clock forward).
pub async fn set_test_clock(db: &PgPool, tenant_id: &TenantId, at: DateTime<Utc>) -> Result<()> {
    let mut conn = db.acquire().await?;
    Ok(crate::db::tenants::set_test_clock(&mut conn, tenant_id, at).await?)
}

/// `(statements, lookups)` the check batcher has run since start.
pub fn check_batch_stats(state: &AppState) -> (u64, u64) {
    state.entitlements.checks.stats()
}

/// Checks waiting for the batcher.
pub fn queued_checks(state: &AppState) -> usize {
    state.entitlements.checks.queued()
}

/// Takes a hot-path connection (to hold the pool busy); give it back with `HotConn::done`.
pub async fn hold_hot_connection(state: &AppState) -> Result<HotConn<'_>> {
    Ok(state.entitlements.hot.acquire().await?)
}
