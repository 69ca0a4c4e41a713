//! Dunning: a failed payment makes the subscription `past_due` and schedules
//! retries, by default 1, 3 and 5 days after the first failure (the tenant's
//! `dunning_retry_days`). The due-work runner starts each retry (so test clocks move it);
//! after the last retry fails the invoice becomes `uncollectible`, the subscription is
//! canceled and the customer falls back to the default plan.
//!
//! Failures are counted by attempt number (Stripe's `attempt_count`), so the same failure
//! reported twice — by the worker's payment call and by Stripe's `invoice.payment_failed`
//! webhook — is applied once.

use crate::ids::{InvoiceId, TenantId};
use chrono::{DateTime, Duration, Utc};
use sqlx::PgConnection;

use super::invoices;
use super::lifecycle;
use crate::billing::subscriptions as subs;
use crate::db;
use crate::db::due::DueRetry;
use crate::db::plans::PlanCache;
use crate::domain::status::{InvoiceStatus, SubscriptionStatus};
use crate::error::Result;

/// What applying a failure did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Already counted, or the invoice is no longer open: nothing changed.
    Ignored,
    /// A retry is scheduled.
    RetryAt(DateTime<Utc>),
    /// The last retry failed: the invoice is uncollectible.
    Exhausted,
}

/// A failed payment attempt, as Stripe or the retry schedule reports it.
#[derive(Debug, Clone, Copy)]
pub struct FailedAttempt<'a> {
    /// 1-based; `None` = the next one.
    pub attempt: Option<i32>,
    /// Why it failed, for the record.
    pub error: &'a str,
    pub at: DateTime<Utc>,
}

/// Applies a failed payment attempt of an invoice.
pub async fn payment_failed(
    conn: &mut PgConnection,
    plans: &PlanCache,
    tenant_id: &TenantId,
    invoice_id: &InvoiceId,
    failed: FailedAttempt<'_>,
) -> Result<Failure> {
    let FailedAttempt {
        attempt,
        error,
        at: now,
    } = failed;
    let inv = invoices::get(conn, tenant_id, invoice_id, true).await?;
    let state = db::invoices::payment_state(conn, tenant_id, invoice_id).await?;
    let attempt = attempt.unwrap_or(state.payment_attempts + 1);
    if inv.status != InvoiceStatus::Open || attempt <= state.payment_attempts {
        return Ok(Failure::Ignored);
    }
    let tenant = db::tenants::dunning_settings(conn, tenant_id).await?;
    let before = invoices::shown(conn, tenant_id, invoice_id).await?;
    let first_failed = state.payment_failed_at.unwrap_or(now);
    // Attempt n (n >= 1) failed: retry n is next, if the schedule has one.
    let retry_at = tenant
        .dunning_retry_days
        .get(attempt as usize - 1)
        .map(|days| (first_failed + Duration::days(*days as i64)).max(now));
    let outcome = match retry_at {
        Some(at) => Failure::RetryAt(at),
        None => Failure::Exhausted,
    };
    db::invoices::record_payment_failure(
        conn,
        tenant_id,
        invoice_id,
        &db::invoices::PaymentFailure {
            attempt,
            first_failed,
            retry_at,
            error,
            now,
        },
    )
    .await?;
    if outcome == Failure::Exhausted {
        invoices::audit(conn, tenant_id, &inv, "uncollectible", Some(&before), now).await?;
    }
    invoices::emit(
        conn,
        tenant_id,
        crate::webhooks::events::INVOICE_PAYMENT_FAILED,
        invoice_id,
    )
    .await?;

    if let Some(sub_id) = &inv.subscription_id {
        let sub = subs::get(conn, tenant_id, sub_id, true).await?;
        let live = sub.status.is_live();
        match outcome {
            Failure::Exhausted if live => {
                lifecycle::end_now(
                    conn,
                    plans,
                    tenant_id,
                    sub,
                    tenant.invoice_grace_minutes,
                    (now, "payment_failed", subs::Ending::Ended),
                )
                .await?;
            }
            Failure::RetryAt(_) if sub.status == SubscriptionStatus::Active => {
                subs::set_status(conn, tenant_id, sub_id, SubscriptionStatus::PastDue, now).await?;
            }
            _ => {}
        }
    }
    Ok(outcome)
}

/// Starts a claimed retry: an `invoice_payment` outbox row, or — when the tenant is not
/// connected to Stripe — a failed attempt at once.
pub async fn start_retry(conn: &mut PgConnection, plans: &PlanCache, due: &DueRetry) -> Result<()> {
    db::invoices::clear_next_attempt(conn, &due.tenant_id, &due.invoice_id).await?;
    let attempt = due.payment_attempts + 1;
    let queued = crate::db::outbox::enqueue(
        conn,
        &due.tenant_id,
        crate::domain::outbox::OutboxKind::InvoicePayment,
        due.invoice_id.as_str(),
        Some(serde_json::json!({ "attempt": attempt })),
    )
    .await?;
    if !queued {
        payment_failed(
            conn,
            plans,
            &due.tenant_id,
            &due.invoice_id,
            FailedAttempt {
                attempt: Some(attempt),
                error: "The tenant is not connected to Stripe.",
                at: due.at,
            },
        )
        .await?;
    }
    Ok(())
}
