//! `subscriptions`: the rows and their writes. The writes return the new row; the service
//! (`billing::subscriptions`) emits the webhook event of each in the same transaction.

use chrono::{DateTime, Duration, Utc};
use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgConnection, Row};

use crate::db::plans::PlanVersion;
use crate::domain::period::{add_months_clamped, Interval};
use crate::domain::status::SubscriptionStatus;

#[derive(Debug, Clone)]
pub struct SubscriptionRow {
    pub subscription_id: String,
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
}

impl<'r> FromRow<'r, PgRow> for SubscriptionRow {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        let interval: String = row.try_get("interval")?;
        let status: String = row.try_get("status")?;
        let pending_interval: Option<String> = row.try_get("pending_interval")?;
        Ok(SubscriptionRow {
            subscription_id: row.try_get("subscription_id")?,
            customer_id: row.try_get("customer_id")?,
            plan_key: row.try_get("plan_key")?,
            plan_version: row.try_get("plan_version")?,
            interval: super::decode("interval", &interval, Interval::parse)?,
            status: SubscriptionStatus::parse(&status).map_err(|e| sqlx::Error::ColumnDecode {
                index: "status".into(),
                source: Box::new(e),
            })?,
            billing_anchor: row.try_get("billing_anchor")?,
            current_period_start: row.try_get("current_period_start")?,
            current_period_end: row.try_get("current_period_end")?,
            trial_end: row.try_get("trial_end")?,
            cancel_at_period_end: row.try_get("cancel_at_period_end")?,
            pending_plan_key: row.try_get("pending_plan_key")?,
            pending_plan_version: row.try_get("pending_plan_version")?,
            pending_interval: pending_interval
                .map(|i| super::decode("pending_interval", &i, Interval::parse))
                .transpose()?,
            pending_at: row.try_get("pending_at")?,
            canceled_at: row.try_get("canceled_at")?,
            ended_at: row.try_get("ended_at")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// The columns of [`SubscriptionRow`], for `SELECT`/`RETURNING`. The statements below are
/// built with `format!` from this constant and `update_sql`, and so are checked at run time,
/// not compile time: `query_as!` cannot splice a shared column list, and writing the 18
/// columns out in each of the ten statements would be the larger risk.
pub const COLUMNS: &str = "subscription_id, customer_id, plan_key, plan_version, interval,
    status, billing_anchor, current_period_start, current_period_end, trial_end,
    cancel_at_period_end, pending_plan_key, pending_plan_version, pending_interval, pending_at,
    canceled_at, ended_at, created_at";

/// The unique index that allows one live subscription per customer.
pub const ONE_LIVE_PER_CUSTOMER: &str = "subscriptions_one_live_per_customer";

/// A subscription to start: `trial_days > 0` starts a trial that long, else the first period
/// (one interval from `now`).
pub struct NewSubscription<'a> {
    pub tenant_id: &'a str,
    pub customer_id: &'a str,
    pub plan: &'a PlanVersion,
    pub interval: Interval,
    pub trial_days: i32,
    pub now: DateTime<Utc>,
    /// The subscription it takes over from (a fallback to the default plan).
    pub replaces: Option<&'a str>,
}

/// Inserts a subscription with id `id` (a second live one for the customer violates
/// [`ONE_LIVE_PER_CUSTOMER`]).
pub async fn create(
    conn: &mut PgConnection,
    id: &str,
    new: &NewSubscription<'_>,
) -> Result<SubscriptionRow, sqlx::Error> {
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
    sqlx::query_as::<_, SubscriptionRow>(&format!(
        "INSERT INTO subscriptions (tenant_id, subscription_id, customer_id, plan_key, plan_version,
             interval, status, billing_anchor, current_period_start, current_period_end, trial_end,
             replaces_subscription_id, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $9, $9)
         RETURNING {COLUMNS}"
    ))
    .bind(new.tenant_id)
    .bind(id)
    .bind(new.customer_id)
    .bind(&new.plan.key)
    .bind(new.plan.version)
    .bind(new.interval.as_str())
    .bind(status.as_str())
    .bind(anchor)
    .bind(now)
    .bind(period_end)
    .bind(trial_end)
    .bind(new.replaces)
    .fetch_one(&mut *conn)
    .await
}

/// A subscription, locked `FOR UPDATE` when asked.
pub async fn get(
    conn: &mut PgConnection,
    tenant_id: &str,
    subscription_id: &str,
    for_update: bool,
) -> Result<Option<SubscriptionRow>, sqlx::Error> {
    let lock = if for_update { " FOR UPDATE" } else { "" };
    sqlx::query_as::<_, SubscriptionRow>(&format!(
        "SELECT {COLUMNS} FROM subscriptions WHERE tenant_id = $1 AND subscription_id = $2{lock}"
    ))
    .bind(tenant_id)
    .bind(subscription_id)
    .fetch_optional(&mut *conn)
    .await
}

/// The customer's live subscription, if any.
pub async fn live_for_customer(
    conn: &mut PgConnection,
    tenant_id: &str,
    customer_id: &str,
) -> Result<Option<SubscriptionRow>, sqlx::Error> {
    sqlx::query_as::<_, SubscriptionRow>(&format!(
        "SELECT {COLUMNS} FROM subscriptions
         WHERE tenant_id = $1 AND customer_id = $2 AND status IN ('trialing', 'active', 'past_due')"
    ))
    .bind(tenant_id)
    .bind(customer_id)
    .fetch_optional(&mut *conn)
    .await
}

/// `UPDATE subscriptions SET {set}` for `$1` tenant and `$2` subscription, returning the row.
fn update_sql(set: &str) -> String {
    format!(
        "UPDATE subscriptions SET {set}, updated_at = now()
         WHERE tenant_id = $1 AND subscription_id = $2 RETURNING {COLUMNS}"
    )
}

/// Ends a subscription at `at`.
pub async fn end(
    conn: &mut PgConnection,
    tenant_id: &str,
    subscription_id: &str,
    at: DateTime<Utc>,
    reason: &str,
) -> Result<SubscriptionRow, sqlx::Error> {
    let sql = update_sql(
        "status = 'canceled', ended_at = $3, canceled_at = COALESCE(canceled_at, $3),
         ended_reason = $4, cancel_at_period_end = false, pending_plan_key = NULL,
         pending_plan_version = NULL, pending_interval = NULL, pending_at = NULL",
    );
    sqlx::query_as::<_, SubscriptionRow>(&sql)
        .bind(tenant_id)
        .bind(subscription_id)
        .bind(at)
        .bind(reason)
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
}

/// Moves a subscription into its next period (a scheduled change, if any, is thereby applied
/// and cleared). A trial becomes active.
pub async fn roll(
    conn: &mut PgConnection,
    tenant_id: &str,
    subscription_id: &str,
    next: &NextPeriod<'_>,
) -> Result<SubscriptionRow, sqlx::Error> {
    let NextPeriod {
        plan,
        interval,
        anchor,
        start,
        end,
    } = *next;
    let sql = update_sql(
        "plan_key = $3, plan_version = $4, interval = $5, billing_anchor = $6,
         current_period_start = $7, current_period_end = $8,
         status = CASE WHEN status = 'trialing' THEN 'active' ELSE status END,
         pending_plan_key = NULL, pending_plan_version = NULL, pending_interval = NULL,
         pending_at = NULL",
    );
    sqlx::query_as::<_, SubscriptionRow>(&sql)
        .bind(tenant_id)
        .bind(subscription_id)
        .bind(&plan.key)
        .bind(plan.version)
        .bind(interval.as_str())
        .bind(anchor)
        .bind(start)
        .bind(end)
        .fetch_one(&mut *conn)
        .await
}

/// Sets (or clears) the change scheduled for period end.
pub async fn schedule_change(
    conn: &mut PgConnection,
    tenant_id: &str,
    subscription_id: &str,
    change: Option<(&PlanVersion, Interval, DateTime<Utc>)>,
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
    let sql = update_sql(
        "pending_plan_key = $3, pending_plan_version = $4, pending_interval = $5, pending_at = $6",
    );
    sqlx::query_as::<_, SubscriptionRow>(&sql)
        .bind(tenant_id)
        .bind(subscription_id)
        .bind(key)
        .bind(version)
        .bind(interval)
        .bind(at)
        .fetch_one(&mut *conn)
        .await
}

/// Switches the plan now, keeping the period unless `period` gives a new one (which also
/// becomes the anchor). Clears any scheduled change.
pub async fn switch_plan(
    conn: &mut PgConnection,
    tenant_id: &str,
    subscription_id: &str,
    plan: &PlanVersion,
    interval: Interval,
    period: Option<(DateTime<Utc>, DateTime<Utc>)>,
) -> Result<SubscriptionRow, sqlx::Error> {
    let (start, end) = period.unzip();
    let sql = update_sql(
        "plan_key = $3, plan_version = $4, interval = $5,
         billing_anchor = COALESCE($6, billing_anchor),
         current_period_start = COALESCE($6, current_period_start),
         current_period_end = COALESCE($7, current_period_end),
         pending_plan_key = NULL, pending_plan_version = NULL, pending_interval = NULL,
         pending_at = NULL",
    );
    sqlx::query_as::<_, SubscriptionRow>(&sql)
        .bind(tenant_id)
        .bind(subscription_id)
        .bind(&plan.key)
        .bind(plan.version)
        .bind(interval.as_str())
        .bind(start)
        .bind(end)
        .fetch_one(&mut *conn)
        .await
}

/// Sets the status of a live subscription (`active` <-> `past_due`, or a status mirrored from
/// Stripe); `None` when it was not live or already had that status.
pub async fn set_status(
    conn: &mut PgConnection,
    tenant_id: &str,
    subscription_id: &str,
    status: SubscriptionStatus,
) -> Result<Option<SubscriptionRow>, sqlx::Error> {
    let sql = format!(
        "UPDATE subscriptions SET status = $3, updated_at = now()
         WHERE tenant_id = $1 AND subscription_id = $2 AND status <> $3
           AND status IN ('trialing', 'active', 'past_due')
         RETURNING {COLUMNS}"
    );
    sqlx::query_as::<_, SubscriptionRow>(&sql)
        .bind(tenant_id)
        .bind(subscription_id)
        .bind(status.as_str())
        .fetch_optional(&mut *conn)
        .await
}

pub async fn set_cancel_at_period_end(
    conn: &mut PgConnection,
    tenant_id: &str,
    subscription_id: &str,
    cancel: bool,
    now: DateTime<Utc>,
) -> Result<SubscriptionRow, sqlx::Error> {
    let sql = update_sql("cancel_at_period_end = $3, canceled_at = CASE WHEN $3 THEN $4 END");
    sqlx::query_as::<_, SubscriptionRow>(&sql)
        .bind(tenant_id)
        .bind(subscription_id)
        .bind(cancel)
        .bind(now)
        .fetch_one(&mut *conn)
        .await
}
