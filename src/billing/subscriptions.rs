//! Subscription writes as every service makes them: each one the database write and its
//! webhook event (`subscription.created`, `.updated`, `.canceled`) in the caller's
//! transaction, so no caller can forget the event.

use crate::ids::{SubscriptionId, TenantId};
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::db::plans::PlanVersion;
use crate::db::subscriptions::{self as db, SubscriptionRow};
pub use crate::db::subscriptions::{NewSubscription, NextPeriod};
use crate::domain::period::Interval;
use crate::domain::status::SubscriptionStatus;
use crate::error::{Error, Result};
use crate::webhooks::events;

/// Emits a subscription event with the subscription as the API shows it.
async fn emit(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    event_type: &str,
    row: &SubscriptionRow,
) -> Result<()> {
    let data = super::views::Subscription::from(row.clone());
    events::emit(conn, tenant_id, event_type, &data).await
}

pub fn subscription_not_found() -> Error {
    Error::no_such::<SubscriptionId>()
}

/// A subscription, locked `FOR UPDATE` when asked; `subscription_not_found` if missing.
pub async fn get(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    subscription_id: &SubscriptionId,
    for_update: bool,
) -> Result<SubscriptionRow> {
    db::get(conn, tenant_id, subscription_id, for_update)
        .await?
        .ok_or_else(subscription_not_found)
}

/// Starts a subscription. A live one already held is `409 subscription_exists`.
/// (Invoicing it is `billing::lifecycle::start`'s job.)
pub async fn create(conn: &mut PgConnection, new: &NewSubscription<'_>) -> Result<SubscriptionRow> {
    let id: SubscriptionId = crate::ids::new();
    let row = db::create(conn, &id, new).await.map_err(|e| {
        if crate::db::is_unique_violation(&e, db::ONE_LIVE_PER_CUSTOMER) {
            Error::conflict(
                "subscription_exists",
                "The customer already has a live subscription; change it instead.",
            )
        } else {
            e.into()
        }
    })?;
    db::record_history(conn, new.tenant_id, &row, "created", new.now).await?;
    emit(conn, new.tenant_id, events::SUBSCRIPTION_CREATED, &row).await?;
    Ok(row)
}

/// Ends a subscription at `at`.
pub async fn end(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    subscription_id: &SubscriptionId,
    at: DateTime<Utc>,
    reason: &str,
) -> Result<SubscriptionRow> {
    let row = db::end(conn, tenant_id, subscription_id, at, reason).await?;
    db::record_history(conn, tenant_id, &row, "ended", at).await?;
    emit(conn, tenant_id, events::SUBSCRIPTION_CANCELED, &row).await?;
    Ok(row)
}

/// Moves a subscription into its next period; a trial becomes active.
pub async fn roll(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    subscription_id: &SubscriptionId,
    next: &NextPeriod<'_>,
) -> Result<SubscriptionRow> {
    let row = db::roll(conn, tenant_id, subscription_id, next).await?;
    db::record_history(conn, tenant_id, &row, "renewed", next.start).await?;
    emit(conn, tenant_id, events::SUBSCRIPTION_UPDATED, &row).await?;
    Ok(row)
}

/// Sets (or clears) the change scheduled for period end.
pub async fn schedule_change(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    subscription_id: &SubscriptionId,
    change: Option<(&PlanVersion, Interval, DateTime<Utc>)>,
) -> Result<SubscriptionRow> {
    let row = db::schedule_change(conn, tenant_id, subscription_id, change).await?;
    emit(conn, tenant_id, events::SUBSCRIPTION_UPDATED, &row).await?;
    Ok(row)
}

/// Switches the plan at `at` (now), keeping the period unless `period` gives a new one.
pub async fn switch_plan(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    subscription_id: &SubscriptionId,
    (plan, interval): (&PlanVersion, Interval),
    period: Option<(DateTime<Utc>, DateTime<Utc>)>,
    at: DateTime<Utc>,
) -> Result<SubscriptionRow> {
    let row = db::switch_plan(conn, tenant_id, subscription_id, plan, interval, period).await?;
    db::record_history(conn, tenant_id, &row, "plan_changed", at).await?;
    emit(conn, tenant_id, events::SUBSCRIPTION_UPDATED, &row).await?;
    Ok(row)
}

/// Sets the status of a live subscription at `at`; emits `subscription.updated` when it
/// changed.
pub async fn set_status(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    subscription_id: &SubscriptionId,
    status: SubscriptionStatus,
    at: DateTime<Utc>,
) -> Result<Option<SubscriptionRow>> {
    let row = db::set_status(conn, tenant_id, subscription_id, status).await?;
    if let Some(row) = &row {
        db::record_history(conn, tenant_id, row, "status_changed", at).await?;
        emit(conn, tenant_id, events::SUBSCRIPTION_UPDATED, row).await?;
    }
    Ok(row)
}

pub async fn set_cancel_at_period_end(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    subscription_id: &SubscriptionId,
    cancel: bool,
    now: DateTime<Utc>,
) -> Result<SubscriptionRow> {
    let row = db::set_cancel_at_period_end(conn, tenant_id, subscription_id, cancel, now).await?;
    emit(conn, tenant_id, events::SUBSCRIPTION_UPDATED, &row).await?;
    Ok(row)
}
