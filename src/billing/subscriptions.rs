//! Subscription writes as every service makes them: each one the database write, its history
//! row, its webhook event (`subscription.created`, `.updated`, `.canceled`) and its audit
//! entry in the caller's transaction, so no caller can forget any of them.

use crate::ids::{SubscriptionId, TenantId};
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::audit::{self, Change, Resource};
use crate::db::plans::PlanVersion;
use crate::db::subscriptions::{self as db, SubscriptionRow};
pub use crate::db::subscriptions::{NewSubscription, NextPeriod};
use crate::domain::addon::Attached;
use crate::domain::period::Interval;
use crate::domain::plan::PriceDef;
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

/// The audit entry of a subscription write: `subscription.<verb>`, before and after as the
/// API shows them.
async fn audit(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    verb: &str,
    (before, after): (Option<&SubscriptionRow>, &SubscriptionRow),
    at: DateTime<Utc>,
) -> Result<()> {
    let shown = |r: &SubscriptionRow| super::views::Subscription::from(r.clone());
    let mut change = Change::new(Resource::Subscription(&after.subscription_id), verb)
        .customer(&after.customer_id)
        .after(&shown(after));
    if let Some(before) = before {
        change = change.before(&shown(before));
    }
    audit::record(conn, tenant_id, change, at).await
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
    let row = db::create(conn, &id, new).await?.ok_or_else(|| {
        Error::conflict(
            "subscription_exists",
            "The customer already has a live subscription; change it instead.",
        )
    })?;
    db::record_history(conn, new.tenant_id, &row, "created", new.now).await?;
    emit(conn, new.tenant_id, events::SUBSCRIPTION_CREATED, &row).await?;
    audit(conn, new.tenant_id, "created", (None, &row), new.now).await?;
    Ok(row)
}

/// How a subscription came to end, for the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Canceled now, at the caller's request (`subscription.canceled`).
    CanceledNow,
    /// Its time ran out: the end of a period it was canceled at, dunning, erasure
    /// (`subscription.ended`).
    Ended,
}

/// Ends a subscription at `at`.
pub async fn end(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    before: &SubscriptionRow,
    (at, reason, ending): (DateTime<Utc>, &str, Ending),
) -> Result<SubscriptionRow> {
    let row = db::end(conn, tenant_id, &before.subscription_id, at, reason).await?;
    db::record_history(conn, tenant_id, &row, "ended", at).await?;
    emit(conn, tenant_id, events::SUBSCRIPTION_CANCELED, &row).await?;
    let verb = match ending {
        Ending::CanceledNow => "canceled",
        Ending::Ended => "ended",
    };
    audit(conn, tenant_id, verb, (Some(before), &row), at).await?;
    Ok(row)
}

/// Moves a subscription into its next period; a trial becomes active. `verb` says what the
/// period end was (`renewed`, `trial_ended`, or `changed` when a scheduled change applied).
pub async fn roll(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    before: &SubscriptionRow,
    next: &NextPeriod<'_>,
    verb: &str,
) -> Result<SubscriptionRow> {
    let row = db::roll(conn, tenant_id, &before.subscription_id, next).await?;
    db::record_history(conn, tenant_id, &row, "renewed", next.start).await?;
    emit(conn, tenant_id, events::SUBSCRIPTION_UPDATED, &row).await?;
    audit(conn, tenant_id, verb, (Some(before), &row), next.start).await?;
    Ok(row)
}

/// Sets (or clears) the change scheduled for period end.
pub async fn schedule_change(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    before: &SubscriptionRow,
    change: Option<(&PlanVersion, Interval, DateTime<Utc>)>,
    overrides: Option<&[PriceDef]>,
    now: DateTime<Utc>,
) -> Result<SubscriptionRow> {
    let verb = if change.is_some() {
        "change_scheduled"
    } else {
        "changed"
    };
    let id = &before.subscription_id;
    let row = db::schedule_change(conn, tenant_id, id, change, overrides).await?;
    emit(conn, tenant_id, events::SUBSCRIPTION_UPDATED, &row).await?;
    audit(conn, tenant_id, verb, (Some(before), &row), now).await?;
    Ok(row)
}

/// Switches the plan at `at` (now), keeping the period unless `period` gives a new one.
pub async fn switch_plan(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    before: &SubscriptionRow,
    (plan, interval, overrides): (&PlanVersion, Interval, Option<&[PriceDef]>),
    period: Option<(DateTime<Utc>, DateTime<Utc>)>,
    at: DateTime<Utc>,
) -> Result<SubscriptionRow> {
    let id = &before.subscription_id;
    let row = db::switch_plan(conn, tenant_id, id, plan, interval, period, overrides).await?;
    db::record_history(conn, tenant_id, &row, "plan_changed", at).await?;
    emit(conn, tenant_id, events::SUBSCRIPTION_UPDATED, &row).await?;
    // Only the negotiated prices changed (SPEC §15): `prices_changed`.
    let same_plan = (&row.plan_key, row.plan_version, row.interval)
        == (&before.plan_key, before.plan_version, before.interval);
    let verb = if same_plan {
        "prices_changed"
    } else {
        "changed"
    };
    audit(conn, tenant_id, verb, (Some(before), &row), at).await?;
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
    let before = get(conn, tenant_id, subscription_id, true).await?;
    let row = db::set_status(conn, tenant_id, subscription_id, status).await?;
    if let Some(row) = &row {
        db::record_history(conn, tenant_id, row, "status_changed", at).await?;
        emit(conn, tenant_id, events::SUBSCRIPTION_UPDATED, row).await?;
        let verb = match status {
            SubscriptionStatus::PastDue => "past_due",
            _ => "changed",
        };
        audit(conn, tenant_id, verb, (Some(&before), row), at).await?;
    }
    Ok(row)
}

/// Sets a subscription's discount (`subscription.discount_applied`) or ends it
/// (`.discount_removed`), with `subscription.updated`.
pub async fn set_discount(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    before: &SubscriptionRow,
    discount: Option<&crate::db::coupons::Discount>,
    now: DateTime<Utc>,
) -> Result<SubscriptionRow> {
    let id = &before.subscription_id;
    let value = discount.map(|(code, start, end)| (code.as_str(), *start, *end));
    crate::db::coupons::set_discount(conn, tenant_id, id, value).await?;
    let row = get(conn, tenant_id, id, false).await?;
    db::record_history(conn, tenant_id, &row, "terms_changed", now).await?;
    emit(conn, tenant_id, events::SUBSCRIPTION_UPDATED, &row).await?;
    let verb = if discount.is_some() {
        "discount_applied"
    } else {
        "discount_removed"
    };
    audit(conn, tenant_id, verb, (Some(before), &row), now).await?;
    Ok(row)
}

/// Sets a subscription's add-ons (SPEC §15): `subscription.<verb>` (`addon_attached`,
/// `addon_updated`, `addon_removed`) and `subscription.updated`.
pub async fn set_addons(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    before: &SubscriptionRow,
    addons: &[Attached],
    verb: &str,
    now: DateTime<Utc>,
) -> Result<SubscriptionRow> {
    let row = db::set_addons(conn, tenant_id, &before.subscription_id, addons).await?;
    db::record_history(conn, tenant_id, &row, "terms_changed", now).await?;
    emit(conn, tenant_id, events::SUBSCRIPTION_UPDATED, &row).await?;
    audit(conn, tenant_id, verb, (Some(before), &row), now).await?;
    Ok(row)
}

/// A one-time add-on bought on a subscription (SPEC §15): not kept on it, so only the audit
/// entry `subscription.addon_attached` (its invoice says what was bought).
pub async fn one_time_addon(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    sub: &SubscriptionRow,
    now: DateTime<Utc>,
) -> Result<SubscriptionRow> {
    audit(conn, tenant_id, "addon_attached", (Some(sub), sub), now).await?;
    Ok(sub.clone())
}

/// Cancels at period end (`subscription.canceled`) or undoes that (`.reactivated`).
pub async fn set_cancel_at_period_end(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    before: &SubscriptionRow,
    cancel: bool,
    now: DateTime<Utc>,
) -> Result<SubscriptionRow> {
    let id = &before.subscription_id;
    let row = db::set_cancel_at_period_end(conn, tenant_id, id, cancel, now).await?;
    emit(conn, tenant_id, events::SUBSCRIPTION_UPDATED, &row).await?;
    let verb = if cancel { "canceled" } else { "reactivated" };
    audit(conn, tenant_id, verb, (Some(before), &row), now).await?;
    Ok(row)
}
