//! Customers: the tenant's own users or organisations, keyed by the tenant's ids.

use axum::extract::State;
use axum::http::StatusCode;

use super::error::ApiResult;
use super::extract::{Json, List, PageParams, Path, Query};
use crate::customers::{self, Customer, CustomerInput};
use crate::tenancy::TenantCtx;
use crate::AppState;

#[utoipa::path(put, path = "/v1/customers/{id}", tag = "customers", request_body = CustomerInput,
    params(("id" = String, Path, description = "The tenant's own id for the customer")),
    responses((status = 201, description = "Created (and subscribed to the default plan)", body = Customer),
              (status = 200, description = "Updated", body = Customer),
              (status = 400, body = crate::http::error::ErrorBody)))]
pub async fn put_customer(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(id): Path<String>,
    Json(body): Json<CustomerInput>,
) -> ApiResult<(StatusCode, axum::Json<Customer>)> {
    let now = ctx.now(&state.clock);
    let (customer, created) =
        customers::put(&state.db, &state.plans, &ctx, &id, &body, now).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(customer)))
}

#[utoipa::path(get, path = "/v1/customers/{id}", tag = "customers",
    params(("id" = String, Path, description = "Customer id")),
    responses((status = 200, body = Customer), (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn get_customer(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Customer>> {
    Ok(axum::Json(
        customers::get(&state.db, &ctx.tenant_id, &id).await?,
    ))
}

#[utoipa::path(get, path = "/v1/customers", tag = "customers", params(PageParams),
    responses((status = 200, body = List<Customer>)))]
pub async fn list_customers(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Query(page): Query<PageParams>,
) -> ApiResult<axum::Json<List<Customer>>> {
    let limit = page.limit()?;
    let rows = customers::list(
        &state.db,
        &ctx.tenant_id,
        page.starting_after.as_deref(),
        limit,
    )
    .await?;
    Ok(axum::Json(List::from_rows(rows, limit)))
}
