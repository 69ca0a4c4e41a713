//! Gathering concurrent requests into one statement: the hot path's group commit.
//!
//! On a small query most of the cost is per statement (protocol round trip, executor start-up,
//! result encoding, and for a write the commit's WAL flush), both in PostgreSQL and in the
//! driver. So concurrent hot-path requests are not sent one statement each: a few worker tasks
//! take whatever requests are waiting (up to [`Job::MAX_BATCH`]) and run them all in one
//! statement over `unnest`ed arrays — checks (`check_batch`) and usage events (`usage_batch`),
//! the latter committing every gathered event with one commit, as PostgreSQL's own group
//! commit shares one WAL flush between transactions. Nothing is answered before its statement
//! has completed (for a write: committed), and under light load a batch is a single request:
//! nothing waits for a batch to fill.
//!
//! Why hand-written (there is no library for "gather concurrent requests into one statement"):
//! measured with `bench/run.sh` (2 cores), batching took checks from 0.38–0.41 to 0.49–0.70 ×
//! `pgbench -S`, and usage events past the one-transaction-per-event pgbench script
//! (bench/README.md).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use sqlx::PgConnection;
use tokio::sync::{mpsc, oneshot, Mutex};

use super::hot_pool::HotPool;

/// Requests waiting beyond this make senders wait (backpressure).
const QUEUE: usize = 4096;

/// A batch's failure is every one of its requests' failure, so it is shared.
pub type SharedError = Arc<sqlx::Error>;

/// What one kind of gathered statement does.
pub trait Job: Send + Sync + 'static {
    type In: Send + 'static;
    type Out: Send + 'static;
    /// The most requests one statement takes.
    const MAX_BATCH: usize;
    /// The most weight (see [`Job::weight`]) one statement takes; a request heavier than this
    /// alone still gets a statement of its own.
    const MAX_WEIGHT: usize = usize::MAX;
    /// Metric names: statements run, requests answered.
    const STATEMENTS_METRIC: &'static str;
    const REQUESTS_METRIC: &'static str;

    /// How much of a statement one request is (usage: its number of events).
    fn weight(_item: &Self::In) -> usize {
        1
    }

    /// Runs one batch: one answer per request, in order. An error fails every request of the
    /// batch (and only those).
    fn run(
        &self,
        conn: &mut PgConnection,
        batch: &[Self::In],
    ) -> impl Future<Output = Result<Vec<Self::Out>, sqlx::Error>> + Send;
}

type Reply<O> = oneshot::Sender<Result<O, SharedError>>;
type Queued<J> = (<J as Job>::In, Reply<<J as Job>::Out>);
type Queue<J> = mpsc::Sender<Queued<J>>;

pub struct Gatherer<J: Job> {
    pool: Arc<HotPool>,
    workers: usize,
    job: Arc<J>,
    /// Started on first use, inside the runtime. The workers stop when this sender is dropped
    /// (with the app state).
    tx: OnceLock<Queue<J>>,
    stats: Arc<Stats>,
}

/// Statements run and requests answered, since start.
#[derive(Default)]
struct Stats {
    statements: AtomicU64,
    requests: AtomicU64,
}

impl<J: Job> Gatherer<J> {
    /// `workers` statements in flight at once at most.
    pub fn new(pool: Arc<HotPool>, workers: usize, job: J) -> Self {
        Gatherer {
            pool,
            workers: workers.max(1),
            job: Arc::new(job),
            tx: OnceLock::new(),
            stats: Arc::default(),
        }
    }

    /// Requests waiting in the queue (not yet taken by a worker).
    pub fn queued(&self) -> usize {
        self.tx
            .get()
            .map_or(0, |tx| tx.max_capacity() - tx.capacity())
    }

    /// (statements, requests) so far.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.stats.statements.load(Ordering::Relaxed),
            self.stats.requests.load(Ordering::Relaxed),
        )
    }

    /// Runs `item` in the next statement and waits for its answer.
    pub async fn submit(&self, item: J::In) -> Result<J::Out, SharedError> {
        let tx = self.tx.get_or_init(|| self.start());
        let (reply, rx) = oneshot::channel();
        let closed = || Arc::new(sqlx::Error::PoolClosed);
        tx.send((item, reply)).await.map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    fn start(&self) -> Queue<J> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..self.workers {
            tokio::spawn(worker(
                self.pool.clone(),
                self.job.clone(),
                rx.clone(),
                self.stats.clone(),
            ));
        }
        tx
    }
}

async fn worker<J: Job>(
    pool: Arc<HotPool>,
    job: Arc<J>,
    rx: Arc<Mutex<mpsc::Receiver<Queued<J>>>>,
    stats: Arc<Stats>,
) {
    let mut batch: Vec<Queued<J>> = Vec::with_capacity(J::MAX_BATCH);
    // A request taken from the queue that did not fit the last statement: the next one's first.
    let mut carry: Option<Queued<J>> = None;
    loop {
        let conn = {
            // The worker holding the receiver is the next to run a statement: it waits for a
            // request, then for a connection, and only then takes everything queued meanwhile.
            let mut rx = rx.lock().await;
            let first = match carry.take() {
                Some(item) => item,
                None => match rx.recv().await {
                    Some(item) => item,
                    None => return,
                },
            };
            let mut weight = J::weight(&first.0);
            batch.push(first);
            let conn = pool.acquire().await;
            while batch.len() < J::MAX_BATCH {
                match rx.try_recv() {
                    Ok(item) if weight + J::weight(&item.0) > J::MAX_WEIGHT => {
                        carry = Some(item);
                        break;
                    }
                    Ok(item) => {
                        weight += J::weight(&item.0);
                        batch.push(item);
                    }
                    Err(_) => break,
                }
            }
            conn
        };
        // Requests cancelled while queued need no answer (nor any work).
        batch.retain(|(_, reply)| !reply.is_closed());
        if batch.is_empty() {
            if let Ok(conn) = conn {
                conn.done();
            }
            continue;
        }
        let mut conn = match conn {
            Ok(conn) => conn,
            Err(err) => {
                fail(&mut batch, Arc::new(err));
                continue;
            }
        };
        let (items, replies): (Vec<J::In>, Vec<Reply<J::Out>>) = batch.drain(..).unzip();
        stats.statements.fetch_add(1, Ordering::Relaxed);
        stats
            .requests
            .fetch_add(items.len() as u64, Ordering::Relaxed);
        metrics::counter!(J::STATEMENTS_METRIC).increment(1);
        metrics::counter!(J::REQUESTS_METRIC).increment(items.len() as u64);
        match job.run(&mut conn, &items).await {
            Ok(outs) => {
                conn.done();
                let mut outs = outs.into_iter();
                for reply in replies {
                    let answer = outs.next().ok_or_else(|| {
                        Arc::new(sqlx::Error::Protocol("a batch answer is missing".into()))
                    });
                    let _ = reply.send(answer);
                }
            }
            Err(err) => {
                // Dropped, not reused: it may hold half a response.
                drop(conn);
                let err = Arc::new(err);
                for reply in replies {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }
}

fn fail<I, O>(batch: &mut Vec<(I, Reply<O>)>, err: SharedError) {
    for (_, reply) in batch.drain(..) {
        let _ = reply.send(Err(err.clone()));
    }
}
