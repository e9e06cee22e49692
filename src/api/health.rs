//! Liveness and readiness probes.
//!
//! - `GET /healthz` → 200 `{"status": "ok"}` whenever the process serves HTTP at all.
//! - `GET /readyz` → 200 `{"status": "ready", "redis": "ok", "postgres": "ok"}` when Redis answers
//!   `PING` and Postgres answers `SELECT 1`, each within 2 s; otherwise 503 with the failing one
//!   marked `"unavailable"`. The cause is logged at `warn`, never returned.
//! - Postgres is asked over the API's probe pool (one connection of its own), so requests that
//!   hold every connection of the main pool cannot make the probe time out; `/healthz` and
//!   `/readyz` are also exempt from the cap on requests in flight.

use std::time::Duration;

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use serde_json::json;

use super::AppState;
use crate::telemetry::cause_chain;

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /healthz`.
pub(crate) async fn live() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`.
pub(crate) async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let redis = async {
        let mut conn = state.locks().connection();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| cause_chain(&e))
    };
    let postgres = async {
        state
            .probe_store()
            .ping()
            .await
            .map_err(|e| cause_chain(&e))
    };
    let (redis, postgres) = tokio::join!(
        tokio::time::timeout(PROBE_TIMEOUT, redis),
        tokio::time::timeout(PROBE_TIMEOUT, postgres)
    );
    let verdict = |name: &str, result: Result<Result<(), String>, _>| match result {
        Ok(Ok(())) => "ok",
        Ok(Err(error)) => {
            tracing::warn!(dependency = name, error.cause_chain = %error, "readiness probe failed");
            "unavailable"
        }
        Err(_) => {
            tracing::warn!(dependency = name, "readiness probe timed out");
            "unavailable"
        }
    };
    let redis = verdict("redis", redis);
    let postgres = verdict("postgres", postgres);
    let ready = redis == "ok" && postgres == "ok";
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if ready { "ready" } else { "unavailable" },
            "redis": redis,
            "postgres": postgres,
        })),
    )
}
