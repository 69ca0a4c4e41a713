//! Pure billing logic: no I/O, no clock. Unit- and property-tested.

pub mod entitlement;
pub mod invoice;
pub mod money;
pub mod period;
