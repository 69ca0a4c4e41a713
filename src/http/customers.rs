//! Customers: the tenant's own users or organisations, keyed by the tenant's ids.

use axum::extract::State;
use axum::http::StatusCode;

use super::error::ApiResult;
use super::extract::{Json, List, PageParams, Path, Query};
use crate::audit::Origin;
use crate::customers::export::{self, Export};
use crate::customers::members::{self, Member, MemberInput};
use crate::customers::{self, Customer, CustomerInput};
use crate::tenancy::TenantCtx;
use crate::AppState;

#[utoipa::path(put, path = "/v1/customers/{id}", tag = "customers", request_body = CustomerInput,
    params(("id" = String, Path, description = "The tenant's own id for the customer")),
    responses((status = 201, description = "Created (and subscribed to the default plan)", body = Customer),
              (status = 200, description = "Updated", body = Customer),
              (status = 400, body = crate::http::error::ErrorBody),
              (status = 409, description = "`customer_erased`: the id belonged to an erased customer", body = crate::http::error::ErrorBody)))]
pub async fn put_customer(
    State(state): State<AppState>,
    ctx: TenantCtx,
    origin: Origin,
    Path(id): Path<String>,
    Json(body): Json<CustomerInput>,
) -> ApiResult<(StatusCode, axum::Json<Customer>)> {
    let now = ctx.now(&state.clock);
    let caller = (&ctx, &origin);
    let (customer, created) =
        customers::put(&state.db, &state.plans, caller, &id, &body, now).await?;
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

#[utoipa::path(delete, path = "/v1/customers/{id}", tag = "customers",
    params(("id" = String, Path, description = "Customer id")),
    responses((status = 200, description = "Erased: personal data gone everywhere, live subscription ended, usage and invoices kept", body = Customer),
              (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn delete_customer(
    State(state): State<AppState>,
    ctx: TenantCtx,
    origin: Origin,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Customer>> {
    let now = ctx.now(&state.clock);
    Ok(axum::Json(
        customers::erase(&state.db, &state.plans, &origin, &ctx.tenant_id, &id, now).await?,
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

#[utoipa::path(put, path = "/v1/customers/{id}/members/{member_id}", tag = "customers",
    request_body = MemberInput,
    params(("id" = String, Path, description = "Customer id"),
           ("member_id" = String, Path, description = "The tenant's own user id for the member")),
    responses((status = 201, description = "Added (one more seat)", body = Member),
              (status = 200, description = "Updated", body = Member),
              (status = 400, body = crate::http::error::ErrorBody),
              (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn put_member(
    State(state): State<AppState>,
    ctx: TenantCtx,
    origin: Origin,
    Path((id, member_id)): Path<(String, String)>,
    Json(body): Json<MemberInput>,
) -> ApiResult<(StatusCode, axum::Json<Member>)> {
    let now = ctx.now(&state.clock);
    let (member, added) = members::put(
        &state.db,
        &state.plans,
        &origin,
        &ctx.tenant_id,
        (&id, &member_id),
        &body,
        now,
    )
    .await?;
    let status = if added {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(member)))
}

#[utoipa::path(delete, path = "/v1/customers/{id}/members/{member_id}", tag = "customers",
    params(("id" = String, Path, description = "Customer id"),
           ("member_id" = String, Path, description = "Member id")),
    responses((status = 200, description = "Removed (one seat fewer)", body = Member),
              (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn delete_member(
    State(state): State<AppState>,
    ctx: TenantCtx,
    origin: Origin,
    Path((id, member_id)): Path<(String, String)>,
) -> ApiResult<axum::Json<Member>> {
    let now = ctx.now(&state.clock);
    Ok(axum::Json(
        members::remove(
            &state.db,
            &state.plans,
            &origin,
            &ctx.tenant_id,
            &id,
            &member_id,
            now,
        )
        .await?,
    ))
}

#[utoipa::path(get, path = "/v1/customers/{id}/members", tag = "customers",
    params(("id" = String, Path, description = "Customer id"), PageParams),
    responses((status = 200, description = "Members in id order", body = List<Member>),
              (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn list_members(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(id): Path<String>,
    Query(page): Query<PageParams>,
) -> ApiResult<axum::Json<List<Member>>> {
    let limit = page.limit()?;
    let rows = members::list(
        &state.db,
        &ctx.tenant_id,
        &id,
        page.starting_after.as_deref(),
        limit,
    )
    .await?;
    Ok(axum::Json(List::from_rows(rows, limit)))
}

#[utoipa::path(get, path = "/v1/customers/{id}/export", tag = "customers",
    params(("id" = String, Path, description = "Customer id")),
    responses((status = 200, description = "Everything held about the customer, as one document", body = Export),
              (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn export_customer(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Export>> {
    Ok(axum::Json(
        export::export(&state.db, &ctx.tenant_id, &id).await?,
    ))
}
