//! Plans (and add-ons and coupons) declared in TOML (`tollgate plans apply --tenant ID FILE`). Applying is idempotent:
//! existing features are kept, unchanged plans make no new version. One transaction.

use crate::ids::TenantId;
use rust_decimal::Decimal;
use serde::Deserialize;
use sqlx::PgPool;

use super::addons;
use super::coupons::{self, CreateCoupon};
use super::features::{self, CreateFeature};
use super::plans::{self, WriteMode};
use crate::audit::{Change, Origin, Resource};
use crate::clock::Clock;
use crate::db;
use crate::domain::addon::AddonInput;
use crate::domain::entitlement::{Aggregation, FeatureType};
use crate::domain::plan::PlanInput;
use crate::error::Error;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    pub tenant: Option<TenantSettings>,
    #[serde(default)]
    pub features: Vec<toml::Value>,
    #[serde(default)]
    pub plans: Vec<toml::Value>,
    /// Add-ons (SPEC §15), in the API's `POST /v1/addons` shape.
    #[serde(default)]
    pub addons: Vec<toml::Value>,
    /// Coupons (SPEC §15), in the API's `POST /v1/coupons` shape.
    #[serde(default)]
    pub coupons: Vec<toml::Value>,
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
    pub addons_written: Vec<(String, i32)>,
    pub addons_unchanged: Vec<(String, i32)>,
    pub coupons_created: Vec<String>,
    pub coupons_unchanged: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{0}")]
    Parse(String),
    #[error("{what}: {}", describe(.err))]
    Invalid { what: String, err: Error },
    #[error(transparent)]
    Failed(#[from] Error),
}

impl From<sqlx::Error> for ApplyError {
    fn from(err: sqlx::Error) -> Self {
        ApplyError::Failed(err.into())
    }
}

/// A refusal as one line: its message, code and the field it is about.
fn describe(err: &Error) -> String {
    match err {
        Error::Rejected {
            code,
            message,
            param,
            ..
        } => {
            let at = param
                .as_ref()
                .map(|p| format!(" at `{p}`"))
                .unwrap_or_default();
            format!("{message} ({code}){at}")
        }
        other => other.to_string(),
    }
}

/// One TOML table read as `T` (as if it were the API's JSON body), naming the failing field.
fn read<T: serde::de::DeserializeOwned>(what: &str, v: toml::Value) -> Result<T, ApplyError> {
    let json = serde_json::to_value(v).map_err(|e| ApplyError::Parse(e.to_string()))?;
    serde_path_to_error::deserialize(json)
        .map_err(|e| ApplyError::Parse(format!("{what}: `{}`: {}", e.path(), e.inner())))
}

pub fn parse(text: &str) -> Result<PlanFile, ApplyError> {
    toml::from_str(text).map_err(|e| ApplyError::Parse(e.to_string()))
}

pub async fn apply(
    db: &PgPool,
    origin: &Origin,
    tenant_id: &TenantId,
    file: PlanFile,
) -> Result<ApplySummary, ApplyError> {
    let mut summary = ApplySummary::default();
    let mut tx = db.begin().await?;
    db::audit::act_as(&mut tx, origin).await?;
    if db::tenants::mode(&mut tx, tenant_id).await?.is_none() {
        return Err(ApplyError::Parse(format!("no tenant with id {tenant_id}")));
    }
    let now = Clock.tenant_now(db::tenants::test_clock(&mut tx, tenant_id).await?);
    if let Some(t) = &file.tenant {
        let before = crate::tenancy::settings::read(&mut tx, tenant_id).await?;
        db::tenants::apply_settings(
            &mut tx,
            tenant_id,
            t.warning_threshold,
            t.critical_threshold,
            t.invoice_grace_minutes,
        )
        .await?;
        let after = crate::tenancy::settings::read(&mut tx, tenant_id).await?;
        let change = Change::new(Resource::Tenant(tenant_id), "updated")
            .before(&before)
            .after(&after);
        crate::audit::record(&mut tx, tenant_id, change, now).await?;
    }
    for (i, raw) in file.features.into_iter().enumerate() {
        let what = format!("features[{i}]");
        let f: CreateFeature = read(&what, raw)?;
        match features::find(&mut tx, tenant_id, &f.key)
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
                features::insert(&mut tx, tenant_id, &f, now)
                    .await
                    .map_err(|err| ApplyError::Invalid { what, err })?;
                summary.features_created += 1;
            }
        }
    }
    for (i, raw) in file.plans.into_iter().enumerate() {
        let what = format!("plans[{i}]");
        let p: PlanInput = read(&what, raw)?;
        let key = p
            .key
            .clone()
            .ok_or_else(|| ApplyError::Parse(format!("{what}: missing `key`")))?;
        let (version, written) = plans::write(&mut tx, tenant_id, &key, &p, WriteMode::Upsert, now)
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
    for (i, raw) in file.addons.into_iter().enumerate() {
        let what = format!("addons[{i}]");
        let a: AddonInput = read(&what, raw)?;
        let key = a
            .key
            .clone()
            .ok_or_else(|| ApplyError::Parse(format!("{what}: missing `key`")))?;
        let (version, written) =
            addons::write(&mut tx, tenant_id, &key, &a, WriteMode::Upsert, now)
                .await
                .map_err(|err| ApplyError::Invalid {
                    what: format!("{what} ({key})"),
                    err,
                })?;
        if written {
            summary.addons_written.push((key, version));
        } else {
            summary.addons_unchanged.push((key, version));
        }
    }
    for (i, raw) in file.coupons.into_iter().enumerate() {
        let what = format!("coupons[{i}]");
        let c: CreateCoupon = read(&what, raw)?;
        let created = coupons::apply_file(&mut tx, tenant_id, &c, now)
            .await
            .map_err(|err| ApplyError::Invalid {
                what: format!("{what} ({})", c.code),
                err,
            })?;
        if created {
            summary.coupons_created.push(c.code);
        } else {
            summary.coupons_unchanged.push(c.code);
        }
    }
    tx.commit().await?;
    Ok(summary)
}
