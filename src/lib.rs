//! Tollgate: a multi-tenant billing and entitlements API.
//!
//! `build_app` makes the application (the router and the layers around it) from an
//! [`AppState`]; `serve` runs it on an already-bound
//! listener until a shutdown signal, so tests bind port 0 and start the real app in-process.

pub mod analytics;
pub mod audit;
pub mod billing;
pub mod catalog;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod customers;
pub mod db;
pub mod domain;
pub mod embedded_pg;
pub mod entitlements;
pub mod error;
pub mod http;
pub mod ids;
pub mod portal;
pub mod retry;
pub mod secrets;
pub mod stripe;
pub mod tenancy;
pub mod testing;
pub mod webhooks;
pub mod worker;

pub use db::connect;
pub use http::state::AppState;
pub use http::{build_app, serve};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
