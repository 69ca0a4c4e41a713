//! A subscription's add-ons (SPEC §15): attaching one (or setting its quantity) and removing
//! it, each prorated to the second on an invoice finalized at once, and the `addon` lines a
//! renewal bills in advance.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::{PgConnection, PgPool};

use super::invoices::{self, NewInvoice};
use super::subscriptions as subs;
use super::views::Subscription;
use crate::audit::{self, Origin};
use crate::catalog::addons::addon_not_found;
use crate::db;
use crate::db::plans::PlanCache;
use crate::db::subscriptions::SubscriptionRow;
use crate::domain::addon::{self, AddonVersion, Attached, Billing};
use crate::domain::invoice::Line;
use crate::domain::period::Interval;
use crate::domain::qty::Qty;
use crate::domain::status::SubscriptionStatus;
use crate::error::{Error, Result};
use crate::ids::{SubscriptionId, TenantId};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachAddon {
    /// The add-on's key.
    pub addon: String,
    /// A whole number ≥ 1; default 1. For an add-on already attached, its new quantity.
    pub quantity: Option<Qty>,
}

fn live(row: &SubscriptionRow) -> Result<()> {
    if !row.status.is_live() {
        return Err(Error::conflict(
            "subscription_inactive",
            "The subscription has ended.",
        ));
    }
    Ok(())
}

fn interval_mismatch(addon: &AddonVersion, interval: Interval) -> Error {
    Error::conflict(
        "addon_interval_mismatch",
        format!(
            "Add-on `{}` has no {} price and no one_time price.",
            addon.key,
            interval.as_str()
        ),
    )
    .with_param("addon")
}

/// The add-on version `key` (the newest), or `addon_not_found`.
async fn newest(
    conn: &mut PgConnection,
    plans: &PlanCache,
    tenant_id: &TenantId,
    key: &str,
) -> Result<std::sync::Arc<AddonVersion>> {
    let version = db::addons::latest_version(conn, tenant_id, key)
        .await?
        .ok_or_else(addon_not_found)?;
    plans
        .addon(conn, tenant_id, key, version)
        .await?
        .ok_or_else(addon_not_found)
}

/// An attached add-on's version (it keeps it until changed).
async fn attached_version(
    conn: &mut PgConnection,
    plans: &PlanCache,
    tenant_id: &TenantId,
    a: &Attached,
) -> Result<std::sync::Arc<AddonVersion>> {
    plans
        .addon(conn, tenant_id, &a.addon, a.version)
        .await?
        .ok_or_else(|| Error::internal("attached add-on version missing"))
}

/// Invoices `lines` of an add-on change at once (nothing when they come to nothing).
async fn invoice_now(
    conn: &mut PgConnection,
    plans: &PlanCache,
    tenant_id: &TenantId,
    sub: &SubscriptionRow,
    (lines, currency): (Vec<Line>, &str),
    now: DateTime<Utc>,
) -> Result<()> {
    let lines: Vec<Line> = lines.into_iter().filter(|l| !l.amount.is_zero()).collect();
    if lines.is_empty() {
        return Ok(());
    }
    let end = lines
        .iter()
        .map(|l| l.period_end)
        .max()
        .unwrap_or(sub.current_period_end);
    invoices::create(
        conn,
        plans,
        NewInvoice {
            tenant_id,
            customer_id: &sub.customer_id,
            subscription_id: Some(&sub.subscription_id),
            billing_reason: "subscription_update",
            currency,
            period_start: now,
            period_end: end.max(now),
            lines,
            usage: None,
            finalize_at: now,
            now,
        },
    )
    .await?;
    Ok(())
}

/// Attaches an add-on to a live subscription, or sets the quantity of one attached (SPEC
/// §15): a recurring one is charged for the rest of the period (the change of quantity,
/// prorated to the second) on an invoice finalized at once; a one-time one is invoiced in
/// full at once and not kept. Nothing is charged during a trial: the first invoice, at its
/// end, bills the add-ons with the plan.
pub async fn attach(
    db: &PgPool,
    plans: &PlanCache,
    (origin, tenant_id): (&Origin, &TenantId),
    subscription_id: &SubscriptionId,
    body: &AttachAddon,
    now: DateTime<Utc>,
) -> Result<Subscription> {
    let quantity = addon::quantity(body.quantity)
        .map_err(|e| Error::invalid_param(e.code, &e.param, e.message))?;
    let mut tx = audit::begin(db, origin).await?;
    let sub = subs::get(&mut tx, tenant_id, subscription_id, true).await?;
    live(&sub)?;
    let current = sub.addons.iter().find(|a| a.addon == body.addon).cloned();
    let version = match &current {
        // An attached add-on keeps its version (and price) when its quantity changes.
        Some(a) => attached_version(&mut tx, plans, tenant_id, a).await?,
        None => newest(&mut tx, plans, tenant_id, &body.addon).await?,
    };
    let plan = plans
        .of_subscription(&mut tx, tenant_id, &sub)
        .await?
        .ok_or_else(|| Error::internal("subscription plan version missing"))?;
    let billing = version
        .billing(sub.interval)
        .ok_or_else(|| interval_mismatch(&version, sub.interval))?;
    let price = match billing {
        Billing::Recurring(p) | Billing::OneTime(p) => p,
    };
    if !plan.prices.is_empty() && price.currency != plan.currency() {
        return Err(Error::conflict(
            "addon_currency_mismatch",
            format!(
                "Add-on `{}` is priced in {}, the subscription in {}.",
                version.key,
                price.currency,
                plan.currency()
            ),
        )
        .with_param("addon"));
    }
    let trial = sub.status == SubscriptionStatus::Trialing;
    let period = (sub.current_period_start, sub.current_period_end);
    let row = match billing {
        Billing::OneTime(price) => {
            // Invoiced in full, now; the subscription does not change.
            let line = addon::full_line(&version.name, price, quantity, (now, now));
            let after = subs::one_time_addon(&mut tx, tenant_id, &sub, now).await?;
            invoice_now(
                &mut tx,
                plans,
                tenant_id,
                &sub,
                (vec![line], &price.currency),
                now,
            )
            .await?;
            after
        }
        Billing::Recurring(price) => {
            let old = current.as_ref().map_or(0, |a| a.quantity);
            let mut list: Vec<Attached> = sub
                .addons
                .iter()
                .filter(|a| a.addon != body.addon)
                .cloned()
                .collect();
            list.push(Attached {
                addon: version.key.clone(),
                version: version.version,
                quantity,
                removes_at: None,
            });
            list.sort_by(|a, b| a.addon.cmp(&b.addon));
            let verb = if current.is_some() {
                "addon_updated"
            } else {
                "addon_attached"
            };
            let row = subs::set_addons(&mut tx, tenant_id, &sub, &list, verb, now).await?;
            if !trial && quantity != old {
                let line = addon::prorated_line(&version.name, price, quantity - old, period, now);
                invoice_now(
                    &mut tx,
                    plans,
                    tenant_id,
                    &row,
                    (vec![line], &price.currency),
                    now,
                )
                .await?;
            }
            row
        }
    };
    tx.commit().await?;
    Ok(row.into())
}

/// Removes an attached add-on: at the period end (it counts until then; the subscription
/// shows `removes_at`), or now, with the unused time credited on an invoice finalized at once
/// (its negative total goes to the credit balance).
pub async fn remove(
    db: &PgPool,
    plans: &PlanCache,
    (origin, tenant_id): (&Origin, &TenantId),
    (subscription_id, key): (&SubscriptionId, &str),
    at_period_end: bool,
    now: DateTime<Utc>,
) -> Result<Subscription> {
    let mut tx = audit::begin(db, origin).await?;
    let sub = subs::get(&mut tx, tenant_id, subscription_id, true).await?;
    live(&sub)?;
    let Some(current) = sub.addons.iter().find(|a| a.addon == key).cloned() else {
        return Err(Error::not_found(
            "addon_not_found",
            format!("Add-on `{key}` is not attached to this subscription."),
        ));
    };
    let list: Vec<Attached> = if at_period_end {
        sub.addons
            .iter()
            .map(|a| Attached {
                removes_at: if a.addon == key {
                    Some(sub.current_period_end)
                } else {
                    a.removes_at
                },
                ..a.clone()
            })
            .collect()
    } else {
        sub.addons
            .iter()
            .filter(|a| a.addon != key)
            .cloned()
            .collect()
    };
    let row = subs::set_addons(&mut tx, tenant_id, &sub, &list, "addon_removed", now).await?;
    if !at_period_end && sub.status != SubscriptionStatus::Trialing {
        let version = attached_version(&mut tx, plans, tenant_id, &current).await?;
        if let Some(price) = version.recurring(sub.interval) {
            let period = (sub.current_period_start, sub.current_period_end);
            let line = addon::prorated_line(&version.name, price, -current.quantity, period, now);
            invoice_now(
                &mut tx,
                plans,
                tenant_id,
                &row,
                (vec![line], &price.currency),
                now,
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(row.into())
}

/// The add-ons still attached from `at` (those removed at or before it dropped).
pub fn kept_at(addons: &[Attached], at: DateTime<Utc>) -> Vec<Attached> {
    addons
        .iter()
        .filter(|a| a.removes_at.is_none_or(|r| r > at))
        .map(|a| Attached {
            removes_at: None,
            ..a.clone()
        })
        .collect()
}

/// The `addon` lines of a period billed in advance: each add-on in full at its price for
/// `interval`.
pub async fn period_lines(
    conn: &mut PgConnection,
    plans: &PlanCache,
    tenant_id: &TenantId,
    addons: &[Attached],
    (interval, start, end): (Interval, DateTime<Utc>, DateTime<Utc>),
) -> Result<Vec<Line>> {
    let mut lines = Vec::with_capacity(addons.len());
    for a in addons {
        let version = attached_version(conn, plans, tenant_id, a).await?;
        if let Some(price) = version.recurring(interval) {
            lines.push(addon::full_line(
                &version.name,
                price,
                a.quantity,
                (start, end),
            ));
        }
    }
    lines.retain(|l| !l.amount.is_zero());
    Ok(lines)
}

/// `addon_interval_mismatch` unless every add-on attached has a price for `interval` (a plan
/// change to another interval keeps them).
pub async fn check_interval(
    conn: &mut PgConnection,
    plans: &PlanCache,
    tenant_id: &TenantId,
    addons: &[Attached],
    interval: Interval,
) -> Result<()> {
    for a in addons {
        let version = attached_version(conn, plans, tenant_id, a).await?;
        if version.recurring(interval).is_none() {
            return Err(Error::conflict(
                "addon_interval_mismatch",
                format!(
                    "Add-on `{}` has no {} price; remove it before changing the interval.",
                    a.addon,
                    interval.as_str()
                ),
            )
            .with_param("interval"));
        }
    }
    Ok(())
}
