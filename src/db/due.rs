//! Due billing work, claimed one item at a time with `FOR UPDATE SKIP LOCKED` (so any number
//! of runners share it without doing anything twice): period ends, draft finalizations and
//! payment retries. `tenant: None` is every tenant running on real time (never advanced).

use crate::domain::id::TenantId;
use crate::domain::id::{InvoiceId, SubscriptionId};
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::subscriptions::{self, SubscriptionRow};

struct DueSubscription {
    tenant_id: TenantId,
    subscription_id: SubscriptionId,
}

/// The earliest live subscription whose period ended by `until`, locked, with its tenant.
pub async fn claim_period_end(
    conn: &mut PgConnection,
    tenant: Option<&TenantId>,
    until: DateTime<Utc>,
) -> Result<Option<(TenantId, SubscriptionRow)>, sqlx::Error> {
    let Some(due) = sqlx::query_as!(
        DueSubscription,
        r#"SELECT s.tenant_id AS "tenant_id: TenantId", s.subscription_id AS "subscription_id: SubscriptionId" FROM subscriptions s
           WHERE s.status IN ('trialing', 'active', 'past_due') AND s.current_period_end <= $2
             AND (s.tenant_id = $1 OR ($1::text IS NULL AND EXISTS (
                  SELECT 1 FROM tenants t WHERE t.tenant_id = s.tenant_id AND t.test_clock_now IS NULL)))
           ORDER BY s.current_period_end, s.subscription_id
           LIMIT 1 FOR NO KEY UPDATE OF s SKIP LOCKED"#,
        tenant.map(TenantId::as_str),
        until
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

/// The earliest draft due to be finalized by `until`, locked.
pub async fn claim_finalization(
    conn: &mut PgConnection,
    tenant: Option<&TenantId>,
    until: DateTime<Utc>,
) -> Result<Option<DueDraft>, sqlx::Error> {
    sqlx::query_as!(
        DueDraft,
        r#"SELECT i.tenant_id AS "tenant_id: TenantId", i.invoice_id AS "invoice_id: InvoiceId", i.finalize_at AS "finalize_at!"
           FROM invoices i
           WHERE i.status = 'draft' AND i.finalize_at <= $2
             AND (i.tenant_id = $1 OR ($1::text IS NULL AND EXISTS (
                  SELECT 1 FROM tenants t WHERE t.tenant_id = i.tenant_id AND t.test_clock_now IS NULL)))
           ORDER BY i.finalize_at, i.invoice_id
           LIMIT 1 FOR NO KEY UPDATE OF i SKIP LOCKED"#,
        tenant.map(TenantId::as_str),
        until
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

/// The earliest payment retry due by `until`, locked.
pub async fn claim_payment_retry(
    conn: &mut PgConnection,
    tenant: Option<&TenantId>,
    until: DateTime<Utc>,
) -> Result<Option<DueRetry>, sqlx::Error> {
    sqlx::query_as!(
        DueRetry,
        r#"SELECT i.tenant_id AS "tenant_id: TenantId", i.invoice_id AS "invoice_id: InvoiceId", i.payment_attempts,
                  i.next_payment_attempt AS "at!"
           FROM invoices i
           WHERE i.status = 'open' AND i.next_payment_attempt <= $2
             AND (i.tenant_id = $1 OR ($1::text IS NULL AND EXISTS (
                  SELECT 1 FROM tenants t WHERE t.tenant_id = i.tenant_id AND t.test_clock_now IS NULL)))
           ORDER BY i.next_payment_attempt, i.invoice_id
           LIMIT 1 FOR NO KEY UPDATE OF i SKIP LOCKED"#,
        tenant.map(TenantId::as_str),
        until
    )
    .fetch_optional(&mut *conn)
    .await
}
