//! Queries grouped by aggregate.

pub mod check_batch;
pub mod hot_pool;
pub mod plans;
pub mod subscriptions;
pub mod usage;

/// Is this error a unique violation of the named constraint/index?
pub fn is_unique_violation(err: &sqlx::Error, constraint: &str) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            db.code().as_deref() == Some("23505") && db.constraint() == Some(constraint)
        }
        _ => false,
    }
}
