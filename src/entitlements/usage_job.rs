//! The group commit's job (`db::gather`, `db::usage_batch`): the events of concurrent
//! `POST /v1/usage` and `POST /v1/usage/batch` requests, recorded in one statement.
//!
//! A batch request comes with its events resolved and prepared (`record::record_batch`). A
//! single event comes as it was sent: the job resolves the single events of its batch itself,
//! on the same connection just before the recording, and prepares each against its plan. A
//! customer's resolve is kept (`resolve_cache`), so most single events need no resolve
//! statement at all: the batch costs one statement, where resolving each single event through
//! the check batcher first cost a queue, a wait and a statement per ~6 events more
//! (bench/README.md, "The resolve hop"). A kept resolve is checked by the recording statement
//! itself: an event whose key, tenant, customer or plan has changed since is answered stale,
//! with nothing written, and goes round again, resolved afresh.

use std::sync::Arc;

use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool};

use super::prepare::{prepare, KnownFeatures, Lookups, Prepared, UsageInput, UsageResult};
use super::resolve::{finish, no_nul};
use super::resolve_cache::ResolveCache;
use crate::clock::Clock;
use crate::db::gather::SharedError;
use crate::db::gather::{Gatherer, Job};
use crate::db::plans::PlanCache;
use crate::db::resolve::{fetch_batch, Lookup};
use crate::db::topology::{by_tenant, refused_alone, Topology};
use crate::db::usage::{NewEvent, Outcome};
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
    /// Resolves kept for the next events of the same customers.
    pub resolved: Arc<ResolveCache>,
    /// On Citus, one resolve and one recording statement per tenant in the batch.
    pub topology: Arc<Topology>,
}

/// How many times a single event is resolved and recorded in one statement's turn: kept, then
/// afresh (twice, in case its customer changed again meanwhile).
const ROUNDS: usize = 3;

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

    /// On one PostgreSQL, the whole batch together. On Citus, each tenant's requests
    /// together, on the tenant's node: a tenant whose statements the database refuses (its
    /// node is down) fails alone, and the others are recorded.
    async fn run(
        &self,
        conn: &mut PgConnection,
        batch: &[Submitted],
    ) -> std::result::Result<Vec<Recorded>, sqlx::Error> {
        if !self.topology.is_citus(conn).await? {
            let items: Vec<&Submitted> = batch.iter().collect();
            return self.run_group(conn, &items, false).await;
        }
        let mut out: Vec<Option<Recorded>> = batch.iter().map(|_| None).collect();
        for group in by_tenant(batch, Submitted::tenant) {
            let items: Vec<&Submitted> = group.iter().map(|&i| &batch[i]).collect();
            match self.run_group(conn, &items, true).await {
                Ok(recorded) => {
                    for (i, r) in group.into_iter().zip(recorded) {
                        out[i] = Some(r);
                    }
                }
                // Refused by the database (the session goes on).
                Err(err) if refused_alone(&err) => {
                    let err: SharedError = Arc::new(err);
                    for i in group {
                        out[i] = Some(Recorded::failed(&batch[i], &err));
                    }
                }
                Err(err) => return Err(err),
            }
        }
        Ok(out
            .into_iter()
            .zip(batch)
            .map(|(r, item)| {
                r.unwrap_or_else(|| {
                    let missing = sqlx::Error::Protocol("no answer for a usage request".into());
                    Recorded::failed(item, &Arc::new(missing))
                })
            })
            .collect())
    }
}

impl Submitted {
    /// The tenant whose request it is (a batch request is one tenant's).
    fn tenant(&self) -> &str {
        match self {
            Submitted::Events(events) => events.first().map_or("", |e| e.tenant_id.as_str()),
            Submitted::Single(single) => single.caller.tenant_id().as_str(),
        }
    }
}

impl Recorded {
    /// The answer to `item` when its statement failed with `err`.
    fn failed(item: &Submitted, err: &SharedError) -> Recorded {
        match item {
            Submitted::Events(events) => {
                Recorded::Events(events.iter().map(|_| Err(err.clone())).collect())
            }
            Submitted::Single(_) => Recorded::Single(Err(err.clone().into())),
        }
    }
}

impl UsageJob {
    /// Resolves and records `batch`'s requests in one round of statements per kind (see
    /// [`Job::run`]); `citus`: one tenant's, recorded in a transaction block
    /// (`db::usage::record_batch`).
    async fn run_group(
        &self,
        conn: &mut PgConnection,
        batch: &[&Submitted],
        citus: bool,
    ) -> std::result::Result<Vec<Recorded>, sqlx::Error> {
        let singles: Vec<&Single> = batch
            .iter()
            .filter_map(|item| match item {
                Submitted::Single(single) => Some(&**single),
                Submitted::Events(_) => None,
            })
            .collect();
        // Each single event's answer, once it has one; the batch requests' outcomes.
        let mut done: Vec<Option<Result<UsageResult>>> = singles.iter().map(|_| None).collect();
        let mut batch_outcomes: Vec<Result<Outcome, SharedError>> = Vec::new();
        // The single events still to record: all of them, then those found stale (resolved
        // afresh). A failure in a later round fails the whole batch, as one in the first does,
        // though the first round's events are committed: each is then unacknowledged, and its
        // retry is answered as a duplicate (the connection may hold half a response, so the
        // gatherer must see the failure to drop it).
        let mut todo: Vec<usize> = (0..singles.len()).collect();
        for round in 0..ROUNDS {
            // 1. The single events' callers, customers and plans: kept, or in one statement;
            // each single event against its plan.
            let prepared = self
                .prepare_singles(conn, &singles, &todo, (round > 0, citus))
                .await?;
            // 2. Every event, in one statement (the batch requests' in the first round).
            let mut events: Vec<&NewEvent> = Vec::new();
            if round == 0 {
                for item in batch {
                    if let Submitted::Events(batch_events) = item {
                        events.extend(batch_events);
                    }
                }
            }
            let batch_events = events.len();
            events.extend(
                prepared
                    .iter()
                    .filter_map(|p| p.result.as_ref().ok())
                    .map(|p| &p.event),
            );
            let mut answers = if events.is_empty() {
                Vec::new()
            } else {
                record_isolated(conn, &events, citus).await?
            }
            .into_iter();
            if round == 0 {
                batch_outcomes = answers.by_ref().take(batch_events).collect();
            }
            // 3. The single events' answers; a stale one (or one refused on a kept resolve)
            // goes round again, resolved afresh.
            let mut stale = Vec::new();
            for p in prepared {
                let answer = match p.result {
                    Err(err) if p.kept && !err.is_failure() => None,
                    Err(err) => Some(Err(err)),
                    Ok(Prepared { answer, .. }) => match answers.next() {
                        Some(Ok(Outcome::Stale)) => None,
                        Some(Ok(outcome)) => Some(answer.into_result(outcome)),
                        Some(Err(err)) => Some(Err(err.into())),
                        None => Some(Err(Error::internal("a usage answer is missing"))),
                    },
                };
                match answer {
                    Some(answer) => done[p.index] = Some(answer),
                    None => {
                        let single = singles[p.index];
                        if let Some(key) = ResolveCache::key(&single.caller, &single.input.customer)
                        {
                            self.resolved.forget(&key);
                        }
                        stale.push(p.index);
                    }
                }
            }
            todo = stale;
            if todo.is_empty() {
                break;
            }
        }
        // 4. The answers, request by request.
        let mut batch_outcomes = batch_outcomes.into_iter();
        let mut done = done.into_iter();
        Ok(batch
            .iter()
            .map(|item| match item {
                Submitted::Events(events) => {
                    Recorded::Events(batch_outcomes.by_ref().take(events.len()).collect())
                }
                // Still stale after every round: its customer's rows keep changing.
                Submitted::Single(_) => Recorded::Single(
                    done.next()
                        .flatten()
                        .unwrap_or_else(|| Err(super::prepare::still_stale())),
                ),
            })
            .collect())
    }
}

/// A single event made ready to record (or why it cannot be).
struct PreparedSingle {
    /// Its place among the job's single events.
    index: usize,
    result: Result<Prepared>,
    /// Prepared on a kept resolve (`ResolveCache`), not one made for it just now.
    kept: bool,
}

impl UsageJob {
    /// Resolves and prepares the single events `todo`: from kept resolves where there are
    /// (unless `fresh`), the others in one statement, whose answers are kept (`citus`: one
    /// tenant's singles, the statement routed to its node).
    async fn prepare_singles(
        &self,
        conn: &mut PgConnection,
        singles: &[&Single],
        todo: &[usize],
        (fresh, citus): (bool, bool),
    ) -> std::result::Result<Vec<PreparedSingle>, sqlx::Error> {
        let keys: Vec<_> = todo
            .iter()
            .map(|&i| ResolveCache::key(&singles[i].caller, &singles[i].input.customer))
            .collect();
        let now = self.clock.real_now();
        let lookup = &mut *conn;
        let rows = self
            .resolved
            .get_or_fetch(&keys, fresh, |missing| async move {
                let lookups: Vec<Lookup> = missing
                    .iter()
                    .map(|&j| {
                        let s = singles[todo[j]];
                        Lookup {
                            tenant_id: s.caller.tenant_id().clone(),
                            key_hash: s.caller.key_hash().to_vec(),
                            session: s.caller.is_session(),
                            customer: no_nul(&s.input.customer),
                            // No feature: a writer needs no counter.
                            feature: String::new(),
                        }
                    })
                    .collect();
                let lookups: Vec<&Lookup> = lookups.iter().collect();
                fetch_batch(lookup, &lookups, now, citus).await
            })
            .await?;
        let mut prepared = Vec::with_capacity(todo.len());
        for (&index, (row, kept)) in todo.iter().zip(rows) {
            prepared.push(PreparedSingle {
                index,
                result: self.prepare(conn, singles[index], row).await,
                kept,
            });
        }
        Ok(prepared)
    }

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
