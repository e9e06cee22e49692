//! What a request must look like before any handler sees it: the defences against other web
//! pages in the user's browser, and the cap on requests in flight.
//!
//! - When a request carries an `Origin` that is not the origin it was sent to (its `Host`), or
//!   `Origin: null`, then 403: a page on another site cannot drive the API through the user's
//!   browser. curl sends no `Origin`; the live page's own requests carry the page's origin.
//! - When no API token is configured (loopback mode) and the `Host` header names anything but
//!   `localhost`, `127.0.0.1` or `[::1]` with the port the server is bound to, then 403: a
//!   DNS-rebinding page (its own name resolving to 127.0.0.1) cannot read or change anything.
//!   A request without a `Host` (HTTP/1.0) is let through; browsers always send one.
//! - When a mutating request (any method but `GET`, `HEAD`, `OPTIONS`) has a body, then its
//!   `Content-Type` must be `application/json`, else 415; a `Content-Type` other than JSON is
//!   refused even on an empty body. Browsers can send `text/plain` and form bodies cross-site
//!   without a CORS preflight, never `application/json`. `curl -X POST url` (no body, no type)
//!   keeps working.
//! - When [`ApiConfig::token_for_reads`](super::ApiConfig::token_for_reads) is set and a token is
//!   configured, then reads need the bearer token too, except `/` (static HTML), `/healthz` and
//!   `/readyz`.
//! - When [`ApiConfig::max_in_flight`](super::ApiConfig::max_in_flight) requests are being
//!   handled, then further requests get 503 with `Retry-After: 1` at once, except `/healthz` and
//!   `/readyz`, which are never counted nor refused: a flood cannot blind the probes.
//! - Not guaranteed: CSRF protection for clients that are not browsers (they are not subject to
//!   it); behind a reverse proxy, forward the original `Host` so the `Origin` check compares
//!   like with like.

use axum::{
    extract::{Request, State},
    http::{HeaderMap, Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{AppState, auth::bearer_matches, error::ApiError};

/// The port the server is bound to, attached to every request by [`super::serve`]; without it
/// (a test driving [`super::app`] directly) the `Host` port is not checked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BoundPort(pub(crate) u16);

/// Routes that are never refused for load or a missing read token.
fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz")
}

/// The middleware (installed by [`super::app`]).
pub(crate) async fn check(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Err(error) = admit(&state, &request) {
        return error.into_response();
    }
    if is_probe(request.uri().path()) {
        return next.run(request).await;
    }
    let Ok(_permit) = state.in_flight().try_acquire() else {
        tracing::warn!("request refused: the cap on requests in flight is reached");
        return ApiError::Busy.into_response();
    };
    next.run(request).await
}

/// Every check but the load cap, in the order of the module docs.
fn admit(state: &AppState, request: &Request) -> Result<(), ApiError> {
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .map(|value| value.to_str().unwrap_or("\u{0}"));
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("null");
        let same = host.is_some_and(|host| same_origin(origin, host));
        if !same {
            return Err(ApiError::Forbidden(
                "cross-origin requests are refused".to_owned(),
            ));
        }
    }
    let token = state.config().token.as_deref();
    if token.is_none() {
        let port = request.extensions().get::<BoundPort>().map(|p| p.0);
        if let Some(host) = host
            && !is_loopback_host(host, port)
        {
            return Err(ApiError::Forbidden(
                "this server answers only to localhost, 127.0.0.1 and [::1]".to_owned(),
            ));
        }
    }
    let method = request.method();
    let reads = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if !reads && !json_or_empty(headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    if let Some(token) = token
        && reads
        && state.config().token_for_reads
        && !matches!(request.uri().path(), "/" | "/healthz" | "/readyz")
        && !bearer_matches(headers, token)
    {
        return Err(ApiError::Unauthorized);
    }
    Ok(())
}

/// Whether `origin` (`scheme://host[:port]`) names the same authority as `host`.
fn same_origin(origin: &str, host: &str) -> bool {
    origin
        .split_once("://")
        .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
}

/// Whether a `Host` value is a loopback name, with the bound port when one is known (no port in
/// the header means 80).
fn is_loopback_host(host: &str, bound: Option<u16>) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !port.contains(']') => (name, port.parse::<u16>().ok()),
        _ => (host, Some(80)),
    };
    let loopback = ["localhost", "127.0.0.1", "[::1]"]
        .iter()
        .any(|allowed| name.eq_ignore_ascii_case(allowed));
    let port_ok = match (bound, port) {
        (None, _) => true,
        (Some(bound), Some(port)) => bound == port,
        (Some(_), None) => false,
    };
    loopback && port_ok
}

/// Whether a mutating request's body is JSON, or absent and untyped.
fn json_or_empty(headers: &HeaderMap) -> bool {
    match headers.get(header::CONTENT_TYPE) {
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|value| value.split(';').next())
            .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json")),
        None => {
            let chunked = headers.contains_key(header::TRANSFER_ENCODING);
            let length = headers
                .get(header::CONTENT_LENGTH)
                .and_then(|value| value.to_str().ok())
                .map_or(Some(0), |value| value.trim().parse::<u64>().ok());
            !chunked && length == Some(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_need_the_bound_port() {
        for host in [
            "localhost:3000",
            "127.0.0.1:3000",
            "[::1]:3000",
            "LOCALHOST:3000",
        ] {
            assert!(is_loopback_host(host, Some(3000)), "{host}");
            assert!(is_loopback_host(host, None), "{host}");
        }
        for host in [
            "localhost:3001",
            "evil.example:3000",
            "127.0.0.1.evil.example:3000",
            "localhost",
            "[::1]",
        ] {
            assert!(!is_loopback_host(host, Some(3000)), "{host}");
        }
        assert!(is_loopback_host("localhost", Some(80)));
    }

    #[test]
    fn origins_match_their_host_only() {
        assert!(same_origin("http://127.0.0.1:3000", "127.0.0.1:3000"));
        assert!(!same_origin("http://evil.example", "127.0.0.1:3000"));
        assert!(!same_origin("null", "127.0.0.1:3000"));
    }
}
