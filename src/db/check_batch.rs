//! Batching of `/v1/check` lookups (see `gather`).
//!
//! A check needs one read: key, tenant, customer, live subscription and the feature's counter.
//! Concurrent checks are resolved together, up to [`MAX_BATCH`] in one statement
//! (`resolve::fetch_batch`), which reads each distinct caller (tenant, key or session,
//! default plan) once and each check's customer, subscription and counter. Nothing is cached,
//! so every check still sees the database as of its statement (a revoked key fails at once).
//!
//! On Citus the batch is one statement per tenant, each on the tenant's node; a statement
//! the database refuses (its node is down) fails only its own tenant's checks.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

pub use super::gather::SharedError;
use super::gather::{Gatherer, Job};
pub use super::resolve::Lookup;
use super::resolve::{fetch_batch, ResolveRow};
use super::topology::{by_tenant, refused_alone, Topology};
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
    /// The resolve row (`None`: no such tenant), or why its tenant's statement failed.
    type Out = Result<Option<ResolveRow>, SharedError>;
    const MAX_BATCH: usize = MAX_BATCH;
    const STATEMENTS_METRIC: &'static str = "tollgate_check_statements_total";
    const REQUESTS_METRIC: &'static str = "tollgate_check_lookups_total";

    async fn run(
        &self,
        conn: &mut PgConnection,
        batch: &[Lookup],
    ) -> Result<Vec<Self::Out>, sqlx::Error> {
        let now = (self.now)();
        if !self.topology.is_citus(conn).await? {
            let lookups: Vec<&Lookup> = batch.iter().collect();
            let rows = fetch_batch(conn, &lookups, now, false).await?;
            return Ok(rows.into_iter().map(Ok).collect());
        }
        let mut out: Vec<Self::Out> = batch.iter().map(|_| Ok(None)).collect();
        for group in by_tenant(batch, |l| l.tenant_id.as_str()) {
            let lookups: Vec<&Lookup> = group.iter().map(|&i| &batch[i]).collect();
            match fetch_batch(conn, &lookups, now, true).await {
                Ok(rows) => {
                    for (i, row) in group.into_iter().zip(rows) {
                        out[i] = Ok(row);
                    }
                }
                // Refused by the database (the session goes on): this tenant's checks fail,
                // the others' go on.
                Err(err) if refused_alone(&err) => {
                    let err = Arc::new(err);
                    for i in group {
                        out[i] = Err(err.clone());
                    }
                }
                Err(err) => return Err(err),
            }
        }
        Ok(out)
    }
}
