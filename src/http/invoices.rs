//! Invoices (SPEC §8): read, list, pay out of band, void, PDF, and the upcoming invoice.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::auth::TenantCtx;
use super::extract::{List, OptionalJson, PageParams, Path, Query};
use super::types::Qty;
use crate::billing::invoices::{self as inv, InvoiceRow, LineRow, UsageWindow, COLUMNS};
use crate::billing::lifecycle::{price_of, subscription_line};
use crate::db::subscriptions::{self as subs, customer_not_found};
use crate::domain::invoice::{Line, LineType};
use crate::domain::money;
use crate::domain::period::{billing_period_containing, Interval};
use crate::error::{ApiError, ApiResult};
use crate::AppState;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InvoiceLine {
    #[serde(rename = "type")]
    pub kind: LineType,
    pub description: String,
    pub feature: Option<String>,
    pub quantity: Qty,
    pub unit_amount: String,
    pub amount: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Invoice {
    pub id: String,
    /// `INV-000001`: per tenant, gapless.
    pub number: String,
    pub customer: String,
    pub subscription: Option<String>,
    /// `draft`, `open`, `paid`, `void` or `uncollectible`.
    pub status: String,
    /// `subscription_create`, `subscription_cycle`, `subscription_update` or
    /// `subscription_cancel`.
    pub billing_reason: String,
    pub currency: String,
    pub lines: Vec<InvoiceLine>,
    pub subtotal: String,
    pub total: String,
    pub amount_due: String,
    pub due_date: Option<DateTime<Utc>>,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub finalized_at: Option<DateTime<Utc>>,
    /// When a draft is due to be finalized.
    pub finalizes_at: Option<DateTime<Utc>>,
    pub paid_at: Option<DateTime<Utc>>,
    pub paid_out_of_band: bool,
    pub voided_at: Option<DateTime<Utc>>,
}

pub fn number(n: i64) -> String {
    format!("INV-{n:06}")
}

fn line_out(kind: LineType, l: &Line, currency: &str) -> InvoiceLine {
    InvoiceLine {
        kind,
        description: l.description.clone(),
        feature: l.feature.clone(),
        quantity: Qty(l.quantity),
        unit_amount: money::format_unit(l.unit_amount, currency),
        amount: money::format(l.amount, currency),
        period_start: l.period_start,
        period_end: l.period_end,
    }
}

fn stored_line(l: LineRow, currency: &str) -> InvoiceLine {
    let kind = LineType::parse(&l.kind).unwrap_or(LineType::Addon);
    let line = Line {
        kind,
        description: l.description,
        feature: l.feature_key,
        quantity: l.quantity,
        unit_amount: l.unit_amount,
        amount: l.amount,
        period_start: l.period_start,
        period_end: l.period_end,
    };
    line_out(kind, &line, currency)
}

fn invoice_out(r: InvoiceRow, lines: Vec<LineRow>) -> Invoice {
    let c = r.currency.clone();
    Invoice {
        number: number(r.number),
        lines: lines.into_iter().map(|l| stored_line(l, &c)).collect(),
        subtotal: money::format(r.subtotal, &c),
        total: money::format(r.total, &c),
        amount_due: money::format(r.amount_due, &c),
        id: r.invoice_id,
        customer: r.customer_id,
        subscription: r.subscription_id,
        status: r.status,
        billing_reason: r.billing_reason,
        currency: r.currency,
        due_date: r.due_date,
        period_start: r.period_start,
        period_end: r.period_end,
        created_at: r.created_at,
        finalized_at: r.finalized_at,
        finalizes_at: r.finalize_at,
        paid_at: r.paid_at,
        paid_out_of_band: r.paid_out_of_band,
        voided_at: r.voided_at,
    }
}

/// Invoices with their lines (one query for all the lines).
async fn with_lines(
    conn: &mut sqlx::PgConnection,
    tenant_id: &str,
    rows: Vec<InvoiceRow>,
) -> ApiResult<Vec<Invoice>> {
    let ids: Vec<String> = rows.iter().map(|r| r.invoice_id.clone()).collect();
    let mut by_invoice: std::collections::HashMap<String, Vec<LineRow>> =
        std::collections::HashMap::new();
    for (id, line) in inv::lines(conn, tenant_id, &ids).await? {
        by_invoice.entry(id).or_default().push(line);
    }
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let l = by_invoice.remove(&r.invoice_id).unwrap_or_default();
        out.push(invoice_out(r, l));
    }
    Ok(out)
}

async fn load(state: &AppState, ctx: &TenantCtx, id: &str) -> ApiResult<Invoice> {
    let mut conn = state.db.acquire().await?;
    load_in(&mut conn, &ctx.tenant_id, id).await
}

/// An invoice with its lines, as the API shows it.
pub async fn load_in(
    conn: &mut sqlx::PgConnection,
    tenant_id: &str,
    id: &str,
) -> ApiResult<Invoice> {
    let row = inv::get(conn, tenant_id, id, false).await?;
    let mut v = with_lines(conn, tenant_id, vec![row]).await?;
    v.pop().ok_or_else(inv::invoice_not_found)
}

#[utoipa::path(get, path = "/v1/invoices/{id}", tag = "invoices",
    params(("id" = String, Path, description = "Invoice id")),
    responses((status = 200, body = Invoice), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_invoice(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Invoice>> {
    load(&state, &ctx, &id).await.map(axum::Json)
}

#[utoipa::path(get, path = "/v1/customers/{id}/invoices", tag = "invoices",
    params(("id" = String, Path, description = "Customer id"), PageParams),
    responses((status = 200, description = "The customer's invoices, newest first", body = List<Invoice>),
              (status = 404, body = crate::error::ErrorBody)))]
pub async fn customer_invoices(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(customer): Path<String>,
    Query(page): Query<PageParams>,
) -> ApiResult<axum::Json<List<Invoice>>> {
    let limit = page.limit()?;
    let mut conn = state.db.acquire().await?;
    customer_exists(&mut conn, &ctx.tenant_id, &customer).await?;
    let rows = sqlx::query_as::<_, InvoiceRow>(&format!(
        "SELECT {COLUMNS} FROM invoices
         WHERE tenant_id = $1 AND customer_id = $2 AND ($3::text IS NULL OR invoice_id < $3)
         ORDER BY invoice_id DESC LIMIT $4"
    ))
    .bind(&ctx.tenant_id)
    .bind(&customer)
    .bind(&page.starting_after)
    .bind(limit + 1)
    .fetch_all(&mut *conn)
    .await?;
    let list = List::from_rows(rows, limit);
    let data = with_lines(&mut conn, &ctx.tenant_id, list.data).await?;
    Ok(axum::Json(List {
        data,
        has_more: list.has_more,
    }))
}

/// `404 customer_not_found` unless the customer exists (and is not deleted).
pub async fn customer_exists(
    conn: &mut sqlx::PgConnection,
    tenant_id: &str,
    customer: &str,
) -> ApiResult<()> {
    let exists = sqlx::query_scalar!(
        "SELECT EXISTS (SELECT 1 FROM customers WHERE tenant_id = $1 AND customer_id = $2
                        AND deleted_at IS NULL) AS \"e!\"",
        tenant_id,
        customer
    )
    .fetch_one(&mut *conn)
    .await?;
    if exists {
        Ok(())
    } else {
        Err(customer_not_found())
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayInvoice {
    /// `true`: the money was collected outside Tollgate (bank transfer, cash...).
    pub paid_out_of_band: Option<bool>,
}

#[utoipa::path(post, path = "/v1/invoices/{id}/pay", tag = "invoices",
    params(("id" = String, Path, description = "Invoice id")),
    request_body = PayInvoice,
    responses((status = 200, description = "Paid out of band", body = Invoice),
              (status = 202, description = "A payment through Stripe was queued; the invoice turns `paid` (or dunning starts) when Stripe answers", body = Invoice),
              (status = 400, description = "Not out of band and the tenant is not connected to Stripe", body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody),
              (status = 409, description = "Not open (draft, paid or void)", body = crate::error::ErrorBody)))]
pub async fn pay_invoice(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<PayInvoice>,
) -> ApiResult<(axum::http::StatusCode, axum::Json<Invoice>)> {
    let now = ctx.now(&state);
    let mut tx = state.db.begin().await?;
    let status = if body.and_then(|b| b.paid_out_of_band) == Some(true) {
        inv::mark_paid(&mut tx, &ctx.tenant_id, &id, now, true).await?;
        axum::http::StatusCode::OK
    } else {
        let row = inv::get(&mut tx, &ctx.tenant_id, &id, true).await?;
        inv::payable(&row)?;
        let attempts = sqlx::query_scalar!(
            "SELECT payment_attempts FROM invoices WHERE tenant_id = $1 AND invoice_id = $2",
            ctx.tenant_id,
            id
        )
        .fetch_one(&mut *tx)
        .await?;
        let queued = crate::stripe_sync::enqueue(
            &mut tx,
            &ctx.tenant_id,
            crate::stripe_sync::Kind::InvoicePayment,
            &id,
            Some(serde_json::json!({ "attempt": attempts + 1 })),
        )
        .await?;
        if !queued {
            return Err(ApiError::invalid_param(
                "stripe_not_configured",
                "paid_out_of_band",
                "The tenant is not connected to Stripe (PATCH /v1/tenant with stripe.secret_key); pass {\"paid_out_of_band\": true} to record a payment made elsewhere.",
            ));
        }
        axum::http::StatusCode::ACCEPTED
    };
    tx.commit().await?;
    Ok((status, load(&state, &ctx, &id).await.map(axum::Json)?))
}

#[utoipa::path(post, path = "/v1/invoices/{id}/void", tag = "invoices",
    params(("id" = String, Path, description = "Invoice id")),
    responses((status = 200, body = Invoice), (status = 404, body = crate::error::ErrorBody),
              (status = 409, description = "Already paid or void", body = crate::error::ErrorBody)))]
pub async fn void_invoice(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Invoice>> {
    let now = ctx.now(&state);
    let mut tx = state.db.begin().await?;
    inv::void(&mut tx, &ctx.tenant_id, &id, now).await?;
    tx.commit().await?;
    load(&state, &ctx, &id).await.map(axum::Json)
}

#[utoipa::path(get, path = "/v1/invoices/{id}/pdf", tag = "invoices",
    params(("id" = String, Path, description = "Invoice id")),
    responses((status = 200, description = "The invoice as a PDF", content_type = "application/pdf"),
              (status = 404, body = crate::error::ErrorBody)))]
pub async fn invoice_pdf(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let invoice = load(&state, &ctx, &id).await?;
    let mut conn = state.db.acquire().await?;
    let who = sqlx::query!(
        "SELECT t.name AS tenant_name, c.name, c.email FROM tenants t
         JOIN customers c ON c.tenant_id = t.tenant_id AND c.customer_id = $2
         WHERE t.tenant_id = $1",
        ctx.tenant_id,
        invoice.customer
    )
    .fetch_one(&mut *conn)
    .await?;
    let day = |t: DateTime<Utc>| t.format("%Y-%m-%d").to_string();
    let doc = crate::billing::pdf::PdfInvoice {
        number: invoice.number.clone(),
        status: invoice.status.clone(),
        seller: who.tenant_name,
        customer_id: invoice.customer.clone(),
        customer_name: who.name,
        customer_email: who.email,
        issued: day(invoice.finalized_at.unwrap_or(invoice.created_at)),
        due: invoice.due_date.map(day),
        period: format!(
            "{} to {}",
            day(invoice.period_start),
            day(invoice.period_end)
        ),
        currency: invoice.currency.clone(),
        lines: invoice
            .lines
            .iter()
            .map(|l| {
                (
                    l.description.clone(),
                    l.quantity.0.normalize().to_string(),
                    l.unit_amount.clone(),
                    l.amount.clone(),
                )
            })
            .collect(),
        subtotal: invoice.subtotal.clone(),
        total: invoice.total.clone(),
        amount_due: invoice.amount_due.clone(),
    };
    let bytes = crate::billing::pdf::render(&doc);
    Ok((
        [
            (header::CONTENT_TYPE, "application/pdf".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("inline; filename=\"{}.pdf\"", invoice.number),
            ),
        ],
        bytes,
    )
        .into_response())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UpcomingInvoice {
    pub customer: String,
    pub subscription: String,
    pub currency: String,
    /// The next period's base fee (in advance) and the current period's overage so far.
    pub lines: Vec<InvoiceLine>,
    pub subtotal: String,
    pub total: String,
    pub amount_due: String,
    /// The current period, whose overage is previewed.
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    /// When the invoice will be created (the end of the current period).
    pub next_invoice_at: DateTime<Utc>,
}

#[utoipa::path(get, path = "/v1/customers/{id}/upcoming_invoice", tag = "invoices",
    params(("id" = String, Path, description = "Customer id")),
    responses((status = 200, body = UpcomingInvoice),
              (status = 404, description = "customer_not_found, or subscription_not_found when the customer has no live subscription", body = crate::error::ErrorBody)))]
pub async fn upcoming_invoice(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(customer): Path<String>,
) -> ApiResult<axum::Json<UpcomingInvoice>> {
    let mut conn = state.db.acquire().await?;
    customer_exists(&mut conn, &ctx.tenant_id, &customer).await?;
    let sub = subs::live_for_customer(&mut conn, &ctx.tenant_id, &customer)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(
                "subscription_not_found",
                "The customer has no live subscription.",
            )
        })?;
    let missing = || ApiError::internal_msg("subscription plan version missing");
    let plan = state
        .plans
        .get(&mut conn, &ctx.tenant_id, &sub.plan_key, sub.plan_version)
        .await?
        .ok_or_else(missing)?;
    let interval = Interval::parse(&sub.interval).unwrap_or(Interval::Month);
    let (next_plan, next_interval) = match (&sub.pending_plan_key, sub.pending_plan_version) {
        (Some(key), Some(version)) => (
            state
                .plans
                .get(&mut conn, &ctx.tenant_id, key, version)
                .await?
                .ok_or_else(missing)?,
            sub.pending_interval
                .as_deref()
                .and_then(Interval::parse)
                .unwrap_or(interval),
        ),
        _ => (plan.clone(), interval),
    };
    let currency = next_plan.currency().to_string();
    let at = sub.current_period_end;
    let mut lines: Vec<InvoiceLine> = Vec::new();
    let price = price_of(&next_plan, next_interval);
    if !sub.cancel_at_period_end && price > Decimal::ZERO {
        let anchor = if sub.status == "trialing" || next_interval != interval {
            at
        } else {
            sub.billing_anchor
        };
        let next_end = billing_period_containing(anchor, next_interval, at)
            .end
            .unwrap_or(at);
        let line = subscription_line(&next_plan, next_interval, at, next_end);
        lines.push(line_out(LineType::Subscription, &line, &currency));
    }
    let mut total = lines
        .iter()
        .filter_map(|l| l.amount.parse::<Decimal>().ok())
        .fold(Decimal::ZERO, |a, b| a + b);
    if sub.status != "trialing" {
        let window = UsageWindow {
            start: sub.current_period_start,
            end: at,
            plan_key: sub.plan_key.clone(),
            plan_version: sub.plan_version,
        };
        let overage = inv::overage_lines(
            &mut conn,
            &state.plans,
            &ctx.tenant_id,
            &customer,
            &window,
            plan.currency(),
        )
        .await?;
        for l in &overage {
            total += l.amount;
            lines.push(line_out(LineType::Overage, l, &currency));
        }
    }
    Ok(axum::Json(UpcomingInvoice {
        customer,
        subscription: sub.subscription_id,
        lines,
        subtotal: money::format(total, &currency),
        total: money::format(total, &currency),
        amount_due: money::format(total.max(Decimal::ZERO), &currency),
        currency,
        period_start: sub.current_period_start,
        period_end: at,
        next_invoice_at: at,
    }))
}
