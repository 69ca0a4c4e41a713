//! A small connection pool for the hot path (`/v1/check`, `/v1/usage`).
//!
//! sqlx 0.8's pool pings every connection when it is returned (one extra round trip, and a
//! spawned task, per request). This pool skips that safely: a connection goes back only when
//! the request marked it clean with [`HotConn::done`] after its last query completed; a
//! connection from a cancelled or failed request is dropped and reopened later.
//!
//! Why hand-written: measured with `bench/run.sh` (2 cores), moving the hot path from sqlx's
//! pool to this one took checks from 0.28 to 0.36–0.49 × `pgbench -S` and usage from 0.54 to
//! 0.60–0.73 × the pgbench usage script (bench/README.md, "How it got here"); strace showed
//! the second `sendto` per request (the ping) gone. sqlx offers no switch for the ping.

use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgConnection};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connections older than this are closed rather than reused, so server-side state (memory,
/// cached plans) and connections through a failed-over proxy are renewed over time.
const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);

pub struct HotPool {
    options: PgConnectOptions,
    idle: Mutex<Vec<(PgConnection, Instant)>>,
    permits: Arc<Semaphore>,
}

pub struct HotConn<'a> {
    pool: &'a HotPool,
    conn: ManuallyDrop<PgConnection>,
    born: Instant,
    clean: bool,
    _permit: OwnedSemaphorePermit,
}

impl HotPool {
    /// Every hot-path statement is a lookup by key; its connections run with sequential scans
    /// off, so a plan made while a table was analyzed empty (a fresh install, whose plans a
    /// connection keeps for its life) still takes the index once the table has grown: measured,
    /// the batched check's counter lookup had been a scan of `usage_counters` per check.
    pub fn new(options: PgConnectOptions, max: usize) -> Self {
        HotPool {
            options: options.options([("enable_seqscan", "off")]),
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(max.max(1))),
        }
    }

    /// A connection: an idle one, or a new one (opened lazily, up to `max`).
    pub async fn acquire(&self) -> Result<HotConn<'_>, sqlx::Error> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let idle = self.idle.lock().ok().and_then(|mut v| v.pop());
        let (conn, born) = match idle {
            Some((c, born)) if born.elapsed() < MAX_LIFETIME => (c, born),
            _ => (self.options.connect().await?, Instant::now()),
        };
        Ok(HotConn {
            pool: self,
            conn: ManuallyDrop::new(conn),
            born,
            clean: false,
            _permit: permit,
        })
    }
}

/// A hot connection taken only when first needed.
pub struct LazyConn<'a> {
    pool: &'a HotPool,
    conn: Option<HotConn<'a>>,
}

impl<'a> LazyConn<'a> {
    pub fn new(pool: &'a HotPool) -> Self {
        LazyConn { pool, conn: None }
    }

    pub async fn get(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        if self.conn.is_none() {
            self.conn = Some(self.pool.acquire().await?);
        }
        match self.conn.as_mut() {
            Some(conn) => Ok(&mut **conn),
            None => Err(sqlx::Error::PoolClosed),
        }
    }

    /// Like [`HotConn::finish`], if a connection was taken.
    pub fn finish(self, ok: bool) {
        if let Some(conn) = self.conn {
            conn.finish(ok);
        }
    }
}

impl HotConn<'_> {
    /// Marks the connection reusable: every query on it ran to completion.
    pub fn done(mut self) {
        self.clean = true;
    }

    /// Returns the connection if `ok` (the work ran to completion without a database
    /// failure); otherwise it is dropped with this guard.
    pub fn finish(self, ok: bool) {
        if ok {
            self.done();
        }
    }
}

impl Deref for HotConn<'_> {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl DerefMut for HotConn<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

impl Drop for HotConn<'_> {
    fn drop(&mut self) {
        // SAFETY: `conn` is taken exactly once, here, and never touched again.
        let conn = unsafe { ManuallyDrop::take(&mut self.conn) };
        if self.clean {
            if let Ok(mut idle) = self.pool.idle.lock() {
                idle.push((conn, self.born));
                return;
            }
        }
        // Otherwise dropped: after a cancellation it may hold a half-read response.
        drop(conn);
    }
}
