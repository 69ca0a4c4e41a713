//! `invoices`, `invoice_lines` and `invoice_numbers`.
//!
//! Every statement is checked at build time; `status` decodes into `InvoiceStatus`
//! (`db::decode_text`), so an unknown value is an error, not a guess.

use crate::domain::id::TenantId;
use crate::domain::id::{InvoiceId, SubscriptionId};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::types::Json;
use sqlx::PgConnection;

use crate::domain::addon::Attached;

use crate::domain::invoice::{Line, LineType};
use crate::domain::status::InvoiceStatus;

#[derive(Debug, Clone)]
pub struct InvoiceRow {
    pub invoice_id: InvoiceId,
    pub number: i64,
    pub customer_id: String,
    pub subscription_id: Option<SubscriptionId>,
    pub billing_reason: String,
    pub status: InvoiceStatus,
    pub currency: String,
    pub subtotal: Decimal,
    pub total: Decimal,
    pub amount_due: Decimal,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub usage_period_start: Option<DateTime<Utc>>,
    pub usage_period_end: Option<DateTime<Utc>>,
    pub usage_plan_key: Option<String>,
    pub usage_plan_version: Option<i32>,
    pub net_days: i32,
    pub due_date: Option<DateTime<Utc>>,
    pub finalize_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub finalized_at: Option<DateTime<Utc>>,
    pub paid_at: Option<DateTime<Utc>>,
    pub paid_out_of_band: bool,
    pub voided_at: Option<DateTime<Utc>>,
    pub credit_applied: Decimal,
    pub credit_notes_total: Decimal,
}

/// The tenant's next invoice number. The number row stays locked until the transaction ends,
/// so numbers are gapless under concurrency (a rollback gives the number back).
pub async fn next_number(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        "INSERT INTO invoice_numbers (tenant_id, last_number) VALUES ($1, 1)
         ON CONFLICT (tenant_id) DO UPDATE SET last_number = invoice_numbers.last_number + 1
         RETURNING last_number",
        tenant_id.as_str()
    )
    .fetch_one(&mut *conn)
    .await
}

/// A new draft invoice row (its lines and totals come after).
pub struct NewInvoiceRow<'a> {
    pub tenant_id: &'a TenantId,
    pub invoice_id: &'a InvoiceId,
    pub number: i64,
    pub customer_id: &'a str,
    pub subscription_id: Option<&'a SubscriptionId>,
    pub billing_reason: &'a str,
    pub currency: &'a str,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    /// The usage window billed in arrears: start, end, plan key and version.
    pub usage: Option<(DateTime<Utc>, DateTime<Utc>, &'a str, i32)>,
    /// The add-ons whose entitlements stacked on the plan's in that window.
    pub usage_addons: &'a [Attached],
    pub finalize_at: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

/// Inserts a draft with zero totals; the customer's payment terms become its `net_days`.
pub async fn insert(conn: &mut PgConnection, new: &NewInvoiceRow<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO invoices (tenant_id, invoice_id, number, customer_id, subscription_id,
             billing_reason, status, currency, subtotal, total, amount_due, period_start,
             period_end, usage_period_start, usage_period_end, usage_plan_key,
             usage_plan_version, net_days, finalize_at, created_at, updated_at, usage_addons)
         SELECT $1, $2, $3, $4, $5, $6, 'draft', $7, 0, 0, 0, $8, $9, $10, $11, $12, $13,
                c.net_days, $14, $15, $15, $16
         FROM customers c WHERE c.tenant_id = $1 AND c.customer_id = $4",
        new.tenant_id.as_str(),
        new.invoice_id.as_str(),
        new.number,
        new.customer_id,
        new.subscription_id.map(SubscriptionId::as_str),
        new.billing_reason,
        new.currency,
        new.period_start,
        new.period_end,
        new.usage.map(|u| u.0),
        new.usage.map(|u| u.1),
        new.usage.map(|u| u.2),
        new.usage.map(|u| u.3),
        new.finalize_at,
        new.now,
        Json(new.usage_addons) as Json<&[Attached]>
    )
    .execute(&mut *conn)
    .await
    .map(drop)
}

/// The add-ons an invoice's usage window is billed with (see [`NewInvoiceRow::usage_addons`]).
pub async fn usage_addons(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    invoice_id: &InvoiceId,
) -> Result<Vec<Attached>, sqlx::Error> {
    let addons = sqlx::query_scalar!(
        r#"SELECT usage_addons AS "usage_addons: Json<Vec<Attached>>" FROM invoices
           WHERE tenant_id = $1 AND invoice_id = $2"#,
        tenant_id.as_str(),
        invoice_id.as_str()
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(addons.0)
}

/// Appends lines after the invoice's last one.
pub async fn insert_lines(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    invoice_id: &InvoiceId,
    lines: &[Line],
) -> Result<(), sqlx::Error> {
    if lines.is_empty() {
        return Ok(());
    }
    let kinds: Vec<&str> = lines.iter().map(|l| l.kind.as_str()).collect();
    let descriptions: Vec<&str> = lines.iter().map(|l| l.description.as_str()).collect();
    let features: Vec<Option<&str>> = lines.iter().map(|l| l.feature.as_deref()).collect();
    let quantities: Vec<Decimal> = lines.iter().map(|l| l.quantity).collect();
    let units: Vec<Decimal> = lines.iter().map(|l| l.unit_amount).collect();
    let amounts: Vec<Decimal> = lines.iter().map(|l| l.amount).collect();
    let starts: Vec<DateTime<Utc>> = lines.iter().map(|l| l.period_start).collect();
    let ends: Vec<DateTime<Utc>> = lines.iter().map(|l| l.period_end).collect();
    sqlx::query!(
        "INSERT INTO invoice_lines (tenant_id, invoice_id, line_no, type, description,
             feature_key, quantity, unit_amount, amount, period_start, period_end)
         SELECT $1, $2,
                (SELECT COALESCE(max(line_no), 0) FROM invoice_lines
                  WHERE tenant_id = $1 AND invoice_id = $2) + l.ord,
                l.type, l.description, l.feature, l.quantity, l.unit_amount, l.amount,
                l.period_start, l.period_end
         FROM unnest($3::text[], $4::text[], $5::text[], $6::numeric[], $7::numeric[],
                     $8::numeric[], $9::timestamptz[], $10::timestamptz[])
              WITH ORDINALITY AS l(type, description, feature, quantity, unit_amount, amount,
                                   period_start, period_end, ord)",
        tenant_id.as_str(),
        invoice_id.as_str(),
        &kinds as &[&str],
        &descriptions as &[&str],
        &features as &[Option<&str>],
        &quantities,
        &units,
        &amounts,
        &starts,
        &ends
    )
    .execute(&mut *conn)
    .await
    .map(drop)
}

/// Sets subtotal (every line but `discount` lines), total (every line) and amount due from
/// the lines (sums of rounded amounts).
pub async fn refresh_totals(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    invoice_id: &InvoiceId,
) -> Result<InvoiceRow, sqlx::Error> {
    sqlx::query_as!(
        InvoiceRow,
        r#"UPDATE invoices i SET subtotal = t.before_discounts, total = t.sum,
               amount_due = GREATEST(t.sum, 0), updated_at = now()
           FROM (SELECT COALESCE(sum(amount), 0) AS sum,
                        COALESCE(sum(amount) FILTER (WHERE type <> 'discount'), 0) AS before_discounts
                 FROM invoice_lines
                 WHERE tenant_id = $1 AND invoice_id = $2) t
           WHERE i.tenant_id = $1 AND i.invoice_id = $2
           RETURNING i.invoice_id AS "invoice_id: InvoiceId", number, customer_id, subscription_id AS "subscription_id: SubscriptionId", billing_reason,
                   status AS "status: InvoiceStatus", currency, subtotal, total, amount_due,
                   period_start, period_end, usage_period_start, usage_period_end,
                   usage_plan_key, usage_plan_version, net_days, due_date, finalize_at,
                   created_at, finalized_at, paid_at, paid_out_of_band, voided_at, credit_applied, credit_notes_total"#,
        tenant_id.as_str(),
        invoice_id.as_str()
    )
    .fetch_one(&mut *conn)
    .await
}

/// A counter of a period that ended in an invoice's usage window, with its feature's name.
pub struct EndedCounter {
    pub feature_key: String,
    pub used: Decimal,
    pub name: String,
    pub unit: Option<String>,
}

/// The customer's counters whose periods ended within `(start, end]`, of features not
/// reported to a Stripe meter, by feature and period.
pub async fn ended_counters(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    customer_id: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Vec<EndedCounter>, sqlx::Error> {
    sqlx::query_as!(
        EndedCounter,
        r#"SELECT c.feature_key, c.used, f.name, f.unit
           FROM usage_counters c
           JOIN features f ON f.tenant_id = $1 AND f.feature_key = c.feature_key
           WHERE c.tenant_id = $1 AND c.customer_id = $2
             AND c.period_end > $3 AND c.period_end <= $4
             AND f.stripe_meter_event_name IS NULL
           ORDER BY c.feature_key, c.period_start"#,
        tenant_id.as_str(),
        customer_id,
        start,
        end
    )
    .fetch_all(&mut *conn)
    .await
}

/// An invoice, locked `FOR UPDATE` when asked.
pub async fn get(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    invoice_id: &InvoiceId,
    for_update: bool,
) -> Result<Option<InvoiceRow>, sqlx::Error> {
    // Two statements, since a lock clause cannot be a parameter.
    if for_update {
        sqlx::query_as!(
            InvoiceRow,
            r#"SELECT invoice_id AS "invoice_id: InvoiceId", number, customer_id, subscription_id AS "subscription_id: SubscriptionId", billing_reason,
                   status AS "status: InvoiceStatus", currency, subtotal, total, amount_due,
                   period_start, period_end, usage_period_start, usage_period_end,
                   usage_plan_key, usage_plan_version, net_days, due_date, finalize_at,
                   created_at, finalized_at, paid_at, paid_out_of_band, voided_at, credit_applied, credit_notes_total
               FROM invoices WHERE tenant_id = $1 AND invoice_id = $2 FOR NO KEY UPDATE"#,
            tenant_id.as_str(),
            invoice_id.as_str()
        )
        .fetch_optional(&mut *conn)
        .await
    } else {
        sqlx::query_as!(
            InvoiceRow,
            r#"SELECT invoice_id AS "invoice_id: InvoiceId", number, customer_id, subscription_id AS "subscription_id: SubscriptionId", billing_reason,
                   status AS "status: InvoiceStatus", currency, subtotal, total, amount_due,
                   period_start, period_end, usage_period_start, usage_period_end,
                   usage_plan_key, usage_plan_version, net_days, due_date, finalize_at,
                   created_at, finalized_at, paid_at, paid_out_of_band, voided_at, credit_applied, credit_notes_total
               FROM invoices WHERE tenant_id = $1 AND invoice_id = $2"#,
            tenant_id.as_str(),
            invoice_id.as_str()
        )
        .fetch_optional(&mut *conn)
        .await
    }
}

/// Closes the customer's usage before `end` (events timestamped earlier are refused from now
/// on). The customer row is locked first, which usage recording waits for (migration 3).
pub async fn close_usage_before(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    customer_id: &str,
    end: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "SELECT customer_id FROM customers WHERE tenant_id = $1 AND customer_id = $2 FOR UPDATE",
        tenant_id.as_str(),
        customer_id
    )
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE customers SET usage_closed_before = GREATEST(usage_closed_before, $3)
             WHERE tenant_id = $1 AND customer_id = $2",
        tenant_id.as_str(),
        customer_id,
        end
    )
    .execute(&mut *conn)
    .await
    .map(drop)
}

pub async fn delete_overage_lines(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    invoice_id: &InvoiceId,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "DELETE FROM invoice_lines WHERE tenant_id = $1 AND invoice_id = $2 AND type = 'overage'",
        tenant_id.as_str(),
        invoice_id.as_str()
    )
    .execute(&mut *conn)
    .await
    .map(drop)
}

/// Finalizes a draft at `now`: `open`, or `paid` at once when nothing is due; due after the
/// customer's payment terms.
pub async fn mark_finalized(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    invoice_id: &InvoiceId,
    now: DateTime<Utc>,
) -> Result<InvoiceRow, sqlx::Error> {
    sqlx::query_as!(
        InvoiceRow,
        r#"UPDATE invoices SET
               status = CASE WHEN amount_due = 0 THEN 'paid' ELSE 'open' END,
               paid_at = CASE WHEN amount_due = 0 THEN $3::timestamptz END,
               finalized_at = $3,
               -- Days in UTC (calendar periods are UTC), immutable as Citus needs.
               due_date = ($3::timestamptz AT TIME ZONE 'UTC'
                           + make_interval(days => net_days)) AT TIME ZONE 'UTC',
               finalize_at = NULL, updated_at = now()
           WHERE tenant_id = $1 AND invoice_id = $2
           RETURNING invoice_id AS "invoice_id: InvoiceId", number, customer_id, subscription_id AS "subscription_id: SubscriptionId", billing_reason,
                   status AS "status: InvoiceStatus", currency, subtotal, total, amount_due,
                   period_start, period_end, usage_period_start, usage_period_end,
                   usage_plan_key, usage_plan_version, net_days, due_date, finalize_at,
                   created_at, finalized_at, paid_at, paid_out_of_band, voided_at, credit_applied, credit_notes_total"#,
        tenant_id.as_str(),
        invoice_id.as_str(),
        now
    )
    .fetch_one(&mut *conn)
    .await
}

pub struct LineRow {
    pub line_no: i32,
    pub kind: LineType,
    pub description: String,
    pub feature_key: Option<String>,
    pub quantity: Decimal,
    pub unit_amount: Decimal,
    pub amount: Decimal,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
}

/// The lines of several invoices, as `(invoice_id, line)` in invoice and line order.
pub async fn lines(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    invoice_ids: &[InvoiceId],
) -> Result<Vec<(InvoiceId, LineRow)>, sqlx::Error> {
    let ids: Vec<&str> = invoice_ids.iter().map(InvoiceId::as_str).collect();
    let rows = sqlx::query!(
        r#"SELECT invoice_id AS "invoice_id: InvoiceId", line_no, type, description, feature_key, quantity, unit_amount,
                amount, period_start, period_end
         FROM invoice_lines WHERE tenant_id = $1 AND invoice_id = ANY($2)
         ORDER BY invoice_id, line_no"#,
        tenant_id.as_str(),
        &ids as &[&str]
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok((
                r.invoice_id,
                LineRow {
                    line_no: r.line_no,
                    kind: super::decode("invoice_lines.type", &r.r#type, LineType::parse)?,
                    description: r.description,
                    feature_key: r.feature_key,
                    quantity: r.quantity,
                    unit_amount: r.unit_amount,
                    amount: r.amount,
                    period_start: r.period_start,
                    period_end: r.period_end,
                },
            ))
        })
        .collect()
}

/// Marks an invoice paid at `now`; dunning stops.
pub async fn mark_paid(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    invoice_id: &InvoiceId,
    now: DateTime<Utc>,
    out_of_band: bool,
) -> Result<InvoiceRow, sqlx::Error> {
    sqlx::query_as!(
        InvoiceRow,
        r#"UPDATE invoices SET status = 'paid', paid_at = $3, paid_out_of_band = $4,
               amount_paid = amount_due,
               next_payment_attempt = NULL, uncollectible_at = NULL, updated_at = now()
           WHERE tenant_id = $1 AND invoice_id = $2
           RETURNING invoice_id AS "invoice_id: InvoiceId", number, customer_id, subscription_id AS "subscription_id: SubscriptionId", billing_reason,
                   status AS "status: InvoiceStatus", currency, subtotal, total, amount_due,
                   period_start, period_end, usage_period_start, usage_period_end,
                   usage_plan_key, usage_plan_version, net_days, due_date, finalize_at,
                   created_at, finalized_at, paid_at, paid_out_of_band, voided_at, credit_applied, credit_notes_total"#,
        tenant_id.as_str(),
        invoice_id.as_str(),
        now,
        out_of_band
    )
    .fetch_one(&mut *conn)
    .await
}

/// Whether a `past_due` subscription has no other invoice in dunning (so it can be active
/// again).
pub async fn dunning_over(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    subscription_id: &SubscriptionId,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query_scalar!(
        r#"SELECT s.status = 'past_due' AND NOT EXISTS (
                   SELECT 1 FROM invoices i WHERE i.tenant_id = $1
                      AND i.subscription_id = s.subscription_id AND i.status = 'open'
                      AND i.payment_attempts > 0) AS "reactivate!"
               FROM subscriptions s WHERE s.tenant_id = $1 AND s.subscription_id = $2"#,
        tenant_id.as_str(),
        subscription_id.as_str()
    )
    .fetch_optional(&mut *conn)
    .await?
    .unwrap_or(false))
}

pub async fn mark_void(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    invoice_id: &InvoiceId,
    now: DateTime<Utc>,
) -> Result<InvoiceRow, sqlx::Error> {
    sqlx::query_as!(
        InvoiceRow,
        r#"UPDATE invoices SET status = 'void', voided_at = $3, amount_due = 0,
               finalize_at = NULL, updated_at = now()
           WHERE tenant_id = $1 AND invoice_id = $2
           RETURNING invoice_id AS "invoice_id: InvoiceId", number, customer_id, subscription_id AS "subscription_id: SubscriptionId", billing_reason,
                   status AS "status: InvoiceStatus", currency, subtotal, total, amount_due,
                   period_start, period_end, usage_period_start, usage_period_end,
                   usage_plan_key, usage_plan_version, net_days, due_date, finalize_at,
                   created_at, finalized_at, paid_at, paid_out_of_band, voided_at, credit_applied, credit_notes_total"#,
        tenant_id.as_str(),
        invoice_id.as_str(),
        now
    )
    .fetch_one(&mut *conn)
    .await
}

/// A page of a customer's invoices, newest first.
pub async fn for_customer(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    customer: &str,
    starting_after: Option<&str>,
    limit: i64,
) -> Result<Vec<InvoiceRow>, sqlx::Error> {
    sqlx::query_as!(
        InvoiceRow,
        r#"SELECT invoice_id AS "invoice_id: InvoiceId", number, customer_id, subscription_id AS "subscription_id: SubscriptionId", billing_reason,
                   status AS "status: InvoiceStatus", currency, subtotal, total, amount_due,
                   period_start, period_end, usage_period_start, usage_period_end,
                   usage_plan_key, usage_plan_version, net_days, due_date, finalize_at,
                   created_at, finalized_at, paid_at, paid_out_of_band, voided_at, credit_applied, credit_notes_total
           FROM invoices
           WHERE tenant_id = $1 AND customer_id = $2 AND ($3::text IS NULL OR invoice_id < $3)
           ORDER BY invoice_id DESC LIMIT $4"#,
        tenant_id.as_str(),
        customer,
        starting_after,
        limit
    )
    .fetch_all(&mut *conn)
    .await
}

pub async fn payment_attempts(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    invoice_id: &InvoiceId,
) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT payment_attempts FROM invoices WHERE tenant_id = $1 AND invoice_id = $2",
        tenant_id.as_str(),
        invoice_id.as_str()
    )
    .fetch_one(&mut *conn)
    .await
}

/// Who an invoice is from and to.
pub struct Parties {
    pub tenant_name: String,
    pub name: Option<String>,
    pub email: Option<String>,
}

pub async fn parties(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    customer: &str,
) -> Result<Parties, sqlx::Error> {
    sqlx::query_as!(
        Parties,
        "SELECT t.name AS tenant_name, c.name, c.email FROM tenants t
         JOIN customers c ON c.tenant_id = $1 AND c.customer_id = $2
         WHERE t.tenant_id = $1",
        tenant_id.as_str(),
        customer
    )
    .fetch_one(&mut *conn)
    .await
}

/// How many payment attempts of an invoice failed, and when the first did.
pub struct PaymentState {
    pub payment_attempts: i32,
    pub payment_failed_at: Option<DateTime<Utc>>,
}

pub async fn payment_state(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    invoice_id: &InvoiceId,
) -> Result<PaymentState, sqlx::Error> {
    sqlx::query_as!(
        PaymentState,
        "SELECT payment_attempts, payment_failed_at FROM invoices
         WHERE tenant_id = $1 AND invoice_id = $2",
        tenant_id.as_str(),
        invoice_id.as_str()
    )
    .fetch_one(&mut *conn)
    .await
}

/// Records failed attempt `attempt`: the next retry at `retry_at`, or (none left) the invoice
/// becomes `uncollectible` at `now`.
pub struct PaymentFailure<'a> {
    pub attempt: i32,
    pub first_failed: DateTime<Utc>,
    pub retry_at: Option<DateTime<Utc>>,
    pub error: &'a str,
    pub now: DateTime<Utc>,
}

pub async fn record_payment_failure(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    invoice_id: &InvoiceId,
    f: &PaymentFailure<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE invoices SET payment_attempts = $3, payment_failed_at = $4,
             next_payment_attempt = $5, last_payment_error = $6,
             status = CASE WHEN $5::timestamptz IS NULL THEN 'uncollectible' ELSE status END,
             uncollectible_at = CASE WHEN $5::timestamptz IS NULL THEN $7::timestamptz END,
             updated_at = now()
         WHERE tenant_id = $1 AND invoice_id = $2",
        tenant_id.as_str(),
        invoice_id.as_str(),
        f.attempt,
        f.first_failed,
        f.retry_at,
        f.error,
        f.now
    )
    .execute(&mut *conn)
    .await
    .map(drop)
}

/// Takes a due retry off the schedule (it is being attempted).
pub async fn clear_next_attempt(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    invoice_id: &InvoiceId,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE invoices SET next_payment_attempt = NULL, updated_at = now()
         WHERE tenant_id = $1 AND invoice_id = $2",
        tenant_id.as_str(),
        invoice_id.as_str()
    )
    .execute(&mut *conn)
    .await
    .map(drop)
}
