//! Invoices: read, list, pay, void, PDF, and the upcoming invoice.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::error::ApiResult;
use super::extract::{IdPath, Json, List, OptionalJson, PageParams, Path, Query};
use crate::audit::Origin;
use crate::billing::credit::{self, BalanceTransaction, CreateCreditNote, CreditNote, GrantCredit};
use crate::billing::invoicing::{self, Payment};
use crate::billing::views::{Invoice, UpcomingInvoice};
use crate::domain::id::InvoiceId;
use crate::tenancy::TenantCtx;
use crate::AppState;

#[utoipa::path(get, path = "/v1/invoices/{id}", tag = "invoices",
    params(("id" = String, Path, description = "Invoice id")),
    responses((status = 200, body = Invoice), (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn get_invoice(
    State(state): State<AppState>,
    ctx: TenantCtx,
    IdPath(id): IdPath<InvoiceId>,
) -> ApiResult<axum::Json<Invoice>> {
    Ok(axum::Json(
        invoicing::get(&state.db, &ctx.tenant_id, &id).await?,
    ))
}

#[utoipa::path(get, path = "/v1/customers/{id}/invoices", tag = "invoices",
    params(("id" = String, Path, description = "Customer id"), PageParams),
    responses((status = 200, description = "The customer's invoices, newest first", body = List<Invoice>),
              (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn customer_invoices(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(customer): Path<String>,
    Query(page): Query<PageParams>,
) -> ApiResult<axum::Json<List<Invoice>>> {
    let limit = page.limit()?;
    let rows = invoicing::for_customer(
        &state.db,
        &ctx.tenant_id,
        &customer,
        page.starting_after.as_deref(),
        limit,
    )
    .await?;
    Ok(axum::Json(List::from_rows(rows, limit)))
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
              (status = 400, description = "Not out of band and the tenant is not connected to Stripe", body = crate::http::error::ErrorBody),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, description = "Not open (draft, paid or void)", body = crate::http::error::ErrorBody)))]
pub async fn pay_invoice(
    State(state): State<AppState>,
    ctx: TenantCtx,
    origin: Origin,
    IdPath(id): IdPath<InvoiceId>,
    OptionalJson(body): OptionalJson<PayInvoice>,
) -> ApiResult<(StatusCode, axum::Json<Invoice>)> {
    let now = ctx.now(&state.clock);
    let (how, status) = if body.and_then(|b| b.paid_out_of_band) == Some(true) {
        (Payment::OutOfBand, StatusCode::OK)
    } else {
        (Payment::Stripe, StatusCode::ACCEPTED)
    };
    let invoice = invoicing::pay(&state.db, &origin, &ctx.tenant_id, &id, how, now).await?;
    Ok((status, axum::Json(invoice)))
}

#[utoipa::path(post, path = "/v1/invoices/{id}/void", tag = "invoices",
    params(("id" = String, Path, description = "Invoice id")),
    responses((status = 200, body = Invoice), (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, description = "Already paid or void", body = crate::http::error::ErrorBody)))]
pub async fn void_invoice(
    State(state): State<AppState>,
    ctx: TenantCtx,
    origin: Origin,
    IdPath(id): IdPath<InvoiceId>,
) -> ApiResult<axum::Json<Invoice>> {
    let now = ctx.now(&state.clock);
    Ok(axum::Json(
        invoicing::void(&state.db, &origin, &ctx.tenant_id, &id, now).await?,
    ))
}

#[utoipa::path(get, path = "/v1/invoices/{id}/pdf", tag = "invoices",
    params(("id" = String, Path, description = "Invoice id")),
    responses((status = 200, description = "The invoice as a PDF", content_type = "application/pdf"),
              (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn invoice_pdf(
    State(state): State<AppState>,
    ctx: TenantCtx,
    IdPath(id): IdPath<InvoiceId>,
) -> ApiResult<Response> {
    let (number, bytes) = invoicing::pdf(&state.db, &ctx.tenant_id, &id, None).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/pdf".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("inline; filename=\"{number}.pdf\""),
            ),
        ],
        bytes,
    )
        .into_response())
}

#[utoipa::path(get, path = "/v1/customers/{id}/upcoming_invoice", tag = "invoices",
    params(("id" = String, Path, description = "Customer id")),
    responses((status = 200, body = UpcomingInvoice),
              (status = 404, description = "customer_not_found, or subscription_not_found when the customer has no live subscription", body = crate::http::error::ErrorBody)))]
pub async fn upcoming_invoice(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(customer): Path<String>,
) -> ApiResult<axum::Json<UpcomingInvoice>> {
    Ok(axum::Json(
        invoicing::upcoming(&state.db, &state.plans, &ctx.tenant_id, &customer).await?,
    ))
}

#[utoipa::path(post, path = "/v1/invoices/{id}/credit_notes", tag = "invoices",
    request_body = CreateCreditNote,
    params(("id" = String, Path, description = "Invoice id")),
    responses((status = 201, description = "Issued: an open invoice asks less, a paid one's customer has more credit", body = CreditNote),
              (status = 400, description = "credit_note_too_large, invalid_amount or invalid_reason", body = crate::http::error::ErrorBody),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, description = "invoice_not_creditable: a draft, void or uncollectible invoice", body = crate::http::error::ErrorBody)))]
pub async fn create_credit_note(
    State(state): State<AppState>,
    ctx: TenantCtx,
    origin: Origin,
    IdPath(id): IdPath<InvoiceId>,
    Json(body): Json<CreateCreditNote>,
) -> ApiResult<(StatusCode, axum::Json<CreditNote>)> {
    let now = ctx.now(&state.clock);
    let note = credit::credit_note(&state.db, &origin, &ctx.tenant_id, &id, &body, now).await?;
    Ok((StatusCode::CREATED, axum::Json(note)))
}

#[utoipa::path(post, path = "/v1/customers/{id}/credits", tag = "customers",
    request_body = GrantCredit,
    params(("id" = String, Path, description = "Customer id")),
    responses((status = 201, description = "Granted: the balance transaction", body = BalanceTransaction),
              (status = 400, body = crate::http::error::ErrorBody),
              (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn grant_credit(
    State(state): State<AppState>,
    ctx: TenantCtx,
    origin: Origin,
    Path(customer): Path<String>,
    Json(body): Json<GrantCredit>,
) -> ApiResult<(StatusCode, axum::Json<BalanceTransaction>)> {
    let now = ctx.now(&state.clock);
    let t = credit::grant(&state.db, &origin, &ctx.tenant_id, &customer, &body, now).await?;
    Ok((StatusCode::CREATED, axum::Json(t)))
}

#[utoipa::path(get, path = "/v1/customers/{id}/balance_transactions", tag = "customers",
    params(("id" = String, Path, description = "Customer id"), PageParams),
    responses((status = 200, description = "Every change of the balance, newest first", body = List<BalanceTransaction>),
              (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn balance_transactions(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(customer): Path<String>,
    Query(page): Query<PageParams>,
) -> ApiResult<axum::Json<List<BalanceTransaction>>> {
    let limit = page.limit()?;
    let rows = credit::transactions(
        &state.db,
        &ctx.tenant_id,
        &customer,
        page.starting_after.as_deref(),
        limit,
    )
    .await?;
    Ok(axum::Json(List::from_rows(rows, limit)))
}
