//! The one place that says what "now" is: real time, or a test-mode tenant's frozen test clock.

use chrono::{DateTime, SubsecRound, Utc};

#[derive(Debug, Clone, Default)]
pub struct Clock;

impl Clock {
    /// Real time. Only for things that are not a tenant's business time (logs, key expiry).
    /// Microsecond precision, as PostgreSQL stores it, so a time read back equals the one
    /// written.
    pub fn real_now(&self) -> DateTime<Utc> {
        Utc::now().trunc_subsecs(6)
    }

    /// Real time, as a plain function (for code that takes `fn() -> DateTime<Utc>`).
    pub fn real_time() -> DateTime<Utc> {
        Clock.real_now()
    }

    /// A tenant's "now": its test clock once it has been advanced, real time otherwise.
    pub fn tenant_now(&self, test_clock: Option<DateTime<Utc>>) -> DateTime<Utc> {
        test_clock.unwrap_or_else(|| self.real_now())
    }
}
