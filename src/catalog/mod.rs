//! The catalog: what a tenant sells. Features, plans and add-ons (with their immutable
//! versions) and coupons, and applying them from a TOML file (`tollgate plans apply`), through
//! the same code as the API.

pub mod addons;
pub mod coupons;
pub mod features;
pub mod plans;
pub mod toml;
