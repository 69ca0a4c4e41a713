//! The state every handler shares.

use std::sync::Arc;

use sqlx::PgPool;

use crate::clock::Clock;
use crate::config::Secret;
use crate::db::plans::PlanCache;
use crate::entitlements::Entitlements;
use crate::secrets::Secrets;

/// Everything a request handler needs. Cloned for every request and every middleware layer,
/// so it is one `Arc`: a clone is one reference-count increment.
#[derive(Clone)]
pub struct AppState(Arc<AppStateInner>);

pub struct AppStateInner {
    pub db: PgPool,
    pub clock: Clock,
    pub admin_token: Option<Secret>,
    /// The key stored secrets are sealed under (`TOLLGATE_SECRETS_KEY`), if any.
    pub secrets: Secrets,
    pub plans: Arc<PlanCache>,
    pub request_timeout: std::time::Duration,
    /// The hot path's service: its own pool, the check batcher, the plan cache.
    pub entitlements: Entitlements,
    /// Bytes of `POST /v1/usage/batch` bodies being handled at once, in KiB
    /// (`http::usage::record::admit_batch`).
    pub batch_admission: crate::http::usage::record::Admission,
}

impl std::ops::Deref for AppState {
    type Target = AppStateInner;

    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

impl AppState {
    pub fn new(db: PgPool, admin_token: Option<Secret>) -> Self {
        Self::with_timeout(db, admin_token, std::time::Duration::from_secs(30))
    }

    pub fn with_timeout(
        db: PgPool,
        admin_token: Option<Secret>,
        request_timeout: std::time::Duration,
    ) -> Self {
        Self::build(
            db,
            (admin_token, Secrets::none()),
            request_timeout,
            None,
            None,
        )
    }

    /// The state of a process: its pool, its admin token and secrets key, and how it serves.
    pub fn build(
        db: PgPool,
        (admin_token, secrets): (Option<Secret>, Secrets),
        request_timeout: std::time::Duration,
        check_workers: Option<usize>,
        usage_workers: Option<usize>,
    ) -> Self {
        // Check statements in flight at once: by default half the cores (at least one), so
        // concurrent checks share statements; measured on 2 cores, one in flight gave the
        // most checks per second (bench/README.md).
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let workers = check_workers.unwrap_or(cores / 2);
        // Usage statements in flight: a second runs beside the first only once enough events
        // wait (`usage_batch::PARALLEL_EVENTS`); fewer wait and go together (bench/README.md).
        let usage_workers = usage_workers.unwrap_or(cores.max(2));
        let plans = Arc::new(PlanCache::default());
        let entitlements =
            Entitlements::new(db.clone(), plans.clone(), Clock, workers, usage_workers);
        AppState(Arc::new(AppStateInner {
            entitlements,
            db,
            clock: Clock,
            admin_token,
            secrets,
            plans,
            request_timeout,
            batch_admission: crate::http::usage::record::Admission::new(
                crate::http::usage::record::BATCH_KIB_IN_FLIGHT,
            ),
        }))
    }
}
