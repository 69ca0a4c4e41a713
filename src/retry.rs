//! Exponential backoff with jitter for the outbox and webhook workers.

use std::time::Duration;

/// The wait before attempt `attempts + 1`: `base * 2^(attempts - 1)`, at most `max`, then
/// scaled by a random factor in [0.5, 1.0] so failed rows do not retry in lockstep.
pub fn backoff(attempts: i32, base: Duration, max: Duration) -> Duration {
    let exp = attempts.saturating_sub(1).clamp(0, 30) as u32;
    let full = base.saturating_mul(1u32 << exp.min(20)).min(max);
    let jitter: f64 = 0.5 + rand::random::<f64>() * 0.5;
    full.mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_is_capped() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        for attempts in 1..40 {
            let d = backoff(attempts, base, max);
            let full = base
                .saturating_mul(1u32 << (attempts - 1).clamp(0, 20) as u32)
                .min(max);
            assert!(d >= full / 2 && d <= full, "attempt {attempts}: {d:?}");
        }
        assert!(backoff(30, base, max) <= max);
    }
}
