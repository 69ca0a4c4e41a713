//! Add-ons (SPEC §15): `/v1/addons` (versioned like plans) and a subscription's `/addons`.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use super::extract::{IdPath, Json, List, PageParams, Path, Query};
use super::plans::VersionParam;
use crate::audit::Origin;
use crate::billing::addons::{self as attached, AttachAddon};
use crate::billing::views::Subscription;
use crate::catalog::addons::{self, Addon};
use crate::catalog::plans::WriteMode;
use crate::domain::addon::AddonInput;
use crate::domain::id::{PrefixedId, SubscriptionId};
use crate::tenancy::TenantCtx;
use crate::AppState;

#[utoipa::path(post, path = "/v1/addons", tag = "addons", request_body = AddonInput,
    responses((status = 201, body = Addon), (status = 400, body = crate::http::error::ErrorBody),
              (status = 409, description = "`addon_exists`", body = crate::http::error::ErrorBody)))]
pub async fn create_addon(
    State(state): State<AppState>,
    ctx: TenantCtx,
    origin: Origin,
    Json(body): Json<AddonInput>,
) -> ApiResult<(StatusCode, axum::Json<Addon>)> {
    let key = body.key.clone().ok_or_else(|| {
        ApiError::invalid_param("missing_field", "key", "Missing required field `key`.")
    })?;
    let (addon, _) = addons::save(
        &state.db,
        &state.plans,
        &ctx.tenant_id,
        (&key, &body, WriteMode::Create),
        (&origin, ctx.now(&state.clock)),
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(addon)))
}

#[utoipa::path(put, path = "/v1/addons/{key}", tag = "addons", request_body = AddonInput,
    params(("key" = String, Path, description = "Add-on key")),
    responses((status = 200, description = "Unchanged, or a new version (attached add-ons keep theirs)", body = Addon),
              (status = 201, description = "Created", body = Addon),
              (status = 400, body = crate::http::error::ErrorBody)))]
pub async fn put_addon(
    State(state): State<AppState>,
    ctx: TenantCtx,
    origin: Origin,
    Path(key): Path<String>,
    Json(body): Json<AddonInput>,
) -> ApiResult<(StatusCode, axum::Json<Addon>)> {
    if body.key.as_ref().is_some_and(|k| k != &key) {
        return Err(ApiError::invalid_param(
            "key_mismatch",
            "key",
            "The body's key differs from the path's.",
        ));
    }
    let (addon, written) = addons::save(
        &state.db,
        &state.plans,
        &ctx.tenant_id,
        (&key, &body, WriteMode::Upsert),
        (&origin, ctx.now(&state.clock)),
    )
    .await?;
    let status = if written && addon.version == 1 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(addon)))
}

#[utoipa::path(get, path = "/v1/addons", tag = "addons", params(PageParams),
    responses((status = 200, description = "The newest version of each add-on, by key", body = List<Addon>)))]
pub async fn list_addons(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Query(page): Query<PageParams>,
) -> ApiResult<axum::Json<List<Addon>>> {
    let limit = page.limit()?;
    let rows = addons::list(
        &state.db,
        &state.plans,
        &ctx.tenant_id,
        page.starting_after.as_deref(),
        limit,
    )
    .await?;
    Ok(axum::Json(List::from_rows(rows, limit)))
}

#[utoipa::path(get, path = "/v1/addons/{key}", tag = "addons",
    params(("key" = String, Path, description = "Add-on key"), VersionParam),
    responses((status = 200, body = Addon), (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn get_addon(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(key): Path<String>,
    Query(q): Query<VersionParam>,
) -> ApiResult<axum::Json<Addon>> {
    let addon = addons::get(&state.db, &state.plans, &ctx.tenant_id, &key, q.version).await?;
    Ok(axum::Json(addon))
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/addons", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    request_body = AttachAddon,
    responses((status = 200, description = "The subscription with its add-ons; the prorated charge is invoiced at once", body = Subscription),
              (status = 400, description = "`invalid_quantity`", body = crate::http::error::ErrorBody),
              (status = 404, description = "`subscription_not_found`, `addon_not_found`", body = crate::http::error::ErrorBody),
              (status = 409, description = "`addon_interval_mismatch`, `addon_currency_mismatch`, `subscription_inactive`", body = crate::http::error::ErrorBody)))]
pub async fn attach_addon(
    State(state): State<AppState>,
    ctx: TenantCtx,
    origin: Origin,
    IdPath(id): IdPath<SubscriptionId>,
    Json(body): Json<AttachAddon>,
) -> ApiResult<axum::Json<Subscription>> {
    let now = ctx.now(&state.clock);
    let who = (&origin, &ctx.tenant_id);
    Ok(axum::Json(
        attached::attach(&state.db, &state.plans, who, &id, &body, now).await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RemoveParams {
    /// Default true: removed at the period end; `false` removes it now, crediting the unused
    /// time to the balance.
    pub at_period_end: Option<bool>,
}

#[utoipa::path(delete, path = "/v1/subscriptions/{id}/addons/{addon}", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id"),
           ("addon" = String, Path, description = "Add-on key"), RemoveParams),
    responses((status = 200, description = "The subscription: the add-on with `removes_at`, or gone", body = Subscription),
              (status = 404, description = "`subscription_not_found`, `addon_not_found` (not attached)", body = crate::http::error::ErrorBody),
              (status = 409, description = "`subscription_inactive`", body = crate::http::error::ErrorBody)))]
pub async fn remove_addon(
    State(state): State<AppState>,
    ctx: TenantCtx,
    origin: Origin,
    Path((id, addon)): Path<(String, String)>,
    Query(q): Query<RemoveParams>,
) -> ApiResult<axum::Json<Subscription>> {
    let id =
        SubscriptionId::parse(&id).ok_or_else(crate::error::Error::no_such::<SubscriptionId>)?;
    let now = ctx.now(&state.clock);
    let who = (&origin, &ctx.tenant_id);
    let at_period_end = q.at_period_end.unwrap_or(true);
    Ok(axum::Json(
        attached::remove(
            &state.db,
            &state.plans,
            who,
            (&id, &addon),
            at_period_end,
            now,
        )
        .await?,
    ))
}
