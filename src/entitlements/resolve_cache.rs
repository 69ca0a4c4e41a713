//! What usage resolves returned, kept so that a customer's next events need no resolve
//! statement.
//!
//! Recording a usage event needs its caller's key, its tenant, its customer and the plan the
//! customer is on (`db::resolve`). Those change rarely, so the usage paths keep each resolve's
//! answer here and reuse it. A kept answer is never trusted on its own: every event carries
//! the stamps (row versions) of the rows its answer came from, and the recording statement
//! compares them with the rows as they are then (migration 20261130000002). An event resolved
//! against rows that have changed since is answered stale, with nothing written, and its
//! caller resolves it afresh and records it again; so is an event refused here on a kept
//! answer before it reached the database (`usage_job`, `record`). What changes on another
//! Tollgate instance is caught the same way.
//!
//! Entries expire after [`TTL`], which bounds both the memory of customers gone quiet and the
//! one way a stamp could compare equal to a changed row: a row version recurs only after 2^32
//! transactions. Checks do not use it: their answer depends on a counter, read afresh.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use quick_cache::sync::Cache;

use crate::db::resolve::ResolveRow;
use crate::ids::TenantId;
use crate::tenancy::Caller;

/// How long an answer is kept.
pub const TTL: Duration = Duration::from_secs(300);
/// How many answers are kept (each a few hundred bytes).
const CAPACITY: usize = 20_000;

/// The caller's tenant and key (empty when already authenticated), and the customer.
type Key = (TenantId, Vec<u8>, String);

pub struct ResolveCache {
    entries: Cache<Key, (ResolveRow, Instant)>,
    /// Answers used, and events found stale, since start.
    kept: AtomicU64,
    stale: AtomicU64,
}

impl Default for ResolveCache {
    fn default() -> Self {
        ResolveCache {
            entries: Cache::new(CAPACITY),
            kept: AtomicU64::new(0),
            stale: AtomicU64::new(0),
        }
    }
}

impl ResolveCache {
    /// The key a caller's resolve of `customer` is kept under: `None` for a customer session,
    /// whose resolve checks its expiry, which no stamp covers.
    pub fn key(caller: &Caller, customer: &str) -> Option<Key> {
        (!caller.is_session()).then(|| {
            (
                caller.tenant_id().clone(),
                caller.key_hash().to_vec(),
                customer.to_string(),
            )
        })
    }

    /// The kept answer, if it is recent enough.
    pub fn get(&self, key: &Key) -> Option<ResolveRow> {
        match self.entries.get(key) {
            Some((row, at)) if at.elapsed() < TTL => {
                self.kept.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("tollgate_usage_resolves_kept_total").increment(1);
                Some(row)
            }
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Keeps an answer that resolved to a customer (and, for a key to be checked, a valid key).
    pub fn put(&self, key: Key, row: &ResolveRow) {
        let usable = row.customer_id.is_some()
            && (key.1.is_empty() || row.key_id.is_some())
            && row.tenant_stamp.is_some()
            && row.customer_stamp.is_some();
        if usable {
            self.entries.insert(key, (row.clone(), Instant::now()));
        }
    }

    /// Forgets an answer an event was found stale against (or refused on).
    pub fn forget(&self, key: &Key) {
        self.stale.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("tollgate_usage_resolves_stale_total").increment(1);
        self.entries.remove(key);
    }

    /// (answers used, events found stale or refused on one) since start.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.kept.load(Ordering::Relaxed),
            self.stale.load(Ordering::Relaxed),
        )
    }
}
