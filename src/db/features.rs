//! `features`: what plans grant. A feature never changes once created.

use crate::domain::id::TenantId;
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::domain::entitlement::{Aggregation, FeatureType};

/// A feature as stored.
pub struct FeatureRow {
    pub feature_key: String,
    pub name: String,
    pub feature_type: FeatureType,
    pub unit: Option<String>,
    pub aggregation: Aggregation,
    pub stripe_meter_event_name: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The row as read, before its text columns are parsed.
struct RawRow {
    feature_key: String,
    name: String,
    feature_type: String,
    unit: Option<String>,
    aggregation: String,
    stripe_meter_event_name: Option<String>,
    created_at: DateTime<Utc>,
}

impl TryFrom<RawRow> for FeatureRow {
    type Error = sqlx::Error;

    fn try_from(r: RawRow) -> Result<Self, sqlx::Error> {
        Ok(FeatureRow {
            feature_type: super::decode("features.type", &r.feature_type, FeatureType::parse)?,
            aggregation: super::decode("features.aggregation", &r.aggregation, Aggregation::parse)?,
            feature_key: r.feature_key,
            name: r.name,
            unit: r.unit,
            stripe_meter_event_name: r.stripe_meter_event_name,
            created_at: r.created_at,
        })
    }
}

pub struct NewFeature<'a> {
    pub key: &'a str,
    pub name: &'a str,
    pub feature_type: FeatureType,
    pub unit: Option<&'a str>,
    pub aggregation: Aggregation,
    pub stripe_meter_event_name: Option<&'a str>,
}

/// Inserts a feature; `None` when the key exists. Returns its creation time.
pub async fn insert(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    f: &NewFeature<'_>,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let row = sqlx::query!(
        "INSERT INTO features (tenant_id, feature_key, name, type, unit, aggregation, stripe_meter_event_name)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (tenant_id, feature_key) DO NOTHING
         RETURNING created_at",
        tenant_id.as_str(),
        f.key,
        f.name,
        f.feature_type.as_str(),
        f.unit,
        f.aggregation.as_str(),
        f.stripe_meter_event_name
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|r| r.created_at))
}

pub async fn get(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    key: &str,
) -> Result<Option<FeatureRow>, sqlx::Error> {
    let r = sqlx::query_as!(
        RawRow,
        "SELECT feature_key, name, type AS feature_type, unit, aggregation, stripe_meter_event_name,
                created_at
         FROM features WHERE tenant_id = $1 AND feature_key = $2",
        tenant_id.as_str(),
        key
    )
    .fetch_optional(&mut *conn)
    .await?;
    r.map(FeatureRow::try_from).transpose()
}

/// A page of features by key.
pub async fn list(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    starting_after: Option<&str>,
    limit: i64,
) -> Result<Vec<FeatureRow>, sqlx::Error> {
    let rows = sqlx::query_as!(
        RawRow,
        "SELECT feature_key, name, type AS feature_type, unit, aggregation, stripe_meter_event_name,
                created_at
         FROM features WHERE tenant_id = $1 AND ($2::text IS NULL OR feature_key > $2)
         ORDER BY feature_key LIMIT $3",
        tenant_id.as_str(),
        starting_after,
        limit
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter().map(FeatureRow::try_from).collect()
}

/// The type of each of the tenant's features (to validate a plan against them).
pub async fn types(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
) -> Result<HashMap<String, FeatureType>, sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT feature_key, type FROM features WHERE tenant_id = $1",
        tenant_id.as_str()
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok((
                r.feature_key,
                super::decode("features.type", &r.r#type, FeatureType::parse)?,
            ))
        })
        .collect()
}
