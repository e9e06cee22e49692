//! A worker's `/metrics` listener (`worker --metrics-addr`): the same lock families as the API,
//! the worker's own counters, and the queue depth.
//!
//! - When [`serve_worker_metrics`] runs, then `GET /metrics` answers the Prometheus text of the
//!   worker's [`MetricsRegistry`] plus the queue [`Readings`], and `GET /healthz` answers `ok`.
//! - When `shutdown` is cancelled, then the listener stops after the scrapes in flight.

use std::sync::Arc;

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{CONTENT_TYPE, MetricsRegistry, Readings, WorkerStats};
use crate::queue::JobQueue;
use lockstock_lock::LockClient;

/// What a worker process exposes on `--metrics-addr`.
#[derive(Debug, Clone)]
pub struct WorkerMetrics {
    /// The worker's lock client.
    pub locks: LockClient,
    /// The worker's counters ([`crate::worker::Worker::stats`]).
    pub stats: Arc<WorkerStats>,
    /// A handle on the worker's queue (for the depth gauges).
    pub queue: JobQueue,
}

/// The listener's state: the registry built once, and the queue read per scrape.
#[derive(Debug, Clone)]
struct Exposed {
    /// Lock families and the worker's counters.
    registry: Arc<MetricsRegistry>,
    /// For the depth gauges.
    queue: JobQueue,
}

impl WorkerMetrics {
    /// The worker's registry: its lock client's families and its counters.
    pub fn registry(&self) -> MetricsRegistry {
        let mut registry = MetricsRegistry::new();
        registry.register_locks(self.locks.metrics());
        registry.register_collector(self.stats.clone());
        registry
    }
}

/// A router with `GET /metrics` (and `GET /healthz`) for a worker.
pub fn worker_metrics_app(metrics: WorkerMetrics) -> Router {
    let exposed = Exposed {
        registry: Arc::new(metrics.registry()),
        queue: metrics.queue,
    };
    Router::new()
        .route(
            "/metrics",
            get(|State(exposed): State<Exposed>| async move {
                let readings = Readings::for_worker(&exposed.queue).await;
                (
                    [(header::CONTENT_TYPE, CONTENT_TYPE)],
                    exposed.registry.encode(readings),
                )
                    .into_response()
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .with_state(exposed)
}

/// Serves [`worker_metrics_app`] on `listener` until `shutdown` is cancelled.
pub async fn serve_worker_metrics(
    listener: TcpListener,
    metrics: WorkerMetrics,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, worker_metrics_app(metrics))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
