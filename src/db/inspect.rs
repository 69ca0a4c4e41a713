//! Statements only the test support ([`crate::testing`]) runs: reads of stored state the API
//! does not show (row counts, key hashes, payment attempts, Stripe report marks) and the few
//! writes that stage a situation the API cannot reach (a period that began a month ago, a
//! delivery finished long ago). Here rather than in the tests so that they are checked at build
//! time against the schema like every other statement. The server never calls them.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;

use crate::domain::id::{SubscriptionId, TenantId};

/// How many rows each table holds (of one tenant, or of all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RowCounts {
    pub tenants: i64,
    pub api_keys: i64,
    pub customers: i64,
    pub features: i64,
    pub plans: i64,
    pub subscriptions: i64,
    pub invoices: i64,
    pub usage_events: i64,
    pub usage_counters: i64,
    pub stripe_outbox: i64,
    pub stripe_events: i64,
    pub webhook_events: i64,
    pub webhook_deliveries: i64,
    pub audit_log: i64,
    pub usage_events_purged: i64,
}

pub async fn row_counts(
    conn: &mut PgConnection,
    tenant: Option<&TenantId>,
) -> Result<RowCounts, sqlx::Error> {
    // Every tenant's rows, or one's by a condition Citus cannot route: on every node.
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    super::span_tenants(&mut tx).await?;
    let counts = sqlx::query_as!(
        RowCounts,
        r#"SELECT
             (SELECT count(*) FROM tenants WHERE $1::text IS NULL OR tenant_id = $1) AS "tenants!",
             (SELECT count(*) FROM api_keys WHERE $1::text IS NULL OR tenant_id = $1) AS "api_keys!",
             (SELECT count(*) FROM customers WHERE $1::text IS NULL OR tenant_id = $1) AS "customers!",
             (SELECT count(*) FROM features WHERE $1::text IS NULL OR tenant_id = $1) AS "features!",
             (SELECT count(*) FROM plans WHERE $1::text IS NULL OR tenant_id = $1) AS "plans!",
             (SELECT count(*) FROM subscriptions WHERE $1::text IS NULL OR tenant_id = $1)
               AS "subscriptions!",
             (SELECT count(*) FROM invoices WHERE $1::text IS NULL OR tenant_id = $1) AS "invoices!",
             (SELECT count(*) FROM usage_events WHERE $1::text IS NULL OR tenant_id = $1)
               AS "usage_events!",
             (SELECT count(*) FROM usage_counters WHERE $1::text IS NULL OR tenant_id = $1)
               AS "usage_counters!",
             (SELECT count(*) FROM stripe_outbox WHERE $1::text IS NULL OR tenant_id = $1)
               AS "stripe_outbox!",
             (SELECT count(*) FROM stripe_events WHERE $1::text IS NULL OR tenant_id = $1)
               AS "stripe_events!",
             (SELECT count(*) FROM webhook_events WHERE $1::text IS NULL OR tenant_id = $1)
               AS "webhook_events!",
             (SELECT count(*) FROM webhook_deliveries WHERE $1::text IS NULL OR tenant_id = $1)
               AS "webhook_deliveries!",
             (SELECT count(*) FROM audit_log WHERE $1::text IS NULL OR tenant_id = $1)
               AS "audit_log!",
             (SELECT count(*) FROM usage_events_purged WHERE $1::text IS NULL OR tenant_id = $1)
               AS "usage_events_purged!""#,
        tenant.map(TenantId::as_str)
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(counts)
}

/// How many tenants are called `name`.
pub async fn tenants_named(conn: &mut PgConnection, name: &str) -> Result<i64, sqlx::Error> {
    // Every tenant, on purpose.
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    super::span_tenants(&mut tx).await?;
    let n = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM tenants WHERE name = $1"#,
        name
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(n)
}

/// An `api_keys` row as stored: its hash, and the whole row as text.
pub struct StoredKey {
    pub key_hash: Vec<u8>,
    pub row_text: String,
}

pub async fn api_keys(conn: &mut PgConnection) -> Result<Vec<StoredKey>, sqlx::Error> {
    // Every tenant's keys, on purpose.
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    super::span_tenants(&mut tx).await?;
    let keys = sqlx::query_as!(
        StoredKey,
        r#"SELECT k.key_hash, k::text AS "row_text!" FROM api_keys k ORDER BY k.key_id"#
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(keys)
}

/// Whether the migrations table exists.
pub async fn is_migrated(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT to_regclass('_sqlx_migrations') IS NOT NULL AS "migrated!""#)
        .fetch_one(&mut *conn)
        .await
}

/// A tenant's invoice numbering, and how many (customer, period) pairs were invoiced twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Numbering {
    pub invoices: i64,
    pub max_number: Option<i64>,
    pub distinct_numbers: i64,
    pub periods_invoiced_twice: i64,
}

pub async fn invoice_numbering(
    conn: &mut PgConnection,
    tenant: &TenantId,
) -> Result<Numbering, sqlx::Error> {
    sqlx::query_as!(
        Numbering,
        r#"SELECT count(*) AS "invoices!", max(number) AS max_number,
                  count(DISTINCT number) AS "distinct_numbers!",
                  (SELECT count(*) FROM (
                       SELECT 1 FROM invoices d WHERE d.tenant_id = $1
                       GROUP BY d.customer_id, d.period_start HAVING count(*) > 1) twice)
                    AS "periods_invoiced_twice!"
           FROM invoices WHERE tenant_id = $1"#,
        tenant.as_str()
    )
    .fetch_one(&mut *conn)
    .await
}

/// Where an invoice's collection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collection {
    pub billing_reason: String,
    pub status: String,
    pub payment_attempts: i32,
    pub next_payment_attempt: Option<DateTime<Utc>>,
}

/// The collection state of a tenant's invoices, oldest first.
pub async fn collection(
    conn: &mut PgConnection,
    tenant: &TenantId,
) -> Result<Vec<Collection>, sqlx::Error> {
    sqlx::query_as!(
        Collection,
        "SELECT billing_reason, status, payment_attempts, next_payment_attempt
         FROM invoices WHERE tenant_id = $1 ORDER BY number",
        tenant.as_str()
    )
    .fetch_all(&mut *conn)
    .await
}

/// A usage event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub event_id: String,
    pub billable: bool,
    pub stripe_reported_at: Option<DateTime<Utc>>,
}

/// A tenant's usage events, in id order.
pub async fn usage_events(
    conn: &mut PgConnection,
    tenant: &TenantId,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    sqlx::query_as!(
        StoredEvent,
        "SELECT event_id, billable, stripe_reported_at FROM usage_events
         WHERE tenant_id = $1 ORDER BY event_id",
        tenant.as_str()
    )
    .fetch_all(&mut *conn)
    .await
}

/// The values of a tenant's usage counters, oldest period first.
pub async fn counter_values(
    conn: &mut PgConnection,
    tenant: &TenantId,
) -> Result<Vec<Decimal>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT used FROM usage_counters WHERE tenant_id = $1
         ORDER BY period_start, customer_id, feature_key",
        tenant.as_str()
    )
    .fetch_all(&mut *conn)
    .await
}

/// The `data.id` of each of a tenant's stored webhook events, oldest first.
pub async fn webhook_event_subjects(
    conn: &mut PgConnection,
    tenant: &TenantId,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT payload->'data'->>'id' AS "id!" FROM webhook_events
           WHERE tenant_id = $1 ORDER BY created_at, event_id"#,
        tenant.as_str()
    )
    .fetch_all(&mut *conn)
    .await
}

/// Drops a tenant's Stripe outbox rows of the given kinds (as if they had been sent).
pub async fn drop_outbox_rows(
    conn: &mut PgConnection,
    tenant: &TenantId,
    kinds: &[&str],
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "DELETE FROM stripe_outbox WHERE tenant_id = $1 AND kind = ANY($2)",
        tenant.as_str(),
        kinds as &[&str]
    )
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// Moves a customer's live subscription to another version of its plan, with no proration
/// and no event (a migration done by hand).
pub async fn force_plan_version(
    conn: &mut PgConnection,
    tenant: &TenantId,
    customer: &str,
    version: i32,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE subscriptions SET plan_version = $3
         WHERE tenant_id = $1 AND customer_id = $2
           AND status IN ('trialing', 'active', 'past_due')",
        tenant.as_str(),
        customer,
        version
    )
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// Marks a customer's live subscription canceled with no fallback, invoice or event.
pub async fn force_canceled(
    conn: &mut PgConnection,
    tenant: &TenantId,
    customer: &str,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE subscriptions SET status = 'canceled'
         WHERE tenant_id = $1 AND customer_id = $2
           AND status IN ('trialing', 'active', 'past_due')",
        tenant.as_str(),
        customer
    )
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// Sets a subscription's anchor and current period.
pub async fn set_period(
    conn: &mut PgConnection,
    tenant: &TenantId,
    subscription: &SubscriptionId,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE subscriptions
         SET billing_anchor = $3, current_period_start = $3, current_period_end = $4
         WHERE tenant_id = $1 AND subscription_id = $2",
        tenant.as_str(),
        subscription.as_str(),
        start,
        end
    )
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// Marks delivered every delivery of the tenant's events whose `data.id` is `subject`.
pub async fn mark_delivered(
    conn: &mut PgConnection,
    tenant: &TenantId,
    subject: &str,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE webhook_deliveries d SET status = 'delivered' FROM webhook_events e
         WHERE d.tenant_id = $1 AND e.tenant_id = d.tenant_id AND e.event_id = d.event_id
           AND e.payload->'data'->>'id' = $2",
        tenant.as_str(),
        subject
    )
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// Moves the creation of all of a tenant's webhook events back to `at`.
pub async fn backdate_webhook_events(
    conn: &mut PgConnection,
    tenant: &TenantId,
    at: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE webhook_events SET created_at = $2 WHERE tenant_id = $1",
        tenant.as_str(),
        at
    )
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// One entry of an organisation's seat history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatChange {
    pub member_id: String,
    pub delta: i32,
    pub seats: i32,
    pub at: DateTime<Utc>,
}

/// A customer's seat history, in order.
pub async fn seat_history(
    conn: &mut PgConnection,
    tenant: &TenantId,
    customer: &str,
) -> Result<Vec<SeatChange>, sqlx::Error> {
    sqlx::query_as!(
        SeatChange,
        "SELECT member_id, delta, seats, at FROM seat_changes
         WHERE tenant_id = $1 AND customer_id = $2 ORDER BY seq",
        tenant.as_str(),
        customer
    )
    .fetch_all(&mut *conn)
    .await
}

/// One entry of a subscription's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub event: String,
    pub plan_key: String,
    pub interval: String,
    pub status: String,
    pub at: DateTime<Utc>,
}

/// The history of a customer's subscriptions, in order.
pub async fn subscription_history(
    conn: &mut PgConnection,
    tenant: &TenantId,
    customer: &str,
) -> Result<Vec<HistoryEntry>, sqlx::Error> {
    sqlx::query_as!(
        HistoryEntry,
        "SELECT event, plan_key, interval, status, at FROM subscription_history
         WHERE tenant_id = $1 AND customer_id = $2 ORDER BY at, seq",
        tenant.as_str(),
        customer
    )
    .fetch_all(&mut *conn)
    .await
}

/// Tries to change the audit log behind the application's back: `UPDATE` (`"update"`),
/// `DELETE` (`"delete"`) or `TRUNCATE` (`"truncate"`) of a tenant's entries, as the superuser
/// the tests connect as. The database refuses each.
pub async fn tamper_with_audit_log(
    conn: &mut PgConnection,
    tenant: &TenantId,
    how: &str,
) -> Result<u64, sqlx::Error> {
    let done = match how {
        "update" => sqlx::query!(
            "UPDATE audit_log SET actor = 'someone else' WHERE tenant_id = $1",
            tenant.as_str()
        )
        .execute(&mut *conn)
        .await?
        .rows_affected(),
        "delete" => sqlx::query!(
            "DELETE FROM audit_log WHERE tenant_id = $1",
            tenant.as_str()
        )
        .execute(&mut *conn)
        .await?
        .rows_affected(),
        _ => sqlx::query!("TRUNCATE audit_log")
            .execute(&mut *conn)
            .await?
            .rows_affected(),
    };
    Ok(done)
}

/// The ids of a tenant's raw usage events still kept, in order.
pub async fn raw_event_ids(
    conn: &mut PgConnection,
    tenant: &TenantId,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT event_id FROM usage_events WHERE tenant_id = $1 ORDER BY event_id",
        tenant.as_str()
    )
    .fetch_all(&mut *conn)
    .await
}

/// Moves a customer session's expiry into the past (lifetimes run on real time, so a test
/// cannot wait for one).
pub async fn expire_customer_session(
    conn: &mut PgConnection,
    tenant: &TenantId,
    session_id: &str,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!(
        "UPDATE customer_sessions SET expires_at = now() - interval '1 second'
         WHERE tenant_id = $1 AND session_id = $2",
        tenant.as_str(),
        session_id
    )
    .execute(&mut *conn)
    .await?
    .rows_affected())
}
