//! [`MetricsRegistry`]: the `prometheus-client` registry of one app instance (an API, a worker).
//!
//! In-process metrics (the lock client's [`LockMetrics`], the API's [`ApiMetrics`], the worker's
//! [`WorkerStats`](super::WorkerStats)) are registered once when the app is built and share their
//! values with the code that records them. Scrape-time families (queue depth, decided orders,
//! dependency up) come from [`Readings`], taken just before encoding.
//!
//! - When [`MetricsRegistry::encode`] runs, then the text is the Prometheus text format 0.0.4
//!   ([`CONTENT_TYPE`]): counter families are declared under their `_total` name, no `# EOF`.
//! - There is no global registry: tests run several apps in one process, each with its own.
//! - Not guaranteed: one consistent instant; each family is read on its own.

use std::fmt;

use prometheus_client::{
    encoding::{DescriptorEncoder, EncodeMetric, prometheus_text},
    metrics::MetricType,
    registry::Registry,
};

use super::{ApiMetrics, Readings};
use lockstock_lock::LockMetrics;

/// The content type of the text exposition (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The prefix of every family we expose.
const PREFIX: &str = "lockstock";

/// One app instance's registry (see the module docs).
#[derive(Debug, Default)]
pub struct MetricsRegistry {
    /// Families registered once, read at every encoding.
    registry: Registry,
}

impl MetricsRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a lock client's families (`lockstock_lock_*`).
    pub fn register_locks(&mut self, locks: &LockMetrics) {
        locks.register(self.registry.sub_registry_with_prefix(PREFIX));
    }

    /// Registers the API's counters (`lockstock_api_*`).
    pub fn register_api(&mut self, api: &ApiMetrics) {
        api.register(self.registry.sub_registry_with_prefix(PREFIX));
    }

    /// Registers a collector that is read at every encoding (e.g. `Arc<WorkerStats>`); it names
    /// its families in full.
    pub fn register_collector(&mut self, collector: impl prometheus_client::collector::Collector) {
        self.registry.register_collector(Box::new(collector));
    }

    /// The exposition: every registered family, then `readings`' families.
    pub fn encode(&self, readings: Readings) -> String {
        let mut text = String::new();
        // The scrape-time families go through a registry of their own, built per scrape, so a
        // source that failed leaves its families out instead of showing stale values.
        let mut scrape = Registry::default();
        scrape.register_collector(Box::new(readings));
        for registry in [&self.registry, &scrape] {
            if let Err(error) = prometheus_text::encode(&mut text, registry) {
                // Writing to a String cannot fail; a collector that failed is logged.
                tracing::warn!(%error, "metrics: encoding a family failed");
            }
        }
        text
    }
}

/// A label set: `(name, value)` pairs.
pub(crate) type Labels<'a> = Vec<(&'a str, &'a str)>;

/// Writes one family of `kind` whose series are computed at encoding time (a collector's
/// `ConstCounter`s or `ConstGauge`s); `help` is written as given.
pub(crate) fn encode_series<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    series: &[(Labels<'_>, M)],
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, metric) in series {
        metric.encode(family.encode_family(labels)?)?;
    }
    Ok(())
}
