//! The schema's own state: which migrations are applied.

use sqlx::{PgConnection, PgPool};

/// The versions of the migrations applied successfully (empty before the first).
pub async fn applied_versions(pool: &PgPool) -> Result<Vec<i64>, sqlx::Error> {
    // `to_regclass` so that a database never migrated answers "none" rather than an error.
    let exists = sqlx::query_scalar!("SELECT to_regclass('_sqlx_migrations')::text AS t")
        .fetch_one(pool)
        .await?;
    if exists.is_none() {
        return Ok(Vec::new());
    }
    sqlx::query_scalar!("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(pool)
        .await
}

/// Creates `database` on the server `conn` is connected to, if it does not exist.
pub async fn ensure_database(conn: &mut PgConnection, database: &str) -> Result<(), sqlx::Error> {
    let exists = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS "e!""#,
        database
    )
    .fetch_one(&mut *conn)
    .await?;
    if !exists {
        // Dynamic: an identifier cannot be a bind parameter. Quoted, with quotes doubled.
        let quoted = database.replace('"', "\"\"");
        sqlx::query(&format!("CREATE DATABASE \"{quoted}\""))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}
