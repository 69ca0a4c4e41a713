//! One-off charges (SPEC §15): `POST`/`GET /v1/customers/{id}/invoice_items`,
//! `DELETE /v1/invoice_items/{id}`.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;

use super::error::ApiResult;
use super::extract::{IdPath, Json, List, PageParams, Path, Query};
use crate::audit::Origin;
use crate::billing::invoice_items::{self, CreateItem, InvoiceItem};
use crate::domain::id::InvoiceItemId;
use crate::tenancy::TenantCtx;
use crate::AppState;

#[utoipa::path(post, path = "/v1/customers/{id}/invoice_items", tag = "invoices",
    request_body = CreateItem,
    params(("id" = String, Path, description = "Customer id")),
    responses((status = 201, description = "Created: pending (`invoice` null) until the customer's next invoice, or invoiced at once with `invoice_now`", body = InvoiceItem),
              (status = 400, description = "`invalid_description`, `invalid_amount`, `invalid_quantity`", body = crate::http::error::ErrorBody),
              (status = 404, description = "`customer_not_found`", body = crate::http::error::ErrorBody)))]
pub async fn create_item(
    State(state): State<AppState>,
    ctx: TenantCtx,
    origin: Origin,
    Path(customer): Path<String>,
    Json(body): Json<CreateItem>,
) -> ApiResult<(StatusCode, axum::Json<InvoiceItem>)> {
    let now = ctx.now(&state.clock);
    let item = invoice_items::create(
        &state.db,
        (&origin, &state.plans),
        &ctx.tenant_id,
        &customer,
        &body,
        now,
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(item)))
}

/// `?pending=true` and the page.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ItemParams {
    /// Only the items no invoice carries yet.
    #[serde(default)]
    pub pending: bool,
    /// 1 to 100, default 20.
    pub limit: Option<i64>,
    /// The id of the last item of the previous page.
    pub starting_after: Option<String>,
}

#[utoipa::path(get, path = "/v1/customers/{id}/invoice_items", tag = "invoices",
    params(("id" = String, Path, description = "Customer id"), ItemParams),
    responses((status = 200, description = "The customer's items, newest first", body = List<InvoiceItem>),
              (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn list_items(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(customer): Path<String>,
    Query(params): Query<ItemParams>,
) -> ApiResult<axum::Json<List<InvoiceItem>>> {
    let page = PageParams {
        limit: params.limit,
        starting_after: params.starting_after,
    };
    let limit = page.limit()?;
    let rows = invoice_items::list(
        &state.db,
        &ctx.tenant_id,
        &customer,
        params.pending,
        page.starting_after.as_deref(),
        limit,
    )
    .await?;
    Ok(axum::Json(List::from_rows(rows, limit)))
}

#[utoipa::path(delete, path = "/v1/invoice_items/{id}", tag = "invoices",
    params(("id" = String, Path, description = "Invoice item id (`ii_…`)")),
    responses((status = 200, description = "Removed (from its draft invoice too, if one carried it)", body = InvoiceItem),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, description = "`invoice_item_invoiced`: a finalized invoice carries it", body = crate::http::error::ErrorBody)))]
pub async fn delete_item(
    State(state): State<AppState>,
    ctx: TenantCtx,
    origin: Origin,
    IdPath(id): IdPath<InvoiceItemId>,
) -> ApiResult<axum::Json<InvoiceItem>> {
    let now = ctx.now(&state.clock);
    Ok(axum::Json(
        invoice_items::delete(&state.db, &origin, &ctx.tenant_id, &id, now).await?,
    ))
}
