//! [`ApiError`]: every way a request can fail, and the JSON answer each one gets.
//!
//! - When the caller is at fault (bad id, bad body, unknown product, missing token, body too
//!   large), then the answer is a 4xx with `{"error": "<what is wrong>"}` written for the caller.
//! - When the failure is ours (Redis or Postgres down, an unexpected reply), then the answer is a
//!   500 or 503 with a fixed, generic message; the cause is logged (error chain, no request
//!   body, no connection string) and never returned.
//! - When the product's lock cannot be had within the configured wait, then the answer is 503
//!   with `Retry-After: 1`: nothing was changed and the request may be repeated.

use std::error::Error as StdError;

use axum::{
    Json,
    extract::rejection::BytesRejection,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::{
    order::{OrderError, OrderId},
    queue::QueueError,
    store::StoreError,
};
use lockstock_lock::LockError;

/// A boxed internal cause (logged, never sent).
pub type Cause = Box<dyn StdError + Send + Sync + 'static>;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (bad path parameter, bad JSON, invalid value): 400.
    #[error("{0}")]
    BadRequest(String),
    /// The named thing does not exist: 404.
    #[error("{0}")]
    NotFound(String),
    /// A mutating route was called without the right bearer token: 401.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// The request came from a foreign origin or named a host this server does not answer
    /// for (cross-site request, DNS rebinding): 403.
    #[error("{0}")]
    Forbidden(String),
    /// A mutating request whose body is not `application/json`: 415.
    #[error("mutating requests take application/json bodies only")]
    UnsupportedMediaType,
    /// An `Idempotency-Key` reused for a different request: 422.
    #[error("{0}")]
    Unprocessable(String),
    /// The cap on requests in flight is reached: 503, retry later.
    #[error("the server is busy; try again")]
    Busy,
    /// The request body exceeds the configured limit: 413.
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The seed's answer to a purchase the stock cannot cover: 400 `{"error": "Out of stock"}`.
    /// The decision is recorded under `order_id`.
    #[error("Out of stock")]
    OutOfStock {
        /// The order id the rejection was recorded under.
        order_id: OrderId,
    },
    /// The product's lock was not had within the configured wait: 503, retry later.
    #[error("the product is busy; try again")]
    LockBusy,
    /// Redis or Postgres is unreachable or timing out: 503.
    #[error("a backing service is unavailable")]
    Unavailable(#[source] Cause),
    /// Anything else on our side: 500.
    #[error("internal error")]
    Internal(#[source] Cause),
}

impl ApiError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::OutOfStock { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::LockBusy | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Maps a body-reading rejection: 413 when over the limit, else 400.
    pub(crate) fn from_body(rejection: BytesRejection, limit: usize) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge { limit }
        } else {
            ApiError::BadRequest("the request body could not be read".to_owned())
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            ApiError::OutOfStock { order_id } => {
                json!({ "error": self.to_string(), "order_id": order_id })
            }
            _ => json!({ "error": self.to_string() }),
        };
        match &self {
            ApiError::Unavailable(cause) | ApiError::Internal(cause) => {
                tracing::error!(
                    status = status.as_u16(),
                    error.cause_chain = %chain(cause.as_ref()),
                    "request failed"
                );
            }
            _ => {}
        }
        let mut response = (status, Json(body)).into_response();
        match self {
            ApiError::Unauthorized => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::LockBusy | ApiError::Busy | ApiError::Unavailable(_) => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

/// `outer: inner: innermost`, for one log field (see [`crate::telemetry::cause_chain`]).
pub(crate) fn chain(error: &(dyn StdError + 'static)) -> String {
    crate::telemetry::cause_chain(error)
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::UnknownProduct(id) => ApiError::NotFound(format!("unknown product {id}")),
            error if error.is_transient() => ApiError::Unavailable(Box::new(error)),
            error => ApiError::Internal(Box::new(error)),
        }
    }
}

impl From<LockError> for ApiError {
    fn from(error: LockError) -> Self {
        match error {
            LockError::Timeout { .. } => ApiError::LockBusy,
            error @ LockError::Connection(_) => ApiError::Unavailable(Box::new(error)),
            error => ApiError::Internal(Box::new(error)),
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(error: QueueError) -> Self {
        match &error {
            QueueError::Redis(e)
                if e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal() =>
            {
                ApiError::Unavailable(Box::new(error))
            }
            _ => ApiError::Internal(Box::new(error)),
        }
    }
}

impl From<OrderError> for ApiError {
    fn from(error: OrderError) -> Self {
        ApiError::BadRequest(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Internal causes never reach the body; caller errors say what is wrong.
    #[tokio::test]
    async fn internal_causes_stay_out_of_the_body() {
        let secret = std::io::Error::other("postgres://user:hunter2@db/x refused");
        let response = ApiError::Internal(Box::new(secret)).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        assert_eq!(&body[..], br#"{"error":"internal error"}"#);

        let response = ApiError::BadRequest("quantity must be at least 1".into()).into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }
}
