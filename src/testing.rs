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
    crate::stripe::sync::drain(&state.db, &state.plans, &state.secrets, cfg).await
}

/// Outbox rows not yet sent (nor parked).
pub async fn pending_stripe_rows(db: &PgPool) -> Result<i64> {
    Ok(crate::db::outbox::pending_count(db).await?)
}

/// Webhook deliveries not yet made (nor given up).
pub async fn pending_deliveries(db: &PgPool) -> Result<i64> {
    Ok(crate::db::webhooks::pending_count(db).await?)
}

/// One pass of the webhook worker: delivers up to `max` due deliveries (with the state's
/// secrets key).
pub async fn deliver_webhooks(
    state: &AppState,
    http: &reqwest::Client,
    cfg: &DeliveryConfig,
    max: i64,
) -> Result<usize> {
    Ok(crate::webhooks::deliver_due(&state.db, http, &state.secrets, cfg, max).await?)
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
        (
            crate::billing::due::Scope::Tenant(tenant_id),
            &crate::audit::Origin::worker(),
        ),
        until,
        u32::MAX,
    )
    .await
}

/// The worker's retention cleanup; returns the rows removed.
pub async fn cleanup(db: &PgPool) -> Result<u64> {
    Ok(crate::worker::cleanup(db).await?)
}

/// The worker's purge of raw usage events past retention (real-time tenants); returns how
/// many went.
pub async fn purge_usage(db: &PgPool) -> Result<u64> {
    crate::worker::purge_usage(db).await
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

/// `(kept resolves used, events found stale)` on the usage paths since start.
pub fn usage_resolve_stats(state: &AppState) -> (u64, u64) {
    state.entitlements.resolved.stats()
}

/// Checks waiting for the batcher.
pub fn queued_checks(state: &AppState) -> usize {
    state.entitlements.checks.queued()
}

/// `(statements, requests)` the usage batcher (group commit) has run since start.
pub fn usage_batch_stats(state: &AppState) -> (u64, u64) {
    state.entitlements.usage.stats()
}

/// `POST /v1/usage/batch` requests waiting for room (`http::usage::record::admit_batch`).
pub fn batches_waiting_for_room(state: &AppState) -> usize {
    state.batch_admission.waiting()
}

/// Takes `kib` of the batch bodies' allowance until the permit is dropped.
pub fn hold_batch_room(state: &AppState, kib: u32) -> Option<tokio::sync::SemaphorePermit<'_>> {
    state.batch_admission.hold(kib)
}

/// Usage requests waiting for the usage batcher.
pub fn queued_usage(state: &AppState) -> usize {
    state.entitlements.usage.queued()
}

/// Takes a hot-path connection (to hold the pool busy); give it back with `HotConn::done`.
pub async fn hold_hot_connection(state: &AppState) -> Result<HotConn<'_>> {
    Ok(state.entitlements.hot.acquire().await?)
}

/// Stored state the API does not show, and the few situations the API cannot stage. The
/// statements are in `db::inspect`, checked at build time like every other.
pub mod stored {
    use chrono::{DateTime, Utc};
    use rust_decimal::Decimal;
    use sqlx::PgPool;

    use crate::db::inspect as db;
    pub use crate::db::inspect::{
        Collection, HistoryEntry, Numbering, RowCounts, SeatChange, StoredEvent, StoredKey,
    };
    use crate::error::Result;
    use crate::ids::{SubscriptionId, TenantId};

    /// `UPDATE`, `DELETE` or `TRUNCATE` on the audit log, straight to the database.
    pub async fn tamper_with_audit_log(
        pool: &PgPool,
        tenant: &TenantId,
        how: &str,
    ) -> std::result::Result<u64, sqlx::Error> {
        db::tamper_with_audit_log(&mut *pool.acquire().await?, tenant, how).await
    }

    /// Expires a customer session now.
    pub async fn expire_customer_session(
        pool: &PgPool,
        tenant: &TenantId,
        session_id: &str,
    ) -> Result<u64> {
        Ok(db::expire_customer_session(&mut *pool.acquire().await?, tenant, session_id).await?)
    }

    /// The ids of the raw usage events still kept.
    pub async fn raw_event_ids(pool: &PgPool, tenant: &TenantId) -> Result<Vec<String>> {
        Ok(db::raw_event_ids(&mut *pool.acquire().await?, tenant).await?)
    }

    /// Row counts of one tenant, or of the whole database.
    pub async fn row_counts(pool: &PgPool, tenant: Option<&TenantId>) -> Result<RowCounts> {
        Ok(db::row_counts(&mut *pool.acquire().await?, tenant).await?)
    }

    pub async fn tenants_named(pool: &PgPool, name: &str) -> Result<i64> {
        Ok(db::tenants_named(&mut *pool.acquire().await?, name).await?)
    }

    /// Every API key row as stored.
    pub async fn api_keys(pool: &PgPool) -> Result<Vec<StoredKey>> {
        Ok(db::api_keys(&mut *pool.acquire().await?).await?)
    }

    /// Whether the database has been migrated at all.
    pub async fn is_migrated(pool: &PgPool) -> Result<bool> {
        Ok(db::is_migrated(&mut *pool.acquire().await?).await?)
    }

    pub async fn invoice_numbering(pool: &PgPool, tenant: &TenantId) -> Result<Numbering> {
        Ok(db::invoice_numbering(&mut *pool.acquire().await?, tenant).await?)
    }

    /// The collection state (attempts, next retry) of a tenant's invoices, oldest first.
    pub async fn collection(pool: &PgPool, tenant: &TenantId) -> Result<Vec<Collection>> {
        Ok(db::collection(&mut *pool.acquire().await?, tenant).await?)
    }

    pub async fn usage_events(pool: &PgPool, tenant: &TenantId) -> Result<Vec<StoredEvent>> {
        Ok(db::usage_events(&mut *pool.acquire().await?, tenant).await?)
    }

    pub async fn counter_values(pool: &PgPool, tenant: &TenantId) -> Result<Vec<Decimal>> {
        Ok(db::counter_values(&mut *pool.acquire().await?, tenant).await?)
    }

    /// The `data.id` of each stored webhook event of a tenant, oldest first.
    pub async fn webhook_event_subjects(pool: &PgPool, tenant: &TenantId) -> Result<Vec<String>> {
        Ok(db::webhook_event_subjects(&mut *pool.acquire().await?, tenant).await?)
    }

    /// Drops outbox rows of these kinds, as if they had been sent.
    pub async fn drop_outbox_rows(pool: &PgPool, tenant: &TenantId, kinds: &[&str]) -> Result<u64> {
        Ok(db::drop_outbox_rows(&mut *pool.acquire().await?, tenant, kinds).await?)
    }

    /// Moves a customer's live subscription to another plan version, silently.
    pub async fn force_plan_version(
        pool: &PgPool,
        tenant: &TenantId,
        customer: &str,
        version: i32,
    ) -> Result<u64> {
        Ok(db::force_plan_version(&mut *pool.acquire().await?, tenant, customer, version).await?)
    }

    /// Ends a customer's live subscription with no fallback, invoice or event.
    pub async fn force_canceled(pool: &PgPool, tenant: &TenantId, customer: &str) -> Result<u64> {
        Ok(db::force_canceled(&mut *pool.acquire().await?, tenant, customer).await?)
    }

    /// Sets a subscription's anchor and current period.
    pub async fn set_period(
        pool: &PgPool,
        tenant: &TenantId,
        subscription: &SubscriptionId,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<u64> {
        Ok(db::set_period(
            &mut *pool.acquire().await?,
            tenant,
            subscription,
            start,
            end,
        )
        .await?)
    }

    /// Marks delivered every delivery of the events about `subject` (their `data.id`).
    pub async fn mark_delivered(pool: &PgPool, tenant: &TenantId, subject: &str) -> Result<u64> {
        Ok(db::mark_delivered(&mut *pool.acquire().await?, tenant, subject).await?)
    }

    /// Moves the creation of every webhook event of a tenant back to `at`.
    pub async fn backdate_webhook_events(
        pool: &PgPool,
        tenant: &TenantId,
        at: DateTime<Utc>,
    ) -> Result<u64> {
        Ok(db::backdate_webhook_events(&mut *pool.acquire().await?, tenant, at).await?)
    }

    /// A customer's seat history (every change of its member count), in order.
    pub async fn seat_history(
        pool: &PgPool,
        tenant: &TenantId,
        customer: &str,
    ) -> Result<Vec<SeatChange>> {
        Ok(db::seat_history(&mut *pool.acquire().await?, tenant, customer).await?)
    }

    /// The history of a customer's subscriptions (plan, interval and status from each change).
    pub async fn subscription_history(
        pool: &PgPool,
        tenant: &TenantId,
        customer: &str,
    ) -> Result<Vec<HistoryEntry>> {
        Ok(db::subscription_history(&mut *pool.acquire().await?, tenant, customer).await?)
    }
}
