//! Commits that keep failing: a back-off per product that outlives the lock hold.
//!
//! A commit refused for a reason that is neither transient nor the order's fault (a trigger that
//! raises, a constraint a newer schema added, a permission taken away) fails the same way under
//! every new lock hold. Retrying each hold's short back-off afresh would hammer Postgres (and the
//! lock) about 20 times a second for as long as the cause lasts.
//!
//! - When a product's commit fails this way, then [`CommitFailures::failed`] returns the wait
//!   before the next hold: 100 ms, doubling per failure to 10 s, kept across lock holds (the
//!   lane releases the lock while it waits), and logs one warning carrying the cause chain, the
//!   failure count and the wait.
//! - When a commit for the product succeeds again, then [`CommitFailures::succeeded`] forgets
//!   the failures (logging that the product recovered): the next failure starts at 100 ms.
//! - Other products are not affected: each product has its own back-off, and a waiting lane
//!   holds no lock and no Postgres connection.
//!
//! Not guaranteed: the waits survive only while the worker process lives; a restarted worker
//! starts over at 100 ms.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use super::retry::Retry;
use crate::order::ProductId;

/// The first wait after a failed commit.
const FIRST_WAIT: Duration = Duration::from_millis(100);

/// The longest wait between two commits of a product that keeps failing.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(10);

/// One product's run of failed commits.
#[derive(Debug)]
struct Failing {
    /// Failed commits in a row.
    failures: u64,
    /// The growing waits.
    waits: Retry,
}

/// The failing products of one worker and their back-offs.
#[derive(Debug, Default)]
pub(crate) struct CommitFailures {
    by_product: Mutex<HashMap<ProductId, Failing>>,
}

impl CommitFailures {
    /// Records a failed commit of `product` with its `cause` (the error's cause chain) and returns
    /// how long the lane waits, without the lock, before its next hold.
    pub(crate) fn failed(&self, product: ProductId, cause: &str) -> Duration {
        let mut by_product = self.by_product.lock().unwrap_or_else(|p| p.into_inner());
        let failing = by_product.entry(product).or_insert_with(|| Failing {
            failures: 0,
            waits: Retry::between(FIRST_WAIT, MAX_WAIT),
        });
        failing.failures += 1;
        let wait = failing.waits.next_delay();
        tracing::warn!(
            product_id = %product,
            failures = failing.failures,
            wait_ms = wait.as_millis() as u64,
            error.cause_chain = cause,
            "commit failed; retrying under a new lock after a growing wait"
        );
        wait
    }

    /// Records a successful commit of `product`: its back-off starts over.
    pub(crate) fn succeeded(&self, product: ProductId) {
        let mut by_product = self.by_product.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(failing) = by_product.remove(&product) {
            tracing::info!(product_id = %product, failures = failing.failures, "commits succeed again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The waits grow across calls (holds) and start over after a success.
    #[test]
    fn waits_grow_per_product_and_reset_after_a_success() {
        let failures = CommitFailures::default();
        let one = ProductId::new(1).unwrap();
        let two = ProductId::new(2).unwrap();
        let waits: Vec<Duration> = (0..8).map(|_| failures.failed(one, "boom")).collect();
        assert!(waits[0] < Duration::from_millis(150), "{waits:?}");
        assert!(waits[7] >= Duration::from_millis(7_500), "{waits:?}");
        assert!(
            waits.iter().all(|w| *w <= MAX_WAIT.mul_f64(1.25)),
            "{waits:?}"
        );
        assert!(failures.failed(two, "boom") < Duration::from_millis(150));
        failures.succeeded(one);
        assert!(failures.failed(one, "boom") < Duration::from_millis(150));
    }
}
