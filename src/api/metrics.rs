//! Prometheus metrics: `GET /metrics` on the API, and the same families from each worker
//! (`worker --metrics-addr`).
//!
//! A tiny hand-written exposition (text format 0.0.4): the counters live where the work happens
//! (the lock client's [`LockMetrics`](lockstock_lock::LockMetrics), the worker's
//! [`WorkerStats`], [`ApiMetrics`]) and are read at scrape time, together with the queue depth
//! from Redis and the decided orders from Postgres.
//!
//! | family | type | from |
//! |---|---|---|
//! | `lockstock_lock_acquisitions_total` | counter | lock client |
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
//! - When Redis or Postgres fails during a scrape, then the families it feeds are left out,
//!   `lockstock_dependency_up` says which one failed, and the scrape still answers 200: a broken
//!   dependency must not blind the monitoring of everything else.
//! - Not guaranteed: one consistent instant; each source is read on its own.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::AppState;
use crate::{
    queue::JobQueue,
    store::OutcomeCount,
    worker::{StatsSnapshot, WorkerStats},
};
use lockstock_lock::{HistogramSnapshot, LockClient, LockMetricsSnapshot};

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The API's own counters: purchases by path and result, responses by status class.
#[derive(Debug, Default)]
pub struct ApiMetrics {
    /// `(path, result)` → count.
    purchases: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// Responses by status class (index 1..=5 for 1xx..5xx).
    responses: [AtomicU64; 6],
}

impl ApiMetrics {
    /// Counts one purchase on `path` (`with-lock` / `without-lock`) ending in `result`.
    pub(crate) fn count_purchase(&self, path: &'static str, result: &'static str) {
        let mut purchases = self.purchases.lock().unwrap_or_else(|p| p.into_inner());
        *purchases.entry((path, result)).or_default() += 1;
    }

    /// Counts one response.
    pub(crate) fn count_response(&self, status: StatusCode) {
        let class = usize::from(status.as_u16() / 100).min(5);
        self.responses[class].fetch_add(1, Ordering::Relaxed);
    }

    fn purchases(&self) -> Vec<((&'static str, &'static str), u64)> {
        let purchases = self.purchases.lock().unwrap_or_else(|p| p.into_inner());
        purchases.iter().map(|(k, v)| (*k, *v)).collect()
    }
}

/// Builds a text exposition, one metric family at a time.
#[derive(Debug, Default)]
pub struct TextEncoder {
    out: String,
}

/// A label set: `(name, value)` pairs.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

impl TextEncoder {
    /// An empty exposition.
    pub fn new() -> Self {
        Self::default()
    }

    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: Labels<'_>, value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape_label(val));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A counter family (`name` should end in `_total`).
    pub fn counter(&mut self, name: &str, help: &str, samples: &[(Labels<'_>, u64)]) {
        self.header(name, "counter", help);
        for (labels, value) in samples {
            self.sample(name, labels, value);
        }
    }

    /// A gauge family.
    pub fn gauge(&mut self, name: &str, help: &str, samples: &[(Labels<'_>, f64)]) {
        self.header(name, "gauge", help);
        for (labels, value) in samples {
            self.sample(name, labels, value);
        }
    }

    /// A histogram family with one (unlabelled) series.
    pub fn histogram(&mut self, name: &str, help: &str, histogram: &HistogramSnapshot) {
        self.header(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        for (bound, count) in histogram.bounds.iter().zip(&histogram.cumulative) {
            let le = bound.to_string();
            self.sample(&bucket, &[("le", &le)], count);
        }
        self.sample(&bucket, &[("le", "+Inf")], histogram.count());
        self.sample(&format!("{name}_sum"), &[], histogram.sum_seconds);
        self.sample(&format!("{name}_count"), &[], histogram.count());
    }

    /// The exposition text.
    pub fn finish(self) -> String {
        self.out
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Writes the lock families.
pub fn encode_lock(encoder: &mut TextEncoder, lock: &LockMetricsSnapshot) {
    encoder.counter(
        "lockstock_lock_acquisitions_total",
        "Lock acquisitions that got the lock.",
        &[(&[], lock.acquisitions)],
    );
    encoder.counter(
        "lockstock_lock_acquire_timeouts_total",
        "Lock acquisitions that gave up at their deadline (or found the lock held, for try_acquire).",
        &[(&[], lock.timeouts)],
    );
    encoder.counter(
        "lockstock_lock_acquire_failures_total",
        "Lock acquisitions that failed with an error (Redis unreachable, bad argument).",
        &[(&[], lock.failures)],
    );
    encoder.counter(
        "lockstock_lock_losses_total",
        "Held locks whose lost signal fired (expired, taken, or safety deadline passed).",
        &[(&[], lock.losses)],
    );
    encoder.histogram(
        "lockstock_lock_acquire_wait_seconds",
        "Time successful lock acquisitions took, including waiting for the holder.",
        &lock.acquire_wait,
    );
    encoder.histogram(
        "lockstock_lock_hold_seconds",
        "Time locks were held, from grant to release.",
        &lock.hold_time,
    );
}

/// Writes the queue gauges from a queue handle; `false` when Redis failed.
pub async fn encode_queue(encoder: &mut TextEncoder, queue: &JobQueue) -> bool {
    match queue.stats().await {
        Ok(stats) => {
            let gauges = [
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
            ];
            for (name, help, value) in gauges {
                encoder.gauge(name, help, &[(&[], value as f64)]);
            }
            true
        }
        Err(error) => {
            tracing::warn!(%error, "metrics: reading the queue failed");
            false
        }
    }
}

/// Writes the decided-orders gauge from Postgres' counts.
pub fn encode_orders(encoder: &mut TextEncoder, counts: &[OutcomeCount]) {
    let mut samples: Vec<(Vec<(&str, &str)>, f64)> = Vec::new();
    for count in counts {
        samples.push((
            vec![
                ("status", count.status.as_str()),
                ("reason", count.reason.as_deref().unwrap_or("")),
            ],
            count.count as f64,
        ));
    }
    let samples: Vec<(Labels<'_>, f64)> = samples
        .iter()
        .map(|(labels, value)| (labels.as_slice(), *value))
        .collect();
    encoder.gauge(
        "lockstock_orders",
        "Decided orders in Postgres by status and reject reason.",
        &samples,
    );
}

/// Writes a worker's counters.
pub fn encode_worker(encoder: &mut TextEncoder, stats: &StatsSnapshot) {
    encoder.counter(
        "lockstock_worker_orders_total",
        "Orders this worker finished, by outcome.",
        &[
            (&[("outcome", "fulfilled")], stats.fulfilled),
            (&[("outcome", "rejected")], stats.rejected),
            (&[("outcome", "dead_lettered")], stats.dead_lettered),
            (&[("outcome", "already_decided")], stats.already_decided),
        ],
    );
    encoder.counter(
        "lockstock_worker_events_total",
        "Worker events: locks lost before commit, stale fences refused, retries, recovered orders.",
        &[
            (&[("event", "lock_lost")], stats.locks_lost),
            (&[("event", "stale_fence")], stats.stale_fences),
            (&[("event", "retry")], stats.retries),
            (&[("event", "recovered")], stats.recovered),
        ],
    );
}

fn encode_up(encoder: &mut TextEncoder, up: &[(&str, bool)]) {
    let samples: Vec<(Vec<(&str, &str)>, f64)> = up
        .iter()
        .map(|(name, ok)| (vec![("dependency", *name)], if *ok { 1.0 } else { 0.0 }))
        .collect();
    let samples: Vec<(Labels<'_>, f64)> = samples
        .iter()
        .map(|(labels, value)| (labels.as_slice(), *value))
        .collect();
    encoder.gauge(
        "lockstock_dependency_up",
        "Whether the dependency answered during this scrape (1) or not (0).",
        &samples,
    );
}

fn text_response(body: String) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body)
}

/// Renders the API's metrics.
pub async fn render_api(state: &AppState) -> String {
    let mut encoder = TextEncoder::new();
    encode_lock(&mut encoder, &state.locks().metrics().snapshot());
    let redis_up = encode_queue(&mut encoder, state.queue()).await;
    let postgres_up = match state.store().outcome_counts().await {
        Ok(counts) => {
            encode_orders(&mut encoder, &counts);
            true
        }
        Err(error) => {
            tracing::warn!(%error, "metrics: counting orders failed");
            false
        }
    };
    let metrics = state.metrics();
    let purchases = metrics.purchases();
    let labels: Vec<[(&str, &str); 2]> = purchases
        .iter()
        .map(|((path, result), _)| [("path", *path), ("result", *result)])
        .collect();
    let samples: Vec<(Labels<'_>, u64)> = labels
        .iter()
        .zip(&purchases)
        .map(|(labels, (_, count))| (labels.as_slice(), *count))
        .collect();
    encoder.counter(
        "lockstock_api_purchases_total",
        "Synchronous purchases by path (with-lock, without-lock) and result.",
        &samples,
    );
    let classes = ["1xx", "2xx", "3xx", "4xx", "5xx"];
    let responses: Vec<([(&str, &str); 1], u64)> = classes
        .iter()
        .enumerate()
        .map(|(i, class)| {
            (
                [("class", *class)],
                metrics.responses[i + 1].load(Ordering::Relaxed),
            )
        })
        .collect();
    let samples: Vec<(Labels<'_>, u64)> = responses
        .iter()
        .map(|(labels, count)| (labels.as_slice(), *count))
        .collect();
    encoder.counter(
        "lockstock_api_responses_total",
        "HTTP responses by status class.",
        &samples,
    );
    encode_up(
        &mut encoder,
        &[("redis", redis_up), ("postgres", postgres_up)],
    );
    encoder.finish()
}

/// `GET /metrics` on the API.
pub(crate) async fn scrape(State(state): State<AppState>) -> impl IntoResponse {
    text_response(render_api(&state).await)
}

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

impl WorkerMetrics {
    /// Renders the worker's metrics.
    pub async fn render(&self) -> String {
        let mut encoder = TextEncoder::new();
        encode_lock(&mut encoder, &self.locks.metrics().snapshot());
        encode_worker(&mut encoder, &self.stats.snapshot());
        let redis_up = encode_queue(&mut encoder, &self.queue).await;
        encode_up(&mut encoder, &[("redis", redis_up)]);
        encoder.finish()
    }
}

/// A router with `GET /metrics` (and `GET /healthz`) for a worker.
pub fn worker_metrics_app(metrics: WorkerMetrics) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(metrics): State<WorkerMetrics>| async move {
                text_response(metrics.render().await)
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .with_state(metrics)
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

#[cfg(test)]
mod tests {
    use super::*;
    use lockstock_lock::LockMetrics;

    /// Label values are escaped and histograms end with +Inf, _sum and _count.
    #[test]
    fn exposition_escapes_and_closes_histograms() {
        let mut encoder = TextEncoder::new();
        encoder.counter("x_total", "help", &[(&[("a", "q\"uo\\te\n")], 3)]);
        encode_lock(&mut encoder, &LockMetrics::default().snapshot());
        let text = encoder.finish();
        assert!(text.contains(r#"x_total{a="q\"uo\\te\n"} 3"#), "{text}");
        assert!(text.contains(r#"lockstock_lock_hold_seconds_bucket{le="+Inf"} 0"#));
        assert!(text.contains("lockstock_lock_hold_seconds_count 0"));
    }
}
