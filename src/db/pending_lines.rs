//! `pending_lines`: lines waiting for a subscription's next invoice (the prorated seat
//! changes of members added or removed mid-period). The invoice that carries them claims them
//! in its own transaction.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;

use crate::domain::id::{InvoiceId, SubscriptionId, TenantId};
use crate::domain::invoice::{Line, LineType};

/// Adds a line to a subscription's next invoice.
pub async fn insert(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    subscription_id: &SubscriptionId,
    line: &Line,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO pending_lines (tenant_id, subscription_id, type, description, quantity,
             unit_amount, amount, period_start, period_end, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        tenant_id.as_str(),
        subscription_id.as_str(),
        line.kind.as_str(),
        line.description,
        line.quantity,
        line.unit_amount,
        line.amount,
        line.period_start,
        line.period_end,
        at
    )
    .execute(&mut *conn)
    .await
    .map(drop)
}

struct PendingRow {
    kind: String,
    description: String,
    quantity: Decimal,
    unit_amount: Decimal,
    amount: Decimal,
    period_start: DateTime<Utc>,
    period_end: DateTime<Utc>,
}

fn to_lines(rows: Vec<PendingRow>) -> Result<Vec<Line>, sqlx::Error> {
    rows.into_iter()
        .map(|r| {
            Ok(Line {
                kind: super::decode("pending_lines.type", &r.kind, LineType::parse)?,
                description: r.description,
                feature: None,
                quantity: r.quantity,
                unit_amount: r.unit_amount,
                amount: r.amount,
                period_start: r.period_start,
                period_end: r.period_end,
            })
        })
        .collect()
}

/// Puts every waiting line of a subscription on `invoice_id`; the lines, oldest first.
pub async fn claim(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    subscription_id: &SubscriptionId,
    invoice_id: &InvoiceId,
) -> Result<Vec<Line>, sqlx::Error> {
    let rows = sqlx::query_as!(
        PendingRow,
        r#"WITH claimed AS (
               UPDATE pending_lines SET invoice_id = $3
               WHERE tenant_id = $1 AND subscription_id = $2 AND invoice_id IS NULL
               RETURNING seq, type, description, quantity, unit_amount, amount, period_start,
                         period_end)
           SELECT type AS kind, description, quantity, unit_amount, amount, period_start,
                  period_end
           FROM claimed ORDER BY seq"#,
        tenant_id.as_str(),
        subscription_id.as_str(),
        invoice_id.as_str()
    )
    .fetch_all(&mut *conn)
    .await?;
    to_lines(rows)
}

/// The lines waiting for a subscription's next invoice, oldest first.
pub async fn waiting(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    subscription_id: &SubscriptionId,
) -> Result<Vec<Line>, sqlx::Error> {
    let rows = sqlx::query_as!(
        PendingRow,
        r#"SELECT type AS kind, description, quantity, unit_amount, amount, period_start,
                  period_end
           FROM pending_lines
           WHERE tenant_id = $1 AND subscription_id = $2 AND invoice_id IS NULL
           ORDER BY seq"#,
        tenant_id.as_str(),
        subscription_id.as_str()
    )
    .fetch_all(&mut *conn)
    .await?;
    to_lines(rows)
}
