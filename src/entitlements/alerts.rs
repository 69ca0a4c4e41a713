//! Usage alerts: stored when recorded usage first crosses a warning level in a period (in the
//! recording's own statement, with their `usage.threshold_reached` events).

use crate::ids::TenantId;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::Entitlements;
use crate::db;
use crate::domain::qty::Qty;
use crate::error::Result;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Alert {
    pub id: String,
    pub customer: String,
    pub feature: String,
    /// `warning`, `critical` or `exceeded`.
    pub level: String,
    /// The counter period it belongs to.
    pub period_start: DateTime<Utc>,
    /// The counter after the event that crossed the level.
    pub used: Qty,
    pub limit: Qty,
    pub created_at: DateTime<Utc>,
}

impl From<db::alerts::AlertRow> for Alert {
    fn from(r: db::alerts::AlertRow) -> Self {
        Alert {
            id: r.alert_id,
            customer: r.customer_id,
            feature: r.feature_key,
            level: r.level,
            period_start: r.period_start,
            used: Qty(r.used),
            limit: Qty(r.limit_value),
            created_at: r.created_at,
        }
    }
}

impl Entitlements {
    /// Up to `limit` of a customer's alerts after `starting_after`, newest first, plus one
    /// more if there is one.
    pub async fn alerts(
        &self,
        tenant_id: &TenantId,
        customer: &str,
        starting_after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Alert>> {
        let mut conn = self.db.acquire().await?;
        super::resolve::customer_must_exist(&mut conn, tenant_id, customer).await?;
        let rows =
            db::alerts::for_customer(&mut conn, tenant_id, customer, starting_after, limit + 1)
                .await?;
        Ok(rows.into_iter().map(Alert::from).collect())
    }
}
