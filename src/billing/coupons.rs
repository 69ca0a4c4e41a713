//! Coupons (SPEC §15) in billing (the tenant makes and deletes them in `catalog::coupons`):
//! redeemed onto a subscription as its discount (at subscribe, or later), which puts one `discount` line on each invoice of the
//! subscription while it lasts: `percent_off`% of the invoice's subtotal rounded once, or
//! `amount_off`, never more than the subtotal (`domain::invoice::discount_amount`). A draft's
//! line is computed as of its lines and again at finalization. A `once` discount ends with the
//! first invoice it discounts; a `repeating` one at `end` (an invoice made at or after it gets
//! none); a `forever` one never. Redemptions are counted in the statement that redeems
//! (`db::coupons::redeem`), so `max_redemptions` holds under concurrency.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use sqlx::{PgConnection, PgPool};

use super::subscriptions::{self as subs};
use super::views::Subscription;
use crate::audit::{self, Origin};
use crate::db;
use crate::db::coupons::CouponRow;
use crate::domain::invoice::{discount_amount, Line, LineType, Off};
use crate::domain::money;
use crate::domain::period::{add_months_clamped, Interval};
use crate::error::{Error, Result};
use crate::ids::{InvoiceId, SubscriptionId, TenantId};

pub use crate::catalog::coupons::coupon_not_found;

pub use crate::db::coupons::Discount as NewDiscount;

/// Redeems `code` for a subscription on `plan_key` billed every `interval`, starting `now`:
/// the discount it gets. The plan is checked before the redemption is counted.
pub async fn redeem(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    code: &str,
    (plan_key, interval): (&str, Interval),
    now: DateTime<Utc>,
) -> Result<NewDiscount> {
    let coupon = db::coupons::get(conn, tenant_id, code)
        .await?
        .ok_or_else(|| coupon_not_found().with_param("coupon"))?;
    if coupon
        .plans
        .as_ref()
        .is_some_and(|p| !p.iter().any(|k| k == plan_key))
    {
        return Err(Error::conflict(
            "coupon_not_applicable",
            format!("Coupon `{code}` does not apply to plan `{plan_key}`."),
        )
        .with_param("coupon"));
    }
    let redeemed = db::coupons::redeem(conn, tenant_id, code, now)
        .await?
        .ok_or_else(|| {
            Error::conflict(
                "coupon_not_redeemable",
                format!("Coupon `{code}` cannot be redeemed (deleted, past redeem_by, or redeemed its maximum number of times)."),
            )
            .with_param("coupon")
        })?;
    let end = match (redeemed.duration.as_str(), redeemed.duration_in_periods) {
        ("repeating", Some(n)) => Some(add_months_clamped(
            now,
            i64::from(n) * i64::from(interval.months()),
        )),
        _ => None,
    };
    Ok((redeemed.code, now, end))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyCoupon {
    pub coupon: String,
}

fn live(row: &crate::db::subscriptions::SubscriptionRow) -> Result<()> {
    if !row.status.is_live() {
        return Err(Error::conflict(
            "subscription_inactive",
            "The subscription has ended.",
        ));
    }
    Ok(())
}

/// Applies a coupon to a live subscription, replacing its current discount.
pub async fn apply(
    db: &PgPool,
    origin: &Origin,
    tenant_id: &TenantId,
    subscription_id: &SubscriptionId,
    code: &str,
    now: DateTime<Utc>,
) -> Result<Subscription> {
    let mut tx = audit::begin(db, origin).await?;
    let before = subs::get(&mut tx, tenant_id, subscription_id, true).await?;
    live(&before)?;
    let discount = redeem(
        &mut tx,
        tenant_id,
        code,
        (&before.plan_key, before.interval),
        now,
    )
    .await?;
    let row = subs::set_discount(&mut tx, tenant_id, &before, Some(&discount), now).await?;
    tx.commit().await?;
    Ok(row.into())
}

/// Ends a subscription's discount now.
pub async fn remove(
    db: &PgPool,
    origin: &Origin,
    tenant_id: &TenantId,
    subscription_id: &SubscriptionId,
    now: DateTime<Utc>,
) -> Result<Subscription> {
    let mut tx = audit::begin(db, origin).await?;
    let before = subs::get(&mut tx, tenant_id, subscription_id, true).await?;
    let row = subs::set_discount(&mut tx, tenant_id, &before, None, now).await?;
    tx.commit().await?;
    Ok(row.into())
}

/// The discount line of an invoice of `subscription_id` made `now`, if its discount is active
/// and the subtotal positive: added, and the invoice marked with the coupon (finalization
/// computes the line again). A `once` discount ends with it; one past its end is cleared.
pub async fn discount_new_invoice(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    (invoice_id, subscription_id): (&InvoiceId, &SubscriptionId),
    (currency, period): (&str, (DateTime<Utc>, DateTime<Utc>)),
    now: DateTime<Utc>,
) -> Result<()> {
    let Some((code, _, end)) = db::coupons::discount(conn, tenant_id, subscription_id).await?
    else {
        return Ok(());
    };
    if end.is_some_and(|end| now >= end) {
        db::coupons::set_discount(conn, tenant_id, subscription_id, None).await?;
        return Ok(());
    }
    let Some(coupon) = db::coupons::get(conn, tenant_id, &code).await? else {
        return Ok(());
    };
    if !add_line(conn, tenant_id, invoice_id, &coupon, (currency, period)).await? {
        return Ok(());
    }
    db::coupons::mark_invoice(conn, tenant_id, invoice_id, &code).await?;
    if coupon.duration == "once" {
        db::coupons::set_discount(conn, tenant_id, subscription_id, None).await?;
    }
    Ok(())
}

/// Computes a discounted draft's line again from its lines now (at finalization).
pub async fn recompute(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    invoice_id: &InvoiceId,
    (currency, period): (&str, (DateTime<Utc>, DateTime<Utc>)),
) -> Result<()> {
    let Some(code) = db::coupons::of_invoice(conn, tenant_id, invoice_id).await? else {
        return Ok(());
    };
    let Some(coupon) = db::coupons::get(conn, tenant_id, &code).await? else {
        return Ok(());
    };
    db::coupons::delete_discount_lines(conn, tenant_id, invoice_id).await?;
    add_line(conn, tenant_id, invoice_id, &coupon, (currency, period)).await?;
    Ok(())
}

/// Adds the coupon's line for the invoice's subtotal now; whether there was one to add.
async fn add_line(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    invoice_id: &InvoiceId,
    coupon: &CouponRow,
    (currency, period): (&str, (DateTime<Utc>, DateTime<Utc>)),
) -> Result<bool> {
    let subtotal = db::coupons::subtotal(conn, tenant_id, invoice_id).await?;
    let Some(line) = line_for(coupon, subtotal, currency, period) else {
        return Ok(false);
    };
    db::invoices::insert_lines(conn, tenant_id, invoice_id, std::slice::from_ref(&line)).await?;
    Ok(true)
}

/// The discount line the coupon puts on an invoice of `subtotal`, if any.
fn line_for(
    coupon: &CouponRow,
    subtotal: Decimal,
    currency: &str,
    period: (DateTime<Utc>, DateTime<Utc>),
) -> Option<Line> {
    let off = match (coupon.percent_off, coupon.amount_off) {
        (Some(p), _) => Off::Percent(p),
        // An amount in another currency than the invoice's takes nothing off it.
        (None, Some(a)) if coupon.currency == currency => Off::Amount(a),
        _ => return None,
    };
    let amount = discount_amount(subtotal, off, currency);
    if amount.is_zero() {
        return None;
    }
    let label = coupon.name.as_deref().unwrap_or(&coupon.code);
    let what = match off {
        Off::Percent(p) => format!("{}% off", p.normalize()),
        Off::Amount(a) => format!("{} off", money::format(a, currency)),
    };
    Some(Line {
        kind: LineType::Discount,
        description: format!("Discount: {label} ({what})"),
        feature: None,
        quantity: Decimal::ONE,
        unit_amount: amount,
        amount,
        period_start: period.0,
        period_end: period.1,
    })
}

/// The discount line the subscription's next invoice, made at `at` with these `lines`, would
/// get (`upcoming_invoice`).
pub async fn preview_line(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    sub: &crate::db::subscriptions::SubscriptionRow,
    (lines, currency): (&[Line], &str),
    (at, period): (DateTime<Utc>, (DateTime<Utc>, DateTime<Utc>)),
) -> Result<Option<Line>> {
    let Some(code) = &sub.discount_coupon else {
        return Ok(None);
    };
    if sub.discount_end.is_some_and(|end| at >= end) {
        return Ok(None);
    }
    let Some(coupon) = db::coupons::get(conn, tenant_id, code).await? else {
        return Ok(None);
    };
    let subtotal = lines
        .iter()
        .filter(|l| l.kind != LineType::Discount)
        .map(|l| l.amount)
        .sum();
    Ok(line_for(&coupon, subtotal, currency, period))
}
