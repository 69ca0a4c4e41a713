//! `stripe_outbox`: what Stripe must learn, written in the transaction of each change.

use crate::domain::id::InvoiceId;
use crate::domain::id::TenantId;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use crate::domain::outbox::OutboxKind;

/// Rows per state, the oldest pending one, and whether the tenant is connected.
pub struct Counts {
    pub pending: i64,
    pub failed: i64,
    pub sent: i64,
    pub oldest: Option<DateTime<Utc>>,
    pub connected: bool,
}

pub async fn counts(conn: &mut PgConnection, tenant_id: &TenantId) -> Result<Counts, sqlx::Error> {
    sqlx::query_as!(
        Counts,
        r#"SELECT count(*) FILTER (WHERE o.status = 'pending') AS "pending!",
                  count(*) FILTER (WHERE o.status = 'failed') AS "failed!",
                  count(*) FILTER (WHERE o.status = 'sent') AS "sent!",
                  min(o.created_at) FILTER (WHERE o.status = 'pending') AS oldest,
                  (SELECT t.stripe_secret_key IS NOT NULL FROM tenants t WHERE t.tenant_id = $1) AS "connected!"
           FROM stripe_outbox o WHERE o.tenant_id = $1"#,
        tenant_id.as_str()
    )
    .fetch_one(&mut *conn)
    .await
}

/// A row parked after its last attempt failed.
pub struct FailedRow {
    pub id: i64,
    pub kind: String,
    pub resource_id: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
}

pub async fn failed(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    limit: i64,
) -> Result<Vec<FailedRow>, sqlx::Error> {
    sqlx::query_as!(
        FailedRow,
        "SELECT outbox_id AS id, kind, resource_id, attempts, last_error, created_at
         FROM stripe_outbox WHERE tenant_id = $1 AND status = 'failed'
         ORDER BY outbox_id DESC LIMIT $2",
        tenant_id.as_str(),
        limit
    )
    .fetch_all(&mut *conn)
    .await
}

/// Writes an outbox row in the caller's transaction, if the tenant is connected to Stripe.
/// Returns whether a row was written.
pub async fn enqueue(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    kind: OutboxKind,
    resource_id: &str,
    payload: Option<serde_json::Value>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "INSERT INTO stripe_outbox (tenant_id, kind, resource_id, payload)
         SELECT $1, $2, $3, COALESCE($4, '{}'::jsonb)
         WHERE EXISTS (SELECT 1 FROM tenants
                       WHERE tenant_id = $1 AND stripe_secret_key IS NOT NULL)",
        tenant_id.as_str(),
        kind.as_str(),
        resource_id,
        payload
    )
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// A row taken by a worker: its lease is the attempt count it was claimed with. Carries the
/// tenant's Stripe connection.
pub struct Claimed {
    pub tenant_id: TenantId,
    pub outbox_id: i64,
    pub kind: String,
    pub resource_id: String,
    pub payload: serde_json::Value,
    pub attempts: i32,
    pub result: Option<serde_json::Value>,
    pub secret_key: Option<String>,
    pub api_base: Option<String>,
}

/// Up to `max` tenants with outbox rows due, the longest waiting first. Reads only, locks
/// nothing (on Citus one statement over every shard); each tenant's rows are then claimed on
/// the tenant's node ([`claim_due`]).
pub async fn due_tenants(db: &PgPool, max: i64) -> Result<Vec<TenantId>, sqlx::Error> {
    let mut tx = super::spanning_tenants(db).await?;
    let tenants = sqlx::query_scalar!(
        r#"SELECT tenant_id AS "tenant_id!: TenantId" FROM stripe_outbox
           WHERE status = 'pending' AND next_attempt_at <= now()
           GROUP BY tenant_id
           ORDER BY min(next_attempt_at), tenant_id
           LIMIT $1"#,
        max
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(tenants)
}

/// Claims up to `max` of the tenant's due rows (`FOR UPDATE SKIP LOCKED`), leasing each for
/// `lease_secs` and counting the attempt, in one statement.
pub async fn claim_due(
    db: &PgPool,
    tenant_id: &TenantId,
    max: i64,
    lease_secs: f64,
) -> Result<Vec<Claimed>, sqlx::Error> {
    sqlx::query_as!(
        Claimed,
        r#"WITH due AS (
               SELECT tenant_id, outbox_id FROM stripe_outbox
               WHERE tenant_id = $1 AND status = 'pending' AND next_attempt_at <= now()
               ORDER BY next_attempt_at, outbox_id LIMIT $2
               FOR UPDATE SKIP LOCKED)
           UPDATE stripe_outbox o
              SET attempts = o.attempts + 1, next_attempt_at = now() + make_interval(secs => $3)
           FROM due, tenants t
           WHERE o.tenant_id = $1 AND o.tenant_id = due.tenant_id AND o.outbox_id = due.outbox_id
             AND t.tenant_id = $1
           RETURNING o.tenant_id AS "tenant_id: TenantId", o.outbox_id, o.kind, o.resource_id, o.payload, o.attempts,
                     o.result, t.stripe_secret_key AS secret_key, t.stripe_api_base AS api_base"#,
        tenant_id.as_str(),
        max,
        lease_secs
    )
    .fetch_all(db)
    .await
}

/// What Stripe is told of a customer.
pub struct StripeCustomer {
    pub email: Option<String>,
    pub name: Option<String>,
    pub stripe_customer_id: Option<String>,
}

pub async fn customer(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    customer_id: &str,
) -> Result<Option<StripeCustomer>, sqlx::Error> {
    sqlx::query_as!(
        StripeCustomer,
        "SELECT email, name, stripe_customer_id FROM customers
         WHERE tenant_id = $1 AND customer_id = $2",
        tenant_id.as_str(),
        customer_id
    )
    .fetch_optional(&mut *conn)
    .await
}

/// The customer's Stripe id, if it has one.
pub async fn stripe_customer_id(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    customer_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    Ok(sqlx::query_scalar!(
        "SELECT stripe_customer_id FROM customers WHERE tenant_id = $1 AND customer_id = $2",
        tenant_id.as_str(),
        customer_id
    )
    .fetch_optional(&mut *conn)
    .await?
    .flatten())
}

/// Queues the creation of a customer in Stripe unless a row for it is pending or sent.
pub async fn queue_customer(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    customer_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO stripe_outbox (tenant_id, kind, resource_id)
             SELECT $1, 'customer', $2
             WHERE NOT EXISTS (SELECT 1 FROM stripe_outbox WHERE tenant_id = $1
                               AND kind = 'customer' AND resource_id = $2 AND status <> 'failed')",
        tenant_id.as_str(),
        customer_id
    )
    .execute(&mut *conn)
    .await
    .map(drop)
}

/// Saves how far a multi-step row got, if its lease is still this attempt's.
pub async fn save_progress(
    conn: &mut PgConnection,
    row: &Claimed,
    progress: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE stripe_outbox SET result = $3
         WHERE tenant_id = $1 AND outbox_id = $2 AND attempts = $4 AND status = 'pending'",
        row.tenant_id.as_str(),
        row.outbox_id,
        progress,
        row.attempts
    )
    .execute(&mut *conn)
    .await
    .map(drop)
}

pub async fn set_stripe_invoice_id(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    invoice_id: &InvoiceId,
    stripe_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE invoices SET stripe_invoice_id = $3 WHERE tenant_id = $1 AND invoice_id = $2",
        tenant_id.as_str(),
        invoice_id.as_str(),
        stripe_id
    )
    .execute(&mut *conn)
    .await
    .map(drop)
}

/// A row's invoice as far as Stripe is concerned.
pub struct InvoiceInStripe {
    pub status: String,
    pub currency: String,
    pub stripe_invoice_id: Option<String>,
    pub payment_attempts: i32,
    /// Its `invoice` row has not been sent yet.
    pub invoice_pending: bool,
}

pub async fn invoice_in_stripe(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    invoice_id: &InvoiceId,
) -> Result<Option<InvoiceInStripe>, sqlx::Error> {
    sqlx::query_as!(
        InvoiceInStripe,
        "SELECT i.status, i.currency, i.stripe_invoice_id, i.payment_attempts,
                EXISTS (SELECT 1 FROM stripe_outbox o WHERE o.tenant_id = $1
                        AND o.kind = 'invoice' AND o.resource_id = i.invoice_id
                        AND o.status = 'pending') AS \"invoice_pending!\"
         FROM invoices i WHERE i.tenant_id = $1 AND i.invoice_id = $2",
        tenant_id.as_str(),
        invoice_id.as_str()
    )
    .fetch_optional(&mut *conn)
    .await
}

/// The outcome of an attempt, as written back.
pub struct Outcome<'a> {
    /// `sent`, `pending` (retry after `wait_secs`) or `failed` (parked).
    pub status: &'a str,
    pub error: Option<&'a str>,
    pub wait_secs: f64,
    /// 1 when the attempt is not to count (a deferral), else 0.
    pub attempts_back: i32,
    /// When it was sent (real time; kept only for a sent row).
    pub at: DateTime<Utc>,
}

/// Writes an attempt's outcome; `false` when the lease ran out and another worker owns the
/// row now (nothing written).
pub async fn record_outcome(
    conn: &mut PgConnection,
    row: &Claimed,
    o: &Outcome<'_>,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query!(
        "UPDATE stripe_outbox
         SET status = $4, last_error = COALESCE($5, last_error),
             next_attempt_at = now() + make_interval(secs => $6),
             attempts = attempts - $7,
             sent_at = CASE WHEN $4 = 'sent' THEN $8::timestamptz END
         WHERE tenant_id = $1 AND outbox_id = $2 AND attempts = $3 AND status = 'pending'",
        row.tenant_id.as_str(),
        row.outbox_id,
        row.attempts,
        o.status,
        o.error,
        o.wait_secs,
        o.attempts_back,
        o.at
    )
    .execute(&mut *conn)
    .await?;
    Ok(updated.rows_affected() > 0)
}

pub async fn set_stripe_customer_id(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    customer_id: &str,
    stripe_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE customers SET stripe_customer_id = $3
                 WHERE tenant_id = $1 AND customer_id = $2 AND stripe_customer_id IS NULL",
        tenant_id.as_str(),
        customer_id,
        stripe_id
    )
    .execute(&mut *conn)
    .await
    .map(drop)
}

pub async fn mark_meter_reported(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    event_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE usage_events SET stripe_reported_at = now()
                 WHERE tenant_id = $1 AND event_id = $2 AND stripe_reported_at IS NULL",
        tenant_id.as_str(),
        event_id
    )
    .execute(&mut *conn)
    .await
    .map(drop)
}

/// Rows still to send, over every tenant (test support and operations).
pub async fn pending_count(db: &PgPool) -> Result<i64, sqlx::Error> {
    let mut tx = super::spanning_tenants(db).await?;
    let n = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM stripe_outbox WHERE status = 'pending'"#
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(n)
}
