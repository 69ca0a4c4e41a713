//! Usage events and per-period counters. Recording is one statement for a whole batch of
//! events: the event inserts (deduplicated by id) and conditional counter upserts that refuse
//! to pass the ceiling. Nothing reads a counter and then writes it.

use crate::domain::id::TenantId;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;

use super::resolve::Stamps;
use crate::domain::entitlement::{Aggregation, Thresholds};
use crate::domain::period::Period;

/// One usage event to record (owned: events wait in the group-commit queue, `usage_batch`).
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub tenant_id: TenantId,
    pub event_id: String,
    pub customer_id: String,
    pub feature_key: String,
    pub quantity: Decimal,
    pub occurred_at: DateTime<Utc>,
    pub period: Period,
    pub member_id: Option<String>,
    pub billable: bool,
    pub properties: Option<serde_json::Value>,
    pub aggregation: Aggregation,
    /// The highest counter level the event may leave (`None` = no ceiling).
    pub ceiling: Option<Decimal>,
    /// The plan's limit and the tenant's thresholds, for alerts.
    pub limit: Option<Decimal>,
    pub thresholds: Thresholds,
    /// The Stripe meter the event is reported to, if any.
    pub meter_event: Option<String>,
    /// The plan refuses it: it is answered [`Outcome::Duplicate`] if its id was recorded
    /// before, else [`Outcome::Refused`], and nothing is written.
    pub refused: bool,
    /// The tenant's clock (alert times).
    pub now: DateTime<Utc>,
    /// What it was resolved against: if any of it has changed, it is [`Outcome::Stale`].
    pub stamps: Stamps,
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
    /// It would pass the ceiling (or the plan refuses it); nothing was written.
    Refused,
    /// Its timestamp is in a period whose invoice is finalized; nothing was written.
    PeriodClosed,
    /// Its key, tenant, customer or plan has changed since it was resolved; nothing was
    /// written. It is to be resolved again.
    Stale,
}

/// Records a batch of events in one statement, so in one transaction and one commit
/// (`tollgate_record_usage_batch`, version 8: migration 20261207000003): the
/// events (deduplicated by id, also within the batch), their counters (coalesced per counter,
/// applied in arrival order against the ceiling), the alerts they cross into (with their
/// webhook events) and their Stripe meter outbox rows commit or abort together. Each event is
/// checked against the rows it was resolved from ([`Stamps`]). One outcome per event, in
/// order.
///
/// `in_block`: on Citus, the call is made inside a transaction block of its own. Outside one,
/// Citus delegates the call of a distributed function to the node of its tenant's shard, and
/// such a delegated call can write to a shard's old placement while the shard is moved to
/// another node: measured, an acknowledged event was missing after every one of five
/// rebalancing runs under load (`tests/api/citus.rs`), and none in a block, where the
/// function runs on the coordinator and each of its statements is routed (and locked
/// against the move) like any other.
pub async fn record_batch(
    conn: &mut PgConnection,
    events: &[&NewEvent],
    in_block: bool,
) -> Result<Vec<Outcome>, sqlx::Error> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let col = |f: fn(&NewEvent) -> &str| events.iter().map(|e| f(e)).collect::<Vec<&str>>();
    let tenants = col(|e| e.tenant_id.as_str());
    let ids = col(|e| &e.event_id);
    let customers = col(|e| &e.customer_id);
    let features = col(|e| &e.feature_key);
    let quantities: Vec<Decimal> = events.iter().map(|e| e.quantity).collect();
    let occurred: Vec<DateTime<Utc>> = events.iter().map(|e| e.occurred_at).collect();
    let starts: Vec<DateTime<Utc>> = events.iter().map(|e| e.period.start).collect();
    let ends: Vec<Option<DateTime<Utc>>> = events.iter().map(|e| e.period.end).collect();
    let members: Vec<Option<&str>> = events.iter().map(|e| e.member_id.as_deref()).collect();
    let billable: Vec<bool> = events.iter().map(|e| e.billable).collect();
    let properties: Vec<Option<serde_json::Value>> =
        events.iter().map(|e| e.properties.clone()).collect();
    let is_max: Vec<bool> = events
        .iter()
        .map(|e| e.aggregation == Aggregation::Max)
        .collect();
    let ceilings: Vec<Option<Decimal>> = events.iter().map(|e| e.ceiling).collect();
    let limits: Vec<Option<Decimal>> = events.iter().map(|e| e.limit).collect();
    let warnings: Vec<Decimal> = events.iter().map(|e| e.thresholds.warning).collect();
    let criticals: Vec<Decimal> = events.iter().map(|e| e.thresholds.critical).collect();
    let meters: Vec<Option<&str>> = events.iter().map(|e| e.meter_event.as_deref()).collect();
    let refused: Vec<bool> = events.iter().map(|e| e.refused).collect();
    let nows: Vec<DateTime<Utc>> = events.iter().map(|e| e.now).collect();
    let firsts = first_occurrences(events);
    let key_hashes: Vec<Option<&[u8]>> = events
        .iter()
        .map(|e| e.stamps.key_hash.as_deref())
        .collect();
    let tenant_stamps = col(|e| &e.stamps.tenant);
    // The one tenant of every event, when there is one (always on Citus, where the call is
    // then routed to the tenant's node); else the statement spans the events' tenants.
    let scope = tenants
        .iter()
        .all(|t| *t == tenants[0])
        .then_some(tenants[0]);
    let customer_stamps = col(|e| &e.stamps.customer);
    // The statement, on the connection or in a block of its own (`in_block`).
    macro_rules! record {
        ($on:expr) => {
            sqlx::query_as!(
                RecordedRow,
                r#"SELECT out_outcome AS "outcome!", out_used AS used,
                          out_customer AS "customer_id!", out_feature AS "feature_key!",
                          out_quantity AS "quantity!", out_occurred_at AS "occurred_at!"
                   FROM tollgate_record_usage_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
                                                    $13, $14, $15, $16, $17, $18, $19, $20, $21, $22,
                                                    $23, $24)"#,
                scope,
                &tenants as &[&str],
                &ids as &[&str],
                &customers as &[&str],
                &features as &[&str],
                &quantities,
                &occurred,
                &starts,
                &ends as &[Option<DateTime<Utc>>],
                &members as &[Option<&str>],
                &billable,
                &properties as &[Option<serde_json::Value>],
                &is_max,
                &ceilings as &[Option<Decimal>],
                &limits as &[Option<Decimal>],
                &warnings,
                &criticals,
                &meters as &[Option<&str>],
                &refused,
                &nows,
                &firsts,
                &key_hashes as &[Option<&[u8]>],
                &tenant_stamps as &[&str],
                &customer_stamps as &[&str]
            )
            .fetch_all($on)
            .await?
        };
    }
    let rows = if in_block {
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let rows = record!(&mut *tx);
        tx.commit().await?;
        rows
    } else {
        record!(&mut *conn)
    };
    if rows.len() != events.len() {
        return Err(sqlx::Error::Protocol(format!(
            "tollgate_record_usage_batch answered {} of {} events",
            rows.len(),
            events.len()
        )));
    }
    Ok(rows
        .into_iter()
        .zip(events)
        .map(|(row, ev)| match row.outcome.as_str() {
            "recorded" => Outcome::Recorded {
                used: row.used.unwrap_or_default(),
            },
            "duplicate" => Outcome::Duplicate {
                event: StoredEvent {
                    event_id: ev.event_id.clone(),
                    customer_id: row.customer_id,
                    feature_key: row.feature_key,
                    quantity: row.quantity,
                    occurred_at: row.occurred_at,
                },
                used: row.used.unwrap_or_default(),
            },
            "period_closed" => Outcome::PeriodClosed,
            "stale" => Outcome::Stale,
            _ => Outcome::Refused,
        })
        .collect())
}

/// One event's answer from `tollgate_record_usage_batch` (which answers in the events' order).
struct RecordedRow {
    outcome: String,
    used: Option<Decimal>,
    customer_id: String,
    feature_key: String,
    quantity: Decimal,
    occurred_at: DateTime<Utc>,
}

/// Per event, the ordinal (from 1) of the first event in `events` with the same tenant and id:
/// its own, unless the id came earlier in the batch.
fn first_occurrences(events: &[&NewEvent]) -> Vec<i32> {
    let mut first: std::collections::HashMap<(&str, &str), i32> =
        std::collections::HashMap::with_capacity(events.len());
    (1..)
        .zip(events)
        .map(|(ord, e)| {
            *first
                .entry((e.tenant_id.as_str(), e.event_id.as_str()))
                .or_insert(ord)
        })
        .collect()
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
