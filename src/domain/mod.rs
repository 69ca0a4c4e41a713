//! Pure billing logic: no I/O, no clock. Unit- and property-tested.

pub mod entitlement;
pub mod money;
pub mod period;
