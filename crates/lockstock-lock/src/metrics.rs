//! [`LockMetrics`]: what a [`LockClient`](super::LockClient) did, as `prometheus-client` metrics.
//!
//! The counters and histograms are `prometheus-client` types, shared (cheap clones of one
//! `Arc`) between the client, its guards and whatever [`Registry`] the caller registers them in
//! with [`LockMetrics::register`]. The crate keeps no global registry: each caller (an API, a
//! worker, a test) owns its own.
//!
//! - When `acquire`/`try_acquire` returns a guard, then `lock_acquisitions` grows by one and the
//!   time the call took lands in the `lock_acquire_wait_seconds` histogram.
//! - When `acquire` gives up at its deadline (or `try_acquire` finds the lock held), then
//!   `lock_acquire_timeouts` grows; when it fails with an error (Redis unreachable, a bad
//!   argument), then `lock_acquire_failures` grows. Neither records a wait.
//! - When a guard's lost signal fires, then `lock_losses` grows (once per guard).
//! - When a guard is released (explicitly, or dropped unreleased), then its hold time lands in the
//!   `lock_hold_seconds` histogram.
//! - Not guaranteed: one consistent instant across families (each is read on its own at encoding
//!   time), and counters restart at zero with the process.
//!
//! | family (under the caller's prefix) | type | buckets |
//! |---|---|---|
//! | `lock_acquisitions_total` | counter | |
//! | `lock_acquire_timeouts_total` | counter | |
//! | `lock_acquire_failures_total` | counter | |
//! | `lock_losses_total` | counter | |
//! | `lock_acquire_wait_seconds` | histogram | [`DURATION_BUCKETS`] |
//! | `lock_hold_seconds` | histogram | [`DURATION_BUCKETS`] |

use std::time::Duration;

use prometheus_client::{
    metrics::{counter::Counter, histogram::Histogram},
    registry::{Registry, Unit},
};

/// Histogram bucket upper bounds, in seconds (the `+Inf` bucket is implied).
pub const DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Counters and histograms of one lock client (shared by its guards). Cloning shares the values.
#[derive(Debug, Clone)]
pub struct LockMetrics {
    /// Successful acquisitions.
    acquisitions: Counter,
    /// Acquisitions that gave up at their deadline (or found the lock held, for `try_acquire`).
    timeouts: Counter,
    /// Acquisitions that failed with an error.
    failures: Counter,
    /// Held locks whose lost signal fired.
    losses: Counter,
    /// How long successful acquisitions took, in seconds.
    acquire_wait: Histogram,
    /// How long locks were held, from grant to release, in seconds.
    hold_time: Histogram,
}

impl Default for LockMetrics {
    fn default() -> Self {
        Self {
            acquisitions: Counter::default(),
            timeouts: Counter::default(),
            failures: Counter::default(),
            losses: Counter::default(),
            acquire_wait: Histogram::new(DURATION_BUCKETS),
            hold_time: Histogram::new(DURATION_BUCKETS),
        }
    }
}

impl LockMetrics {
    /// Registers every family in `registry` (names in the module docs; give the registry a prefix
    /// with `Registry::sub_registry_with_prefix`). The registry shares the values: later
    /// recordings show in its next encoding.
    ///
    /// ```
    /// use lockstock_lock::LockMetrics;
    /// use prometheus_client::{encoding::prometheus_text::encode, registry::Registry};
    ///
    /// let metrics = LockMetrics::default();
    /// let mut registry = Registry::default();
    /// metrics.register(registry.sub_registry_with_prefix("app"));
    /// let mut text = String::new();
    /// encode(&mut text, &registry).unwrap();
    /// assert!(text.contains("app_lock_acquisitions_total 0"));
    /// ```
    pub fn register(&self, registry: &mut Registry) {
        // The registry appends the full stop to each help text.
        registry.register(
            "lock_acquisitions",
            "Lock acquisitions that got the lock",
            self.acquisitions.clone(),
        );
        registry.register(
            "lock_acquire_timeouts",
            "Lock acquisitions that gave up at their deadline (or found the lock held, for try_acquire)",
            self.timeouts.clone(),
        );
        registry.register(
            "lock_acquire_failures",
            "Lock acquisitions that failed with an error (Redis unreachable, bad argument)",
            self.failures.clone(),
        );
        registry.register(
            "lock_losses",
            "Held locks whose lost signal fired (expired, taken, or safety deadline passed)",
            self.losses.clone(),
        );
        registry.register_with_unit(
            "lock_acquire_wait",
            "Time successful lock acquisitions took, including waiting for the holder",
            Unit::Seconds,
            self.acquire_wait.clone(),
        );
        registry.register_with_unit(
            "lock_hold",
            "Time locks were held, from grant to release",
            Unit::Seconds,
            self.hold_time.clone(),
        );
    }

    /// Successful acquisitions so far.
    pub fn acquisitions(&self) -> u64 {
        self.acquisitions.get()
    }

    /// Held locks whose lost signal fired so far.
    pub fn losses(&self) -> u64 {
        self.losses.get()
    }

    /// Records a successful acquisition that took `waited`.
    pub(crate) fn acquired(&self, waited: Duration) {
        self.acquisitions.inc();
        self.acquire_wait.observe(waited.as_secs_f64());
    }

    /// Records an acquisition that did not get the lock in time.
    pub(crate) fn timed_out(&self) {
        self.timeouts.inc();
    }

    /// Records an acquisition that failed with an error.
    pub(crate) fn failed(&self) {
        self.failures.inc();
    }

    /// Records a lost lock.
    pub(crate) fn lost(&self) {
        self.losses.inc();
    }

    /// Records a hold that ended after `held`.
    pub(crate) fn released(&self, held: Duration) {
        self.hold_time.observe(held.as_secs_f64());
    }

    /// Records the result of an acquisition call that started `waited` ago: `Ok(true)` when it
    /// got the lock, `Ok(false)` when the lock was held (`try_acquire`).
    pub(crate) fn record_acquire(&self, got: Result<bool, &super::LockError>, waited: Duration) {
        match got {
            Ok(true) => self.acquired(waited),
            Ok(false) | Err(super::LockError::Timeout { .. }) => self.timed_out(),
            Err(_) => self.failed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::prometheus_text::encode;

    use super::*;

    fn exposition(metrics: &LockMetrics) -> String {
        let mut registry = Registry::default();
        metrics.register(registry.sub_registry_with_prefix("lockstock"));
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        text
    }

    /// Observations land in the first bucket whose bound covers them; buckets are cumulative and
    /// the names are the ones the dashboards know.
    #[test]
    fn histogram_buckets_are_cumulative_under_the_known_names() {
        let metrics = LockMetrics::default();
        metrics.acquired(Duration::from_micros(500));
        metrics.acquired(Duration::from_millis(7));
        metrics.acquired(Duration::from_secs(60));
        let text = exposition(&metrics);
        for line in [
            "# TYPE lockstock_lock_acquisitions_total counter",
            "lockstock_lock_acquisitions_total 3",
            "# TYPE lockstock_lock_acquire_wait_seconds histogram",
            r#"lockstock_lock_acquire_wait_seconds_bucket{le="0.001"} 1"#,
            r#"lockstock_lock_acquire_wait_seconds_bucket{le="0.01"} 2"#,
            r#"lockstock_lock_acquire_wait_seconds_bucket{le="30"} 2"#,
            r#"lockstock_lock_acquire_wait_seconds_bucket{le="+Inf"} 3"#,
            "lockstock_lock_acquire_wait_seconds_count 3",
            "lockstock_lock_hold_seconds_count 0",
            "# HELP lockstock_lock_losses_total Held locks whose lost signal fired (expired, taken, or safety deadline passed).",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in\n{text}"
            );
        }
        assert_eq!(metrics.acquisitions(), 3);
    }
}
