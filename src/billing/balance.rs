//! The customer's credit balance as invoices move it: a negative finalized invoice adds to
//! it, a positive one uses it, a voided one gives back what it used. (The API's credit
//! operations are in `billing::credit`.)

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;

use crate::db;
use crate::db::credit::NewTransaction;
use crate::db::invoices::InvoiceRow;
use crate::error::Result;
use crate::ids::TenantId;

/// At an invoice's finalization (totals fresh, the invoice locked): a negative total goes to
/// the customer's balance; a positive amount due uses what there is of the balance.
pub async fn settle_at_finalization(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    inv: &InvoiceRow,
    now: DateTime<Utc>,
) -> Result<()> {
    if inv.total < Decimal::ZERO {
        let id = crate::ids::new_id("cbtxn");
        db::credit::add(
            conn,
            tenant_id,
            &NewTransaction {
                transaction_id: &id,
                customer_id: &inv.customer_id,
                amount: -inv.total,
                kind: "downgrade",
                invoice_id: Some(&inv.invoice_id),
                credit_note_id: None,
                description: Some("Unused time credited by the invoice"),
                at: now,
            },
        )
        .await?;
    } else if inv.amount_due > Decimal::ZERO {
        let id = crate::ids::new_id("cbtxn");
        let used = db::credit::use_balance(
            conn,
            tenant_id,
            &id,
            &inv.customer_id,
            &inv.invoice_id,
            inv.amount_due,
            now,
        )
        .await?;
        if let Some(used) = used {
            db::credit::set_credit_applied(conn, tenant_id, &inv.invoice_id, -used.amount).await?;
        }
    }
    Ok(())
}

/// When an invoice that used credit is voided, the credit goes back to the balance.
pub async fn return_applied(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    inv: &InvoiceRow,
    now: DateTime<Utc>,
) -> Result<()> {
    if inv.credit_applied <= Decimal::ZERO {
        return Ok(());
    }
    let id = crate::ids::new_id("cbtxn");
    db::credit::add(
        conn,
        tenant_id,
        &NewTransaction {
            transaction_id: &id,
            customer_id: &inv.customer_id,
            amount: inv.credit_applied,
            kind: "applied",
            invoice_id: Some(&inv.invoice_id),
            credit_note_id: None,
            description: Some("Credit returned: the invoice was voided"),
            at: now,
        },
    )
    .await?;
    Ok(())
}
