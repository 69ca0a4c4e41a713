//! Plans and their versions: `POST` creates, `PUT` (and `tollgate plans apply`) makes a new
//! version when the definition changed and is a no-op when it did not.

use crate::ids::TenantId;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use crate::audit::{self, Change, Origin, Resource};
use crate::db;
use crate::db::plans::{PlanCache, PlanVersion};
use crate::domain::entitlement::FeatureType;
use crate::domain::money;
use crate::domain::period::{Interval, Reset};
use crate::domain::plan::{self, Charge, Definition, PlanFeature, PlanInput, Price};
use crate::domain::qty::Qty;
use crate::domain::seats::{SeatPricing, TiersMode};
use crate::error::{Error, Result};
use rust_decimal::Decimal;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PriceOut {
    pub interval: Interval,
    /// Per interval, or per seat; `null` for a tiered price.
    #[schema(example = "29.00")]
    pub amount: Option<String>,
    pub currency: String,
    pub per_seat: bool,
    /// Per-seat prices: the fewest seats billed.
    pub min_seats: Option<i64>,
    pub tiers: Option<Vec<TierOut>>,
    pub tiers_mode: Option<TiersMode>,
    pub stripe_price_id: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TierOut {
    /// The last seat of the tier (inclusive); `null` for the last tier.
    pub up_to: Option<i64>,
    #[schema(example = "50.00")]
    pub unit_amount: String,
}

pub fn price_out(p: &Price) -> PriceOut {
    let money = |a: Decimal| money::format(a, &p.currency);
    let (amount, min_seats, tiers, tiers_mode) = match &p.charge {
        Charge::Flat(a) => (Some(money(*a)), None, None, None),
        Charge::Seats {
            pricing: SeatPricing::PerSeat(a),
            min_seats,
        } => (Some(money(*a)), Some(*min_seats), None, None),
        Charge::Seats {
            pricing: SeatPricing::Tiered { mode, tiers },
            min_seats,
        } => (
            None,
            Some(*min_seats),
            Some(
                tiers
                    .iter()
                    .map(|t| TierOut {
                        up_to: t.up_to,
                        unit_amount: money(t.unit_amount),
                    })
                    .collect(),
            ),
            Some(*mode),
        ),
    };
    PriceOut {
        interval: p.interval,
        amount,
        currency: p.currency.clone(),
        per_seat: p.per_seat(),
        min_seats,
        tiers,
        tiers_mode,
        stripe_price_id: p.stripe_price_id.clone(),
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OverageOut {
    pub unit_amount: String,
    pub per_units: Qty,
    pub cap_amount: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EntitlementOut {
    pub feature: String,
    #[serde(rename = "type")]
    pub feature_type: FeatureType,
    pub enabled: bool,
    /// `null` = unlimited.
    pub limit: Option<Qty>,
    pub unlimited: bool,
    /// Only for metered features.
    pub reset: Option<Reset>,
    pub overage: Option<OverageOut>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Plan {
    pub key: String,
    pub name: String,
    pub version: i32,
    pub default: bool,
    pub prices: Vec<PriceOut>,
    pub trial_days: i32,
    pub retention_days: Option<i32>,
    pub entitlements: Vec<EntitlementOut>,
    pub created_at: DateTime<Utc>,
}

/// Entitlements as the API shows them (a plan's or an add-on's), amounts in `currency`.
pub fn entitlements_out(features: &[PlanFeature], currency: &str) -> Vec<EntitlementOut> {
    features
        .iter()
        .map(|f| {
            let e = &f.entitlement;
            EntitlementOut {
                feature: f.feature.clone(),
                feature_type: e.feature_type,
                enabled: e.enabled,
                limit: e.limit.map(Qty),
                unlimited: e.limit.is_none()
                    && matches!(
                        e.feature_type,
                        FeatureType::Metered | FeatureType::Limit | FeatureType::Concurrency
                    ),
                reset: (e.feature_type == FeatureType::Metered).then_some(e.reset),
                overage: e.overage.as_ref().map(|o| OverageOut {
                    unit_amount: money::format_unit(o.unit_amount, currency),
                    per_units: Qty(o.per_units),
                    cap_amount: o.cap_amount.map(|c| money::format(c, currency)),
                }),
            }
        })
        .collect()
}

pub fn plan_out(v: &PlanVersion, default_plan: Option<&str>) -> Plan {
    let currency = v.currency().to_string();
    Plan {
        key: v.key.clone(),
        name: v.name.clone(),
        version: v.version,
        default: default_plan == Some(v.key.as_str()),
        prices: v.prices.iter().map(price_out).collect(),
        trial_days: v.trial_days,
        retention_days: v.retention_days,
        entitlements: entitlements_out(&v.features, &currency),
        created_at: v.created_at,
    }
}

pub fn plan_not_found() -> Error {
    Error::not_found("plan_not_found", "No such plan.")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// `POST`: the key must be new.
    Create,
    /// `PUT` / `plans apply`: create, or add a version if the definition changed.
    Upsert,
}

/// Writes a plan inside the caller's transaction. Returns the version now current and whether
/// anything was written.
pub async fn write(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    key: &str,
    input: &PlanInput,
    mode: WriteMode,
    now: DateTime<Utc>,
) -> Result<(i32, bool)> {
    super::features::validate_key(key, "key")?;
    let types = db::features::types(conn, tenant_id).await?;
    let def = plan::normalize(input, |f| types.get(f).copied())
        .map_err(|e| Error::invalid_param(e.code, &e.param, e.message))?;
    let def_json = serde_json::to_value(&def).map_err(anyhow::Error::from)?;

    let mut before = None;
    let version = match db::plans::insert_plan(conn, tenant_id, key).await? {
        Some(v) => v,
        None => {
            if mode == WriteMode::Create {
                return Err(Error::conflict(
                    "plan_exists",
                    format!(
                        "A plan with key `{key}` already exists; PUT /v1/plans/{key} makes a new version."
                    ),
                )
                .with_param("key"));
            }
            // Lock the plan so concurrent PUTs make consecutive versions.
            let latest = db::plans::lock_latest_version(conn, tenant_id, key).await?;
            let current = db::plans::definition(conn, tenant_id, key, latest).await?;
            let unchanged = serde_json::from_value::<Definition>(current.clone())
                .ok()
                .as_ref()
                == Some(&def);
            if unchanged {
                apply_default(conn, tenant_id, key, input.default).await?;
                return Ok((latest, false));
            }
            before = Some(version_json(key, latest, current));
            let next = latest + 1;
            db::plans::set_latest_version(conn, tenant_id, key, next).await?;
            next
        }
    };
    db::plans::insert_version(conn, tenant_id, key, version, &def, &def_json).await?;
    apply_default(conn, tenant_id, key, input.default).await?;
    let verb = if before.is_some() {
        "version_created"
    } else {
        "created"
    };
    let mut change =
        Change::new(Resource::Plan(key), verb).after(&version_json(key, version, def_json));
    change.before = before;
    audit::record(conn, tenant_id, change, now).await?;
    Ok((version, true))
}

/// A plan version in the audit log: its key, number and normalized definition.
fn version_json(key: &str, version: i32, definition: serde_json::Value) -> serde_json::Value {
    serde_json::json!({ "key": key, "version": version, "definition": definition })
}

async fn apply_default(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    key: &str,
    default: Option<bool>,
) -> Result<()> {
    match default {
        Some(true) => db::plans::make_default(conn, tenant_id, key).await?,
        Some(false) => db::plans::unset_default(conn, tenant_id, key).await?,
        None => {}
    }
    Ok(())
}

/// Writes a plan in its own transaction and returns it as stored, with whether anything was
/// written (the API's `POST` and `PUT`).
pub async fn save(
    db: &PgPool,
    plans: &PlanCache,
    tenant_id: &TenantId,
    key: &str,
    input: &PlanInput,
    mode: WriteMode,
    (origin, now): (&Origin, DateTime<Utc>),
) -> Result<(Plan, bool)> {
    let mut tx = audit::begin(db, origin).await?;
    let (version, written) = write(&mut tx, tenant_id, key, input, mode, now).await?;
    tx.commit().await?;
    let plan = get(db, plans, tenant_id, key, Some(version)).await?;
    Ok((plan, written))
}

/// A version of a plan as the API shows it (the newest when `version` is `None`).
pub async fn get(
    db: &PgPool,
    plans: &PlanCache,
    tenant_id: &TenantId,
    key: &str,
    version: Option<i32>,
) -> Result<Plan> {
    let mut conn = db.acquire().await?;
    let conn = &mut *conn;
    let version = match version {
        Some(v) => v,
        None => db::plans::latest_version(conn, tenant_id, key)
            .await?
            .ok_or_else(plan_not_found)?,
    };
    let v = plans
        .get(conn, tenant_id, key, version)
        .await?
        .ok_or_else(|| Error::not_found("plan_not_found", "No such plan or version."))?;
    let default_plan = db::plans::default_plan(conn, tenant_id).await?;
    Ok(plan_out(&v, default_plan.as_deref()))
}

/// The newest version of up to `limit` plans after `starting_after`, plus one more if there
/// is one (so the caller can tell `has_more`).
pub async fn list(
    db: &PgPool,
    plans: &PlanCache,
    tenant_id: &TenantId,
    starting_after: Option<&str>,
    limit: i64,
) -> Result<Vec<Plan>> {
    let mut conn = db.acquire().await?;
    let conn = &mut *conn;
    let rows = db::plans::list(conn, tenant_id, starting_after, limit + 1).await?;
    let default_plan = db::plans::default_plan(conn, tenant_id).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        if let Some(v) = plans
            .get(conn, tenant_id, &r.plan_key, r.latest_version)
            .await?
        {
            out.push(plan_out(&v, default_plan.as_deref()));
        }
    }
    Ok(out)
}
