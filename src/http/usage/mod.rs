//! The hot path and its read-outs, one module per action: checks, recording usage (one event
//! or a batch), and the usage read-outs for dashboards.

pub mod check;
pub mod readouts;
pub mod record;
