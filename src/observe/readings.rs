//! [`Readings`]: the families read from Redis and Postgres at scrape time.
//!
//! | family | type | from |
//! |---|---|---|
//! | `lockstock_queue_pending`, `_in_flight`, `_dead_letters`, `_live_workers` | gauge | Redis |
//! | `lockstock_orders{status,reason}` | gauge | Postgres ([`decided_orders`] through [`OrderCounts`]; API only) |
//! | `lockstock_dependency_up{dependency}` | gauge | this scrape |
//!
//! - When Redis or Postgres fails during a scrape, then the families it feeds are left out,
//!   `lockstock_dependency_up` says which one failed, and the scrape still succeeds: a broken
//!   dependency must not blind the monitoring of everything else.
//! - When several scrapes arrive within [`OrderCounts`]'s time to live, then Postgres is counted
//!   once: the `GROUP BY` over every order runs at most once per TTL whatever the scrape rate or
//!   the number of concurrent scrapers (they wait for the one count in progress).
//! - Not guaranteed: one consistent instant; each source is read on its own, and the order counts
//!   may be up to one TTL old.

use std::{
    fmt,
    time::{Duration, Instant},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, gauge::ConstGauge},
};

use super::registry::{Labels, encode_series};
use crate::telemetry::cause_chain;

use crate::{
    queue::{JobQueue, QueueStats},
    store::{OrderStore, OutcomeCount, StoreError},
};

/// What one scrape read from the outside world (see the module docs).
#[derive(Debug, Default)]
pub struct Readings {
    /// The queue's depth, when Redis answered.
    queue: Option<QueueStats>,
    /// Decided orders by status and reason, when Postgres answered (API only).
    orders: Option<Vec<OutcomeCount>>,
    /// `(dependency, answered)` for each source read.
    dependencies: Vec<(&'static str, bool)>,
}

impl Readings {
    /// What the API exposes: the queue and the decided orders (cached, see [`OrderCounts`]).
    pub async fn for_api(queue: &JobQueue, counts: &OrderCounts) -> Self {
        let mut readings = Self::default();
        readings.read_queue(queue).await;
        readings.orders = match counts.get().await {
            Ok(counts) => Some(counts),
            Err(error) => {
                tracing::warn!(error.cause_chain = %cause_chain(&error), "metrics: counting orders failed");
                None
            }
        };
        readings
            .dependencies
            .push(("postgres", readings.orders.is_some()));
        readings
    }

    /// What a worker exposes: the queue.
    pub async fn for_worker(queue: &JobQueue) -> Self {
        let mut readings = Self::default();
        readings.read_queue(queue).await;
        readings
    }

    async fn read_queue(&mut self, queue: &JobQueue) {
        self.queue = match queue.stats().await {
            Ok(stats) => Some(stats),
            Err(error) => {
                tracing::warn!(error.cause_chain = %cause_chain(&error), "metrics: reading the queue failed");
                None
            }
        };
        self.dependencies.push(("redis", self.queue.is_some()));
    }
}

/// Decided orders by status and reason: the one place the `lockstock_orders` gauge is read
/// (a `GROUP BY` over every order; [`OrderCounts`] keeps it from running per scrape).
pub async fn decided_orders(store: &OrderStore) -> Result<Vec<OutcomeCount>, StoreError> {
    store.outcome_counts().await
}

/// [`decided_orders`], counted at most once per time to live.
///
/// - When the last count is younger than the TTL, then it is returned without touching Postgres.
/// - When several callers find it stale at once, then one counts and the others wait for and
///   share its result (a failed count is not cached: the next caller tries again).
#[derive(Debug)]
pub struct OrderCounts {
    /// Where to count.
    store: OrderStore,
    /// How long one count is reused.
    ttl: Duration,
    /// The last count and when it was taken; the lock also makes concurrent callers share one.
    last: tokio::sync::Mutex<Option<(Instant, Vec<OutcomeCount>)>>,
}

impl OrderCounts {
    /// Counts over `store`, reused for `ttl`.
    pub fn new(store: OrderStore, ttl: Duration) -> Self {
        Self {
            store,
            ttl,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// The counts, from the cache when fresh.
    pub async fn get(&self) -> Result<Vec<OutcomeCount>, StoreError> {
        let mut last = self.last.lock().await;
        if let Some((taken, counts)) = last.as_ref()
            && taken.elapsed() < self.ttl
        {
            return Ok(counts.clone());
        }
        let counts = decided_orders(&self.store).await?;
        *last = Some((Instant::now(), counts.clone()));
        Ok(counts)
    }
}

/// A count as a gauge value.
fn gauge_value(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

impl Collector for Readings {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        if let Some(stats) = &self.queue {
            for (name, help, value) in [
                (
                    "lockstock_queue_pending",
                    "Orders waiting in the pending list.",
                    stats.pending,
                ),
                (
                    "lockstock_queue_in_flight",
                    "Orders reserved by registered workers and not yet acknowledged.",
                    stats.processing,
                ),
                (
                    "lockstock_queue_dead_letters",
                    "Entries in the dead letter list.",
                    stats.dead,
                ),
                (
                    "lockstock_queue_live_workers",
                    "Registered workers whose liveness key exists.",
                    stats.live_workers,
                ),
            ] {
                let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
                ConstGauge::new(gauge_value(value)).encode(metric)?;
            }
        }
        if let Some(counts) = &self.orders {
            let series: Vec<(Labels<'_>, ConstGauge)> = counts
                .iter()
                .map(|c| {
                    let labels = vec![
                        ("status", c.status.as_str()),
                        ("reason", c.reason.as_deref().unwrap_or("")),
                    ];
                    (labels, ConstGauge::new(c.count))
                })
                .collect();
            encode_series(
                &mut encoder,
                "lockstock_orders",
                "Decided orders in Postgres by status and reject reason.",
                MetricType::Gauge,
                &series,
            )?;
        }
        let series: Vec<(Labels<'_>, ConstGauge)> = self
            .dependencies
            .iter()
            .map(|(name, up)| (vec![("dependency", *name)], ConstGauge::new(i64::from(*up))))
            .collect();
        encode_series(
            &mut encoder,
            "lockstock_dependency_up",
            "Whether the dependency answered during this scrape (1) or not (0).",
            MetricType::Gauge,
            &series,
        )
    }
}
