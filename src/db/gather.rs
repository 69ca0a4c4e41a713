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
//! nothing waits for a batch to fill. Under load, a job may hold small batches back while one
//! of its statements is in flight ([`Job::PARALLEL_WEIGHT`]): they wait for that one to end,
//! never for a time.
//!
//! Why hand-written (there is no library for "gather concurrent requests into one statement"):
//! measured with `bench/run.sh` (2 cores), batching took checks from 0.38–0.41 to 0.49–0.70 ×
//! `pgbench -S`, and usage events past the one-transaction-per-event pgbench script
//! (bench/README.md).

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use sqlx::PgConnection;
use tokio::sync::{mpsc, oneshot, Mutex, Notify};

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
    /// The weight waiting that starts a statement while another one is in flight. Below it,
    /// the next statement waits for the one in flight to end and then takes everything
    /// gathered meanwhile: fewer, larger statements when each request is small (the cost per
    /// statement is paid once for more requests), and statements side by side when each
    /// request is large enough to keep the database busy. 0: never wait.
    const PARALLEL_WEIGHT: usize = 0;
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

/// The workers' side of the queue, taken by one worker at a time.
struct Intake<J: Job> {
    rx: mpsc::Receiver<Queued<J>>,
    /// A request taken from the queue that did not fit the last statement: the next one's
    /// first, whichever worker runs it. (Kept by the worker that took it, it could wait for
    /// as long as another worker held the queue waiting for a new request.)
    carry: Option<Queued<J>>,
}

pub struct Gatherer<J: Job> {
    pool: Arc<HotPool>,
    workers: usize,
    job: Arc<J>,
    /// Started on first use, inside the runtime. The workers stop when this sender is dropped
    /// (with the app state).
    tx: OnceLock<Queue<J>>,
    stats: Arc<Stats>,
}

/// Statements run and requests answered, since start; statements in flight now.
#[derive(Default)]
struct Stats {
    statements: AtomicU64,
    requests: AtomicU64,
    in_flight: AtomicUsize,
    /// Requests taken from the queue by a worker waiting for the statement in flight, or for
    /// a connection.
    gathered: AtomicUsize,
    /// Signalled when a statement ends (see [`Job::PARALLEL_WEIGHT`]).
    ended: Notify,
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

    /// Requests waiting for a statement: in the queue, or gathered by a worker waiting for
    /// the statement in flight to end or for a connection.
    pub fn queued(&self) -> usize {
        self.tx
            .get()
            .map_or(0, |tx| tx.max_capacity() - tx.capacity())
            + self.stats.gathered.load(Ordering::Relaxed)
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
        let intake = Arc::new(Mutex::new(Intake { rx, carry: None }));
        for _ in 0..self.workers {
            tokio::spawn(worker(
                self.pool.clone(),
                self.job.clone(),
                intake.clone(),
                self.stats.clone(),
            ));
        }
        tx
    }
}

async fn worker<J: Job>(
    pool: Arc<HotPool>,
    job: Arc<J>,
    intake: Arc<Mutex<Intake<J>>>,
    stats: Arc<Stats>,
) {
    let mut batch: Vec<Queued<J>> = Vec::with_capacity(J::MAX_BATCH);
    loop {
        let conn = {
            // The worker holding the intake is the next to run a statement: it waits for a
            // request, then for a connection, and only then takes everything queued meanwhile.
            let mut intake = intake.lock().await;
            let first = match intake.carry.take() {
                Some(item) => item,
                None => match intake.rx.recv().await {
                    Some(item) => item,
                    None => return,
                },
            };
            let mut weight = J::weight(&first.0);
            batch.push(first);
            take_waiting(&mut intake, &mut batch, &mut weight);
            // Too little for a statement beside the one in flight: gather until that one
            // ends (or enough has come). The connection is taken afterwards: the one just
            // given back, whose backend is warm (measured: alternating between two
            // connections cost a fifth of the throughput).
            while weight < J::PARALLEL_WEIGHT
                && intake.carry.is_none()
                && batch.len() < J::MAX_BATCH
                && stats.in_flight.load(Ordering::Acquire) > 0
            {
                stats.gathered.store(batch.len(), Ordering::Relaxed);
                tokio::select! {
                    _ = stats.ended.notified() => {}
                    item = intake.rx.recv() => match item {
                        Some(item) => {
                            intake.carry = Some(item);
                            take_waiting(&mut intake, &mut batch, &mut weight);
                        }
                        None => break,
                    },
                }
            }
            // Still waiting while the connection is awaited: counted as such (`queued`).
            stats.gathered.store(batch.len(), Ordering::Relaxed);
            let conn = pool.acquire().await;
            stats.gathered.store(0, Ordering::Relaxed);
            take_waiting(&mut intake, &mut batch, &mut weight);
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
        let in_flight = InFlight::start(&stats);
        match job.run(&mut conn, &items).await {
            Ok(outs) => {
                // The connection goes back before the waiting statement is told to start, so
                // that it takes this one.
                conn.done();
                let mut outs = outs.into_iter();
                for reply in replies {
                    let answer = outs.next().ok_or_else(|| {
                        Arc::new(sqlx::Error::Protocol("a batch answer is missing".into()))
                    });
                    let _ = reply.send(answer);
                }
                // Told last, the waiting worker is the task this one woke last, so the next
                // to run on this thread (tokio's LIFO slot), rather than queued behind the
                // requests just answered (bench/README.md, "The hand-over").
                drop(in_flight);
            }
            Err(err) => {
                // Dropped, not reused: it may hold half a response.
                drop(conn);
                drop(in_flight);
                let err = Arc::new(err);
                for reply in replies {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }
}

/// Moves what is waiting in the queue into `batch` (a carried request first), up to
/// [`Job::MAX_BATCH`] requests and [`Job::MAX_WEIGHT`]; a request that does not fit is carried
/// to the next statement.
fn take_waiting<J: Job>(intake: &mut Intake<J>, batch: &mut Vec<Queued<J>>, weight: &mut usize) {
    while batch.len() < J::MAX_BATCH {
        let item = match intake.carry.take() {
            Some(item) => item,
            None => match intake.rx.try_recv() {
                Ok(item) => item,
                Err(_) => return,
            },
        };
        if *weight + J::weight(&item.0) > J::MAX_WEIGHT {
            intake.carry = Some(item);
            return;
        }
        *weight += J::weight(&item.0);
        batch.push(item);
    }
}

/// A statement in flight, counted until dropped (however the statement ends).
struct InFlight<'a>(&'a Stats);

impl<'a> InFlight<'a> {
    fn start(stats: &'a Stats) -> Self {
        stats.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(stats)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.ended.notify_one();
    }
}

fn fail<I, O>(batch: &mut Vec<(I, Reply<O>)>, err: SharedError) {
    for (_, reply) in batch.drain(..) {
        let _ = reply.send(Err(err.clone()));
    }
}
