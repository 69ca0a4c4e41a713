//! Usage events and per-period counters. Recording is one transaction: the event insert
//! (deduplicated by its id) and a conditional counter upsert that refuses to pass the ceiling.
//! Nothing reads a counter and then writes it.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool};

use crate::domain::entitlement::Aggregation;
use crate::domain::period::Period;
use crate::error::ApiResult;

pub struct NewEvent<'a> {
    pub tenant_id: &'a str,
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
}

#[derive(Debug)]
pub struct StoredEvent {
    pub event_id: String,
    pub customer_id: String,
    pub feature_key: String,
    pub quantity: Decimal,
    pub occurred_at: DateTime<Utc>,
    pub period_start: DateTime<Utc>,
}

#[derive(Debug)]
pub enum Outcome {
    /// Recorded; the counter after it.
    Recorded { used: Decimal },
    /// The id was seen before; nothing changed.
    Duplicate { event: StoredEvent, used: Decimal },
    /// It would pass the ceiling; nothing was written.
    Refused,
}

pub async fn record(pool: &PgPool, ev: &NewEvent<'_>) -> ApiResult<Outcome> {
    let mut tx = pool.begin().await?;
    let inserted = sqlx::query_scalar!(
        r#"INSERT INTO usage_events (tenant_id, event_id, customer_id, feature_key, quantity,
               occurred_at, period_start, member_id, billable, properties)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
           ON CONFLICT (tenant_id, event_id) DO NOTHING
           RETURNING true AS "inserted!""#,
        ev.tenant_id,
        ev.event_id,
        ev.customer_id,
        ev.feature_key,
        ev.quantity,
        ev.occurred_at,
        ev.period.start,
        ev.member_id,
        ev.billable,
        ev.properties
    )
    .fetch_optional(&mut *tx)
    .await?
    .is_some();

    if !inserted {
        tx.rollback().await?;
        let mut conn = pool.acquire().await?;
        let event = sqlx::query_as!(
            StoredEvent,
            "SELECT event_id, customer_id, feature_key, quantity, occurred_at, period_start
             FROM usage_events WHERE tenant_id = $1 AND event_id = $2",
            ev.tenant_id,
            ev.event_id
        )
        .fetch_one(&mut *conn)
        .await?;
        let used = counter(
            &mut conn,
            ev.tenant_id,
            &event.customer_id,
            &event.feature_key,
            event.period_start,
        )
        .await?;
        return Ok(Outcome::Duplicate { event, used });
    }

    if !ev.billable {
        // Kept for the audit trail; counts neither against limits nor towards charges.
        let used = counter(
            &mut tx,
            ev.tenant_id,
            ev.customer_id,
            ev.feature_key,
            ev.period.start,
        )
        .await?;
        tx.commit().await?;
        return Ok(Outcome::Recorded { used });
    }

    // Whatever the counter holds, an event alone past the ceiling can never fit. Checking it
    // here covers the insert path of the upsert, where its WHERE clause does not apply.
    if ev.ceiling.is_some_and(|c| ev.quantity > c) {
        tx.rollback().await?;
        return Ok(Outcome::Refused);
    }
    let is_max = ev.aggregation == Aggregation::Max;
    let used = sqlx::query_scalar!(
        r#"INSERT INTO usage_counters AS c (tenant_id, customer_id, feature_key, period_start,
               period_end, used, event_count)
           VALUES ($1, $2, $3, $4, $5, $6, 1)
           ON CONFLICT (tenant_id, customer_id, feature_key, period_start) DO UPDATE SET
               used = CASE WHEN $7 THEN GREATEST(c.used, EXCLUDED.used) ELSE c.used + EXCLUDED.used END,
               event_count = c.event_count + 1,
               updated_at = now()
           WHERE $8::numeric IS NULL
              OR (CASE WHEN $7 THEN GREATEST(c.used, EXCLUDED.used) ELSE c.used + EXCLUDED.used END) <= $8
           RETURNING used"#,
        ev.tenant_id,
        ev.customer_id,
        ev.feature_key,
        ev.period.start,
        ev.period.end,
        ev.quantity,
        is_max,
        ev.ceiling
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(used) = used else {
        tx.rollback().await?;
        return Ok(Outcome::Refused);
    };
    if let Some(member) = ev.member_id {
        sqlx::query!(
            r#"INSERT INTO usage_member_counters AS m (tenant_id, customer_id, feature_key,
                   period_start, member_id, used)
               VALUES ($1, $2, $3, $4, $5, $6)
               ON CONFLICT (tenant_id, customer_id, feature_key, period_start, member_id)
               DO UPDATE SET used = CASE WHEN $7 THEN GREATEST(m.used, EXCLUDED.used)
                                         ELSE m.used + EXCLUDED.used END"#,
            ev.tenant_id,
            ev.customer_id,
            ev.feature_key,
            ev.period.start,
            member,
            ev.quantity,
            is_max
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Outcome::Recorded { used })
}

/// A counter's value (0 when nothing was recorded in the period).
pub async fn counter(
    conn: &mut PgConnection,
    tenant_id: &str,
    customer_id: &str,
    feature_key: &str,
    period_start: DateTime<Utc>,
) -> ApiResult<Decimal> {
    Ok(sqlx::query_scalar!(
        "SELECT used FROM usage_counters
         WHERE tenant_id = $1 AND customer_id = $2 AND feature_key = $3 AND period_start = $4",
        tenant_id,
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
    tenant_id: &str,
    customer_id: &str,
    keys: &[(String, DateTime<Utc>)],
) -> ApiResult<Vec<Decimal>> {
    let features: Vec<String> = keys.iter().map(|k| k.0.clone()).collect();
    let starts: Vec<DateTime<Utc>> = keys.iter().map(|k| k.1).collect();
    let rows = sqlx::query!(
        r#"SELECT k.ord AS "ord!", c.used AS "used?"
           FROM unnest($3::text[], $4::timestamptz[]) WITH ORDINALITY AS k(feature_key, period_start, ord)
           LEFT JOIN usage_counters c
             ON c.tenant_id = $1 AND c.customer_id = $2
            AND c.feature_key = k.feature_key AND c.period_start = k.period_start
           ORDER BY k.ord"#,
        tenant_id,
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
    tenant_id: &str,
    customer_id: &str,
    feature_key: &str,
    now: DateTime<Utc>,
) -> ApiResult<Decimal> {
    let n = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM leases
           WHERE tenant_id = $1 AND customer_id = $2 AND feature_key = $3 AND expires_at > $4"#,
        tenant_id,
        customer_id,
        feature_key,
        now
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(Decimal::from(n))
}
