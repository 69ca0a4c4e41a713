//! Entitlements: may this customer use this feature, how much have they used, and recording
//! what they used — the hot path (`POST /v1/check`, `POST /v1/usage`) and its read-outs.

pub mod alerts;
pub mod check;
pub mod leases;
pub mod prepare;
pub mod readouts;
pub mod record;
pub mod resolve;
pub mod resolve_cache;
pub mod retention;
pub mod usage_job;

use std::sync::Arc;

use sqlx::PgPool;

use crate::clock::Clock;
use crate::db::check_batch::{CheckBatcher, CheckJob};
use crate::db::hot_pool::HotPool;
use crate::db::plans::PlanCache;
use crate::db::topology::Topology;
use resolve_cache::ResolveCache;
use usage_job::{UsageBatcher, UsageJob};

/// What the entitlement operations need: the general pool, the hot path's pool and check
/// batcher (`db::hot_pool`, `db::check_batch`), the plan-version cache and the clock.
pub struct Entitlements {
    pub db: PgPool,
    /// Connections for the hot path (no ping on return; see `db::hot_pool`).
    pub hot: Arc<HotPool>,
    /// Resolves concurrent checks together (see `db::check_batch`).
    pub checks: CheckBatcher,
    /// Records concurrent usage events together, one commit for all (see `usage_job`).
    pub usage: UsageBatcher,
    pub plans: Arc<PlanCache>,
    pub clock: Clock,
    /// Usage resolves kept for the next events of the same customers (see `resolve_cache`).
    pub resolved: Arc<ResolveCache>,
}

impl Entitlements {
    /// Builds the hot path's pool beside `db` (as many connections as `db` may open), with
    /// `check_workers` check statements and `usage_workers` usage statements in flight at once.
    pub fn new(
        db: PgPool,
        plans: Arc<PlanCache>,
        clock: Clock,
        check_workers: usize,
        usage_workers: usize,
    ) -> Self {
        let max = db.options().get_max_connections() as usize;
        let hot = Arc::new(HotPool::new((*db.connect_options()).clone(), max));
        let topology = Arc::new(Topology::default());
        let checks = CheckBatcher::new(
            hot.clone(),
            check_workers.clamp(1, max.max(1)),
            CheckJob {
                now: Clock::real_time,
                topology: topology.clone(),
            },
        );
        let resolved = Arc::new(ResolveCache::default());
        let usage = UsageBatcher::new(
            hot.clone(),
            usage_workers.clamp(1, max.max(1)),
            UsageJob {
                db: db.clone(),
                plans: plans.clone(),
                clock: clock.clone(),
                resolved: resolved.clone(),
                topology,
            },
        );
        Entitlements {
            db,
            hot,
            checks,
            usage,
            plans,
            clock,
            resolved,
        }
    }
}
