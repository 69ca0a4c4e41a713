//! Group commit of `POST /v1/usage` (see `gather`): concurrent usage events are recorded
//! together, up to [`MAX_BATCH`] in one statement and so one transaction and one commit
//! (`usage::record_batch`). Each request still gets its own event's outcome, after the commit.
//!
//! If the statement fails because of one event's data (a database error rather than a lost
//! connection), the batch is run again one event at a time, so that only that event fails and
//! the others are answered as if they had come alone. A lost connection fails every event of
//! the batch, and only those: nothing of it was committed.

use std::sync::Arc;

use sqlx::PgConnection;

use super::gather::{Gatherer, Job, SharedError};
use super::usage::{record_batch, NewEvent, Outcome};

/// The most events one statement records.
pub const MAX_BATCH: usize = 256;

/// Gathers concurrent usage events into one recording statement.
pub type UsageBatcher = Gatherer<UsageJob>;

pub struct UsageJob;

impl Job for UsageJob {
    type In = NewEvent;
    type Out = Result<Outcome, SharedError>;
    const MAX_BATCH: usize = MAX_BATCH;
    const STATEMENTS_METRIC: &'static str = "tollgate_usage_statements_total";
    const REQUESTS_METRIC: &'static str = "tollgate_usage_events_total";

    async fn run(
        &self,
        conn: &mut PgConnection,
        batch: &[NewEvent],
    ) -> Result<Vec<Result<Outcome, SharedError>>, sqlx::Error> {
        record_isolated(conn, batch).await
    }
}

/// Records `events` in one statement; if that fails on account of the data, one statement
/// per event, so a bad event fails alone. Connection failures fail the lot.
pub async fn record_isolated(
    conn: &mut PgConnection,
    events: &[NewEvent],
) -> Result<Vec<Result<Outcome, SharedError>>, sqlx::Error> {
    match record_batch(conn, events).await {
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
                    match record_batch(conn, std::slice::from_ref(event)).await {
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
