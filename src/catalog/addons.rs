//! Add-ons (SPEC §15) and their versions: `POST` creates, `PUT` (and `tollgate plans apply`)
//! makes a new version when the definition changed and is a no-op when it did not. Attached
//! add-ons keep their version until changed.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use super::plans::{entitlements_out, EntitlementOut, WriteMode};
use crate::audit::{self, Change, Origin, Resource};
use crate::db;
use crate::db::plans::PlanCache;
use crate::domain::addon::{self, AddonDefinition, AddonInput, AddonInterval, AddonVersion};
use crate::domain::money;
use crate::error::{Error, Result};
use crate::ids::TenantId;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AddonPriceOut {
    pub interval: AddonInterval,
    #[schema(example = "2000.00")]
    pub amount: String,
    pub currency: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Addon {
    pub key: String,
    pub name: String,
    pub version: i32,
    pub prices: Vec<AddonPriceOut>,
    pub entitlements: Vec<EntitlementOut>,
    pub created_at: DateTime<Utc>,
}

pub fn addon_out(v: &AddonVersion) -> Addon {
    let currency = v.prices.first().map_or("usd", |p| p.currency.as_str());
    Addon {
        key: v.key.clone(),
        name: v.name.clone(),
        version: v.version,
        prices: v
            .prices
            .iter()
            .map(|p| AddonPriceOut {
                interval: p.interval,
                amount: money::format(p.amount, &p.currency),
                currency: p.currency.clone(),
            })
            .collect(),
        entitlements: entitlements_out(&v.features, currency),
        created_at: v.created_at,
    }
}

pub fn addon_not_found() -> Error {
    Error::not_found("addon_not_found", "No such add-on.")
}

/// An add-on version in the audit log: its key, number and normalized definition.
fn version_json(key: &str, version: i32, definition: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({ "key": key, "version": version, "definition": definition })
}

/// Writes an add-on inside the caller's transaction. Returns the version now current and
/// whether anything was written.
pub async fn write(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    key: &str,
    input: &AddonInput,
    mode: WriteMode,
    now: DateTime<Utc>,
) -> Result<(i32, bool)> {
    super::features::validate_key(key, "key")?;
    let types = db::features::types(conn, tenant_id).await?;
    let def = addon::normalize(input, |f| types.get(f).copied())
        .map_err(|e| Error::invalid_param(e.code, &e.param, e.message))?;
    let def_json = serde_json::to_value(&def).map_err(anyhow::Error::from)?;
    let mut before = None;
    let version = match db::addons::insert_addon(conn, tenant_id, key, now).await? {
        Some(v) => v,
        None => {
            if mode == WriteMode::Create {
                return Err(Error::conflict(
                    "addon_exists",
                    format!(
                        "An add-on with key `{key}` already exists; PUT /v1/addons/{key} makes a new version."
                    ),
                )
                .with_param("key"));
            }
            // Locked, so concurrent PUTs make consecutive versions.
            let (latest, current) = db::addons::lock_latest(conn, tenant_id, key).await?;
            let unchanged = serde_json::from_value::<AddonDefinition>(current.clone())
                .ok()
                .as_ref()
                == Some(&def);
            if unchanged {
                return Ok((latest, false));
            }
            before = Some(version_json(key, latest, &current));
            db::addons::set_latest_version(conn, tenant_id, key, latest + 1).await?;
            latest + 1
        }
    };
    db::addons::insert_version(conn, tenant_id, (key, version), &def, &def_json, now).await?;
    let verb = if before.is_some() {
        "version_created"
    } else {
        "created"
    };
    let mut change =
        Change::new(Resource::Addon(key), verb).after(&version_json(key, version, &def_json));
    change.before = before;
    audit::record(conn, tenant_id, change, now).await?;
    Ok((version, true))
}

/// Writes an add-on in its own transaction and returns it as stored, with whether anything
/// was written (the API's `POST` and `PUT`).
pub async fn save(
    db: &PgPool,
    plans: &PlanCache,
    tenant_id: &TenantId,
    (key, input, mode): (&str, &AddonInput, WriteMode),
    (origin, now): (&Origin, DateTime<Utc>),
) -> Result<(Addon, bool)> {
    let mut tx = audit::begin(db, origin).await?;
    let (version, written) = write(&mut tx, tenant_id, key, input, mode, now).await?;
    tx.commit().await?;
    let addon = get(db, plans, tenant_id, key, Some(version)).await?;
    Ok((addon, written))
}

/// A version of an add-on as the API shows it (the newest when `version` is `None`).
pub async fn get(
    db: &PgPool,
    plans: &PlanCache,
    tenant_id: &TenantId,
    key: &str,
    version: Option<i32>,
) -> Result<Addon> {
    let mut conn = db.acquire().await?;
    let version = match version {
        Some(v) => v,
        None => db::addons::latest_version(&mut conn, tenant_id, key)
            .await?
            .ok_or_else(addon_not_found)?,
    };
    let v = plans
        .addon(&mut conn, tenant_id, key, version)
        .await?
        .ok_or_else(|| Error::not_found("addon_not_found", "No such add-on or version."))?;
    Ok(addon_out(&v))
}

/// The newest version of up to `limit` add-ons after `starting_after`, plus one more if
/// there is one (so the caller can tell `has_more`).
pub async fn list(
    db: &PgPool,
    plans: &PlanCache,
    tenant_id: &TenantId,
    starting_after: Option<&str>,
    limit: i64,
) -> Result<Vec<Addon>> {
    let mut conn = db.acquire().await?;
    let rows = db::addons::list(&mut conn, tenant_id, starting_after, limit + 1).await?;
    let mut out = Vec::with_capacity(rows.len());
    for (key, version) in rows {
        if let Some(v) = plans.addon(&mut conn, tenant_id, &key, version).await? {
            out.push(addon_out(&v));
        }
    }
    Ok(out)
}
