//! Retention: what is deleted once it has served its purpose.

use sqlx::PgPool;

/// Removes expired idempotency keys, long-expired leases, and sent outbox rows, Stripe events
/// and webhook events older than 30 days; returns how many rows went.
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
    // Delivered side effects are kept 30 days for the logs, then go. (A webhook event goes
    // once none of its deliveries is still pending.)
    let outbox = sqlx::query!(
        "DELETE FROM stripe_outbox WHERE status = 'sent' AND sent_at < now() - interval '30 days'"
    )
    .execute(db)
    .await?
    .rows_affected();
    let stripe_events =
        sqlx::query!("DELETE FROM stripe_events WHERE received_at < now() - interval '30 days'")
            .execute(db)
            .await?
            .rows_affected();
    let events = sqlx::query!(
        "WITH old AS (
             SELECT e.tenant_id, e.event_id FROM webhook_events e
             WHERE e.created_at < now() - interval '30 days'
               AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d
                               WHERE d.tenant_id = e.tenant_id AND d.event_id = e.event_id
                                 AND d.status = 'pending')
             LIMIT 10000),
         gone AS (
             DELETE FROM webhook_deliveries d USING old
             WHERE d.tenant_id = old.tenant_id AND d.event_id = old.event_id)
         DELETE FROM webhook_events e USING old
         WHERE e.tenant_id = old.tenant_id AND e.event_id = old.event_id"
    )
    .execute(db)
    .await?
    .rows_affected();
    Ok(keys + leases + outbox + stripe_events + events)
}
