//! Reads for analytics: the live subscriptions with their customers' seat counts, and the
//! 30-day counts (started, ended, live then, paid).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::types::Json;
use sqlx::PgConnection;

use crate::domain::addon::Attached;
use crate::domain::plan::PriceDef;

use crate::domain::id::TenantId;
use crate::domain::period::Interval;
use crate::domain::status::SubscriptionStatus;

/// A live subscription as analytics weighs it.
pub struct LiveRow {
    pub subscription_id: String,
    pub plan_key: String,
    pub plan_version: i32,
    pub interval: Interval,
    pub status: SubscriptionStatus,
    /// The customer's member count.
    pub members: i64,
    pub addons: Json<Vec<Attached>>,
    pub price_overrides: Option<Json<Vec<PriceDef>>>,
    pub discount_coupon: Option<String>,
    pub discount_end: Option<DateTime<Utc>>,
}

/// The tenant's live subscriptions (trialing, active, past due).
pub async fn live(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
) -> Result<Vec<LiveRow>, sqlx::Error> {
    sqlx::query_as!(
        LiveRow,
        r#"SELECT s.subscription_id, s.plan_key, s.plan_version, s.interval AS "interval: Interval",
                  s.status AS "status: SubscriptionStatus",
                  (SELECT count(*) FROM customer_members m
                    WHERE m.tenant_id = $1 AND m.customer_id = s.customer_id) AS "members!",
                  s.addons AS "addons: Json<Vec<Attached>>",
                  s.price_overrides AS "price_overrides: Json<Vec<PriceDef>>",
                  s.discount_coupon, s.discount_end
           FROM subscriptions s
           WHERE s.tenant_id = $1 AND s.status IN ('trialing', 'active', 'past_due')"#,
        tenant_id.as_str()
    )
    .fetch_all(&mut *conn)
    .await
}

/// Counts over `(since, until]`: subscriptions started and ended, those live at `since`, and
/// the amounts paid on invoices paid.
pub struct Window {
    pub started: i64,
    pub ended: i64,
    pub live_at_start: i64,
    pub paid: Decimal,
}

pub async fn window(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Window, sqlx::Error> {
    sqlx::query_as!(
        Window,
        r#"SELECT
             (SELECT count(*) FROM subscriptions WHERE tenant_id = $1
                AND created_at > $2 AND created_at <= $3) AS "started!",
             (SELECT count(*) FROM subscriptions WHERE tenant_id = $1
                AND ended_at > $2 AND ended_at <= $3) AS "ended!",
             (SELECT count(*) FROM subscriptions WHERE tenant_id = $1
                AND created_at <= $2 AND (ended_at IS NULL OR ended_at > $2)) AS "live_at_start!",
             (SELECT COALESCE(sum(amount_paid), 0) FROM invoices WHERE tenant_id = $1
                AND status = 'paid' AND paid_at > $2 AND paid_at <= $3) AS "paid!""#,
        tenant_id.as_str(),
        since,
        until
    )
    .fetch_one(&mut *conn)
    .await
}

/// One entry of a subscription's history.
pub struct HistoryRow {
    pub subscription_id: String,
    pub customer_id: String,
    pub plan_key: String,
    pub plan_version: i32,
    pub interval: Interval,
    pub status: SubscriptionStatus,
    pub at: DateTime<Utc>,
    pub addons: Json<Vec<Attached>>,
    pub price_overrides: Option<Json<Vec<PriceDef>>>,
    pub discount_coupon: Option<String>,
    pub discount_end: Option<DateTime<Utc>>,
}

/// The tenant's subscription history up to `until`, in order.
pub async fn history(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    until: DateTime<Utc>,
) -> Result<Vec<HistoryRow>, sqlx::Error> {
    sqlx::query_as!(
        HistoryRow,
        r#"SELECT subscription_id, customer_id, plan_key, plan_version,
                  interval AS "interval: Interval", status AS "status: SubscriptionStatus", at,
                  addons AS "addons: Json<Vec<Attached>>",
                  price_overrides AS "price_overrides: Json<Vec<PriceDef>>",
                  discount_coupon, discount_end
           FROM subscription_history
           WHERE tenant_id = $1 AND at <= $2
           ORDER BY at, seq"#,
        tenant_id.as_str(),
        until
    )
    .fetch_all(&mut *conn)
    .await
}

/// One change of a customer's member count.
pub struct SeatRow {
    pub customer_id: String,
    pub seats: i32,
    pub at: DateTime<Utc>,
}

/// The tenant's seat history up to `until`, in order.
pub async fn seats(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    until: DateTime<Utc>,
) -> Result<Vec<SeatRow>, sqlx::Error> {
    sqlx::query_as!(
        SeatRow,
        "SELECT customer_id, seats, at FROM seat_changes
         WHERE tenant_id = $1 AND at <= $2 ORDER BY at, seq",
        tenant_id.as_str(),
        until
    )
    .fetch_all(&mut *conn)
    .await
}
