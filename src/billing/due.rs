//! The due-work runner: period ends (trial ends, renewals, scheduled changes, cancellations)
//! draft invoice finalizations and dunning payment retries, in time order.
//!
//! Each item is claimed with `FOR UPDATE SKIP LOCKED` and processed in its own transaction,
//! and its due condition is part of the claim (a renewed subscription is no longer due), so any
//! number of runners — worker processes, `serve` processes, a test-clock advance — can run at
//! once without doing anything twice.

use crate::ids::TenantId;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::dunning;
use super::invoices;
use super::lifecycle::{self, PeriodEndKind};
use crate::audit::{self, Origin};
use crate::db;
use crate::db::plans::PlanCache;
use crate::error::Result;

/// Which tenants a run covers.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// One tenant (a test-clock advance).
    Tenant(&'a TenantId),
    /// Every tenant whose clock follows real time (the worker).
    RealTime,
}

/// What one run did.
#[derive(Debug, Default, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Processed {
    pub trial_ends: u32,
    pub renewals: u32,
    pub scheduled_changes: u32,
    pub cancellations: u32,
    pub invoices_finalized: u32,
    /// Dunning: payment retries started.
    pub payment_retries: u32,
    /// Raw usage events purged past their plan's retention (a test-clock advance purges too).
    pub usage_events_purged: u64,
}

impl Processed {
    pub fn total(&self) -> u32 {
        self.trial_ends
            + self.renewals
            + self.scheduled_changes
            + self.cancellations
            + self.invoices_finalized
            + self.payment_retries
    }

    pub fn add(&mut self, other: &Processed) {
        self.trial_ends += other.trial_ends;
        self.renewals += other.renewals;
        self.scheduled_changes += other.scheduled_changes;
        self.cancellations += other.cancellations;
        self.invoices_finalized += other.invoices_finalized;
        self.payment_retries += other.payment_retries;
        self.usage_events_purged += other.usage_events_purged;
    }
}

enum Step {
    PeriodEnd(PeriodEndKind),
    Finalized,
    PaymentRetry,
}

/// Tenants looked at per pass over every tenant on real time.
const TENANTS_PER_PASS: i64 = 100;

/// Runs every item due at or before `until` in `scope`, earliest first within each tenant,
/// until none is left (or `max_items` were done). For every tenant on real time, the tenants
/// with work due are found first (a read that locks nothing), then each one's work is claimed
/// and run within that tenant — on Citus, on the tenant's node.
/// Every change it makes is logged as `origin`'s (the worker's; inside a test-clock advance,
/// with the advance's request id).
pub async fn run(
    db: &PgPool,
    plans: &PlanCache,
    (scope, origin): (Scope<'_>, &Origin),
    until: DateTime<Utc>,
    max_items: u32,
) -> Result<Processed> {
    let mut done = Processed::default();
    match scope {
        Scope::Tenant(tenant) => {
            let claim = db::due::Claim {
                tenant,
                real_time_only: false,
                until,
            };
            run_tenant(db, plans, (claim, origin), max_items, &mut done).await?;
        }
        Scope::RealTime => {
            for tenant in db::due::due_tenants(db, until, TENANTS_PER_PASS).await? {
                if done.total() >= max_items {
                    break;
                }
                let claim = db::due::Claim {
                    tenant: &tenant,
                    real_time_only: true,
                    until,
                };
                let left = max_items - done.total();
                run_tenant(db, plans, (claim, origin), left, &mut done).await?;
            }
        }
    }
    Ok(done)
}

/// Runs one tenant's due items, earliest first, until none is left or `max_items` were done.
async fn run_tenant(
    db: &PgPool,
    plans: &PlanCache,
    (claim, origin): (db::due::Claim<'_>, &Origin),
    max_items: u32,
    done: &mut Processed,
) -> Result<()> {
    let mut n = 0;
    while n < max_items {
        n += 1;
        match next(db, plans, (claim, origin)).await? {
            None => break,
            Some(Step::Finalized) => done.invoices_finalized += 1,
            Some(Step::PaymentRetry) => done.payment_retries += 1,
            Some(Step::PeriodEnd(kind)) => match kind {
                PeriodEndKind::TrialEnd => done.trial_ends += 1,
                PeriodEndKind::Renewal => done.renewals += 1,
                PeriodEndKind::ScheduledChange => done.scheduled_changes += 1,
                PeriodEndKind::Cancellation => done.cancellations += 1,
            },
        }
    }
    Ok(())
}

/// Claims and processes the tenant's earliest due item, in one transaction.
async fn next(
    db: &PgPool,
    plans: &PlanCache,
    (claim, origin): (db::due::Claim<'_>, &Origin),
) -> Result<Option<Step>> {
    let mut tx = audit::begin(db, origin).await?;
    // The earliest due period end and the earliest due finalization, each claimed (locked)
    // unless another runner holds it; the earlier of the two is processed, and the other's
    // lock is released at commit.
    let sub = db::due::claim_period_end(&mut tx, claim).await?;
    let draft = db::due::claim_finalization(&mut tx, claim).await?;
    let retry = db::due::claim_payment_retry(&mut tx, claim).await?;

    // The earliest item goes first; on a tie, period ends, then finalizations (a renewal's
    // draft may then be finalized in the same run), then payment retries.
    let retry_at = retry.as_ref().map(|r| r.at);
    let sub = sub.filter(|(_, s)| {
        let t = s.current_period_end;
        draft.as_ref().is_none_or(|d| t <= d.finalize_at) && retry_at.is_none_or(|r| t <= r)
    });
    let draft = draft.filter(|d| retry_at.is_none_or(|r| d.finalize_at <= r));
    // A failure is logged with the item it failed on (and then fails the run).
    let step = if let Some((tenant_id, sub)) = sub {
        let id = sub.subscription_id.clone();
        let at = sub.current_period_end;
        let ended = async {
            let grace = db::tenants::invoice_grace_minutes(&mut tx, &tenant_id).await?;
            lifecycle::period_end(&mut tx, plans, &tenant_id, sub, grace).await
        }
        .await
        .inspect_err(|e| {
            tracing::warn!(tenant = %tenant_id, subscription = %id, due = %at, error = %e, "period end failed");
        })?;
        Step::PeriodEnd(ended)
    } else if let Some(d) = draft {
        invoices::finalize(&mut tx, plans, &d.tenant_id, &d.invoice_id, d.finalize_at)
            .await
            .inspect_err(|e| {
                tracing::warn!(tenant = %d.tenant_id, invoice = %d.invoice_id, due = %d.finalize_at, error = %e, "invoice finalization failed");
            })?;
        Step::Finalized
    } else if let Some(r) = retry {
        dunning::start_retry(&mut tx, plans, &r)
            .await
            .inspect_err(|e| {
                tracing::warn!(tenant = %r.tenant_id, invoice = %r.invoice_id, due = %r.at, error = %e, "payment retry failed");
            })?;
        Step::PaymentRetry
    } else {
        return Ok(None);
    };
    tx.commit().await?;
    Ok(Some(step))
}
