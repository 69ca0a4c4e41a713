//! The invoice operations the API offers: read, list, pay, void, render as PDF, and the
//! upcoming invoice (a preview computed by the same code as the renewal).

use crate::ids::{InvoiceId, TenantId};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgPool;

use super::invoices::{self as inv, UsageWindow};
use super::lifecycle::base_lines;
use super::views::{self, Invoice, UpcomingInvoice};
use crate::audit::{self, Origin};
use crate::db;
use crate::db::plans::PlanCache;
use crate::domain::invoice as lines;
use crate::domain::money;
use crate::domain::period::next_period;
use crate::domain::status::SubscriptionStatus;
use crate::entitlements::resolve::customer_must_exist;
use crate::error::{Error, Result};

pub async fn get(db: &PgPool, tenant_id: &TenantId, invoice_id: &InvoiceId) -> Result<Invoice> {
    let mut conn = db.acquire().await?;
    views::load_invoice(&mut conn, tenant_id, invoice_id).await
}

/// Up to `limit` of a customer's invoices after `starting_after`, newest first, plus one
/// more if there is one (so the caller can tell `has_more`).
pub async fn for_customer(
    db: &PgPool,
    tenant_id: &TenantId,
    customer: &str,
    starting_after: Option<&str>,
    limit: i64,
) -> Result<Vec<Invoice>> {
    let mut conn = db.acquire().await?;
    customer_must_exist(&mut conn, tenant_id, customer).await?;
    let rows =
        db::invoices::for_customer(&mut conn, tenant_id, customer, starting_after, limit + 1)
            .await?;
    views::with_lines(&mut conn, tenant_id, rows).await
}

/// How an invoice is paid.
pub enum Payment {
    /// The money was collected outside Tollgate: recorded now (and told to Stripe).
    OutOfBand,
    /// Charged through Stripe: queued; the invoice turns paid (or dunning starts) when
    /// Stripe answers.
    Stripe,
}

pub async fn pay(
    db: &PgPool,
    origin: &Origin,
    tenant_id: &TenantId,
    invoice_id: &InvoiceId,
    how: Payment,
    now: DateTime<Utc>,
) -> Result<Invoice> {
    let mut tx = audit::begin(db, origin).await?;
    match how {
        Payment::OutOfBand => {
            inv::mark_paid(&mut tx, tenant_id, invoice_id, now, true).await?;
        }
        Payment::Stripe => {
            let row = inv::get(&mut tx, tenant_id, invoice_id, true).await?;
            inv::payable(&row)?;
            let attempts = db::invoices::payment_attempts(&mut tx, tenant_id, invoice_id).await?;
            let queued = crate::db::outbox::enqueue(
                &mut tx,
                tenant_id,
                crate::domain::outbox::OutboxKind::InvoicePayment,
                invoice_id.as_str(),
                Some(serde_json::json!({ "attempt": attempts + 1 })),
            )
            .await?;
            if !queued {
                return Err(Error::invalid_param(
                    "stripe_not_configured",
                    "paid_out_of_band",
                    "The tenant is not connected to Stripe (PATCH /v1/tenant with stripe.secret_key); pass {\"paid_out_of_band\": true} to record a payment made elsewhere.",
                ));
            }
        }
    }
    tx.commit().await?;
    get(db, tenant_id, invoice_id).await
}

pub async fn void(
    db: &PgPool,
    origin: &Origin,
    tenant_id: &TenantId,
    invoice_id: &InvoiceId,
    now: DateTime<Utc>,
) -> Result<Invoice> {
    let mut tx = audit::begin(db, origin).await?;
    inv::void(&mut tx, tenant_id, invoice_id, now).await?;
    tx.commit().await?;
    get(db, tenant_id, invoice_id).await
}

/// The invoice as a PDF: `(number, bytes)`.
pub async fn pdf(
    db: &PgPool,
    tenant_id: &TenantId,
    invoice_id: &InvoiceId,
    owner: Option<&str>,
) -> Result<(String, Vec<u8>)> {
    let invoice = get(db, tenant_id, invoice_id).await?;
    // Through a customer session, another customer's invoice does not exist.
    if owner.is_some_and(|c| c != invoice.customer) {
        return Err(views::invoice_not_found());
    }
    let mut conn = db.acquire().await?;
    let who = db::invoices::parties(&mut conn, tenant_id, &invoice.customer).await?;
    let day = |t: DateTime<Utc>| t.format("%Y-%m-%d").to_string();
    let doc = super::pdf::PdfInvoice {
        number: invoice.number.clone(),
        status: invoice.status.to_string(),
        seller: who.tenant_name,
        customer_id: invoice.customer.clone(),
        customer_name: who.name,
        customer_email: who.email,
        issued: day(invoice.finalized_at.unwrap_or(invoice.created_at)),
        due: invoice.due_date.map(day),
        period: format!(
            "{} to {}",
            day(invoice.period_start),
            day(invoice.period_end)
        ),
        currency: invoice.currency.clone(),
        lines: invoice
            .lines
            .iter()
            .map(|l| {
                (
                    l.description.clone(),
                    l.quantity.0.normalize().to_string(),
                    l.unit_amount.clone(),
                    l.amount.clone(),
                )
            })
            .collect(),
        subtotal: invoice.subtotal.clone(),
        total: invoice.total.clone(),
        credit_applied: invoice.credit_applied.clone(),
        credit_notes_total: invoice.credit_notes_total.clone(),
        amount_due: invoice.amount_due.clone(),
    };
    Ok((invoice.number, super::pdf::render(&doc)))
}

/// What the customer's next invoice will hold if nothing changes: the seat changes waiting
/// for it, the next period's fee in advance (after a scheduled change, on the plan it moves
/// to; seats at today's member count) and the current period's overage so far. Computed by
/// the renewal's own functions (`next_period`, `base_lines`, `overage_lines`).
pub async fn upcoming(
    db: &PgPool,
    plans: &PlanCache,
    tenant_id: &TenantId,
    customer: &str,
) -> Result<UpcomingInvoice> {
    let mut conn = db.acquire().await?;
    customer_must_exist(&mut conn, tenant_id, customer).await?;
    let sub = db::subscriptions::live_for_customer(&mut conn, tenant_id, customer)
        .await?
        .ok_or_else(|| {
            Error::not_found(
                "subscription_not_found",
                "The customer has no live subscription.",
            )
        })?;
    let missing = || Error::internal("subscription plan version missing");
    let plan = plans
        .of_subscription(&mut conn, tenant_id, &sub)
        .await?
        .ok_or_else(missing)?;
    let (next_plan, next_interval) = match (&sub.pending_plan_key, sub.pending_plan_version) {
        (Some(key), Some(version)) => {
            let plan = plans
                .get(&mut conn, tenant_id, key, version)
                .await?
                .ok_or_else(missing)?;
            let interval = sub.pending_interval.unwrap_or(sub.interval);
            // With the negotiated prices it moves to (SPEC §15).
            let plan = match &sub.pending_price_overrides {
                Some(o) => std::sync::Arc::new(plan.with_prices(interval, o)),
                None => plan,
            };
            (plan, interval)
        }
        _ => (plan.clone(), sub.interval),
    };
    let currency = next_plan.currency().to_string();
    let at = sub.current_period_end;
    let trial = sub.status == SubscriptionStatus::Trialing;
    let mut items = db::pending_lines::waiting(&mut conn, tenant_id, &sub.subscription_id).await?;
    // The customer's one-off charges waiting for its next invoice.
    items.extend(
        super::invoice_items::pending_lines(&mut conn, tenant_id, customer, &currency, (at, at))
            .await?,
    );
    if !sub.cancel_at_period_end {
        let (_, next_end) = next_period(sub.billing_anchor, at, sub.interval, next_interval, trial);
        // The seats of the next period are the members then; today's count is the forecast.
        let members = i64::from(db::members::seats(&mut conn, tenant_id, customer).await?);
        items.extend(base_lines(&next_plan, next_interval, members, at, next_end));
        let addons = super::addons::kept_at(&sub.addons, at);
        let period = (next_interval, at, next_end);
        items.extend(
            super::addons::period_lines(&mut conn, plans, tenant_id, &addons, period).await?,
        );
    }
    if !trial {
        let window = UsageWindow {
            start: sub.current_period_start,
            end: at,
            plan_key: sub.plan_key.clone(),
            plan_version: sub.plan_version,
            addons: sub.addons.0.clone(),
        };
        let overage = inv::overage_lines(
            &mut conn,
            plans,
            tenant_id,
            customer,
            &window,
            plan.currency(),
        )
        .await?;
        items.extend(overage);
    }
    // The discount, as the invoice will get it (SPEC §15).
    let discount = super::coupons::preview_line(
        &mut conn,
        tenant_id,
        &sub,
        (&items, &currency),
        (at, (sub.current_period_start, at)),
    )
    .await?;
    let subtotal = lines::total(&items);
    items.extend(discount);
    let total = lines::total(&items);
    Ok(UpcomingInvoice {
        customer: customer.to_string(),
        subscription: sub.subscription_id,
        lines: items
            .iter()
            .map(|l| views::line_out(l, &currency))
            .collect(),
        subtotal: money::format(subtotal, &currency),
        total: money::format(total, &currency),
        amount_due: money::format(total.max(Decimal::ZERO), &currency),
        currency,
        period_start: sub.current_period_start,
        period_end: at,
        next_invoice_at: at,
    })
}
