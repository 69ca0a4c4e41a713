//! Invoices in the database: creation with per-tenant gapless numbers, overage lines from the
//! usage counters, finalization (which closes the billed usage period), payment and voiding.

use crate::ids::{InvoiceId, SubscriptionId, TenantId};
use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;

use super::views::invoice_not_found;
use crate::audit::{self, Change, Resource};
use crate::db;
pub use crate::db::invoices::{InvoiceRow, LineRow};
use crate::db::plans::PlanCache;
use crate::domain::invoice::{Line, LineType};
use crate::domain::money;
use crate::domain::status::{InvoiceStatus, SubscriptionStatus};
use crate::error::{Error, Result};

/// The ended period whose usage an invoice bills in arrears, at a plan version's prices.
#[derive(Debug, Clone)]
pub struct UsageWindow {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub plan_key: String,
    pub plan_version: i32,
    /// The add-ons attached in it, whose entitlements stack on the plan's (SPEC §15).
    pub addons: Vec<crate::domain::addon::Attached>,
}

pub struct NewInvoice<'a> {
    pub tenant_id: &'a TenantId,
    pub customer_id: &'a str,
    pub subscription_id: Option<&'a SubscriptionId>,
    /// `subscription_create`, `subscription_cycle`, `subscription_update`, `subscription_cancel`.
    pub billing_reason: &'a str,
    pub currency: &'a str,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub lines: Vec<Line>,
    /// Overage of this window is added as `overage` lines (and recomputed on finalization).
    pub usage: Option<UsageWindow>,
    /// When the draft is finalized; at or before `now`: at once.
    pub finalize_at: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

/// Creates an invoice in the caller's transaction, numbered `last + 1` for the tenant (the
/// number row stays locked until the transaction ends, so numbers are gapless under
/// concurrency). Finalized at once when `finalize_at <= now`.
pub async fn create(
    conn: &mut PgConnection,
    plans: &PlanCache,
    new: NewInvoice<'_>,
) -> Result<InvoiceRow> {
    let number = db::invoices::next_number(conn, new.tenant_id).await?;
    let invoice_id: InvoiceId = crate::ids::new();
    db::invoices::insert(
        conn,
        &db::invoices::NewInvoiceRow {
            tenant_id: new.tenant_id,
            invoice_id: &invoice_id,
            number,
            customer_id: new.customer_id,
            subscription_id: new.subscription_id,
            billing_reason: new.billing_reason,
            currency: new.currency,
            period_start: new.period_start,
            period_end: new.period_end,
            usage: new
                .usage
                .as_ref()
                .map(|u| (u.start, u.end, u.plan_key.as_str(), u.plan_version)),
            usage_addons: new.usage.as_ref().map_or(&[], |u| u.addons.as_slice()),
            finalize_at: new.finalize_at,
            now: new.now,
        },
    )
    .await?;
    db::invoices::insert_lines(conn, new.tenant_id, &invoice_id, &new.lines).await?;
    // Whatever waits for the subscription's next invoice (prorated seat changes) is on this one.
    if let Some(subscription_id) = new.subscription_id {
        let waiting =
            db::pending_lines::claim(conn, new.tenant_id, subscription_id, &invoice_id).await?;
        db::invoices::insert_lines(conn, new.tenant_id, &invoice_id, &waiting).await?;
    }
    // So is every one-off charge of the customer waiting in its currency (SPEC §15).
    db::invoice_items::claim(
        conn,
        (new.tenant_id, new.customer_id),
        &invoice_id,
        new.currency,
        (new.period_start, new.period_end),
    )
    .await?;
    if let Some(window) = &new.usage {
        let lines = overage_lines(
            conn,
            plans,
            new.tenant_id,
            new.customer_id,
            window,
            new.currency,
        )
        .await?;
        db::invoices::insert_lines(conn, new.tenant_id, &invoice_id, &lines).await?;
    }
    // The subscription's discount, as of the lines so far (SPEC §15).
    if let Some(subscription_id) = new.subscription_id {
        super::coupons::discount_new_invoice(
            conn,
            new.tenant_id,
            (&invoice_id, subscription_id),
            (new.currency, (new.period_start, new.period_end)),
            new.now,
        )
        .await?;
    }
    let row = db::invoices::refresh_totals(conn, new.tenant_id, &invoice_id).await?;
    audit(conn, new.tenant_id, &row, "created", None, new.now).await?;
    if new.finalize_at <= new.now {
        return finalize(conn, plans, new.tenant_id, &invoice_id, new.now).await;
    }
    Ok(row)
}

/// An invoice as the API shows it, with its lines (for the audit log).
pub async fn shown(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    invoice_id: &InvoiceId,
) -> Result<super::views::Invoice> {
    super::views::load_invoice(conn, tenant_id, invoice_id).await
}

/// The audit entry of an invoice change: `invoice.<verb>`, the invoice after it as the API
/// shows it, and before it when given.
pub async fn audit(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    row: &InvoiceRow,
    verb: &str,
    before: Option<&super::views::Invoice>,
    at: DateTime<Utc>,
) -> Result<()> {
    let after = shown(conn, tenant_id, &row.invoice_id).await?;
    let mut change = Change::new(Resource::Invoice(&row.invoice_id), verb)
        .customer(&row.customer_id)
        .after(&after);
    if let Some(before) = before {
        change = change.before(before);
    }
    audit::record(conn, tenant_id, change, at).await
}

/// One `overage` line per feature for the usage of `window`, at the window's plan version's
/// prices: every counter period that ended within `(start, end]` (a billing-period counter,
/// and the days or calendar months that closed in it), each capped by its own spend cap and
/// rounded up to whole packages. Features reported to Stripe meters are billed by Stripe.
pub async fn overage_lines(
    conn: &mut PgConnection,
    plans: &PlanCache,
    tenant_id: &TenantId,
    customer_id: &str,
    window: &UsageWindow,
    currency: &str,
) -> Result<Vec<Line>> {
    let Some(plan) = plans
        .stack(
            conn,
            tenant_id,
            (&window.plan_key, window.plan_version),
            &window.addons,
        )
        .await?
    else {
        return Ok(Vec::new());
    };
    if !plan
        .features
        .iter()
        .any(|f| f.entitlement.overage.is_some())
    {
        return Ok(Vec::new());
    }
    let counters =
        db::invoices::ended_counters(conn, tenant_id, customer_id, window.start, window.end)
            .await?;
    // Per feature: units over the limit, packages and the (capped) charge, summed over its
    // counter periods (several for daily or monthly resets).
    struct Acc {
        feature: String,
        name: String,
        unit: Option<String>,
        over: Decimal,
        packages: Decimal,
        billed: Decimal,
    }
    let mut acc: Vec<Acc> = Vec::new();
    for c in counters {
        let Some(ent) = plan.entitlement(&c.feature_key) else {
            continue;
        };
        let (Some(overage), Some(limit)) = (&ent.overage, ent.limit) else {
            continue;
        };
        let over = c.used.saturating_sub(limit).max(Decimal::ZERO);
        if over <= Decimal::ZERO {
            continue;
        }
        let billed = ent.overage_billed(c.used).unwrap_or(Decimal::ZERO);
        let packages = over
            .checked_div(overage.per_units)
            .unwrap_or(Decimal::ZERO)
            .ceil();
        match acc.last_mut().filter(|a| a.feature == c.feature_key) {
            Some(a) => {
                a.over = a.over.saturating_add(over);
                a.packages = a.packages.saturating_add(packages);
                a.billed = a.billed.saturating_add(billed);
            }
            None => acc.push(Acc {
                feature: c.feature_key,
                name: c.name,
                unit: c.unit,
                over,
                packages,
                billed,
            }),
        }
    }
    let mut lines = Vec::with_capacity(acc.len());
    for a in acc {
        let Some(overage) = plan
            .entitlement(&a.feature)
            .and_then(|e| e.overage.as_ref())
        else {
            continue;
        };
        let unit = a.unit.as_deref().unwrap_or("units");
        let per = if overage.per_units == Decimal::ONE {
            unit.to_string()
        } else {
            format!("{} {unit}", overage.per_units.normalize())
        };
        let mut description = format!(
            "{} overage: {} {unit} over the limit, {} per {per}",
            a.name,
            a.over.normalize(),
            money::format_unit(overage.unit_amount, currency),
        );
        if let Some(cap) = overage.cap_amount {
            description.push_str(&format!(", capped at {}", money::format(cap, currency)));
        }
        lines.push(Line {
            kind: LineType::Overage,
            description,
            feature: Some(a.feature),
            quantity: a.packages,
            unit_amount: overage.unit_amount,
            amount: money::round_to_minor(a.billed, currency),
            period_start: window.start,
            period_end: window.end,
        });
    }
    lines.retain(|l| !l.amount.is_zero());
    Ok(lines)
}

/// Finalizes a draft: recomputes its overage (late usage in the grace period lands on it),
/// closes the usage period so later events in it are refused, fixes the totals and sets the
/// due date. A zero amount due is paid at once. The customer row is held `FOR UPDATE`
/// meanwhile, which usage recording waits for (see migration 3).
pub async fn finalize(
    conn: &mut PgConnection,
    plans: &PlanCache,
    tenant_id: &TenantId,
    invoice_id: &InvoiceId,
    now: DateTime<Utc>,
) -> Result<InvoiceRow> {
    let inv = get(conn, tenant_id, invoice_id, true).await?;
    if inv.status != InvoiceStatus::Draft {
        return Err(Error::conflict(
            "invoice_not_draft",
            "Only a draft invoice can be finalized.",
        ));
    }
    let before = shown(conn, tenant_id, invoice_id).await?;
    if let (Some(start), Some(end), Some(key), Some(version)) = (
        inv.usage_period_start,
        inv.usage_period_end,
        inv.usage_plan_key.clone(),
        inv.usage_plan_version,
    ) {
        db::invoices::close_usage_before(conn, tenant_id, &inv.customer_id, end).await?;
        db::invoices::delete_overage_lines(conn, tenant_id, invoice_id).await?;
        let window = UsageWindow {
            start,
            end,
            plan_key: key,
            plan_version: version,
            addons: db::invoices::usage_addons(conn, tenant_id, invoice_id).await?,
        };
        let lines = overage_lines(
            conn,
            plans,
            tenant_id,
            &inv.customer_id,
            &window,
            &inv.currency,
        )
        .await?;
        db::invoices::insert_lines(conn, tenant_id, invoice_id, &lines).await?;
    }
    super::coupons::recompute(
        conn,
        tenant_id,
        invoice_id,
        (&inv.currency, (inv.period_start, inv.period_end)),
    )
    .await?;
    let totals = db::invoices::refresh_totals(conn, tenant_id, invoice_id).await?;
    super::balance::settle_at_finalization(conn, tenant_id, &totals, now).await?;
    let row = db::invoices::mark_finalized(conn, tenant_id, invoice_id, now).await?;
    audit(conn, tenant_id, &row, "finalized", Some(&before), now).await?;
    emit(
        conn,
        tenant_id,
        crate::webhooks::events::INVOICE_FINALIZED,
        invoice_id,
    )
    .await?;
    if row.status == InvoiceStatus::Paid {
        emit(
            conn,
            tenant_id,
            crate::webhooks::events::INVOICE_PAID,
            invoice_id,
        )
        .await?;
    } else {
        crate::db::outbox::enqueue(
            conn,
            tenant_id,
            crate::domain::outbox::OutboxKind::Invoice,
            invoice_id.as_str(),
            None,
        )
        .await?;
    }
    Ok(row)
}

/// Emits an invoice event with the invoice as the API shows it.
pub async fn emit(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    event_type: &str,
    invoice_id: &InvoiceId,
) -> Result<()> {
    // The invoice with its lines is two queries: only when an endpoint will get it.
    if !crate::webhooks::events::wanted(conn, tenant_id, event_type).await? {
        return Ok(());
    }
    let invoice = super::views::load_invoice(conn, tenant_id, invoice_id).await?;
    crate::webhooks::events::emit(conn, tenant_id, event_type, &invoice).await
}

/// The lines of several invoices, as `(invoice_id, line)`.
pub async fn lines(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    invoice_ids: &[InvoiceId],
) -> Result<Vec<(InvoiceId, LineRow)>> {
    Ok(db::invoices::lines(conn, tenant_id, invoice_ids).await?)
}

/// An invoice, locked `FOR UPDATE` when asked; `invoice_not_found` if missing.
pub async fn get(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    invoice_id: &InvoiceId,
    for_update: bool,
) -> Result<InvoiceRow> {
    db::invoices::get(conn, tenant_id, invoice_id, for_update)
        .await?
        .ok_or_else(invoice_not_found)
}

/// Checks that a (locked) invoice can be paid: open, or uncollectible.
pub fn payable(inv: &InvoiceRow) -> Result<()> {
    match inv.status {
        InvoiceStatus::Open | InvoiceStatus::Uncollectible => {}
        InvoiceStatus::Paid => {
            return Err(Error::conflict(
                "invoice_already_paid",
                "The invoice is already paid.",
            ))
        }
        InvoiceStatus::Draft => {
            return Err(Error::conflict(
                "invoice_not_open",
                "A draft invoice cannot be paid until it is finalized.",
            ))
        }
        InvoiceStatus::Void => {
            return Err(Error::conflict(
                "invoice_void",
                "A void invoice cannot be paid.",
            ))
        }
    }
    Ok(())
}

/// Marks an open (or uncollectible) invoice paid: out of band, or collected through Stripe.
/// Dunning stops, a `past_due` subscription becomes `active` again, and `invoice.paid` is
/// emitted. A payment recorded out of band is also told to Stripe (when the invoice is there).
pub async fn mark_paid(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    invoice_id: &InvoiceId,
    now: DateTime<Utc>,
    out_of_band: bool,
) -> Result<InvoiceRow> {
    let inv = get(conn, tenant_id, invoice_id, true).await?;
    payable(&inv)?;
    let before = shown(conn, tenant_id, invoice_id).await?;
    let row = db::invoices::mark_paid(conn, tenant_id, invoice_id, now, out_of_band).await?;
    audit(conn, tenant_id, &row, "paid", Some(&before), now).await?;
    if let Some(sub) = &row.subscription_id {
        // Active again once nothing else of it is in dunning.
        let reactivate = db::invoices::dunning_over(conn, tenant_id, sub).await?;
        if reactivate {
            super::subscriptions::set_status(conn, tenant_id, sub, SubscriptionStatus::Active, now)
                .await?;
        }
    }
    if out_of_band {
        let payload = serde_json::json!({"paid_out_of_band": true});
        crate::db::outbox::enqueue(
            conn,
            tenant_id,
            crate::domain::outbox::OutboxKind::InvoicePayment,
            invoice_id.as_str(),
            Some(payload),
        )
        .await?;
    }
    emit(
        conn,
        tenant_id,
        crate::webhooks::events::INVOICE_PAID,
        invoice_id,
    )
    .await?;
    Ok(row)
}

/// Voids a draft or open invoice (and, when it is in Stripe, the Stripe invoice). Its number
/// stays used (numbers are never reused).
pub async fn void(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    invoice_id: &InvoiceId,
    now: DateTime<Utc>,
) -> Result<InvoiceRow> {
    let inv = get(conn, tenant_id, invoice_id, true).await?;
    if !matches!(
        inv.status,
        InvoiceStatus::Draft | InvoiceStatus::Open | InvoiceStatus::Uncollectible
    ) {
        return Err(Error::conflict(
            "invoice_not_voidable",
            format!("A {} invoice cannot be voided.", inv.status),
        ));
    }
    let before = shown(conn, tenant_id, invoice_id).await?;
    let row = db::invoices::mark_void(conn, tenant_id, invoice_id, now).await?;
    super::balance::return_applied(conn, tenant_id, &inv, now).await?;
    audit(conn, tenant_id, &row, "voided", Some(&before), now).await?;
    crate::db::outbox::enqueue(
        conn,
        tenant_id,
        crate::domain::outbox::OutboxKind::InvoiceVoid,
        invoice_id.as_str(),
        None,
    )
    .await?;
    Ok(row)
}

/// `at + minutes`.
pub fn after_minutes(at: DateTime<Utc>, minutes: i32) -> DateTime<Utc> {
    at + Duration::minutes(minutes as i64)
}
