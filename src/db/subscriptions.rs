//! `subscriptions`: the rows and their writes. The writes return the new row; the service
//! (`billing::subscriptions`) emits the webhook event of each in the same transaction. Every
//! statement is checked at build time; the `interval` and `status` columns decode into their
//! types (`db::decode_text`), so an unknown value is an error, not a guess.

use crate::domain::id::SubscriptionId;
use crate::domain::id::TenantId;
use chrono::{DateTime, Duration, Utc};
use sqlx::types::Json;
use sqlx::PgConnection;

use crate::domain::addon::Attached;
use crate::domain::plan::PriceDef;

use crate::domain::period::{add_months_clamped, Interval};
use crate::domain::plan::PlanVersion;
use crate::domain::status::SubscriptionStatus;

#[derive(Debug, Clone)]
pub struct SubscriptionRow {
    pub subscription_id: SubscriptionId,
    pub customer_id: String,
    pub plan_key: String,
    pub plan_version: i32,
    pub interval: Interval,
    pub status: SubscriptionStatus,
    pub billing_anchor: DateTime<Utc>,
    pub current_period_start: DateTime<Utc>,
    pub current_period_end: DateTime<Utc>,
    pub trial_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub pending_plan_key: Option<String>,
    pub pending_plan_version: Option<i32>,
    pub pending_interval: Option<Interval>,
    pub pending_at: Option<DateTime<Utc>>,
    pub canceled_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// The current discount (SPEC §15): its coupon, start and end (none: no end).
    pub discount_coupon: Option<String>,
    pub discount_start: Option<DateTime<Utc>>,
    pub discount_end: Option<DateTime<Utc>>,
    /// The attached add-ons, by key (SPEC §15).
    pub addons: Json<Vec<Attached>>,
    /// Negotiated prices for its interval, replacing the plan version's (SPEC §15).
    pub price_overrides: Option<Json<Vec<PriceDef>>>,
    /// Those of the change scheduled for the period end (with `pending_plan_key`).
    pub pending_price_overrides: Option<Json<Vec<PriceDef>>>,
}

/// A subscription to start: `trial_days > 0` starts a trial that long, else the first period
/// (one interval from `now`).
pub struct NewSubscription<'a> {
    pub tenant_id: &'a TenantId,
    pub customer_id: &'a str,
    pub plan: &'a PlanVersion,
    pub interval: Interval,
    pub trial_days: i32,
    pub now: DateTime<Utc>,
    /// The subscription it takes over from (a fallback to the default plan).
    pub replaces: Option<&'a SubscriptionId>,
    /// A discount it starts with (a coupon redeemed at subscribe): `(coupon, start, end)`.
    pub discount: Option<super::coupons::DiscountRef<'a>>,
    /// Negotiated prices for its interval (SPEC §15); `plan` already has them in place.
    pub price_overrides: Option<&'a [PriceDef]>,
}

/// Inserts a subscription with id `id`; `None` (nothing inserted) when the customer has a live
/// one already (the unique index `subscriptions_one_live_per_customer`). (Found by `ON CONFLICT` rather than by the unique
/// violation's constraint name, which Citus does not pass on from the node that raised it.)
pub async fn create(
    conn: &mut PgConnection,
    id: &SubscriptionId,
    new: &NewSubscription<'_>,
) -> Result<Option<SubscriptionRow>, sqlx::Error> {
    let now = new.now;
    let (status, trial_end, period_end, anchor) = if new.trial_days > 0 {
        let end = now + Duration::days(i64::from(new.trial_days));
        (SubscriptionStatus::Trialing, Some(end), end, end)
    } else {
        (
            SubscriptionStatus::Active,
            None,
            add_months_clamped(now, i64::from(new.interval.months())),
            now,
        )
    };
    sqlx::query_as!(
        SubscriptionRow,
        r#"INSERT INTO subscriptions (tenant_id, subscription_id, customer_id, plan_key,
               plan_version, interval, status, billing_anchor, current_period_start,
               current_period_end, trial_end, replaces_subscription_id, created_at, updated_at,
               discount_coupon, discount_start, discount_end, price_overrides)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $9, $9, $13, $14, $15, $16)
           ON CONFLICT (tenant_id, customer_id) WHERE status IN ('trialing', 'active', 'past_due')
           DO NOTHING
           RETURNING subscription_id AS "subscription_id: SubscriptionId", customer_id, plan_key, plan_version,
                   interval AS "interval: Interval", status AS "status: SubscriptionStatus",
                   billing_anchor, current_period_start, current_period_end, trial_end,
                   cancel_at_period_end, pending_plan_key, pending_plan_version,
                   pending_interval AS "pending_interval: Interval", pending_at, canceled_at,
                   ended_at, created_at, discount_coupon, discount_start, discount_end,
                   addons AS "addons: Json<Vec<Attached>>",
                   price_overrides AS "price_overrides: Json<Vec<PriceDef>>",
                   pending_price_overrides AS "pending_price_overrides: Json<Vec<PriceDef>>""#,
        new.tenant_id.as_str(),
        id.as_str(),
        new.customer_id,
        new.plan.key,
        new.plan.version,
        new.interval.as_str(),
        status.as_str(),
        anchor,
        now,
        period_end,
        trial_end,
        new.replaces.map(SubscriptionId::as_str),
        new.discount.map(|d| d.0),
        new.discount.map(|d| d.1),
        new.discount.and_then(|d| d.2),
        new.price_overrides.map(Json) as Option<Json<&[PriceDef]>>
    )
    .fetch_optional(&mut *conn)
    .await
}

/// A subscription, locked `FOR UPDATE` when asked.
pub async fn get(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    subscription_id: &SubscriptionId,
    for_update: bool,
) -> Result<Option<SubscriptionRow>, sqlx::Error> {
    // Two statements, since a lock clause cannot be a parameter.
    if for_update {
        sqlx::query_as!(
            SubscriptionRow,
            r#"SELECT subscription_id AS "subscription_id: SubscriptionId", customer_id, plan_key, plan_version,
                   interval AS "interval: Interval", status AS "status: SubscriptionStatus",
                   billing_anchor, current_period_start, current_period_end, trial_end,
                   cancel_at_period_end, pending_plan_key, pending_plan_version,
                   pending_interval AS "pending_interval: Interval", pending_at, canceled_at,
                   ended_at, created_at, discount_coupon, discount_start, discount_end,
                   addons AS "addons: Json<Vec<Attached>>",
                   price_overrides AS "price_overrides: Json<Vec<PriceDef>>",
                   pending_price_overrides AS "pending_price_overrides: Json<Vec<PriceDef>>"
               FROM subscriptions WHERE tenant_id = $1 AND subscription_id = $2 FOR NO KEY UPDATE"#,
            tenant_id.as_str(),
            subscription_id.as_str()
        )
        .fetch_optional(&mut *conn)
        .await
    } else {
        sqlx::query_as!(
            SubscriptionRow,
            r#"SELECT subscription_id AS "subscription_id: SubscriptionId", customer_id, plan_key, plan_version,
                   interval AS "interval: Interval", status AS "status: SubscriptionStatus",
                   billing_anchor, current_period_start, current_period_end, trial_end,
                   cancel_at_period_end, pending_plan_key, pending_plan_version,
                   pending_interval AS "pending_interval: Interval", pending_at, canceled_at,
                   ended_at, created_at, discount_coupon, discount_start, discount_end,
                   addons AS "addons: Json<Vec<Attached>>",
                   price_overrides AS "price_overrides: Json<Vec<PriceDef>>",
                   pending_price_overrides AS "pending_price_overrides: Json<Vec<PriceDef>>"
               FROM subscriptions WHERE tenant_id = $1 AND subscription_id = $2"#,
            tenant_id.as_str(),
            subscription_id.as_str()
        )
        .fetch_optional(&mut *conn)
        .await
    }
}

/// The customer's live subscription, if any.
pub async fn live_for_customer(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    customer_id: &str,
) -> Result<Option<SubscriptionRow>, sqlx::Error> {
    sqlx::query_as!(
        SubscriptionRow,
        r#"SELECT subscription_id AS "subscription_id: SubscriptionId", customer_id, plan_key, plan_version,
                   interval AS "interval: Interval", status AS "status: SubscriptionStatus",
                   billing_anchor, current_period_start, current_period_end, trial_end,
                   cancel_at_period_end, pending_plan_key, pending_plan_version,
                   pending_interval AS "pending_interval: Interval", pending_at, canceled_at,
                   ended_at, created_at, discount_coupon, discount_start, discount_end,
                   addons AS "addons: Json<Vec<Attached>>",
                   price_overrides AS "price_overrides: Json<Vec<PriceDef>>",
                   pending_price_overrides AS "pending_price_overrides: Json<Vec<PriceDef>>"
           FROM subscriptions
           WHERE tenant_id = $1 AND customer_id = $2
             AND status IN ('trialing', 'active', 'past_due')"#,
        tenant_id.as_str(),
        customer_id
    )
    .fetch_optional(&mut *conn)
    .await
}

/// Ends a subscription at `at`.
pub async fn end(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    subscription_id: &SubscriptionId,
    at: DateTime<Utc>,
    reason: &str,
) -> Result<SubscriptionRow, sqlx::Error> {
    sqlx::query_as!(
        SubscriptionRow,
        r#"UPDATE subscriptions SET status = 'canceled', ended_at = $3, canceled_at = COALESCE(canceled_at, $3),
               ended_reason = $4, cancel_at_period_end = false, pending_plan_key = NULL,
               pending_plan_version = NULL, pending_interval = NULL, pending_at = NULL,
               pending_price_overrides = NULL, updated_at = now()
           WHERE tenant_id = $1 AND subscription_id = $2
           RETURNING subscription_id AS "subscription_id: SubscriptionId", customer_id, plan_key, plan_version,
                   interval AS "interval: Interval", status AS "status: SubscriptionStatus",
                   billing_anchor, current_period_start, current_period_end, trial_end,
                   cancel_at_period_end, pending_plan_key, pending_plan_version,
                   pending_interval AS "pending_interval: Interval", pending_at, canceled_at,
                   ended_at, created_at, discount_coupon, discount_start, discount_end,
                   addons AS "addons: Json<Vec<Attached>>",
                   price_overrides AS "price_overrides: Json<Vec<PriceDef>>",
                   pending_price_overrides AS "pending_price_overrides: Json<Vec<PriceDef>>""#,
        tenant_id.as_str(),
        subscription_id.as_str(),
        at,
        reason
    )
    .fetch_one(&mut *conn)
    .await
}

/// The period a subscription moves into: on `plan` and `interval`, from `start` to `end`,
/// rolling on the anniversaries of `anchor`.
pub struct NextPeriod<'a> {
    pub plan: &'a PlanVersion,
    pub interval: Interval,
    pub anchor: DateTime<Utc>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// The add-ons it keeps (those removed at the period end dropped).
    pub addons: &'a [Attached],
}

/// Moves a subscription into its next period (a scheduled change, if any, is thereby applied
/// and cleared). A trial becomes active.
pub async fn roll(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    subscription_id: &SubscriptionId,
    next: &NextPeriod<'_>,
) -> Result<SubscriptionRow, sqlx::Error> {
    let NextPeriod {
        plan,
        interval,
        anchor,
        start,
        end,
        addons,
    } = *next;
    sqlx::query_as!(
        SubscriptionRow,
        r#"UPDATE subscriptions SET plan_key = $3, plan_version = $4, interval = $5, billing_anchor = $6,
               current_period_start = $7, current_period_end = $8,
               status = CASE WHEN status = 'trialing' THEN 'active' ELSE status END,
               pending_plan_key = NULL, pending_plan_version = NULL, pending_interval = NULL,
               pending_at = NULL, addons = $9,
               price_overrides = CASE WHEN pending_plan_key IS NOT NULL
                                      THEN pending_price_overrides ELSE price_overrides END,
               pending_price_overrides = NULL, updated_at = now()
           WHERE tenant_id = $1 AND subscription_id = $2
           RETURNING subscription_id AS "subscription_id: SubscriptionId", customer_id, plan_key, plan_version,
                   interval AS "interval: Interval", status AS "status: SubscriptionStatus",
                   billing_anchor, current_period_start, current_period_end, trial_end,
                   cancel_at_period_end, pending_plan_key, pending_plan_version,
                   pending_interval AS "pending_interval: Interval", pending_at, canceled_at,
                   ended_at, created_at, discount_coupon, discount_start, discount_end,
                   addons AS "addons: Json<Vec<Attached>>",
                   price_overrides AS "price_overrides: Json<Vec<PriceDef>>",
                   pending_price_overrides AS "pending_price_overrides: Json<Vec<PriceDef>>""#,
        tenant_id.as_str(),
        subscription_id.as_str(),
        plan.key,
        plan.version,
        interval.as_str(),
        anchor,
        start,
        end,
        Json(addons) as Json<&[Attached]>
    )
    .fetch_one(&mut *conn)
    .await
}

/// Sets (or clears) the change scheduled for period end.
pub async fn schedule_change(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    subscription_id: &SubscriptionId,
    change: Option<(&PlanVersion, Interval, DateTime<Utc>)>,
    overrides: Option<&[PriceDef]>,
) -> Result<SubscriptionRow, sqlx::Error> {
    let (key, version, interval, at) = match change {
        Some((plan, interval, at)) => (
            Some(plan.key.clone()),
            Some(plan.version),
            Some(interval.as_str()),
            Some(at),
        ),
        None => (None, None, None, None),
    };
    sqlx::query_as!(
        SubscriptionRow,
        r#"UPDATE subscriptions SET pending_plan_key = $3, pending_plan_version = $4, pending_interval = $5,
               pending_at = $6, pending_price_overrides = $7, updated_at = now()
           WHERE tenant_id = $1 AND subscription_id = $2
           RETURNING subscription_id AS "subscription_id: SubscriptionId", customer_id, plan_key, plan_version,
                   interval AS "interval: Interval", status AS "status: SubscriptionStatus",
                   billing_anchor, current_period_start, current_period_end, trial_end,
                   cancel_at_period_end, pending_plan_key, pending_plan_version,
                   pending_interval AS "pending_interval: Interval", pending_at, canceled_at,
                   ended_at, created_at, discount_coupon, discount_start, discount_end,
                   addons AS "addons: Json<Vec<Attached>>",
                   price_overrides AS "price_overrides: Json<Vec<PriceDef>>",
                   pending_price_overrides AS "pending_price_overrides: Json<Vec<PriceDef>>""#,
        tenant_id.as_str(),
        subscription_id.as_str(),
        key,
        version,
        interval,
        at,
        overrides.map(Json) as Option<Json<&[PriceDef]>>
    )
    .fetch_one(&mut *conn)
    .await
}

/// Switches the plan now, keeping the period unless `period` gives a new one (which also
/// becomes the anchor). Clears any scheduled change.
pub async fn switch_plan(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    subscription_id: &SubscriptionId,
    plan: &PlanVersion,
    interval: Interval,
    period: Option<(DateTime<Utc>, DateTime<Utc>)>,
    overrides: Option<&[PriceDef]>,
) -> Result<SubscriptionRow, sqlx::Error> {
    let (start, end) = period.unzip();
    sqlx::query_as!(
        SubscriptionRow,
        r#"UPDATE subscriptions SET plan_key = $3, plan_version = $4, interval = $5,
               billing_anchor = COALESCE($6, billing_anchor),
               current_period_start = COALESCE($6, current_period_start),
               current_period_end = COALESCE($7, current_period_end),
               pending_plan_key = NULL, pending_plan_version = NULL, pending_interval = NULL,
               pending_at = NULL, pending_price_overrides = NULL, price_overrides = $8,
               updated_at = now()
           WHERE tenant_id = $1 AND subscription_id = $2
           RETURNING subscription_id AS "subscription_id: SubscriptionId", customer_id, plan_key, plan_version,
                   interval AS "interval: Interval", status AS "status: SubscriptionStatus",
                   billing_anchor, current_period_start, current_period_end, trial_end,
                   cancel_at_period_end, pending_plan_key, pending_plan_version,
                   pending_interval AS "pending_interval: Interval", pending_at, canceled_at,
                   ended_at, created_at, discount_coupon, discount_start, discount_end,
                   addons AS "addons: Json<Vec<Attached>>",
                   price_overrides AS "price_overrides: Json<Vec<PriceDef>>",
                   pending_price_overrides AS "pending_price_overrides: Json<Vec<PriceDef>>""#,
        tenant_id.as_str(),
        subscription_id.as_str(),
        plan.key,
        plan.version,
        interval.as_str(),
        start,
        end,
        overrides.map(Json) as Option<Json<&[PriceDef]>>
    )
    .fetch_one(&mut *conn)
    .await
}

/// Sets the status of a live subscription (`active` <-> `past_due`, or a status mirrored from
/// Stripe); `None` when it was not live or already had that status.
pub async fn set_status(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    subscription_id: &SubscriptionId,
    status: SubscriptionStatus,
) -> Result<Option<SubscriptionRow>, sqlx::Error> {
    sqlx::query_as!(
        SubscriptionRow,
        r#"UPDATE subscriptions SET status = $3, updated_at = now()
           WHERE tenant_id = $1 AND subscription_id = $2 AND status <> $3
             AND status IN ('trialing', 'active', 'past_due')
           RETURNING subscription_id AS "subscription_id: SubscriptionId", customer_id, plan_key, plan_version,
                   interval AS "interval: Interval", status AS "status: SubscriptionStatus",
                   billing_anchor, current_period_start, current_period_end, trial_end,
                   cancel_at_period_end, pending_plan_key, pending_plan_version,
                   pending_interval AS "pending_interval: Interval", pending_at, canceled_at,
                   ended_at, created_at, discount_coupon, discount_start, discount_end,
                   addons AS "addons: Json<Vec<Attached>>",
                   price_overrides AS "price_overrides: Json<Vec<PriceDef>>",
                   pending_price_overrides AS "pending_price_overrides: Json<Vec<PriceDef>>""#,
        tenant_id.as_str(),
        subscription_id.as_str(),
        status.as_str()
    )
    .fetch_optional(&mut *conn)
    .await
}

pub async fn set_cancel_at_period_end(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    subscription_id: &SubscriptionId,
    cancel: bool,
    now: DateTime<Utc>,
) -> Result<SubscriptionRow, sqlx::Error> {
    sqlx::query_as!(
        SubscriptionRow,
        r#"UPDATE subscriptions SET cancel_at_period_end = $3,
               canceled_at = CASE WHEN $3 THEN $4::timestamptz END, updated_at = now()
           WHERE tenant_id = $1 AND subscription_id = $2
           RETURNING subscription_id AS "subscription_id: SubscriptionId", customer_id, plan_key, plan_version,
                   interval AS "interval: Interval", status AS "status: SubscriptionStatus",
                   billing_anchor, current_period_start, current_period_end, trial_end,
                   cancel_at_period_end, pending_plan_key, pending_plan_version,
                   pending_interval AS "pending_interval: Interval", pending_at, canceled_at,
                   ended_at, created_at, discount_coupon, discount_start, discount_end,
                   addons AS "addons: Json<Vec<Attached>>",
                   price_overrides AS "price_overrides: Json<Vec<PriceDef>>",
                   pending_price_overrides AS "pending_price_overrides: Json<Vec<PriceDef>>""#,
        tenant_id.as_str(),
        subscription_id.as_str(),
        cancel,
        now
    )
    .fetch_one(&mut *conn)
    .await
}

/// Sets the attached add-ons (sorted by key).
pub async fn set_addons(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    subscription_id: &SubscriptionId,
    addons: &[Attached],
) -> Result<SubscriptionRow, sqlx::Error> {
    sqlx::query_as!(
        SubscriptionRow,
        r#"UPDATE subscriptions SET addons = $3, updated_at = now()
           WHERE tenant_id = $1 AND subscription_id = $2
           RETURNING subscription_id AS "subscription_id: SubscriptionId", customer_id, plan_key, plan_version,
                   interval AS "interval: Interval", status AS "status: SubscriptionStatus",
                   billing_anchor, current_period_start, current_period_end, trial_end,
                   cancel_at_period_end, pending_plan_key, pending_plan_version,
                   pending_interval AS "pending_interval: Interval", pending_at, canceled_at,
                   ended_at, created_at, discount_coupon, discount_start, discount_end,
                   addons AS "addons: Json<Vec<Attached>>",
                   price_overrides AS "price_overrides: Json<Vec<PriceDef>>",
                   pending_price_overrides AS "pending_price_overrides: Json<Vec<PriceDef>>""#,
        tenant_id.as_str(),
        subscription_id.as_str(),
        Json(addons) as Json<&[Attached]>
    )
    .fetch_one(&mut *conn)
    .await
}

/// Sets (or clears) the negotiated prices.
pub async fn set_price_overrides(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    subscription_id: &SubscriptionId,
    overrides: Option<&[PriceDef]>,
) -> Result<SubscriptionRow, sqlx::Error> {
    sqlx::query_as!(
        SubscriptionRow,
        r#"UPDATE subscriptions SET price_overrides = $3, updated_at = now()
           WHERE tenant_id = $1 AND subscription_id = $2
           RETURNING subscription_id AS "subscription_id: SubscriptionId", customer_id, plan_key, plan_version,
                   interval AS "interval: Interval", status AS "status: SubscriptionStatus",
                   billing_anchor, current_period_start, current_period_end, trial_end,
                   cancel_at_period_end, pending_plan_key, pending_plan_version,
                   pending_interval AS "pending_interval: Interval", pending_at, canceled_at,
                   ended_at, created_at, discount_coupon, discount_start, discount_end,
                   addons AS "addons: Json<Vec<Attached>>",
                   price_overrides AS "price_overrides: Json<Vec<PriceDef>>",
                   pending_price_overrides AS "pending_price_overrides: Json<Vec<PriceDef>>""#,
        tenant_id.as_str(),
        subscription_id.as_str(),
        overrides.map(Json) as Option<Json<&[PriceDef]>>
    )
    .fetch_one(&mut *conn)
    .await
}

/// Appends the subscription's state, as `row` has it from `at`, to its history.
pub async fn record_history(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    row: &SubscriptionRow,
    event: &str,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO subscription_history (tenant_id, subscription_id, customer_id, event,
             plan_key, plan_version, interval, status, at, addons, price_overrides,
             discount_coupon, discount_end)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        tenant_id.as_str(),
        row.subscription_id.as_str(),
        row.customer_id,
        event,
        row.plan_key,
        row.plan_version,
        row.interval.as_str(),
        row.status.as_str(),
        at,
        &row.addons as &Json<Vec<Attached>>,
        row.price_overrides.as_ref() as Option<&Json<Vec<PriceDef>>>,
        row.discount_coupon,
        row.discount_end
    )
    .execute(&mut *conn)
    .await
    .map(drop)
}

/// Every subscription a customer has had, oldest first.
pub async fn for_customer(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    customer_id: &str,
) -> Result<Vec<SubscriptionRow>, sqlx::Error> {
    sqlx::query_as!(
        SubscriptionRow,
        r#"SELECT subscription_id AS "subscription_id: SubscriptionId", customer_id, plan_key, plan_version,
                   interval AS "interval: Interval", status AS "status: SubscriptionStatus",
                   billing_anchor, current_period_start, current_period_end, trial_end,
                   cancel_at_period_end, pending_plan_key, pending_plan_version,
                   pending_interval AS "pending_interval: Interval", pending_at, canceled_at,
                   ended_at, created_at, discount_coupon, discount_start, discount_end,
                   addons AS "addons: Json<Vec<Attached>>",
                   price_overrides AS "price_overrides: Json<Vec<PriceDef>>",
                   pending_price_overrides AS "pending_price_overrides: Json<Vec<PriceDef>>"
           FROM subscriptions
           WHERE tenant_id = $1 AND customer_id = $2
           ORDER BY created_at, subscription_id"#,
        tenant_id.as_str(),
        customer_id
    )
    .fetch_all(&mut *conn)
    .await
}

/// One entry of a subscription's history.
pub struct HistoryEntry {
    pub subscription_id: String,
    pub event: String,
    pub plan_key: String,
    pub plan_version: i32,
    pub interval: String,
    pub status: String,
    pub at: DateTime<Utc>,
}

/// The history of a customer's subscriptions, in order.
pub async fn history_for_customer(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    customer_id: &str,
) -> Result<Vec<HistoryEntry>, sqlx::Error> {
    sqlx::query_as!(
        HistoryEntry,
        "SELECT subscription_id, event, plan_key, plan_version, interval, status, at
         FROM subscription_history
         WHERE tenant_id = $1 AND customer_id = $2 ORDER BY at, seq",
        tenant_id.as_str(),
        customer_id
    )
    .fetch_all(&mut *conn)
    .await
}
