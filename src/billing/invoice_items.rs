//! One-off charges (SPEC §15): an invoice item waits, pending, for the customer's next invoice
//! of any kind, which carries it as a `charge` line (`invoices::create` claims it); with
//! `invoice_now` it is invoiced at once, on an invoice of its own with every pending item of
//! the customer, finalized (a customer without a subscription may be invoiced this way).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};

use super::invoices::{self, NewInvoice};
use crate::audit::{self, Change, Origin, Resource};
use crate::db;
use crate::db::invoice_items::{ItemRow, NewItem};
use crate::db::plans::PlanCache;
use crate::domain::money;
use crate::domain::qty::{validate_quantity, Qty};
use crate::domain::status::InvoiceStatus;
use crate::entitlements::resolve::customer_must_exist;
use crate::error::{Error, Result};
use crate::ids::{InvoiceId, InvoiceItemId, TenantId};

/// The currency of a customer without a subscription.
const DEFAULT_CURRENCY: &str = "usd";

/// Unit amounts may be finer than the minor unit (as Stripe's `unit_amount_decimal`): the
/// line's amount is rounded once.
const MAX_UNIT_SCALE: u32 = 12;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateItem {
    /// 1 to 500 characters, shown on the invoice line.
    pub description: String,
    /// The price of one unit: a decimal string (or number) above zero.
    #[schema(value_type = String, example = "150.00")]
    pub unit_amount: Decimal,
    /// Above zero, fractions allowed (7.5 hours); default 1.
    #[schema(example = 7.5)]
    pub quantity: Option<Qty>,
    /// Invoice it now, on an invoice of its own (finalized) with every pending item of the
    /// customer; default false: it waits for the customer's next invoice.
    #[serde(default)]
    pub invoice_now: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InvoiceItem {
    #[schema(value_type = String, example = "ii_0192f3a45b6c7d8e9f00112233445566")]
    pub id: InvoiceItemId,
    pub customer: String,
    pub description: String,
    pub currency: String,
    #[schema(example = "150.00")]
    pub unit_amount: String,
    pub quantity: Qty,
    /// `unit_amount × quantity`, rounded once to the minor unit.
    #[schema(example = "1125.00")]
    pub amount: String,
    /// The invoice that carries it; null while it is pending.
    #[schema(value_type = Option<String>)]
    pub invoice: Option<InvoiceId>,
    pub created_at: DateTime<Utc>,
}

impl From<ItemRow> for InvoiceItem {
    fn from(r: ItemRow) -> Self {
        InvoiceItem {
            id: r.item_id,
            customer: r.customer_id,
            description: r.description,
            unit_amount: money::format_unit(r.unit_amount, &r.currency),
            quantity: Qty(r.quantity.normalize()),
            amount: money::format(r.amount, &r.currency),
            currency: r.currency,
            invoice: r.invoice_id,
            created_at: r.created_at,
        }
    }
}

fn check(body: &CreateItem) -> Result<Decimal> {
    let description = body.description.trim();
    if description.is_empty() || description.len() > 500 {
        return Err(Error::invalid_param(
            "invalid_description",
            "description",
            "description must be 1 to 500 characters.",
        ));
    }
    let unit = body.unit_amount;
    if unit <= Decimal::ZERO
        || validate_quantity(unit).is_err()
        || unit.normalize().scale() > MAX_UNIT_SCALE
    {
        return Err(Error::invalid_param(
            "invalid_amount",
            "unit_amount",
            "unit_amount must be above zero, with at most 12 decimal places.",
        ));
    }
    let quantity = match &body.quantity {
        None => Decimal::ONE,
        Some(q) => validate_quantity(q.0).map_err(|e| Error::invalid_quantity(e, "quantity"))?,
    };
    if quantity <= Decimal::ZERO {
        return Err(Error::invalid_param(
            "invalid_quantity",
            "quantity",
            "quantity must be above zero.",
        ));
    }
    Ok(quantity)
}

/// Creates an item for the customer, pending or (with `invoice_now`) invoiced at once.
pub async fn create(
    db: &PgPool,
    (origin, plans): (&Origin, &PlanCache),
    tenant_id: &TenantId,
    customer_id: &str,
    body: &CreateItem,
    now: DateTime<Utc>,
) -> Result<InvoiceItem> {
    let quantity = check(body)?;
    let mut tx = audit::begin(db, origin).await?;
    customer_must_exist(&mut tx, tenant_id, customer_id).await?;
    let currency = currency_of(&mut tx, plans, tenant_id, customer_id).await?;
    let amount = money::round_to_minor(body.unit_amount * quantity, &currency);
    if amount <= Decimal::ZERO {
        return Err(Error::invalid_param(
            "invalid_amount",
            "unit_amount",
            "unit_amount × quantity rounds to zero in the currency's minor unit.",
        ));
    }
    let item_id: InvoiceItemId = crate::ids::new();
    let row = db::invoice_items::insert(
        &mut tx,
        tenant_id,
        &NewItem {
            item_id: &item_id,
            customer_id,
            description: body.description.trim(),
            unit_amount: body.unit_amount.normalize(),
            quantity: quantity.normalize(),
            amount,
            currency: &currency,
            now,
        },
    )
    .await?;
    let item = InvoiceItem::from(row);
    let change = Change::new(Resource::InvoiceItem(&item.id), "created")
        .customer(customer_id)
        .after(&item);
    audit::record(&mut tx, tenant_id, change, now).await?;
    let invoice = if body.invoice_now {
        Some(invoice_now(&mut tx, plans, tenant_id, customer_id, &currency, now).await?)
    } else {
        None
    };
    tx.commit().await?;
    Ok(InvoiceItem { invoice, ..item })
}

/// An invoice of the customer's pending items in `currency`, made and finalized now.
async fn invoice_now(
    conn: &mut PgConnection,
    plans: &PlanCache,
    tenant_id: &TenantId,
    customer_id: &str,
    currency: &str,
    now: DateTime<Utc>,
) -> Result<InvoiceId> {
    let row = invoices::create(
        conn,
        plans,
        NewInvoice {
            tenant_id,
            customer_id,
            subscription_id: None,
            billing_reason: "manual",
            currency,
            period_start: now,
            period_end: now,
            lines: Vec::new(),
            usage: None,
            finalize_at: now,
            now,
        },
    )
    .await?;
    Ok(row.invoice_id)
}

/// The currency of the customer's items: its live subscription's, else `usd`.
async fn currency_of(
    conn: &mut PgConnection,
    plans: &PlanCache,
    tenant_id: &TenantId,
    customer_id: &str,
) -> Result<String> {
    let Some(sub) = db::subscriptions::live_for_customer(conn, tenant_id, customer_id).await?
    else {
        return Ok(DEFAULT_CURRENCY.to_string());
    };
    let plan = plans
        .of_subscription(conn, tenant_id, &sub)
        .await?
        .ok_or_else(|| Error::internal("subscription plan version missing"))?;
    Ok(plan.currency().to_string())
}

/// Up to `limit` of the customer's items after `starting_after`, newest first (plus one more
/// if there is one, for `has_more`).
pub async fn list(
    db: &PgPool,
    tenant_id: &TenantId,
    customer_id: &str,
    pending_only: bool,
    starting_after: Option<&str>,
    limit: i64,
) -> Result<Vec<InvoiceItem>> {
    let mut conn = db.acquire().await?;
    customer_must_exist(&mut conn, tenant_id, customer_id).await?;
    let rows = db::invoice_items::list(
        &mut conn,
        tenant_id,
        customer_id,
        pending_only,
        starting_after,
        limit + 1,
    )
    .await?;
    Ok(rows.into_iter().map(InvoiceItem::from).collect())
}

/// Removes an item that no finalized invoice carries: a pending one, or one on a draft (whose
/// line goes with it).
pub async fn delete(
    db: &PgPool,
    origin: &Origin,
    tenant_id: &TenantId,
    item_id: &InvoiceItemId,
    now: DateTime<Utc>,
) -> Result<InvoiceItem> {
    let mut tx = audit::begin(db, origin).await?;
    let row = db::invoice_items::lock(&mut tx, tenant_id, item_id)
        .await?
        .ok_or_else(Error::no_such::<InvoiceItemId>)?;
    if let Some(invoice_id) = &row.invoice_id {
        let invoice = invoices::get(&mut tx, tenant_id, invoice_id, true).await?;
        if invoice.status != InvoiceStatus::Draft {
            return Err(Error::conflict(
                "invoice_item_invoiced",
                format!(
                    "The item is on invoice {} ({}); only a pending item can be removed.",
                    invoice.number, invoice.status
                ),
            ));
        }
    }
    db::invoice_items::delete(&mut tx, tenant_id, &row).await?;
    if let Some(invoice_id) = &row.invoice_id {
        db::invoices::refresh_totals(&mut tx, tenant_id, invoice_id).await?;
    }
    let customer = row.customer_id.clone();
    let item = InvoiceItem::from(row);
    let change = Change::new(Resource::InvoiceItem(&item.id), "deleted")
        .customer(&customer)
        .before(&item);
    audit::record(&mut tx, tenant_id, change, now).await?;
    tx.commit().await?;
    Ok(item)
}

/// The customer's pending items in `currency`, as the lines its next invoice will carry
/// (`upcoming_invoice`).
pub async fn pending_lines(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    customer_id: &str,
    currency: &str,
    period: (DateTime<Utc>, DateTime<Utc>),
) -> Result<Vec<crate::domain::invoice::Line>> {
    let rows = db::invoice_items::pending(conn, tenant_id, customer_id, currency).await?;
    Ok(rows
        .into_iter()
        .map(|r| crate::domain::invoice::Line {
            kind: crate::domain::invoice::LineType::Charge,
            description: r.description,
            feature: None,
            quantity: r.quantity,
            unit_amount: r.unit_amount,
            amount: r.amount,
            period_start: period.0,
            period_end: period.1,
        })
        .collect())
}
