//! Asynchronous orders: enqueue for the workers, then ask for the outcome.
//!
//! - `POST /orders`, body `{"product_id": n, "quantity": n}` (a queue message without the id) →
//!   202 `{"order_id": "<uuid>", "status": "pending"}` with `Location: /orders/<uuid>`.
//! - `GET /orders/{id}` → the outcome row from Postgres (`{"order_id", "status": "fulfilled" |
//!   "rejected", "reason", "product_id", "quantity", "fence", "worker", "attempts", "created_at",
//!   "decided_at"}`), or `{"order_id", "status": "pending"}` while it has none.
//! - `GET /orders?limit=n` → `{"orders": [...]}`, the `n` (default 20, at most 200) most recently
//!   decided orders, newest first.
//!
//! - When `POST /orders` answers 202, then the message is on the same pending list the producer
//!   pushes to, in the canonical wire form, so any worker decides it exactly once.
//! - When `POST /orders` carries an `Idempotency-Key` seen before, then the answer is the first
//!   one (same order id) and nothing more is enqueued (see `idempotency.rs`).
//! - When the product does not exist, then 404 and nothing is enqueued (the producer does not
//!   check; the API can, cheaply).
//! - Not guaranteed: that a `pending` order is queued — an id that was never submitted is also
//!   `pending` (see the module docs of [`super`]).

use axum::{
    Json,
    body::Bytes,
    extract::{Path, RawQuery, State, rejection::BytesRejection},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    AppState, Authorized,
    error::ApiError,
    idempotency::{self, Start},
    parse_body, truncate,
};
use crate::{
    order::{OrderId, ProductId, Quantity},
    producer::OrderProducer,
    store::OrderRecord,
};

/// Default and largest `limit` of `GET /orders`.
const DEFAULT_LIMIT: i64 = 20;
const MAX_LIMIT: i64 = 200;

/// The body of `POST /orders`.
#[derive(Debug, Default, Deserialize)]
struct NewOrder {
    product_id: Option<i64>,
    quantity: Option<i64>,
}

/// An order's status as `GET /orders/{id}` and `GET /orders` answer it.
#[derive(Debug, Clone, Serialize)]
pub struct OrderView {
    /// The order id.
    pub order_id: String,
    /// `pending`, `fulfilled` or `rejected`.
    pub status: &'static str,
    /// Why it was rejected (`out_of_stock`, `unknown_product`, ...), as stored: a reason written
    /// by a newer version is shown as it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The product.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product_id: Option<i32>,
    /// Units.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantity: Option<i32>,
    /// The fencing token of the deciding lock hold (absent for unfenced decisions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fence: Option<u64>,
    /// Which worker (or API instance) decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Attempts the decider needed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i32>,
    /// When the row was inserted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    /// When the decision was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<DateTime<Utc>>,
}

impl OrderView {
    /// An order without an outcome yet.
    pub fn pending(id: OrderId) -> Self {
        Self {
            order_id: id.to_string(),
            status: "pending",
            reason: None,
            product_id: None,
            quantity: None,
            fence: None,
            worker: None,
            attempts: None,
            created_at: None,
            decided_at: None,
        }
    }
}

impl From<OrderRecord> for OrderView {
    fn from(record: OrderRecord) -> Self {
        Self {
            order_id: record.id.to_string(),
            status: record.outcome.status(),
            reason: record.reason_text,
            product_id: record.product_id,
            quantity: record.quantity,
            fence: record.fence,
            worker: record.worker,
            attempts: record.attempts,
            created_at: Some(record.created_at),
            decided_at: Some(record.decided_at),
        }
    }
}

/// `POST /orders`: validate, check the product exists, push onto the pending list; optionally
/// under an `Idempotency-Key` (see [`super::idempotency`]).
pub(crate) async fn create(
    _: Authorized,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body: NewOrder = parse_body(body, state.config().body_limit)?;
    let product = body
        .product_id
        .ok_or_else(|| ApiError::BadRequest("product_id is required".to_owned()))?;
    let product = ProductId::try_from(product)?;
    let quantity = Quantity::try_from(body.quantity.unwrap_or(1))?;
    // 404 for an unknown product before anything is queued.
    state.store().stock(product).await?;
    let (order, key) =
        match idempotency::start(&state, &headers, "POST /orders", product, quantity).await? {
            Start::Proceed { order, key } => (order, key),
            Start::Replay(answer) => return Ok(answer),
        };
    OrderProducer::new(state.queue().clone())
        .with_intake(state.store().clone())
        .push_orders(&[order], |_| {})
        .await
        .map_err(|error| match error {
            crate::producer::ProducerError::Queue(e) => ApiError::from(e),
            crate::producer::ProducerError::Intake(e) => ApiError::from(e),
            other => ApiError::Internal(Box::new(other)),
        })?;
    tracing::info!(order_id = %order.id, product_id = %product, quantity = %quantity, "order enqueued");
    let location = format!("/orders/{}", order.id);
    let response = (
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(OrderView::pending(order.id)),
    )
        .into_response();
    Ok(idempotency::finish(&state, key.as_deref(), order.id, response).await)
}

/// `GET /orders/{id}`.
pub(crate) async fn status(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<OrderView>, ApiError> {
    let id: OrderId = raw.parse().map_err(|_| {
        ApiError::BadRequest(format!(
            "order id must be a UUID, got {:?}",
            truncate(&raw, 40)
        ))
    })?;
    Ok(Json(match state.store().order(id).await? {
        Some(record) => OrderView::from(record),
        None => OrderView::pending(id),
    }))
}

/// `GET /orders?limit=n`.
pub(crate) async fn recent(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut limit = DEFAULT_LIMIT;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if key == "limit" {
            limit = value
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    ApiError::BadRequest(format!("limit must be an integer from 1 to {MAX_LIMIT}"))
                })?;
        }
    }
    let orders: Vec<OrderView> = state
        .store()
        .recent_orders(limit)
        .await?
        .into_iter()
        .map(OrderView::from)
        .collect();
    Ok(Json(serde_json::json!({ "orders": orders })))
}
