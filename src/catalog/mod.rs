//! The catalog: features and plans (with their immutable versions), and applying them from a
//! TOML file (`tollgate plans apply`), through the same code as the API.

pub mod addons;
pub mod features;
pub mod plans;
pub mod toml;
