//! The authenticated tenant's own settings and API keys.

use axum::extract::State;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::auth::TenantCtx;
use super::extract::{Json, Path};
use super::types::Qty;
use crate::error::{ApiError, ApiResult};
use crate::AppState;

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WarningThresholds {
    pub warning: Qty,
    pub critical: Qty,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StripeSettings {
    /// Whether a secret key is set (the key itself is write-only).
    pub secret_key_set: bool,
    pub webhook_secret_set: bool,
    pub api_base: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub mode: String,
    pub default_plan: Option<String>,
    pub warning_thresholds: WarningThresholds,
    pub invoice_grace_minutes: i32,
    /// Dunning: payment retries, in days after the first failed payment.
    pub dunning_retry_days: Vec<i32>,
    pub stripe: StripeSettings,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StripePatch {
    pub secret_key: Option<String>,
    pub webhook_secret: Option<String>,
    pub api_base: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantPatch {
    /// A plan key, or null to remove the default.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub default_plan: Option<Option<String>>,
    pub warning_thresholds: Option<WarningThresholds>,
    pub invoice_grace_minutes: Option<i32>,
    /// Payment retries after a failed payment, in days after the first failure: increasing,
    /// 1 to 60, at most 10 (default `[1, 3, 5]`; `[]`: no retries).
    pub dunning_retry_days: Option<Vec<i32>>,
    pub stripe: Option<StripePatch>,
}

/// Tells an explicit `null` (Some(None)) from an absent field (None).
pub fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

async fn load(state: &AppState, tenant_id: &str) -> ApiResult<Tenant> {
    let r = sqlx::query!(
        "SELECT tenant_id, name, mode, default_plan, warning_threshold, critical_threshold,
                invoice_grace_minutes, dunning_retry_days, stripe_secret_key IS NOT NULL AS \"sk!\",
                stripe_webhook_secret IS NOT NULL AS \"whs!\", stripe_api_base, created_at
         FROM tenants WHERE tenant_id = $1",
        tenant_id
    )
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| ApiError::not_found("tenant_not_found", "No such tenant."))?;
    Ok(Tenant {
        id: r.tenant_id,
        name: r.name,
        mode: r.mode,
        default_plan: r.default_plan,
        warning_thresholds: WarningThresholds {
            warning: Qty(r.warning_threshold.normalize()),
            critical: Qty(r.critical_threshold.normalize()),
        },
        invoice_grace_minutes: r.invoice_grace_minutes,
        dunning_retry_days: r.dunning_retry_days,
        stripe: StripeSettings {
            secret_key_set: r.sk,
            webhook_secret_set: r.whs,
            api_base: r.stripe_api_base,
        },
        created_at: r.created_at,
    })
}

#[utoipa::path(get, path = "/v1/tenant", tag = "tenant", responses((status = 200, body = Tenant)))]
pub async fn get_tenant(
    State(state): State<AppState>,
    ctx: TenantCtx,
) -> ApiResult<axum::Json<Tenant>> {
    load(&state, &ctx.tenant_id).await.map(axum::Json)
}

#[utoipa::path(patch, path = "/v1/tenant", tag = "tenant", request_body = TenantPatch,
    responses((status = 200, body = Tenant), (status = 400, body = crate::error::ErrorBody)))]
pub async fn patch_tenant(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Json(patch): Json<TenantPatch>,
) -> ApiResult<axum::Json<Tenant>> {
    let mut tx = state.db.begin().await?;
    if let Some(default_plan) = &patch.default_plan {
        if let Some(key) = default_plan {
            let exists = sqlx::query_scalar!(
                "SELECT EXISTS (SELECT 1 FROM plans WHERE tenant_id = $1 AND plan_key = $2) AS \"e!\"",
                ctx.tenant_id,
                key
            )
            .fetch_one(&mut *tx)
            .await?;
            if !exists {
                return Err(ApiError::invalid_param(
                    "plan_not_found",
                    "default_plan",
                    format!("No plan with key `{key}`."),
                ));
            }
        }
        sqlx::query!(
            "UPDATE tenants SET default_plan = $2, updated_at = now() WHERE tenant_id = $1",
            ctx.tenant_id,
            default_plan.as_deref()
        )
        .execute(&mut *tx)
        .await?;
    }
    if let Some(t) = &patch.warning_thresholds {
        let (warning, critical) = (t.warning.0, t.critical.0);
        let ok = warning > Decimal::ZERO && warning <= critical && critical <= Decimal::ONE;
        if !ok {
            return Err(ApiError::invalid_param(
                "invalid_thresholds",
                "warning_thresholds",
                "Thresholds must satisfy 0 < warning <= critical <= 1.",
            ));
        }
        sqlx::query!(
            "UPDATE tenants SET warning_threshold = $2, critical_threshold = $3, updated_at = now()
             WHERE tenant_id = $1",
            ctx.tenant_id,
            warning,
            critical
        )
        .execute(&mut *tx)
        .await?;
    }
    if let Some(minutes) = patch.invoice_grace_minutes {
        if !(0..=60 * 24 * 30).contains(&minutes) {
            return Err(ApiError::invalid_param(
                "invalid_grace",
                "invoice_grace_minutes",
                "invoice_grace_minutes must be between 0 and 43200.",
            ));
        }
        sqlx::query!(
            "UPDATE tenants SET invoice_grace_minutes = $2, updated_at = now() WHERE tenant_id = $1",
            ctx.tenant_id,
            minutes
        )
        .execute(&mut *tx)
        .await?;
    }
    if let Some(days) = &patch.dunning_retry_days {
        let increasing = days.windows(2).all(|w| w[0] < w[1]);
        if days.len() > 10 || !increasing || days.iter().any(|d| !(1..=60).contains(d)) {
            return Err(ApiError::invalid_param(
                "invalid_dunning_schedule",
                "dunning_retry_days",
                "dunning_retry_days must be at most 10 increasing whole days between 1 and 60.",
            ));
        }
        sqlx::query!(
            "UPDATE tenants SET dunning_retry_days = $2, updated_at = now() WHERE tenant_id = $1",
            ctx.tenant_id,
            days
        )
        .execute(&mut *tx)
        .await?;
    }
    if let Some(stripe) = &patch.stripe {
        if let Some(base) = &stripe.api_base {
            if !(base.starts_with("http://") || base.starts_with("https://")) {
                return Err(ApiError::invalid_param(
                    "invalid_url",
                    "stripe.api_base",
                    "stripe.api_base must be an http(s) URL.",
                ));
            }
        }
        sqlx::query!(
            "UPDATE tenants SET
                 stripe_secret_key = COALESCE($2, stripe_secret_key),
                 stripe_webhook_secret = COALESCE($3, stripe_webhook_secret),
                 stripe_api_base = COALESCE($4, stripe_api_base),
                 updated_at = now()
             WHERE tenant_id = $1",
            ctx.tenant_id,
            stripe.secret_key,
            stripe.webhook_secret,
            stripe.api_base
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    load(&state, &ctx.tenant_id).await.map(axum::Json)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiKey {
    pub id: String,
    /// The last four characters of the key.
    pub hint: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[utoipa::path(get, path = "/v1/api_keys", tag = "tenant",
    responses((status = 200, body = super::extract::List<ApiKey>)))]
pub async fn list_api_keys(
    State(state): State<AppState>,
    ctx: TenantCtx,
) -> ApiResult<axum::Json<super::extract::List<ApiKey>>> {
    let rows = sqlx::query_as!(
        ApiKey,
        "SELECT key_id AS id, key_hint AS hint, created_at, revoked_at FROM api_keys
         WHERE tenant_id = $1 ORDER BY key_id",
        ctx.tenant_id
    )
    .fetch_all(&state.db)
    .await?;
    Ok(axum::Json(super::extract::List {
        data: rows,
        has_more: false,
    }))
}

#[utoipa::path(delete, path = "/v1/api_keys/{id}", tag = "tenant",
    params(("id" = String, Path, description = "API key id")),
    responses((status = 200, body = ApiKey), (status = 404, body = crate::error::ErrorBody)))]
pub async fn revoke_api_key(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(key_id): Path<String>,
) -> ApiResult<axum::Json<ApiKey>> {
    let row = sqlx::query_as!(
        ApiKey,
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now())
         WHERE tenant_id = $1 AND key_id = $2
         RETURNING key_id AS id, key_hint AS hint, created_at, revoked_at",
        ctx.tenant_id,
        key_id
    )
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| ApiError::not_found("api_key_not_found", "No such API key."))?;
    Ok(axum::Json(row))
}
