//! Resolving which plan (and billing cycle) a customer is on right now, and who is calling,
//! in one statement (`db::resolve`).

use crate::ids::TenantId;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool};

use super::resolve_cache::ResolveCache;
use super::Entitlements;
use crate::db::hot_pool::LazyConn;
use crate::db::plans::{PlanCache, PlanVersion};
use crate::db::resolve::{self, Lookup, ResolveRow, Stamps};
use crate::domain::period::{BillingCycle, Interval, Period};
use crate::error::Result;
use crate::tenancy::{invalid_key, Caller, TenantCtx};

/// What a customer is entitled to right now.
pub struct Resolved {
    /// The customer (for a customer session's check, the session's).
    pub customer_id: String,
    /// `None`: no live subscription and no default plan.
    pub plan: Option<Arc<PlanVersion>>,
    pub billing: Option<BillingCycle>,
    /// The newest counter of the asked-for feature that starts no later than now.
    pub latest_counter: Option<(DateTime<Utc>, Decimal)>,
    /// Whether a feature was asked for (and so `latest_counter` is meaningful).
    pub counter_read: bool,
    /// What a usage event of this customer is checked against when it is recorded (`None`
    /// from a check's resolve).
    pub stamps: Option<Stamps>,
}

impl Resolved {
    /// The counter for the period starting at `start`, if the resolve query already read it
    /// (`None`: it must be read separately).
    pub fn counter_at(&self, start: DateTime<Utc>) -> Option<Decimal> {
        if !self.counter_read {
            return None;
        }
        match self.latest_counter {
            None => Some(Decimal::ZERO),
            Some((s, used)) if s == start => Some(used),
            // The newest counter is older than this period: nothing counted in it yet.
            Some((s, _)) if s < start => Some(Decimal::ZERO),
            Some(_) => None,
        }
    }
}

pub use crate::tenancy::customer_not_found;

/// PostgreSQL text cannot hold NUL; such ids match nothing anyway.
pub(super) fn no_nul(s: &str) -> String {
    if s.contains('\0') {
        String::new()
    } else {
        s.to_string()
    }
}

/// `customer_not_found` unless the customer exists (and is not deleted).
pub async fn customer_must_exist(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    customer_id: &str,
) -> Result<()> {
    if crate::db::customers::exists(conn, tenant_id, customer_id).await? {
        Ok(())
    } else {
        Err(customer_not_found())
    }
}

impl Entitlements {
    /// Resolves, in one query on `conn`: the caller's key (when deferred to here), the
    /// tenant, the customer, its plan (the live subscription's version, else the tenant's
    /// default plan's newest) and, if `feature` is given, that feature's newest counter.
    /// Unknown or deleted customers are `customer_not_found`.
    pub async fn resolve_on(
        &self,
        conn: &mut PgConnection,
        caller: &Caller,
        customer_id: &str,
        feature: Option<&str>,
    ) -> Result<(TenantCtx, Resolved)> {
        let row = resolve::fetch(
            conn,
            caller.tenant_id(),
            caller.key_hash(),
            customer_id,
            feature,
            self.clock.real_now(),
        )
        .await?;
        self.finish(Some(conn), caller, row, feature.is_some())
            .await
    }

    /// [`Self::resolve_on`] for a check, through the check batcher: the same answer,
    /// resolved in one statement together with other concurrent checks.
    pub async fn resolve_batched(
        &self,
        caller: &Caller,
        customer_id: &str,
        feature: &str,
    ) -> Result<(TenantCtx, Resolved)> {
        let row = self
            .checks
            .submit(Lookup {
                tenant_id: caller.tenant_id().clone(),
                key_hash: caller.key_hash().to_vec(),
                session: caller.is_session(),
                customer: no_nul(customer_id),
                feature: no_nul(feature),
            })
            .await
            .and_then(|row| row)?;
        self.finish(None, caller, row, true).await
    }

    /// [`Self::resolve_on`] for several customers of an authenticated tenant at once (usage
    /// batches), without counters: one answer per customer, in order, and whether it was a
    /// kept one (`resolve_cache`). Kept answers are used unless `fresh`; the others come from
    /// one statement, and are kept.
    pub async fn resolve_many(
        &self,
        conn: &mut LazyConn<'_>,
        ctx: &TenantCtx,
        customers: &[&str],
        fresh: bool,
    ) -> Result<Vec<(Result<Resolved>, bool)>> {
        let caller = Caller::Ready(ctx.clone());
        let keys: Vec<_> = customers
            .iter()
            .map(|c| ResolveCache::key(&caller, c))
            .collect();
        let lookup = &mut *conn;
        let rows = self
            .resolved
            .get_or_fetch(&keys, fresh, |missing| async move {
                let names: Vec<String> = missing.iter().map(|&j| no_nul(customers[j])).collect();
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                resolve::fetch_customers(lookup.get().await?, &ctx.tenant_id, &names).await
            })
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for (row, kept) in rows {
            let resolved = if kept {
                // A kept answer's plan is most likely cached too: no connection unless not.
                self.finish(None, &caller, row, false).await.map(|(_, r)| r)
            } else {
                self.finish(Some(conn.get().await?), &caller, row, false)
                    .await
                    .map(|(_, r)| r)
            };
            out.push((resolved, kept));
        }
        Ok(out)
    }

    /// [`Self::resolve_on`] for an authenticated tenant, without a counter.
    pub async fn resolve(
        &self,
        conn: &mut PgConnection,
        ctx: &TenantCtx,
        customer_id: &str,
    ) -> Result<Resolved> {
        let caller = Caller::Ready(ctx.clone());
        self.resolve_on(conn, &caller, customer_id, None)
            .await
            .map(|(_, r)| r)
    }

    /// [`finish`] with this service's plan cache and pool.
    async fn finish(
        &self,
        conn: Option<&mut PgConnection>,
        caller: &Caller,
        row: Option<ResolveRow>,
        counter_read: bool,
    ) -> Result<(TenantCtx, Resolved)> {
        finish(&self.plans, &self.db, conn, caller, row, counter_read).await
    }
}

/// Turns a resolve row into the caller's tenant and the customer's plan. `conn` is used to
/// load a plan version missing from the cache (`db`, the general pool, when `None`).
pub(super) async fn finish(
    plans: &PlanCache,
    db: &PgPool,
    conn: Option<&mut PgConnection>,
    caller: &Caller,
    row: Option<ResolveRow>,
    counter_read: bool,
) -> Result<(TenantCtx, Resolved)> {
    let refused = || {
        if caller.is_session() {
            crate::tenancy::sessions::invalid_session()
        } else {
            invalid_key()
        }
    };
    let row = match (caller, row) {
        (_, None) => return Err(refused()),
        (Caller::Deferred(_), Some(r)) if r.key_id.is_none() => return Err(refused()),
        (_, Some(r)) => r,
    };
    let ctx = match caller {
        Caller::Ready(ctx) => ctx.clone(),
        Caller::Deferred(_) => TenantCtx {
            tenant_id: row.tenant_id.clone(),
            mode: row.mode.clone(),
            key_id: row.key_id.clone().unwrap_or_default(),
            default_plan: row.default_plan.clone(),
            warning_threshold: row.warning_threshold,
            critical_threshold: row.critical_threshold,
            test_clock_now: row.test_clock_now,
        },
    };
    let Some(customer_id) = row.customer_id.clone() else {
        return Err(customer_not_found());
    };
    let stamps = row
        .tenant_stamp
        .zip(row.customer_stamp)
        .map(|(tenant, customer)| Stamps {
            key_hash: caller.stamp_key().map(<[u8]>::to_vec),
            tenant,
            customer,
        });
    let latest_counter = row.counter_start.zip(row.counter_used);
    if let (Some(key), Some(version), Some(interval), Some(anchor), Some(start), Some(end)) = (
        row.plan_key,
        row.plan_version,
        row.interval,
        row.billing_anchor,
        row.current_period_start,
        row.current_period_end,
    ) {
        let plan = match &row.addons {
            None => load_plan(plans, db, conn, &ctx.tenant_id, &key, version).await?,
            Some(addons) => {
                load_stacked(plans, db, conn, &ctx.tenant_id, (&key, version), addons).await?
            }
        };
        let interval = crate::db::decode("subscriptions.interval", &interval, Interval::parse)?;
        let billing = Some(BillingCycle {
            anchor,
            interval,
            current: Period {
                start,
                end: Some(end),
            },
        });
        return Ok((
            ctx,
            Resolved {
                customer_id,
                plan,
                billing,
                latest_counter,
                counter_read,
                stamps,
            },
        ));
    }
    let plan = match (&row.default_plan, row.default_version) {
        (Some(key), Some(version)) => {
            load_plan(plans, db, conn, &ctx.tenant_id, key, version).await?
        }
        _ => None,
    };
    Ok((
        ctx,
        Resolved {
            customer_id,
            plan,
            billing: None,
            latest_counter,
            counter_read,
            stamps,
        },
    ))
}

/// The plan version with the subscription's add-ons stacked (`addons` as the resolve read
/// them), kept by that text.
async fn load_stacked(
    plans: &PlanCache,
    db: &PgPool,
    conn: Option<&mut PgConnection>,
    tenant_id: &TenantId,
    plan: (&str, i32),
    addons: &str,
) -> Result<Option<Arc<PlanVersion>>> {
    if let Some(stacked) = plans.stacked(None, tenant_id, plan, addons).await? {
        return Ok(Some(stacked));
    }
    match conn {
        Some(conn) => Ok(plans.stacked(Some(conn), tenant_id, plan, addons).await?),
        None => {
            let mut conn = db.acquire().await?;
            Ok(plans
                .stacked(Some(&mut conn), tenant_id, plan, addons)
                .await?)
        }
    }
}

async fn load_plan(
    plans: &PlanCache,
    db: &PgPool,
    conn: Option<&mut PgConnection>,
    tenant_id: &TenantId,
    key: &str,
    version: i32,
) -> Result<Option<Arc<PlanVersion>>> {
    if let Some(plan) = plans.cached(tenant_id, key, version) {
        return Ok(Some(plan));
    }
    match conn {
        Some(conn) => Ok(plans.get(conn, tenant_id, key, version).await?),
        None => {
            let mut conn = db.acquire().await?;
            Ok(plans.get(&mut conn, tenant_id, key, version).await?)
        }
    }
}
