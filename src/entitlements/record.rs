//! Recording usage (`POST /v1/usage`, `POST /v1/usage/batch`): validation, the gate, then
//! one atomic statement (`db::usage::record`). A retry of a recorded event id answers
//! `duplicate: true` whatever has changed since.

use chrono::{DateTime, Duration, SubsecRound, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use super::check::{completed, feature_type};
use super::Entitlements;
use crate::db::plans::PlanVersion;
use crate::db::usage::{self, NewEvent, Outcome, StoredEvent};
use crate::domain::entitlement::{Denial, FeatureType, Thresholds, WarningLevel};
use crate::domain::period::counter_period;
use crate::domain::plan::gate;
use crate::domain::qty::{validate_quantity, Qty};
use crate::error::{Error, Kind, Result};
use crate::ids::{is_valid_external_id, new_id};
use crate::tenancy::{Caller, TenantCtx};

/// How far in the future a usage timestamp may be.
const MAX_CLOCK_SKEW: Duration = Duration::minutes(5);
/// The most events one batch may carry.
pub const MAX_BATCH: usize = 1000;

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

/// How one event of a batch fared.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BatchStatus {
    Recorded,
    Duplicate,
    /// Refused by a limit, a spend cap or the plan, or its period is closed.
    Refused,
    /// Malformed, or naming something unknown.
    Invalid,
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

/// The checks of an event that need no database: its quantity, id, member and properties.
fn validate(input: &UsageInput, header_id: Option<&str>) -> Result<(Decimal, String)> {
    let quantity = validate_quantity(input.quantity.map_or(Decimal::ONE, |q| q.0))
        .map_err(|e| Error::invalid_quantity(e, "quantity"))?;
    let event_id = match input.id.as_deref().or(header_id) {
        Some(id) if is_valid_external_id(id) => id.to_string(),
        Some(_) => {
            return Err(Error::invalid_param(
                "invalid_id",
                "id",
                "Event ids are 1 to 255 visible ASCII characters without `/ ? # %`.",
            ))
        }
        None => new_id("evt"),
    };
    if input
        .member
        .as_deref()
        .is_some_and(|m| !is_valid_external_id(m))
    {
        return Err(Error::invalid_param(
            "invalid_member",
            "member",
            "Member ids are 1 to 255 visible ASCII characters.",
        ));
    }
    if input.properties.as_ref().is_some_and(|p| !p.is_object()) {
        return Err(Error::invalid_param(
            "invalid_properties",
            "properties",
            "properties must be a JSON object.",
        ));
    }
    Ok((quantity, event_id))
}

impl Entitlements {
    /// Records one usage event. `header_id` is the request's Idempotency-Key, the event id
    /// when the body has none.
    pub async fn record(
        &self,
        caller: &Caller,
        input: UsageInput,
        header_id: Option<&str>,
    ) -> Result<UsageResult> {
        let mut conn = self.hot.acquire().await?;
        let result = self.record_on(&mut conn, caller, input, header_id).await;
        conn.finish(completed(&result));
        result
    }

    async fn record_on(
        &self,
        conn: &mut PgConnection,
        caller: &Caller,
        input: UsageInput,
        header_id: Option<&str>,
    ) -> Result<UsageResult> {
        let (quantity, event_id) = validate(&input, header_id)?;
        // Key (on the hot path), tenant, customer and plan in one round trip.
        let (ctx, resolved) = self.resolve_on(conn, caller, &input.customer, None).await?;
        let now = ctx.now(&self.clock);
        let timestamp = input.timestamp.map_or(now, |t| t.trunc_subsecs(6));
        if timestamp > now + MAX_CLOCK_SKEW {
            return Err(Error::invalid_param(
                "timestamp_in_future",
                "timestamp",
                "timestamp is more than 5 minutes in the future.",
            ));
        }
        let plan = resolved.plan.as_deref();
        let ent = match gate(plan, &input.feature) {
            Ok(ent) => ent,
            Err(denial) => {
                // An unknown feature is a 404 whatever the plan says.
                feature_type(conn, &ctx.tenant_id, &input.feature).await?;
                return self
                    .refuse_unless_duplicate(conn, &ctx, plan, &event_id, refusal(denial))
                    .await;
            }
        };
        if ent.feature_type != FeatureType::Metered {
            return Err(Error::invalid_param(
                "feature_not_metered",
                "feature",
                "Usage is recorded only for metered features (concurrency features use leases).",
            ));
        }
        if !ent.enabled {
            return self
                .refuse_unless_duplicate(conn, &ctx, plan, &event_id, refusal(Denial::NotInPlan))
                .await;
        }
        let period = counter_period(ent.reset, timestamp, resolved.billing.as_ref());
        let enforce = input.enforce.unwrap_or(true);
        let thresholds = ctx.thresholds();
        let event = NewEvent {
            tenant_id: &ctx.tenant_id,
            event_id: &event_id,
            customer_id: &input.customer,
            feature_key: &input.feature,
            quantity,
            occurred_at: timestamp,
            period,
            member_id: input.member.as_deref(),
            billable: input.billable.unwrap_or(true),
            properties: input.properties.as_ref(),
            aggregation: ent.aggregation,
            ceiling: if enforce { ent.ceiling() } else { None },
            limit: ent.limit,
            thresholds,
            meter_event: plan.and_then(|p| p.meter_event(&input.feature)),
            now,
        };
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
                Ok(duplicate_result(plan, &thresholds, event, used))
            }
            Outcome::Refused => Err(refusal(ent.ceiling_denial())),
            Outcome::PeriodClosed => Err(period_closed()),
        }
    }

    /// A retry of an event recorded before is a duplicate even if the plan has changed
    /// since; anything else gets `err`.
    async fn refuse_unless_duplicate(
        &self,
        conn: &mut PgConnection,
        ctx: &TenantCtx,
        plan: Option<&PlanVersion>,
        event_id: &str,
        err: Error,
    ) -> Result<UsageResult> {
        match usage::stored_event(conn, &ctx.tenant_id, event_id).await? {
            Some((event, used)) => Ok(duplicate_result(plan, &ctx.thresholds(), event, used)),
            None => Err(err),
        }
    }

    /// Records a batch of events one by one, each with its own outcome. A failure of the
    /// database fails the whole batch (the events before it stay recorded: each is its own
    /// transaction, and a retry of the batch reports them as duplicates).
    pub async fn record_batch(
        &self,
        ctx: &TenantCtx,
        events: Vec<Result<UsageInput>>,
    ) -> Result<Vec<(BatchStatus, Result<UsageResult>)>> {
        if events.len() > MAX_BATCH {
            return Err(Error::invalid_param(
                "too_many_events",
                "events",
                "A batch holds at most 1000 events.",
            ));
        }
        let caller = Caller::Ready(ctx.clone());
        let mut results = Vec::with_capacity(events.len());
        for input in events {
            let outcome = match input {
                Ok(input) => self.record(&caller, input, None).await,
                Err(e) => Err(e),
            };
            let status = match &outcome {
                Ok(r) if r.duplicate => BatchStatus::Duplicate,
                Ok(_) => BatchStatus::Recorded,
                Err(e) => match e.kind() {
                    Some(Kind::Refused | Kind::Conflict) => BatchStatus::Refused,
                    Some(_) => BatchStatus::Invalid,
                    // Tollgate or its database failed: the whole request fails.
                    None => return Err(e.clone()),
                },
            };
            results.push((status, outcome));
        }
        Ok(results)
    }
}
