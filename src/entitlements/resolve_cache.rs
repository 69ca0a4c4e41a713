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

use std::future::Future;
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
pub type Key = (TenantId, Vec<u8>, String);

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

    /// Per key, the kept answer (unless `fresh`), and for the others (no key, none kept, or
    /// `fresh`) what `fetch` returns for their places, in one go; those answers are kept. Each
    /// with whether it was a kept one.
    pub async fn get_or_fetch<F, Fut, E>(
        &self,
        keys: &[Option<Key>],
        fresh: bool,
        fetch: F,
    ) -> Result<Vec<(Option<ResolveRow>, bool)>, E>
    where
        F: FnOnce(Vec<usize>) -> Fut,
        Fut: Future<Output = Result<Vec<Option<ResolveRow>>, E>>,
    {
        let mut rows: Vec<Option<(Option<ResolveRow>, bool)>> = keys
            .iter()
            .map(|key| match key {
                Some(key) if !fresh => self.get(key).map(|row| (Some(row), true)),
                _ => None,
            })
            .collect();
        let missing: Vec<usize> = (0..keys.len()).filter(|&j| rows[j].is_none()).collect();
        if !missing.is_empty() {
            let fetched = fetch(missing.clone()).await?;
            for (&j, row) in missing.iter().zip(fetched) {
                if let (Some(key), Some(row)) = (&keys[j], &row) {
                    self.put(key.clone(), row);
                }
                rows[j] = Some((row, false));
            }
        }
        Ok(rows
            .into_iter()
            .map(|row| row.unwrap_or((None, false)))
            .collect())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::id::PrefixedId;
    use crate::tenancy::DeferredKey;
    use rust_decimal::Decimal;

    fn tenant() -> TenantId {
        TenantId::from_uuid(uuid::Uuid::nil())
    }

    fn row(customer: Option<&str>, key_id: Option<&str>, stamped: bool) -> ResolveRow {
        ResolveRow {
            tenant_id: tenant(),
            mode: "test".into(),
            default_plan: Some("p".into()),
            warning_threshold: Decimal::new(8, 1),
            critical_threshold: Decimal::new(95, 2),
            test_clock_now: None,
            key_id: key_id.map(str::to_string),
            customer_id: customer.map(str::to_string),
            plan_key: None,
            plan_version: None,
            addons: None,
            interval: None,
            billing_anchor: None,
            current_period_start: None,
            current_period_end: None,
            default_version: Some(1),
            counter_start: None,
            counter_used: None,
            tenant_stamp: stamped.then(|| "7/9/".to_string()),
            customer_stamp: stamped.then(|| "12/".to_string()),
        }
    }

    fn key_caller(session: bool) -> Caller {
        Caller::Deferred(DeferredKey {
            tenant_id: tenant(),
            key_hash: vec![1, 2, 3],
            session,
        })
    }

    #[test]
    fn keeps_only_answers_that_can_be_checked() {
        let cache = ResolveCache::default();
        let key = ResolveCache::key(&key_caller(false), "u1").unwrap();
        // No customer, an unchecked key, no stamps: nothing kept.
        cache.put(key.clone(), &row(None, Some("key_1"), true));
        cache.put(key.clone(), &row(Some("u1"), None, true));
        cache.put(key.clone(), &row(Some("u1"), Some("key_1"), false));
        assert!(cache.get(&key).is_none());
        cache.put(key.clone(), &row(Some("u1"), Some("key_1"), true));
        let kept = cache.get(&key).unwrap();
        assert_eq!(kept.customer_stamp.as_deref(), Some("12/"));
        assert_eq!(cache.stats(), (1, 0));
        // Forgotten once found stale.
        cache.forget(&key);
        assert!(cache.get(&key).is_none());
        assert_eq!(cache.stats(), (1, 1));
    }

    #[test]
    fn answers_are_kept_per_tenant_key_and_customer_and_never_for_sessions() {
        let cache = ResolveCache::default();
        let by_key = ResolveCache::key(&key_caller(false), "u1").unwrap();
        cache.put(by_key.clone(), &row(Some("u1"), Some("key_1"), true));
        let other_customer = ResolveCache::key(&key_caller(false), "u2").unwrap();
        assert!(cache.get(&other_customer).is_none());
        let mut other_key = by_key.clone();
        other_key.1 = vec![9];
        assert!(cache.get(&other_key).is_none());
        assert!(ResolveCache::key(&key_caller(true), "u1").is_none());
    }
}
