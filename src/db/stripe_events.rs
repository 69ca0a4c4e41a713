//! `stripe_events`: each Stripe webhook event id, applied once.

use crate::domain::id::TenantId;
use crate::domain::id::{InvoiceId, SubscriptionId};
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

/// Records an event as being applied; `false` when its id was seen before.
pub async fn claim(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    event_id: &str,
    event_type: &str,
    created: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let fresh = sqlx::query_scalar!(
        "INSERT INTO stripe_events (tenant_id, event_id, type, created, outcome)
         VALUES ($1, $2, $3, $4, 'pending')
         ON CONFLICT (tenant_id, event_id) DO NOTHING RETURNING event_id",
        tenant_id.as_str(),
        event_id,
        event_type,
        created
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(fresh.is_some())
}

pub async fn set_outcome(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    event_id: &str,
    outcome: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE stripe_events SET outcome = $3 WHERE tenant_id = $1 AND event_id = $2",
        tenant_id.as_str(),
        event_id,
        outcome
    )
    .execute(&mut *conn)
    .await
    .map(drop)
}

/// The subscription a Stripe subscription stands for (by its Stripe id, else the Tollgate id
/// in its metadata), locked, with the creation time of the newest Stripe event applied to it.
pub struct StripeSubscription {
    pub subscription_id: SubscriptionId,
    pub stripe_event_created: Option<DateTime<Utc>>,
}

pub async fn lock_subscription(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    stripe_id: &str,
    tollgate_id: Option<&str>,
) -> Result<Option<StripeSubscription>, sqlx::Error> {
    sqlx::query_as!(
        StripeSubscription,
        "SELECT subscription_id AS \"subscription_id: SubscriptionId\", stripe_event_created FROM subscriptions
                 WHERE tenant_id = $1 AND (stripe_subscription_id = $2 OR subscription_id = $3)
                 ORDER BY (stripe_subscription_id = $2) DESC NULLS LAST LIMIT 1 FOR NO KEY UPDATE",
        tenant_id.as_str(),
        stripe_id,
        tollgate_id
    )
    .fetch_optional(&mut *conn)
    .await
}

pub async fn mark_subscription_seen(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    subscription_id: &SubscriptionId,
    created: DateTime<Utc>,
    stripe_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE subscriptions SET stripe_event_created = $3, stripe_subscription_id = $4
                 WHERE tenant_id = $1 AND subscription_id = $2",
        tenant_id.as_str(),
        subscription_id.as_str(),
        created,
        stripe_id
    )
    .execute(&mut *conn)
    .await
    .map(drop)
}

/// The Tollgate invoice a Stripe invoice stands for (by its Stripe id, else the Tollgate id
/// in its metadata).
pub async fn find_invoice(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    stripe_id: Option<&str>,
    tollgate_id: Option<&str>,
) -> Result<Option<InvoiceId>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT invoice_id AS "invoice_id: InvoiceId" FROM invoices
         WHERE tenant_id = $1 AND (stripe_invoice_id = $2 OR invoice_id = $3)
         LIMIT 1"#,
        tenant_id.as_str(),
        stripe_id,
        tollgate_id
    )
    .fetch_optional(&mut *conn)
    .await
}
