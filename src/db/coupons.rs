//! `coupons`, their redemptions (counted in one statement), and the discount a subscription
//! holds (`subscriptions.discount_*`).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;

use crate::domain::id::{InvoiceId, SubscriptionId, TenantId};

pub struct CouponRow {
    pub code: String,
    pub name: Option<String>,
    pub percent_off: Option<Decimal>,
    pub amount_off: Option<Decimal>,
    pub currency: String,
    pub duration: String,
    pub duration_in_periods: Option<i32>,
    pub max_redemptions: Option<i32>,
    pub times_redeemed: i32,
    pub redeem_by: Option<DateTime<Utc>>,
    pub plans: Option<Vec<String>>,
    pub created_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

pub struct NewCoupon<'a> {
    pub code: &'a str,
    pub name: Option<&'a str>,
    pub percent_off: Option<Decimal>,
    pub amount_off: Option<Decimal>,
    pub currency: &'a str,
    pub duration: &'a str,
    pub duration_in_periods: Option<i32>,
    pub max_redemptions: Option<i32>,
    pub redeem_by: Option<DateTime<Utc>>,
    pub plans: Option<&'a [String]>,
    pub now: DateTime<Utc>,
}

/// Inserts a coupon; `None` when the code is taken (a deleted coupon keeps its code).
pub async fn insert(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    c: &NewCoupon<'_>,
) -> Result<Option<CouponRow>, sqlx::Error> {
    sqlx::query_as!(
        CouponRow,
        r#"INSERT INTO coupons (tenant_id, code, name, percent_off, amount_off, currency,
               duration, duration_in_periods, max_redemptions, redeem_by, plans, created_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
           ON CONFLICT (tenant_id, code) DO NOTHING
           RETURNING code, name, percent_off, amount_off, currency, duration,
                     duration_in_periods, max_redemptions, times_redeemed, redeem_by, plans,
                     created_at, deleted_at"#,
        tenant_id.as_str(),
        c.code,
        c.name,
        c.percent_off,
        c.amount_off,
        c.currency,
        c.duration,
        c.duration_in_periods,
        c.max_redemptions,
        c.redeem_by,
        c.plans,
        c.now
    )
    .fetch_optional(&mut *conn)
    .await
}

/// A coupon, deleted ones included.
pub async fn get(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    code: &str,
) -> Result<Option<CouponRow>, sqlx::Error> {
    sqlx::query_as!(
        CouponRow,
        r#"SELECT code, name, percent_off, amount_off, currency, duration, duration_in_periods,
                  max_redemptions, times_redeemed, redeem_by, plans, created_at, deleted_at
           FROM coupons WHERE tenant_id = $1 AND code = $2"#,
        tenant_id.as_str(),
        code
    )
    .fetch_optional(&mut *conn)
    .await
}

/// Up to `limit` coupons not deleted after the code `starting_after`, by code.
pub async fn list(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    starting_after: Option<&str>,
    limit: i64,
) -> Result<Vec<CouponRow>, sqlx::Error> {
    sqlx::query_as!(
        CouponRow,
        r#"SELECT code, name, percent_off, amount_off, currency, duration, duration_in_periods,
                  max_redemptions, times_redeemed, redeem_by, plans, created_at, deleted_at
           FROM coupons
           WHERE tenant_id = $1 AND deleted_at IS NULL AND ($2::text IS NULL OR code > $2)
           ORDER BY code LIMIT $3"#,
        tenant_id.as_str(),
        starting_after,
        limit
    )
    .fetch_all(&mut *conn)
    .await
}

/// Deletes a coupon (no new redemptions); `None` if there is no such coupon not yet deleted.
pub async fn delete(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    code: &str,
    at: DateTime<Utc>,
) -> Result<Option<CouponRow>, sqlx::Error> {
    sqlx::query_as!(
        CouponRow,
        r#"UPDATE coupons SET deleted_at = $3
           WHERE tenant_id = $1 AND code = $2 AND deleted_at IS NULL
           RETURNING code, name, percent_off, amount_off, currency, duration,
                     duration_in_periods, max_redemptions, times_redeemed, redeem_by, plans,
                     created_at, deleted_at"#,
        tenant_id.as_str(),
        code,
        at
    )
    .fetch_optional(&mut *conn)
    .await
}

/// Counts one redemption, if the coupon can be redeemed at `at` (not deleted, not past
/// `redeem_by`, fewer than `max_redemptions` so far): one statement, so concurrent
/// redemptions never pass the maximum. `None` when it cannot.
pub async fn redeem(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    code: &str,
    at: DateTime<Utc>,
) -> Result<Option<CouponRow>, sqlx::Error> {
    sqlx::query_as!(
        CouponRow,
        r#"UPDATE coupons SET times_redeemed = times_redeemed + 1
           WHERE tenant_id = $1 AND code = $2 AND deleted_at IS NULL
             AND (redeem_by IS NULL OR redeem_by > $3)
             AND (max_redemptions IS NULL OR times_redeemed < max_redemptions)
           RETURNING code, name, percent_off, amount_off, currency, duration,
                     duration_in_periods, max_redemptions, times_redeemed, redeem_by, plans,
                     created_at, deleted_at"#,
        tenant_id.as_str(),
        code,
        at
    )
    .fetch_optional(&mut *conn)
    .await
}

/// A subscription's discount: `(coupon, start, end)` (end: none for no end).
pub type Discount = (String, DateTime<Utc>, Option<DateTime<Utc>>);

/// [`Discount`], borrowed.
pub type DiscountRef<'a> = (&'a str, DateTime<Utc>, Option<DateTime<Utc>>);

pub async fn discount(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    subscription_id: &SubscriptionId,
) -> Result<Option<Discount>, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT discount_coupon, discount_start, discount_end FROM subscriptions
           WHERE tenant_id = $1 AND subscription_id = $2"#,
        tenant_id.as_str(),
        subscription_id.as_str()
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(
        row.and_then(|r| match (r.discount_coupon, r.discount_start) {
            (Some(code), Some(start)) => Some((code, start, r.discount_end)),
            _ => None,
        }),
    )
}

/// Sets (or, with `None`, ends) a subscription's discount.
pub async fn set_discount(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    subscription_id: &SubscriptionId,
    discount: Option<DiscountRef<'_>>,
) -> Result<(), sqlx::Error> {
    let (code, start, end) = match discount {
        Some((c, s, e)) => (Some(c), Some(s), e),
        None => (None, None, None),
    };
    sqlx::query!(
        "UPDATE subscriptions SET discount_coupon = $3, discount_start = $4, discount_end = $5
         WHERE tenant_id = $1 AND subscription_id = $2",
        tenant_id.as_str(),
        subscription_id.as_str(),
        code,
        start,
        end
    )
    .execute(&mut *conn)
    .await
    .map(drop)
}

/// The discounts of several subscriptions, for their views: `(subscription, discount)`.
pub async fn discounts(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    subscription_ids: &[&str],
) -> Result<Vec<(String, Discount)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT subscription_id, discount_coupon AS "coupon!", discount_start AS "start!",
                  discount_end
           FROM subscriptions
           WHERE tenant_id = $1 AND subscription_id = ANY($2) AND discount_coupon IS NOT NULL"#,
        tenant_id.as_str(),
        subscription_ids as &[&str]
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.subscription_id, (r.coupon, r.start, r.discount_end)))
        .collect())
}

/// Marks which coupon discounted an invoice (its finalization recomputes the line).
pub async fn mark_invoice(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    invoice_id: &InvoiceId,
    code: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE invoices SET discount_coupon = $3 WHERE tenant_id = $1 AND invoice_id = $2",
        tenant_id.as_str(),
        invoice_id.as_str(),
        code
    )
    .execute(&mut *conn)
    .await
    .map(drop)
}

/// The coupon that discounted an invoice, if one did.
pub async fn of_invoice(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    invoice_id: &InvoiceId,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT discount_coupon FROM invoices WHERE tenant_id = $1 AND invoice_id = $2",
        tenant_id.as_str(),
        invoice_id.as_str()
    )
    .fetch_optional(&mut *conn)
    .await
    .map(Option::flatten)
}

/// The sum of an invoice's lines but its `discount` lines (its subtotal).
pub async fn subtotal(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    invoice_id: &InvoiceId,
) -> Result<Decimal, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT COALESCE(sum(amount), 0) AS "sum!" FROM invoice_lines
           WHERE tenant_id = $1 AND invoice_id = $2 AND type <> 'discount'"#,
        tenant_id.as_str(),
        invoice_id.as_str()
    )
    .fetch_one(&mut *conn)
    .await
}

/// Removes an invoice's `discount` lines (before they are computed again).
pub async fn delete_discount_lines(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    invoice_id: &InvoiceId,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "DELETE FROM invoice_lines WHERE tenant_id = $1 AND invoice_id = $2 AND type = 'discount'",
        tenant_id.as_str(),
        invoice_id.as_str()
    )
    .execute(&mut *conn)
    .await
    .map(drop)
}
