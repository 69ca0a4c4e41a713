//! The hot path (SPEC §7): checks, usage recording, and usage read-outs.

use axum::extract::State;
use axum::http::HeaderMap;
use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use super::extract::{from_value, Json, Path, Query};
use crate::db::hot_pool::LazyConn;
use crate::db::plans::PlanVersion;
use crate::db::usage::{self, NewEvent, Outcome};
use crate::domain::entitlement::{Denial, Entitlement, FeatureType, WarningLevel};
use crate::domain::money;
use crate::domain::period::{counter_period, Period, Reset};
use crate::domain::qty::{validate_quantity, Qty};
use crate::entitlements::resolve::Resolved;
use crate::http::error::{ApiError, ApiResult, ErrorDetail};
use crate::tenancy::{Caller, TenantCtx};
use crate::AppState;

/// How far in the future a usage timestamp may be.
const MAX_CLOCK_SKEW: Duration = Duration::minutes(5);
pub const MAX_BATCH: usize = 1000;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckInput {
    pub customer: String,
    pub feature: String,
    /// Default 1.
    pub quantity: Option<Qty>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OverageStatus {
    pub unit_amount: String,
    pub billed_so_far: String,
    pub would_bill: String,
    pub cap_amount: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CheckResult {
    pub allowed: bool,
    pub reason: Option<Denial>,
    pub customer: String,
    pub feature: String,
    #[serde(rename = "type")]
    pub feature_type: Option<FeatureType>,
    pub unlimited: bool,
    pub limit: Option<Qty>,
    pub used: Option<Qty>,
    pub remaining: Option<Qty>,
    pub requested: Qty,
    pub percent_used: Option<Qty>,
    pub warning_level: Option<WarningLevel>,
    pub resets_at: Option<DateTime<Utc>>,
    pub overage: Option<OverageStatus>,
}

fn denied(
    customer: &str,
    feature: &str,
    ftype: Option<FeatureType>,
    requested: Decimal,
    reason: Denial,
) -> CheckResult {
    CheckResult {
        allowed: false,
        reason: Some(reason),
        customer: customer.to_string(),
        feature: feature.to_string(),
        feature_type: ftype,
        unlimited: false,
        limit: None,
        used: None,
        remaining: None,
        requested: Qty(requested),
        percent_used: None,
        warning_level: None,
        resets_at: None,
        overage: None,
    }
}

/// Builds a check result for a feature the plan lists, given its current usage.
fn check_result(
    ctx: &TenantCtx,
    plan: &PlanVersion,
    customer: &str,
    feature: &str,
    ent: &Entitlement,
    (used, period): (Decimal, Option<Period>),
    requested: Decimal,
) -> CheckResult {
    let eval = ent.evaluate(used, requested, &ctx.thresholds());
    let counts = matches!(
        ent.feature_type,
        FeatureType::Metered | FeatureType::Concurrency
    );
    let has_limit = matches!(
        ent.feature_type,
        FeatureType::Metered | FeatureType::Limit | FeatureType::Concurrency
    );
    let currency = plan.currency();
    CheckResult {
        allowed: eval.allowed,
        reason: eval.reason,
        customer: customer.to_string(),
        feature: feature.to_string(),
        feature_type: Some(ent.feature_type),
        unlimited: has_limit && ent.limit.is_none() && ent.enabled,
        limit: if has_limit { ent.limit.map(Qty) } else { None },
        used: counts.then_some(Qty(used)),
        remaining: eval.remaining.map(Qty),
        requested: Qty(requested),
        percent_used: eval.percent_used.map(Qty),
        warning_level: counts.then_some(eval.warning_level),
        resets_at: if ent.feature_type == FeatureType::Metered {
            period.and_then(|p| p.end)
        } else {
            None
        },
        overage: match (&ent.overage, eval.billed_so_far, eval.would_bill) {
            (Some(o), Some(billed), Some(would)) => Some(OverageStatus {
                unit_amount: money::format_unit(o.unit_amount, currency),
                billed_so_far: money::format(billed, currency),
                would_bill: money::format(would, currency),
                cap_amount: o.cap_amount.map(|c| money::format(c, currency)),
            }),
            _ => None,
        },
    }
}

/// `404 feature_not_found` if the tenant never defined the feature, else its type.
async fn feature_type_or_404(
    conn: &mut PgConnection,
    tenant_id: &str,
    feature: &str,
) -> ApiResult<FeatureType> {
    crate::catalog::features::find(conn, tenant_id, feature)
        .await?
        .map(|f| f.feature_type)
        .ok_or_else(|| {
            ApiError::not_found("feature_not_found", "No such feature.").with_param("feature")
        })
}

/// Current usage of one entitlement and the period it is counted in.
async fn current_usage_of(
    conn: &mut LazyConn<'_>,
    ctx: &TenantCtx,
    resolved: &Resolved,
    customer: &str,
    feature: &str,
    ent: &Entitlement,
    now: DateTime<Utc>,
) -> ApiResult<(Decimal, Option<Period>)> {
    match ent.feature_type {
        FeatureType::Metered => {
            let period = counter_period(ent.reset, now, resolved.billing.as_ref());
            // Usually the resolve query already read it.
            let used = match resolved.counter_at(period.start) {
                Some(used) => used,
                None => {
                    let conn = conn.get().await?;
                    usage::counter(conn, &ctx.tenant_id, customer, feature, period.start).await?
                }
            };
            Ok((used, Some(period)))
        }
        FeatureType::Concurrency => {
            let conn = conn.get().await?;
            let used = usage::active_leases(conn, &ctx.tenant_id, customer, feature, now).await?;
            Ok((used, None))
        }
        _ => Ok((Decimal::ZERO, None)),
    }
}

#[utoipa::path(post, path = "/v1/check", tag = "usage", request_body = CheckInput,
    responses((status = 200, body = CheckResult), (status = 400, body = crate::http::error::ErrorBody),
              (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn check(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CheckInput>,
) -> ApiResult<axum::Json<CheckResult>> {
    let requested = validate_quantity(body.quantity.map(|q| q.0).unwrap_or(Decimal::ONE))
        .map_err(|e| crate::error::Error::invalid_quantity(e, "quantity"))?;
    let mut conn = LazyConn::new(&state.entitlements.hot);
    let result = check_on(&state, &mut conn, &caller, &body, requested).await;
    conn.finish(completed(&result));
    result.map(axum::Json)
}

/// Whether a request's database work ran to completion (so its connection can be reused):
/// it succeeded, or failed for the client's reasons rather than the database's.
fn completed<T>(result: &ApiResult<T>) -> bool {
    result
        .as_ref()
        .map_or_else(|e| !e.status.is_server_error(), |_| true)
}

/// A check. Usually one shared statement (key, tenant, customer, plan and counter); `conn`
/// is taken only for what that did not read (a feature's type, leases, an older counter).
async fn check_on(
    state: &AppState,
    conn: &mut LazyConn<'_>,
    caller: &Caller,
    body: &CheckInput,
    requested: Decimal,
) -> ApiResult<CheckResult> {
    let (ctx, resolved) = state
        .entitlements
        .resolve_batched(caller, &body.customer, &body.feature)
        .await?;
    let now = ctx.now(&state.clock);
    let Some(plan) = resolved.plan.clone() else {
        let ftype = feature_type_or_404(conn.get().await?, &ctx.tenant_id, &body.feature).await?;
        return Ok(denied(
            &body.customer,
            &body.feature,
            Some(ftype),
            requested,
            Denial::SubscriptionInactive,
        ));
    };
    let Some(ent) = plan.entitlement(&body.feature) else {
        let ftype = feature_type_or_404(conn.get().await?, &ctx.tenant_id, &body.feature).await?;
        return Ok(denied(
            &body.customer,
            &body.feature,
            Some(ftype),
            requested,
            Denial::NotInPlan,
        ));
    };
    let (used, period) = current_usage_of(
        conn,
        &ctx,
        &resolved,
        &body.customer,
        &body.feature,
        ent,
        now,
    )
    .await?;
    Ok(check_result(
        &ctx,
        &plan,
        &body.customer,
        &body.feature,
        ent,
        (used, period),
        requested,
    ))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EntitlementList {
    pub data: Vec<CheckResult>,
}

#[utoipa::path(get, path = "/v1/customers/{id}/entitlements", tag = "usage",
    params(("id" = String, Path, description = "Customer id")),
    responses((status = 200, description = "Every feature of the customer's plan, as a check for one more unit", body = EntitlementList),
              (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn entitlements(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(customer): Path<String>,
) -> ApiResult<axum::Json<EntitlementList>> {
    let now = ctx.now(&state.clock);
    let mut conn = state.db.acquire().await?;
    let resolved = state
        .entitlements
        .resolve(&mut conn, &ctx, &customer)
        .await?;
    let Some(plan) = resolved.plan.clone() else {
        return Ok(axum::Json(EntitlementList { data: vec![] }));
    };
    // All metered counters in one query.
    let mut keys = Vec::new();
    let mut periods = Vec::new();
    for f in &plan.features {
        if f.entitlement.feature_type == FeatureType::Metered {
            let p = counter_period(f.entitlement.reset, now, resolved.billing.as_ref());
            keys.push((f.feature.clone(), p.start));
            periods.push(Some(p));
        } else {
            periods.push(None);
        }
    }
    let mut used_values = usage::counters(&mut conn, &ctx.tenant_id, &customer, &keys)
        .await?
        .into_iter();
    let mut data = Vec::with_capacity(plan.features.len());
    for (f, period) in plan.features.iter().zip(periods) {
        let used = match f.entitlement.feature_type {
            FeatureType::Metered => used_values.next().unwrap_or(Decimal::ZERO),
            FeatureType::Concurrency => {
                usage::active_leases(&mut conn, &ctx.tenant_id, &customer, &f.feature, now).await?
            }
            _ => Decimal::ZERO,
        };
        data.push(check_result(
            &ctx,
            &plan,
            &customer,
            &f.feature,
            &f.entitlement,
            (used, period),
            Decimal::ONE,
        ));
    }
    Ok(axum::Json(EntitlementList { data }))
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageInput {
    pub customer: String,
    pub feature: String,
    /// Default 1. For `max` features, the level.
    pub quantity: Option<Qty>,
    /// The event's idempotency key (default: the Idempotency-Key header, else generated).
    pub id: Option<String>,
    /// When it happened (default now); at most 5 minutes ahead.
    pub timestamp: Option<DateTime<Utc>>,
    pub member: Option<String>,
    /// Default true. `false`: kept for the audit trail, counted nowhere.
    pub billable: Option<bool>,
    /// Default true. `false`: usage that already happened; always counted (overage still capped).
    pub enforce: Option<bool>,
    #[schema(value_type = Option<Object>)]
    pub properties: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsageResult {
    pub id: String,
    pub customer: String,
    pub feature: String,
    pub quantity: Qty,
    pub timestamp: DateTime<Utc>,
    pub duplicate: bool,
    pub used: Qty,
    pub remaining: Option<Qty>,
    pub limit: Option<Qty>,
    pub warning_level: WarningLevel,
}

/// The answer for an event id seen before.
fn duplicate_result(
    plan: Option<&PlanVersion>,
    thresholds: &crate::domain::entitlement::Thresholds,
    event: usage::StoredEvent,
    used: Decimal,
) -> UsageResult {
    let limit = plan
        .and_then(|p| p.entitlement(&event.feature_key))
        .and_then(|e| e.limit);
    UsageResult {
        id: event.event_id,
        customer: event.customer_id,
        feature: event.feature_key,
        quantity: Qty(event.quantity),
        timestamp: event.occurred_at,
        duplicate: true,
        used: Qty(used),
        remaining: limit.map(|l| Qty((l - used).max(Decimal::ZERO))),
        limit: limit.map(Qty),
        warning_level: thresholds.level(used, limit),
    }
}

/// A retry of an event recorded before is a duplicate even if the plan has changed since;
/// anything else gets `err`.
async fn refuse_unless_duplicate(
    conn: &mut PgConnection,
    ctx: &TenantCtx,
    plan: Option<&PlanVersion>,
    event_id: &str,
    err: ApiError,
) -> ApiResult<UsageResult> {
    match usage::stored_event(conn, &ctx.tenant_id, event_id).await? {
        Some((event, used)) => Ok(duplicate_result(plan, &ctx.thresholds(), event, used)),
        None => Err(err),
    }
}

/// Records one usage event: validation, plan resolution, then the atomic write.
async fn record_one(
    state: &AppState,
    caller: &Caller,
    input: UsageInput,
    header_id: Option<&str>,
) -> ApiResult<UsageResult> {
    let mut conn = state.entitlements.hot.acquire().await?;
    let result = record_on(state, &mut conn, caller, input, header_id).await;
    conn.finish(completed(&result));
    result
}

async fn record_on(
    state: &AppState,
    conn: &mut PgConnection,
    caller: &Caller,
    input: UsageInput,
    header_id: Option<&str>,
) -> ApiResult<UsageResult> {
    let quantity = validate_quantity(input.quantity.map(|q| q.0).unwrap_or(Decimal::ONE))
        .map_err(|e| crate::error::Error::invalid_quantity(e, "quantity"))?;
    let event_id = match input.id.as_deref().or(header_id) {
        Some(id) if crate::ids::is_valid_external_id(id) => id.to_string(),
        Some(_) => {
            return Err(ApiError::invalid_param(
                "invalid_id",
                "id",
                "Event ids are 1 to 255 visible ASCII characters without `/ ? # %`.",
            ))
        }
        None => crate::ids::new_id("evt"),
    };
    if input
        .member
        .as_deref()
        .is_some_and(|m| !crate::ids::is_valid_external_id(m))
    {
        return Err(ApiError::invalid_param(
            "invalid_member",
            "member",
            "Member ids are 1 to 255 visible ASCII characters.",
        ));
    }
    if input.properties.as_ref().is_some_and(|p| !p.is_object()) {
        return Err(ApiError::invalid_param(
            "invalid_properties",
            "properties",
            "properties must be a JSON object.",
        ));
    }
    let billable = input.billable.unwrap_or(true);
    let enforce = input.enforce.unwrap_or(true);

    // Key (on the hot path), tenant, customer and plan in one round trip.
    let (ctx, resolved) = state
        .entitlements
        .resolve_on(conn, caller, &input.customer, None)
        .await?;
    let ctx = &ctx;
    let now = ctx.now(&state.clock);
    let timestamp = input
        .timestamp
        .map(|t| chrono::SubsecRound::trunc_subsecs(t, 6))
        .unwrap_or(now);
    if timestamp > now + MAX_CLOCK_SKEW {
        return Err(ApiError::invalid_param(
            "timestamp_in_future",
            "timestamp",
            "timestamp is more than 5 minutes in the future.",
        ));
    }
    let Some(plan) = resolved.plan.clone() else {
        feature_type_or_404(conn, &ctx.tenant_id, &input.feature).await?;
        return refuse_unless_duplicate(
            conn,
            ctx,
            resolved.plan.as_deref(),
            &event_id,
            ApiError::limit(
                "subscription_inactive",
                "The customer has no live subscription.",
            )
            .with_param("customer"),
        )
        .await;
    };
    let Some(ent) = plan.entitlement(&input.feature) else {
        feature_type_or_404(conn, &ctx.tenant_id, &input.feature).await?;
        return refuse_unless_duplicate(
            conn,
            ctx,
            resolved.plan.as_deref(),
            &event_id,
            ApiError::limit("not_in_plan", "The feature is not in the customer's plan.")
                .with_param("feature"),
        )
        .await;
    };
    if ent.feature_type != FeatureType::Metered {
        return Err(ApiError::invalid_param(
            "feature_not_metered",
            "feature",
            "Usage is recorded only for metered features (concurrency features use leases).",
        ));
    }
    if !ent.enabled {
        return refuse_unless_duplicate(
            conn,
            ctx,
            resolved.plan.as_deref(),
            &event_id,
            ApiError::limit(
                "not_in_plan",
                "The feature is not enabled on the customer's plan.",
            )
            .with_param("feature"),
        )
        .await;
    }
    let period = counter_period(ent.reset, timestamp, resolved.billing.as_ref());
    let ceiling = if enforce { ent.ceiling() } else { None };
    let event = NewEvent {
        tenant_id: &ctx.tenant_id,
        event_id: &event_id,
        customer_id: &input.customer,
        feature_key: &input.feature,
        quantity,
        occurred_at: timestamp,
        period,
        member_id: input.member.as_deref(),
        billable,
        properties: input.properties.as_ref(),
        aggregation: ent.aggregation,
        ceiling,
        limit: ent.limit,
        thresholds: ctx.thresholds(),
        meter_event: plan.meter_event(&input.feature),
        now,
    };
    let thresholds = ctx.thresholds();
    match usage::record(conn, &event).await? {
        Outcome::Recorded { used } => Ok(UsageResult {
            id: event_id,
            customer: input.customer,
            feature: input.feature,
            quantity: Qty(quantity),
            timestamp,
            duplicate: false,
            used: Qty(used),
            remaining: ent.remaining(used).map(Qty),
            limit: ent.limit.map(Qty),
            warning_level: thresholds.level(used, ent.limit),
        }),
        Outcome::Duplicate { event, used } => {
            Ok(duplicate_result(Some(&plan), &thresholds, event, used))
        }
        Outcome::Refused => {
            let denial = ent.ceiling_denial();
            let message = match denial {
                Denial::SpendCapReached => {
                    "Recording this usage would take the period's overage charge past its cap."
                }
                _ => "Recording this usage would exceed the plan's limit.",
            };
            Err(ApiError::limit(denial.as_str(), message).with_param("quantity"))
        }
        Outcome::PeriodClosed => Err(period_closed()),
    }
}

pub fn period_closed() -> ApiError {
    ApiError::conflict(
        "period_closed",
        "The invoice for the period of this timestamp is finalized; usage in it can no longer be recorded.",
    )
    .with_param("timestamp")
}

#[utoipa::path(post, path = "/v1/usage", tag = "usage", request_body = UsageInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "Used as the event id when the body has none")),
    responses((status = 200, body = UsageResult), (status = 400, body = crate::http::error::ErrorBody),
              (status = 402, description = "limit_exceeded, spend_cap_reached, not_in_plan or subscription_inactive; nothing recorded", body = crate::http::error::ErrorBody),
              (status = 404, body = crate::http::error::ErrorBody),
              (status = 409, description = "period_closed: the timestamp's period is invoiced", body = crate::http::error::ErrorBody)))]
pub async fn record_usage(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Json(body): Json<UsageInput>,
) -> ApiResult<axum::Json<UsageResult>> {
    let header_id = headers
        .get(super::idempotency::HEADER)
        .and_then(|v| v.to_str().ok());
    record_one(&state, &caller, body, header_id)
        .await
        .map(axum::Json)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchInput {
    /// Up to 1000 events, each shaped like `POST /v1/usage`'s body.
    #[schema(value_type = Vec<UsageInput>)]
    pub events: Vec<serde_json::Value>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BatchStatus {
    Recorded,
    Duplicate,
    Refused,
    Invalid,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchItem {
    pub index: usize,
    pub status: BatchStatus,
    pub result: Option<UsageResult>,
    pub error: Option<ErrorDetail>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchResult {
    pub results: Vec<BatchItem>,
}

#[utoipa::path(post, path = "/v1/usage/batch", tag = "usage", request_body = BatchInput,
    responses((status = 200, body = BatchResult), (status = 400, body = crate::http::error::ErrorBody)))]
pub async fn record_usage_batch(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Json(body): Json<BatchInput>,
) -> ApiResult<axum::Json<BatchResult>> {
    if body.events.len() > MAX_BATCH {
        return Err(ApiError::invalid_param(
            "too_many_events",
            "events",
            "A batch holds at most 1000 events.",
        ));
    }
    let caller = Caller::Ready(ctx);
    let mut results = Vec::with_capacity(body.events.len());
    for (index, raw) in body.events.into_iter().enumerate() {
        let outcome = match from_value::<UsageInput>(raw) {
            Ok(input) => record_one(&state, &caller, input, None).await,
            Err(e) => Err(e),
        };
        let item = match outcome {
            Ok(r) => BatchItem {
                index,
                status: if r.duplicate {
                    BatchStatus::Duplicate
                } else {
                    BatchStatus::Recorded
                },
                result: Some(r),
                error: None,
            },
            Err(e) if e.status.is_server_error() => return Err(e),
            Err(e) => BatchItem {
                index,
                status: if e.status == axum::http::StatusCode::PAYMENT_REQUIRED
                    || e.status == axum::http::StatusCode::CONFLICT
                {
                    BatchStatus::Refused
                } else {
                    BatchStatus::Invalid
                },
                result: None,
                error: Some(e.body().error),
            },
        };
        results.push(item);
    }
    Ok(axum::Json(BatchResult { results }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PeriodParam {
    /// Only `current` for now.
    pub period: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FeatureUsage {
    pub feature: String,
    pub used: Qty,
    pub limit: Option<Qty>,
    pub remaining: Option<Qty>,
    pub percent_used: Option<Qty>,
    pub warning_level: WarningLevel,
    pub reset: Reset,
    pub period_start: Option<DateTime<Utc>>,
    pub period_end: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CurrentUsage {
    pub customer: String,
    pub data: Vec<FeatureUsage>,
}

#[utoipa::path(get, path = "/v1/customers/{id}/usage", tag = "usage",
    params(("id" = String, Path, description = "Customer id"), PeriodParam),
    responses((status = 200, description = "Per-feature totals for the current period", body = CurrentUsage),
              (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn current_usage(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(customer): Path<String>,
    Query(q): Query<PeriodParam>,
) -> ApiResult<axum::Json<CurrentUsage>> {
    if q.period.as_deref().is_some_and(|p| p != "current") {
        return Err(ApiError::invalid_param(
            "invalid_period",
            "period",
            "period must be `current`.",
        ));
    }
    let now = ctx.now(&state.clock);
    let mut conn = state.db.acquire().await?;
    let resolved = state
        .entitlements
        .resolve(&mut conn, &ctx, &customer)
        .await?;
    let Some(plan) = resolved.plan.clone() else {
        return Ok(axum::Json(CurrentUsage {
            customer,
            data: vec![],
        }));
    };
    let metered: Vec<_> = plan
        .features
        .iter()
        .filter(|f| f.entitlement.feature_type == FeatureType::Metered)
        .collect();
    let periods: Vec<Period> = metered
        .iter()
        .map(|f| counter_period(f.entitlement.reset, now, resolved.billing.as_ref()))
        .collect();
    let keys: Vec<_> = metered
        .iter()
        .zip(&periods)
        .map(|(f, p)| (f.feature.clone(), p.start))
        .collect();
    let used = usage::counters(&mut conn, &ctx.tenant_id, &customer, &keys).await?;
    let thresholds = ctx.thresholds();
    let data = metered
        .iter()
        .zip(periods)
        .zip(used)
        .map(|((f, p), used)| {
            let e = &f.entitlement;
            FeatureUsage {
                feature: f.feature.clone(),
                used: Qty(used),
                limit: e.limit.map(Qty),
                remaining: e.remaining(used).map(Qty),
                percent_used: e.percent_used(used).map(Qty),
                warning_level: thresholds.level(used, e.limit),
                reset: e.reset,
                period_start: (e.reset != Reset::Never).then_some(p.start),
                period_end: p.end,
            }
        })
        .collect();
    Ok(axum::Json(CurrentUsage { customer, data }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HistoryParam {
    /// How many months back (1 to 36, default 6).
    pub months: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PeriodUsage {
    pub feature: String,
    pub period_start: Option<DateTime<Utc>>,
    pub period_end: Option<DateTime<Utc>>,
    pub used: Qty,
    pub events: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsageHistory {
    pub customer: String,
    pub data: Vec<PeriodUsage>,
}

#[utoipa::path(get, path = "/v1/customers/{id}/usage/history", tag = "usage",
    params(("id" = String, Path, description = "Customer id"), HistoryParam),
    responses((status = 200, description = "Per-period totals, newest first", body = UsageHistory),
              (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn usage_history(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(customer): Path<String>,
    Query(q): Query<HistoryParam>,
) -> ApiResult<axum::Json<UsageHistory>> {
    let months = q.months.unwrap_or(6);
    if !(1..=36).contains(&months) {
        return Err(ApiError::invalid_param(
            "invalid_months",
            "months",
            "months must be between 1 and 36.",
        ));
    }
    let now = ctx.now(&state.clock);
    let since = crate::domain::period::add_months_clamped(
        crate::domain::period::month_containing(now).start,
        -(months - 1),
    );
    let mut conn = state.db.acquire().await?;
    state
        .entitlements
        .resolve(&mut conn, &ctx, &customer)
        .await?;
    let rows = sqlx::query!(
        "SELECT feature_key, period_start, period_end, used, event_count FROM usage_counters
         WHERE tenant_id = $1 AND customer_id = $2 AND (period_start >= $3 OR period_end IS NULL)
         ORDER BY period_start DESC, feature_key",
        ctx.tenant_id,
        customer,
        since
    )
    .fetch_all(&mut *conn)
    .await?;
    let data = rows
        .into_iter()
        .map(|r| PeriodUsage {
            feature: r.feature_key,
            period_start: r.period_end.map(|_| r.period_start),
            period_end: r.period_end,
            used: Qty(r.used),
            events: r.event_count,
        })
        .collect();
    Ok(axum::Json(UsageHistory { customer, data }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MemberUsage {
    pub member: String,
    pub used: Qty,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FeatureMembers {
    pub feature: String,
    pub period_start: Option<DateTime<Utc>>,
    pub period_end: Option<DateTime<Utc>>,
    /// Members with usage in the period.
    pub members: i64,
    pub total: Qty,
    pub average_per_member: Qty,
    /// The ten members with the most usage, most first.
    pub top: Vec<MemberUsage>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MembersSummary {
    pub customer: String,
    pub data: Vec<FeatureMembers>,
}

#[utoipa::path(get, path = "/v1/customers/{id}/usage/members", tag = "usage",
    params(("id" = String, Path, description = "Customer (organisation) id")),
    responses((status = 200, description = "Current-period usage per member of an organisation, per metered feature", body = MembersSummary),
              (status = 404, body = crate::http::error::ErrorBody)))]
pub async fn member_usage(
    State(state): State<AppState>,
    ctx: TenantCtx,
    Path(customer): Path<String>,
) -> ApiResult<axum::Json<MembersSummary>> {
    let now = ctx.now(&state.clock);
    let mut conn = state.db.acquire().await?;
    let resolved = state
        .entitlements
        .resolve(&mut conn, &ctx, &customer)
        .await?;
    let Some(plan) = resolved.plan.clone() else {
        return Ok(axum::Json(MembersSummary {
            customer,
            data: vec![],
        }));
    };
    let mut data = Vec::new();
    for f in plan
        .features
        .iter()
        .filter(|f| f.entitlement.feature_type == FeatureType::Metered)
    {
        let period = counter_period(f.entitlement.reset, now, resolved.billing.as_ref());
        let rows = sqlx::query!(
            r#"SELECT member_id, used, count(*) OVER () AS "members!", sum(used) OVER () AS "total!"
               FROM usage_member_counters
               WHERE tenant_id = $1 AND customer_id = $2 AND feature_key = $3 AND period_start = $4
               ORDER BY used DESC, member_id
               LIMIT 10"#,
            ctx.tenant_id,
            customer,
            f.feature,
            period.start
        )
        .fetch_all(&mut *conn)
        .await?;
        let members = rows.first().map(|r| r.members).unwrap_or(0);
        let total = rows.first().map(|r| r.total).unwrap_or(Decimal::ZERO);
        let average = if members > 0 {
            (total / Decimal::from(members)).round_dp(4).normalize()
        } else {
            Decimal::ZERO
        };
        data.push(FeatureMembers {
            feature: f.feature.clone(),
            period_start: (f.entitlement.reset != Reset::Never).then_some(period.start),
            period_end: period.end,
            members,
            total: Qty(total),
            average_per_member: Qty(average),
            top: rows
                .into_iter()
                .map(|r| MemberUsage {
                    member: r.member_id,
                    used: Qty(r.used),
                })
                .collect(),
        });
    }
    Ok(axum::Json(MembersSummary { customer, data }))
}
