//! The worker's one retry policy: how long to wait before trying a failed step again.
//!
//! - When a step fails again and again, then the waits grow from 50 ms, doubling, to 2 s and
//!   stay there: the exponential base is `backon`'s [`ExponentialBuilder`], without a limit on
//!   tries (a worker never drops an order; a hard stop ends every retry loop).
//! - When several workers retry together, then their waits spread out: each is the base scaled
//!   by a random factor in `[0.75, 1.25)`. (`backon`'s own jitter only adds, up to a whole delay
//!   more, which would lengthen the waits.)

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// The first wait.
const FIRST_DELAY: Duration = Duration::from_millis(50);

/// The longest wait.
const MAX_DELAY: Duration = Duration::from_secs(2);

/// The waits of one retry loop; start a new one (`Retry::default()`) for each loop.
#[derive(Debug)]
pub(crate) struct Retry {
    /// The exponential base delays, never exhausted.
    delays: ExponentialBackoff,
}

impl Default for Retry {
    fn default() -> Self {
        Self::between(FIRST_DELAY, MAX_DELAY)
    }
}

impl Retry {
    /// Waits from `first`, doubling, to `max` (each scaled by the same jitter): for failures
    /// that outlive one retry loop (see `failing.rs`).
    pub(crate) fn between(first: Duration, max: Duration) -> Self {
        Self {
            delays: ExponentialBuilder::new()
                .with_min_delay(first)
                .with_max_delay(max)
                .with_factor(2.0)
                .without_max_times()
                .build(),
        }
    }

    /// The wait before the next try.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.delays.next().unwrap_or(MAX_DELAY);
        base.mul_f64(0.75 + fastrand::f64() * 0.5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The waits are today's: 50 ms doubling to a 2 s cap, each within ±25 %.
    #[test]
    fn waits_double_from_50_ms_to_2_s_within_a_quarter() {
        let mut retry = Retry::default();
        let bases = [50, 100, 200, 400, 800, 1600, 2000, 2000, 2000];
        for base in bases {
            let wait = retry.next_delay().as_secs_f64() * 1000.0;
            let base = f64::from(base);
            assert!(
                (base * 0.75..base * 1.25).contains(&wait),
                "wait {wait} ms for base {base} ms"
            );
        }
    }
}
