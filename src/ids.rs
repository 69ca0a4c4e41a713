//! Making ids: the one place that reads the clock and randomness for them (UUIDv7). The id
//! types, their parsing and the rules for tenant-chosen ids are pure and live in
//! [`crate::domain::id`].

use uuid::Uuid;

pub use crate::domain::id::*;

/// A new id of kind `T`, sorting after every id made before it.
pub fn new<T: PrefixedId>() -> T {
    T::from_uuid(Uuid::now_v7())
}

/// A new id with a prefix that has no type of its own (generated usage-event ids, which share
/// a column with the ids tenants choose).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", Uuid::now_v7().simple())
}
