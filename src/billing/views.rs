//! Read models: subscriptions and invoices as the API shows them and as webhook payloads
//! carry them. One place, so an event's `data` and a `GET` of the same resource agree.

use crate::ids::{InvoiceId, SubscriptionId, TenantId};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::db::invoices::{self as db, InvoiceRow, LineRow};
use crate::db::subscriptions::SubscriptionRow;
use crate::domain::invoice::{self, Line, LineType};
use crate::domain::money;
use crate::domain::period::Interval;
use crate::domain::qty::Qty;
use crate::domain::status::{InvoiceStatus, SubscriptionStatus};
use crate::error::{Error, Result};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PendingChange {
    pub plan: String,
    pub interval: Option<Interval>,
    pub at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Subscription {
    #[schema(value_type = String, example = "sub_0192f3a45b6c7d8e9f00112233445566")]
    pub id: SubscriptionId,
    pub customer: String,
    pub plan: String,
    pub plan_version: i32,
    pub interval: Interval,
    pub status: SubscriptionStatus,
    pub current_period_start: DateTime<Utc>,
    pub current_period_end: DateTime<Utc>,
    pub trial_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub pending_change: Option<PendingChange>,
    /// When cancellation was asked for.
    pub canceled_at: Option<DateTime<Utc>>,
    /// When it ended (status `canceled`).
    pub ended_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// The coupon discounting its invoices (SPEC §15), or null.
    pub discount: Option<Discount>,
    /// Its add-ons (SPEC §15), by key; `removes_at` is set on one removed at the period end.
    pub addons: Vec<crate::domain::addon::Attached>,
    /// Its negotiated prices (SPEC §15), replacing the plan's for its interval; or null.
    pub price_overrides: Option<Vec<crate::catalog::plans::PriceOut>>,
}

/// A subscription's discount: its coupon, since when, and until when (null: no end; a `once`
/// coupon ends with the first invoice it discounts).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Discount {
    pub coupon: String,
    pub start: DateTime<Utc>,
    pub end: Option<DateTime<Utc>>,
}

impl From<SubscriptionRow> for Subscription {
    fn from(r: SubscriptionRow) -> Self {
        Subscription {
            discount: match (r.discount_coupon, r.discount_start) {
                (Some(coupon), Some(start)) => Some(Discount {
                    coupon,
                    start,
                    end: r.discount_end,
                }),
                _ => None,
            },
            pending_change: r.pending_plan_key.map(|plan| PendingChange {
                plan,
                interval: r.pending_interval,
                at: r.pending_at,
            }),
            id: r.subscription_id,
            customer: r.customer_id,
            plan: r.plan_key,
            plan_version: r.plan_version,
            interval: r.interval,
            status: r.status,
            current_period_start: r.current_period_start,
            current_period_end: r.current_period_end,
            trial_end: r.trial_end,
            cancel_at_period_end: r.cancel_at_period_end,
            canceled_at: r.canceled_at,
            ended_at: r.ended_at,
            created_at: r.created_at,
            addons: r.addons.0,
            price_overrides: r.price_overrides.map(|o| {
                o.iter()
                    .map(|p| crate::catalog::plans::price_out(&p.price()))
                    .collect()
            }),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InvoiceLine {
    #[serde(rename = "type")]
    pub kind: LineType,
    pub description: String,
    pub feature: Option<String>,
    pub quantity: Qty,
    pub unit_amount: String,
    pub amount: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Invoice {
    #[schema(value_type = String, example = "in_0192f3a45b6c7d8e9f00112233445566")]
    pub id: InvoiceId,
    /// `INV-000001`: per tenant, gapless.
    pub number: String,
    pub customer: String,
    #[schema(value_type = Option<String>)]
    pub subscription: Option<SubscriptionId>,
    pub status: InvoiceStatus,
    /// `subscription_create`, `subscription_cycle`, `subscription_update`,
    /// `subscription_cancel`, or `manual` (one-off charges invoiced at once).
    pub billing_reason: String,
    pub currency: String,
    pub lines: Vec<InvoiceLine>,
    pub subtotal: String,
    pub total: String,
    /// Credit balance used at finalization.
    pub credit_applied: String,
    /// The sum of the invoice's credit notes.
    pub credit_notes_total: String,
    /// `total − credit_applied − credit_notes_total`, never below zero (zero once paid).
    pub amount_due: String,
    pub due_date: Option<DateTime<Utc>>,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub finalized_at: Option<DateTime<Utc>>,
    /// When a draft is due to be finalized.
    pub finalizes_at: Option<DateTime<Utc>>,
    pub paid_at: Option<DateTime<Utc>>,
    pub paid_out_of_band: bool,
    pub voided_at: Option<DateTime<Utc>>,
}

pub fn line_out(l: &Line, currency: &str) -> InvoiceLine {
    InvoiceLine {
        kind: l.kind,
        description: l.description.clone(),
        feature: l.feature.clone(),
        quantity: Qty(l.quantity),
        unit_amount: money::format_unit(l.unit_amount, currency),
        amount: money::format(l.amount, currency),
        period_start: l.period_start,
        period_end: l.period_end,
    }
}

fn stored_line(l: LineRow, currency: &str) -> InvoiceLine {
    let line = Line {
        kind: l.kind,
        description: l.description,
        feature: l.feature_key,
        quantity: l.quantity,
        unit_amount: l.unit_amount,
        amount: l.amount,
        period_start: l.period_start,
        period_end: l.period_end,
    };
    line_out(&line, currency)
}

pub fn invoice_out(r: InvoiceRow, lines: Vec<LineRow>) -> Invoice {
    let c = r.currency.clone();
    Invoice {
        number: invoice::number(r.number),
        lines: lines.into_iter().map(|l| stored_line(l, &c)).collect(),
        subtotal: money::format(r.subtotal, &c),
        total: money::format(r.total, &c),
        amount_due: money::format(r.amount_due, &c),
        credit_applied: money::format(r.credit_applied, &c),
        credit_notes_total: money::format(r.credit_notes_total, &c),
        id: r.invoice_id,
        customer: r.customer_id,
        subscription: r.subscription_id,
        status: r.status,
        billing_reason: r.billing_reason,
        currency: r.currency,
        due_date: r.due_date,
        period_start: r.period_start,
        period_end: r.period_end,
        created_at: r.created_at,
        finalized_at: r.finalized_at,
        finalizes_at: r.finalize_at,
        paid_at: r.paid_at,
        paid_out_of_band: r.paid_out_of_band,
        voided_at: r.voided_at,
    }
}

/// Invoices with their lines (one query for all the lines).
pub async fn with_lines(
    conn: &mut sqlx::PgConnection,
    tenant_id: &TenantId,
    rows: Vec<InvoiceRow>,
) -> Result<Vec<Invoice>> {
    let ids: Vec<InvoiceId> = rows.iter().map(|r| r.invoice_id.clone()).collect();
    let mut by_invoice: std::collections::HashMap<InvoiceId, Vec<LineRow>> =
        std::collections::HashMap::new();
    for (id, line) in db::lines(conn, tenant_id, &ids).await? {
        by_invoice.entry(id).or_default().push(line);
    }
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let l = by_invoice.remove(&r.invoice_id).unwrap_or_default();
        out.push(invoice_out(r, l));
    }
    Ok(out)
}

/// An invoice with its lines, as the API shows it.
pub async fn load_invoice(
    conn: &mut sqlx::PgConnection,
    tenant_id: &TenantId,
    id: &InvoiceId,
) -> Result<Invoice> {
    let row = db::get(conn, tenant_id, id, false)
        .await?
        .ok_or_else(invoice_not_found)?;
    let mut v = with_lines(conn, tenant_id, vec![row]).await?;
    v.pop().ok_or_else(invoice_not_found)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UpcomingInvoice {
    pub customer: String,
    #[schema(value_type = String)]
    pub subscription: SubscriptionId,
    pub currency: String,
    /// The next period's base fee (in advance) and the current period's overage so far.
    pub lines: Vec<InvoiceLine>,
    pub subtotal: String,
    pub total: String,
    pub amount_due: String,
    /// The current period, whose overage is previewed.
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    /// When the invoice will be created (the end of the current period).
    pub next_invoice_at: DateTime<Utc>,
}

pub fn invoice_not_found() -> Error {
    Error::no_such::<InvoiceId>()
}
