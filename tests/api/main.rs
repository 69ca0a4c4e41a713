//! Black-box tests over HTTP against the real app and a real PostgreSQL. One test binary, so
//! one throwaway cluster serves every test.

mod addons;
mod analytics;
mod browser;
mod citus;
mod cli;
mod cluster;
mod console;
mod conventions;
mod cors;
mod coupons;
mod credit;
mod export;
mod fakes;
mod governance;
mod helpers;
mod ingest;
mod invoice_items;
mod isolation;
mod lifecycle;
mod members;
mod negotiated;
mod outage;
mod plans;
mod portal;
mod readme;
mod schema;
mod seats;
mod secrets;
mod seed_lifecycle;
mod seeds;
mod sessions;
mod stripe;
mod usage;
mod webhooks;
