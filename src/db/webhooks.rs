//! Outbound webhooks: `webhook_endpoints`, `webhook_events` and `webhook_deliveries`.

use crate::domain::id::EndpointId;
use crate::domain::id::TenantId;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

/// Records an event with a pending delivery per subscribed endpoint, in the caller's
/// transaction (`tollgate_emit_event`, migration 4; nothing when no endpoint wants it).
pub async fn emit(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    event_type: &str,
    data: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT tollgate_emit_event($1, $2, $3, NULL)",
        tenant_id.as_str(),
        event_type,
        data
    )
    .fetch_one(&mut *conn)
    .await
    .map(drop)
}

/// Whether any endpoint of the tenant wants `event_type`.
pub async fn wanted(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    event_type: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM webhook_endpoints
                          WHERE tenant_id = $1 AND deleted_at IS NULL
                            AND ('*' = ANY (events) OR $2 = ANY (events))) AS "e!""#,
        tenant_id.as_str(),
        event_type
    )
    .fetch_one(&mut *conn)
    .await
}

pub struct NewEndpoint<'a> {
    pub endpoint_id: &'a EndpointId,
    pub url: &'a str,
    pub events: &'a [String],
    pub secret: &'a str,
    pub description: Option<&'a str>,
}

/// Inserts an endpoint; returns its creation time.
pub async fn insert_endpoint(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    e: &NewEndpoint<'_>,
) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar!(
        "INSERT INTO webhook_endpoints (tenant_id, endpoint_id, url, events, secret, description)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING created_at",
        tenant_id.as_str(),
        e.endpoint_id.as_str(),
        e.url,
        e.events,
        e.secret,
        e.description
    )
    .fetch_one(&mut *conn)
    .await
}

pub struct EndpointRow {
    pub endpoint_id: EndpointId,
    pub url: String,
    pub events: Vec<String>,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The tenant's live endpoints.
pub async fn endpoints(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
) -> Result<Vec<EndpointRow>, sqlx::Error> {
    sqlx::query_as!(
        EndpointRow,
        "SELECT endpoint_id AS \"endpoint_id: EndpointId\", url, events, description, created_at FROM webhook_endpoints
         WHERE tenant_id = $1 AND deleted_at IS NULL ORDER BY endpoint_id",
        tenant_id.as_str()
    )
    .fetch_all(&mut *conn)
    .await
}

/// Deletes an endpoint (softly: its delivery log stays); `false` if there was none.
pub async fn delete_endpoint(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    endpoint_id: &EndpointId,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE webhook_endpoints SET deleted_at = now()
         WHERE tenant_id = $1 AND endpoint_id = $2 AND deleted_at IS NULL",
        tenant_id.as_str(),
        endpoint_id.as_str()
    )
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Whether the endpoint exists (deleted ones too: their log can still be read).
pub async fn endpoint_exists(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    endpoint_id: &EndpointId,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM webhook_endpoints
                          WHERE tenant_id = $1 AND endpoint_id = $2) AS "e!""#,
        tenant_id.as_str(),
        endpoint_id.as_str()
    )
    .fetch_one(&mut *conn)
    .await
}

pub struct DeliveryRow {
    pub event_id: String,
    pub event_type: String,
    pub status: String,
    pub attempts: i32,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub next_attempt_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub payload: serde_json::Value,
}

/// A page of an endpoint's deliveries, newest first.
pub async fn deliveries(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    endpoint_id: &EndpointId,
    starting_after: Option<&str>,
    limit: i64,
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    sqlx::query_as!(
        DeliveryRow,
        r#"SELECT d.event_id, e.type AS event_type, d.status, d.attempts, d.last_status,
                  d.last_error, d.created_at, d.last_attempt_at, d.next_attempt_at,
                  d.delivered_at, e.payload
           FROM webhook_deliveries d
           JOIN webhook_events e ON e.tenant_id = $1 AND e.event_id = d.event_id
           WHERE d.tenant_id = $1 AND d.endpoint_id = $2
             AND ($3::text IS NULL OR d.event_id < $3)
           ORDER BY d.event_id DESC LIMIT $4"#,
        tenant_id.as_str(),
        endpoint_id.as_str(),
        starting_after,
        limit
    )
    .fetch_all(&mut *conn)
    .await
}

/// A delivery taken by a worker: its lease is the attempt count it was claimed with.
pub struct Claimed {
    pub tenant_id: TenantId,
    pub endpoint_id: EndpointId,
    pub event_id: String,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub url: String,
    pub secret: String,
    pub endpoint_deleted: bool,
    pub payload: serde_json::Value,
}

/// Up to `max` tenants with deliveries due, the longest waiting first. Reads only, locks
/// nothing (on Citus one statement over every shard); each tenant's deliveries are then
/// claimed on the tenant's node ([`claim_due`]).
pub async fn due_tenants(db: &PgPool, max: i64) -> Result<Vec<TenantId>, sqlx::Error> {
    let mut tx = super::spanning_tenants(db).await?;
    let tenants = sqlx::query_scalar!(
        r#"SELECT tenant_id AS "tenant_id!: TenantId" FROM webhook_deliveries
           WHERE status = 'pending' AND next_attempt_at <= now()
           GROUP BY tenant_id
           ORDER BY min(next_attempt_at), tenant_id
           LIMIT $1"#,
        max
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(tenants)
}

/// Claims up to `max` of the tenant's due deliveries (`FOR UPDATE SKIP LOCKED`), leasing
/// each for `lease_secs` and counting the attempt, in one statement.
pub async fn claim_due(
    db: &PgPool,
    tenant_id: &TenantId,
    max: i64,
    lease_secs: f64,
) -> Result<Vec<Claimed>, sqlx::Error> {
    sqlx::query_as!(
        Claimed,
        r#"WITH due AS (
               SELECT tenant_id, endpoint_id, event_id FROM webhook_deliveries
               WHERE tenant_id = $1 AND status = 'pending' AND next_attempt_at <= now()
               ORDER BY next_attempt_at LIMIT $2
               FOR UPDATE SKIP LOCKED)
           UPDATE webhook_deliveries d
              SET attempts = d.attempts + 1, last_attempt_at = now(),
                  next_attempt_at = now() + make_interval(secs => $3)
           FROM due, webhook_endpoints w, webhook_events e
           WHERE d.tenant_id = $1 AND d.tenant_id = due.tenant_id
             AND d.endpoint_id = due.endpoint_id AND d.event_id = due.event_id
             AND w.tenant_id = $1 AND w.endpoint_id = d.endpoint_id
             AND e.tenant_id = $1 AND e.event_id = d.event_id
           RETURNING d.tenant_id AS "tenant_id: TenantId", d.endpoint_id AS "endpoint_id: EndpointId", d.event_id, d.attempts, d.created_at,
                     w.url, w.secret, (w.deleted_at IS NOT NULL) AS "endpoint_deleted!",
                     e.payload"#,
        tenant_id.as_str(),
        max,
        lease_secs
    )
    .fetch_all(db)
    .await
}

/// Marks a claimed delivery delivered, if its lease is still this attempt's.
pub async fn mark_delivered(db: &PgPool, c: &Claimed, status: i32) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE webhook_deliveries
                 SET status = 'delivered', delivered_at = now(), last_status = $5, last_error = NULL
                 WHERE tenant_id = $1 AND endpoint_id = $2 AND event_id = $3 AND attempts = $4
                   AND status = 'pending'",
        c.tenant_id.as_str(),
        c.endpoint_id.as_str(),
        c.event_id,
        c.attempts,
        status
    )
    .execute(db)
    .await
    .map(drop)
}

/// Records a failed attempt: retried after `wait_secs`, or given up (`failed`).
pub async fn mark_failed(
    db: &PgPool,
    c: &Claimed,
    give_up: bool,
    wait_secs: f64,
    status: Option<i32>,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE webhook_deliveries
                 SET status = CASE WHEN $5 THEN 'failed' ELSE 'pending' END,
                     next_attempt_at = now() + make_interval(secs => $6),
                     last_status = $7, last_error = $8
                 WHERE tenant_id = $1 AND endpoint_id = $2 AND event_id = $3 AND attempts = $4
                   AND status = 'pending'",
        c.tenant_id.as_str(),
        c.endpoint_id.as_str(),
        c.event_id,
        c.attempts,
        give_up,
        wait_secs,
        status,
        error
    )
    .execute(db)
    .await
    .map(drop)
}

/// Deliveries still to make, over every tenant (test support and operations).
pub async fn pending_count(db: &PgPool) -> Result<i64, sqlx::Error> {
    let mut tx = super::spanning_tenants(db).await?;
    let n = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM webhook_deliveries WHERE status = 'pending'"#
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(n)
}
