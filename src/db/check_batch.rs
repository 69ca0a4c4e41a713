//! Batching of `/v1/check` lookups.
//!
//! A check needs one read: key, tenant, customer, live subscription and the feature's counter.
//! On a small query most of the cost is per statement (protocol round trip, executor start-up,
//! result encoding), both in PostgreSQL and in the driver. So concurrent checks are not sent one
//! statement each: a few worker tasks take whatever checks are waiting (up to [`MAX_BATCH`]) and
//! resolve them all in one statement over `unnest`ed arrays. Nothing is cached, so every check
//! still sees the database as of its statement (a revoked key fails at once); under light load a
//! batch is a single check and nothing waits for a batch to fill.
//!
//! Why hand-written (there is no library for "gather concurrent lookups into one statement"):
//! measured with `bench/run.sh` (2 cores), batching took checks from 0.38–0.41 to 0.49–0.70 ×
//! `pgbench -S`, and one statement in flight to 0.59–0.85 (bench/README.md).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot, Mutex};

use super::hot_pool::HotPool;
pub use super::resolve::Lookup;
use super::resolve::{fetch_batch, ResolveRow};

/// The most checks one statement resolves.
pub const MAX_BATCH: usize = 64;
/// Checks waiting beyond this make senders wait (backpressure).
const QUEUE: usize = 4096;

/// A batch's failure is every one of its lookups' failure, so it is shared.
pub type SharedError = Arc<sqlx::Error>;

type Reply = oneshot::Sender<Result<Option<ResolveRow>, SharedError>>;

pub struct CheckBatcher {
    pool: Arc<HotPool>,
    workers: usize,
    /// Started on first use, inside the runtime. The workers stop when this sender is dropped
    /// (with the app state).
    tx: OnceLock<mpsc::Sender<(Lookup, Reply)>>,
    stats: Arc<Stats>,
    /// Real time, for the counter lookup (test clocks are read from the tenant row).
    now: fn() -> DateTime<Utc>,
}

/// Statements run and lookups answered, since start.
#[derive(Default)]
pub struct Stats {
    pub statements: AtomicU64,
    pub lookups: AtomicU64,
}

impl CheckBatcher {
    pub fn new(pool: Arc<HotPool>, workers: usize, now: fn() -> DateTime<Utc>) -> Self {
        CheckBatcher {
            pool,
            workers: workers.max(1),
            tx: OnceLock::new(),
            stats: Arc::default(),
            now,
        }
    }

    /// Checks waiting in the queue (not yet taken by a worker).
    pub fn queued(&self) -> usize {
        self.tx
            .get()
            .map_or(0, |tx| tx.max_capacity() - tx.capacity())
    }

    /// (statements, lookups) so far.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.stats.statements.load(Ordering::Relaxed),
            self.stats.lookups.load(Ordering::Relaxed),
        )
    }

    /// The resolve row for `lookup` (`None`: no such tenant).
    pub async fn lookup(&self, lookup: Lookup) -> Result<Option<ResolveRow>, SharedError> {
        let tx = self.tx.get_or_init(|| self.start());
        let (reply, rx) = oneshot::channel();
        let closed = || Arc::new(sqlx::Error::PoolClosed);
        tx.send((lookup, reply)).await.map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    fn start(&self) -> mpsc::Sender<(Lookup, Reply)> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..self.workers {
            tokio::spawn(worker(
                self.pool.clone(),
                rx.clone(),
                self.stats.clone(),
                self.now,
            ));
        }
        tx
    }
}

async fn worker(
    pool: Arc<HotPool>,
    rx: Arc<Mutex<mpsc::Receiver<(Lookup, Reply)>>>,
    stats: Arc<Stats>,
    now: fn() -> DateTime<Utc>,
) {
    let mut batch: Vec<(Lookup, Reply)> = Vec::with_capacity(MAX_BATCH);
    loop {
        let conn = {
            // The worker holding the receiver is the next to run a statement: it waits for a
            // check, then for a connection, and only then takes everything queued meanwhile.
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else {
                return;
            };
            batch.push(first);
            let conn = pool.acquire().await;
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(item) => batch.push(item),
                    Err(_) => break,
                }
            }
            conn
        };
        // Requests cancelled while queued need no answer.
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
                let err = Arc::new(err);
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(err.clone()));
                }
                continue;
            }
        };
        let lookups: Vec<&Lookup> = batch.iter().map(|(l, _)| l).collect();
        stats.statements.fetch_add(1, Ordering::Relaxed);
        stats
            .lookups
            .fetch_add(lookups.len() as u64, Ordering::Relaxed);
        metrics::counter!("tollgate_check_statements_total").increment(1);
        metrics::counter!("tollgate_check_lookups_total").increment(lookups.len() as u64);
        match fetch_batch(&mut conn, &lookups, now()).await {
            Ok(mut rows) => {
                conn.done();
                for (i, (_, reply)) in batch.drain(..).enumerate() {
                    let _ = reply.send(Ok(rows.get_mut(i).and_then(Option::take)));
                }
            }
            Err(err) => {
                drop(conn);
                let err = Arc::new(err);
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }
}
