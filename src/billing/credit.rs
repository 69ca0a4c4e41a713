//! Credit, as the API offers it: the money a customer is owed back. A finalized invoice with
//! a negative total (an immediate downgrade) adds to the customer's balance and every later
//! invoice uses the balance at finalization (`billing::balance`); here, credit is granted by
//! hand, credit notes lower what an open invoice asks or, on a paid one, add to the balance,
//! and the balance's transactions are listed. Each change of the balance is one statement with
//! its transaction row (`db::credit`), in the transaction of its cause.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::audit::{self, Change, Origin, Resource};
use crate::db;
use crate::db::credit::{CreditNoteRow, NewTransaction, TransactionRow};
use crate::domain::money;
use crate::domain::qty::max_quantity;
use crate::domain::status::InvoiceStatus;
use crate::entitlements::resolve::{customer_must_exist, customer_not_found};
use crate::error::{Error, Result};
use crate::ids::{InvoiceId, TenantId};

/// Balances are shown with two decimals when no invoice names their currency (Tollgate
/// keeps one balance per customer, in the currency of its invoices).
const BALANCE_CURRENCY: &str = "usd";

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BalanceTransaction {
    pub id: String,
    pub customer: String,
    /// Positive adds credit, negative uses it.
    #[schema(example = "34.50")]
    pub amount: String,
    /// `downgrade`, `manual`, `credit_note` or `applied`.
    #[serde(rename = "type")]
    pub kind: String,
    pub invoice: Option<String>,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<TransactionRow> for BalanceTransaction {
    fn from(r: TransactionRow) -> Self {
        BalanceTransaction {
            id: r.transaction_id,
            customer: r.customer_id,
            amount: money::format(r.amount, BALANCE_CURRENCY),
            kind: r.kind,
            invoice: r.invoice_id,
            description: r.description,
            created_at: r.created_at,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreditNote {
    pub id: String,
    pub invoice: String,
    #[schema(example = "10.00")]
    pub amount: String,
    /// `duplicate`, `fraudulent`, `order_change`, `product_unsatisfactory` or `other`.
    pub reason: String,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantCredit {
    #[schema(value_type = String, example = "25.00")]
    pub amount: Decimal,
    pub description: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCreditNote {
    #[schema(value_type = String, example = "10.00")]
    pub amount: Decimal,
    /// `duplicate`, `fraudulent`, `order_change`, `product_unsatisfactory` or `other`.
    pub reason: String,
    pub description: Option<String>,
}

const REASONS: [&str; 5] = [
    "duplicate",
    "fraudulent",
    "order_change",
    "product_unsatisfactory",
    "other",
];

fn check_amount(amount: Decimal, currency: &str) -> Result<()> {
    if amount <= Decimal::ZERO
        || amount > max_quantity()
        || amount.normalize().scale() > money::minor_unit_scale(currency)
    {
        return Err(Error::invalid_param(
            "invalid_amount",
            "amount",
            "amount must be positive, with at most the currency's minor-unit precision.",
        ));
    }
    Ok(())
}

fn check_description(description: Option<&str>, required: bool) -> Result<()> {
    match description {
        None if required => Err(Error::invalid_param(
            "invalid_description",
            "description",
            "description is required.",
        )),
        Some(d) if d.trim().is_empty() || d.len() > 500 => Err(Error::invalid_param(
            "invalid_description",
            "description",
            "description must be 1 to 500 characters.",
        )),
        _ => Ok(()),
    }
}

/// Grants credit by hand.
pub async fn grant(
    db: &PgPool,
    origin: &Origin,
    tenant_id: &TenantId,
    customer_id: &str,
    body: &GrantCredit,
    now: DateTime<Utc>,
) -> Result<BalanceTransaction> {
    check_amount(body.amount, BALANCE_CURRENCY)?;
    check_description(Some(&body.description), true)?;
    let mut tx = audit::begin(db, origin).await?;
    let id = crate::ids::new_id("cbtxn");
    let row = db::credit::add(
        &mut tx,
        tenant_id,
        &NewTransaction {
            transaction_id: &id,
            customer_id,
            amount: body.amount,
            kind: "manual",
            invoice_id: None,
            credit_note_id: None,
            description: Some(body.description.trim()),
            at: now,
        },
    )
    .await?
    .ok_or_else(customer_not_found)?;
    let transaction = BalanceTransaction::from(row);
    let change = Change::new(Resource::Customer(customer_id), "credited").after(&transaction);
    audit::record(&mut tx, tenant_id, change, now).await?;
    tx.commit().await?;
    Ok(transaction)
}

/// A customer's balance transactions, newest first.
pub async fn transactions(
    db: &PgPool,
    tenant_id: &TenantId,
    customer_id: &str,
    starting_after: Option<&str>,
    limit: i64,
) -> Result<Vec<BalanceTransaction>> {
    let mut conn = db.acquire().await?;
    customer_must_exist(&mut conn, tenant_id, customer_id).await?;
    let rows =
        db::credit::transactions(&mut conn, tenant_id, customer_id, starting_after, limit + 1)
            .await?;
    Ok(rows.into_iter().map(BalanceTransaction::from).collect())
}

/// Tells Stripe of a credit note (through the outbox; nothing when the tenant is not
/// connected). On a paid invoice the credit stays with Tollgate's balance, so in Stripe it is
/// credited out of band.
async fn enqueue_for_stripe(
    conn: &mut sqlx::PgConnection,
    tenant_id: &TenantId,
    invoice_id: &InvoiceId,
    note: &CreditNoteRow,
    currency: &str,
    paid: bool,
) -> Result<()> {
    let payload = serde_json::json!({
        "credit_note": note.credit_note_id,
        "amount": money::format(note.amount, currency),
        "reason": note.reason,
        "paid": paid,
    });
    db::outbox::enqueue(
        conn,
        tenant_id,
        crate::domain::outbox::OutboxKind::CreditNote,
        invoice_id.as_str(),
        Some(payload),
    )
    .await?;
    Ok(())
}

/// Issues a credit note on an invoice: on an `open` one it lowers the amount due (up to all
/// of it, which settles the invoice); on a `paid` one it adds to the customer's balance (up to
/// what was paid, less earlier notes). Anything else is `409 invoice_not_creditable`.
pub async fn credit_note(
    db: &PgPool,
    origin: &Origin,
    tenant_id: &TenantId,
    invoice_id: &InvoiceId,
    body: &CreateCreditNote,
    now: DateTime<Utc>,
) -> Result<CreditNote> {
    if !REASONS.contains(&body.reason.as_str()) {
        return Err(Error::invalid_param(
            "invalid_reason",
            "reason",
            "reason must be one of duplicate, fraudulent, order_change, product_unsatisfactory, other.",
        ));
    }
    check_description(body.description.as_deref(), false)?;
    let mut tx = audit::begin(db, origin).await?;
    let inv = super::invoices::get(&mut tx, tenant_id, invoice_id, true).await?;
    let before = super::invoices::shown(&mut tx, tenant_id, invoice_id).await?;
    check_amount(body.amount, &inv.currency)?;
    let too_large = || {
        Error::invalid_param(
            "credit_note_too_large",
            "amount",
            "The credit note is more than is left of the invoice.",
        )
    };
    let note = CreditNoteRow {
        credit_note_id: crate::ids::new_id("cn"),
        invoice_id: invoice_id.to_string(),
        amount: body.amount,
        reason: body.reason.clone(),
        description: body.description.clone(),
        created_at: now,
    };
    match inv.status {
        InvoiceStatus::Open => {
            let credited = db::credit::credit_open(&mut tx, tenant_id, invoice_id, body.amount)
                .await?
                .ok_or_else(too_large)?;
            db::credit::insert_note(&mut tx, tenant_id, &note).await?;
            enqueue_for_stripe(&mut tx, tenant_id, invoice_id, &note, &inv.currency, false).await?;
            if credited.amount_due.is_zero() {
                // Nothing left to pay: the invoice is settled, as Stripe settles it (the
                // Stripe credit note settles the Stripe invoice; no payment is sent).
                super::invoices::mark_paid(&mut tx, tenant_id, invoice_id, now, false).await?;
            }
        }
        InvoiceStatus::Paid => {
            db::credit::credit_paid(&mut tx, tenant_id, invoice_id, body.amount)
                .await?
                .ok_or_else(too_large)?;
            db::credit::insert_note(&mut tx, tenant_id, &note).await?;
            enqueue_for_stripe(&mut tx, tenant_id, invoice_id, &note, &inv.currency, true).await?;
            let id = crate::ids::new_id("cbtxn");
            db::credit::add(
                &mut tx,
                tenant_id,
                &NewTransaction {
                    transaction_id: &id,
                    customer_id: &inv.customer_id,
                    amount: body.amount,
                    kind: "credit_note",
                    invoice_id: Some(invoice_id),
                    credit_note_id: Some(&note.credit_note_id),
                    description: body.description.as_deref(),
                    at: now,
                },
            )
            .await?
            .ok_or_else(customer_not_found)?;
        }
        InvoiceStatus::Draft | InvoiceStatus::Void | InvoiceStatus::Uncollectible => {
            return Err(Error::conflict(
                "invoice_not_creditable",
                "Only an open or paid invoice can be credited.",
            ));
        }
    }
    let shown = CreditNote {
        amount: money::format(note.amount, &inv.currency),
        id: note.credit_note_id,
        invoice: note.invoice_id,
        reason: note.reason,
        description: note.description,
        created_at: note.created_at,
    };
    let after = super::invoices::shown(&mut tx, tenant_id, invoice_id).await?;
    let change = Change::new(Resource::Invoice(invoice_id), "credit_note_created")
        .customer(&inv.customer_id)
        .before(&before)
        .after(&serde_json::json!({ "invoice": after, "credit_note": shown }));
    audit::record(&mut tx, tenant_id, change, now).await?;
    tx.commit().await?;
    Ok(shown)
}
