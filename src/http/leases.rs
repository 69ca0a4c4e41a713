//! Concurrency slots (SPEC §7): a lease holds one slot of a `concurrency` feature until it is
//! released or expires. Taking a slot is serialized per customer and feature with a
//! transaction-scoped advisory lock, so the limit holds across any number of processes.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::extract::{Json, Path};
use crate::domain::entitlement::FeatureType;
use crate::http::error::{ApiError, ApiResult};
use crate::tenancy::TenantCtx;
use crate::AppState;

const DEFAULT_TTL_SECONDS: i64 = 300;
const MAX_TTL_SECONDS: i64 = 86_400;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLease {
    pub customer: String,
    pub feature: String,
    /// 1 to 86400 seconds, default 300. The slot frees itself when it expires.
    pub ttl_seconds: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Lease {
    pub id: String,
    pub customer: String,
    pub feature: String,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

#[utoipa::path(post, path = "/v1/leases", tag = "usage", request_body = CreateLease,
    responses((status = 201, body = Lease), (status = 400, body = crate::http::error::ErrorBody),
              (status = 402, description = "limit_exceeded (all slots taken), not_in_plan or subscription_inactive", body = crate::http::error::ErrorBody),
              (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn create_lease(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Json(body): Json<CreateLease>,
) -> ApiResult<(StatusCode, axum::Json<Lease>)> {
    let ttl = body.ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS);
    if !(1..=MAX_TTL_SECONDS).contains(&ttl) {
        return Err(ApiError::invalid_param(
            "invalid_ttl",
            "ttl_seconds",
            "ttl_seconds must be between 1 and 86400.",
        ));
    }
    let mut tx = state.db.begin().await?;
    let resolved = state
        .entitlements
        .resolve(&mut tx, &ctx, &body.customer)
        .await?;
    let Some(plan) = resolved.plan else {
        crate::catalog::features::find(&mut tx, &ctx.tenant_id, &body.feature)
            .await?
            .ok_or_else(feature_not_found)?;
        return Err(ApiError::limit(
            "subscription_inactive",
            "The customer has no live subscription.",
        )
        .with_param("customer"));
    };
    let Some(ent) = plan.entitlement(&body.feature).filter(|e| e.enabled) else {
        crate::catalog::features::find(&mut tx, &ctx.tenant_id, &body.feature)
            .await?
            .ok_or_else(feature_not_found)?;
        return Err(
            ApiError::limit("not_in_plan", "The feature is not in the customer's plan.")
                .with_param("feature"),
        );
    };
    if ent.feature_type != FeatureType::Concurrency {
        return Err(ApiError::invalid_param(
            "feature_not_concurrency",
            "feature",
            "Leases are for concurrency features.",
        ));
    }
    let now = ctx.now(&state.clock);
    let expires_at = now + Duration::seconds(ttl);
    let id = crate::ids::new_id("lease");
    // One slot-taker at a time per customer and feature; released at commit.
    let lock_key = format!(
        "lease\x1f{}\x1f{}\x1f{}",
        ctx.tenant_id, body.customer, body.feature
    );
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        lock_key
    )
    .execute(&mut *tx)
    .await?;
    let created = sqlx::query_scalar!(
        r#"INSERT INTO leases (tenant_id, lease_id, customer_id, feature_key, expires_at, created_at)
           SELECT $1, $2, $3, $4, $5, $6
           WHERE $7::numeric IS NULL
              OR (SELECT count(*) FROM leases
                   WHERE tenant_id = $1 AND customer_id = $3 AND feature_key = $4
                     AND expires_at > $6) < $7
           RETURNING created_at"#,
        ctx.tenant_id,
        id,
        body.customer,
        body.feature,
        expires_at,
        now,
        ent.limit
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(created_at) = created else {
        return Err(ApiError::limit(
            "limit_exceeded",
            "Every concurrency slot is taken; release a lease or wait for one to expire.",
        )
        .with_param("feature"));
    };
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(Lease {
            id,
            customer: body.customer,
            feature: body.feature,
            expires_at,
            created_at,
        }),
    ))
}

fn feature_not_found() -> ApiError {
    ApiError::not_found("feature_not_found", "No such feature.").with_param("feature")
}

#[utoipa::path(delete, path = "/v1/leases/{id}", tag = "usage",
    params(("id" = String, Path, description = "Lease id")),
    responses((status = 200, description = "Released", body = Lease), (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn release_lease(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Lease>> {
    let row = sqlx::query!(
        "DELETE FROM leases WHERE tenant_id = $1 AND lease_id = $2
         RETURNING lease_id, customer_id, feature_key, expires_at, created_at",
        ctx.tenant_id,
        id
    )
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| ApiError::not_found("lease_not_found", "No such lease (released already?)."))?;
    Ok(axum::Json(Lease {
        id: row.lease_id,
        customer: row.customer_id,
        feature: row.feature_key,
        expires_at: row.expires_at,
        created_at: row.created_at,
    }))
}
