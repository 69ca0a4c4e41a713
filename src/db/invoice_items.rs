//! `invoice_items`: one-off charges, pending until an invoice of the customer claims them as
//! `charge` lines (SPEC §15).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;

use crate::domain::id::{InvoiceId, InvoiceItemId, TenantId};

pub struct ItemRow {
    pub item_id: InvoiceItemId,
    pub customer_id: String,
    pub description: String,
    pub unit_amount: Decimal,
    pub quantity: Decimal,
    pub amount: Decimal,
    pub currency: String,
    pub invoice_id: Option<InvoiceId>,
    pub line_no: Option<i32>,
    pub created_at: DateTime<Utc>,
}

pub struct NewItem<'a> {
    pub item_id: &'a InvoiceItemId,
    pub customer_id: &'a str,
    pub description: &'a str,
    pub unit_amount: Decimal,
    pub quantity: Decimal,
    pub amount: Decimal,
    pub currency: &'a str,
    pub now: DateTime<Utc>,
}

pub async fn insert(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    item: &NewItem<'_>,
) -> Result<ItemRow, sqlx::Error> {
    sqlx::query_as!(
        ItemRow,
        r#"INSERT INTO invoice_items (tenant_id, item_id, customer_id, description, unit_amount,
               quantity, amount, currency, created_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           RETURNING item_id AS "item_id: InvoiceItemId", customer_id, description, unit_amount,
                     quantity, amount, currency, invoice_id AS "invoice_id: InvoiceId", line_no,
                     created_at"#,
        tenant_id.as_str(),
        item.item_id.as_str(),
        item.customer_id,
        item.description,
        item.unit_amount,
        item.quantity,
        item.amount,
        item.currency,
        item.now
    )
    .fetch_one(&mut *conn)
    .await
}

/// One item, locked `FOR UPDATE` (for its removal).
pub async fn lock(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    item_id: &InvoiceItemId,
) -> Result<Option<ItemRow>, sqlx::Error> {
    sqlx::query_as!(
        ItemRow,
        r#"SELECT item_id AS "item_id: InvoiceItemId", customer_id, description, unit_amount,
                  quantity, amount, currency, invoice_id AS "invoice_id: InvoiceId", line_no,
                  created_at
           FROM invoice_items WHERE tenant_id = $1 AND item_id = $2
           FOR UPDATE"#,
        tenant_id.as_str(),
        item_id.as_str()
    )
    .fetch_optional(&mut *conn)
    .await
}

/// Up to `limit` of a customer's items after `starting_after` (an item id), newest first;
/// only the pending ones when asked.
pub async fn list(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    customer_id: &str,
    pending_only: bool,
    starting_after: Option<&str>,
    limit: i64,
) -> Result<Vec<ItemRow>, sqlx::Error> {
    sqlx::query_as!(
        ItemRow,
        r#"SELECT i.item_id AS "item_id: InvoiceItemId", i.customer_id, i.description,
                  i.unit_amount, i.quantity, i.amount, i.currency,
                  i.invoice_id AS "invoice_id: InvoiceId", i.line_no, i.created_at
           FROM invoice_items i
           WHERE i.tenant_id = $1 AND i.customer_id = $2
             AND (NOT $3 OR i.invoice_id IS NULL)
             AND ($4::text IS NULL OR (i.created_at, i.item_id) <
                  (SELECT a.created_at, a.item_id FROM invoice_items a
                   WHERE a.tenant_id = $1 AND a.item_id = $4))
           ORDER BY i.created_at DESC, i.item_id DESC
           LIMIT $5"#,
        tenant_id.as_str(),
        customer_id,
        pending_only,
        starting_after,
        limit
    )
    .fetch_all(&mut *conn)
    .await
}

/// The customer's pending items in `currency`, oldest first (what its next invoice claims).
pub async fn pending(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    customer_id: &str,
    currency: &str,
) -> Result<Vec<ItemRow>, sqlx::Error> {
    sqlx::query_as!(
        ItemRow,
        r#"SELECT item_id AS "item_id: InvoiceItemId", customer_id, description, unit_amount,
                  quantity, amount, currency, invoice_id AS "invoice_id: InvoiceId", line_no,
                  created_at
           FROM invoice_items
           WHERE tenant_id = $1 AND customer_id = $2 AND invoice_id IS NULL AND currency = $3
           ORDER BY created_at, item_id"#,
        tenant_id.as_str(),
        customer_id,
        currency
    )
    .fetch_all(&mut *conn)
    .await
}

/// Puts the customer's pending items in the invoice's currency on the invoice, as `charge`
/// lines after its others (each over `period`), and marks them claimed by it. The items are
/// locked first, so two invoices made at once never both take one. Returns how many.
pub async fn claim(
    conn: &mut PgConnection,
    (tenant_id, customer_id): (&TenantId, &str),
    invoice_id: &InvoiceId,
    currency: &str,
    period: (DateTime<Utc>, DateTime<Utc>),
) -> Result<usize, sqlx::Error> {
    let items = sqlx::query!(
        r#"SELECT item_id, description, quantity, unit_amount, amount FROM invoice_items
           WHERE tenant_id = $1 AND customer_id = $2 AND invoice_id IS NULL AND currency = $3
           ORDER BY created_at, item_id
           FOR UPDATE"#,
        tenant_id.as_str(),
        customer_id,
        currency
    )
    .fetch_all(&mut *conn)
    .await?;
    if items.is_empty() {
        return Ok(0);
    }
    let base = sqlx::query_scalar!(
        r#"SELECT COALESCE(max(line_no), 0) AS "n!" FROM invoice_lines
           WHERE tenant_id = $1 AND invoice_id = $2"#,
        tenant_id.as_str(),
        invoice_id.as_str()
    )
    .fetch_one(&mut *conn)
    .await?;
    let ids: Vec<&str> = items.iter().map(|i| i.item_id.as_str()).collect();
    let line_nos: Vec<i32> = (1..).take(items.len()).map(|i| base + i).collect();
    let descriptions: Vec<&str> = items.iter().map(|i| i.description.as_str()).collect();
    let quantities: Vec<Decimal> = items.iter().map(|i| i.quantity).collect();
    let units: Vec<Decimal> = items.iter().map(|i| i.unit_amount).collect();
    let amounts: Vec<Decimal> = items.iter().map(|i| i.amount).collect();
    sqlx::query!(
        "INSERT INTO invoice_lines (tenant_id, invoice_id, line_no, type, description,
             feature_key, quantity, unit_amount, amount, period_start, period_end)
         SELECT $1, $2, l.line_no, 'charge', l.description, NULL, l.quantity, l.unit_amount,
                l.amount, $7, $8
         FROM unnest($3::int[], $4::text[], $5::numeric[], $6::numeric[], $9::numeric[])
              AS l(line_no, description, quantity, unit_amount, amount)",
        tenant_id.as_str(),
        invoice_id.as_str(),
        &line_nos,
        &descriptions as &[&str],
        &quantities,
        &units,
        period.0,
        period.1,
        &amounts
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE invoice_items i SET invoice_id = $2, line_no = l.line_no
         FROM unnest($3::text[], $4::int[]) AS l(item_id, line_no)
         WHERE i.tenant_id = $1 AND i.item_id = l.item_id",
        tenant_id.as_str(),
        invoice_id.as_str(),
        &ids as &[&str],
        &line_nos
    )
    .execute(&mut *conn)
    .await?;
    Ok(items.len())
}

/// Takes an item claimed by a draft off it: its line goes, and it is deleted.
pub async fn delete(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    item: &ItemRow,
) -> Result<(), sqlx::Error> {
    if let (Some(invoice_id), Some(line_no)) = (&item.invoice_id, item.line_no) {
        sqlx::query!(
            "DELETE FROM invoice_lines WHERE tenant_id = $1 AND invoice_id = $2 AND line_no = $3",
            tenant_id.as_str(),
            invoice_id.as_str(),
            line_no
        )
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query!(
        "DELETE FROM invoice_items WHERE tenant_id = $1 AND item_id = $2",
        tenant_id.as_str(),
        item.item_id.as_str()
    )
    .execute(&mut *conn)
    .await
    .map(drop)
}
