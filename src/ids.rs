//! Prefixed, time-sortable ids (`sub_…`, `evt_…`). UUIDv7 makes them sort by creation, so they
//! double as pagination cursors.

use uuid::Uuid;

pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", Uuid::now_v7().simple())
}

/// Ids chosen by tenants (customers, features, plans, usage events): 1–255 printable ASCII
/// characters without spaces or slashes, so they are safe in paths.
pub fn is_valid_external_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 255
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b'?' && b != b'#' && b != b'%')
}
