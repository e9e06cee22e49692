//! The `Idempotency-Key` header of `POST /purchase/with-lock/{id}` and `POST /orders`.
//!
//! - When a request carries a key for the first time, then the key is bound (in Postgres) to a
//!   fresh order id and to what was asked (route, product, quantity), and the request proceeds
//!   under that order id.
//! - When a request repeats a key whose first request was answered with a decision (200, 202, or
//!   400 out of stock), then it gets that answer again, byte for byte, with
//!   `Idempotent-Replayed: true`, and nothing is done: one key, one order, one answer.
//! - When a request repeats a key whose first request got no decided answer (it failed with 5xx,
//!   timed out, or is still running), then it proceeds under the *same* order id: the fenced
//!   commit decides an order id at most once, so the retry finds the first decision if there was
//!   one, and a queued order pushed twice is still decided once.
//! - When a key is reused with a different request, then 422 and nothing is done.
//! - When the key is empty, longer than 255 bytes or not visible ASCII, then 400.
//! - Not guaranteed: keys expire. They stay in `idempotency_keys` until an operator prunes them.

use axum::{
    body::Body,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use super::{AppState, error::ApiError};
use crate::{
    order::{OrderId, ProductId, PurchaseOrder, Quantity},
    store::{KeyClaim, StoredAnswer},
};

/// The request header.
pub(crate) const HEADER: &str = "idempotency-key";

/// Longest accepted key, in bytes.
const MAX_KEY_LEN: usize = 255;

/// Largest answer body stored (ours are a few hundred bytes).
const MAX_STORED_BODY: usize = 16 * 1024;

/// The request's key, if any; 400 when malformed.
fn key_of(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(HEADER) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .filter(|key| (1..=MAX_KEY_LEN).contains(&key.len()))
        .filter(|key| key.bytes().all(|b| b.is_ascii_graphic()))
        .map(|key| Some(key.to_owned()))
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"
            ))
        })
}

/// What a request should do, keyed or not.
pub(crate) enum Start {
    /// Proceed with this order (fresh, or the one the key stands for) and key.
    Proceed {
        /// The order to decide or enqueue.
        order: PurchaseOrder,
        /// The request's key, if any (pass it to [`finish`]).
        key: Option<String>,
    },
    /// Send this stored answer again.
    Replay(Response),
}

/// The order a request on `route` for `quantity` of `product` stands for: a fresh one, or the
/// one its `Idempotency-Key` was bound to; or the key's stored answer.
pub(crate) async fn start(
    state: &AppState,
    headers: &HeaderMap,
    route: &str,
    product: ProductId,
    quantity: Quantity,
) -> Result<Start, ApiError> {
    let mut order = PurchaseOrder::new(product, quantity);
    let Some(key) = key_of(headers)? else {
        return Ok(Start::Proceed { order, key: None });
    };
    let request = format!("{route} product={product} quantity={quantity}");
    match state
        .store()
        .claim_idempotency_key(&key, &request, order.id)
        .await?
    {
        KeyClaim::Open(order_id) => {
            order.id = order_id;
            Ok(Start::Proceed {
                order,
                key: Some(key),
            })
        }
        KeyClaim::Answered(order_id, answer) => Ok(Start::Replay(replay(order_id, answer))),
        KeyClaim::Mismatch => Err(ApiError::Unprocessable(
            "this Idempotency-Key was used for a different request".to_owned(),
        )),
    }
}

/// Stores `response` under `key` when it is a decided answer, and returns the answer stored for
/// the key (this one, or a racing request's that was stored first).
pub(crate) async fn finish(
    state: &AppState,
    key: Option<&str>,
    order_id: OrderId,
    response: Response,
) -> Response {
    let Some(key) = key else {
        return response;
    };
    let status = response.status();
    let decided = matches!(
        status,
        StatusCode::OK | StatusCode::ACCEPTED | StatusCode::BAD_REQUEST
    );
    if !decided {
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_STORED_BODY).await else {
        tracing::warn!("an answer too large to store under its Idempotency-Key");
        return (StatusCode::INTERNAL_SERVER_ERROR, "").into_response();
    };
    let answer = StoredAnswer {
        status: status.as_u16(),
        body: String::from_utf8_lossy(&bytes).into_owned(),
    };
    match state.store().store_answer(key, answer.clone()).await {
        Ok(stored) if stored == answer => Response::from_parts(parts, Body::from(bytes)),
        Ok(stored) => replay(order_id, stored),
        Err(error) => {
            // The decision is stored with the order; a retry re-derives the same answer.
            tracing::warn!(error.cause_chain = %super::error::chain(&error), "storing the answer of an Idempotency-Key failed");
            Response::from_parts(parts, Body::from(bytes))
        }
    }
}

/// A stored answer as a response.
fn replay(order_id: OrderId, answer: StoredAnswer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, answer.body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    if status == StatusCode::ACCEPTED
        && let Ok(location) = HeaderValue::from_str(&format!("/orders/{order_id}"))
    {
        headers.insert(header::LOCATION, location);
    }
    response
}
