//! Outbound events. An event is recorded, with a pending delivery per subscribed
//! endpoint, in the transaction of the change it reports (`tollgate_emit_event`, migration 4);
//! the webhook worker (`webhooks::deliver`) sends it afterwards. Nothing is stored when no
//! endpoint wants the event type.

use crate::ids::TenantId;
use serde::Serialize;
use sqlx::PgConnection;

use crate::error::Result;

pub const CUSTOMER_CREATED: &str = "customer.created";
pub const SUBSCRIPTION_CREATED: &str = "subscription.created";
pub const SUBSCRIPTION_UPDATED: &str = "subscription.updated";
pub const SUBSCRIPTION_CANCELED: &str = "subscription.canceled";
pub const USAGE_THRESHOLD_REACHED: &str = "usage.threshold_reached";
pub const INVOICE_FINALIZED: &str = "invoice.finalized";
pub const INVOICE_PAID: &str = "invoice.paid";
pub const INVOICE_PAYMENT_FAILED: &str = "invoice.payment_failed";

/// Every event type an endpoint may subscribe to.
pub const TYPES: [&str; 8] = [
    CUSTOMER_CREATED,
    SUBSCRIPTION_CREATED,
    SUBSCRIPTION_UPDATED,
    SUBSCRIPTION_CANCELED,
    USAGE_THRESHOLD_REACHED,
    INVOICE_FINALIZED,
    INVOICE_PAID,
    INVOICE_PAYMENT_FAILED,
];

/// Records `event_type` with `data` (the resource as the API shows it) in the caller's
/// transaction, stamped with the tenant's clock.
pub async fn emit(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    event_type: &str,
    data: &impl Serialize,
) -> Result<()> {
    let data = serde_json::to_value(data)
        .map_err(|e| crate::error::Error::internal(format!("event payload: {e}")))?;
    Ok(crate::db::webhooks::emit(conn, tenant_id, event_type, &data).await?)
}

/// Whether any endpoint of the tenant wants `event_type` (so callers can skip building a
/// payload that costs queries).
pub async fn wanted(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    event_type: &str,
) -> Result<bool> {
    Ok(crate::db::webhooks::wanted(conn, tenant_id, event_type).await?)
}
