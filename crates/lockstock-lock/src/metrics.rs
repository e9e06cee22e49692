//! [`LockMetrics`]: what a [`LockClient`](super::LockClient) did, counted in process.
//!
//! Plain atomics, no exporter: the API and the workers read a [`LockMetricsSnapshot`] and render
//! it (Prometheus text, logs). Recording costs a few relaxed atomic adds.
//!
//! - When `acquire`/`try_acquire` returns a guard, then `acquisitions` grows by one and the time
//!   the call took lands in the `acquire_wait` histogram.
//! - When `acquire` gives up at its deadline (or `try_acquire` finds the lock held), then
//!   `timeouts` grows; when it fails with an error (Redis unreachable, a bad argument), then
//!   `failures` grows. Neither records a wait.
//! - When a guard's lost signal fires, then `losses` grows (once per guard).
//! - When a guard is released (explicitly, or dropped unreleased), then its hold time lands in the
//!   `hold_time` histogram.
//! - Not guaranteed: a snapshot is not atomic across fields (each field is read on its own), and
//!   counters restart at zero with the process.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

/// Histogram bucket upper bounds, in seconds (the `+Inf` bucket is implied).
pub const DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A fixed-bucket histogram of durations (bounds: [`DURATION_BUCKETS`]).
#[derive(Debug, Default)]
pub struct DurationHistogram {
    /// Observations per bucket (not cumulative); the last slot is `+Inf`.
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    /// Sum of all observations, in microseconds.
    sum_micros: AtomicU64,
    /// Number of observations.
    count: AtomicU64,
}

impl DurationHistogram {
    /// Records one observation.
    pub fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        let slot = DURATION_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(DURATION_BUCKETS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// A copy of the histogram.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = Vec::with_capacity(self.buckets.len());
        let mut running = 0;
        for bucket in &self.buckets {
            running += bucket.load(Ordering::Relaxed);
            cumulative.push(running);
        }
        HistogramSnapshot {
            bounds: &DURATION_BUCKETS,
            cumulative,
            sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// A point-in-time copy of a [`DurationHistogram`], in Prometheus' shape.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Bucket upper bounds in seconds, ascending (without `+Inf`).
    pub bounds: &'static [f64],
    /// Cumulative counts: `cumulative[i]` observations were `<= bounds[i]`; the last entry (one
    /// past `bounds`) is the `+Inf` bucket, i.e. the total count.
    pub cumulative: Vec<u64>,
    /// Sum of all observations, in seconds.
    pub sum_seconds: f64,
}

impl HistogramSnapshot {
    /// Total number of observations.
    pub fn count(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }
}

/// Counters and histograms of one lock client (shared by its guards).
#[derive(Debug, Default)]
pub struct LockMetrics {
    acquisitions: AtomicU64,
    timeouts: AtomicU64,
    failures: AtomicU64,
    losses: AtomicU64,
    acquire_wait: DurationHistogram,
    hold_time: DurationHistogram,
}

/// A point-in-time copy of [`LockMetrics`].
#[derive(Debug, Clone, PartialEq)]
pub struct LockMetricsSnapshot {
    /// Successful acquisitions.
    pub acquisitions: u64,
    /// Acquisitions that gave up at their deadline (or found the lock held, for `try_acquire`).
    pub timeouts: u64,
    /// Acquisitions that failed with an error.
    pub failures: u64,
    /// Held locks whose lost signal fired.
    pub losses: u64,
    /// How long successful acquisitions took.
    pub acquire_wait: HistogramSnapshot,
    /// How long locks were held, from grant to release.
    pub hold_time: HistogramSnapshot,
}

impl LockMetrics {
    /// A copy of every counter and histogram.
    pub fn snapshot(&self) -> LockMetricsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LockMetricsSnapshot {
            acquisitions: get(&self.acquisitions),
            timeouts: get(&self.timeouts),
            failures: get(&self.failures),
            losses: get(&self.losses),
            acquire_wait: self.acquire_wait.snapshot(),
            hold_time: self.hold_time.snapshot(),
        }
    }

    /// Records a successful acquisition that took `waited`.
    pub(crate) fn acquired(&self, waited: Duration) {
        self.acquisitions.fetch_add(1, Ordering::Relaxed);
        self.acquire_wait.observe(waited);
    }

    /// Records an acquisition that did not get the lock in time.
    pub(crate) fn timed_out(&self) {
        self.timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// Records an acquisition that failed with an error.
    pub(crate) fn failed(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a lost lock.
    pub(crate) fn lost(&self) {
        self.losses.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a hold that ended after `held`.
    pub(crate) fn released(&self, held: Duration) {
        self.hold_time.observe(held);
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
    use super::*;

    /// Observations land in the first bucket whose bound covers them; counts are cumulative.
    #[test]
    fn histogram_buckets_are_cumulative() {
        let histogram = DurationHistogram::default();
        histogram.observe(Duration::from_micros(500));
        histogram.observe(Duration::from_millis(7));
        histogram.observe(Duration::from_secs(60));
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.cumulative[0], 1); // <= 1 ms
        assert_eq!(snapshot.cumulative[3], 2); // <= 10 ms
        assert_eq!(snapshot.cumulative[DURATION_BUCKETS.len() - 1], 2); // <= 30 s
        assert_eq!(snapshot.count(), 3);
        assert!((snapshot.sum_seconds - 60.0075).abs() < 1e-6);
    }
}
