//! `usage_alerts`: written by `tollgate_record_usage_batch` when usage first crosses a level.

use crate::domain::id::TenantId;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;

pub struct AlertRow {
    pub alert_id: String,
    pub customer_id: String,
    pub feature_key: String,
    pub level: String,
    pub period_start: DateTime<Utc>,
    pub used: Decimal,
    pub limit_value: Decimal,
    pub created_at: DateTime<Utc>,
}

/// A page of a customer's alerts, newest first.
pub async fn for_customer(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    customer_id: &str,
    starting_after: Option<&str>,
    limit: i64,
) -> Result<Vec<AlertRow>, sqlx::Error> {
    sqlx::query_as!(
        AlertRow,
        "SELECT alert_id, customer_id, feature_key, level, period_start, used, limit_value,
                created_at
         FROM usage_alerts
         WHERE tenant_id = $1 AND customer_id = $2 AND ($3::text IS NULL OR alert_id < $3)
         ORDER BY alert_id DESC LIMIT $4",
        tenant_id.as_str(),
        customer_id,
        starting_after,
        limit
    )
    .fetch_all(&mut *conn)
    .await
}
