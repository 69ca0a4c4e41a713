//! Plans declared in TOML (`tollgate plans apply --tenant ID FILE`). Applying is idempotent:
//! existing features are kept, unchanged plans make no new version. One transaction.

use rust_decimal::Decimal;
use serde::Deserialize;
use sqlx::PgPool;

use crate::domain::entitlement::{Aggregation, FeatureType};
use crate::error::ApiError;
use crate::http::features::{fetch_feature, insert_feature, CreateFeature};
use crate::http::plans::{write_plan, PlanInput, WriteMode};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    pub tenant: Option<TenantSettings>,
    #[serde(default)]
    pub features: Vec<toml::Value>,
    #[serde(default)]
    pub plans: Vec<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSettings {
    pub warning_threshold: Option<Decimal>,
    pub critical_threshold: Option<Decimal>,
    pub invoice_grace_minutes: Option<i32>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct ApplySummary {
    pub features_created: usize,
    pub plans_written: Vec<(String, i32)>,
    pub plans_unchanged: Vec<(String, i32)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{0}")]
    Parse(String),
    #[error("{what}: {} ({}){}", .err.message, .err.code, .err.param.as_ref().map(|p| format!(" at `{p}`")).unwrap_or_default())]
    Invalid { what: String, err: ApiError },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

fn to_json(v: toml::Value) -> Result<serde_json::Value, ApplyError> {
    serde_json::to_value(v).map_err(|e| ApplyError::Parse(e.to_string()))
}

pub fn parse(text: &str) -> Result<PlanFile, ApplyError> {
    toml::from_str(text).map_err(|e| ApplyError::Parse(e.to_string()))
}

pub async fn apply(
    db: &PgPool,
    tenant_id: &str,
    file: PlanFile,
) -> Result<ApplySummary, ApplyError> {
    let mut summary = ApplySummary::default();
    let mut tx = db.begin().await?;
    let exists = sqlx::query_scalar!(
        "SELECT EXISTS (SELECT 1 FROM tenants WHERE tenant_id = $1) AS \"e!\"",
        tenant_id
    )
    .fetch_one(&mut *tx)
    .await?;
    if !exists {
        return Err(ApplyError::Parse(format!("no tenant with id {tenant_id}")));
    }
    if let Some(t) = &file.tenant {
        sqlx::query!(
            "UPDATE tenants SET warning_threshold = COALESCE($2, warning_threshold),
                 critical_threshold = COALESCE($3, critical_threshold),
                 invoice_grace_minutes = COALESCE($4, invoice_grace_minutes), updated_at = now()
             WHERE tenant_id = $1",
            tenant_id,
            t.warning_threshold,
            t.critical_threshold,
            t.invoice_grace_minutes
        )
        .execute(&mut *tx)
        .await?;
    }
    for (i, raw) in file.features.into_iter().enumerate() {
        let what = format!("features[{i}]");
        let f: CreateFeature =
            crate::http::extract::from_value(to_json(raw)?).map_err(|err| ApplyError::Invalid {
                what: what.clone(),
                err,
            })?;
        match fetch_feature(&mut tx, tenant_id, &f.key)
            .await
            .map_err(|err| ApplyError::Invalid {
                what: what.clone(),
                err,
            })? {
            Some(existing) => {
                let same = existing.feature_type == f.feature_type
                    && (f.feature_type != FeatureType::Metered
                        || existing.aggregation == f.aggregation.unwrap_or(Aggregation::Sum));
                if !same {
                    return Err(ApplyError::Parse(format!(
                        "{what}: feature `{}` exists with another type or aggregation; features cannot change type",
                        f.key
                    )));
                }
            }
            None => {
                insert_feature(&mut tx, tenant_id, &f)
                    .await
                    .map_err(|err| ApplyError::Invalid { what, err })?;
                summary.features_created += 1;
            }
        }
    }
    for (i, raw) in file.plans.into_iter().enumerate() {
        let what = format!("plans[{i}]");
        let p: PlanInput =
            crate::http::extract::from_value(to_json(raw)?).map_err(|err| ApplyError::Invalid {
                what: what.clone(),
                err,
            })?;
        let key = p
            .key
            .clone()
            .ok_or_else(|| ApplyError::Parse(format!("{what}: missing `key`")))?;
        let (version, written) = write_plan(&mut tx, tenant_id, &key, &p, WriteMode::Upsert)
            .await
            .map_err(|err| ApplyError::Invalid {
                what: format!("{what} ({key})"),
                err,
            })?;
        if written {
            summary.plans_written.push((key, version));
        } else {
            summary.plans_unchanged.push((key, version));
        }
    }
    tx.commit().await?;
    Ok(summary)
}
