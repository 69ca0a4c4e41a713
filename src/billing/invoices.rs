//! Invoices in the database: creation with per-tenant gapless numbers, overage lines from the
//! usage counters, finalization (which closes the billed usage period), payment and voiding.

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;

use crate::db::plans::PlanCache;
use crate::domain::invoice::{Line, LineType};
use crate::domain::money;
use crate::domain::status::{InvoiceStatus, SubscriptionStatus};
use crate::error::{Error, Result};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InvoiceRow {
    pub invoice_id: String,
    pub number: i64,
    pub customer_id: String,
    pub subscription_id: Option<String>,
    pub billing_reason: String,
    #[sqlx(try_from = "String")]
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
}

/// The columns of [`InvoiceRow`], for `SELECT`/`RETURNING`.
pub const COLUMNS: &str = "invoice_id, number, customer_id, subscription_id, billing_reason,
    status, currency, subtotal, total, amount_due, period_start, period_end, usage_period_start,
    usage_period_end, usage_plan_key, usage_plan_version, net_days, due_date, finalize_at,
    created_at, finalized_at, paid_at, paid_out_of_band, voided_at";

/// The ended period whose usage an invoice bills in arrears, at a plan version's prices.
#[derive(Debug, Clone)]
pub struct UsageWindow {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub plan_key: String,
    pub plan_version: i32,
}

pub struct NewInvoice<'a> {
    pub tenant_id: &'a str,
    pub customer_id: &'a str,
    pub subscription_id: Option<&'a str>,
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
    let number = sqlx::query_scalar!(
        "INSERT INTO invoice_numbers (tenant_id, last_number) VALUES ($1, 1)
         ON CONFLICT (tenant_id) DO UPDATE SET last_number = invoice_numbers.last_number + 1
         RETURNING last_number",
        new.tenant_id
    )
    .fetch_one(&mut *conn)
    .await?;
    let invoice_id = crate::ids::new_id("in");
    sqlx::query!(
        "INSERT INTO invoices (tenant_id, invoice_id, number, customer_id, subscription_id,
             billing_reason, status, currency, subtotal, total, amount_due, period_start,
             period_end, usage_period_start, usage_period_end, usage_plan_key,
             usage_plan_version, net_days, finalize_at, created_at, updated_at)
         SELECT $1, $2, $3, $4, $5, $6, 'draft', $7, 0, 0, 0, $8, $9, $10, $11, $12, $13,
                c.net_days, $14, $15, $15
         FROM customers c WHERE c.tenant_id = $1 AND c.customer_id = $4",
        new.tenant_id,
        invoice_id,
        number,
        new.customer_id,
        new.subscription_id,
        new.billing_reason,
        new.currency,
        new.period_start,
        new.period_end,
        new.usage.as_ref().map(|u| u.start),
        new.usage.as_ref().map(|u| u.end),
        new.usage.as_ref().map(|u| u.plan_key.as_str()),
        new.usage.as_ref().map(|u| u.plan_version),
        new.finalize_at,
        new.now
    )
    .execute(&mut *conn)
    .await?;
    insert_lines(conn, new.tenant_id, &invoice_id, &new.lines).await?;
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
        insert_lines(conn, new.tenant_id, &invoice_id, &lines).await?;
    }
    if new.finalize_at <= new.now {
        return finalize(conn, plans, new.tenant_id, &invoice_id, new.now).await;
    }
    refresh_totals(conn, new.tenant_id, &invoice_id).await
}

/// Appends lines after the invoice's last one.
async fn insert_lines(
    conn: &mut PgConnection,
    tenant_id: &str,
    invoice_id: &str,
    lines: &[Line],
) -> Result<()> {
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
        tenant_id,
        invoice_id,
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
    .await?;
    Ok(())
}

/// Sets subtotal, total and amount due from the lines (sums of rounded amounts).
async fn refresh_totals(
    conn: &mut PgConnection,
    tenant_id: &str,
    invoice_id: &str,
) -> Result<InvoiceRow> {
    let row = sqlx::query_as::<_, InvoiceRow>(&format!(
        "UPDATE invoices i SET subtotal = t.sum, total = t.sum, amount_due = GREATEST(t.sum, 0),
             updated_at = now()
         FROM (SELECT COALESCE(sum(amount), 0) AS sum FROM invoice_lines
               WHERE tenant_id = $1 AND invoice_id = $2) t
         WHERE i.tenant_id = $1 AND i.invoice_id = $2
         RETURNING {COLUMNS}"
    ))
    .bind(tenant_id)
    .bind(invoice_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(row)
}

/// One `overage` line per feature for the usage of `window`, at the window's plan version's
/// prices: every counter period that ended within `(start, end]` (a billing-period counter,
/// and the days or calendar months that closed in it), each capped by its own spend cap and
/// rounded up to whole packages. Features reported to Stripe meters are billed by Stripe.
pub async fn overage_lines(
    conn: &mut PgConnection,
    plans: &PlanCache,
    tenant_id: &str,
    customer_id: &str,
    window: &UsageWindow,
    currency: &str,
) -> Result<Vec<Line>> {
    let Some(plan) = plans
        .get(conn, tenant_id, &window.plan_key, window.plan_version)
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
    let counters = sqlx::query!(
        r#"SELECT c.feature_key, c.used, f.name, f.unit
           FROM usage_counters c
           JOIN features f ON f.tenant_id = c.tenant_id AND f.feature_key = c.feature_key
           WHERE c.tenant_id = $1 AND c.customer_id = $2
             AND c.period_end > $3 AND c.period_end <= $4
             AND f.stripe_meter_event_name IS NULL
           ORDER BY c.feature_key, c.period_start"#,
        tenant_id,
        customer_id,
        window.start,
        window.end
    )
    .fetch_all(&mut *conn)
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
    tenant_id: &str,
    invoice_id: &str,
    now: DateTime<Utc>,
) -> Result<InvoiceRow> {
    let inv = sqlx::query_as::<_, InvoiceRow>(&format!(
        "SELECT {COLUMNS} FROM invoices WHERE tenant_id = $1 AND invoice_id = $2 FOR UPDATE"
    ))
    .bind(tenant_id)
    .bind(invoice_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(invoice_not_found)?;
    if inv.status != InvoiceStatus::Draft {
        return Err(Error::conflict(
            "invoice_not_draft",
            "Only a draft invoice can be finalized.",
        ));
    }
    if let (Some(start), Some(end), Some(key), Some(version)) = (
        inv.usage_period_start,
        inv.usage_period_end,
        inv.usage_plan_key.clone(),
        inv.usage_plan_version,
    ) {
        sqlx::query!(
            "SELECT customer_id FROM customers WHERE tenant_id = $1 AND customer_id = $2 FOR UPDATE",
            tenant_id,
            inv.customer_id
        )
        .fetch_one(&mut *conn)
        .await?;
        sqlx::query!(
            "UPDATE customers SET usage_closed_before = GREATEST(usage_closed_before, $3)
             WHERE tenant_id = $1 AND customer_id = $2",
            tenant_id,
            inv.customer_id,
            end
        )
        .execute(&mut *conn)
        .await?;
        sqlx::query!(
            "DELETE FROM invoice_lines WHERE tenant_id = $1 AND invoice_id = $2 AND type = 'overage'",
            tenant_id,
            invoice_id
        )
        .execute(&mut *conn)
        .await?;
        let window = UsageWindow {
            start,
            end,
            plan_key: key,
            plan_version: version,
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
        insert_lines(conn, tenant_id, invoice_id, &lines).await?;
    }
    refresh_totals(conn, tenant_id, invoice_id).await?;
    let row = sqlx::query_as::<_, InvoiceRow>(&format!(
        "UPDATE invoices SET
             status = CASE WHEN amount_due = 0 THEN 'paid' ELSE 'open' END,
             paid_at = CASE WHEN amount_due = 0 THEN $3 END,
             finalized_at = $3, due_date = $3 + make_interval(days => net_days),
             finalize_at = NULL, updated_at = now()
         WHERE tenant_id = $1 AND invoice_id = $2
         RETURNING {COLUMNS}"
    ))
    .bind(tenant_id)
    .bind(invoice_id)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
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
        crate::stripe::sync::enqueue(
            conn,
            tenant_id,
            crate::stripe::sync::Kind::Invoice,
            invoice_id,
            None,
        )
        .await?;
    }
    Ok(row)
}

/// Emits an invoice event with the invoice as the API shows it.
pub async fn emit(
    conn: &mut PgConnection,
    tenant_id: &str,
    event_type: &str,
    invoice_id: &str,
) -> Result<()> {
    // The invoice with its lines is two queries: only when an endpoint will get it.
    if !crate::webhooks::events::wanted(conn, tenant_id, event_type).await? {
        return Ok(());
    }
    let invoice = super::views::load_invoice(conn, tenant_id, invoice_id).await?;
    crate::webhooks::events::emit(conn, tenant_id, event_type, &invoice).await
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

pub async fn lines(
    conn: &mut PgConnection,
    tenant_id: &str,
    invoice_ids: &[String],
) -> Result<Vec<(String, LineRow)>> {
    let rows = sqlx::query!(
        "SELECT invoice_id, line_no, type, description, feature_key, quantity, unit_amount,
                amount, period_start, period_end
         FROM invoice_lines WHERE tenant_id = $1 AND invoice_id = ANY($2)
         ORDER BY invoice_id, line_no",
        tenant_id,
        invoice_ids
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok((
                r.invoice_id,
                LineRow {
                    line_no: r.line_no,
                    kind: crate::db::decode("invoice_lines.type", &r.r#type, LineType::parse)?,
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

pub async fn get(
    conn: &mut PgConnection,
    tenant_id: &str,
    invoice_id: &str,
    for_update: bool,
) -> Result<InvoiceRow> {
    let lock = if for_update { " FOR UPDATE" } else { "" };
    sqlx::query_as::<_, InvoiceRow>(&format!(
        "SELECT {COLUMNS} FROM invoices WHERE tenant_id = $1 AND invoice_id = $2{lock}"
    ))
    .bind(tenant_id)
    .bind(invoice_id)
    .fetch_optional(&mut *conn)
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
    tenant_id: &str,
    invoice_id: &str,
    now: DateTime<Utc>,
    out_of_band: bool,
) -> Result<InvoiceRow> {
    let inv = get(conn, tenant_id, invoice_id, true).await?;
    payable(&inv)?;
    let row = sqlx::query_as::<_, InvoiceRow>(&format!(
        "UPDATE invoices SET status = 'paid', paid_at = $3, paid_out_of_band = $4,
             next_payment_attempt = NULL, uncollectible_at = NULL, updated_at = now()
         WHERE tenant_id = $1 AND invoice_id = $2 RETURNING {COLUMNS}"
    ))
    .bind(tenant_id)
    .bind(invoice_id)
    .bind(now)
    .bind(out_of_band)
    .fetch_one(&mut *conn)
    .await?;
    if let Some(sub) = &row.subscription_id {
        // Active again once nothing else of it is in dunning.
        let reactivate = sqlx::query_scalar!(
            r#"SELECT s.status = 'past_due' AND NOT EXISTS (
                   SELECT 1 FROM invoices i WHERE i.tenant_id = s.tenant_id
                      AND i.subscription_id = s.subscription_id AND i.status = 'open'
                      AND i.payment_attempts > 0) AS "reactivate!"
               FROM subscriptions s WHERE s.tenant_id = $1 AND s.subscription_id = $2"#,
            tenant_id,
            sub
        )
        .fetch_optional(&mut *conn)
        .await?
        .unwrap_or(false);
        if reactivate {
            super::subscriptions::set_status(conn, tenant_id, sub, SubscriptionStatus::Active)
                .await?;
        }
    }
    if out_of_band {
        let payload = serde_json::json!({"paid_out_of_band": true});
        crate::stripe::sync::enqueue(
            conn,
            tenant_id,
            crate::stripe::sync::Kind::InvoicePayment,
            invoice_id,
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
    tenant_id: &str,
    invoice_id: &str,
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
    let row = sqlx::query_as::<_, InvoiceRow>(&format!(
        "UPDATE invoices SET status = 'void', voided_at = $3, amount_due = 0,
             finalize_at = NULL, updated_at = now()
         WHERE tenant_id = $1 AND invoice_id = $2 RETURNING {COLUMNS}"
    ))
    .bind(tenant_id)
    .bind(invoice_id)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    crate::stripe::sync::enqueue(
        conn,
        tenant_id,
        crate::stripe::sync::Kind::InvoiceVoid,
        invoice_id,
        None,
    )
    .await?;
    Ok(row)
}

pub fn invoice_not_found() -> Error {
    Error::not_found("invoice_not_found", "No such invoice.")
}

/// `at + minutes`.
pub fn after_minutes(at: DateTime<Utc>, minutes: i32) -> DateTime<Utc> {
    at + Duration::minutes(minutes as i64)
}

/// A page of a customer's invoices, newest first.
pub async fn for_customer(
    conn: &mut PgConnection,
    tenant_id: &str,
    customer: &str,
    starting_after: Option<&str>,
    limit: i64,
) -> Result<Vec<InvoiceRow>> {
    Ok(sqlx::query_as::<_, InvoiceRow>(&format!(
        "SELECT {COLUMNS} FROM invoices
         WHERE tenant_id = $1 AND customer_id = $2 AND ($3::text IS NULL OR invoice_id < $3)
         ORDER BY invoice_id DESC LIMIT $4"
    ))
    .bind(tenant_id)
    .bind(customer)
    .bind(starting_after)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?)
}

pub async fn payment_attempts(
    conn: &mut PgConnection,
    tenant_id: &str,
    invoice_id: &str,
) -> Result<i32> {
    Ok(sqlx::query_scalar!(
        "SELECT payment_attempts FROM invoices WHERE tenant_id = $1 AND invoice_id = $2",
        tenant_id,
        invoice_id
    )
    .fetch_one(&mut *conn)
    .await?)
}

/// Who an invoice is from and to.
pub struct Parties {
    pub tenant_name: String,
    pub name: Option<String>,
    pub email: Option<String>,
}

pub async fn parties(conn: &mut PgConnection, tenant_id: &str, customer: &str) -> Result<Parties> {
    Ok(sqlx::query_as!(
        Parties,
        "SELECT t.name AS tenant_name, c.name, c.email FROM tenants t
         JOIN customers c ON c.tenant_id = t.tenant_id AND c.customer_id = $2
         WHERE t.tenant_id = $1",
        tenant_id,
        customer
    )
    .fetch_one(&mut *conn)
    .await?)
}
