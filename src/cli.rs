//! The `tollgate` command line: serve (default), worker, migrate, tenant create, plans apply,
//! secrets rotate and new-key.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ExposeSecret, LogFormat, Secret};
use crate::embedded_pg::{EmbeddedPg, MissingBinaries};
use crate::secrets::{Secrets, SecretsKey};
use crate::AppState;

#[derive(Debug, Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Multi-tenant billing and entitlements API"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API and run the background worker (the default).
    Serve(ServeArgs),
    /// Run only the background worker.
    Worker(WorkerArgs),
    /// Exit 0 if a running Tollgate answers `GET /readyz` with 200 (for container
    /// healthchecks: the slim image has no curl).
    Healthcheck {
        /// The server to ask (default: `http://<listen address>`, with 0.0.0.0 as 127.0.0.1).
        #[arg(long)]
        url: Option<String>,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the OpenAPI document and exit.
    Openapi,
    /// Manage tenants.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Manage plans.
    Plans {
        #[command(subcommand)]
        command: PlansCommand,
    },
    /// The key stored secrets are sealed under (docs/SECRETS.md).
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
    },
}

#[derive(Debug, Default, clap::Args)]
struct ServeArgs {
    /// Serve the API only; run no background worker in this process.
    #[arg(long)]
    no_worker: bool,
    /// Do not apply pending migrations at start.
    #[arg(long)]
    no_migrate: bool,
}

#[derive(Debug, Default, clap::Args)]
struct WorkerArgs {
    /// Do not apply migrations: wait until the database has this build's migrations (applied
    /// by `tollgate serve` or `tollgate migrate`) before working.
    #[arg(long)]
    no_migrate: bool,
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// Create a tenant and print it with its API key.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "test", value_parser = ["test", "live"])]
        mode: String,
    },
}

#[derive(Debug, Subcommand)]
enum PlansCommand {
    /// Apply features and plans from a TOML file (idempotent).
    Apply {
        #[arg(long)]
        tenant: String,
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum SecretsCommand {
    /// Print a new random key (32 bytes, base64) for TOLLGATE_SECRETS_KEY.
    NewKey,
    /// Re-seal every stored secret under a new key, in one transaction (the current key is
    /// TOLLGATE_SECRETS_KEY). Then restart every process with the new key.
    Rotate {
        /// The new key, 32 bytes in base64.
        #[arg(long)]
        new_key: String,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tollgate: configuration error: {e:#}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tollgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<MissingBinaries>().is_some() => {
            eprintln!("{}", crate::embedded_pg::MISSING_BINARIES);
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("tollgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The database to use: `DATABASE_URL`, or the embedded default.
struct Database {
    url: String,
    embedded: Option<EmbeddedPg>,
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Some(pg) = &self.embedded {
            pg.stop();
        }
    }
}

async fn database(config: &Config) -> Result<Database> {
    if let Some(url) = &config.database_url {
        return Ok(Database {
            url: url.expose_secret().to_string(),
            embedded: None,
        });
    }
    let data_dir = config.data_dir.clone();
    let pg = tokio::task::spawn_blocking(move || EmbeddedPg::start(&data_dir)).await??;
    let server = pg.url("postgres");
    crate::embedded_pg::ensure_database(&server, "tollgate").await?;
    tracing::info!(port = pg.port(), data_dir = %config.data_dir.display(), "embedded PostgreSQL running");
    Ok(Database {
        url: pg.url("tollgate"),
        embedded: Some(pg),
    })
}

/// The admin token: `TOLLGATE_ADMIN_TOKEN`, or on the embedded default one generated once
/// and kept in the data directory.
fn admin_token(config: &Config, embedded: bool) -> Result<Option<Secret>> {
    if let Some(t) = &config.admin_token {
        return Ok(Some(t.clone()));
    }
    if !embedded {
        tracing::warn!("TOLLGATE_ADMIN_TOKEN is unset: the admin API is disabled");
        return Ok(None);
    }
    let path = config.data_dir.join("admin_token");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        println!("Admin token: stored in {}", path.display());
        return Ok(Some(Secret::from(existing.trim())));
    }
    use rand::distributions::Alphanumeric;
    use rand::Rng;
    let token: String = format!(
        "tga_{}",
        rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(40)
            .map(char::from)
            .collect::<String>()
    );
    write_private(&path, &token, true)?;
    println!(
        "Admin token (shown once, kept in {}): {token}",
        path.display()
    );
    Ok(Some(Secret::from(token)))
}

/// Where the embedded default keeps the secrets key it generated.
fn secrets_key_file(config: &Config) -> PathBuf {
    config.data_dir.join("secrets_key")
}

/// The secrets key: `TOLLGATE_SECRETS_KEY`, or on the embedded default one generated once and
/// kept in the data directory (`keep` says where, for a rotation to replace it); none
/// otherwise.
fn secrets(config: &Config, embedded: bool) -> Result<(Secrets, Option<PathBuf>)> {
    if let Some(text) = &config.secrets_key {
        let key = SecretsKey::parse(text).context("TOLLGATE_SECRETS_KEY")?;
        return Ok((Secrets::new(key), None));
    }
    if !embedded {
        return Ok((Secrets::none(), None));
    }
    let path = secrets_key_file(config);
    let text = match std::fs::read_to_string(&path) {
        Ok(existing) => Secret::from(existing.trim()),
        Err(_) => {
            let key = SecretsKey::generate();
            write_private(&path, key.expose_secret(), true)?;
            println!(
                "Secrets key: generated into {} (back it up with the data directory)",
                path.display()
            );
            key
        }
    };
    let key = SecretsKey::parse(&text).with_context(|| format!("{}", path.display()))?;
    Ok((Secrets::new(key), Some(path)))
}

/// Writes `text` to a file only its owner reads: a new file (`new`: fails if it exists), or
/// in place of the old one through a rename, so it is never half-written.
fn write_private(path: &std::path::Path, text: &str, new: bool) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let target = if new {
        path.to_path_buf()
    } else {
        path.with_extension("new")
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(new)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&target)
        .with_context(|| format!("writing {}", target.display()))?;
    writeln!(f, "{text}")?;
    f.sync_all()?;
    if !new {
        std::fs::rename(&target, path).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The process's secrets key, checked against the stored secrets (those stored in clear are
/// sealed): a process never runs with secrets it cannot read.
async fn open_secrets(pool: &sqlx::PgPool, config: &Config, embedded: bool) -> Result<Secrets> {
    let (secrets, _) = secrets(config, embedded)?;
    let prepared = crate::secrets::store::prepare(pool, &secrets).await?;
    match secrets.key_id() {
        Some(id) => tracing::info!(key = id, stored = prepared.stored, "secrets key in use"),
        None => {
            tracing::info!("no secrets key: storing a Stripe key or a webhook endpoint is refused")
        }
    }
    Ok(secrets)
}

/// Resolves on SIGINT, SIGTERM or `token` being cancelled, and then cancels `token`. The
/// signal listeners are registered when this is called, not when the future is first polled:
/// a signal sent as soon as the process says it is up ("listening", "worker started", both
/// said before this future is polled) would otherwise be lost, and the process would run on.
fn shutdown_signal(token: CancellationToken) -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, Signal, SignalKind};
    let interrupt = signal(SignalKind::interrupt()).ok();
    let terminate = signal(SignalKind::terminate()).ok();
    async fn next(s: Option<Signal>) {
        match s {
            Some(mut s) => {
                s.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    }
    async move {
        tokio::select! {
            _ = next(interrupt) => {},
            _ = next(terminate) => {},
            _ = token.cancelled() => {},
        }
        tracing::info!("shutting down: finishing in-flight requests");
        token.cancel();
    }
}

async fn run(cli: Cli, config: Config) -> Result<()> {
    let command = cli.command.unwrap_or(Command::Serve(ServeArgs::default()));
    match &command {
        Command::Openapi => {
            println!("{}", serde_json::to_string_pretty(&crate::http::openapi())?);
            return Ok(());
        }
        Command::Healthcheck { url } => return healthcheck(&config, url.as_deref()).await,
        Command::Secrets {
            command: SecretsCommand::NewKey,
        } => {
            println!("{}", SecretsKey::generate().expose_secret());
            return Ok(());
        }
        _ => {}
    }
    let db = database(&config).await?;
    // Half the connection budget for the general pool; the hot path's pool gets as many
    // (AppState sizes it from this pool), so a process holds at most db_max_connections.
    let pool = crate::connect(&db.url, (config.db_max_connections / 2).max(2)).await?;
    match command {
        Command::Openapi
        | Command::Healthcheck { .. }
        | Command::Secrets {
            command: SecretsCommand::NewKey,
        } => {}
        Command::Migrate => {
            crate::MIGRATOR.run(&pool).await?;
            println!("migrations applied");
        }
        Command::Serve(args) => {
            if !args.no_migrate {
                crate::MIGRATOR
                    .run(&pool)
                    .await
                    .context("applying migrations")?;
            }
            let secrets = open_secrets(&pool, &config, db.embedded.is_some()).await?;
            let state = AppState::build(
                pool.clone(),
                (
                    admin_token(&config, db.embedded.is_some())?,
                    secrets.clone(),
                ),
                std::time::Duration::from_secs(config.request_timeout_seconds),
                config.check_batch_workers,
                config.usage_batch_workers,
            );
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("binding {}", config.listen))?;
            let token = CancellationToken::new();
            let stop = shutdown_signal(token.clone());
            let worker = (!args.no_worker).then(|| {
                tokio::spawn(crate::worker::run(
                    pool.clone(),
                    token.clone(),
                    worker_config(&config, secrets),
                ))
            });
            println!("Tollgate listening on http://{}", listener.local_addr()?);
            crate::serve(listener, state, stop).await?;
            token.cancel();
            if let Some(w) = worker {
                let _ = w.await;
            }
            pool.close().await;
        }
        Command::Worker(args) => {
            let token = CancellationToken::new();
            let stop = shutdown_signal(token.clone());
            tokio::pin!(stop);
            if args.no_migrate {
                tokio::select! {
                    ready = wait_for_migrations(&pool) => ready?,
                    _ = &mut stop => return Ok(()),
                }
            } else {
                crate::MIGRATOR
                    .run(&pool)
                    .await
                    .context("applying migrations")?;
            }
            let secrets = open_secrets(&pool, &config, db.embedded.is_some()).await?;
            let worker = tokio::spawn(crate::worker::run(
                pool.clone(),
                token.clone(),
                worker_config(&config, secrets),
            ));
            stop.await;
            let _ = worker.await;
            pool.close().await;
        }
        Command::Tenant {
            command: TenantCommand::Create { name, mode },
        } => {
            crate::MIGRATOR.run(&pool).await?;
            let origin = crate::audit::Origin::cli();
            let now = crate::clock::Clock::real_time();
            let t = crate::tenancy::create_tenant(&pool, &origin, &name, &mode, now).await?;
            println!("{}", serde_json::to_string_pretty(&t)?);
        }
        Command::Plans {
            command: PlansCommand::Apply { tenant, file },
        } => {
            crate::MIGRATOR.run(&pool).await?;
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let parsed = crate::catalog::toml::parse(&text)?;
            let tenant = crate::ids::TenantId::try_from_str(&tenant)
                .map_err(|_| anyhow::anyhow!("no such tenant: {tenant}"))?;
            let summary =
                crate::catalog::toml::apply(&pool, &crate::audit::Origin::cli(), &tenant, parsed)
                    .await?;
            println!("features created: {}", summary.features_created);
            for (k, v) in &summary.plans_written {
                println!("plan {k}: version {v} written");
            }
            for (k, v) in &summary.plans_unchanged {
                println!("plan {k}: unchanged (version {v})");
            }
            for (k, v) in &summary.addons_written {
                println!("addon {k}: version {v} written");
            }
            for (k, v) in &summary.addons_unchanged {
                println!("addon {k}: unchanged (version {v})");
            }
            for code in &summary.coupons_created {
                println!("coupon {code}: created");
            }
            for code in &summary.coupons_unchanged {
                println!("coupon {code}: unchanged");
            }
        }
        Command::Secrets {
            command: SecretsCommand::Rotate { new_key },
        } => {
            crate::MIGRATOR.run(&pool).await?;
            let text = Secret::from(new_key);
            let new = SecretsKey::parse(&text).context("--new-key")?;
            let new_id = new.id().to_string();
            let (current, kept_in) = secrets(&config, db.embedded.is_some())?;
            let n = crate::secrets::store::rotate(&pool, &current, new).await?;
            if let Some(path) = kept_in {
                write_private(&path, text.expose_secret(), false)?;
                println!(
                    "{n} secrets re-sealed under key {new_id}; the new key is in {}",
                    path.display()
                );
            } else {
                println!(
                    "{n} secrets re-sealed under key {new_id}. Set TOLLGATE_SECRETS_KEY to the new \
                     key and restart every serve and worker process: the old key opens nothing now."
                );
            }
        }
    }
    drop(db);
    Ok(())
}

/// Waits until every migration of this build is applied (by another process).
async fn wait_for_migrations(pool: &sqlx::PgPool) -> Result<()> {
    let wanted: Vec<i64> = crate::MIGRATOR.iter().map(|m| m.version).collect();
    let mut logged = false;
    loop {
        match crate::db::schema::applied_versions(pool).await {
            Ok(applied) if wanted.iter().all(|v| applied.contains(v)) => return Ok(()),
            Ok(_) | Err(_) if !logged => {
                tracing::info!("waiting for the database migrations to be applied");
                logged = true;
            }
            _ => {}
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// `tollgate healthcheck`: asks a running server's `/readyz`.
async fn healthcheck(config: &Config, url: Option<&str>) -> Result<()> {
    let base = match url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let mut addr = config.listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            format!("http://{addr}")
        }
    };
    let resp = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .build()?
        .get(format!("{base}/readyz"))
        .send()
        .await
        .with_context(|| format!("asking {base}/readyz"))?;
    anyhow::ensure!(
        resp.status().is_success(),
        "{base}/readyz answered {}",
        resp.status()
    );
    println!("ready");
    Ok(())
}

fn worker_config(config: &Config, secrets: Secrets) -> crate::worker::WorkerConfig {
    crate::worker::WorkerConfig {
        secrets,
        stripe: crate::stripe::sync::SyncConfig {
            max_attempts: config.stripe_max_attempts,
            ..Default::default()
        },
        webhooks: Default::default(),
    }
}
