//! Group commit of usage (see `gather`): the events of concurrent `POST /v1/usage` and
//! `POST /v1/usage/batch` requests are recorded together, up to [`MAX_EVENTS`] in one
//! statement and so one transaction and one commit (`usage::record_batch`). Each request still
//! gets its own events' outcomes, after the commit. The gatherer's job, which also resolves
//! single events, is the service's (`entitlements::usage_job`); its limits and the recording
//! of a batch's events are here.
//!
//! Few statements in flight, each large, rather than one per request: concurrent statements
//! naming the same counters wait for each other's commit (a convoy), so 32 batch requests at
//! once recorded fewer events per second than 2 (measured: bench/README.md).
//!
//! If the statement fails because of one event's data (a database error rather than a lost
//! connection), the batch is run again one event at a time, so that only that event fails and
//! the others are answered as if they had come alone. A lost connection fails every event of
//! the batch, and only those: nothing of it was committed.

use std::sync::Arc;

use sqlx::PgConnection;

use super::gather::SharedError;
use super::usage::{record_batch, NewEvent, Outcome};

/// The most requests one statement serves.
pub const MAX_BATCH: usize = 256;
/// The most events one statement records (a batch request larger than this is one statement
/// of its own).
pub const MAX_EVENTS: usize = 2000;
/// The events waiting that start a statement beside one in flight (see
/// [`Job::PARALLEL_WEIGHT`](super::gather::Job::PARALLEL_WEIGHT)). 16 since single events
/// are resolved by the usage job itself (one resolve and one recording statement per batch):
/// 100 left a third of the machine idle (bench/README.md, "The resolve hop").
pub const PARALLEL_EVENTS: usize = 16;

/// One request's events, and their outcomes in order.
pub type Answers = Vec<Result<Outcome, SharedError>>;

/// Records `events` in one statement; if that fails on account of the data, one statement
/// per event, so a bad event fails alone. Connection failures fail the lot. `in_block`: on
/// Citus (see [`record_batch`]).
pub async fn record_isolated(
    conn: &mut PgConnection,
    events: &[&NewEvent],
    in_block: bool,
) -> Result<Vec<Result<Outcome, SharedError>>, sqlx::Error> {
    match record_batch(conn, events, in_block).await {
        Ok(outcomes) => Ok(outcomes.into_iter().map(Ok).collect()),
        Err(sqlx::Error::Database(err)) if statement_fault(&*err) => {
            if events.len() == 1 {
                return Ok(vec![Err(Arc::new(sqlx::Error::Database(err)))]);
            }
            tracing::warn!(error = %err, events = events.len(),
                "a usage batch failed; recording its events one by one");
            let mut answers = Vec::with_capacity(events.len());
            for event in events {
                answers.push(
                    match record_batch(conn, std::slice::from_ref(event), in_block).await {
                        Ok(mut one) => one.pop().ok_or_else(|| {
                            Arc::new(sqlx::Error::Protocol("no outcome for the event".into()))
                        }),
                        Err(sqlx::Error::Database(err)) if statement_fault(&*err) => {
                            Err(Arc::new(sqlx::Error::Database(err)))
                        }
                        Err(err) => return Err(err),
                    },
                );
            }
            Ok(answers)
        }
        Err(err) => Err(err),
    }
}

/// Whether a database error is the statement's own (its data, a deadlock) rather than the
/// database going away (SQLSTATE classes 08 connection, 53 resources, 57 operator
/// intervention, 58 system error), after which nothing should be retried here.
fn statement_fault(err: &dyn sqlx::error::DatabaseError) -> bool {
    !err.code()
        .is_some_and(|code| ["08", "53", "57", "58"].iter().any(|c| code.starts_with(c)))
}
