//! Entitlements: may this customer use this feature, how much have they used, and recording
//! what they used — the hot path (`POST /v1/check`, `POST /v1/usage`) and its read-outs.

pub mod alerts;
pub mod check;
pub mod leases;
pub mod readouts;
pub mod record;
pub mod resolve;
pub mod retention;

use std::sync::Arc;

use sqlx::PgPool;

use crate::clock::Clock;
use crate::db::check_batch::CheckBatcher;
use crate::db::hot_pool::HotPool;
use crate::db::plans::PlanCache;

/// What the entitlement operations need: the general pool, the hot path's pool and check
/// batcher (`db::hot_pool`, `db::check_batch`), the plan-version cache and the clock.
pub struct Entitlements {
    pub db: PgPool,
    /// Connections for the hot path (no ping on return; see `db::hot_pool`).
    pub hot: Arc<HotPool>,
    /// Resolves concurrent checks together (see `db::check_batch`).
    pub checks: CheckBatcher,
    pub plans: Arc<PlanCache>,
    pub clock: Clock,
}

impl Entitlements {
    /// Builds the hot path's pool beside `db` (as many connections as `db` may open) and
    /// `check_workers` check statements in flight at once.
    pub fn new(db: PgPool, plans: Arc<PlanCache>, clock: Clock, check_workers: usize) -> Self {
        let max = db.options().get_max_connections() as usize;
        let hot = Arc::new(HotPool::new((*db.connect_options()).clone(), max));
        let checks = CheckBatcher::new(
            hot.clone(),
            check_workers.clamp(1, max.max(1)),
            Clock::real_time,
        );
        Entitlements {
            db,
            hot,
            checks,
            plans,
            clock,
        }
    }
}
