//! One usage event against its customer's plan (the gate, the period, the ceiling) and its
//! answer once recorded: shared by `POST /v1/usage` (in the usage job, `usage_job`) and
//! `POST /v1/usage/batch` (in the request, `record`).

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Duration, SubsecRound, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use super::check::feature_type;
use super::resolve::Resolved;
use crate::clock::Clock;
use crate::db::hot_pool::LazyConn;
use crate::db::plans::PlanVersion;
use crate::db::usage::{NewEvent, Outcome, StoredEvent};
use crate::domain::entitlement::{
    Aggregation, Denial, Entitlement, FeatureType, Thresholds, WarningLevel,
};
use crate::domain::period::{counter_period, epoch, Period};
use crate::domain::plan::gate;
use crate::domain::qty::Qty;
use crate::error::{Error, Result};
use crate::tenancy::TenantCtx;

/// How far in the future a usage timestamp may be.
const MAX_CLOCK_SKEW: Duration = Duration::minutes(5);

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
    thresholds: &Thresholds,
    event: StoredEvent,
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

/// The refusal of an event the gate stops.
fn refusal(denial: Denial) -> Error {
    match denial {
        Denial::SubscriptionInactive => Error::limit(
            "subscription_inactive",
            "The customer has no live subscription.",
        )
        .with_param("customer"),
        Denial::NotInPlan => Error::limit(
            "not_in_plan",
            "The feature is not in the customer's plan, or not enabled on it.",
        )
        .with_param("feature"),
        Denial::SpendCapReached => Error::limit(
            "spend_cap_reached",
            "Recording this usage would take the period's overage charge past its cap.",
        )
        .with_param("quantity"),
        Denial::LimitExceeded => Error::limit(
            "limit_exceeded",
            "Recording this usage would exceed the plan's limit.",
        )
        .with_param("quantity"),
    }
}

pub fn period_closed() -> Error {
    Error::conflict(
        "period_closed",
        "The invoice for the period of this timestamp is finalized; usage in it can no longer be recorded.",
    )
    .with_param("timestamp")
}

/// An event ready to record, and what its answer needs.
pub(super) struct Prepared {
    pub(super) event: NewEvent,
    pub(super) answer: Answer,
}

/// What turns an [`Outcome`] into the API's answer.
pub(super) struct Answer {
    id: String,
    customer: String,
    feature: String,
    quantity: Decimal,
    timestamp: DateTime<Utc>,
    /// `None` when the plan refuses the event.
    ent: Option<Entitlement>,
    plan: Option<Arc<PlanVersion>>,
    thresholds: Thresholds,
    /// What [`Outcome::Refused`] means for this event.
    refusal: Denial,
}

impl Answer {
    pub(super) fn into_result(self, outcome: Outcome) -> Result<UsageResult> {
        match outcome {
            Outcome::Recorded { used } => {
                let limit = self.ent.as_ref().and_then(|e| e.limit);
                Ok(UsageResult {
                    id: self.id,
                    customer: self.customer,
                    feature: self.feature,
                    quantity: Qty(self.quantity),
                    timestamp: self.timestamp,
                    duplicate: false,
                    used: Qty(used),
                    remaining: self.ent.as_ref().and_then(|e| e.remaining(used)).map(Qty),
                    limit: limit.map(Qty),
                    warning_level: self.thresholds.level(used, limit),
                })
            }
            Outcome::Duplicate { event, used } => Ok(duplicate_result(
                self.plan.as_deref(),
                &self.thresholds,
                event,
                used,
            )),
            Outcome::Refused => Err(refusal(self.refusal)),
            Outcome::PeriodClosed => Err(period_closed()),
            Outcome::Stale => Err(still_stale()),
        }
    }
}

/// An event whose customer's rows changed each time it was resolved and recorded (the usage
/// paths try a few times): nothing was written, and a retry is safe.
pub(super) fn still_stale() -> Error {
    Error::Unavailable(std::sync::Arc::new(sqlx::Error::Protocol(
        "the customer's plan kept changing while the event was recorded".into(),
    )))
}

/// The features of one tenant known to exist (a refused event's feature is looked up once).
pub(super) type KnownFeatures = HashSet<String>;

/// Where [`prepare`] takes a connection when it must look a feature up.
pub(super) enum Lookups<'c, 'p> {
    /// A request's: taken from the hot pool on first need.
    Lazy(&'c mut LazyConn<'p>),
    /// The usage job's own.
    Held(&'c mut PgConnection),
}

impl Lookups<'_, '_> {
    async fn get(&mut self) -> std::result::Result<&mut PgConnection, sqlx::Error> {
        match self {
            Lookups::Lazy(conn) => conn.get().await,
            Lookups::Held(conn) => Ok(&mut **conn),
        }
    }
}

/// Validates an event against the customer's plan and builds its row. A feature the plan
/// does not grant is looked up (once per batch) so an unknown one is a 404.
#[allow(clippy::too_many_arguments)]
pub(super) async fn prepare(
    clock: &Clock,
    conn: &mut Lookups<'_, '_>,
    known: &mut KnownFeatures,
    ctx: &TenantCtx,
    resolved: &Resolved,
    input: UsageInput,
    quantity: Decimal,
    event_id: String,
) -> Result<Prepared> {
    let now = ctx.now(clock);
    let timestamp = input.timestamp.map_or(now, |t| t.trunc_subsecs(6));
    if timestamp > now + MAX_CLOCK_SKEW {
        return Err(Error::invalid_param(
            "timestamp_in_future",
            "timestamp",
            "timestamp is more than 5 minutes in the future.",
        ));
    }
    let plan = resolved.plan.as_deref();
    let thresholds = ctx.thresholds();
    let granted = match gate(plan, &input.feature) {
        Ok(ent) if ent.feature_type != FeatureType::Metered => {
            return Err(Error::invalid_param(
                "feature_not_metered",
                "feature",
                "Usage is recorded only for metered features (concurrency features use leases).",
            ))
        }
        Ok(ent) if ent.enabled => Ok(ent),
        Ok(_) => Err(Denial::NotInPlan),
        Err(denial) => {
            // An unknown feature is a 404 whatever the plan says.
            if !known.contains(&input.feature) {
                feature_type(conn.get().await?, &ctx.tenant_id, &input.feature).await?;
                known.insert(input.feature.clone());
            }
            Err(denial)
        }
    };
    let enforce = input.enforce.unwrap_or(true);
    let (period, ceiling, refusal, ent) = match granted {
        Ok(ent) => (
            counter_period(ent.reset, timestamp, resolved.billing.as_ref()),
            if enforce { ent.ceiling() } else { None },
            ent.ceiling_denial(),
            Some(ent.clone()),
        ),
        // Never counted: a retry of a recorded id is still a duplicate, else refused.
        Err(denial) => (
            Period {
                start: epoch(),
                end: None,
            },
            None,
            denial,
            None,
        ),
    };
    let stamps = resolved
        .stamps
        .clone()
        .ok_or_else(|| Error::internal("a usage event resolved without its stamps"))?;
    let event = NewEvent {
        tenant_id: ctx.tenant_id.clone(),
        event_id: event_id.clone(),
        customer_id: input.customer.clone(),
        feature_key: input.feature.clone(),
        quantity,
        occurred_at: timestamp,
        period,
        member_id: input.member,
        billable: input.billable.unwrap_or(true),
        properties: input.properties,
        aggregation: ent.as_ref().map_or(Aggregation::Sum, |e| e.aggregation),
        ceiling,
        limit: ent.as_ref().and_then(|e| e.limit),
        thresholds,
        meter_event: plan
            .and_then(|p| p.meter_event(&input.feature))
            .map(str::to_string),
        refused: ent.is_none(),
        now,
        stamps,
    };
    Ok(Prepared {
        event,
        answer: Answer {
            id: event_id,
            customer: input.customer,
            feature: input.feature,
            quantity,
            timestamp,
            ent,
            plan: resolved.plan.clone(),
            thresholds,
            refusal,
        },
    })
}
