//! The background worker. Every job is idempotent and safe to run in several processes at
//! once: due billing work (renewals, trial ends, scheduled changes, cancellations, invoice
//! finalization, dunning retries) for tenants on real time, the Stripe outbox, outbound webhook
//! deliveries, and tidying (expired idempotency keys and leases).

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::billing::due::{self, Processed, Scope};
use crate::db::plans::PlanCache;
use crate::entitlements::retention::PurgeScope;
use crate::secrets::Secrets;
use crate::stripe::sync::{self as stripe_sync, SyncConfig};
use crate::webhooks::{self, DeliveryConfig};

/// How often the outbox and webhook deliveries are looked at when idle.
const SEND_INTERVAL: Duration = Duration::from_secs(1);
/// How often due work is looked for.
const DUE_INTERVAL: Duration = Duration::from_secs(5);
/// How often tables are tidied.
const CLEANUP_EVERY: u32 = 12;
/// Items per batch of due work, so shutdown is never kept waiting long.
const DUE_BATCH: u32 = 100;

/// Tidies the tables (see `db::retention::cleanup`); returns how many rows went.
pub async fn cleanup(db: &PgPool) -> Result<u64, sqlx::Error> {
    crate::db::retention::cleanup(db, crate::clock::Clock.real_now()).await
}

/// Purges the raw usage events past their plan's retention, for tenants whose clock follows
/// real time (a test clock's advance purges its own tenant). Bounded per call; the rest waits
/// for the next pass.
pub async fn purge_usage(db: &PgPool) -> crate::error::Result<u64> {
    crate::entitlements::retention::purge(db, PurgeScope::RealTime, PURGE_BATCHES).await
}

/// Retention batches per cleanup pass (each `entitlements::retention::BATCH` events).
const PURGE_BATCHES: u32 = 100;

/// Runs all billing work due by real time, for tenants whose clock follows real time.
pub async fn run_due(db: &PgPool, plans: &PlanCache) -> crate::error::Result<Processed> {
    let mut total = Processed::default();
    loop {
        let now = crate::clock::Clock.real_now();
        let worker = crate::audit::Origin::worker();
        let done = due::run(db, plans, (Scope::RealTime, &worker), now, DUE_BATCH).await?;
        let n = done.total();
        total.add(&done);
        if n < DUE_BATCH {
            return Ok(total);
        }
    }
}

/// What the worker's senders use.
#[derive(Debug, Clone, Default)]
pub struct WorkerConfig {
    pub stripe: SyncConfig,
    pub webhooks: DeliveryConfig,
    /// The key the Stripe keys and the endpoints' signing secrets are sealed under.
    pub secrets: Secrets,
}

/// Runs the worker's loops until `token` is cancelled: due billing work and tidying every 5 s,
/// and the Stripe outbox and webhook deliveries (polled every second, at once again while
/// there is work).
pub async fn run(db: PgPool, token: CancellationToken, cfg: WorkerConfig) {
    tracing::info!("worker started");
    let plans = Arc::new(PlanCache::default());
    let due = tokio::spawn(due_loop(db.clone(), plans.clone(), token.clone()));
    let stripe = tokio::spawn({
        let (db, plans, token) = (db.clone(), plans.clone(), token.clone());
        let (secrets, cfg) = (cfg.secrets.clone(), cfg.stripe);
        async move {
            poll(token, "Stripe outbox", || {
                stripe_sync::send_due(&db, &plans, &secrets, &cfg)
            })
            .await
        }
    });
    let http = reqwest::Client::builder()
        .user_agent(concat!("Tollgate-Webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default();
    let hooks = tokio::spawn({
        let (db, token, secrets, cfg) = (db.clone(), token.clone(), cfg.secrets, cfg.webhooks);
        async move {
            poll(token, "webhook deliveries", || async {
                webhooks::deliver_due(&db, &http, &secrets, &cfg, 32)
                    .await
                    .map_err(crate::error::Error::from)
            })
            .await
        }
    });
    let _ = tokio::join!(due, stripe, hooks);
    tracing::info!("worker stopped");
}

async fn due_loop(db: PgPool, plans: Arc<PlanCache>, token: CancellationToken) {
    let mut pass: u32 = 0;
    loop {
        match run_due(&db, &plans).await {
            Ok(done) if done.total() > 0 => tracing::info!(?done, "due billing work done"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "due billing work failed; retrying later"),
        }
        if pass % CLEANUP_EVERY == 0 {
            if let Err(e) = cleanup(&db).await {
                tracing::warn!(error = %e, "cleanup failed; retrying later");
            }
            match purge_usage(&db).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(purged = n, "usage events past retention purged"),
                Err(e) => {
                    tracing::warn!(error = %e, "usage retention purge failed; retrying later")
                }
            }
        }
        pass = pass.wrapping_add(1);
        tokio::select! {
            _ = token.cancelled() => break,
            _ = tokio::time::sleep(DUE_INTERVAL) => {}
        }
    }
}

/// Calls `pass` again at once while it finds work, else once a second.
async fn poll<F, Fut>(token: CancellationToken, what: &str, mut pass: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = crate::error::Result<usize>>,
{
    loop {
        let idle = match pass().await {
            Ok(n) => n == 0,
            Err(e) => {
                tracing::warn!(error = %e, "{what} failed; retrying later");
                true
            }
        };
        if idle {
            tokio::select! {
                _ = token.cancelled() => break,
                _ = tokio::time::sleep(SEND_INTERVAL) => {}
            }
        } else if token.is_cancelled() {
            break;
        }
    }
}
