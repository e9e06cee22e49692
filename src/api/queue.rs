//! `GET /queue`: the order queue as the workers see it.
//!
//! Answers `{"pending": n, "in_flight": n, "dead_letters": n, "live_workers": n, "workers":
//! [{"id", "alive", "in_flight"}], "recent_dead_letters": [{"payload", "reason", "worker",
//! "at"}]}` (see [`crate::observe::views::QueueView`]), with the newest
//! [`RECENT_DEAD_LETTERS`] dead letters.

use axum::{Json, extract::State};

use super::{AppState, error::ApiError};
use crate::observe::views::{QueueView, queue_view};

/// How many dead letters `GET /queue` shows.
pub const RECENT_DEAD_LETTERS: usize = 10;

/// `GET /queue`.
pub(crate) async fn overview(State(state): State<AppState>) -> Result<Json<QueueView>, ApiError> {
    Ok(Json(queue_view(state.queue(), RECENT_DEAD_LETTERS).await?))
}
