//! `GET /`: the live page, one self-contained HTML file (`page.html`, embedded at compile time).
//!
//! - When a browser opens `/`, then it gets static HTML whose script polls `GET /products`,
//!   `GET /orders?limit=15`, `GET /locks` and `GET /queue` every 1.5 s and redraws the tables:
//!   products and stock, recent orders with outcomes, held locks, queue depth and workers.
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
