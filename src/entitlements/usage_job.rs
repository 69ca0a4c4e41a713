//! The group commit's job (`db::gather`, `db::usage_batch`): the events of concurrent
//! `POST /v1/usage` and `POST /v1/usage/batch` requests, recorded in one statement.
//!
//! A batch request comes with its events resolved and prepared (one resolve statement for its
//! customers, `record::record_batch`). A single event comes as it was sent: the job resolves
//! the single events of its batch itself, in one statement on the same connection just before
//! the recording, and prepares each against its plan. So a single event waits in one queue and
//! costs one share of two statements, where resolving it through the check batcher first cost
//! a queue, a wait and a statement per ~6 events more (bench/README.md, "The resolve hop").
//! Nothing is cached: every event still sees its key, customer and plan as of its batch.

use std::sync::Arc;

use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool};

use super::prepare::{prepare, KnownFeatures, Lookups, Prepared, UsageInput, UsageResult};
use super::resolve::{finish, no_nul};
use crate::clock::Clock;
use crate::db::gather::{Gatherer, Job};
use crate::db::plans::PlanCache;
use crate::db::resolve::{fetch_batch, Lookup};
use crate::db::usage::NewEvent;
use crate::db::usage_batch::{record_isolated, Answers, MAX_BATCH, MAX_EVENTS, PARALLEL_EVENTS};
use crate::error::{Error, Result};
use crate::tenancy::Caller;

/// Gathers concurrent usage events into one recording statement.
pub type UsageBatcher = Gatherer<UsageJob>;

/// What resolving and preparing a single event needs.
pub struct UsageJob {
    pub db: PgPool,
    pub plans: Arc<PlanCache>,
    pub clock: Clock,
}

/// What a request hands to the group commit.
pub enum Submitted {
    /// A batch request's events, resolved and prepared.
    Events(Vec<NewEvent>),
    /// One event of `POST /v1/usage`, validated but not resolved.
    Single(Box<Single>),
}

pub struct Single {
    pub caller: Caller,
    pub input: UsageInput,
    pub quantity: Decimal,
    pub event_id: String,
}

/// The answer to a [`Submitted`], in the same form.
pub enum Recorded {
    /// Each event's outcome, in order.
    Events(Answers),
    /// The API's answer, or why the event was refused or not recorded.
    Single(Result<UsageResult>),
}

impl Job for UsageJob {
    type In = Submitted;
    type Out = Recorded;
    const MAX_BATCH: usize = MAX_BATCH;
    const MAX_WEIGHT: usize = MAX_EVENTS;
    /// Single events wait for the statement in flight and go together in the next one; batch
    /// requests (and a crowd of single events) run beside it (bench/README.md).
    const PARALLEL_WEIGHT: usize = PARALLEL_EVENTS;
    const STATEMENTS_METRIC: &'static str = "tollgate_usage_statements_total";
    const REQUESTS_METRIC: &'static str = "tollgate_usage_requests_total";

    fn weight(item: &Submitted) -> usize {
        match item {
            Submitted::Events(events) => events.len(),
            Submitted::Single(_) => 1,
        }
    }

    async fn run(
        &self,
        conn: &mut PgConnection,
        batch: &[Submitted],
    ) -> std::result::Result<Vec<Recorded>, sqlx::Error> {
        // 1. The single events' callers, customers and plans, in one statement.
        let singles: Vec<&Single> = batch
            .iter()
            .filter_map(|item| match item {
                Submitted::Single(single) => Some(&**single),
                Submitted::Events(_) => None,
            })
            .collect();
        let rows = if singles.is_empty() {
            Vec::new()
        } else {
            let lookups: Vec<Lookup> = singles
                .iter()
                .map(|s| Lookup {
                    tenant_id: s.caller.tenant_id().clone(),
                    key_hash: s.caller.key_hash().to_vec(),
                    session: s.caller.is_session(),
                    customer: no_nul(&s.input.customer),
                    // No feature: a writer needs no counter.
                    feature: String::new(),
                })
                .collect();
            let lookups: Vec<&Lookup> = lookups.iter().collect();
            fetch_batch(conn, &lookups, self.clock.real_now()).await?
        };
        // 2. Each single event against its plan.
        let mut prepared: Vec<Result<Prepared>> = Vec::with_capacity(singles.len());
        for (single, row) in singles.iter().zip(rows) {
            prepared.push(self.prepare(conn, single, row).await);
        }
        // 3. Every event of the batch, in one statement.
        let answers = {
            let mut events: Vec<&NewEvent> = Vec::new();
            let mut singles = prepared.iter();
            for item in batch {
                match item {
                    Submitted::Events(batch_events) => events.extend(batch_events),
                    Submitted::Single(_) => {
                        if let Some(Ok(p)) = singles.next() {
                            events.push(&p.event);
                        }
                    }
                }
            }
            record_isolated(conn, &events).await?
        };
        // 4. The answers, request by request.
        let mut answers = answers.into_iter();
        let mut prepared = prepared.into_iter();
        Ok(batch
            .iter()
            .map(|item| match item {
                Submitted::Events(events) => {
                    Recorded::Events(answers.by_ref().take(events.len()).collect())
                }
                Submitted::Single(_) => Recorded::Single(match prepared.next() {
                    Some(Ok(Prepared { answer, .. })) => match answers.next() {
                        Some(Ok(outcome)) => answer.into_result(outcome),
                        Some(Err(err)) => Err(err.into()),
                        None => Err(Error::internal("a usage answer is missing")),
                    },
                    Some(Err(err)) => Err(err),
                    None => Err(Error::internal("a usage answer is missing")),
                }),
            })
            .collect())
    }
}

impl UsageJob {
    /// A single event's tenant, customer and plan from its resolve row, and its row to record
    /// (or why it cannot be recorded: an invalid key, an unknown customer or feature, ...).
    async fn prepare(
        &self,
        conn: &mut PgConnection,
        single: &Single,
        row: Option<crate::db::resolve::ResolveRow>,
    ) -> Result<Prepared> {
        let (ctx, resolved) = finish(
            &self.plans,
            &self.db,
            Some(&mut *conn),
            &single.caller,
            row,
            false,
        )
        .await?;
        prepare(
            &self.clock,
            &mut Lookups::Held(conn),
            &mut KnownFeatures::new(),
            &ctx,
            &resolved,
            single.input.clone(),
            single.quantity,
            single.event_id.clone(),
        )
        .await
    }
}
