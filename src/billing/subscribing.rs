//! Subscriptions as the API offers them: subscribe, read, change, cancel, reactivate. Each
//! is one transaction over the lifecycle (`billing::lifecycle`).

use crate::ids::{SubscriptionId, TenantId};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::PgPool;

use super::lifecycle::{self, ChangeEffect, ChangeRequest, When};
use super::subscriptions::{self as subs, NewSubscription};
use super::views::Subscription;
use crate::audit::{self, Origin};
use crate::db;
use crate::db::plans::PlanCache;
use crate::db::subscriptions::SubscriptionRow;
use crate::domain::period::Interval;
use crate::domain::plan::{normalize_prices, PriceDef, PriceInput};
use crate::domain::status::SubscriptionStatus;
use crate::entitlements::resolve::customer_must_exist;
use crate::error::{Error, Result};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSubscription {
    pub customer: String,
    pub plan: String,
    pub interval: Option<Interval>,
    /// Overrides the plan's trial_days.
    pub trial_days: Option<i32>,
    /// A coupon code: the subscription starts with its discount (SPEC §15).
    pub coupon: Option<String>,
    /// Negotiated prices for this subscription only, in the plan price shape, for its
    /// interval; they replace the plan's (SPEC §15).
    pub price_overrides: Option<Vec<PriceInput>>,
}

/// A plan version to move to: `"latest"` or a version number.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum VersionSpec {
    Number(i32),
    Named(String),
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeSubscription {
    pub plan: String,
    /// Default: the current interval.
    pub interval: Option<Interval>,
    /// Default: upgrades now (with proration), downgrades at period end.
    pub when: Option<When>,
    /// `"latest"` (or a number). Default: for another plan its newest version; for the same
    /// plan the version held (so only `interval` changes).
    #[schema(value_type = Option<String>, example = "latest")]
    pub version: Option<VersionSpec>,
    /// Negotiated prices after the change (SPEC §15); `null` clears them. Absent: kept on the
    /// same plan, cleared on another.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<PriceInput>>)]
    pub price_overrides: Option<Option<Vec<PriceInput>>>,
}

/// A field that may be absent (`None`), `null` (`Some(None)`) or a value.
fn present<'de, D, T>(d: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Validates negotiated prices for a subscription on `plan` billed each `interval`: prices in
/// the plan price shape, all for that interval and in the plan's currency.
fn overrides(
    plan: &crate::db::plans::PlanVersion,
    interval: Interval,
    input: &[PriceInput],
) -> Result<Vec<PriceDef>> {
    let param = |i: usize, f: &str| format!("price_overrides[{i}].{f}");
    if input.is_empty() {
        return Err(Error::invalid_param(
            "invalid_price_overrides",
            "price_overrides",
            "price_overrides lists at least one price; null clears them.",
        ));
    }
    let defs = normalize_prices(input).map_err(|e| {
        let at = e.param.strip_prefix("prices").unwrap_or(&e.param);
        Error::invalid_param(e.code, &format!("price_overrides{at}"), e.message)
    })?;
    for (i, p) in input.iter().enumerate() {
        if p.interval != interval {
            return Err(Error::invalid_param(
                "price_interval_mismatch",
                &param(i, "interval"),
                format!(
                    "The subscription is billed each {}; its negotiated prices are for that interval.",
                    interval.as_str()
                ),
            ));
        }
        if !plan.prices.is_empty() && p.currency.to_ascii_lowercase() != plan.currency() {
            return Err(Error::invalid_param(
                "invalid_currency",
                &param(i, "currency"),
                format!("The plan is priced in {}.", plan.currency()),
            ));
        }
    }
    Ok(defs)
}

fn plan_not_found() -> Error {
    Error::not_found("plan_not_found", "No such plan.").with_param("plan")
}

/// Subscribes a customer to a plan's newest version and invoices the start, in one
/// transaction.
pub async fn subscribe(
    db: &PgPool,
    origin: &Origin,
    plans: &PlanCache,
    tenant_id: &TenantId,
    body: &CreateSubscription,
    now: DateTime<Utc>,
) -> Result<Subscription> {
    if body.trial_days.is_some_and(|d| !(0..=730).contains(&d)) {
        return Err(Error::invalid_param(
            "invalid_trial_days",
            "trial_days",
            "trial_days must be between 0 and 730.",
        ));
    }
    let mut tx = audit::begin(db, origin).await?;
    customer_must_exist(&mut tx, tenant_id, &body.customer).await?;
    let version = crate::db::plans::latest_version(&mut tx, tenant_id, &body.plan)
        .await?
        .ok_or_else(plan_not_found)?;
    let plan = plans
        .get(&mut tx, tenant_id, &body.plan, version)
        .await?
        .ok_or_else(plan_not_found)?;
    let interval = body.interval.unwrap_or_else(|| plan.default_interval());
    if !plan.prices.is_empty() && !plan.has_price(interval) {
        return Err(Error::invalid_param(
            "price_not_found",
            "interval",
            format!("Plan `{}` has no {} price.", plan.key, interval.as_str()),
        ));
    }
    let negotiated = match &body.price_overrides {
        Some(input) => Some(overrides(&plan, interval, input)?),
        None => None,
    };
    let plan = match &negotiated {
        Some(o) => std::sync::Arc::new(plan.with_prices(interval, o)),
        None => plan,
    };
    let trial_days = body.trial_days.unwrap_or(plan.trial_days);
    let discount = match &body.coupon {
        Some(code) => Some(
            super::coupons::redeem(&mut tx, tenant_id, code, (&plan.key, interval), now).await?,
        ),
        None => None,
    };
    let new = NewSubscription {
        tenant_id,
        customer_id: &body.customer,
        plan: &plan,
        interval,
        trial_days,
        now,
        replaces: None,
        discount: discount
            .as_ref()
            .map(|(code, start, end)| (code.as_str(), *start, *end)),
        price_overrides: negotiated.as_deref(),
    };
    let row = lifecycle::start(&mut tx, plans, &new).await?;
    tx.commit().await?;
    Ok(row.into())
}

pub async fn find(
    db: &PgPool,
    tenant_id: &TenantId,
    subscription_id: &SubscriptionId,
) -> Result<Subscription> {
    let mut conn = db.acquire().await?;
    Ok(subs::get(&mut conn, tenant_id, subscription_id, false)
        .await?
        .into())
}

/// The customer's live subscription: `customer_not_found`, or `subscription_not_found` when
/// it has none.
pub async fn live_for_customer(
    db: &PgPool,
    tenant_id: &TenantId,
    customer_id: &str,
) -> Result<Subscription> {
    let mut conn = db.acquire().await?;
    if let Some(r) = db::subscriptions::live_for_customer(&mut conn, tenant_id, customer_id).await?
    {
        return Ok(r.into());
    }
    customer_must_exist(&mut conn, tenant_id, customer_id).await?;
    Err(Error::not_found(
        "subscription_not_found",
        "The customer has no live subscription.",
    ))
}

fn live_or_409(row: &SubscriptionRow) -> Result<()> {
    if row.status == SubscriptionStatus::Canceled {
        return Err(Error::conflict(
            "subscription_ended",
            "The subscription has ended.",
        ));
    }
    Ok(())
}

/// The plan version a change asks for: `version` (or the newest for another plan, the one held
/// for the same plan).
async fn target_plan(
    conn: &mut sqlx::PgConnection,
    plans: &PlanCache,
    tenant_id: &TenantId,
    sub: &SubscriptionRow,
    body: &ChangeSubscription,
) -> Result<std::sync::Arc<crate::db::plans::PlanVersion>> {
    let latest = crate::db::plans::latest_version(conn, tenant_id, &body.plan)
        .await?
        .ok_or_else(plan_not_found)?;
    let version = match &body.version {
        Some(VersionSpec::Named(v)) if v == "latest" => latest,
        Some(VersionSpec::Number(n)) if (1..=latest).contains(n) => *n,
        Some(_) => {
            return Err(Error::invalid_param(
                "invalid_version",
                "version",
                format!("version must be \"latest\" or a version from 1 to {latest}."),
            ))
        }
        None if body.plan == sub.plan_key => sub.plan_version,
        None => latest,
    };
    plans
        .get(conn, tenant_id, &body.plan, version)
        .await?
        .ok_or_else(plan_not_found)
}

/// The negotiated prices a subscription holds after a change: those given, none for `null`;
/// if absent, those held on the same plan and interval, none on another.
fn change_overrides(
    sub: &SubscriptionRow,
    plan: &crate::db::plans::PlanVersion,
    interval: Interval,
    body: &ChangeSubscription,
) -> Result<Option<Vec<PriceDef>>> {
    match &body.price_overrides {
        Some(Some(input)) => overrides(plan, interval, input).map(Some),
        Some(None) => Ok(None),
        None if plan.key == sub.plan_key && interval == sub.interval => {
            Ok(sub.price_overrides.as_ref().map(|o| o.0.clone()))
        }
        None => Ok(None),
    }
}

/// Changes plan or interval: upgrades now with proration, downgrades at period end (unless
/// `when` says otherwise).
pub async fn change(
    db: &PgPool,
    origin: &Origin,
    plans: &PlanCache,
    tenant_id: &TenantId,
    subscription_id: &SubscriptionId,
    body: &ChangeSubscription,
    now: DateTime<Utc>,
) -> Result<Subscription> {
    let mut tx = audit::begin(db, origin).await?;
    let sub = subs::get(&mut tx, tenant_id, subscription_id, true).await?;
    live_or_409(&sub)?;
    let plan = target_plan(&mut tx, plans, tenant_id, &sub, body).await?;
    let interval = body.interval.unwrap_or(sub.interval);
    let negotiated = change_overrides(&sub, &plan, interval, body)?;
    let request = ChangeRequest {
        plan: &plan,
        interval,
        when: body.when,
        overrides: negotiated.as_deref(),
    };
    let row = lifecycle::change(&mut tx, plans, tenant_id, sub, request, now).await?;
    tx.commit().await?;
    Ok(row.into())
}

/// What a change would do, worked out by the code that makes it (`lifecycle::plan_change`)
/// and not made.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChangePreview {
    pub plan: String,
    pub interval: Interval,
    pub takes_effect: When,
    pub effective_at: DateTime<Utc>,
    /// What is invoiced at once (zero for a change at period end or during a trial).
    pub amount_now: rust_decimal::Decimal,
    pub currency: String,
}

/// Previews a change of a live subscription, read-only.
pub async fn preview_change(
    db: &PgPool,
    plans: &PlanCache,
    tenant_id: &TenantId,
    subscription_id: &SubscriptionId,
    body: &ChangeSubscription,
    now: DateTime<Utc>,
) -> Result<ChangePreview> {
    let mut conn = db.acquire().await?;
    let sub = subs::get(&mut conn, tenant_id, subscription_id, false).await?;
    live_or_409(&sub)?;
    let plan = target_plan(&mut conn, plans, tenant_id, &sub, body).await?;
    let interval = body.interval.unwrap_or(sub.interval);
    let negotiated = change_overrides(&sub, &plan, interval, body)?;
    let request = ChangeRequest {
        plan: &plan,
        interval,
        when: body.when,
        overrides: negotiated.as_deref(),
    };
    let effect = lifecycle::plan_change(&mut conn, plans, tenant_id, &sub, &request, now).await?;
    let (takes_effect, effective_at) = match &effect {
        ChangeEffect::Scheduled { at } => (When::PeriodEnd, *at),
        ChangeEffect::TrialSwitch | ChangeEffect::Now { .. } => (When::Now, now),
    };
    Ok(ChangePreview {
        plan: plan.key.clone(),
        interval: request.interval,
        takes_effect,
        effective_at,
        amount_now: effect.amount_now(),
        currency: plan.currency().to_string(),
    })
}

/// Cancels at period end, or now (with its final invoice).
pub async fn cancel(
    db: &PgPool,
    origin: &Origin,
    plans: &PlanCache,
    tenant_id: &TenantId,
    subscription_id: &SubscriptionId,
    at_period_end: bool,
    now: DateTime<Utc>,
) -> Result<Subscription> {
    let mut tx = audit::begin(db, origin).await?;
    let sub = subs::get(&mut tx, tenant_id, subscription_id, true).await?;
    live_or_409(&sub)?;
    let grace = crate::db::tenants::invoice_grace_minutes(&mut tx, tenant_id).await?;
    let row = lifecycle::cancel(&mut tx, plans, tenant_id, sub, at_period_end, grace, now).await?;
    tx.commit().await?;
    Ok(row.into())
}

/// Undoes a cancellation at period end.
pub async fn reactivate(
    db: &PgPool,
    origin: &Origin,
    tenant_id: &TenantId,
    subscription_id: &SubscriptionId,
    now: DateTime<Utc>,
) -> Result<Subscription> {
    let mut tx = audit::begin(db, origin).await?;
    let sub = subs::get(&mut tx, tenant_id, subscription_id, true).await?;
    let row = lifecycle::reactivate(&mut tx, tenant_id, sub, now).await?;
    tx.commit().await?;
    Ok(row.into())
}
