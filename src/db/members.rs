//! `customer_members` and `seat_changes`: an organisation's members and the history of its
//! member count. Adding or removing a member locks the customer row first
//! ([`lock_customer`]), so the count written with each change is exact under concurrency.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::domain::id::TenantId;
use crate::domain::status::MemberRole;

/// Locks a live (not erased) customer's row for the rest of the transaction; `false` if there
/// is no such customer.
pub async fn lock_customer(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    customer_id: &str,
) -> Result<bool, sqlx::Error> {
    let found = sqlx::query_scalar!(
        "SELECT 1 AS one FROM customers
         WHERE tenant_id = $1 AND customer_id = $2 AND deleted_at IS NULL
         FOR NO KEY UPDATE",
        tenant_id.as_str(),
        customer_id
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(found.is_some())
}

#[derive(Debug, Clone)]
pub struct MemberRow {
    pub customer_id: String,
    pub member_id: String,
    pub role: MemberRole,
    pub email: Option<String>,
    pub name: Option<String>,
    pub created_at: DateTime<Utc>,
}

pub struct MemberFields<'a> {
    pub role: MemberRole,
    pub email: Option<&'a str>,
    pub name: Option<&'a str>,
}

/// Adds a member or updates it (its role; email and name when given); `(row, inserted)`.
pub async fn upsert(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    customer_id: &str,
    member_id: &str,
    f: &MemberFields<'_>,
    now: DateTime<Utc>,
) -> Result<(MemberRow, bool), sqlx::Error> {
    let r = sqlx::query!(
        r#"INSERT INTO customer_members
               (tenant_id, customer_id, member_id, role, email, name, created_at, updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
           ON CONFLICT (tenant_id, customer_id, member_id) DO UPDATE SET
               role = EXCLUDED.role,
               email = COALESCE(EXCLUDED.email, customer_members.email),
               name = COALESCE(EXCLUDED.name, customer_members.name),
               updated_at = EXCLUDED.updated_at
           RETURNING customer_id, member_id, role AS "role: MemberRole", email, name,
                     created_at, (xmax = 0) AS "inserted!""#,
        tenant_id.as_str(),
        customer_id,
        member_id,
        f.role.as_str(),
        f.email,
        f.name,
        now
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok((
        MemberRow {
            customer_id: r.customer_id,
            member_id: r.member_id,
            role: r.role,
            email: r.email,
            name: r.name,
            created_at: r.created_at,
        },
        r.inserted,
    ))
}

/// One member of a customer.
pub async fn get(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    customer_id: &str,
    member_id: &str,
) -> Result<Option<MemberRow>, sqlx::Error> {
    sqlx::query_as!(
        MemberRow,
        r#"SELECT customer_id, member_id, role AS "role: MemberRole", email, name, created_at
           FROM customer_members
           WHERE tenant_id = $1 AND customer_id = $2 AND member_id = $3"#,
        tenant_id.as_str(),
        customer_id,
        member_id
    )
    .fetch_optional(&mut *conn)
    .await
}

/// Clears the email and name of every member of a customer (erasure).
pub async fn erase(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    customer_id: &str,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!(
        "UPDATE customer_members SET email = NULL, name = NULL
         WHERE tenant_id = $1 AND customer_id = $2",
        tenant_id.as_str(),
        customer_id
    )
    .execute(&mut *conn)
    .await?
    .rows_affected())
}

/// Removes a member; the removed row, if there was one.
pub async fn delete(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    customer_id: &str,
    member_id: &str,
) -> Result<Option<MemberRow>, sqlx::Error> {
    sqlx::query_as!(
        MemberRow,
        r#"DELETE FROM customer_members
           WHERE tenant_id = $1 AND customer_id = $2 AND member_id = $3
           RETURNING customer_id, member_id, role AS "role: MemberRole", email, name,
                     created_at"#,
        tenant_id.as_str(),
        customer_id,
        member_id
    )
    .fetch_optional(&mut *conn)
    .await
}

/// Up to `limit` members of a customer in id order, after `starting_after`.
pub async fn list(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    customer_id: &str,
    starting_after: Option<&str>,
    limit: i64,
) -> Result<Vec<MemberRow>, sqlx::Error> {
    sqlx::query_as!(
        MemberRow,
        r#"SELECT customer_id, member_id, role AS "role: MemberRole", email, name, created_at
           FROM customer_members
           WHERE tenant_id = $1 AND customer_id = $2 AND ($3::text IS NULL OR member_id > $3)
           ORDER BY member_id LIMIT $4"#,
        tenant_id.as_str(),
        customer_id,
        starting_after,
        limit
    )
    .fetch_all(&mut *conn)
    .await
}

/// Records a change of the member count (the caller holds the customer's lock and has just
/// added or removed `member_id`, so the count cannot change meanwhile); returns the count
/// after it. (Counted, then inserted: on Citus an insert into a table whose id is made from a
/// sequence cannot take its rows from a query on another table in one statement on one node.)
pub async fn record_seat_change(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    customer_id: &str,
    member_id: &str,
    delta: i32,
    at: DateTime<Utc>,
) -> Result<i32, sqlx::Error> {
    let seats = sqlx::query_scalar!(
        r#"SELECT count(*)::int AS "seats!" FROM customer_members
           WHERE tenant_id = $1 AND customer_id = $2"#,
        tenant_id.as_str(),
        customer_id
    )
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query_scalar!(
        r#"INSERT INTO seat_changes (tenant_id, customer_id, member_id, delta, seats, at)
           VALUES ($1, $2, $3, $4, $5, $6)
           RETURNING seats"#,
        tenant_id.as_str(),
        customer_id,
        member_id,
        delta,
        seats,
        at
    )
    .fetch_one(&mut *conn)
    .await
}

/// A customer's member count.
pub async fn seats(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    customer_id: &str,
) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT count(*)::int AS "n!" FROM customer_members
           WHERE tenant_id = $1 AND customer_id = $2"#,
        tenant_id.as_str(),
        customer_id
    )
    .fetch_one(&mut *conn)
    .await
}

/// A customer's member count at `at`, from the seat history (0 before its first member).
pub async fn seats_at(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    customer_id: &str,
    at: DateTime<Utc>,
) -> Result<i32, sqlx::Error> {
    let seats = sqlx::query_scalar!(
        "SELECT seats FROM seat_changes
         WHERE tenant_id = $1 AND customer_id = $2 AND at <= $3
         ORDER BY at DESC, seq DESC LIMIT 1",
        tenant_id.as_str(),
        customer_id,
        at
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(seats.unwrap_or(0))
}
