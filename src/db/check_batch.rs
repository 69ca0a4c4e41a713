//! Batching of `/v1/check` lookups (see `gather`).
//!
//! A check needs one read: key, tenant, customer, live subscription and the feature's counter.
//! Concurrent checks are resolved together, up to [`MAX_BATCH`] in one statement
//! (`resolve::fetch_batch`), which reads each distinct caller (tenant, key or session,
//! default plan) once and each check's customer, subscription and counter. Nothing is cached,
//! so every check still sees the database as of its statement (a revoked key fails at once).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

pub use super::gather::SharedError;
use super::gather::{Gatherer, Job};
pub use super::resolve::Lookup;
use super::resolve::{fetch_batch_routed, ResolveRow};
use super::topology::Topology;
use std::sync::Arc;

/// The most checks one statement resolves.
pub const MAX_BATCH: usize = 64;

/// Gathers concurrent checks into one resolve statement.
pub type CheckBatcher = Gatherer<CheckJob>;

pub struct CheckJob {
    /// Real time, for the counter lookup (test clocks are read from the tenant row).
    pub now: fn() -> DateTime<Utc>,
    /// On Citus, one statement per tenant in the batch.
    pub topology: Arc<Topology>,
}

impl Job for CheckJob {
    type In = Lookup;
    /// The resolve row (`None`: no such tenant).
    type Out = Option<ResolveRow>;
    const MAX_BATCH: usize = MAX_BATCH;
    const STATEMENTS_METRIC: &'static str = "tollgate_check_statements_total";
    const REQUESTS_METRIC: &'static str = "tollgate_check_lookups_total";

    async fn run(
        &self,
        conn: &mut PgConnection,
        batch: &[Lookup],
    ) -> Result<Vec<Option<ResolveRow>>, sqlx::Error> {
        let lookups: Vec<&Lookup> = batch.iter().collect();
        let per_tenant = self.topology.is_citus(conn).await?;
        fetch_batch_routed(conn, &lookups, (self.now)(), per_tenant).await
    }
}
