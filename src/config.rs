//! Layered configuration with figment: built-in defaults (`config/default.toml`), then the file
//! named by `TOLLGATE_CONFIG` (or `config/default.toml` in the working directory), then
//! `TOLLGATE_*` environment variables. Secrets come only from the environment, are held in
//! `secrecy` wrappers and never print.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::Deserialize;

pub use secrecy::{ExposeSecret, SecretString as Secret};

const BUILTIN_DEFAULTS: &str = include_str!("../config/default.toml");

/// The keys a file or a `TOLLGATE_<KEY>` variable may set.
const KEYS: [&str; 9] = [
    "listen",
    "data_dir",
    "log",
    "log_format",
    "db_max_connections",
    "request_timeout_seconds",
    "check_batch_workers",
    "usage_batch_workers",
    "stripe_max_attempts",
];

/// The merged layers, as read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Layers {
    listen: SocketAddr,
    data_dir: PathBuf,
    log: String,
    log_format: LogFormat,
    db_max_connections: u32,
    request_timeout_seconds: u64,
    check_batch_workers: Option<usize>,
    usage_batch_workers: Option<usize>,
    stripe_max_attempts: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
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
    /// Usage statements (group commits) in flight at once (`None`: the cores, at least two).
    pub usage_batch_workers: Option<usize>,
    /// Attempts at sending an outbox row to Stripe before it is parked as failed.
    pub stripe_max_attempts: i32,
    pub database_url: Option<Secret>,
    pub admin_token: Option<Secret>,
    /// The key stored secrets are sealed under (32 bytes, base64; `secrets::SecretsKey`).
    pub secrets_key: Option<Secret>,
}

impl Config {
    /// Loads the layers from the process environment.
    pub fn load() -> Result<Self> {
        let mut figment = Figment::new().merge(Toml::string(BUILTIN_DEFAULTS));
        let file = std::env::var_os("TOLLGATE_CONFIG")
            .map(PathBuf::from)
            .or_else(|| {
                let p = PathBuf::from("config/default.toml");
                p.exists().then_some(p)
            });
        if let Some(path) = file {
            // A file that was asked for and is missing is an error, not silently skipped.
            anyhow::ensure!(
                path.exists(),
                "config file {} does not exist",
                path.display()
            );
            figment = figment.merge(Toml::file_exact(&path));
        }
        let layers: Layers = figment
            .merge(Env::prefixed("TOLLGATE_").only(&KEYS))
            .extract()
            .context("configuration")?;
        let secret = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|s| !s.is_empty())
                .map(Secret::from)
        };
        Ok(Config {
            listen: layers.listen,
            data_dir: layers.data_dir,
            log: layers.log,
            log_format: layers.log_format,
            db_max_connections: layers.db_max_connections.max(1),
            request_timeout_seconds: layers.request_timeout_seconds.max(1),
            check_batch_workers: layers.check_batch_workers.filter(|n| *n > 0),
            usage_batch_workers: layers.usage_batch_workers.filter(|n| *n > 0),
            stripe_max_attempts: layers.stripe_max_attempts.max(1),
            database_url: secret("DATABASE_URL"),
            admin_token: secret("TOLLGATE_ADMIN_TOKEN"),
            secrets_key: secret("TOLLGATE_SECRETS_KEY"),
        })
    }
}

#[cfg(test)]
// figment's `Jail` closures return its own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn env_overrides_files_and_defaults_and_secrets_do_not_print() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "custom.toml",
                "log = \"debug\"\nrequest_timeout_seconds = 5",
            )?;
            jail.set_env("TOLLGATE_CONFIG", "custom.toml");
            jail.set_env("TOLLGATE_LISTEN", "127.0.0.1:9000");
            jail.set_env("TOLLGATE_REQUEST_TIMEOUT_SECONDS", "7");
            jail.set_env("TOLLGATE_CHECK_BATCH_WORKERS", "3");
            jail.set_env("DATABASE_URL", "postgres://u:hunter2@h/db");
            jail.set_env("TOLLGATE_ADMIN_TOKEN", "adm_s3cret");
            jail.set_env("TOLLGATE_SECRETS_KEY", "a2V5X3MzY3JldA==");
            // Other TOLLGATE_ variables are not configuration keys: ignored here.
            jail.set_env("TOLLGATE_PG_BIN_DIR", "/usr/lib/postgresql/15/bin");
            let cfg = Config::load().map_err(|e| e.to_string())?;
            assert_eq!(cfg.listen.to_string(), "127.0.0.1:9000");
            assert_eq!(cfg.log, "debug", "the file layer");
            assert_eq!(cfg.request_timeout_seconds, 7, "the environment wins");
            assert_eq!(cfg.check_batch_workers, Some(3));
            assert_eq!(cfg.db_max_connections, 32, "the built-in default");
            assert_eq!(cfg.log_format, LogFormat::Text);
            let debug = format!("{cfg:?}");
            assert!(!debug.contains("hunter2"), "{debug}");
            assert!(!debug.contains("adm_s3cret"), "{debug}");
            assert!(!debug.contains("a2V5X3MzY3JldA"), "{debug}");
            assert_eq!(cfg.admin_token.unwrap().expose_secret(), "adm_s3cret");
            assert_eq!(cfg.secrets_key.unwrap().expose_secret(), "a2V5X3MzY3JldA==");
            Ok(())
        });
    }

    #[test]
    fn bad_values_and_missing_files_are_errors() {
        Jail::expect_with(|jail| {
            jail.set_env("TOLLGATE_CONFIG", "/nonexistent/none.toml");
            assert!(Config::load().is_err(), "a missing TOLLGATE_CONFIG file");
            jail.clear_env();
            jail.set_env("TOLLGATE_DB_MAX_CONNECTIONS", "many");
            let err = Config::load().unwrap_err();
            assert!(format!("{err:#}").contains("DB_MAX_CONNECTIONS"), "{err:#}");
            jail.clear_env();
            jail.set_env("TOLLGATE_LOG_FORMAT", "xml");
            assert!(Config::load().is_err(), "log_format is text or json");
            Ok(())
        });
    }
}
