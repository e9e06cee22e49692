//! Metrics and the operator's status views, used by the worker, the API and `lockctl` alike.
//!
//! | file | what |
//! |---|---|
//! | `registry.rs` | [`MetricsRegistry`]: one `prometheus-client` registry per app instance, encoded as Prometheus text 0.0.4 |
//! | `readings.rs` | [`Readings`]: queue depth, decided orders and dependency up, read from Redis/Postgres per scrape |
//! | `api_metrics.rs` | [`ApiMetrics`]: the API's purchase and response counters |
//! | `worker_stats.rs` | [`WorkerStats`]: what a worker did, bumped by the worker, collected at scrape time |
//! | `serve.rs` | [`serve_worker_metrics`]: a worker's `/metrics` listener |
//! | `views/` | [`views::HeldLock`], [`views::QueueView`]: what is held and queued right now |
//! | `status.rs` | [`StatusReport`], [`dead_letters_table`]: `lockctl status` / `dead-letters list` |
//!
//! Every family keeps the name, type and labels it had when the encoder was hand-written:
//!
//! | family | type | from |
//! |---|---|---|
//! | `lockstock_lock_acquisitions_total` | counter | lock client ([`lockstock_lock::LockMetrics`]) |
//! | `lockstock_lock_acquire_timeouts_total` | counter | lock client |
//! | `lockstock_lock_acquire_failures_total` | counter | lock client |
//! | `lockstock_lock_losses_total` | counter | lock client |
//! | `lockstock_lock_acquire_wait_seconds` | histogram | lock client |
//! | `lockstock_lock_hold_seconds` | histogram | lock client |
//! | `lockstock_orders{status,reason}` | gauge | Postgres (API only) |
//! | `lockstock_worker_orders_total{outcome}` | counter | worker |
//! | `lockstock_worker_events_total{event}` | counter | worker |
//! | `lockstock_api_purchases_total{path,result}` | counter | API |
//! | `lockstock_api_responses_total{class}` | counter | API |
//! | `lockstock_queue_pending`, `_in_flight`, `_dead_letters`, `_live_workers` | gauge | Redis |
//! | `lockstock_dependency_up{dependency}` | gauge | this scrape |
//!
//! This module never imports `api` or `worker`: both call into it.
//!
//! # Example
//! ```
//! use std::sync::Arc;
//!
//! use lockstock::observe::{MetricsRegistry, Readings, WorkerStats};
//! use lockstock_lock::LockMetrics;
//!
//! // One registry per app instance; the values stay shared with whoever records them.
//! let locks = LockMetrics::default();
//! let stats = Arc::new(WorkerStats::default());
//! let mut registry = MetricsRegistry::new();
//! registry.register_locks(&locks);
//! registry.register_collector(stats.clone());
//! stats.fulfilled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
//!
//! // At scrape time: read Redis/Postgres into `Readings` (here: nothing), then encode.
//! let text = registry.encode(Readings::default());
//! assert!(text.contains("lockstock_lock_acquisitions_total 0"));
//! assert!(text.contains(r#"lockstock_worker_orders_total{outcome="fulfilled"} 1"#));
//! ```

mod api_metrics;
mod readings;
mod registry;
mod serve;
mod status;
pub mod views;
mod worker_stats;

pub use self::{
    api_metrics::ApiMetrics,
    readings::{OrderCounts, Readings, decided_orders},
    registry::{CONTENT_TYPE, MetricsRegistry},
    serve::{WorkerMetrics, serve_worker_metrics, worker_metrics_app},
    status::{StatusError, StatusReport, dead_letters_table, escape_control},
    worker_stats::{StatsSnapshot, WorkerStats},
};
