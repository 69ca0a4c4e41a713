//! Plans and versions (SPEC §4). `POST` creates, `PUT` makes a new version when the
//! definition changed (and is a no-op when it did not), `GET` compares plans for a pricing page.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use super::auth::TenantCtx;
use super::extract::{Json, List, PageParams, Path, Query};
use super::types::Qty;
use crate::db::plans::PlanVersion;
use crate::domain::entitlement::FeatureType;
use crate::domain::money;
use crate::domain::period::{Interval, Reset};
use crate::error::{ApiError, ApiResult};
use crate::AppState;

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceInput {
    pub interval: Interval,
    #[schema(value_type = String, example = "29.00")]
    pub amount: Decimal,
    pub currency: String,
    pub per_seat: Option<bool>,
    pub stripe_price_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OverageInput {
    #[schema(value_type = String, example = "0.10")]
    pub unit_amount: Decimal,
    pub per_units: Option<Qty>,
    #[schema(value_type = Option<String>, example = "20.00")]
    pub cap_amount: Option<Decimal>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EntitlementInput {
    pub feature: String,
    pub enabled: Option<bool>,
    /// `null` or `-1` = unlimited.
    pub limit: Option<Qty>,
    pub reset: Option<Reset>,
    pub overage: Option<OverageInput>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanInput {
    /// Required on `POST`; on `PUT` it may be omitted but must match the path.
    pub key: Option<String>,
    pub name: String,
    /// Makes this plan the tenant's default (new customers are subscribed to it).
    pub default: Option<bool>,
    #[serde(default)]
    pub prices: Vec<PriceInput>,
    pub trial_days: Option<i32>,
    pub retention_days: Option<i32>,
    #[serde(default)]
    pub entitlements: Vec<EntitlementInput>,
}

/// The normalized definition stored with each version and compared for idempotent applies.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Definition {
    name: String,
    trial_days: i32,
    retention_days: Option<i32>,
    prices: Vec<PriceDef>,
    entitlements: Vec<EntitlementDef>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct PriceDef {
    interval: Interval,
    amount: Decimal,
    currency: String,
    per_seat: bool,
    stripe_price_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct EntitlementDef {
    feature: String,
    enabled: bool,
    limit: Option<Decimal>,
    reset: Reset,
    overage: Option<OverageDef>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct OverageDef {
    unit_amount: Decimal,
    per_units: Decimal,
    cap_amount: Option<Decimal>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PriceOut {
    pub interval: Interval,
    #[schema(example = "29.00")]
    pub amount: String,
    pub currency: String,
    pub per_seat: bool,
    pub stripe_price_id: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OverageOut {
    pub unit_amount: String,
    pub per_units: Qty,
    pub cap_amount: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EntitlementOut {
    pub feature: String,
    #[serde(rename = "type")]
    pub feature_type: FeatureType,
    pub enabled: bool,
    /// `null` = unlimited.
    pub limit: Option<Qty>,
    pub unlimited: bool,
    /// Only for metered features.
    pub reset: Option<Reset>,
    pub overage: Option<OverageOut>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Plan {
    pub key: String,
    pub name: String,
    pub version: i32,
    pub default: bool,
    pub prices: Vec<PriceOut>,
    pub trial_days: i32,
    pub retention_days: Option<i32>,
    pub entitlements: Vec<EntitlementOut>,
    pub created_at: DateTime<Utc>,
}

pub fn plan_out(v: &PlanVersion, default_plan: Option<&str>) -> Plan {
    let currency = v.currency().to_string();
    Plan {
        key: v.key.clone(),
        name: v.name.clone(),
        version: v.version,
        default: default_plan == Some(v.key.as_str()),
        prices: v
            .prices
            .iter()
            .map(|p| PriceOut {
                interval: p.interval,
                amount: money::format(p.amount, &p.currency),
                currency: p.currency.clone(),
                per_seat: p.per_seat,
                stripe_price_id: p.stripe_price_id.clone(),
            })
            .collect(),
        trial_days: v.trial_days,
        retention_days: v.retention_days,
        entitlements: v
            .features
            .iter()
            .map(|f| {
                let e = &f.entitlement;
                EntitlementOut {
                    feature: f.feature.clone(),
                    feature_type: e.feature_type,
                    enabled: e.enabled,
                    limit: e.limit.map(Qty),
                    unlimited: e.limit.is_none()
                        && matches!(
                            e.feature_type,
                            FeatureType::Metered | FeatureType::Limit | FeatureType::Concurrency
                        ),
                    reset: (e.feature_type == FeatureType::Metered).then_some(e.reset),
                    overage: e.overage.as_ref().map(|o| OverageOut {
                        unit_amount: money::format_unit(o.unit_amount, &currency),
                        per_units: Qty(o.per_units),
                        cap_amount: o.cap_amount.map(|c| money::format(c, &currency)),
                    }),
                }
            })
            .collect(),
        created_at: v.created_at,
    }
}

fn bad(code: &'static str, param: String, message: String) -> ApiError {
    ApiError::invalid_param(code, &param, message)
}

/// Validates a plan against the tenant's features and normalizes it.
async fn normalize(
    conn: &mut PgConnection,
    tenant_id: &str,
    input: &PlanInput,
) -> ApiResult<Definition> {
    let name = input.name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(bad(
            "invalid_name",
            "name".into(),
            "name must be 1 to 200 characters.".into(),
        ));
    }
    let trial_days = input.trial_days.unwrap_or(0);
    if !(0..=730).contains(&trial_days) {
        return Err(bad(
            "invalid_trial_days",
            "trial_days".into(),
            "trial_days must be between 0 and 730.".into(),
        ));
    }
    if let Some(r) = input.retention_days {
        if r < 1 {
            return Err(bad(
                "invalid_retention",
                "retention_days".into(),
                "retention_days must be at least 1 (null keeps events forever).".into(),
            ));
        }
    }
    let mut prices = Vec::new();
    for (i, p) in input.prices.iter().enumerate() {
        let currency = p.currency.to_ascii_lowercase();
        if !money::is_valid_currency(&currency) {
            return Err(bad(
                "invalid_currency",
                format!("prices[{i}].currency"),
                "currency must be a three-letter ISO code.".into(),
            ));
        }
        if p.amount.is_sign_negative()
            || p.amount > super::types::max_quantity()
            || p.amount.normalize().scale() > money::minor_unit_scale(&currency)
        {
            return Err(bad(
                "invalid_amount",
                format!("prices[{i}].amount"),
                "amount must be non-negative with at most the currency's minor-unit precision."
                    .into(),
            ));
        }
        if prices.iter().any(|q: &PriceDef| q.interval == p.interval) {
            return Err(bad(
                "duplicate_price",
                format!("prices[{i}].interval"),
                "A plan has at most one price per interval.".into(),
            ));
        }
        prices.push(PriceDef {
            interval: p.interval,
            amount: money::round_to_minor(p.amount, &currency),
            currency,
            per_seat: p.per_seat.unwrap_or(false),
            stripe_price_id: p.stripe_price_id.clone(),
        });
    }
    prices.sort_by_key(|p| p.interval.as_str());
    let mut entitlements: Vec<EntitlementDef> = Vec::new();
    for (i, e) in input.entitlements.iter().enumerate() {
        let at = |field: &str| format!("entitlements[{i}].{field}");
        let feature = super::features::fetch_feature(conn, tenant_id, &e.feature)
            .await?
            .ok_or_else(|| {
                bad(
                    "feature_not_found",
                    at("feature"),
                    format!("No feature with key `{}`; create it first.", e.feature),
                )
            })?;
        if entitlements.iter().any(|x| x.feature == e.feature) {
            return Err(bad(
                "duplicate_entitlement",
                at("feature"),
                format!("Feature `{}` is listed twice.", e.feature),
            ));
        }
        let limit = match e.limit {
            None => None,
            Some(Qty(l)) if l == Decimal::NEGATIVE_ONE => None,
            Some(Qty(l)) if l.is_sign_negative() => {
                return Err(bad(
                    "invalid_limit",
                    at("limit"),
                    "limit must be non-negative, or -1/null for unlimited.".into(),
                ));
            }
            Some(Qty(l)) => Some(super::types::validate_quantity(l, &at("limit"))?),
        };
        let ftype = feature.feature_type;
        if ftype == FeatureType::Boolean && e.limit.is_some() {
            return Err(bad(
                "invalid_entitlement",
                at("limit"),
                "Boolean features have no limit.".into(),
            ));
        }
        if ftype != FeatureType::Metered && e.reset.is_some() {
            return Err(bad(
                "invalid_entitlement",
                at("reset"),
                "Only metered features reset.".into(),
            ));
        }
        let overage = match &e.overage {
            None => None,
            Some(o) => {
                if ftype != FeatureType::Metered {
                    return Err(bad(
                        "invalid_entitlement",
                        at("overage"),
                        "Only metered features have overage.".into(),
                    ));
                }
                if limit.is_none() {
                    return Err(bad(
                        "invalid_entitlement",
                        at("overage"),
                        "Overage needs a limit to go over.".into(),
                    ));
                }
                let per_units = o.per_units.map(|q| q.0).unwrap_or(Decimal::ONE);
                let too_big = |d: Decimal| d > super::types::max_quantity();
                if too_big(per_units) || too_big(o.unit_amount) || o.cap_amount.is_some_and(too_big)
                {
                    return Err(bad(
                        "invalid_overage",
                        at("overage"),
                        "Overage amounts and per_units may be at most 10^15.".into(),
                    ));
                }
                if o.unit_amount.is_sign_negative()
                    || per_units <= Decimal::ZERO
                    || o.cap_amount.is_some_and(|c| c.is_sign_negative())
                {
                    return Err(bad(
                        "invalid_overage",
                        at("overage"),
                        "unit_amount and cap_amount must be non-negative and per_units positive."
                            .into(),
                    ));
                }
                Some(OverageDef {
                    unit_amount: o.unit_amount.normalize(),
                    per_units: per_units.normalize(),
                    cap_amount: o.cap_amount.map(|c| c.normalize()),
                })
            }
        };
        entitlements.push(EntitlementDef {
            feature: e.feature.clone(),
            enabled: e.enabled.unwrap_or(true),
            limit,
            reset: e.reset.unwrap_or(Reset::BillingPeriod),
            overage,
        });
    }
    entitlements.sort_by(|a, b| a.feature.cmp(&b.feature));
    Ok(Definition {
        name: name.to_string(),
        trial_days,
        retention_days: input.retention_days,
        prices,
        entitlements,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// `POST`: the key must be new.
    Create,
    /// `PUT` / `plans apply`: create, or add a version if the definition changed.
    Upsert,
}

/// Writes a plan inside the caller's transaction. Returns the version now current and whether
/// anything was written.
pub async fn write_plan(
    conn: &mut PgConnection,
    tenant_id: &str,
    key: &str,
    input: &PlanInput,
    mode: WriteMode,
) -> ApiResult<(i32, bool)> {
    super::features::validate_key(key, "key")?;
    let def = normalize(conn, tenant_id, input).await?;
    let def_json = serde_json::to_value(&def).map_err(anyhow::Error::from)?;

    let inserted = sqlx::query_scalar!(
        "INSERT INTO plans (tenant_id, plan_key, latest_version) VALUES ($1, $2, 1)
         ON CONFLICT (tenant_id, plan_key) DO NOTHING RETURNING latest_version",
        tenant_id,
        key
    )
    .fetch_optional(&mut *conn)
    .await?;
    let version = match inserted {
        Some(v) => v,
        None => {
            if mode == WriteMode::Create {
                return Err(ApiError::conflict("plan_exists", format!("A plan with key `{key}` already exists; PUT /v1/plans/{key} makes a new version.")).with_param("key"));
            }
            // Lock the plan so concurrent PUTs make consecutive versions.
            let latest = sqlx::query_scalar!(
                "SELECT latest_version FROM plans WHERE tenant_id = $1 AND plan_key = $2 FOR UPDATE",
                tenant_id,
                key
            )
            .fetch_one(&mut *conn)
            .await?;
            let current = sqlx::query_scalar!(
                "SELECT definition FROM plan_versions WHERE tenant_id = $1 AND plan_key = $2 AND version = $3",
                tenant_id,
                key,
                latest
            )
            .fetch_one(&mut *conn)
            .await?;
            let unchanged =
                serde_json::from_value::<Definition>(current).ok().as_ref() == Some(&def);
            if unchanged {
                apply_default(conn, tenant_id, key, input.default).await?;
                return Ok((latest, false));
            }
            let next = latest + 1;
            sqlx::query!(
                "UPDATE plans SET latest_version = $3, updated_at = now() WHERE tenant_id = $1 AND plan_key = $2",
                tenant_id,
                key,
                next
            )
            .execute(&mut *conn)
            .await?;
            next
        }
    };
    sqlx::query!(
        "INSERT INTO plan_versions (tenant_id, plan_key, version, name, trial_days, retention_days, definition)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        tenant_id,
        key,
        version,
        def.name,
        def.trial_days,
        def.retention_days,
        def_json
    )
    .execute(&mut *conn)
    .await?;
    for p in &def.prices {
        sqlx::query!(
            "INSERT INTO plan_prices (tenant_id, plan_key, version, interval, amount, currency, per_seat, stripe_price_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            tenant_id,
            key,
            version,
            p.interval.as_str(),
            p.amount,
            p.currency,
            p.per_seat,
            p.stripe_price_id
        )
        .execute(&mut *conn)
        .await?;
    }
    for e in &def.entitlements {
        let o = e.overage.as_ref();
        sqlx::query!(
            "INSERT INTO plan_entitlements (tenant_id, plan_key, version, feature_key, enabled, limit_value,
                 reset, overage_unit_amount, overage_per_units, overage_cap_amount)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            tenant_id,
            key,
            version,
            e.feature,
            e.enabled,
            e.limit,
            e.reset.as_str(),
            o.map(|o| o.unit_amount),
            o.map(|o| o.per_units),
            o.and_then(|o| o.cap_amount)
        )
        .execute(&mut *conn)
        .await?;
    }
    apply_default(conn, tenant_id, key, input.default).await?;
    Ok((version, true))
}

async fn apply_default(
    conn: &mut PgConnection,
    tenant_id: &str,
    key: &str,
    default: Option<bool>,
) -> ApiResult<()> {
    match default {
        Some(true) => {
            sqlx::query!(
                "UPDATE tenants SET default_plan = $2, updated_at = now() WHERE tenant_id = $1",
                tenant_id,
                key
            )
            .execute(&mut *conn)
            .await?;
        }
        Some(false) => {
            sqlx::query!(
                "UPDATE tenants SET default_plan = NULL, updated_at = now()
                 WHERE tenant_id = $1 AND default_plan = $2",
                tenant_id,
                key
            )
            .execute(&mut *conn)
            .await?;
        }
        None => {}
    }
    Ok(())
}

async fn respond(state: &AppState, tenant_id: &str, key: &str, version: i32) -> ApiResult<Plan> {
    let mut conn = state.db.acquire().await?;
    let v = state
        .plans
        .get(&mut conn, tenant_id, key, version)
        .await?
        .ok_or_else(|| ApiError::not_found("plan_not_found", "No such plan."))?;
    let default_plan = sqlx::query_scalar!(
        "SELECT default_plan FROM tenants WHERE tenant_id = $1",
        tenant_id
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(plan_out(&v, default_plan.as_deref()))
}

#[utoipa::path(post, path = "/v1/plans", tag = "plans", request_body = PlanInput,
    responses((status = 201, body = Plan), (status = 400, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
pub async fn create_plan(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Json(body): Json<PlanInput>,
) -> ApiResult<(StatusCode, axum::Json<Plan>)> {
    let key = body.key.clone().ok_or_else(|| {
        ApiError::invalid_param("missing_field", "key", "Missing required field `key`.")
    })?;
    let mut tx = state.db.begin().await?;
    let (version, _) = write_plan(&mut tx, &ctx.tenant_id, &key, &body, WriteMode::Create).await?;
    tx.commit().await?;
    let plan = respond(&state, &ctx.tenant_id, &key, version).await?;
    Ok((StatusCode::CREATED, axum::Json(plan)))
}

#[utoipa::path(put, path = "/v1/plans/{key}", tag = "plans", request_body = PlanInput,
    params(("key" = String, Path, description = "Plan key")),
    responses((status = 200, description = "Unchanged, or a new version", body = Plan),
              (status = 201, description = "Created", body = Plan),
              (status = 400, body = crate::error::ErrorBody)))]
pub async fn put_plan(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(key): Path<String>,
    Json(body): Json<PlanInput>,
) -> ApiResult<(StatusCode, axum::Json<Plan>)> {
    if body.key.as_ref().is_some_and(|k| k != &key) {
        return Err(ApiError::invalid_param(
            "key_mismatch",
            "key",
            "The body's key differs from the path's.",
        ));
    }
    let mut tx = state.db.begin().await?;
    let (version, written) =
        write_plan(&mut tx, &ctx.tenant_id, &key, &body, WriteMode::Upsert).await?;
    tx.commit().await?;
    let plan = respond(&state, &ctx.tenant_id, &key, version).await?;
    let status = if written && version == 1 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(plan)))
}

#[utoipa::path(get, path = "/v1/plans", tag = "plans", params(PageParams),
    responses((status = 200, description = "The newest version of each plan", body = List<Plan>)))]
pub async fn list_plans(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Query(page): Query<PageParams>,
) -> ApiResult<axum::Json<List<Plan>>> {
    let limit = page.limit()?;
    let mut conn = state.db.acquire().await?;
    let rows = sqlx::query!(
        "SELECT plan_key, latest_version FROM plans
         WHERE tenant_id = $1 AND ($2::text IS NULL OR plan_key > $2)
         ORDER BY plan_key LIMIT $3",
        ctx.tenant_id,
        page.starting_after,
        limit + 1
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut plans = Vec::with_capacity(rows.len());
    for r in rows {
        if let Some(v) = state
            .plans
            .get(&mut conn, &ctx.tenant_id, &r.plan_key, r.latest_version)
            .await?
        {
            plans.push(plan_out(&v, ctx.default_plan.as_deref()));
        }
    }
    Ok(axum::Json(List::from_rows(plans, limit)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct VersionParam {
    /// A specific version (default: the newest).
    pub version: Option<i32>,
}

#[utoipa::path(get, path = "/v1/plans/{key}", tag = "plans",
    params(("key" = String, Path, description = "Plan key"), VersionParam),
    responses((status = 200, body = Plan), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_plan(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(key): Path<String>,
    Query(q): Query<VersionParam>,
) -> ApiResult<axum::Json<Plan>> {
    let mut conn = state.db.acquire().await?;
    let version = match q.version {
        Some(v) => v,
        None => crate::db::plans::latest_version(&mut conn, &ctx.tenant_id, &key)
            .await?
            .ok_or_else(|| ApiError::not_found("plan_not_found", "No such plan."))?,
    };
    let v = state
        .plans
        .get(&mut conn, &ctx.tenant_id, &key, version)
        .await?
        .ok_or_else(|| ApiError::not_found("plan_not_found", "No such plan or version."))?;
    Ok(axum::Json(plan_out(&v, ctx.default_plan.as_deref())))
}
