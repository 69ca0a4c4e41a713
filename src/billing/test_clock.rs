//! Test clocks: a test-mode tenant's clock follows real time until first advanced, then
//! stands still where it was last moved to. Advancing runs, in time order, all the work that
//! falls due on the way (the same runner the worker uses in real time).

use chrono::{DateTime, Duration, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use super::due::{self, Processed, Scope};
use crate::audit::{self, Actor, Change, Origin, Resource};
use crate::clock::Clock;
use crate::db;
use crate::db::plans::PlanCache;
use crate::entitlements::retention::{self, PurgeScope};
use crate::error::{Error, Result};
use crate::tenancy::TenantCtx;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TestClock {
    pub now: DateTime<Utc>,
    /// Whether the clock has been advanced (and so stands still).
    pub frozen: bool,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdvanceInput {
    pub to: DateTime<Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Advanced {
    pub now: DateTime<Utc>,
    pub frozen: bool,
    /// The work done on the way.
    pub processed: Processed,
}

/// How far one advance may move the clock (the due work is done within the request).
const MAX_ADVANCE_DAYS: i64 = 366 * 5;

fn test_mode_only(ctx: &TenantCtx) -> Result<()> {
    if ctx.mode != "test" {
        return Err(Error::forbidden(
            "live_mode",
            "Test clocks exist only for test-mode tenants.",
        ));
    }
    Ok(())
}

pub fn get(ctx: &TenantCtx, clock: &Clock) -> Result<TestClock> {
    test_mode_only(ctx)?;
    Ok(TestClock {
        now: ctx.now(clock),
        frozen: ctx.test_clock_now.is_some(),
    })
}

/// Moves the tenant's clock forward to `to`, running everything due on the way.
pub async fn advance(
    db: &PgPool,
    plans: &PlanCache,
    clock: &Clock,
    (ctx, origin): (&TenantCtx, &Origin),
    to: DateTime<Utc>,
) -> Result<Advanced> {
    test_mode_only(ctx)?;
    let to = to.trunc_subsecs(6);
    // One advance per tenant at a time: this transaction holds the tenant's advisory lock
    // until the clock is set (and releases it if the request is dropped).
    let mut guard = audit::begin(db, origin).await?;
    db::tenants::lock_test_clock(&mut guard, &ctx.tenant_id).await?;
    // Read the clock under the lock (a concurrent advance may just have moved it).
    let current = db::tenants::test_clock(&mut guard, &ctx.tenant_id).await?;
    let now = clock.tenant_now(current);
    if to < now {
        return Err(Error::invalid_param(
            "clock_backwards",
            "to",
            format!("The clock is at {now}; it only moves forward."),
        ));
    }
    if to - now > Duration::days(MAX_ADVANCE_DAYS) {
        return Err(Error::invalid_param(
            "advance_too_far",
            "to",
            "One advance may move the clock at most 5 years.",
        ));
    }
    // Freeze the clock where it is first, so the real-time worker leaves this tenant alone.
    if current.is_none() {
        let mut conn = db.acquire().await?;
        db::tenants::freeze_test_clock(&mut conn, &ctx.tenant_id, now).await?;
    }
    // The work due on the way is the worker's, done for this request.
    let worker = origin.as_actor(Actor::Worker);
    let scope = (Scope::Tenant(&ctx.tenant_id), &worker);
    let mut processed = due::run(db, plans, scope, to, u32::MAX).await?;
    let purge = PurgeScope::Tenant(&ctx.tenant_id, to);
    processed.usage_events_purged = retention::purge(db, purge, u32::MAX).await?;
    db::tenants::set_test_clock(&mut guard, &ctx.tenant_id, to).await?;
    let change = Change::new(Resource::TestClock(&ctx.tenant_id), "advanced")
        .before(&serde_json::json!({ "now": now }))
        .after(&serde_json::json!({ "now": to }));
    audit::record(&mut guard, &ctx.tenant_id, change, to).await?;
    guard.commit().await?;
    Ok(Advanced {
        now: to,
        frozen: true,
        processed,
    })
}
