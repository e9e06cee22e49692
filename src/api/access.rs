//! Every request: a trace span with its outcome, a status counter, and JSON for bare framework
//! errors.
//!
//! - When a request arrives, then [`trace_layer`] opens a `request` span with the method and the
//!   route pattern (not the raw URI: no query strings, no ids) and, when it ends, logs status and
//!   latency at `debug`; headers are never logged, so neither is the bearer token. Server errors
//!   are logged by [`super::error`] with their cause.
//! - When the request timeout fires, then a `warn` line names the route.
//! - When axum or a layer answers by itself with an empty body (405 method not allowed, 408
//!   request timeout), then the body is replaced by `{"error": ...}` so every error is JSON.

use axum::{
    Json,
    extract::{MatchedPath, Request, State},
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde_json::json;
use tower_http::{
    classify::{ServerErrorsAsFailures, SharedClassifier},
    trace::{DefaultOnResponse, TraceLayer},
};
use tracing::{Level, Span};

use super::{AppState, error::ApiError};

/// The route pattern of a request, or `<unmatched>`.
fn route(request: &Request) -> String {
    request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "<unmatched>".to_owned(), |p| p.as_str().to_owned())
}

/// The `request` span: method and route pattern.
fn request_span(request: &Request) -> Span {
    tracing::debug_span!("request", method = %request.method(), route = route(request))
}

/// [`trace_layer`]'s type: our span, the default response line, nothing else.
type RequestTrace = TraceLayer<
    SharedClassifier<ServerErrorsAsFailures>,
    fn(&Request) -> Span,
    (),
    DefaultOnResponse,
    (),
    (),
    (),
>;

/// The request span (installed by [`super::app`]).
pub(crate) fn trace_layer() -> RequestTrace {
    TraceLayer::new_for_http()
        .make_span_with(request_span as fn(&Request) -> Span)
        .on_request(())
        .on_response(
            DefaultOnResponse::new()
                .level(Level::DEBUG)
                .latency_unit(tower_http::LatencyUnit::Millis),
        )
        .on_body_chunk(())
        .on_eos(())
        // Server errors are logged with their cause by `error.rs`.
        .on_failure(())
}

/// The middleware (installed by [`super::app`]).
pub(crate) async fn observe(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let route = route(&request);
    let mut response = next.run(request).await;
    let status = response.status();
    let bare = !response.headers().contains_key(header::CONTENT_TYPE);
    if bare && status == StatusCode::METHOD_NOT_ALLOWED {
        let allow = response.headers().get(header::ALLOW).cloned();
        response = (status, Json(json!({ "error": "method not allowed" }))).into_response();
        if let Some(allow) = allow {
            response.headers_mut().insert(header::ALLOW, allow);
        }
    } else if bare && status == StatusCode::REQUEST_TIMEOUT {
        tracing::warn!(route, "request timed out; its handler was dropped");
        response = (status, Json(json!({ "error": "request timed out" }))).into_response();
    }
    state.metrics().count_response(status);
    response
}

/// The fallback for unknown paths: 404 in JSON.
pub(crate) async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".to_owned())
}
