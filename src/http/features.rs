//! Features: the things plans grant (SPEC §4).

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use super::auth::TenantCtx;
use super::extract::{Json, List, PageParams, Path, Query};
use crate::domain::entitlement::{Aggregation, FeatureType};
use crate::error::{ApiError, ApiResult};
use crate::AppState;

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateFeature {
    pub key: String,
    pub name: String,
    #[serde(rename = "type")]
    pub feature_type: FeatureType,
    pub unit: Option<String>,
    /// For metered features: `sum` (default) or `max`.
    pub aggregation: Option<Aggregation>,
    pub stripe_meter_event_name: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Feature {
    pub key: String,
    pub name: String,
    #[serde(rename = "type")]
    pub feature_type: FeatureType,
    pub unit: Option<String>,
    pub aggregation: Aggregation,
    pub stripe_meter_event_name: Option<String>,
    pub created_at: DateTime<Utc>,
}

pub fn validate_key(key: &str, param: &str) -> ApiResult<()> {
    let ok = !key.is_empty()
        && key.len() <= 100
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_param(
            "invalid_key",
            param,
            "Keys are 1 to 100 characters: letters, digits, `_`, `-` and `.`.",
        ))
    }
}

/// Inserts a feature; `Ok(None)` when the key exists.
pub async fn insert_feature(
    conn: &mut PgConnection,
    tenant_id: &str,
    f: &CreateFeature,
) -> ApiResult<Option<Feature>> {
    validate_key(&f.key, "key")?;
    if f.name.trim().is_empty() {
        return Err(ApiError::invalid_param(
            "invalid_name",
            "name",
            "name must not be empty.",
        ));
    }
    if f.aggregation.is_some() && f.feature_type != FeatureType::Metered {
        return Err(ApiError::invalid_param(
            "invalid_aggregation",
            "aggregation",
            "Only metered features have an aggregation.",
        ));
    }
    if f.stripe_meter_event_name.is_some() && f.feature_type != FeatureType::Metered {
        return Err(ApiError::invalid_param(
            "invalid_meter",
            "stripe_meter_event_name",
            "Only metered features report to a Stripe meter.",
        ));
    }
    let aggregation = f.aggregation.unwrap_or(Aggregation::Sum);
    let row = sqlx::query!(
        "INSERT INTO features (tenant_id, feature_key, name, type, unit, aggregation, stripe_meter_event_name)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (tenant_id, feature_key) DO NOTHING
         RETURNING created_at",
        tenant_id,
        f.key,
        f.name,
        f.feature_type.as_str(),
        f.unit,
        aggregation.as_str(),
        f.stripe_meter_event_name
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|r| Feature {
        key: f.key.clone(),
        name: f.name.clone(),
        feature_type: f.feature_type,
        unit: f.unit.clone(),
        aggregation,
        stripe_meter_event_name: f.stripe_meter_event_name.clone(),
        created_at: r.created_at,
    }))
}

/// A `features` row as stored.
struct FeatureRow {
    feature_key: String,
    name: String,
    feature_type: String,
    unit: Option<String>,
    aggregation: String,
    stripe_meter_event_name: Option<String>,
    created_at: DateTime<Utc>,
}

impl From<FeatureRow> for Feature {
    fn from(r: FeatureRow) -> Self {
        Feature {
            key: r.feature_key,
            name: r.name,
            feature_type: FeatureType::parse(&r.feature_type).unwrap_or(FeatureType::Boolean),
            unit: r.unit,
            aggregation: Aggregation::parse(&r.aggregation).unwrap_or(Aggregation::Sum),
            stripe_meter_event_name: r.stripe_meter_event_name,
            created_at: r.created_at,
        }
    }
}

pub async fn fetch_feature(
    conn: &mut PgConnection,
    tenant_id: &str,
    key: &str,
) -> ApiResult<Option<Feature>> {
    let r = sqlx::query_as!(
        FeatureRow,
        "SELECT feature_key, name, type AS feature_type, unit, aggregation, stripe_meter_event_name,
                created_at
         FROM features WHERE tenant_id = $1 AND feature_key = $2",
        tenant_id,
        key
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(r.map(Feature::from))
}

#[utoipa::path(post, path = "/v1/features", tag = "features", request_body = CreateFeature,
    responses((status = 201, body = Feature), (status = 400, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
pub async fn create_feature(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Json(body): Json<CreateFeature>,
) -> ApiResult<(StatusCode, axum::Json<Feature>)> {
    let mut conn = state.db.acquire().await?;
    match insert_feature(&mut conn, &ctx.tenant_id, &body).await? {
        Some(f) => Ok((StatusCode::CREATED, axum::Json(f))),
        None => Err(ApiError::conflict(
            "feature_exists",
            format!("A feature with key `{}` already exists.", body.key),
        )
        .with_param("key")),
    }
}

#[utoipa::path(get, path = "/v1/features", tag = "features", params(PageParams),
    responses((status = 200, body = List<Feature>)))]
pub async fn list_features(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Query(page): Query<PageParams>,
) -> ApiResult<axum::Json<List<Feature>>> {
    let limit = page.limit()?;
    let rows = sqlx::query_as!(
        FeatureRow,
        "SELECT feature_key, name, type AS feature_type, unit, aggregation, stripe_meter_event_name,
                created_at
         FROM features WHERE tenant_id = $1 AND ($2::text IS NULL OR feature_key > $2)
         ORDER BY feature_key LIMIT $3",
        ctx.tenant_id,
        page.starting_after,
        limit + 1
    )
    .fetch_all(&state.db)
    .await?;
    let data = rows.into_iter().map(Feature::from).collect();
    Ok(axum::Json(List::from_rows(data, limit)))
}

#[utoipa::path(get, path = "/v1/features/{key}", tag = "features",
    params(("key" = String, Path, description = "Feature key")),
    responses((status = 200, body = Feature), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_feature(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(key): Path<String>,
) -> ApiResult<axum::Json<Feature>> {
    let mut conn = state.db.acquire().await?;
    fetch_feature(&mut conn, &ctx.tenant_id, &key)
        .await?
        .map(axum::Json)
        .ok_or_else(|| ApiError::not_found("feature_not_found", "No such feature."))
}
