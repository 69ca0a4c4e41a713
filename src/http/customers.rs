//! Customers (SPEC §5): the tenant's own users or organisations, keyed by the tenant's ids.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::auth::TenantCtx;
use super::extract::{Json, List, PageParams, Path, Query};
use crate::db::subscriptions::customer_not_found;
use crate::error::{ApiError, ApiResult};
use crate::AppState;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerInput {
    pub email: Option<String>,
    pub name: Option<String>,
    /// A JSON object of the tenant's own data.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    /// Payment terms in days (default 0).
    pub net_days: Option<i32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct Customer {
    pub id: String,
    pub email: Option<String>,
    pub name: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    pub net_days: i32,
    pub created_at: DateTime<Utc>,
}

fn validate(id: &str, c: &CustomerInput) -> ApiResult<()> {
    if !crate::ids::is_valid_external_id(id) {
        return Err(ApiError::invalid_param(
            "invalid_id",
            "id",
            "Customer ids are 1 to 255 visible ASCII characters without `/ ? # %`.",
        ));
    }
    if let Some(email) = &c.email {
        if email.len() > 320 || !email.contains('@') {
            return Err(ApiError::invalid_param(
                "invalid_email",
                "email",
                "email is not an email address.",
            ));
        }
    }
    if c.name.as_ref().is_some_and(|n| n.len() > 500) {
        return Err(ApiError::invalid_param(
            "invalid_name",
            "name",
            "name is longer than 500 characters.",
        ));
    }
    if let Some(m) = &c.metadata {
        if !m.is_object() {
            return Err(ApiError::invalid_param(
                "invalid_metadata",
                "metadata",
                "metadata must be a JSON object.",
            ));
        }
    }
    if c.net_days.is_some_and(|d| !(0..=365).contains(&d)) {
        return Err(ApiError::invalid_param(
            "invalid_net_days",
            "net_days",
            "net_days must be between 0 and 365.",
        ));
    }
    Ok(())
}

#[utoipa::path(put, path = "/v1/customers/{id}", tag = "customers", request_body = CustomerInput,
    params(("id" = String, Path, description = "The tenant's own id for the customer")),
    responses((status = 201, description = "Created (and subscribed to the default plan)", body = Customer),
              (status = 200, description = "Updated", body = Customer),
              (status = 400, body = crate::error::ErrorBody)))]
pub async fn put_customer(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(id): Path<String>,
    Json(body): Json<CustomerInput>,
) -> ApiResult<(StatusCode, axum::Json<Customer>)> {
    validate(&id, &body)?;
    let now = ctx.now(&state);
    let mut tx = state.db.begin().await?;
    let row = sqlx::query!(
        r#"INSERT INTO customers (tenant_id, customer_id, email, name, metadata, net_days, created_at, updated_at)
           VALUES ($1, $2, $3, $4, COALESCE($5, '{}'::jsonb), COALESCE($6, 0), $7, $7)
           ON CONFLICT (tenant_id, customer_id) DO UPDATE SET
               email = COALESCE(EXCLUDED.email, customers.email),
               name = COALESCE(EXCLUDED.name, customers.name),
               metadata = COALESCE($5, customers.metadata),
               net_days = COALESCE($6, customers.net_days),
               updated_at = now()
           WHERE customers.deleted_at IS NULL
           RETURNING customer_id, email, name, metadata, net_days, created_at,
                     (xmax = 0) AS "inserted!""#,
        ctx.tenant_id,
        id,
        body.email,
        body.name,
        body.metadata,
        body.net_days,
        now
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(customer_not_found)?;
    let customer = Customer {
        id: row.customer_id,
        email: row.email,
        name: row.name,
        metadata: row.metadata,
        net_days: row.net_days,
        created_at: row.created_at,
    };

    if row.inserted {
        crate::events::emit(
            &mut tx,
            &ctx.tenant_id,
            crate::events::CUSTOMER_CREATED,
            &customer,
        )
        .await?;
        crate::stripe_sync::enqueue(
            &mut tx,
            &ctx.tenant_id,
            crate::stripe_sync::Kind::Customer,
            &id,
            None,
        )
        .await?;
        if let Some(default_plan) = &ctx.default_plan {
            if let Some(version) =
                crate::db::plans::latest_version(&mut tx, &ctx.tenant_id, default_plan).await?
            {
                if let Some(plan) = state
                    .plans
                    .get(&mut tx, &ctx.tenant_id, default_plan, version)
                    .await?
                {
                    let interval = plan.default_interval();
                    crate::billing::lifecycle::start(
                        &mut tx,
                        &state.plans,
                        &ctx.tenant_id,
                        &id,
                        &plan,
                        interval,
                        plan.trial_days,
                        now,
                        None,
                    )
                    .await?;
                }
            }
        }
    }
    tx.commit().await?;
    let status = if row.inserted {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(customer)))
}

#[utoipa::path(get, path = "/v1/customers/{id}", tag = "customers",
    params(("id" = String, Path, description = "Customer id")),
    responses((status = 200, body = Customer), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_customer(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Customer>> {
    sqlx::query_as!(
        Customer,
        "SELECT customer_id AS id, email, name, metadata, net_days, created_at FROM customers
         WHERE tenant_id = $1 AND customer_id = $2 AND deleted_at IS NULL",
        ctx.tenant_id,
        id
    )
    .fetch_optional(&state.db)
    .await?
    .map(axum::Json)
    .ok_or_else(customer_not_found)
}

#[utoipa::path(get, path = "/v1/customers", tag = "customers", params(PageParams),
    responses((status = 200, body = List<Customer>)))]
pub async fn list_customers(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Query(page): Query<PageParams>,
) -> ApiResult<axum::Json<List<Customer>>> {
    let limit = page.limit()?;
    let rows = sqlx::query_as!(
        Customer,
        "SELECT customer_id AS id, email, name, metadata, net_days, created_at FROM customers
         WHERE tenant_id = $1 AND deleted_at IS NULL AND ($2::text IS NULL OR customer_id > $2)
         ORDER BY customer_id LIMIT $3",
        ctx.tenant_id,
        page.starting_after,
        limit + 1
    )
    .fetch_all(&state.db)
    .await?;
    Ok(axum::Json(List::from_rows(rows, limit)))
}
