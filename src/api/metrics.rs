//! `GET /metrics`: the API's Prometheus text (format 0.0.4).
//!
//! The families, their names and where they come from are listed in [`crate::observe`]; this
//! route only reads the scrape-time [`Readings`] and encodes the app's registry with them.
//!
//! - When Redis or Postgres fails during a scrape, then the families it feeds are left out,
//!   `lockstock_dependency_up` says which one failed, and the scrape still answers 200.

use axum::{extract::State, http::header, response::IntoResponse};

use super::AppState;
use crate::observe::{CONTENT_TYPE, Readings};

/// `GET /metrics` on the API.
pub(crate) async fn scrape(State(state): State<AppState>) -> impl IntoResponse {
    let readings = Readings::for_api(state.queue(), state.order_counts()).await;
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        state.registry().encode(readings),
    )
}
