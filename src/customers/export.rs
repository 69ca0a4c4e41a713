//! `GET /v1/customers/{id}/export`: everything Tollgate holds about a customer, as one
//! document (a GDPR subject access request): the customer, its members, its subscriptions and
//! their history, its invoices with their lines, its usage totals per period and the raw events
//! still kept, its alerts and its credit balance transactions.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::members::Member;
use super::Customer;
use crate::audit::{self, AuditEntry};
use crate::billing::credit::BalanceTransaction;
use crate::billing::invoice_items::InvoiceItem;
use crate::billing::views::{self, Invoice, Subscription};
use crate::db;
use crate::domain::qty::Qty;
use crate::entitlements::alerts::Alert;
use crate::entitlements::resolve::customer_not_found;
use crate::error::Result;
use crate::ids::TenantId;

/// As many rows as a customer can have of anything (the export is not paginated).
const ALL: i64 = i64::MAX;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    pub subscription: String,
    /// `created`, `renewed`, `plan_changed`, `status_changed` or `ended`.
    pub event: String,
    pub plan: String,
    pub plan_version: i32,
    pub interval: String,
    pub status: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsageTotal {
    pub feature: String,
    pub period_start: DateTime<Utc>,
    pub period_end: Option<DateTime<Utc>>,
    pub used: Qty,
    pub events: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsageEvent {
    pub id: String,
    pub feature: String,
    pub quantity: Qty,
    pub timestamp: DateTime<Utc>,
    pub member: Option<String>,
    pub billable: bool,
    #[schema(value_type = Option<Object>)]
    pub properties: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Export {
    pub customer: Customer,
    pub members: Vec<Member>,
    pub subscriptions: Vec<Subscription>,
    pub subscription_history: Vec<HistoryEntry>,
    pub invoices: Vec<Invoice>,
    /// One-off charges, pending or invoiced, newest first.
    pub invoice_items: Vec<InvoiceItem>,
    pub usage_totals: Vec<UsageTotal>,
    pub usage_events: Vec<UsageEvent>,
    pub alerts: Vec<Alert>,
    pub balance_transactions: Vec<BalanceTransaction>,
    /// Audit-log entries about the customer, its members, subscriptions and invoices, oldest
    /// first.
    pub audit_log: Vec<AuditEntry>,
}

/// The whole record of a customer, read in one snapshot.
pub async fn export(db: &PgPool, tenant_id: &TenantId, customer_id: &str) -> Result<Export> {
    let mut tx = db.begin().await?;
    // One consistent snapshot of every table.
    db::snapshot(&mut tx).await?;
    let customer = db::customers::get(&mut tx, tenant_id, customer_id)
        .await?
        .map(Customer::from)
        .ok_or_else(customer_not_found)?;
    let members = db::members::list(&mut tx, tenant_id, customer_id, None, ALL).await?;
    let subscriptions = db::subscriptions::for_customer(&mut tx, tenant_id, customer_id).await?;
    let history = db::subscriptions::history_for_customer(&mut tx, tenant_id, customer_id).await?;
    let invoice_rows =
        db::invoices::for_customer(&mut tx, tenant_id, customer_id, None, ALL).await?;
    let invoices = views::with_lines(&mut tx, tenant_id, invoice_rows).await?;
    let items = db::invoice_items::list(&mut tx, tenant_id, customer_id, false, None, ALL).await?;
    let totals = db::usage::history(
        &mut tx,
        tenant_id,
        customer_id,
        crate::domain::period::epoch(),
    )
    .await?;
    let events = db::usage::events_of(&mut tx, tenant_id, customer_id).await?;
    let alerts = db::alerts::for_customer(&mut tx, tenant_id, customer_id, None, ALL).await?;
    let transactions = db::credit::transactions(&mut tx, tenant_id, customer_id, None, ALL).await?;
    let audit_log = audit::about_customer(&mut tx, tenant_id, customer_id).await?;
    tx.commit().await?;
    Ok(Export {
        customer,
        members: members.into_iter().map(Member::from).collect(),
        subscriptions: subscriptions.into_iter().map(Subscription::from).collect(),
        subscription_history: history
            .into_iter()
            .map(|h| HistoryEntry {
                subscription: h.subscription_id,
                event: h.event,
                plan: h.plan_key,
                plan_version: h.plan_version,
                interval: h.interval,
                status: h.status,
                at: h.at,
            })
            .collect(),
        invoices,
        invoice_items: items.into_iter().map(InvoiceItem::from).collect(),
        usage_totals: totals
            .into_iter()
            .map(|t| UsageTotal {
                feature: t.feature_key,
                period_start: t.period_start,
                period_end: t.period_end,
                used: Qty(t.used),
                events: t.event_count,
            })
            .collect(),
        usage_events: events
            .into_iter()
            .map(|e| UsageEvent {
                id: e.event_id,
                feature: e.feature_key,
                quantity: Qty(e.quantity),
                timestamp: e.occurred_at,
                member: e.member_id,
                billable: e.billable,
                properties: e.properties,
            })
            .collect(),
        alerts: alerts.into_iter().map(Alert::from).collect(),
        balance_transactions: transactions
            .into_iter()
            .map(BalanceTransaction::from)
            .collect(),
        audit_log,
    })
}
