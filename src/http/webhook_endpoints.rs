//! Outbound webhook endpoints and their delivery log (SPEC §11).

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::extract::{Json, List, PageParams, Path, Query};
use crate::http::error::{ApiError, ApiResult};
use crate::tenancy::TenantCtx;
use crate::AppState;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    /// Where deliveries are POSTed (http or https).
    pub url: String,
    /// `["*"]` for every event, or event types (`customer.created`, `subscription.created`,
    /// `subscription.updated`, `subscription.canceled`, `usage.threshold_reached`,
    /// `invoice.finalized`, `invoice.paid`, `invoice.payment_failed`).
    pub events: Vec<String>,
    pub description: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Endpoint {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub description: Option<String>,
    /// The signing secret (`whsec_<base64>`): shown only when the endpoint is created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    /// The event id, also sent as `webhook-id`.
    pub event_id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// `pending`, `delivered` or `failed` (retries given up).
    pub status: String,
    pub attempts: i32,
    /// The HTTP status of the last attempt, if it got a response.
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

fn validate(body: &CreateEndpoint) -> ApiResult<()> {
    let url_ok = (body.url.starts_with("http://") || body.url.starts_with("https://"))
        && body.url.len() <= 2048
        && reqwest::Url::parse(&body.url).is_ok();
    if !url_ok {
        return Err(ApiError::invalid_param(
            "invalid_url",
            "url",
            "url must be an http(s) URL of at most 2048 characters.",
        ));
    }
    if body.events.is_empty() {
        return Err(ApiError::invalid_param(
            "invalid_events",
            "events",
            "events must name at least one event type, or be [\"*\"].",
        ));
    }
    if let Some(bad) = body
        .events
        .iter()
        .find(|e| e.as_str() != "*" && !crate::events::TYPES.contains(&e.as_str()))
    {
        return Err(ApiError::invalid_param(
            "invalid_events",
            "events",
            format!("Unknown event type `{bad}`."),
        ));
    }
    if body.description.as_ref().is_some_and(|d| d.len() > 500) {
        return Err(ApiError::invalid_param(
            "invalid_description",
            "description",
            "description is longer than 500 characters.",
        ));
    }
    Ok(())
}

#[utoipa::path(post, path = "/v1/webhook_endpoints", tag = "webhooks", request_body = CreateEndpoint,
    responses((status = 201, description = "Created; the secret is shown only here", body = Endpoint),
              (status = 400, body = crate::http::error::ErrorBody)))]
pub async fn create_endpoint(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Json(body): Json<CreateEndpoint>,
) -> ApiResult<(StatusCode, axum::Json<Endpoint>)> {
    validate(&body)?;
    let mut events = body.events.clone();
    events.sort();
    events.dedup();
    let id = crate::ids::new_id("we");
    let secret = crate::webhooks::new_secret();
    let created_at = sqlx::query_scalar!(
        "INSERT INTO webhook_endpoints (tenant_id, endpoint_id, url, events, secret, description)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING created_at",
        ctx.tenant_id,
        id,
        body.url,
        &events,
        secret,
        body.description
    )
    .fetch_one(&state.db)
    .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(Endpoint {
            id,
            url: body.url,
            events,
            description: body.description,
            secret: Some(secret),
            created_at,
        }),
    ))
}

#[utoipa::path(get, path = "/v1/webhook_endpoints", tag = "webhooks",
    responses((status = 200, description = "Every endpoint of the tenant", body = List<Endpoint>)))]
pub async fn list_endpoints(
    State(state): State<AppState>,
    ctx: TenantCtx,
) -> ApiResult<axum::Json<List<Endpoint>>> {
    let data = sqlx::query!(
        "SELECT endpoint_id, url, events, description, created_at FROM webhook_endpoints
         WHERE tenant_id = $1 AND deleted_at IS NULL ORDER BY endpoint_id",
        ctx.tenant_id
    )
    .fetch_all(&state.db)
    .await?
    .into_iter()
    .map(|r| Endpoint {
        id: r.endpoint_id,
        url: r.url,
        events: r.events,
        description: r.description,
        secret: None,
        created_at: r.created_at,
    })
    .collect();
    Ok(axum::Json(List {
        data,
        has_more: false,
    }))
}

#[utoipa::path(delete, path = "/v1/webhook_endpoints/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id")),
    responses((status = 204, description = "Deleted; pending deliveries to it are given up"),
              (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn delete_endpoint(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let done = sqlx::query!(
        "UPDATE webhook_endpoints SET deleted_at = now()
         WHERE tenant_id = $1 AND endpoint_id = $2 AND deleted_at IS NULL",
        ctx.tenant_id,
        id
    )
    .execute(&state.db)
    .await?;
    if done.rows_affected() == 0 {
        return Err(endpoint_not_found());
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/webhook_endpoints/{id}/deliveries", tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id"), PageParams),
    responses((status = 200, description = "Deliveries to the endpoint, newest first", body = List<Delivery>),
              (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(id): Path<String>,
    Query(page): Query<PageParams>,
) -> ApiResult<axum::Json<List<Delivery>>> {
    let limit = page.limit()?;
    let mut conn = state.db.acquire().await?;
    let exists = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM webhook_endpoints
                          WHERE tenant_id = $1 AND endpoint_id = $2) AS "e!""#,
        ctx.tenant_id,
        id
    )
    .fetch_one(&mut *conn)
    .await?;
    if !exists {
        return Err(endpoint_not_found());
    }
    let rows = sqlx::query!(
        r#"SELECT d.event_id, e.type, d.status, d.attempts, d.last_status, d.last_error,
                  d.created_at, d.last_attempt_at, d.next_attempt_at, d.delivered_at, e.payload
           FROM webhook_deliveries d
           JOIN webhook_events e ON e.tenant_id = d.tenant_id AND e.event_id = d.event_id
           WHERE d.tenant_id = $1 AND d.endpoint_id = $2
             AND ($3::text IS NULL OR d.event_id < $3)
           ORDER BY d.event_id DESC LIMIT $4"#,
        ctx.tenant_id,
        id,
        page.starting_after,
        limit + 1
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|r| Delivery {
        next_attempt_at: (r.status == "pending").then_some(r.next_attempt_at),
        event_id: r.event_id,
        event_type: r.r#type,
        status: r.status,
        attempts: r.attempts,
        last_status: r.last_status,
        last_error: r.last_error,
        created_at: r.created_at,
        last_attempt_at: r.last_attempt_at,
        delivered_at: r.delivered_at,
        payload: r.payload,
    })
    .collect();
    Ok(axum::Json(List::from_rows(rows, limit)))
}

fn endpoint_not_found() -> ApiError {
    ApiError::not_found("webhook_endpoint_not_found", "No such webhook endpoint.")
}
