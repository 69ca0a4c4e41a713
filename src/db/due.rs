//! Due billing work, claimed one item at a time with `FOR UPDATE SKIP LOCKED` (so any number
//! of runners share it without doing anything twice): period ends, draft finalizations and
//! payment retries. Every claim is within one tenant, so on Citus it is a router query on the
//! tenant's node; the tenants with work due are found first, without locks
//! ([`due_tenants`]).

use crate::domain::id::TenantId;
use crate::domain::id::{InvoiceId, SubscriptionId};
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::subscriptions::{self, SubscriptionRow};

struct DueSubscription {
    tenant_id: TenantId,
    subscription_id: SubscriptionId,
}

/// Which of a tenant's work a claim takes.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    pub tenant: &'a TenantId,
    /// Only while the tenant's clock follows real time (the worker): a tenant whose test
    /// clock was advanced meanwhile is its advance's to run.
    pub real_time_only: bool,
    pub until: DateTime<Utc>,
}

/// Up to `max` tenants on real time with billing work due by `until`, the earliest due first.
/// Reads only, locks nothing: on Citus one statement over every shard, then each tenant's
/// work is claimed on its own node.
pub async fn due_tenants(
    db: &sqlx::PgPool,
    until: DateTime<Utc>,
    max: i64,
) -> Result<Vec<TenantId>, sqlx::Error> {
    let mut tx = super::spanning_tenants(db).await?;
    let tenants = sqlx::query_scalar!(
        r#"SELECT d.tenant_id AS "tenant_id!: TenantId"
           FROM (SELECT s.tenant_id, s.current_period_end AS at FROM subscriptions s
                 WHERE s.status IN ('trialing', 'active', 'past_due')
                   AND s.current_period_end <= $1
                 UNION ALL
                 SELECT i.tenant_id, i.finalize_at FROM invoices i
                 WHERE i.status = 'draft' AND i.finalize_at <= $1
                 UNION ALL
                 SELECT i.tenant_id, i.next_payment_attempt FROM invoices i
                 WHERE i.status = 'open' AND i.next_payment_attempt <= $1) d
           JOIN tenants t ON t.tenant_id = d.tenant_id AND t.test_clock_now IS NULL
           GROUP BY d.tenant_id
           ORDER BY min(d.at), d.tenant_id
           LIMIT $2"#,
        until,
        max
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(tenants)
}

/// The earliest live subscription of the tenant whose period ended by `until`, locked.
pub async fn claim_period_end(
    conn: &mut PgConnection,
    claim: Claim<'_>,
) -> Result<Option<(TenantId, SubscriptionRow)>, sqlx::Error> {
    let Some(due) = sqlx::query_as!(
        DueSubscription,
        r#"SELECT s.tenant_id AS "tenant_id: TenantId", s.subscription_id AS "subscription_id: SubscriptionId" FROM subscriptions s
           WHERE s.tenant_id = $1 AND s.status IN ('trialing', 'active', 'past_due')
             AND s.current_period_end <= $2
             AND (NOT $3 OR EXISTS (SELECT 1 FROM tenants t
                                    WHERE t.tenant_id = $1 AND t.test_clock_now IS NULL))
           ORDER BY s.current_period_end, s.subscription_id
           LIMIT 1 FOR NO KEY UPDATE OF s SKIP LOCKED"#,
        claim.tenant.as_str(),
        claim.until,
        claim.real_time_only
    )
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    // Already locked by this transaction: the row as it stands.
    let row = subscriptions::get(conn, &due.tenant_id, &due.subscription_id, false).await?;
    Ok(row.map(|r| (due.tenant_id, r)))
}

/// A draft invoice due to be finalized.
pub struct DueDraft {
    pub tenant_id: TenantId,
    pub invoice_id: InvoiceId,
    pub finalize_at: DateTime<Utc>,
}

/// The tenant's earliest draft due to be finalized by `until`, locked.
pub async fn claim_finalization(
    conn: &mut PgConnection,
    claim: Claim<'_>,
) -> Result<Option<DueDraft>, sqlx::Error> {
    sqlx::query_as!(
        DueDraft,
        r#"SELECT i.tenant_id AS "tenant_id: TenantId", i.invoice_id AS "invoice_id: InvoiceId", i.finalize_at AS "finalize_at!"
           FROM invoices i
           WHERE i.tenant_id = $1 AND i.status = 'draft' AND i.finalize_at <= $2
             AND (NOT $3 OR EXISTS (SELECT 1 FROM tenants t
                                    WHERE t.tenant_id = $1 AND t.test_clock_now IS NULL))
           ORDER BY i.finalize_at, i.invoice_id
           LIMIT 1 FOR NO KEY UPDATE OF i SKIP LOCKED"#,
        claim.tenant.as_str(),
        claim.until,
        claim.real_time_only
    )
    .fetch_optional(&mut *conn)
    .await
}

/// A payment retry that has fallen due, claimed (locked) by the caller's transaction.
pub struct DueRetry {
    pub tenant_id: TenantId,
    pub invoice_id: InvoiceId,
    pub payment_attempts: i32,
    pub at: DateTime<Utc>,
}

/// The tenant's earliest payment retry due by `until`, locked.
pub async fn claim_payment_retry(
    conn: &mut PgConnection,
    claim: Claim<'_>,
) -> Result<Option<DueRetry>, sqlx::Error> {
    sqlx::query_as!(
        DueRetry,
        r#"SELECT i.tenant_id AS "tenant_id: TenantId", i.invoice_id AS "invoice_id: InvoiceId", i.payment_attempts,
                  i.next_payment_attempt AS "at!"
           FROM invoices i
           WHERE i.tenant_id = $1 AND i.status = 'open' AND i.next_payment_attempt <= $2
             AND (NOT $3 OR EXISTS (SELECT 1 FROM tenants t
                                    WHERE t.tenant_id = $1 AND t.test_clock_now IS NULL))
           ORDER BY i.next_payment_attempt, i.invoice_id
           LIMIT 1 FOR NO KEY UPDATE OF i SKIP LOCKED"#,
        claim.tenant.as_str(),
        claim.until,
        claim.real_time_only
    )
    .fetch_optional(&mut *conn)
    .await
}
