//! Recording usage (`POST /v1/usage`, `POST /v1/usage/batch`): validation, the gate, then
//! one atomic statement for many events (`db::usage::record_batch`): the events of concurrent
//! requests, single or batched, are gathered and committed together (`usage_job`, group
//! commit; a single event is resolved there too). A retry of a recorded event id answers `duplicate: true` whatever has changed
//! since.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, SubsecRound, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::check::{completed, feature_type};
use super::resolve::Resolved;
use super::usage_job::{Recorded, Single, Submitted};
use super::Entitlements;
use crate::clock::Clock;
use crate::db::hot_pool::LazyConn;
use crate::db::plans::PlanVersion;
use crate::db::usage::{NewEvent, Outcome, StoredEvent};
use crate::domain::entitlement::{
    Aggregation, Denial, Entitlement, FeatureType, Thresholds, WarningLevel,
};
use crate::domain::period::{counter_period, epoch, Period};
use crate::domain::plan::gate;
use crate::domain::qty::{validate_quantity, Qty};
use crate::error::{Error, Kind, Result};
use crate::ids::{is_valid_external_id, new_id};
use crate::tenancy::{Caller, TenantCtx};
use sqlx::PgConnection;

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
        }
    }
}

/// The features of one tenant known to exist (a refused event's feature is looked up once).
pub(super) type KnownFeatures = HashSet<String>;

impl Entitlements {
    /// Records one usage event. `header_id` is the request's Idempotency-Key, the event id
    /// when the body has none. The event goes to the group commit as it is: the usage job
    /// resolves the caller's key, tenant, customer and plan together with the other single
    /// events of its batch, just before recording them all in one statement
    /// (`entitlements::usage_job`); the answer comes after the commit.
    pub async fn record(
        &self,
        caller: &Caller,
        input: UsageInput,
        header_id: Option<&str>,
    ) -> Result<UsageResult> {
        let (quantity, event_id) = validate(&input, header_id)?;
        let single = Single {
            caller: caller.clone(),
            input,
            quantity,
            event_id,
        };
        match self
            .usage
            .submit(Submitted::Single(Box::new(single)))
            .await?
        {
            Recorded::Single(result) => result,
            Recorded::Events(_) => Err(Error::internal("a usage answer is missing")),
        }
    }
}

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

impl Entitlements {
    /// Records a batch of events of one tenant, each with its own outcome: validated one by
    /// one, the customers resolved in one statement, the events recorded in one more (one
    /// transaction, shared with the events of concurrent requests). A failure of the
    /// database fails the whole request; nothing of it is then recorded (unless one event's
    /// data broke the statement, when the others were recorded one by one), so a retry by the
    /// same ids counts each event once.
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
        // The connection goes back before the events wait for the group commit, whose
        // worker needs one too.
        let mut conn = LazyConn::new(&self.hot);
        let prepared = self.prepare_batch(&mut conn, ctx, events).await;
        conn.finish(completed(&prepared));
        let (slots, rows) = prepared?;
        self.record_prepared(slots, rows).await
    }

    /// Validates a batch's events and resolves their customers (one statement): the answer
    /// builder or the error of every event, and the rows to record.
    async fn prepare_batch(
        &self,
        conn: &mut LazyConn<'_>,
        ctx: &TenantCtx,
        events: Vec<Result<UsageInput>>,
    ) -> Result<(Vec<Result<Answer>>, Vec<NewEvent>)> {
        // 1. What needs no database.
        let checked: Vec<Result<(UsageInput, Decimal, String)>> = events
            .into_iter()
            .map(|e| e.and_then(|i| validate(&i, None).map(|(q, id)| (i, q, id))))
            .collect();
        // 2. Every customer named, in one statement.
        let mut customers: Vec<&str> = checked
            .iter()
            .filter_map(|c| c.as_ref().ok().map(|(i, _, _)| i.customer.as_str()))
            .collect();
        customers.sort_unstable();
        customers.dedup();
        let resolved = if customers.is_empty() {
            Vec::new()
        } else {
            self.resolve_many(conn.get().await?, ctx, &customers)
                .await?
        };
        let resolved: HashMap<String, Result<Resolved>> = customers
            .into_iter()
            .map(str::to_string)
            .zip(resolved)
            .collect();
        // 3. Each event against its customer's plan.
        let mut known = KnownFeatures::new();
        let mut slots: Vec<Result<Answer>> = Vec::with_capacity(checked.len());
        let mut rows: Vec<NewEvent> = Vec::new();
        for item in checked {
            let prepared = match item {
                Err(e) => Err(e),
                Ok((input, quantity, id)) => match resolved.get(&input.customer) {
                    Some(Ok(r)) => {
                        prepare(
                            &self.clock,
                            &mut Lookups::Lazy(&mut *conn),
                            &mut known,
                            ctx,
                            r,
                            input,
                            quantity,
                            id,
                        )
                        .await
                    }
                    Some(Err(e)) => Err(e.clone()),
                    None => Err(super::resolve::customer_not_found()),
                },
            };
            match prepared {
                Ok(Prepared { event, answer }) => {
                    rows.push(event);
                    slots.push(Ok(answer));
                }
                Err(e) if e.is_failure() => return Err(e),
                Err(e) => slots.push(Err(e)),
            }
        }
        Ok((slots, rows))
    }

    /// Records a batch's prepared events in one statement (with those of concurrent
    /// requests) and answers each event.
    async fn record_prepared(
        &self,
        slots: Vec<Result<Answer>>,
        rows: Vec<NewEvent>,
    ) -> Result<Vec<(BatchStatus, Result<UsageResult>)>> {
        let mut outcomes = if rows.is_empty() {
            Vec::new()
        } else {
            match self.usage.submit(Submitted::Events(rows)).await? {
                Recorded::Events(outcomes) => outcomes,
                Recorded::Single(_) => {
                    return Err(Error::internal("a usage batch answer is missing"))
                }
            }
        }
        .into_iter();
        let mut results = Vec::with_capacity(slots.len());
        for slot in slots {
            let outcome = match slot {
                Err(e) => Err(e),
                Ok(answer) => match outcomes.next() {
                    Some(Ok(outcome)) => answer.into_result(outcome),
                    // Tollgate or its database failed: the whole request fails.
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err(Error::internal("a usage batch answer is missing")),
                },
            };
            let status = match &outcome {
                Ok(r) if r.duplicate => BatchStatus::Duplicate,
                Ok(_) => BatchStatus::Recorded,
                Err(e) => match e.kind() {
                    Some(Kind::Refused | Kind::Conflict) => BatchStatus::Refused,
                    Some(_) => BatchStatus::Invalid,
                    None => return Err(e.clone()),
                },
            };
            results.push((status, outcome));
        }
        Ok(results)
    }
}
