//! Stripe: the outbox sync that sends what Stripe must learn (`sync`), the webhooks Stripe
//! sends back (`inbound`), and the sync's state for the tenant (`status`).

pub mod inbound;
pub mod status;
pub mod sync;
