//! Layered configuration: built-in defaults (`config/default.toml`), then the file named by
//! `TOLLGATE_CONFIG` (or `config/default.toml` in the working directory), then `TOLLGATE_*`
//! environment variables. Secrets come only from the environment and never print.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Deserialize;

const BUILTIN_DEFAULTS: &str = include_str!("../config/default.toml");

/// A string that never shows itself in `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(\"[redacted]\")")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<String>,
    log: Option<String>,
    log_format: Option<String>,
    db_max_connections: Option<u32>,
    request_timeout_seconds: Option<u64>,
    check_batch_workers: Option<usize>,
    stripe_max_attempts: Option<i32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub log: String,
    pub log_format: LogFormat,
    pub db_max_connections: u32,
    pub request_timeout_seconds: u64,
    /// Check statements in flight at once (`None`: half the cores, at least one).
    pub check_batch_workers: Option<usize>,
    /// Attempts at sending an outbox row to Stripe before it is parked as failed.
    pub stripe_max_attempts: i32,
    pub database_url: Option<Secret>,
    pub admin_token: Option<Secret>,
}

impl Config {
    /// Loads the layers from the real process environment.
    pub fn load() -> Result<Self> {
        Self::load_from(|k| std::env::var(k).ok())
    }

    /// Loads the layers with `env` as the environment (tests pass a map).
    pub fn load_from(env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut merged: FileConfig =
            toml::from_str(BUILTIN_DEFAULTS).context("built-in config/default.toml")?;
        let file = env("TOLLGATE_CONFIG").map(PathBuf::from).or_else(|| {
            let p = PathBuf::from("config/default.toml");
            p.exists().then_some(p)
        });
        if let Some(path) = file {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            let layer: FileConfig = toml::from_str(&text)
                .with_context(|| format!("parsing config file {}", path.display()))?;
            merged = merge(merged, layer);
        }
        let env_layer = FileConfig {
            listen: env("TOLLGATE_LISTEN"),
            data_dir: env("TOLLGATE_DATA_DIR"),
            log: env("TOLLGATE_LOG"),
            log_format: env("TOLLGATE_LOG_FORMAT"),
            db_max_connections: parse_env(&env, "TOLLGATE_DB_MAX_CONNECTIONS")?,
            request_timeout_seconds: parse_env(&env, "TOLLGATE_REQUEST_TIMEOUT_SECONDS")?,
            check_batch_workers: parse_env(&env, "TOLLGATE_CHECK_BATCH_WORKERS")?,
            stripe_max_attempts: parse_env(&env, "TOLLGATE_STRIPE_MAX_ATTEMPTS")?,
        };
        merged = merge(merged, env_layer);

        let listen = merged.listen.unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen: SocketAddr = listen
            .parse()
            .with_context(|| format!("TOLLGATE_LISTEN/listen is not an address: {listen:?}"))?;
        let log_format = match merged.log_format.as_deref().unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => anyhow::bail!("log_format must be \"text\" or \"json\", not {other:?}"),
        };
        Ok(Config {
            listen,
            data_dir: PathBuf::from(merged.data_dir.unwrap_or_else(|| ".tollgate".into())),
            log: merged.log.unwrap_or_else(|| "info".into()),
            log_format,
            db_max_connections: merged.db_max_connections.unwrap_or(32).max(1),
            request_timeout_seconds: merged.request_timeout_seconds.unwrap_or(30).max(1),
            check_batch_workers: merged.check_batch_workers.filter(|n| *n > 0),
            stripe_max_attempts: merged.stripe_max_attempts.unwrap_or(12).max(1),
            database_url: env("DATABASE_URL").filter(|s| !s.is_empty()).map(Secret),
            admin_token: env("TOLLGATE_ADMIN_TOKEN")
                .filter(|s| !s.is_empty())
                .map(Secret),
        })
    }
}

fn parse_env<T: std::str::FromStr>(
    env: &impl Fn(&str) -> Option<String>,
    key: &str,
) -> Result<Option<T>> {
    match env(key) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| anyhow::anyhow!("{key} is not a valid number: {v:?}")),
    }
}

fn merge(base: FileConfig, over: FileConfig) -> FileConfig {
    FileConfig {
        listen: over.listen.or(base.listen),
        data_dir: over.data_dir.or(base.data_dir),
        log: over.log.or(base.log),
        log_format: over.log_format.or(base.log_format),
        db_max_connections: over.db_max_connections.or(base.db_max_connections),
        request_timeout_seconds: over
            .request_timeout_seconds
            .or(base.request_timeout_seconds),
        check_batch_workers: over.check_batch_workers.or(base.check_batch_workers),
        stripe_max_attempts: over.stripe_max_attempts.or(base.stripe_max_attempts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn env_overrides_defaults_and_secrets_do_not_print() {
        let env: HashMap<&str, &str> = [
            ("TOLLGATE_LISTEN", "127.0.0.1:9000"),
            ("DATABASE_URL", "postgres://u:hunter2@h/db"),
            ("TOLLGATE_ADMIN_TOKEN", "adm_s3cret"),
            ("TOLLGATE_CHECK_BATCH_WORKERS", "3"),
            ("TOLLGATE_CONFIG", "/nonexistent/none.toml"),
        ]
        .into_iter()
        .collect();
        // A missing TOLLGATE_CONFIG file is an error, not silently ignored.
        assert!(Config::load_from(|k| env.get(k).map(|v| v.to_string())).is_err());
        let env2: HashMap<&str, &str> = env
            .into_iter()
            .filter(|(k, _)| *k != "TOLLGATE_CONFIG")
            .collect();
        let cfg = Config::load_from(|k| env2.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(cfg.check_batch_workers, Some(3));
        let debug = format!("{cfg:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(!debug.contains("adm_s3cret"), "{debug}");
        assert_eq!(cfg.admin_token.unwrap().expose(), "adm_s3cret");
    }
}
