//! Pure billing logic: no I/O, no clock. Unit- and property-tested.

pub mod addon;
pub mod audit;
pub mod entitlement;
pub mod id;
pub mod invoice;
pub mod money;
pub mod mrr;
pub mod outbox;
pub mod period;
pub mod plan;
pub mod qty;
pub mod seats;
pub mod status;

/// A stored or given text value that names nothing known (a status, a feature type…).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?}")]
pub struct UnknownValue {
    pub what: &'static str,
    pub value: String,
}

impl UnknownValue {
    pub fn new(what: &'static str, value: &str) -> Self {
        UnknownValue {
            what,
            value: value.to_string(),
        }
    }
}
