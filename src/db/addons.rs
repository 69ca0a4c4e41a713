//! `addons` and `addon_versions` (SPEC §15): add-ons and their immutable versions. A version
//! is stored as its normalized definition; loading one joins its entitlements' features.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::domain::addon::{AddonDefinition, AddonVersion};
use crate::domain::entitlement::{Aggregation, Entitlement, FeatureType, Overage};
use crate::domain::id::TenantId;
use crate::domain::plan::PlanFeature;

/// Creates an add-on at version 1; `None` when the key exists.
pub async fn insert_addon(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    key: &str,
    now: DateTime<Utc>,
) -> Result<Option<i32>, sqlx::Error> {
    sqlx::query_scalar!(
        "INSERT INTO addons (tenant_id, addon_key, latest_version, created_at) VALUES ($1, $2, 1, $3)
         ON CONFLICT (tenant_id, addon_key) DO NOTHING RETURNING latest_version",
        tenant_id.as_str(),
        key,
        now
    )
    .fetch_optional(&mut *conn)
    .await
}

/// The newest version of an add-on (`None`: no such add-on).
pub async fn latest_version(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    key: &str,
) -> Result<Option<i32>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT latest_version FROM addons WHERE tenant_id = $1 AND addon_key = $2",
        tenant_id.as_str(),
        key
    )
    .fetch_optional(&mut *conn)
    .await
}

/// The newest version and its definition, the add-on locked so that concurrent writers make
/// consecutive versions.
pub async fn lock_latest(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    key: &str,
) -> Result<(i32, serde_json::Value), sqlx::Error> {
    let row = sqlx::query!(
        "SELECT a.latest_version, v.definition FROM addons a
         JOIN addon_versions v ON v.tenant_id = $1 AND v.addon_key = a.addon_key
                              AND v.version = a.latest_version
         WHERE a.tenant_id = $1 AND a.addon_key = $2 FOR UPDATE OF a",
        tenant_id.as_str(),
        key
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok((row.latest_version, row.definition))
}

pub async fn set_latest_version(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    key: &str,
    version: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE addons SET latest_version = $3 WHERE tenant_id = $1 AND addon_key = $2",
        tenant_id.as_str(),
        key,
        version
    )
    .execute(&mut *conn)
    .await
    .map(drop)
}

pub async fn insert_version(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    (key, version): (&str, i32),
    def: &AddonDefinition,
    def_json: &serde_json::Value,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO addon_versions (tenant_id, addon_key, version, name, definition, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
        tenant_id.as_str(),
        key,
        version,
        def.name,
        def_json,
        now
    )
    .execute(&mut *conn)
    .await
    .map(drop)
}

/// Up to `limit` add-ons after `starting_after`, by key: (key, newest version).
pub async fn list(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    starting_after: Option<&str>,
    limit: i64,
) -> Result<Vec<(String, i32)>, sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT addon_key, latest_version FROM addons
         WHERE tenant_id = $1 AND ($2::text IS NULL OR addon_key COLLATE \"C\" > $2)
         ORDER BY addon_key COLLATE \"C\" LIMIT $3",
        tenant_id.as_str(),
        starting_after,
        limit
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.addon_key, r.latest_version))
        .collect())
}

/// An add-on version, with its entitlements' feature types (`None`: no such version).
pub async fn load_version(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    key: &str,
    version: i32,
) -> Result<Option<AddonVersion>, sqlx::Error> {
    let Some(v) = sqlx::query!(
        "SELECT definition, created_at FROM addon_versions
         WHERE tenant_id = $1 AND addon_key = $2 AND version = $3",
        tenant_id.as_str(),
        key,
        version
    )
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let def: AddonDefinition =
        serde_json::from_value(v.definition).map_err(|e| sqlx::Error::ColumnDecode {
            index: "addon_versions.definition".into(),
            source: Box::new(e),
        })?;
    let keys: Vec<&str> = def
        .entitlements
        .iter()
        .map(|e| e.feature.as_str())
        .collect();
    let features = sqlx::query!(
        "SELECT feature_key, type, aggregation, stripe_meter_event_name FROM features
         WHERE tenant_id = $1 AND feature_key = ANY($2)",
        tenant_id.as_str(),
        &keys as &[&str]
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(def.entitlements.len());
    for e in def.entitlements {
        let Some(f) = features.iter().find(|f| f.feature_key == e.feature) else {
            return Err(sqlx::Error::ColumnDecode {
                index: "addon_versions.definition".into(),
                source: format!("feature `{}` is missing", e.feature).into(),
            });
        };
        out.push(PlanFeature {
            entitlement: Entitlement {
                feature_type: super::decode("features.type", &f.r#type, FeatureType::parse)?,
                aggregation: super::decode(
                    "features.aggregation",
                    &f.aggregation,
                    Aggregation::parse,
                )?,
                enabled: e.enabled,
                limit: e.limit,
                reset: e.reset,
                overage: e.overage.map(|o| Overage {
                    unit_amount: o.unit_amount,
                    per_units: o.per_units,
                    cap_amount: o.cap_amount,
                }),
            },
            feature: e.feature,
            stripe_meter_event_name: f.stripe_meter_event_name.clone(),
        });
    }
    Ok(Some(AddonVersion {
        key: key.to_string(),
        version,
        name: def.name,
        prices: def.prices,
        features: out,
        created_at: v.created_at,
    }))
}
