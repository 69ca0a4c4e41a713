//! `customers`: the tenant's own users (or organisations), by the tenant's id for them.

use crate::domain::id::TenantId;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

/// Whether the customer exists (and is not deleted).
pub async fn exists(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    customer_id: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT EXISTS (SELECT 1 FROM customers WHERE tenant_id = $1 AND customer_id = $2
                        AND deleted_at IS NULL) AS \"e!\"",
        tenant_id.as_str(),
        customer_id
    )
    .fetch_one(&mut *conn)
    .await
}

pub struct CustomerRow {
    pub id: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub metadata: serde_json::Value,
    pub net_days: i32,
    pub credit_balance: rust_decimal::Decimal,
    pub created_at: DateTime<Utc>,
}

pub struct CustomerFields<'a> {
    pub email: Option<&'a str>,
    pub name: Option<&'a str>,
    pub metadata: Option<&'a serde_json::Value>,
    pub net_days: Option<i32>,
}

/// Creates or updates a customer (fields not given are kept); `(row, inserted)`. `None` for
/// a deleted customer.
pub async fn upsert(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    id: &str,
    f: &CustomerFields<'_>,
    now: DateTime<Utc>,
) -> Result<Option<(CustomerRow, bool)>, sqlx::Error> {
    let row = sqlx::query!(
        r#"INSERT INTO customers (tenant_id, customer_id, email, name, metadata, net_days, created_at, updated_at)
           VALUES ($1, $2, $3, $4, COALESCE($5, '{}'::jsonb), COALESCE($6, 0), $7, $7)
           ON CONFLICT (tenant_id, customer_id) DO UPDATE SET
               email = COALESCE(EXCLUDED.email, customers.email),
               name = COALESCE(EXCLUDED.name, customers.name),
               metadata = COALESCE($5, customers.metadata),
               net_days = COALESCE($6, customers.net_days),
               updated_at = EXCLUDED.updated_at
           WHERE customers.deleted_at IS NULL
           RETURNING customer_id, email, name, metadata, net_days, credit_balance, created_at,
                     (xmax = 0) AS "inserted!""#,
        tenant_id.as_str(),
        id,
        f.email,
        f.name,
        f.metadata,
        f.net_days,
        now
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|r| {
        (
            CustomerRow {
                id: r.customer_id,
                email: r.email,
                name: r.name,
                metadata: r.metadata,
                net_days: r.net_days,
                credit_balance: r.credit_balance,
                created_at: r.created_at,
            },
            r.inserted,
        )
    }))
}

/// Erases a customer: its personal fields cleared and the row marked deleted (it stays, as
/// usage and invoices refer to it). `None` if there was no such live customer.
pub async fn erase(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    id: &str,
    at: DateTime<Utc>,
) -> Result<Option<CustomerRow>, sqlx::Error> {
    sqlx::query_as!(
        CustomerRow,
        "UPDATE customers SET email = NULL, name = NULL, metadata = '{}'::jsonb,
                              deleted_at = $3, updated_at = now()
         WHERE tenant_id = $1 AND customer_id = $2 AND deleted_at IS NULL
         RETURNING customer_id AS id, email, name, metadata, net_days, credit_balance, created_at",
        tenant_id.as_str(),
        id,
        at
    )
    .fetch_optional(&mut *conn)
    .await
}

pub async fn get(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    id: &str,
) -> Result<Option<CustomerRow>, sqlx::Error> {
    sqlx::query_as!(
        CustomerRow,
        "SELECT customer_id AS id, email, name, metadata, net_days, credit_balance, created_at
         FROM customers
         WHERE tenant_id = $1 AND customer_id = $2 AND deleted_at IS NULL",
        tenant_id.as_str(),
        id
    )
    .fetch_optional(&mut *conn)
    .await
}

/// A page of customers by id.
pub async fn list(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    starting_after: Option<&str>,
    limit: i64,
) -> Result<Vec<CustomerRow>, sqlx::Error> {
    sqlx::query_as!(
        CustomerRow,
        "SELECT customer_id AS id, email, name, metadata, net_days, credit_balance, created_at
         FROM customers
         WHERE tenant_id = $1 AND deleted_at IS NULL AND ($2::text IS NULL OR customer_id > $2)
         ORDER BY customer_id LIMIT $3",
        tenant_id.as_str(),
        starting_after,
        limit
    )
    .fetch_all(&mut *conn)
    .await
}

/// A page of customers whose id starts with `query` or whose email contains it (either
/// case-insensitively), by id.
pub async fn search(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    query: &str,
    starting_after: Option<&str>,
    limit: i64,
) -> Result<Vec<CustomerRow>, sqlx::Error> {
    // The query is matched literally: LIKE's own wildcards in it are escaped.
    let literal = query
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    sqlx::query_as!(
        CustomerRow,
        r#"SELECT customer_id AS id, email, name, metadata, net_days, credit_balance, created_at
           FROM customers
           WHERE tenant_id = $1 AND deleted_at IS NULL
             AND (customer_id ILIKE $2 || '%' OR email ILIKE '%' || $2 || '%')
             AND ($3::text IS NULL OR customer_id > $3)
           ORDER BY customer_id LIMIT $4"#,
        tenant_id.as_str(),
        literal,
        starting_after,
        limit
    )
    .fetch_all(&mut *conn)
    .await
}
