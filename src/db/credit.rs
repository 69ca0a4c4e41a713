//! `balance_transactions`, `credit_notes` and the credit columns of `customers` and
//! `invoices`. Every change of a balance is one statement that updates `credit_balance` and
//! writes its transaction row together, so the balance always equals the sum of its
//! transactions; limits are conditions of the same statement, so concurrent writers can never
//! take a balance below zero or credit an invoice past what is left of it.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;

use crate::domain::id::{InvoiceId, TenantId};

#[derive(Debug, Clone)]
pub struct TransactionRow {
    pub transaction_id: String,
    pub customer_id: String,
    pub amount: Decimal,
    pub kind: String,
    pub invoice_id: Option<String>,
    pub description: Option<String>,
    pub balance_after: Decimal,
    pub created_at: DateTime<Utc>,
}

/// A change of a customer's balance.
pub struct NewTransaction<'a> {
    pub transaction_id: &'a str,
    pub customer_id: &'a str,
    /// Positive adds credit, negative uses it.
    pub amount: Decimal,
    pub kind: &'a str,
    pub invoice_id: Option<&'a InvoiceId>,
    pub credit_note_id: Option<&'a str>,
    pub description: Option<&'a str>,
    pub at: DateTime<Utc>,
}

/// Adds `t.amount` to the balance and records it, in one statement; `None` (nothing written)
/// when there is no such live customer or the balance would fall below zero.
pub async fn add(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    t: &NewTransaction<'_>,
) -> Result<Option<TransactionRow>, sqlx::Error> {
    sqlx::query_as!(
        TransactionRow,
        r#"WITH balance AS (
               UPDATE customers SET credit_balance = credit_balance + $4, updated_at = now()
               WHERE tenant_id = $1 AND customer_id = $3 AND deleted_at IS NULL
                 AND credit_balance + $4 >= 0
               RETURNING credit_balance)
           INSERT INTO balance_transactions (tenant_id, transaction_id, customer_id, amount,
               type, invoice_id, credit_note_id, description, balance_after, created_at)
           SELECT $1, $2, $3, $4, $5, $6, $7, $8, balance.credit_balance, $9 FROM balance
           RETURNING transaction_id, customer_id, amount, type AS kind, invoice_id, description,
                     balance_after, created_at"#,
        tenant_id.as_str(),
        t.transaction_id,
        t.customer_id,
        t.amount,
        t.kind,
        t.invoice_id.map(InvoiceId::as_str),
        t.credit_note_id,
        t.description,
        t.at
    )
    .fetch_optional(&mut *conn)
    .await
}

/// Uses as much of the customer's balance as there is, up to `at_most`, for an invoice; the
/// transaction (amount negative), or `None` when the balance is empty.
pub async fn use_balance(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    transaction_id: &str,
    customer_id: &str,
    invoice_id: &InvoiceId,
    at_most: Decimal,
    at: DateTime<Utc>,
) -> Result<Option<TransactionRow>, sqlx::Error> {
    sqlx::query_as!(
        TransactionRow,
        r#"WITH current AS (
               SELECT LEAST(credit_balance, $5) AS used FROM customers
               WHERE tenant_id = $1 AND customer_id = $3 FOR NO KEY UPDATE),
           balance AS (
               UPDATE customers c SET credit_balance = c.credit_balance - current.used,
                      updated_at = now()
               FROM current
               WHERE c.tenant_id = $1 AND c.customer_id = $3 AND current.used > 0
               RETURNING c.credit_balance, current.used)
           INSERT INTO balance_transactions (tenant_id, transaction_id, customer_id, amount,
               type, invoice_id, description, balance_after, created_at)
           SELECT $1, $2, $3, -balance.used, 'applied', $4, 'Applied to the invoice',
                  balance.credit_balance, $6
           FROM balance
           RETURNING transaction_id, customer_id, amount, type AS kind, invoice_id, description,
                     balance_after, created_at"#,
        tenant_id.as_str(),
        transaction_id,
        customer_id,
        invoice_id.as_str(),
        at_most,
        at
    )
    .fetch_optional(&mut *conn)
    .await
}

/// Records credit used on a (locked, being finalized) invoice: `amount_due` falls by it.
pub async fn set_credit_applied(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    invoice_id: &InvoiceId,
    applied: Decimal,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE invoices SET credit_applied = $3, amount_due = amount_due - $3, updated_at = now()
         WHERE tenant_id = $1 AND invoice_id = $2",
        tenant_id.as_str(),
        invoice_id.as_str(),
        applied
    )
    .execute(&mut *conn)
    .await
    .map(drop)
}

/// A customer's balance transactions, newest first, after `starting_after`.
pub async fn transactions(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    customer_id: &str,
    starting_after: Option<&str>,
    limit: i64,
) -> Result<Vec<TransactionRow>, sqlx::Error> {
    sqlx::query_as!(
        TransactionRow,
        r#"SELECT transaction_id, customer_id, amount, type AS kind, invoice_id, description,
                  balance_after, created_at
           FROM balance_transactions
           WHERE tenant_id = $1 AND customer_id = $2
             AND ($3::text IS NULL OR transaction_id < $3)
           ORDER BY transaction_id DESC LIMIT $4"#,
        tenant_id.as_str(),
        customer_id,
        starting_after,
        limit
    )
    .fetch_all(&mut *conn)
    .await
}

/// The customer's balance.
pub async fn balance(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    customer_id: &str,
) -> Result<Option<Decimal>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT credit_balance FROM customers
         WHERE tenant_id = $1 AND customer_id = $2 AND deleted_at IS NULL",
        tenant_id.as_str(),
        customer_id
    )
    .fetch_optional(&mut *conn)
    .await
}

/// Where an invoice stands after a credit note.
pub struct Credited {
    pub customer_id: String,
    pub currency: String,
    pub status: String,
    pub amount_due: Decimal,
}

/// Credits an `open` invoice: `amount_due` falls by `amount`, which may not exceed it. `None`
/// (nothing changed) when the invoice is not open or the amount is more than is due.
pub async fn credit_open(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    invoice_id: &InvoiceId,
    amount: Decimal,
) -> Result<Option<Credited>, sqlx::Error> {
    sqlx::query_as!(
        Credited,
        "UPDATE invoices SET credit_notes_total = credit_notes_total + $3,
                amount_due = amount_due - $3, updated_at = now()
         WHERE tenant_id = $1 AND invoice_id = $2 AND status = 'open' AND amount_due >= $3
         RETURNING customer_id, currency, status, amount_due",
        tenant_id.as_str(),
        invoice_id.as_str(),
        amount
    )
    .fetch_optional(&mut *conn)
    .await
}

/// Credits a `paid` invoice: at most what was paid, less earlier notes after payment. `None`
/// (nothing changed) when the invoice is not paid or the amount is more than is left.
pub async fn credit_paid(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    invoice_id: &InvoiceId,
    amount: Decimal,
) -> Result<Option<Credited>, sqlx::Error> {
    sqlx::query_as!(
        Credited,
        "UPDATE invoices SET credit_notes_total = credit_notes_total + $3,
                credited_after_payment = credited_after_payment + $3, updated_at = now()
         WHERE tenant_id = $1 AND invoice_id = $2 AND status = 'paid'
           AND credited_after_payment + $3 <= amount_paid
         RETURNING customer_id, currency, status, amount_due",
        tenant_id.as_str(),
        invoice_id.as_str(),
        amount
    )
    .fetch_optional(&mut *conn)
    .await
}

#[derive(Debug, Clone)]
pub struct CreditNoteRow {
    pub credit_note_id: String,
    pub invoice_id: String,
    pub amount: Decimal,
    pub reason: String,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
}

pub async fn insert_note(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    note: &CreditNoteRow,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO credit_notes (tenant_id, credit_note_id, invoice_id, amount, reason,
             description, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        tenant_id.as_str(),
        note.credit_note_id,
        note.invoice_id,
        note.amount,
        note.reason,
        note.description,
        note.created_at
    )
    .execute(&mut *conn)
    .await
    .map(drop)
}
