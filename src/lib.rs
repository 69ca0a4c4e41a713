//! Tollgate: a multi-tenant billing and entitlements API.
//!
//! `build_app` makes the router from an [`AppState`]; `serve` runs it on an already-bound
//! listener until a shutdown signal, so tests bind port 0 and start the real app in-process.

pub mod billing;
pub mod catalog;
pub mod cli;
pub mod clock;
pub mod config;
pub mod customers;
pub mod db;
pub mod domain;
pub mod embedded_pg;
pub mod entitlements;
pub mod error;
pub mod http;
pub mod ids;
pub mod retry;
pub mod stripe;
pub mod tenancy;
pub mod testing;
pub mod webhooks;
pub mod worker;

use std::future::Future;
use std::sync::Arc;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use tokio::net::TcpListener;

pub use http::build_app;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Everything a request handler needs. Cloned for every request and every middleware layer,
/// so it is one `Arc`: a clone is one reference-count increment.
#[derive(Clone)]
pub struct AppState(Arc<AppStateInner>);

pub struct AppStateInner {
    pub db: PgPool,
    pub clock: clock::Clock,
    pub admin_token: Option<config::Secret>,
    pub plans: Arc<db::plans::PlanCache>,
    pub request_timeout: std::time::Duration,
    /// The hot path's service: its own pool, the check batcher, the plan cache.
    pub entitlements: entitlements::Entitlements,
}

impl std::ops::Deref for AppState {
    type Target = AppStateInner;

    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

impl AppState {
    pub fn new(db: PgPool, admin_token: Option<config::Secret>) -> Self {
        Self::with_timeout(db, admin_token, std::time::Duration::from_secs(30))
    }

    pub fn with_timeout(
        db: PgPool,
        admin_token: Option<config::Secret>,
        request_timeout: std::time::Duration,
    ) -> Self {
        Self::build(db, admin_token, request_timeout, None)
    }

    pub fn build(
        db: PgPool,
        admin_token: Option<config::Secret>,
        request_timeout: std::time::Duration,
        check_workers: Option<usize>,
    ) -> Self {
        // Check statements in flight at once: by default half the cores (at least one), so
        // concurrent checks share statements; measured on 2 cores, one in flight gave the
        // most checks per second (bench/README.md).
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let workers = check_workers.unwrap_or(cores / 2);
        let plans = Arc::new(db::plans::PlanCache::default());
        let entitlements =
            entitlements::Entitlements::new(db.clone(), plans.clone(), clock::Clock, workers);
        AppState(Arc::new(AppStateInner {
            entitlements,
            db,
            clock: clock::Clock,
            admin_token,
            plans,
            request_timeout,
        }))
    }
}

/// Connects a pool to `url`.
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let opts: PgConnectOptions = url.parse()?;
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(std::time::Duration::from_secs(10))
        // No ping on every checkout: a broken connection fails its query and is replaced.
        .test_before_acquire(false)
        .connect_with(opts)
        .await?;
    Ok(pool)
}

/// Serves the API on `listener` until `shutdown` resolves; in-flight requests finish first.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let app = build_app(state);
    // Small request/response exchanges: send each response at once (no Nagle delay).
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "could not set TCP_NODELAY");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
