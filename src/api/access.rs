//! Every request: an access log line, a status counter, and JSON for bare framework errors.
//!
//! - When a request ends, then one `debug` line records method, route pattern (not the raw URI:
//!   no query strings, no ids), status and latency; headers are never logged, so neither is the
//!   bearer token. Server errors are logged by [`super::error`] with their cause.
//! - When axum answers by itself with an empty body (405 method not allowed), then the body is
//!   replaced by `{"error": ...}` so every error is JSON.

use std::time::Instant;

use axum::{
    Json,
    extract::{MatchedPath, Request, State},
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::{AppState, error::ApiError};

/// The middleware (installed by [`super::app`]).
pub(crate) async fn observe(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "<unmatched>".to_owned(), |p| p.as_str().to_owned());
    let mut response = next.run(request).await;
    let status = response.status();
    if status == StatusCode::METHOD_NOT_ALLOWED
        && !response.headers().contains_key(header::CONTENT_TYPE)
    {
        let allow = response.headers().get(header::ALLOW).cloned();
        response = (
            StatusCode::METHOD_NOT_ALLOWED,
            Json(json!({ "error": "method not allowed" })),
        )
            .into_response();
        if let Some(allow) = allow {
            response.headers_mut().insert(header::ALLOW, allow);
        }
    }
    state.metrics().count_response(status);
    tracing::debug!(
        %method,
        route,
        status = status.as_u16(),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    response
}

/// The fallback for unknown paths: 404 in JSON.
pub(crate) async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".to_owned())
}
