//! `POST /v1/check` and the entitlement list: may this customer use this feature, and how
//! much is left. Never changes anything.

use crate::ids::TenantId;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use super::resolve::Resolved;
use super::Entitlements;
use crate::db::hot_pool::LazyConn;
use crate::db::plans::PlanVersion;
use crate::db::usage;
use crate::domain::entitlement::{Denial, Entitlement, FeatureType, Thresholds, WarningLevel};
use crate::domain::money;
use crate::domain::period::{counter_period, Period};
use crate::domain::plan::gate;
use crate::domain::qty::{validate_quantity, Qty};
use crate::error::{Error, Result};
use crate::tenancy::{Caller, TenantCtx};

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

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EntitlementList {
    pub data: Vec<CheckResult>,
}

fn denied(
    customer: &str,
    feature: &str,
    ftype: FeatureType,
    requested: Decimal,
    reason: Denial,
) -> CheckResult {
    CheckResult {
        allowed: false,
        reason: Some(reason),
        customer: customer.to_string(),
        feature: feature.to_string(),
        feature_type: Some(ftype),
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

/// A check result for a feature the plan lists, given its current usage.
fn check_result(
    thresholds: &Thresholds,
    plan: &PlanVersion,
    customer: &str,
    feature: &str,
    ent: &Entitlement,
    (used, period): (Decimal, Option<Period>),
    requested: Decimal,
) -> CheckResult {
    let eval = ent.evaluate(used, requested, thresholds);
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

/// `feature_not_found` if the tenant never defined the feature, else its type.
pub(super) async fn feature_type(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    feature: &str,
) -> Result<FeatureType> {
    crate::db::features::get(conn, tenant_id, feature)
        .await?
        .map(|f| f.feature_type)
        .ok_or_else(|| {
            Error::not_found("feature_not_found", "No such feature.").with_param("feature")
        })
}

/// Whether a request's database work ran to completion (so its hot connection can be
/// reused): it succeeded, or was refused for the client's reasons rather than failed.
pub(super) fn completed<T>(result: &Result<T>) -> bool {
    result.as_ref().map_or_else(|e| !e.is_failure(), |_| true)
}

impl Entitlements {
    /// A check. Usually one shared statement (key, tenant, customer, plan and counter,
    /// batched with concurrent checks); a hot connection is taken only for what that did not
    /// read (a feature's type, leases, an older counter).
    pub async fn check(&self, caller: &Caller, input: &CheckInput) -> Result<CheckResult> {
        let requested = validate_quantity(input.quantity.map_or(Decimal::ONE, |q| q.0))
            .map_err(|e| Error::invalid_quantity(e, "quantity"))?;
        let mut conn = LazyConn::new(&self.hot);
        let result = self.check_on(&mut conn, caller, input, requested).await;
        conn.finish(completed(&result));
        result
    }

    async fn check_on(
        &self,
        conn: &mut LazyConn<'_>,
        caller: &Caller,
        input: &CheckInput,
        requested: Decimal,
    ) -> Result<CheckResult> {
        let (ctx, resolved) = self
            .resolve_batched(caller, &input.customer, &input.feature)
            .await?;
        // A customer session names no customer: it is the session's, as resolved.
        let session_input;
        let input = if caller.is_session() {
            session_input = CheckInput {
                customer: resolved.customer_id.clone(),
                feature: input.feature.clone(),
                quantity: input.quantity,
            };
            &session_input
        } else {
            input
        };
        let now = ctx.now(&self.clock);
        let ent = match gate(resolved.plan.as_deref(), &input.feature) {
            Ok(ent) => ent,
            Err(reason) => {
                let conn = conn.get().await?;
                let ftype = feature_type(conn, &ctx.tenant_id, &input.feature).await?;
                return Ok(denied(
                    &input.customer,
                    &input.feature,
                    ftype,
                    requested,
                    reason,
                ));
            }
        };
        let plan = resolved
            .plan
            .as_deref()
            .ok_or_else(|| Error::internal("the gate granted a feature without a plan"))?;
        let usage = self
            .current_usage_of(conn, &ctx, &resolved, input, ent, now)
            .await?;
        Ok(check_result(
            &ctx.thresholds(),
            plan,
            &input.customer,
            &input.feature,
            ent,
            usage,
            requested,
        ))
    }

    /// Current usage of the entitlement `ent` of the checked feature and the period it is
    /// counted in.
    async fn current_usage_of(
        &self,
        conn: &mut LazyConn<'_>,
        ctx: &TenantCtx,
        resolved: &Resolved,
        input: &CheckInput,
        ent: &Entitlement,
        now: DateTime<Utc>,
    ) -> Result<(Decimal, Option<Period>)> {
        let (customer, feature) = (input.customer.as_str(), input.feature.as_str());
        match ent.feature_type {
            FeatureType::Metered => {
                let period = counter_period(ent.reset, now, resolved.billing.as_ref());
                // Usually the resolve query already read it.
                let used = match resolved.counter_at(period.start) {
                    Some(used) => used,
                    None => {
                        let conn = conn.get().await?;
                        usage::counter(conn, &ctx.tenant_id, customer, feature, period.start)
                            .await?
                    }
                };
                Ok((used, Some(period)))
            }
            FeatureType::Concurrency => {
                let conn = conn.get().await?;
                let used =
                    usage::active_leases(conn, &ctx.tenant_id, customer, feature, now).await?;
                Ok((used, None))
            }
            _ => Ok((Decimal::ZERO, None)),
        }
    }

    /// Every feature of the customer's plan, as a check for one more unit (a usage
    /// dashboard in one call).
    pub async fn list(&self, ctx: &TenantCtx, customer: &str) -> Result<EntitlementList> {
        let now = ctx.now(&self.clock);
        let mut conn = self.db.acquire().await?;
        let resolved = self.resolve(&mut conn, ctx, customer).await?;
        let Some(plan) = resolved.plan.clone() else {
            return Ok(EntitlementList { data: vec![] });
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
        let mut used_values = usage::counters(&mut conn, &ctx.tenant_id, customer, &keys)
            .await?
            .into_iter();
        let thresholds = ctx.thresholds();
        let mut data = Vec::with_capacity(plan.features.len());
        for (f, period) in plan.features.iter().zip(periods) {
            let used = match f.entitlement.feature_type {
                FeatureType::Metered => used_values.next().unwrap_or(Decimal::ZERO),
                FeatureType::Concurrency => {
                    usage::active_leases(&mut conn, &ctx.tenant_id, customer, &f.feature, now)
                        .await?
                }
                _ => Decimal::ZERO,
            };
            data.push(check_result(
                &thresholds,
                &plan,
                customer,
                &f.feature,
                &f.entitlement,
                (used, period),
                Decimal::ONE,
            ));
        }
        Ok(EntitlementList { data })
    }
}
