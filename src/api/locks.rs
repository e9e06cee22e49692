//! `GET /locks`: the locks held right now, for operators.
//!
//! Answers `{"locks": [{"resource", "owner": {"id", "host", "pid"}, "fence", "age_ms",
//! "ttl_left_ms"}]}`, sorted by resource (see [`crate::observe::views::HeldLock`]). The secret
//! token is never shown.

use axum::{Json, extract::State};

use super::{AppState, error::ApiError};
use crate::observe::views::held_locks;

/// `GET /locks`.
pub(crate) async fn list(
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let locks = held_locks(state.locks()).await?;
    Ok(Json(serde_json::json!({ "locks": locks })))
}
