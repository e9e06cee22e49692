//! `GET /`: the live page, one self-contained HTML file (`page.html`, embedded at compile time).
//!
//! - When a browser opens `/`, then it gets static HTML whose script polls `GET /products`,
//!   `GET /orders?limit=15`, `GET /locks`, `GET /queue` and `GET /metrics` every 1.5 s and
//!   redraws the tables: products and stock, recent orders with outcomes, held locks, queue depth
//!   and workers.
//! - The page keeps the last 5 minutes of its own samples and draws three inline SVG charts (no
//!   library): orders decided per second (fulfilled / rejected, from the `lockstock_orders`
//!   gauge), lock wait and hold p50/p99 over the last 30 s (interpolated from the
//!   `lockstock_lock_*_seconds` histogram buckets as Prometheus' `histogram_quantile` does), and
//!   queue depth (pending / in flight). Not guaranteed: history from before the page was opened.
//! - Every value is inserted as text (`textContent`), never as HTML, so order payloads or worker
//!   ids cannot inject markup. No build step, no external assets, no token needed (read-only).

use axum::{
    http::header,
    response::{Html, IntoResponse},
};

/// The page, embedded.
const PAGE: &str = include_str!("page.html");

/// `GET /`.
pub(crate) async fn index() -> impl IntoResponse {
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        Html(PAGE),
    )
}
