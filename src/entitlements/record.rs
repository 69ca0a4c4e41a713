//! Recording usage (`POST /v1/usage`, `POST /v1/usage/batch`): validation, then one atomic
//! statement for many events (`db::usage::record_batch`): the events of concurrent requests,
//! single or batched, are gathered and committed together (`usage_job`, group commit; a single
//! event is resolved and gated there, a batch's events by their request, `prepare`). A retry
//! of a recorded event id answers `duplicate: true` whatever has changed since.

use std::collections::HashMap;

use rust_decimal::Decimal;
use serde::Serialize;

use super::check::completed;
use super::prepare::{prepare, Answer, KnownFeatures, Lookups, Prepared};
pub use super::prepare::{UsageInput, UsageResult};
use super::resolve::Resolved;
use super::resolve_cache::ResolveCache;
use super::usage_job::{Recorded, Single, Submitted};
use super::Entitlements;
use crate::db::hot_pool::LazyConn;
use crate::db::usage::{NewEvent, Outcome};
use crate::domain::qty::validate_quantity;
use crate::error::{Error, Kind, Result};
use crate::ids::{is_valid_external_id, new_id};
use crate::tenancy::{Caller, TenantCtx};

/// The most events one batch may carry.
pub const MAX_BATCH: usize = 1000;

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

impl Entitlements {
    /// Records a batch of events of one tenant, each with its own outcome: validated one by
    /// one, the customers resolved (kept resolves, else one statement), the events recorded in
    /// one more (one transaction, shared with the events of concurrent requests). Events found
    /// stale there (their customer changed since its kept resolve), or refused here on a kept
    /// resolve, go round again, resolved afresh. A failure of the database fails the whole
    /// request; nothing of that round is then recorded (unless one event's data broke the
    /// statement, when the others were recorded one by one; an earlier round's events are), so
    /// a retry by the same ids counts each event once.
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
        // 1. What needs no database, once.
        let checked: Vec<Result<Checked>> = events
            .into_iter()
            .map(|e| e.and_then(|i| validate(&i, None).map(|(q, id)| (i, q, id))))
            .collect();
        let mut results: Vec<Option<(BatchStatus, Result<UsageResult>)>> =
            checked.iter().map(|_| None).collect();
        let mut todo: Vec<usize> = (0..checked.len()).collect();
        for round in 0..ROUNDS {
            // The connection goes back before the events wait for the group commit, whose
            // worker needs one too.
            let mut conn = LazyConn::new(&self.hot);
            let prepared = self
                .prepare_batch(&mut conn, ctx, &checked, &todo, round > 0)
                .await;
            conn.finish(completed(&prepared));
            let (slots, rows) = prepared?;
            let stale = self.record_prepared(slots, rows, &mut results).await?;
            for &i in &stale {
                if let Ok((input, _, _)) = &checked[i] {
                    let caller = Caller::Ready(ctx.clone());
                    if let Some(key) = ResolveCache::key(&caller, &input.customer) {
                        self.resolved.forget(&key);
                    }
                }
            }
            todo = stale;
            if todo.is_empty() {
                break;
            }
        }
        // Still stale after every round: its customer's rows keep changing.
        if !todo.is_empty() {
            return Err(super::prepare::still_stale());
        }
        results
            .into_iter()
            .map(|r| r.ok_or_else(|| Error::internal("a usage batch answer is missing")))
            .collect()
    }

    /// Resolves the customers of a batch's events `todo` (kept resolves unless `fresh`) and
    /// prepares each event against its customer's plan: per event its place, its answer
    /// builder or error, and whether that came from a kept resolve; and the rows to record.
    async fn prepare_batch(
        &self,
        conn: &mut LazyConn<'_>,
        ctx: &TenantCtx,
        checked: &[Result<Checked>],
        todo: &[usize],
        fresh: bool,
    ) -> Result<(Vec<Slot>, Vec<NewEvent>)> {
        // 1. Every customer named, resolved.
        let mut customers: Vec<&str> = todo
            .iter()
            .filter_map(|&i| {
                checked[i]
                    .as_ref()
                    .ok()
                    .map(|(input, _, _)| input.customer.as_str())
            })
            .collect();
        customers.sort_unstable();
        customers.dedup();
        let resolved = if customers.is_empty() {
            Vec::new()
        } else {
            self.resolve_many(conn, ctx, &customers, fresh).await?
        };
        let resolved: HashMap<&str, (Result<Resolved>, bool)> =
            customers.into_iter().zip(resolved).collect();
        // 2. Each event against its customer's plan.
        let mut known = KnownFeatures::new();
        let mut slots: Vec<Slot> = Vec::with_capacity(todo.len());
        let mut rows: Vec<NewEvent> = Vec::new();
        for &index in todo {
            let (prepared, kept) = match &checked[index] {
                Err(e) => (Err(e.clone()), false),
                Ok((input, quantity, id)) => match resolved.get(input.customer.as_str()) {
                    Some((Ok(r), kept)) => (
                        prepare(
                            &self.clock,
                            &mut Lookups::Lazy(&mut *conn),
                            &mut known,
                            ctx,
                            r,
                            input.clone(),
                            *quantity,
                            id.clone(),
                        )
                        .await,
                        *kept,
                    ),
                    Some((Err(e), kept)) => (Err(e.clone()), *kept),
                    None => (Err(super::resolve::customer_not_found()), false),
                },
            };
            match prepared {
                Ok(Prepared { event, answer }) => {
                    rows.push(event);
                    slots.push(Slot {
                        index,
                        answer: Ok(answer),
                        kept,
                    });
                }
                Err(e) if e.is_failure() => return Err(e),
                Err(e) => slots.push(Slot {
                    index,
                    answer: Err(e),
                    kept,
                }),
            }
        }
        Ok((slots, rows))
    }

    /// Records a batch's prepared events in one statement (with those of concurrent
    /// requests) and answers each event in `results`, but for those to go round again (found
    /// stale, or refused on a kept resolve), whose places it returns.
    async fn record_prepared(
        &self,
        slots: Vec<Slot>,
        rows: Vec<NewEvent>,
        results: &mut [Option<(BatchStatus, Result<UsageResult>)>],
    ) -> Result<Vec<usize>> {
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
        let mut again = Vec::new();
        for slot in slots {
            let outcome = match slot.answer {
                Err(_) if slot.kept => {
                    again.push(slot.index);
                    continue;
                }
                Err(e) => Err(e),
                Ok(answer) => match outcomes.next() {
                    Some(Ok(Outcome::Stale)) => {
                        again.push(slot.index);
                        continue;
                    }
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
            if let Some(result) = results.get_mut(slot.index) {
                *result = Some((status, outcome));
            }
        }
        Ok(again)
    }
}

/// An event of a batch after validation: its input, quantity and id.
type Checked = (UsageInput, Decimal, String);

/// One event of a batch, prepared: its place in the batch, its answer builder (or why it is
/// not recorded), and whether that came from a kept resolve.
struct Slot {
    index: usize,
    answer: Result<Answer>,
    kept: bool,
}

/// How many times a batch's event is resolved and recorded: kept, then afresh (twice, in
/// case its customer changed again meanwhile).
const ROUNDS: usize = 3;
