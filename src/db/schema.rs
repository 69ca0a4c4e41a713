//! The schema's own state: which migrations are applied.

use sqlx::PgPool;

/// The versions of the migrations applied successfully (empty before the first).
pub async fn applied_versions(pool: &PgPool) -> Result<Vec<i64>, sqlx::Error> {
    // `to_regclass` so that a database never migrated answers "none" rather than an error.
    let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
        .fetch_one(pool)
        .await?;
    if exists.is_none() {
        return Ok(Vec::new());
    }
    // Dynamic (unchecked) on purpose: `_sqlx_migrations` is sqlx's table, not in our
    // migrations, so the compile-time checker would need it to exist at build time.
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(pool)
        .await
}
