//! The HTTP API: the seed's Express server rebuilt on axum, grown into the operator's window.
//!
//! [`app`] builds the [`Router`] over an [`AppState`]; [`serve`] runs it on a bound listener
//! until a cancellation token fires. The `api` binary only parses flags, connects and calls
//! them; the tests drive the same `app` over `127.0.0.1:0` or with `oneshot`.
//!
//! | route | what | file |
//! |---|---|---|
//! | `POST /purchase/without-lock/{productId}` | the seed's unsafe read-wait-sell (oversells on purpose); only with [`ApiConfig::enable_unsafe_demo`] (`--enable-unsafe-demo`), else 404 | `purchase.rs` |
//! | `POST /purchase/with-lock/{productId}` | the same under the product's fenced lock, exactly as a worker does it | `purchase.rs` |
//! | `GET /stock/{productId}`, `POST /stock/{productId}/reset` | the seed's stock read and reset | `purchase.rs` |
//! | `GET /products` | every product with stock, price and fence | `purchase.rs` |
//! | `POST /orders`, `GET /orders/{id}`, `GET /orders` | enqueue for the workers; outcome or `pending`; recent outcomes | `orders.rs` |
//! | `GET /locks` | held locks: owner, age, TTL left, fencing token | `locks.rs` |
//! | `GET /queue` | pending, in flight per worker, dead letters | `queue.rs` |
//! | `GET /healthz`, `GET /readyz` | process up; Redis and Postgres reachable | `health.rs` |
//! | `GET /metrics` | Prometheus text (also served by workers with `--metrics-addr`) | `metrics.rs` |
//! | `GET /` | the live page (one self-contained HTML file) | `page.rs` |
//!
//! # Guarantees
//! - When a purchase goes through `/purchase/with-lock`, then it takes the lock named
//!   `product:<id>` (the resource the workers lock), claims the product row with the lock's
//!   fencing token before reading the stock, abandons the slow step when the lock's lost signal
//!   fires, and commits only while the row still carries its token. API purchases and queued
//!   orders for one product therefore exclude each other, and the locked path never oversells.
//! - When a synchronous purchase is decided, then it is recorded in `orders` under a fresh order
//!   id (returned as `order_id`), like a worker's decision, so `GET /orders/{id}` can audit it.
//! - When an API token is configured, then every mutating route (`POST`) needs
//!   `Authorization: Bearer <token>`; read-only routes stay open unless
//!   [`ApiConfig::token_for_reads`] is set (see [`auth`]).
//! - When a request comes from another site's page (foreign `Origin`), names a non-loopback
//!   `Host` in loopback mode, or sends a mutating body that is not JSON, then it is refused
//!   before any handler runs; when [`ApiConfig::max_in_flight`] requests are in flight, further
//!   ones get 503, the health probes excepted (see `guard.rs`).
//! - When a client does not finish its request head within [`ApiConfig::header_read_timeout`],
//!   then its connection is closed; at most [`ApiConfig::max_connections`] connections are open
//!   at once (see [`serve`]).
//! - When `/readyz` runs, then it asks Postgres over a pool of its own, so a pool exhausted by
//!   other requests cannot make the probe report Postgres down.
//! - When a request body exceeds [`ApiConfig::body_limit`], then 413 and nothing is done.
//! - When a request takes longer than [`ApiConfig::request_timeout`] (default 30 s), then the
//!   caller gets 408 with a JSON error and the handler is dropped, as if the client had
//!   disconnected (see below).
//! - Every request runs in a `tower-http` trace span (method and route pattern, never the raw
//!   URI) that logs its status and latency at `debug` (see `access.rs`).
//! - When anything fails on our side, then the caller gets a generic JSON error and the cause is
//!   logged, never returned (see [`error`]).
//! - When [`serve`]'s token is cancelled, then the server stops accepting connections and returns
//!   once the requests in flight are answered.
//!
//! # Not guaranteed
//! - `/purchase/without-lock` keeps the seed's race: concurrent calls oversell and drive the stock
//!   negative. That is its purpose.
//! - When a client disconnects mid-purchase, then its handler is dropped: a commit already made
//!   stays, one not yet made never happens, and the lock is released in the background.
//! - `GET /orders/{id}` answers `pending` for any id without an outcome, including ids never
//!   submitted: the queue is not searched.

mod access;
pub mod auth;
pub mod error;
mod guard;
mod idempotency;
pub mod locks;
mod metrics;
pub mod orders;
mod page;
pub mod purchase;
pub mod queue;
mod server;

mod health;

use std::{fmt, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, rejection::BytesRejection},
    http::StatusCode,
    middleware,
    routing::{get, post},
};
use serde::de::DeserializeOwned;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::Semaphore;
use tower_http::timeout::TimeoutLayer;

pub use self::{
    auth::{Authorized, BindError, check_bind},
    error::ApiError,
    server::serve,
};
use lockstock_lock::LockClient;

use crate::{
    observe::{ApiMetrics, MetricsRegistry, OrderCounts},
    order::ProductId,
    product_lock::ProductLocks,
    queue::JobQueue,
    store::OrderStore,
};

/// How the API behaves. `ApiConfig::default()` matches the `api` binary's defaults.
#[derive(Clone)]
pub struct ApiConfig {
    /// The seed's simulated slow step between reading the stock and selling. Default 100 ms.
    pub work: Duration,
    /// TTL of a product lock taken by a locked purchase (extended while held). Default 10 s.
    pub lock_ttl: Duration,
    /// How long a locked purchase waits for the product's lock before answering 503. Default
    /// 10 s (the seed gave up after ten growing retries, about 5.5 s).
    pub lock_wait: Duration,
    /// Bearer token required by mutating routes; `None` leaves them open (loopback only).
    pub token: Option<String>,
    /// Largest accepted request body, in bytes. Default 4 KiB.
    pub body_limit: usize,
    /// Recorded as the deciding `worker` on orders this API decides. Default `api-<host>-<pid>`.
    pub instance_id: String,
    /// How long any request may take before the API answers 408 and drops its handler (the
    /// `api` binary's `--request-timeout-ms`). Default 30 s.
    pub request_timeout: Duration,
    /// How long a connection may take to send a complete request head before it is closed
    /// (`--header-read-timeout-ms`). Default 10 s.
    pub header_read_timeout: Duration,
    /// Most connections open at once; beyond it new ones wait in the listen backlog
    /// (`--max-connections-open`). Default 1,024.
    pub max_connections: usize,
    /// Most requests handled at once; beyond it 503, except the health probes
    /// (`--max-in-flight`). Default 256.
    pub max_in_flight: usize,
    /// Whether reads (everything but `/`, `/healthz`, `/readyz`) need the token too, when one is
    /// configured (`--token-for-reads`). Default false.
    pub token_for_reads: bool,
    /// Whether the seed's unsafe `POST /purchase/without-lock/{id}` is served
    /// (`--enable-unsafe-demo`). Default false: 404.
    pub enable_unsafe_demo: bool,
    /// How long `/metrics` reuses the decided-order counts before counting again. Default 10 s.
    pub order_counts_ttl: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            work: Duration::from_millis(100),
            lock_ttl: Duration::from_secs(10),
            lock_wait: Duration::from_secs(10),
            token: None,
            body_limit: 4 * 1024,
            instance_id: format!(
                "api-{}-{}",
                gethostname::gethostname().to_string_lossy(),
                std::process::id()
            ),
            request_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_in_flight: 256,
            token_for_reads: false,
            enable_unsafe_demo: false,
            order_counts_ttl: Duration::from_secs(10),
        }
    }
}

impl fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiConfig")
            .field("work", &self.work)
            .field("lock_ttl", &self.lock_ttl)
            .field("lock_wait", &self.lock_wait)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("body_limit", &self.body_limit)
            .field("instance_id", &self.instance_id)
            .field("request_timeout", &self.request_timeout)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("max_connections", &self.max_connections)
            .field("max_in_flight", &self.max_in_flight)
            .field("token_for_reads", &self.token_for_reads)
            .field("enable_unsafe_demo", &self.enable_unsafe_demo)
            .field("order_counts_ttl", &self.order_counts_ttl)
            .finish()
    }
}

/// What every handler shares: the store, the lock client, the queue, settings and counters.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<StateInner>,
}

#[derive(Debug)]
struct StateInner {
    /// Products and outcomes in Postgres.
    store: OrderStore,
    /// The lock client on the queue's Redis: what `/locks`, `/readyz` and `/metrics` look at.
    locks: LockClient,
    /// Where locked purchases take product locks: built like the workers' (`LOCK_REDIS_URLS`),
    /// so purchases and queued orders for one product exclude each other.
    product_locks: ProductLocks,
    /// The producer's pending list (POST /orders pushes here) and the workers' bookkeeping.
    queue: JobQueue,
    /// Settings.
    config: ApiConfig,
    /// The API's own counters.
    metrics: ApiMetrics,
    /// This instance's metrics registry: the lock client's families and [`Self::metrics`].
    registry: MetricsRegistry,
    /// A one-connection store on the same database for `/readyz` only, so a pool exhausted by
    /// other requests cannot starve the probe.
    probe_store: OrderStore,
    /// Permits for requests in flight ([`ApiConfig::max_in_flight`]).
    in_flight: Semaphore,
    /// Decided-order counts for `/metrics`, cached for [`ApiConfig::order_counts_ttl`].
    order_counts: OrderCounts,
}

impl AppState {
    /// State over a store, a lock client (its key prefix must match the workers') and a queue
    /// handle on the producer's list.
    ///
    /// Locked purchases take product locks from `locks` (the single-instance mutex); see
    /// [`AppState::with_product_locks`] for Redlock.
    pub fn new(store: OrderStore, locks: LockClient, queue: JobQueue, config: ApiConfig) -> Self {
        let product_locks = ProductLocks::from(locks.clone());
        Self::with_product_locks(store, locks, product_locks, queue, config)
    }

    /// Like [`AppState::new`], with locked purchases taking product locks from `product_locks`
    /// (as the workers do: build both with [`crate::services::connect_product_locks`]).
    pub fn with_product_locks(
        store: OrderStore,
        locks: LockClient,
        product_locks: ProductLocks,
        queue: JobQueue,
        config: ApiConfig,
    ) -> Self {
        let metrics = ApiMetrics::default();
        let mut registry = MetricsRegistry::new();
        registry.register_locks(locks.metrics());
        registry.register_api(&metrics);
        let probe_pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(2))
            .connect_lazy_with((*store.pool().connect_options()).clone());
        let in_flight = Semaphore::new(config.max_in_flight.max(1));
        let order_counts = OrderCounts::new(store.clone(), config.order_counts_ttl);
        Self {
            inner: Arc::new(StateInner {
                probe_store: OrderStore::new(probe_pool),
                in_flight,
                order_counts,
                store,
                locks,
                product_locks,
                queue,
                config,
                metrics,
                registry,
            }),
        }
    }

    /// The order store.
    pub fn store(&self) -> &OrderStore {
        &self.inner.store
    }

    /// The lock client on the queue's Redis.
    pub fn locks(&self) -> &LockClient {
        &self.inner.locks
    }

    /// Where locked purchases take product locks.
    pub fn product_locks(&self) -> &ProductLocks {
        &self.inner.product_locks
    }

    /// The queue handle.
    pub fn queue(&self) -> &JobQueue {
        &self.inner.queue
    }

    /// The settings.
    pub fn config(&self) -> &ApiConfig {
        &self.inner.config
    }

    /// The API's own counters.
    pub fn metrics(&self) -> &ApiMetrics {
        &self.inner.metrics
    }

    /// This instance's metrics registry (what `GET /metrics` encodes).
    pub fn registry(&self) -> &MetricsRegistry {
        &self.inner.registry
    }

    /// The store `/readyz` pings (its own one-connection pool on the same database).
    pub(crate) fn probe_store(&self) -> &OrderStore {
        &self.inner.probe_store
    }

    /// Permits for requests in flight.
    pub(crate) fn in_flight(&self) -> &Semaphore {
        &self.inner.in_flight
    }

    /// The cached decided-order counts `/metrics` reports.
    pub(crate) fn order_counts(&self) -> &OrderCounts {
        &self.inner.order_counts
    }
}

/// The API's router over `state` (see the module docs for the routes).
///
/// Layers, outermost first: the trace span, the access middleware (status counter, JSON for bare
/// framework errors), the request guard (origin, host, content type, read token, in-flight cap),
/// the request timeout, the body limit.
pub fn app(state: AppState) -> Router {
    let body_limit = state.config().body_limit;
    let request_timeout = state.config().request_timeout;
    let mut router = Router::new();
    if state.config().enable_unsafe_demo {
        router = router.route(
            "/purchase/without-lock/{product_id}",
            post(purchase::without_lock),
        );
    }
    router
        .route("/", get(page::index))
        .route(
            "/purchase/with-lock/{product_id}",
            post(purchase::with_lock),
        )
        .route("/stock/{product_id}", get(purchase::stock))
        .route("/stock/{product_id}/reset", post(purchase::reset_stock))
        .route("/products", get(purchase::products))
        .route("/orders", get(orders::recent).post(orders::create))
        .route("/orders/{order_id}", get(orders::status))
        .route("/locks", get(locks::list))
        .route("/queue", get(queue::overview))
        .route("/healthz", get(health::live))
        .route("/readyz", get(health::ready))
        .route("/metrics", get(metrics::scrape))
        .fallback(access::not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), guard::check))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            access::observe,
        ))
        .layer(access::trace_layer())
        .with_state(state)
}

/// Parses a product id path segment: a positive 32-bit integer, else 400.
pub(crate) fn parse_product_id(raw: &str) -> Result<ProductId, ApiError> {
    raw.parse::<i64>()
        .ok()
        .and_then(|id| ProductId::try_from(id).ok())
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "product id must be a positive integer, got {:?}",
                truncate(raw, 40)
            ))
        })
}

/// Parses an optional JSON body: empty (or whitespace) means `T::default()`, so the seed's
/// `curl -X POST .../purchase/with-lock/1` works without a body or a content type.
pub(crate) fn parse_body<T: DeserializeOwned + Default>(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<T, ApiError> {
    let body = body.map_err(|rejection| ApiError::from_body(rejection, limit))?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&body).map_err(|e| {
        let message = e.to_string();
        // serde_json appends " at line L column C"; keep it short and about the input.
        let message = message
            .rsplit_once(" at line ")
            .map_or(message.as_str(), |(head, _)| head);
        ApiError::BadRequest(format!("invalid JSON body: {message}"))
    })
}

/// At most `max` characters of `text`, for echoing caller input in errors.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}
