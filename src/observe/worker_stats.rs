//! [`WorkerStats`]: counters of what a worker did, for its log summary and its `/metrics`.
//!
//! The worker bumps plain atomics; [`WorkerStats`] is also a `prometheus-client`
//! [`Collector`] that reads them when a registry is encoded, so nothing is counted twice.
//!
//! - When a registry holding an `Arc<WorkerStats>` is encoded, then it shows
//!   `lockstock_worker_orders_total{outcome}` (fulfilled, rejected, dead_lettered,
//!   already_decided) and `lockstock_worker_events_total{event}` (lock_lost, stale_fence, retry,
//!   recovered), every series present from the start (at 0), and the gauges
//!   `lockstock_worker_reserved_messages` and `lockstock_worker_reserved_bytes` (messages reserved
//!   and not yet acknowledged, and their bytes: what the worker's byte budget bounds).
//! - Not guaranteed: one consistent instant across counters (each is read on its own).

use std::{
    fmt,
    sync::atomic::{AtomicU64, Ordering},
};

use prometheus_client::{
    collector::Collector,
    encoding::DescriptorEncoder,
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};
use serde::Serialize;

use super::registry::encode_series;

/// Running totals of one worker process. All counters only grow.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Orders this worker fulfilled (committed).
    pub fulfilled: AtomicU64,
    /// Orders this worker rejected (committed), any reason.
    pub rejected: AtomicU64,
    /// Messages moved to the dead letter list.
    pub dead_lettered: AtomicU64,
    /// Redelivered orders that already had an outcome (acknowledged with no effect).
    pub already_decided: AtomicU64,
    /// Times a held lock was lost before the commit (the order was retried).
    pub locks_lost: AtomicU64,
    /// Times the database refused a fencing token as stale.
    pub stale_fences: AtomicU64,
    /// Retries after infrastructure errors.
    pub retries: AtomicU64,
    /// Orders taken back from dead workers' processing lists (by this worker's recovery).
    pub recovered: AtomicU64,
    /// Gauge: messages reserved and not yet acknowledged (not in [`StatsSnapshot`]).
    pub reserved_messages: AtomicU64,
    /// Gauge: the bytes of those messages (not in [`StatsSnapshot`]).
    pub reserved_bytes: AtomicU64,
}

/// A point-in-time copy of [`WorkerStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// See [`WorkerStats::fulfilled`].
    pub fulfilled: u64,
    /// See [`WorkerStats::rejected`].
    pub rejected: u64,
    /// See [`WorkerStats::dead_lettered`].
    pub dead_lettered: u64,
    /// See [`WorkerStats::already_decided`].
    pub already_decided: u64,
    /// See [`WorkerStats::locks_lost`].
    pub locks_lost: u64,
    /// See [`WorkerStats::stale_fences`].
    pub stale_fences: u64,
    /// See [`WorkerStats::retries`].
    pub retries: u64,
    /// See [`WorkerStats::recovered`].
    pub recovered: u64,
}

impl WorkerStats {
    /// Adds one to `counter`.
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A copy of every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            fulfilled: get(&self.fulfilled),
            rejected: get(&self.rejected),
            dead_lettered: get(&self.dead_lettered),
            already_decided: get(&self.already_decided),
            locks_lost: get(&self.locks_lost),
            stale_fences: get(&self.stale_fences),
            retries: get(&self.retries),
            recovered: get(&self.recovered),
        }
    }
}

impl Collector for WorkerStats {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let s = self.snapshot();
        let series = |label: &'static str, counts: [(&'static str, u64); 4]| {
            counts.map(|(value, count)| (vec![(label, value)], ConstCounter::new(count)))
        };
        encode_series(
            &mut encoder,
            "lockstock_worker_orders",
            "Orders this worker finished, by outcome.",
            MetricType::Counter,
            &series(
                "outcome",
                [
                    ("fulfilled", s.fulfilled),
                    ("rejected", s.rejected),
                    ("dead_lettered", s.dead_lettered),
                    ("already_decided", s.already_decided),
                ],
            ),
        )?;
        encode_series(
            &mut encoder,
            "lockstock_worker_events",
            "Worker events: locks lost before commit, stale fences refused, retries, recovered orders.",
            MetricType::Counter,
            &series(
                "event",
                [
                    ("lock_lost", s.locks_lost),
                    ("stale_fence", s.stale_fences),
                    ("retry", s.retries),
                    ("recovered", s.recovered),
                ],
            ),
        )?;
        let gauge = |value: &AtomicU64| {
            [(
                Vec::new(),
                ConstGauge::new(value.load(Ordering::Relaxed) as i64),
            )]
        };
        encode_series(
            &mut encoder,
            "lockstock_worker_reserved_messages",
            "Messages this worker reserved and has not acknowledged yet.",
            MetricType::Gauge,
            &gauge(&self.reserved_messages),
        )?;
        encode_series(
            &mut encoder,
            "lockstock_worker_reserved_bytes",
            "Bytes of the messages this worker reserved and has not acknowledged yet (bounded by --max-reserved-bytes).",
            MetricType::Gauge,
            &gauge(&self.reserved_bytes),
        )
    }
}

impl StatsSnapshot {
    /// Orders decided by this worker.
    pub fn decided(&self) -> u64 {
        self.fulfilled + self.rejected
    }
}
