//! Coupons (SPEC §15) as the tenant defines them: made (by the API or `plans apply`), read,
//! listed and deleted. Redeeming one onto a subscription, and the discount lines it puts on
//! invoices, are billing's (`billing::coupons`).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};

use crate::audit::{self, Change, Origin, Resource};
use crate::db;
use crate::db::coupons::{CouponRow, NewCoupon};
use crate::domain::money;
use crate::domain::qty::{max_quantity, Qty};
use crate::error::{Error, Result};
use crate::ids::TenantId;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCoupon {
    /// The code customers and the API name it by (1–255 printable characters).
    pub code: String,
    pub name: Option<String>,
    /// 0 < p ≤ 100, at most two decimals: a JSON number or a decimal string.
    #[schema(value_type = Option<Qty>, example = 15)]
    pub percent_off: Option<serde_json::Value>,
    /// Above zero, in `currency`.
    #[schema(value_type = Option<String>, example = "100.00")]
    pub amount_off: Option<Decimal>,
    /// The currency of `amount_off` (default `usd`).
    pub currency: Option<String>,
    /// `once`, `repeating` or `forever`.
    pub duration: String,
    /// With `repeating` only: how many periods of the subscription's interval it lasts.
    pub duration_in_periods: Option<i32>,
    pub max_redemptions: Option<i32>,
    /// No redemptions at or after this time.
    pub redeem_by: Option<DateTime<Utc>>,
    /// The plan keys it may be applied to (default: any).
    pub plans: Option<Vec<String>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Coupon {
    pub code: String,
    pub name: Option<String>,
    pub percent_off: Option<Qty>,
    pub amount_off: Option<String>,
    pub currency: String,
    pub duration: String,
    pub duration_in_periods: Option<i32>,
    pub max_redemptions: Option<i32>,
    pub times_redeemed: i32,
    pub redeem_by: Option<DateTime<Utc>>,
    pub plans: Option<Vec<String>>,
    pub created_at: DateTime<Utc>,
    /// When it was deleted (no new redemptions since).
    pub deleted_at: Option<DateTime<Utc>>,
}

impl From<CouponRow> for Coupon {
    fn from(r: CouponRow) -> Self {
        Coupon {
            percent_off: r.percent_off.map(|p| Qty(p.normalize())),
            amount_off: r.amount_off.map(|a| money::format(a, &r.currency)),
            code: r.code,
            name: r.name,
            currency: r.currency,
            duration: r.duration,
            duration_in_periods: r.duration_in_periods,
            max_redemptions: r.max_redemptions,
            times_redeemed: r.times_redeemed,
            redeem_by: r.redeem_by,
            plans: r.plans,
            created_at: r.created_at,
            deleted_at: r.deleted_at,
        }
    }
}

pub fn coupon_not_found() -> Error {
    Error::not_found("coupon_not_found", "No such coupon.")
}

fn invalid(code: &'static str, param: &str, message: &str) -> Error {
    Error::invalid_param(code, param, message.to_string())
}

/// `percent_off` as given: a JSON number or a decimal string, 0 < p ≤ 100, two decimals.
fn percent(v: &serde_json::Value) -> Result<Decimal> {
    let text = match v {
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::String(s) => s.clone(),
        _ => String::new(),
    };
    text.parse::<Decimal>()
        .ok()
        .filter(|p| *p > Decimal::ZERO && *p <= Decimal::ONE_HUNDRED && p.normalize().scale() <= 2)
        .ok_or_else(|| {
            invalid(
                "invalid_percent_off",
                "percent_off",
                "percent_off must be above 0 and at most 100, with at most two decimals.",
            )
        })
}

fn check(body: &CreateCoupon) -> Result<(Option<Decimal>, String)> {
    if !crate::domain::id::is_valid_external_id(&body.code) {
        return Err(invalid(
            "invalid_code",
            "code",
            "code must be 1 to 255 printable characters.",
        ));
    }
    if body
        .name
        .as_deref()
        .is_some_and(|n| n.trim().is_empty() || n.len() > 200)
    {
        return Err(invalid(
            "invalid_name",
            "name",
            "name must be 1 to 200 characters.",
        ));
    }
    let currency = body.currency.clone().unwrap_or_else(|| "usd".to_string());
    if !money::is_valid_currency(&currency) {
        return Err(invalid(
            "invalid_currency",
            "currency",
            "currency must be a lowercase ISO 4217 code.",
        ));
    }
    let percent = match (&body.percent_off, &body.amount_off) {
        (Some(p), None) => Some(percent(p)?),
        (None, Some(a)) => {
            if *a <= Decimal::ZERO
                || *a > max_quantity()
                || a.normalize().scale() > money::minor_unit_scale(&currency)
            {
                return Err(invalid(
                    "invalid_amount_off",
                    "amount_off",
                    "amount_off must be above zero, with at most the currency's minor-unit precision.",
                ));
            }
            None
        }
        _ => {
            return Err(invalid(
                "invalid_discount",
                "percent_off",
                "Give exactly one of percent_off and amount_off.",
            ))
        }
    };
    match (body.duration.as_str(), body.duration_in_periods) {
        ("repeating", Some(n)) if (1..=1200).contains(&n) => {}
        ("repeating", _) => {
            return Err(invalid(
                "invalid_duration_in_periods",
                "duration_in_periods",
                "A repeating coupon needs duration_in_periods, 1 to 1200.",
            ))
        }
        ("once" | "forever", None) => {}
        ("once" | "forever", Some(_)) => {
            return Err(invalid(
                "invalid_duration_in_periods",
                "duration_in_periods",
                "duration_in_periods goes only with a repeating coupon.",
            ))
        }
        _ => {
            return Err(invalid(
                "invalid_duration",
                "duration",
                "duration must be once, repeating or forever.",
            ))
        }
    }
    if body.max_redemptions.is_some_and(|m| m < 1) {
        return Err(invalid(
            "invalid_max_redemptions",
            "max_redemptions",
            "max_redemptions must be at least 1.",
        ));
    }
    if let Some(plans) = &body.plans {
        if plans.is_empty()
            || plans.len() > 100
            || plans
                .iter()
                .any(|p| !crate::domain::id::is_valid_external_id(p))
        {
            return Err(invalid(
                "invalid_plans",
                "plans",
                "plans must list 1 to 100 plan keys.",
            ));
        }
    }
    Ok((percent, currency))
}

pub async fn create(
    db: &PgPool,
    origin: &Origin,
    tenant_id: &TenantId,
    body: &CreateCoupon,
    now: DateTime<Utc>,
) -> Result<Coupon> {
    let mut tx = audit::begin(db, origin).await?;
    let coupon = insert(&mut tx, tenant_id, body, now).await?;
    tx.commit().await?;
    Ok(coupon)
}

/// Creates a coupon as `tollgate plans apply` does: a code already there with the same terms
/// is left as it is (`Ok(false)`); with other terms it is `coupon_exists` (a coupon's terms
/// never change once customers may hold it).
pub async fn apply_file(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    body: &CreateCoupon,
    now: DateTime<Utc>,
) -> Result<bool> {
    let (percent_off, currency) = check(body)?;
    let Some(existing) = db::coupons::get(conn, tenant_id, &body.code).await? else {
        insert(conn, tenant_id, body, now).await?;
        return Ok(true);
    };
    let same = existing.percent_off.map(|p| p.normalize()) == percent_off.map(|p| p.normalize())
        && existing.amount_off.map(|a| a.normalize()) == body.amount_off.map(|a| a.normalize())
        && existing.currency == currency
        && existing.duration == body.duration
        && existing.duration_in_periods == body.duration_in_periods
        && existing.max_redemptions == body.max_redemptions
        && existing.redeem_by == body.redeem_by
        && existing.plans == body.plans;
    if !same {
        return Err(Error::conflict(
            "coupon_exists",
            format!(
                "Coupon `{}` exists with other terms; a coupon's terms never change (make a new code).",
                body.code
            ),
        )
        .with_param("code"));
    }
    Ok(false)
}

/// Creates a coupon in the caller's transaction, with its audit entry.
async fn insert(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    body: &CreateCoupon,
    now: DateTime<Utc>,
) -> Result<Coupon> {
    let (percent_off, currency) = check(body)?;
    let tx = conn;
    let row = db::coupons::insert(
        &mut *tx,
        tenant_id,
        &NewCoupon {
            code: &body.code,
            name: body.name.as_deref().map(str::trim),
            percent_off,
            amount_off: body.amount_off.map(|a| a.normalize()),
            currency: &currency,
            duration: &body.duration,
            duration_in_periods: body.duration_in_periods,
            max_redemptions: body.max_redemptions,
            redeem_by: body.redeem_by,
            plans: body.plans.as_deref(),
            now,
        },
    )
    .await?
    .ok_or_else(|| {
        Error::conflict("coupon_exists", "A coupon with this code exists already.")
            .with_param("code")
    })?;
    let coupon = Coupon::from(row);
    let change = Change::new(Resource::Coupon(&coupon.code), "created").after(&coupon);
    audit::record(tx, tenant_id, change, now).await?;
    Ok(coupon)
}

pub async fn get(db: &PgPool, tenant_id: &TenantId, code: &str) -> Result<Coupon> {
    let mut conn = db.acquire().await?;
    db::coupons::get(&mut conn, tenant_id, code)
        .await?
        .map(Coupon::from)
        .ok_or_else(coupon_not_found)
}

pub async fn list(
    db: &PgPool,
    tenant_id: &TenantId,
    starting_after: Option<&str>,
    limit: i64,
) -> Result<Vec<Coupon>> {
    let mut conn = db.acquire().await?;
    let rows = db::coupons::list(&mut conn, tenant_id, starting_after, limit + 1).await?;
    Ok(rows.into_iter().map(Coupon::from).collect())
}

/// Deletes a coupon: no new redemptions; discounts already applied run their course.
pub async fn delete(
    db: &PgPool,
    origin: &Origin,
    tenant_id: &TenantId,
    code: &str,
    now: DateTime<Utc>,
) -> Result<Coupon> {
    let mut tx = audit::begin(db, origin).await?;
    let row = db::coupons::delete(&mut tx, tenant_id, code, now)
        .await?
        .ok_or_else(coupon_not_found)?;
    let coupon = Coupon::from(row);
    let change = Change::new(Resource::Coupon(&coupon.code), "deleted").after(&coupon);
    audit::record(&mut tx, tenant_id, change, now).await?;
    tx.commit().await?;
    Ok(coupon)
}
