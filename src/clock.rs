//! The one place that says what "now" is: real time, or a test-mode tenant's frozen test clock.

use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Default)]
pub struct Clock;

impl Clock {
    /// Real time. Only for things that are not a tenant's business time (logs, key expiry).
    pub fn real_now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    /// A tenant's "now": its test clock once it has been advanced, real time otherwise.
    pub fn tenant_now(&self, test_clock: Option<DateTime<Utc>>) -> DateTime<Utc> {
        test_clock.unwrap_or_else(|| self.real_now())
    }
}
