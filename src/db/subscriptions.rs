//! Subscriptions: creation, and resolving which plan version a customer is on right now.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;

use crate::db::check_batch::Lookup;
use crate::db::plans::PlanVersion;
use crate::domain::period::{add_months_clamped, BillingCycle, Interval, Period};
use crate::error::{ApiError, ApiResult};
use crate::http::auth::{Caller, TenantCtx};
use crate::AppState;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SubscriptionRow {
    pub subscription_id: String,
    pub customer_id: String,
    pub plan_key: String,
    pub plan_version: i32,
    pub interval: String,
    pub status: String,
    pub billing_anchor: DateTime<Utc>,
    pub current_period_start: DateTime<Utc>,
    pub current_period_end: DateTime<Utc>,
    pub trial_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub pending_plan_key: Option<String>,
    pub pending_plan_version: Option<i32>,
    pub pending_interval: Option<String>,
    pub pending_at: Option<DateTime<Utc>>,
    pub canceled_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// The columns of [`SubscriptionRow`], for `SELECT`/`RETURNING`.
pub const COLUMNS: &str = "subscription_id, customer_id, plan_key, plan_version, interval,
    status, billing_anchor, current_period_start, current_period_end, trial_end,
    cancel_at_period_end, pending_plan_key, pending_plan_version, pending_interval, pending_at,
    canceled_at, ended_at, created_at";

/// Starts a subscription in the caller's transaction. A live one already held is
/// `409 subscription_exists`. (Invoicing is `billing::lifecycle::start`'s job.)
#[allow(clippy::too_many_arguments)]
pub async fn create(
    conn: &mut PgConnection,
    tenant_id: &str,
    customer_id: &str,
    plan: &PlanVersion,
    interval: Interval,
    trial_days: i32,
    now: DateTime<Utc>,
    replaces: Option<&str>,
) -> ApiResult<SubscriptionRow> {
    let id = crate::ids::new_id("sub");
    let (status, trial_end, period_end, anchor) = if trial_days > 0 {
        let end = now + Duration::days(trial_days as i64);
        ("trialing", Some(end), end, end)
    } else {
        (
            "active",
            None,
            add_months_clamped(now, interval.months() as i64),
            now,
        )
    };
    let row = sqlx::query_as::<_, SubscriptionRow>(&format!(
        "INSERT INTO subscriptions (tenant_id, subscription_id, customer_id, plan_key, plan_version,
             interval, status, billing_anchor, current_period_start, current_period_end, trial_end,
             replaces_subscription_id, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $9, $9)
         RETURNING {COLUMNS}"
    ))
    .bind(tenant_id)
    .bind(&id)
    .bind(customer_id)
    .bind(&plan.key)
    .bind(plan.version)
    .bind(interval.as_str())
    .bind(status)
    .bind(anchor)
    .bind(now)
    .bind(period_end)
    .bind(trial_end)
    .bind(replaces)
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| {
        if super::is_unique_violation(&e, "subscriptions_one_live_per_customer") {
            ApiError::conflict(
                "subscription_exists",
                "The customer already has a live subscription; change it instead.",
            )
        } else {
            e.into()
        }
    })?;
    crate::events::subscription(conn, tenant_id, crate::events::SUBSCRIPTION_CREATED, &row).await?;
    Ok(row)
}

/// A subscription, locked `FOR UPDATE` when asked. `404 subscription_not_found` if missing.
pub async fn get(
    conn: &mut PgConnection,
    tenant_id: &str,
    subscription_id: &str,
    for_update: bool,
) -> ApiResult<SubscriptionRow> {
    let lock = if for_update { " FOR UPDATE" } else { "" };
    sqlx::query_as::<_, SubscriptionRow>(&format!(
        "SELECT {COLUMNS} FROM subscriptions WHERE tenant_id = $1 AND subscription_id = $2{lock}"
    ))
    .bind(tenant_id)
    .bind(subscription_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| ApiError::not_found("subscription_not_found", "No such subscription."))
}

/// The customer's live subscription, if any.
pub async fn live_for_customer(
    conn: &mut PgConnection,
    tenant_id: &str,
    customer_id: &str,
) -> ApiResult<Option<SubscriptionRow>> {
    Ok(sqlx::query_as::<_, SubscriptionRow>(&format!(
        "SELECT {COLUMNS} FROM subscriptions
         WHERE tenant_id = $1 AND customer_id = $2 AND status IN ('trialing', 'active', 'past_due')"
    ))
    .bind(tenant_id)
    .bind(customer_id)
    .fetch_optional(&mut *conn)
    .await?)
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
) -> ApiResult<SubscriptionRow> {
    let sql = update_sql(
        "status = 'canceled', ended_at = $3, canceled_at = COALESCE(canceled_at, $3),
         ended_reason = $4, cancel_at_period_end = false, pending_plan_key = NULL,
         pending_plan_version = NULL, pending_interval = NULL, pending_at = NULL",
    );
    let row = sqlx::query_as::<_, SubscriptionRow>(&sql)
        .bind(tenant_id)
        .bind(subscription_id)
        .bind(at)
        .bind(reason)
        .fetch_one(&mut *conn)
        .await?;
    crate::events::subscription(conn, tenant_id, crate::events::SUBSCRIPTION_CANCELED, &row)
        .await?;
    Ok(row)
}

/// Moves a subscription into its next period, on `plan` (a scheduled change, if any, is
/// thereby applied and cleared). A trial becomes active.
#[allow(clippy::too_many_arguments)]
pub async fn roll(
    conn: &mut PgConnection,
    tenant_id: &str,
    subscription_id: &str,
    plan: &PlanVersion,
    interval: Interval,
    anchor: DateTime<Utc>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> ApiResult<SubscriptionRow> {
    let sql = update_sql(
        "plan_key = $3, plan_version = $4, interval = $5, billing_anchor = $6,
         current_period_start = $7, current_period_end = $8,
         status = CASE WHEN status = 'trialing' THEN 'active' ELSE status END,
         pending_plan_key = NULL, pending_plan_version = NULL, pending_interval = NULL,
         pending_at = NULL",
    );
    let row = sqlx::query_as::<_, SubscriptionRow>(&sql)
        .bind(tenant_id)
        .bind(subscription_id)
        .bind(&plan.key)
        .bind(plan.version)
        .bind(interval.as_str())
        .bind(anchor)
        .bind(start)
        .bind(end)
        .fetch_one(&mut *conn)
        .await?;
    crate::events::subscription(conn, tenant_id, crate::events::SUBSCRIPTION_UPDATED, &row).await?;
    Ok(row)
}

/// Sets (or clears) the change scheduled for period end.
pub async fn schedule_change(
    conn: &mut PgConnection,
    tenant_id: &str,
    subscription_id: &str,
    change: Option<(&PlanVersion, Interval, DateTime<Utc>)>,
) -> ApiResult<SubscriptionRow> {
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
    let row = sqlx::query_as::<_, SubscriptionRow>(&sql)
        .bind(tenant_id)
        .bind(subscription_id)
        .bind(key)
        .bind(version)
        .bind(interval)
        .bind(at)
        .fetch_one(&mut *conn)
        .await?;
    crate::events::subscription(conn, tenant_id, crate::events::SUBSCRIPTION_UPDATED, &row).await?;
    Ok(row)
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
) -> ApiResult<SubscriptionRow> {
    let (start, end) = period.unzip();
    let sql = update_sql(
        "plan_key = $3, plan_version = $4, interval = $5,
         billing_anchor = COALESCE($6, billing_anchor),
         current_period_start = COALESCE($6, current_period_start),
         current_period_end = COALESCE($7, current_period_end),
         pending_plan_key = NULL, pending_plan_version = NULL, pending_interval = NULL,
         pending_at = NULL",
    );
    let row = sqlx::query_as::<_, SubscriptionRow>(&sql)
        .bind(tenant_id)
        .bind(subscription_id)
        .bind(&plan.key)
        .bind(plan.version)
        .bind(interval.as_str())
        .bind(start)
        .bind(end)
        .fetch_one(&mut *conn)
        .await?;
    crate::events::subscription(conn, tenant_id, crate::events::SUBSCRIPTION_UPDATED, &row).await?;
    Ok(row)
}

/// Sets the status of a live subscription (`active` <-> `past_due`, or a status mirrored from
/// Stripe); emits `subscription.updated` when it changed.
pub async fn set_status(
    conn: &mut PgConnection,
    tenant_id: &str,
    subscription_id: &str,
    status: &str,
) -> ApiResult<Option<SubscriptionRow>> {
    let sql = format!(
        "UPDATE subscriptions SET status = $3, updated_at = now()
         WHERE tenant_id = $1 AND subscription_id = $2 AND status <> $3
           AND status IN ('trialing', 'active', 'past_due')
         RETURNING {COLUMNS}"
    );
    let row = sqlx::query_as::<_, SubscriptionRow>(&sql)
        .bind(tenant_id)
        .bind(subscription_id)
        .bind(status)
        .fetch_optional(&mut *conn)
        .await?;
    if let Some(row) = &row {
        crate::events::subscription(conn, tenant_id, crate::events::SUBSCRIPTION_UPDATED, row)
            .await?;
    }
    Ok(row)
}

pub async fn set_cancel_at_period_end(
    conn: &mut PgConnection,
    tenant_id: &str,
    subscription_id: &str,
    cancel: bool,
    now: DateTime<Utc>,
) -> ApiResult<SubscriptionRow> {
    let sql = update_sql("cancel_at_period_end = $3, canceled_at = CASE WHEN $3 THEN $4 END");
    let row = sqlx::query_as::<_, SubscriptionRow>(&sql)
        .bind(tenant_id)
        .bind(subscription_id)
        .bind(cancel)
        .bind(now)
        .fetch_one(&mut *conn)
        .await?;
    crate::events::subscription(conn, tenant_id, crate::events::SUBSCRIPTION_UPDATED, &row).await?;
    Ok(row)
}

/// One row of the resolve query.
pub struct ResolveRow {
    tenant_id: String,
    mode: String,
    default_plan: Option<String>,
    warning_threshold: Decimal,
    critical_threshold: Decimal,
    test_clock_now: Option<DateTime<Utc>>,
    key_id: Option<String>,
    customer_id: Option<String>,
    plan_key: Option<String>,
    plan_version: Option<i32>,
    interval: Option<String>,
    billing_anchor: Option<DateTime<Utc>>,
    current_period_start: Option<DateTime<Utc>>,
    current_period_end: Option<DateTime<Utc>>,
    default_version: Option<i32>,
    counter_start: Option<DateTime<Utc>>,
    counter_used: Option<Decimal>,
}

/// The batched form of the resolve query (every column nullable: the tenant is outer-joined).
struct BatchRow {
    ord: i64,
    tenant_id: Option<String>,
    mode: Option<String>,
    default_plan: Option<String>,
    warning_threshold: Option<Decimal>,
    critical_threshold: Option<Decimal>,
    test_clock_now: Option<DateTime<Utc>>,
    key_id: Option<String>,
    customer_id: Option<String>,
    plan_key: Option<String>,
    plan_version: Option<i32>,
    interval: Option<String>,
    billing_anchor: Option<DateTime<Utc>>,
    current_period_start: Option<DateTime<Utc>>,
    current_period_end: Option<DateTime<Utc>>,
    default_version: Option<i32>,
    counter_start: Option<DateTime<Utc>>,
    counter_used: Option<Decimal>,
}

/// The resolve query with a counter, for many lookups in one statement (see `check_batch`).
/// Returns one entry per lookup, in order; `None` where the tenant does not exist.
pub async fn fetch_batch(
    conn: &mut PgConnection,
    lookups: &[&Lookup],
) -> Result<Vec<Option<ResolveRow>>, sqlx::Error> {
    let tenants: Vec<&str> = lookups.iter().map(|l| l.tenant_id.as_str()).collect();
    let hashes: Vec<&[u8]> = lookups.iter().map(|l| l.key_hash.as_slice()).collect();
    let customers: Vec<&str> = lookups.iter().map(|l| l.customer.as_str()).collect();
    let features: Vec<&str> = lookups.iter().map(|l| l.feature.as_str()).collect();
    let rows = sqlx::query_as!(
        BatchRow,
        // Every lookup is its own LATERAL subquery (OFFSET 0 keeps the planner from
        // flattening it into a hash join), so each is an index probe per row whatever the
        // table statistics say.
        r#"SELECT r.ord AS "ord!", t.tenant_id AS "tenant_id?", t.mode AS "mode?",
              t.default_plan, t.warning_threshold AS "warning_threshold?",
              t.critical_threshold AS "critical_threshold?", t.test_clock_now,
              k.key_id AS "key_id?",
              c.customer_id AS "customer_id?", s.plan_key AS "plan_key?",
              s.plan_version AS "plan_version?", s.interval AS "interval?",
              s.billing_anchor AS "billing_anchor?",
              s.current_period_start AS "current_period_start?",
              s.current_period_end AS "current_period_end?",
              t.default_version AS "default_version?",
              u.period_start AS "counter_start?", u.used AS "counter_used?"
       FROM unnest($1::text[], $2::bytea[], $3::text[], $4::text[])
              WITH ORDINALITY AS r(tenant_id, key_hash, customer_id, feature_key, ord)
       LEFT JOIN LATERAL (
           SELECT t.tenant_id, t.mode, t.default_plan, t.warning_threshold,
                  t.critical_threshold, t.test_clock_now,
                  (SELECT p.latest_version FROM plans p
                    WHERE p.tenant_id = t.tenant_id AND p.plan_key = t.default_plan) AS default_version
           FROM tenants t WHERE t.tenant_id = r.tenant_id OFFSET 0) t ON true
       LEFT JOIN LATERAL (
           SELECT k.key_id FROM api_keys k
           WHERE k.tenant_id = r.tenant_id AND k.key_hash = r.key_hash
             AND k.revoked_at IS NULL OFFSET 0) k ON true
       LEFT JOIN LATERAL (
           SELECT c.customer_id FROM customers c
           WHERE c.tenant_id = r.tenant_id AND c.customer_id = r.customer_id
             AND c.deleted_at IS NULL OFFSET 0) c ON true
       LEFT JOIN LATERAL (
           SELECT s.plan_key, s.plan_version, s.interval, s.billing_anchor,
                  s.current_period_start, s.current_period_end
           FROM subscriptions s
           WHERE s.tenant_id = r.tenant_id AND s.customer_id = c.customer_id
             AND s.status IN ('trialing', 'active', 'past_due') OFFSET 0) s ON true
       LEFT JOIN LATERAL (
           SELECT x.period_start, x.used FROM usage_counters x
           WHERE x.tenant_id = r.tenant_id AND x.customer_id = c.customer_id
             AND x.feature_key = r.feature_key
             AND x.period_start <= COALESCE(t.test_clock_now, $5)
           ORDER BY x.period_start DESC LIMIT 1) u ON true"#,
        &tenants as &[&str],
        &hashes as &[&[u8]],
        &customers as &[&str],
        &features as &[&str],
        crate::clock::Clock.real_now()
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut out: Vec<Option<ResolveRow>> = Vec::with_capacity(lookups.len());
    out.resize_with(lookups.len(), || None);
    for r in rows {
        let Some(slot) = usize::try_from(r.ord - 1).ok().and_then(|i| out.get_mut(i)) else {
            continue;
        };
        let (Some(tenant_id), Some(mode), Some(warning), Some(critical)) = (
            r.tenant_id,
            r.mode,
            r.warning_threshold,
            r.critical_threshold,
        ) else {
            continue;
        };
        *slot = Some(ResolveRow {
            tenant_id,
            mode,
            default_plan: r.default_plan,
            warning_threshold: warning,
            critical_threshold: critical,
            test_clock_now: r.test_clock_now,
            key_id: r.key_id,
            customer_id: r.customer_id,
            plan_key: r.plan_key,
            plan_version: r.plan_version,
            interval: r.interval,
            billing_anchor: r.billing_anchor,
            current_period_start: r.current_period_start,
            current_period_end: r.current_period_end,
            default_version: r.default_version,
            counter_start: r.counter_start,
            counter_used: r.counter_used,
        });
    }
    Ok(out)
}

/// What a customer is entitled to right now.
pub struct Resolved {
    /// `None`: no live subscription and no default plan.
    pub plan: Option<Arc<PlanVersion>>,
    pub billing: Option<BillingCycle>,
    /// The newest counter of the asked-for feature that starts no later than now.
    pub latest_counter: Option<(DateTime<Utc>, Decimal)>,
    /// Whether a feature was asked for (and so `latest_counter` is meaningful).
    pub counter_read: bool,
}

impl Resolved {
    /// The counter for the period starting at `start`, if the resolve query already read it
    /// (`None`: it must be read separately).
    pub fn counter_at(&self, start: DateTime<Utc>) -> Option<Decimal> {
        if !self.counter_read {
            return None;
        }
        match self.latest_counter {
            None => Some(Decimal::ZERO),
            Some((s, used)) if s == start => Some(used),
            // The newest counter is older than this period: nothing counted in it yet.
            Some((s, _)) if s < start => Some(Decimal::ZERO),
            Some(_) => None,
        }
    }
}

/// Resolves, in one query: the caller's key (when deferred to here), the tenant, the customer,
/// its plan (the live subscription's version, else the tenant's default plan's newest) and,
/// if `feature` is given, that feature's newest counter. Unknown or deleted customers are
/// `404 customer_not_found`.
pub async fn resolve_for(
    state: &AppState,
    conn: &mut PgConnection,
    caller: &Caller,
    customer_id: &str,
    feature: Option<&str>,
) -> ApiResult<(TenantCtx, Resolved)> {
    let key_hash: &[u8] = match caller {
        Caller::Ready(_) => &[],
        Caller::Deferred(k) => &k.key_hash,
    };
    // Two variants of one query: with the feature's newest counter (checks), and without
    // (usage, which does not need it: under concurrent writes the counter lookup costs more).
    let row = match feature {
        Some(feature) => {
            sqlx::query_as!(
                ResolveRow,
                r#"SELECT t.tenant_id, t.mode, t.default_plan, t.warning_threshold,
                      t.critical_threshold, t.test_clock_now, k.key_id AS "key_id?",
                      c.customer_id AS "customer_id?", s.plan_key AS "plan_key?",
                      s.plan_version AS "plan_version?", s.interval AS "interval?",
                      s.billing_anchor AS "billing_anchor?",
                      s.current_period_start AS "current_period_start?",
                      s.current_period_end AS "current_period_end?",
                      (SELECT p.latest_version FROM plans p
                        WHERE p.tenant_id = t.tenant_id AND p.plan_key = t.default_plan) AS default_version,
                      u.period_start AS "counter_start?", u.used AS "counter_used?"
               FROM tenants t
               LEFT JOIN api_keys k
                 ON k.tenant_id = t.tenant_id AND k.key_hash = $2 AND k.revoked_at IS NULL
               LEFT JOIN customers c
                 ON c.tenant_id = t.tenant_id AND c.customer_id = $3 AND c.deleted_at IS NULL
               LEFT JOIN subscriptions s
                 ON s.tenant_id = c.tenant_id AND s.customer_id = c.customer_id
                AND s.status IN ('trialing', 'active', 'past_due')
               LEFT JOIN LATERAL (
                   SELECT x.period_start, x.used FROM usage_counters x
                   WHERE x.tenant_id = t.tenant_id AND x.customer_id = c.customer_id
                     AND x.feature_key = $4 AND x.period_start <= COALESCE(t.test_clock_now, $5)
                   ORDER BY x.period_start DESC LIMIT 1) u ON true
               WHERE t.tenant_id = $1"#,
                caller.tenant_id(),
                key_hash,
                customer_id,
                feature,
                state.clock.real_now()
            )
            .fetch_optional(&mut *conn)
            .await?
        }
        None => {
            sqlx::query_as!(
                ResolveRow,
                r#"SELECT t.tenant_id, t.mode, t.default_plan, t.warning_threshold,
                      t.critical_threshold, t.test_clock_now, k.key_id AS "key_id?",
                      c.customer_id AS "customer_id?", s.plan_key AS "plan_key?",
                      s.plan_version AS "plan_version?", s.interval AS "interval?",
                      s.billing_anchor AS "billing_anchor?",
                      s.current_period_start AS "current_period_start?",
                      s.current_period_end AS "current_period_end?",
                      (SELECT p.latest_version FROM plans p
                        WHERE p.tenant_id = t.tenant_id AND p.plan_key = t.default_plan) AS default_version,
                      NULL::timestamptz AS "counter_start?", NULL::numeric AS "counter_used?"
               FROM tenants t
               LEFT JOIN api_keys k
                 ON k.tenant_id = t.tenant_id AND k.key_hash = $2 AND k.revoked_at IS NULL
               LEFT JOIN customers c
                 ON c.tenant_id = t.tenant_id AND c.customer_id = $3 AND c.deleted_at IS NULL
               LEFT JOIN subscriptions s
                 ON s.tenant_id = c.tenant_id AND s.customer_id = c.customer_id
                AND s.status IN ('trialing', 'active', 'past_due')
               WHERE t.tenant_id = $1"#,
                caller.tenant_id(),
                key_hash,
                customer_id
            )
            .fetch_optional(&mut *conn)
            .await?
        }
    };
    finish(state, Some(conn), caller, row, feature.is_some()).await
}

/// [`resolve_for`] for a check, through the check batcher: the same answer, resolved in one
/// statement together with other concurrent checks.
pub async fn resolve_batched(
    state: &AppState,
    caller: &Caller,
    customer_id: &str,
    feature: &str,
) -> ApiResult<(TenantCtx, Resolved)> {
    // PostgreSQL text cannot hold NUL; such ids match nothing anyway.
    let clean = |s: &str| {
        if s.contains('\0') {
            String::new()
        } else {
            s.to_string()
        }
    };
    let row = state
        .checks
        .lookup(Lookup {
            tenant_id: caller.tenant_id().to_string(),
            key_hash: match caller {
                Caller::Ready(_) => Vec::new(),
                Caller::Deferred(k) => k.key_hash.clone(),
            },
            customer: clean(customer_id),
            feature: clean(feature),
        })
        .await?;
    finish(state, None, caller, row, true).await
}

/// Turns a resolve row into the caller's tenant and the customer's plan. `conn` is used to
/// load a plan version missing from the cache (the general pool when `None`).
async fn finish(
    state: &AppState,
    conn: Option<&mut PgConnection>,
    caller: &Caller,
    row: Option<ResolveRow>,
    counter_read: bool,
) -> ApiResult<(TenantCtx, Resolved)> {
    let row = match (caller, row) {
        (_, None) => return Err(crate::http::auth::invalid_key()),
        (Caller::Deferred(_), Some(r)) if r.key_id.is_none() => {
            return Err(crate::http::auth::invalid_key())
        }
        (_, Some(r)) => r,
    };
    let ctx = match caller {
        Caller::Ready(ctx) => ctx.clone(),
        Caller::Deferred(_) => TenantCtx {
            tenant_id: row.tenant_id.clone(),
            mode: row.mode.clone(),
            key_id: row.key_id.clone().unwrap_or_default(),
            default_plan: row.default_plan.clone(),
            warning_threshold: row.warning_threshold,
            critical_threshold: row.critical_threshold,
            test_clock_now: row.test_clock_now,
        },
    };
    if row.customer_id.is_none() {
        return Err(customer_not_found());
    }
    let latest_counter = row.counter_start.zip(row.counter_used);
    if let (Some(key), Some(version), Some(interval), Some(anchor), Some(start), Some(end)) = (
        row.plan_key,
        row.plan_version,
        row.interval,
        row.billing_anchor,
        row.current_period_start,
        row.current_period_end,
    ) {
        let plan = load_plan(state, conn, &ctx.tenant_id, &key, version).await?;
        let billing = Some(BillingCycle {
            anchor,
            interval: Interval::parse(&interval).unwrap_or(Interval::Month),
            current: Period {
                start,
                end: Some(end),
            },
        });
        return Ok((
            ctx,
            Resolved {
                plan,
                billing,
                latest_counter,
                counter_read,
            },
        ));
    }
    let plan = match (&row.default_plan, row.default_version) {
        (Some(key), Some(version)) => load_plan(state, conn, &ctx.tenant_id, key, version).await?,
        _ => None,
    };
    Ok((
        ctx,
        Resolved {
            plan,
            billing: None,
            latest_counter,
            counter_read,
        },
    ))
}

async fn load_plan(
    state: &AppState,
    conn: Option<&mut PgConnection>,
    tenant_id: &str,
    key: &str,
    version: i32,
) -> ApiResult<Option<Arc<PlanVersion>>> {
    if let Some(plan) = state.plans.cached(tenant_id, key, version) {
        return Ok(Some(plan));
    }
    match conn {
        Some(conn) => state.plans.get(conn, tenant_id, key, version).await,
        None => {
            let mut conn = state.db.acquire().await?;
            state.plans.get(&mut conn, tenant_id, key, version).await
        }
    }
}

/// [`resolve_for`] for an authenticated tenant, without a counter.
pub async fn resolve(
    state: &AppState,
    conn: &mut PgConnection,
    ctx: &TenantCtx,
    customer_id: &str,
) -> ApiResult<Resolved> {
    let caller = Caller::Ready(ctx.clone());
    resolve_for(state, conn, &caller, customer_id, None)
        .await
        .map(|(_, r)| r)
}

pub fn customer_not_found() -> ApiError {
    ApiError::not_found("customer_not_found", "No such customer.").with_param("customer")
}
