//! Features: the things plans grant.

use crate::ids::TenantId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};

use crate::audit::{self, Change, Origin, Resource};
use crate::db::features::{self as db, FeatureRow, NewFeature};
use crate::domain::entitlement::{Aggregation, FeatureType};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateFeature {
    pub key: String,
    pub name: String,
    #[serde(rename = "type")]
    pub feature_type: FeatureType,
    pub unit: Option<String>,
    /// For metered features: `sum` (default) or `max`.
    pub aggregation: Option<Aggregation>,
    pub stripe_meter_event_name: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Feature {
    pub key: String,
    pub name: String,
    #[serde(rename = "type")]
    pub feature_type: FeatureType,
    pub unit: Option<String>,
    pub aggregation: Aggregation,
    pub stripe_meter_event_name: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<FeatureRow> for Feature {
    fn from(r: FeatureRow) -> Self {
        Feature {
            key: r.feature_key,
            name: r.name,
            feature_type: r.feature_type,
            unit: r.unit,
            aggregation: r.aggregation,
            stripe_meter_event_name: r.stripe_meter_event_name,
            created_at: r.created_at,
        }
    }
}

/// Feature and plan keys: 1 to 100 letters, digits, `_`, `-` and `.`.
pub fn validate_key(key: &str, param: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key.len() <= 100
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_param(
            "invalid_key",
            param,
            "Keys are 1 to 100 characters: letters, digits, `_`, `-` and `.`.",
        ))
    }
}

pub fn feature_not_found() -> Error {
    Error::not_found("feature_not_found", "No such feature.")
}

/// Creates a feature; `Ok(None)` when the key exists (the API's 409, `plans apply`'s no-op).
pub async fn insert(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    f: &CreateFeature,
    now: DateTime<Utc>,
) -> Result<Option<Feature>> {
    validate_key(&f.key, "key")?;
    if f.name.trim().is_empty() {
        return Err(Error::invalid_param(
            "invalid_name",
            "name",
            "name must not be empty.",
        ));
    }
    if f.aggregation.is_some() && f.feature_type != FeatureType::Metered {
        return Err(Error::invalid_param(
            "invalid_aggregation",
            "aggregation",
            "Only metered features have an aggregation.",
        ));
    }
    if f.stripe_meter_event_name.is_some() && f.feature_type != FeatureType::Metered {
        return Err(Error::invalid_param(
            "invalid_meter",
            "stripe_meter_event_name",
            "Only metered features report to a Stripe meter.",
        ));
    }
    let aggregation = f.aggregation.unwrap_or(Aggregation::Sum);
    let created_at = db::insert(
        conn,
        tenant_id,
        &NewFeature {
            key: &f.key,
            name: &f.name,
            feature_type: f.feature_type,
            unit: f.unit.as_deref(),
            aggregation,
            stripe_meter_event_name: f.stripe_meter_event_name.as_deref(),
        },
    )
    .await?;
    let Some(created_at) = created_at else {
        return Ok(None);
    };
    let feature = Feature {
        key: f.key.clone(),
        name: f.name.clone(),
        feature_type: f.feature_type,
        unit: f.unit.clone(),
        aggregation,
        stripe_meter_event_name: f.stripe_meter_event_name.clone(),
        created_at,
    };
    let change = Change::new(Resource::Feature(&f.key), "created").after(&feature);
    audit::record(conn, tenant_id, change, now).await?;
    Ok(Some(feature))
}

/// Creates a feature; a key that exists is `409 feature_exists`.
pub async fn create(
    db: &PgPool,
    origin: &Origin,
    tenant_id: &TenantId,
    f: &CreateFeature,
    now: DateTime<Utc>,
) -> Result<Feature> {
    let mut tx = audit::begin(db, origin).await?;
    let feature = insert(&mut tx, tenant_id, f, now).await?.ok_or_else(|| {
        Error::conflict(
            "feature_exists",
            format!("A feature with key `{}` already exists.", f.key),
        )
        .with_param("key")
    })?;
    tx.commit().await?;
    Ok(feature)
}

pub async fn find(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    key: &str,
) -> Result<Option<Feature>> {
    Ok(db::get(conn, tenant_id, key).await?.map(Feature::from))
}

pub async fn get(db: &PgPool, tenant_id: &TenantId, key: &str) -> Result<Feature> {
    let mut conn = db.acquire().await?;
    find(&mut conn, tenant_id, key)
        .await?
        .ok_or_else(feature_not_found)
}

/// Up to `limit` features after `starting_after`, plus one more if there is one (so the
/// caller can tell `has_more`).
pub async fn list(
    db: &PgPool,
    tenant_id: &TenantId,
    starting_after: Option<&str>,
    limit: i64,
) -> Result<Vec<Feature>> {
    let mut conn = db.acquire().await?;
    let rows = db::list(&mut conn, tenant_id, starting_after, limit + 1).await?;
    Ok(rows.into_iter().map(Feature::from).collect())
}
