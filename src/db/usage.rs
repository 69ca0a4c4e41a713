//! Usage events and per-period counters. Recording is one statement: the event insert
//! (deduplicated by its id) and a conditional counter upsert that refuses to pass the ceiling.
//! Nothing reads a counter and then writes it.

use crate::domain::id::TenantId;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;

use crate::domain::entitlement::{Aggregation, Thresholds};
use crate::domain::period::Period;

pub struct NewEvent<'a> {
    pub tenant_id: &'a TenantId,
    pub event_id: &'a str,
    pub customer_id: &'a str,
    pub feature_key: &'a str,
    pub quantity: Decimal,
    pub occurred_at: DateTime<Utc>,
    pub period: Period,
    pub member_id: Option<&'a str>,
    pub billable: bool,
    pub properties: Option<&'a serde_json::Value>,
    pub aggregation: Aggregation,
    /// The highest counter level the event may leave (`None` = no ceiling).
    pub ceiling: Option<Decimal>,
    /// The plan's limit and the tenant's thresholds, for alerts.
    pub limit: Option<Decimal>,
    pub thresholds: Thresholds,
    /// The Stripe meter the event is reported to, if any.
    pub meter_event: Option<&'a str>,
    /// The tenant's clock (alert times).
    pub now: DateTime<Utc>,
}

#[derive(Debug)]
pub struct StoredEvent {
    pub event_id: String,
    pub customer_id: String,
    pub feature_key: String,
    pub quantity: Decimal,
    pub occurred_at: DateTime<Utc>,
}

#[derive(Debug)]
pub enum Outcome {
    /// Recorded; the counter after it.
    Recorded { used: Decimal },
    /// The id was seen before; nothing changed.
    Duplicate { event: StoredEvent, used: Decimal },
    /// It would pass the ceiling; nothing was written.
    Refused,
    /// Its timestamp is in a period whose invoice is finalized; nothing was written.
    PeriodClosed,
}

/// Records one event in one round trip (`tollgate_record_usage`, migration 4): the event
/// insert, the conditional counter upsert, the alerts it crosses into (with their webhook
/// events) and its Stripe meter outbox row commit or abort together.
pub async fn record(conn: &mut PgConnection, ev: &NewEvent<'_>) -> Result<Outcome, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT outcome AS "outcome!", used AS "used!", customer_id AS "customer_id!",
                  feature_key AS "feature_key!", quantity AS "quantity!",
                  occurred_at AS "occurred_at!"
           FROM tollgate_record_usage($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
                                      $14, $15, $16, $17, $18)"#,
        ev.tenant_id.as_str(),
        ev.event_id,
        ev.customer_id,
        ev.feature_key,
        ev.quantity,
        ev.occurred_at,
        ev.period.start,
        ev.period.end,
        ev.member_id,
        ev.billable,
        ev.properties,
        ev.aggregation == Aggregation::Max,
        ev.ceiling,
        ev.limit,
        ev.thresholds.warning,
        ev.thresholds.critical,
        ev.meter_event,
        ev.now
    )
    .fetch_one(&mut *conn)
    .await;
    let row = match row {
        Ok(row) => row,
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some(REFUSED) => {
            return Ok(Outcome::Refused)
        }
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some(CLOSED) => {
            return Ok(Outcome::PeriodClosed)
        }
        Err(e) => return Err(e),
    };
    if row.outcome == "duplicate" {
        return Ok(Outcome::Duplicate {
            event: StoredEvent {
                event_id: ev.event_id.to_string(),
                customer_id: row.customer_id,
                feature_key: row.feature_key,
                quantity: row.quantity,
                occurred_at: row.occurred_at,
            },
            used: row.used,
        });
    }
    Ok(Outcome::Recorded { used: row.used })
}

/// The SQLSTATE `tollgate_record_usage` raises when an event would pass its ceiling.
const REFUSED: &str = "TG402";
/// The SQLSTATE it raises for an event in a closed period.
const CLOSED: &str = "TG409";

/// A stored event and its counter's value now, if the id was recorded.
pub async fn stored_event(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    event_id: &str,
) -> Result<Option<(StoredEvent, Decimal)>, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT e.event_id, e.customer_id, e.feature_key, e.quantity, e.occurred_at,
                  COALESCE(c.used, 0) AS "used!"
           FROM usage_events e
           LEFT JOIN usage_counters c
             ON c.tenant_id = e.tenant_id AND c.customer_id = e.customer_id
            AND c.feature_key = e.feature_key AND c.period_start = e.period_start
           WHERE e.tenant_id = $1 AND e.event_id = $2"#,
        tenant_id.as_str(),
        event_id
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|r| {
        (
            StoredEvent {
                event_id: r.event_id,
                customer_id: r.customer_id,
                feature_key: r.feature_key,
                quantity: r.quantity,
                occurred_at: r.occurred_at,
            },
            r.used,
        )
    }))
}

/// A counter's value (0 when nothing was recorded in the period).
pub async fn counter(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    customer_id: &str,
    feature_key: &str,
    period_start: DateTime<Utc>,
) -> Result<Decimal, sqlx::Error> {
    Ok(sqlx::query_scalar!(
        "SELECT used FROM usage_counters
         WHERE tenant_id = $1 AND customer_id = $2 AND feature_key = $3 AND period_start = $4",
        tenant_id.as_str(),
        customer_id,
        feature_key,
        period_start
    )
    .fetch_optional(&mut *conn)
    .await?
    .unwrap_or(Decimal::ZERO))
}

/// Several counters of one customer at once: `(feature, period_start)` pairs, values in order.
pub async fn counters(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    customer_id: &str,
    keys: &[(String, DateTime<Utc>)],
) -> Result<Vec<Decimal>, sqlx::Error> {
    let features: Vec<String> = keys.iter().map(|k| k.0.clone()).collect();
    let starts: Vec<DateTime<Utc>> = keys.iter().map(|k| k.1).collect();
    let rows = sqlx::query!(
        r#"SELECT k.ord AS "ord!", c.used AS "used?"
           FROM unnest($3::text[], $4::timestamptz[]) WITH ORDINALITY AS k(feature_key, period_start, ord)
           LEFT JOIN usage_counters c
             ON c.tenant_id = $1 AND c.customer_id = $2
            AND c.feature_key = k.feature_key AND c.period_start = k.period_start
           ORDER BY k.ord"#,
        tenant_id.as_str(),
        customer_id,
        &features,
        &starts
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| r.used.unwrap_or(Decimal::ZERO))
        .collect())
}

/// Slots held by unexpired leases.
pub async fn active_leases(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    customer_id: &str,
    feature_key: &str,
    now: DateTime<Utc>,
) -> Result<Decimal, sqlx::Error> {
    let n = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM leases
           WHERE tenant_id = $1 AND customer_id = $2 AND feature_key = $3 AND expires_at > $4"#,
        tenant_id.as_str(),
        customer_id,
        feature_key,
        now
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(Decimal::from(n))
}

/// One customer's counter of one period.
pub struct PeriodRow {
    pub feature_key: String,
    pub period_start: DateTime<Utc>,
    pub period_end: Option<DateTime<Utc>>,
    pub used: Decimal,
    pub event_count: i64,
}

/// A customer's counters of periods starting at `since` or later (and the never-resetting
/// ones), newest first.
pub async fn history(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    customer_id: &str,
    since: DateTime<Utc>,
) -> Result<Vec<PeriodRow>, sqlx::Error> {
    sqlx::query_as!(
        PeriodRow,
        "SELECT feature_key, period_start, period_end, used, event_count FROM usage_counters
         WHERE tenant_id = $1 AND customer_id = $2 AND (period_start >= $3 OR period_end IS NULL)
         ORDER BY period_start DESC, feature_key",
        tenant_id.as_str(),
        customer_id,
        since
    )
    .fetch_all(&mut *conn)
    .await
}

/// A member's usage, with the number of members and their total.
pub struct MemberRow {
    pub member_id: String,
    pub used: Decimal,
    pub members: i64,
    pub total: Decimal,
}

/// The ten members with the most usage of a feature in a period, most first.
pub async fn top_members(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    customer_id: &str,
    feature_key: &str,
    period_start: DateTime<Utc>,
) -> Result<Vec<MemberRow>, sqlx::Error> {
    sqlx::query_as!(
        MemberRow,
        r#"SELECT member_id, used, count(*) OVER () AS "members!", sum(used) OVER () AS "total!"
               FROM usage_member_counters
               WHERE tenant_id = $1 AND customer_id = $2 AND feature_key = $3 AND period_start = $4
               ORDER BY used DESC, member_id
               LIMIT 10"#,
        tenant_id.as_str(),
        customer_id,
        feature_key,
        period_start
    )
    .fetch_all(&mut *conn)
    .await
}

/// Ends the customer's counters of the billing period starting at `period_start` at `at`
/// (usage counted by billing period ends with the subscription).
pub async fn end_billing_period_counters(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    customer_id: &str,
    period_start: DateTime<Utc>,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE usage_counters SET period_end = $4
             WHERE tenant_id = $1 AND customer_id = $2 AND period_start = $3
               AND period_end > $4",
        tenant_id.as_str(),
        customer_id,
        period_start,
        at
    )
    .execute(&mut *conn)
    .await
    .map(drop)
}

/// A raw usage event as stored.
pub struct EventRow {
    pub event_id: String,
    pub feature_key: String,
    pub quantity: Decimal,
    pub occurred_at: DateTime<Utc>,
    pub member_id: Option<String>,
    pub billable: bool,
    pub properties: Option<serde_json::Value>,
}

/// A customer's raw usage events still kept, oldest first.
pub async fn events_of(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    customer_id: &str,
) -> Result<Vec<EventRow>, sqlx::Error> {
    sqlx::query_as!(
        EventRow,
        "SELECT event_id, feature_key, quantity, occurred_at, member_id, billable, properties
         FROM usage_events WHERE tenant_id = $1 AND customer_id = $2
         ORDER BY occurred_at, event_id",
        tenant_id.as_str(),
        customer_id
    )
    .fetch_all(&mut *conn)
    .await
}
