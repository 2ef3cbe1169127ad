//! The per-subject rate limit on writes (GCRA, the `governor` crate).

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::AuthError;

/// How many writes a subject may make: a sustained rate and a burst.
#[derive(Debug)]
pub struct WriteLimit {
    limiter: DefaultKeyedRateLimiter<String>,
    checks: AtomicU64,
}

/// Forget idle subjects every this many checks, so the table stays small.
const SWEEP_EVERY: u64 = 10_000;

impl WriteLimit {
    pub fn new(per_second: u32, burst: u32) -> Self {
        let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(rate);
        Self {
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            checks: AtomicU64::new(0),
        }
    }

    /// Spends one write of `subject`'s budget, or says when to come back.
    pub fn check(&self, subject: &str) -> Result<(), AuthError> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&subject.to_owned())
            .map_err(|not_until| {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                AuthError::RateLimited {
                    retry_after_secs: wait.as_secs() + 1,
                }
            })
    }
}
