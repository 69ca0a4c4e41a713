//! `audit_log`: appended in the transaction of each change, never updated or deleted (a
//! trigger refuses it; only erasure may rewrite a customer's `before`/`after`).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;

use crate::domain::audit::{Origin, PERSONAL_FIELDS};
use crate::domain::id::{AuditId, TenantId};

/// Names who acts for the rest of the caller's transaction: every entry it appends carries
/// this actor and request id. An entry appended in a transaction that did not call this is
/// refused by the table (its actor would be empty).
pub async fn act_as(conn: &mut PgConnection, origin: &Origin) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"SELECT set_config('tollgate.actor', $1, true) AS "actor!",
                  set_config('tollgate.request_id', $2, true) AS "request_id!""#,
        origin.actor.to_string(),
        origin.request_id.as_deref().unwrap_or("")
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(())
}

pub struct NewEntry<'a> {
    pub tenant_id: &'a TenantId,
    pub audit_id: &'a AuditId,
    pub action: &'a str,
    pub resource: &'a str,
    pub customer_id: Option<&'a str>,
    pub before: Option<&'a Value>,
    pub after: Option<&'a Value>,
    pub at: DateTime<Utc>,
}

pub async fn append(conn: &mut PgConnection, e: &NewEntry<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO audit_log (tenant_id, audit_id, actor, action, resource, customer_id,
                                before, after, request_id, created_at)
         VALUES ($1, $2, current_setting('tollgate.actor', true), $3, $4, $5, $6, $7,
                 NULLIF(current_setting('tollgate.request_id', true), ''), $8)",
        e.tenant_id.as_str(),
        e.audit_id.as_str(),
        e.action,
        e.resource,
        e.customer_id,
        e.before,
        e.after,
        e.at
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[derive(Debug)]
pub struct EntryRow {
    pub audit_id: AuditId,
    pub actor: String,
    pub action: String,
    pub resource: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub request_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// What to list: each filter exact when given.
pub struct Filter<'a> {
    pub resource: Option<&'a str>,
    pub actor: Option<&'a str>,
    pub action: Option<&'a str>,
    pub starting_after: Option<&'a AuditId>,
    pub limit: i64,
}

/// Entries newest first (equal times: the later inserted first), after the cursor entry.
/// `None` when the cursor names no entry of the tenant.
pub async fn list(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    f: &Filter<'_>,
) -> Result<Option<Vec<EntryRow>>, sqlx::Error> {
    let cursor = match f.starting_after {
        None => None,
        Some(id) => {
            let found = sqlx::query!(
                "SELECT created_at, seq FROM audit_log WHERE tenant_id = $1 AND audit_id = $2",
                tenant_id.as_str(),
                id.as_str()
            )
            .fetch_optional(&mut *conn)
            .await?;
            match found {
                Some(c) => Some((c.created_at, c.seq)),
                None => return Ok(None),
            }
        }
    };
    let rows = sqlx::query_as!(
        EntryRow,
        r#"SELECT audit_id AS "audit_id: AuditId", actor, action, resource, before, after,
                  request_id, created_at
           FROM audit_log
           WHERE tenant_id = $1
             AND ($2::text IS NULL OR resource = $2)
             AND ($3::text IS NULL OR actor = $3)
             AND ($4::text IS NULL OR action = $4)
             AND ($5::timestamptz IS NULL OR (created_at, seq) < ($5, $6))
           ORDER BY created_at DESC, seq DESC
           LIMIT $7"#,
        tenant_id.as_str(),
        f.resource,
        f.actor,
        f.action,
        cursor.map(|c| c.0),
        cursor.map(|c| c.1),
        f.limit
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(Some(rows))
}

/// The entries about one customer, oldest first (its export).
pub async fn about_customer(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    customer_id: &str,
) -> Result<Vec<EntryRow>, sqlx::Error> {
    sqlx::query_as!(
        EntryRow,
        r#"SELECT audit_id AS "audit_id: AuditId", actor, action, resource, before, after,
                  request_id, created_at
           FROM audit_log
           WHERE tenant_id = $1 AND customer_id = $2
           ORDER BY created_at, seq"#,
        tenant_id.as_str(),
        customer_id
    )
    .fetch_all(&mut *conn)
    .await
}

/// Replaces the personal fields in the `before` and `after` of every entry about the
/// customer with `"[erased]"` (the one rewrite the table's trigger allows, and only inside
/// this transaction).
pub async fn erase_customer(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    customer_id: &str,
) -> Result<u64, sqlx::Error> {
    let fields: Vec<String> = PERSONAL_FIELDS.iter().map(|f| f.to_string()).collect();
    // The trigger reads `tollgate.erasing`, set for this transaction. On Citus it runs on the
    // node that holds the tenant's shard, where only a `SET LOCAL` command reaches (with
    // `citus.propagate_set_commands`; on one PostgreSQL both are plain settings). A setting
    // cannot be a bind parameter: the server quotes the value into the command (`%L`).
    let set = sqlx::query_scalar!(
        r#"SELECT format('SET LOCAL tollgate.erasing TO %L', $1::text || '/' || $2::text) AS "set!""#,
        tenant_id.as_str(),
        customer_id
    )
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query("SET LOCAL citus.propagate_set_commands TO 'local'")
        .execute(&mut *conn)
        .await?;
    sqlx::query(&set)
        .persistent(false)
        .execute(&mut *conn)
        .await?;
    let erased = sqlx::query!(
        "UPDATE audit_log
         SET before = tollgate_erase_keys(before, $3), after = tollgate_erase_keys(after, $3)
         WHERE tenant_id = $1 AND customer_id = $2
           AND split_part(resource, '/', 1) IN ('customer', 'member')",
        tenant_id.as_str(),
        customer_id,
        &fields
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    sqlx::query("SET LOCAL tollgate.erasing TO ''")
        .execute(&mut *conn)
        .await?;
    Ok(erased)
}
