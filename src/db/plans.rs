//! Plans and their immutable versions. Because a version never changes once written, loaded
//! versions are cached in memory for the life of the process.

use crate::domain::id::TenantId;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rust_decimal::Decimal;
use sqlx::PgConnection;

use crate::domain::entitlement::{Aggregation, Entitlement, FeatureType, Overage};
use crate::domain::period::{Interval, Reset};

use crate::domain::addon::{self, AddonVersion, Attached};
use crate::domain::plan::Charge;
pub use crate::domain::plan::{PlanFeature, PlanVersion, Price};
use crate::domain::seats::{SeatPricing, TiersMode};

type Key = (String, String, i32);

/// A plan version with add-ons stacked (SPEC §15): the tenant, the plan and version, and the
/// attached add-ons as the subscription row's `addons` reads as text.
type StackKey = (String, String, i32, String);

/// How many stacked plans are kept (one per plan and add-on combination in use).
const STACKED: usize = 10_000;

pub struct PlanCache {
    versions: RwLock<HashMap<Key, Arc<PlanVersion>>>,
    addons: RwLock<HashMap<Key, Arc<AddonVersion>>>,
    stacked: quick_cache::sync::Cache<StackKey, Arc<PlanVersion>>,
}

impl Default for PlanCache {
    fn default() -> Self {
        PlanCache {
            versions: RwLock::default(),
            addons: RwLock::default(),
            stacked: quick_cache::sync::Cache::new(STACKED),
        }
    }
}

impl PlanCache {
    /// A plan version if it is cached.
    pub fn cached(
        &self,
        tenant_id: &TenantId,
        plan_key: &str,
        version: i32,
    ) -> Option<Arc<PlanVersion>> {
        let key = (tenant_id.to_string(), plan_key.to_string(), version);
        self.versions.read().ok()?.get(&key).cloned()
    }

    /// A plan version, from the cache or the database. `None` if it does not exist.
    pub async fn get(
        &self,
        conn: &mut PgConnection,
        tenant_id: &TenantId,
        plan_key: &str,
        version: i32,
    ) -> Result<Option<Arc<PlanVersion>>, sqlx::Error> {
        let key = (tenant_id.to_string(), plan_key.to_string(), version);
        if let Ok(map) = self.versions.read() {
            if let Some(v) = map.get(&key) {
                return Ok(Some(v.clone()));
            }
        }
        let Some(loaded) = load_version(conn, tenant_id, plan_key, version).await? else {
            return Ok(None);
        };
        let loaded = Arc::new(loaded);
        if let Ok(mut map) = self.versions.write() {
            map.insert(key, loaded.clone());
        }
        Ok(Some(loaded))
    }
}

impl PlanCache {
    /// An add-on version, from the cache or the database. `None` if it does not exist.
    pub async fn addon(
        &self,
        conn: &mut PgConnection,
        tenant_id: &TenantId,
        addon_key: &str,
        version: i32,
    ) -> Result<Option<Arc<AddonVersion>>, sqlx::Error> {
        let key = (tenant_id.to_string(), addon_key.to_string(), version);
        if let Some(v) = self.addons.read().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(Some(v));
        }
        let Some(loaded) = super::addons::load_version(conn, tenant_id, addon_key, version).await?
        else {
            return Ok(None);
        };
        let loaded = Arc::new(loaded);
        if let Ok(mut map) = self.addons.write() {
            map.insert(key, loaded.clone());
        }
        Ok(Some(loaded))
    }

    /// A plan version with `attached` add-ons stacked on it (its entitlements; prices are the
    /// plan's). `None` if the plan version does not exist.
    pub async fn stack(
        &self,
        conn: &mut PgConnection,
        tenant_id: &TenantId,
        (plan_key, version): (&str, i32),
        attached: &[Attached],
    ) -> Result<Option<Arc<PlanVersion>>, sqlx::Error> {
        let Some(plan) = self.get(conn, tenant_id, plan_key, version).await? else {
            return Ok(None);
        };
        if attached.is_empty() {
            return Ok(Some(plan));
        }
        let mut addons = Vec::with_capacity(attached.len());
        for a in attached {
            let addon = self
                .addon(conn, tenant_id, &a.addon, a.version)
                .await?
                .ok_or_else(|| sqlx::Error::ColumnDecode {
                    index: "subscriptions.addons".into(),
                    source: format!("add-on `{}` version {} is missing", a.addon, a.version).into(),
                })?;
            addons.push((addon, a.quantity));
        }
        let refs: Vec<(&AddonVersion, i64)> = addons.iter().map(|(a, q)| (&**a, *q)).collect();
        Ok(Some(Arc::new(addon::stack(&plan, &refs))))
    }

    /// [`Self::stack`] for the resolve of a check or a usage event, whose subscription row's
    /// `addons` come as text: kept by that text, so that a customer's next lookups only hash
    /// it. `cached_only`: `None` unless kept (no connection to load it with).
    pub async fn stacked(
        &self,
        conn: Option<&mut PgConnection>,
        tenant_id: &TenantId,
        (plan_key, version): (&str, i32),
        addons: &str,
    ) -> Result<Option<Arc<PlanVersion>>, sqlx::Error> {
        let key = (
            tenant_id.to_string(),
            plan_key.to_string(),
            version,
            addons.to_string(),
        );
        if let Some(v) = self.stacked.get(&key) {
            return Ok(Some(v));
        }
        let Some(conn) = conn else {
            return Ok(None);
        };
        let attached: Vec<Attached> =
            serde_json::from_str(addons).map_err(|e| sqlx::Error::ColumnDecode {
                index: "subscriptions.addons".into(),
                source: Box::new(e),
            })?;
        let stacked = self
            .stack(conn, tenant_id, (plan_key, version), &attached)
            .await?;
        if let Some(v) = &stacked {
            self.stacked.insert(key, v.clone());
        }
        Ok(stacked)
    }

    /// What a subscription is on, as billing sees it: its plan version with its add-ons'
    /// entitlements stacked and its negotiated prices in place of the plan's (SPEC §15).
    pub async fn of_subscription(
        &self,
        conn: &mut PgConnection,
        tenant_id: &TenantId,
        sub: &super::subscriptions::SubscriptionRow,
    ) -> Result<Option<Arc<PlanVersion>>, sqlx::Error> {
        let Some(plan) = self
            .stack(
                conn,
                tenant_id,
                (&sub.plan_key, sub.plan_version),
                &sub.addons,
            )
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(match &sub.price_overrides {
            Some(overrides) => Arc::new(plan.with_prices(sub.interval, overrides)),
            None => plan,
        }))
    }
}

pub async fn latest_version(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    plan_key: &str,
) -> Result<Option<i32>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT latest_version FROM plans WHERE tenant_id = $1 AND plan_key = $2",
        tenant_id.as_str(),
        plan_key
    )
    .fetch_optional(&mut *conn)
    .await
}

pub async fn load_version(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    plan_key: &str,
    version: i32,
) -> Result<Option<PlanVersion>, sqlx::Error> {
    let Some(v) = sqlx::query!(
        "SELECT name, trial_days, retention_days, definition, created_at FROM plan_versions
         WHERE tenant_id = $1 AND plan_key = $2 AND version = $3",
        tenant_id.as_str(),
        plan_key,
        version
    )
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let prices = sqlx::query!(
        "SELECT interval, amount, currency, per_seat, min_seats, tiers, tiers_mode,
                stripe_price_id
         FROM plan_prices
         WHERE tenant_id = $1 AND plan_key = $2 AND version = $3 ORDER BY interval, per_seat",
        tenant_id.as_str(),
        plan_key,
        version
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|p| {
        let pricing = match (p.amount, p.tiers, p.tiers_mode) {
            (Some(amount), None, None) => SeatPricing::PerSeat(amount),
            (None, Some(tiers), Some(mode)) => SeatPricing::Tiered {
                mode: super::decode("plan_prices.tiers_mode", &mode, TiersMode::parse)?,
                tiers: serde_json::from_value(tiers).map_err(|e| sqlx::Error::ColumnDecode {
                    index: "plan_prices.tiers".into(),
                    source: Box::new(e),
                })?,
            },
            _ => {
                return Err(sqlx::Error::ColumnDecode {
                    index: "plan_prices.amount".into(),
                    source: "a price has an amount or tiers".into(),
                })
            }
        };
        let charge = match (p.per_seat, pricing) {
            (false, SeatPricing::PerSeat(amount)) => Charge::Flat(amount),
            (true, pricing) => Charge::Seats {
                pricing,
                min_seats: i64::from(p.min_seats),
            },
            (false, SeatPricing::Tiered { .. }) => {
                return Err(sqlx::Error::ColumnDecode {
                    index: "plan_prices.tiers".into(),
                    source: "only a per-seat price has tiers".into(),
                })
            }
        };
        Ok(Price {
            interval: super::decode("plan_prices.interval", &p.interval, Interval::parse)?,
            charge,
            currency: p.currency,
            stripe_price_id: p.stripe_price_id,
        })
    })
    .collect::<Result<_, sqlx::Error>>()?;
    let features = sqlx::query!(
        "SELECT e.feature_key, e.enabled, e.limit_value, e.reset, e.overage_unit_amount,
                e.overage_per_units, e.overage_cap_amount, f.type, f.aggregation,
                f.stripe_meter_event_name
         FROM plan_entitlements e
         JOIN features f ON f.tenant_id = $1 AND f.feature_key = e.feature_key
         WHERE e.tenant_id = $1 AND e.plan_key = $2 AND e.version = $3
         ORDER BY e.feature_key COLLATE \"C\"",
        tenant_id.as_str(),
        plan_key,
        version
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|e| {
        Ok(PlanFeature {
            entitlement: Entitlement {
                feature_type: super::decode("features.type", &e.r#type, FeatureType::parse)?,
                aggregation: super::decode(
                    "features.aggregation",
                    &e.aggregation,
                    Aggregation::parse,
                )?,
                enabled: e.enabled,
                limit: e.limit_value,
                reset: super::decode("plan_entitlements.reset", &e.reset, Reset::parse)?,
                overage: e.overage_unit_amount.map(|unit_amount| Overage {
                    unit_amount,
                    // NULL (never written: plans store it) reads as the API default, 1.
                    per_units: e.overage_per_units.unwrap_or(Decimal::ONE),
                    cap_amount: e.overage_cap_amount,
                }),
            },
            feature: e.feature_key,
            stripe_meter_event_name: e.stripe_meter_event_name,
        })
    })
    .collect::<Result<_, sqlx::Error>>()?;
    Ok(Some(PlanVersion {
        key: plan_key.to_string(),
        version,
        name: v.name,
        trial_days: v.trial_days,
        retention_days: v.retention_days,
        prices,
        features,
        definition: v.definition,
        created_at: v.created_at,
    }))
}

pub async fn exists(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    plan_key: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT EXISTS (SELECT 1 FROM plans WHERE tenant_id = $1 AND plan_key = $2) AS \"e!\"",
        tenant_id.as_str(),
        plan_key
    )
    .fetch_one(&mut *conn)
    .await
}

/// Creates a plan at version 1; `None` when the key exists.
pub async fn insert_plan(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    key: &str,
) -> Result<Option<i32>, sqlx::Error> {
    sqlx::query_scalar!(
        "INSERT INTO plans (tenant_id, plan_key, latest_version) VALUES ($1, $2, 1)
         ON CONFLICT (tenant_id, plan_key) DO NOTHING RETURNING latest_version",
        tenant_id.as_str(),
        key
    )
    .fetch_optional(&mut *conn)
    .await
}

/// The newest version, locked so that concurrent writers make consecutive versions.
pub async fn lock_latest_version(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    key: &str,
) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT latest_version FROM plans WHERE tenant_id = $1 AND plan_key = $2 FOR UPDATE",
        tenant_id.as_str(),
        key
    )
    .fetch_one(&mut *conn)
    .await
}

/// A version's stored definition (JSON).
pub async fn definition(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    key: &str,
    version: i32,
) -> Result<serde_json::Value, sqlx::Error> {
    sqlx::query_scalar!(
                "SELECT definition FROM plan_versions WHERE tenant_id = $1 AND plan_key = $2 AND version = $3",
        tenant_id.as_str(),
        key,
        version
    )
    .fetch_one(&mut *conn)
    .await
}

pub async fn set_latest_version(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    key: &str,
    version: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
                "UPDATE plans SET latest_version = $3, updated_at = now() WHERE tenant_id = $1 AND plan_key = $2",
        tenant_id.as_str(),
        key,
        version
    )
    .execute(&mut *conn)
    .await
    .map(drop)
}

/// Writes a version: its row, its prices and its entitlements.
pub async fn insert_version(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    key: &str,
    version: i32,
    def: &crate::domain::plan::Definition,
    def_json: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO plan_versions (tenant_id, plan_key, version, name, trial_days, retention_days, definition)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        tenant_id.as_str(),
        key,
        version,
        def.name,
        def.trial_days,
        def.retention_days,
        def_json
    )
    .execute(&mut *conn)
    .await?;
    for p in &def.prices {
        let tiers = p
            .tiers
            .as_ref()
            .map(serde_json::to_value)
            .transpose()
            .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        sqlx::query!(
            "INSERT INTO plan_prices (tenant_id, plan_key, version, interval, amount, currency,
                 per_seat, min_seats, tiers, tiers_mode, stripe_price_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            tenant_id.as_str(),
            key,
            version,
            p.interval.as_str(),
            p.amount,
            p.currency,
            p.per_seat,
            p.min_seats,
            tiers,
            p.tiers_mode.map(TiersMode::as_str),
            p.stripe_price_id
        )
        .execute(&mut *conn)
        .await?;
    }
    for e in &def.entitlements {
        let o = e.overage.as_ref();
        sqlx::query!(
            "INSERT INTO plan_entitlements (tenant_id, plan_key, version, feature_key, enabled, limit_value,
                 reset, overage_unit_amount, overage_per_units, overage_cap_amount)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            tenant_id.as_str(),
            key,
            version,
            e.feature,
            e.enabled,
            e.limit,
            e.reset.as_str(),
            o.map(|o| o.unit_amount),
            o.map(|o| o.per_units),
            o.and_then(|o| o.cap_amount)
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Makes `key` the tenant's default plan.
pub async fn make_default(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    key: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE tenants SET default_plan = $2, updated_at = now() WHERE tenant_id = $1",
        tenant_id.as_str(),
        key
    )
    .execute(&mut *conn)
    .await
    .map(drop)
}

/// Removes `key` as the tenant's default plan, if it is.
pub async fn unset_default(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    key: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE tenants SET default_plan = NULL, updated_at = now()
                 WHERE tenant_id = $1 AND default_plan = $2",
        tenant_id.as_str(),
        key
    )
    .execute(&mut *conn)
    .await
    .map(drop)
}

pub async fn default_plan(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT default_plan FROM tenants WHERE tenant_id = $1",
        tenant_id.as_str()
    )
    .fetch_one(&mut *conn)
    .await
}

pub struct PlanKeyRow {
    pub plan_key: String,
    pub latest_version: i32,
}

/// A page of plan keys with their newest versions, by key.
pub async fn list(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    starting_after: Option<&str>,
    limit: i64,
) -> Result<Vec<PlanKeyRow>, sqlx::Error> {
    sqlx::query_as!(
        PlanKeyRow,
        "SELECT plan_key, latest_version FROM plans
         WHERE tenant_id = $1 AND ($2::text IS NULL OR plan_key > $2)
         ORDER BY plan_key LIMIT $3",
        tenant_id.as_str(),
        starting_after,
        limit
    )
    .fetch_all(&mut *conn)
    .await
}

/// The tenant's default plan and its newest version, if the customer exists (not deleted)
/// and the tenant has a default.
pub async fn default_for_customer(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    customer_id: &str,
) -> Result<Option<PlanKeyRow>, sqlx::Error> {
    sqlx::query_as!(
        PlanKeyRow,
        r#"SELECT p.plan_key, p.latest_version
           FROM tenants t JOIN plans p ON p.tenant_id = $1 AND p.plan_key = t.default_plan
           JOIN customers c ON c.tenant_id = $1 AND c.customer_id = $2
           WHERE t.tenant_id = $1 AND c.deleted_at IS NULL"#,
        tenant_id.as_str(),
        customer_id
    )
    .fetch_optional(&mut *conn)
    .await
}
