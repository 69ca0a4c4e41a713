//! Retention: what is deleted once it has served its purpose.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use crate::domain::id::TenantId;

/// Removes expired idempotency keys, long-expired leases and customer sessions, and sent
/// outbox rows, Stripe events and webhook events older than 30 days; returns how many rows
/// went. `now` is real time. Each statement spans every tenant, and locks only the rows it
/// deletes (on Citus, one statement over every shard, which Citus allows for a `DELETE`).
pub async fn cleanup(db: &PgPool, now: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let mut tx = super::spanning_tenants(db).await?;
    let keys = sqlx::query!(
        "DELETE FROM idempotency_keys WHERE created_at < $1::timestamptz - interval '24 hours'",
        now
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    // Expired by the tenant's own clock (a test clock may stand in the past).
    let leases = sqlx::query!(
        "DELETE FROM leases l USING tenants t
         WHERE t.tenant_id = l.tenant_id
           AND l.expires_at < COALESCE(t.test_clock_now, $1) - interval '1 hour'",
        now
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    // Delivered side effects are kept 30 days for the logs, then go. (A webhook event goes
    // once none of its deliveries is still pending.)
    let outbox = sqlx::query!(
        "DELETE FROM stripe_outbox WHERE status = 'sent' AND sent_at < $1::timestamptz - interval '30 days'",
        now
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let stripe_events = sqlx::query!(
        "DELETE FROM stripe_events WHERE received_at < $1::timestamptz - interval '30 days'",
        now
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let events = sqlx::query!(
        "WITH old AS (
             SELECT e.tenant_id, e.event_id FROM webhook_events e
             WHERE e.created_at < $1::timestamptz - interval '30 days'
               AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d
                               WHERE d.tenant_id = e.tenant_id AND d.event_id = e.event_id
                                 AND d.status = 'pending')
             LIMIT 10000),
         gone AS (
             DELETE FROM webhook_deliveries d USING old
             WHERE d.tenant_id = old.tenant_id AND d.event_id = old.event_id)
         DELETE FROM webhook_events e USING old
         WHERE e.tenant_id = old.tenant_id AND e.event_id = old.event_id",
        now
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    // Customer sessions a day past their expiry (on real time; they no longer authenticate).
    let sessions = sqlx::query!(
        "DELETE FROM customer_sessions WHERE expires_at < $1::timestamptz - interval '1 day'",
        now
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let console = sqlx::query!("DELETE FROM console_sessions WHERE expires_at < $1", now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(keys + leases + outbox + stripe_events + events + sessions + console)
}

/// Up to `max` tenants on real time with a live subscription on a plan that keeps raw events
/// for a limited time: those a real-time purge visits. Reads only, locks nothing.
pub async fn retention_tenants(db: &PgPool, max: i64) -> Result<Vec<TenantId>, sqlx::Error> {
    let mut tx = super::spanning_tenants(db).await?;
    let tenants = sqlx::query_scalar!(
        r#"SELECT DISTINCT t.tenant_id AS "tenant_id: TenantId"
           FROM tenants t
           JOIN subscriptions s ON s.tenant_id = t.tenant_id
                AND s.status IN ('trialing', 'active', 'past_due')
           JOIN plan_versions v ON v.tenant_id = s.tenant_id AND v.plan_key = s.plan_key
                AND v.version = s.plan_version AND v.retention_days IS NOT NULL
           WHERE t.test_clock_now IS NULL
           ORDER BY 1
           LIMIT $1"#,
        max
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(tenants)
}

/// Deletes up to `batch` of the tenant's raw usage events older than the retention of their
/// customer's current plan at `now` (the plan of its live subscription; `retention_days` null
/// keeps them for ever, as does having no live subscription), and keeps their ids in
/// `usage_events_purged` so that one sent again is still a duplicate. Rows another purge
/// holds are skipped, so purges may run on every worker at once; usage recording never waits
/// on them (it inserts new rows). Returns how many went.
pub async fn purge_usage_events(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    now: DateTime<Utc>,
    batch: i64,
) -> Result<u64, sqlx::Error> {
    let purged = sqlx::query!(
        r#"WITH due AS (
               SELECT old.tenant_id, old.event_id
               FROM subscriptions s
               JOIN plan_versions v ON v.tenant_id = $1 AND v.plan_key = s.plan_key
                    AND v.version = s.plan_version AND v.retention_days IS NOT NULL
               CROSS JOIN LATERAL (
                   SELECT e.tenant_id, e.event_id FROM usage_events e
                   WHERE e.tenant_id = $1 AND e.customer_id = s.customer_id
                     AND e.occurred_at < $2::timestamptz - make_interval(days => v.retention_days)
                   LIMIT $3
                   FOR UPDATE OF e SKIP LOCKED) old
               WHERE s.tenant_id = $1 AND s.status IN ('trialing', 'active', 'past_due')
               LIMIT $3),
           gone AS (
               DELETE FROM usage_events u USING due
               WHERE u.tenant_id = $1 AND u.event_id = due.event_id
               RETURNING u.tenant_id, u.event_id)
           INSERT INTO usage_events_purged (tenant_id, event_id)
           SELECT tenant_id, event_id FROM gone
           ON CONFLICT DO NOTHING"#,
        tenant_id.as_str(),
        now,
        batch
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(purged)
}
