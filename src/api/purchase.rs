//! The seed's endpoints: synchronous purchases with and without the lock, stock read and reset,
//! plus the product list for the live page.
//!
//! Shapes (as the seed's Express server answered them):
//! - `POST /purchase/{without-lock|with-lock}/{productId}`, body `{"quantity": n}` (optional,
//!   default 1) → 200 `{"success": true, "message": "Purchase successful (WITH LOCK)",
//!   "duration": "105ms", "remaining_stock": n, "order_id": "<uuid>"}` (the locked path adds
//!   `"fence"`), or 400 `{"error": "Out of stock", "order_id": "<uuid>"}`.
//! - `GET /stock/{productId}` → `{"productId": 1, "stock": n}`.
//! - `POST /stock/{productId}/reset`, body `{"stock": n}` (default 10, as the seed) →
//!   `{"message": "Stock reset", "productId": 1, "stock": n}`.
//!
//! Differences from the seed, on purpose: `productId` is a number, not the echoed path string;
//! an unknown product is a 404 (the seed answered stock 0); `remaining_stock` is the stock the
//! database holds after the sale, not the seed's `read - quantity` (which hides the oversell).
//!
//! - When a purchase goes through the locked path, then it takes the product's lock from
//!   [`AppState::product_locks`] (built like the workers', so Redlock when `LOCK_REDIS_URLS`
//!   lists several instances) and drives the same fenced sale as a worker's batch
//!   (`crate::sale`), as a batch of one.
//! - When the locked path's claim is refused as stale (Redis lost its fence counters), then the
//!   lock's counter is raised above the row's fence and the lock taken again, as the worker does;
//!   likewise when the lock is lost during the slow step or the commit is refused by the fence.
//!   After [`MAX_LOCK_HOLDS`] such rounds the answer is 503.
//! - When a locked purchase fails after its outcome was stored (the reply to the commit was
//!   lost), then the stored outcome is read back and answered, never a 5xx for a sale that
//!   happened. With an `Idempotency-Key`, a retry gets the same order and the same answer (see
//!   `idempotency.rs`).
//! - When the stock changed outside the fenced path between claim and commit (an operator reset,
//!   the unsafe path), then the decision is made again from the stock found at commit.

use std::time::Instant;

use axum::{
    Json,
    body::Bytes,
    extract::{Path, State, rejection::BytesRejection},
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};

use super::{
    AppState, Authorized,
    error::{ApiError, chain},
    idempotency::{self, Start},
    parse_body, parse_product_id,
};
use crate::{
    order::{Outcome, ProductId, PurchaseOrder, Quantity, RejectReason},
    product_lock::{ProductGuard, product_resource},
    sale::{FencedSale, SaleError, SaleOrder},
    store::{CommitResult, StoreError},
};
use lockstock_lock::{LockOptions, ReleaseOutcome};
use tokio_util::sync::CancellationToken;

/// Most lock holds one locked purchase goes through (lost locks, stale fences) before 503.
pub const MAX_LOCK_HOLDS: u32 = 5;

/// The body of a purchase: `{"quantity": n}`, default 1.
#[derive(Debug, Default, Deserialize)]
struct PurchaseBody {
    quantity: Option<i64>,
}

/// The body of a reset: `{"stock": n}`, default 10.
#[derive(Debug, Default, Deserialize)]
struct ResetBody {
    stock: Option<i64>,
}

/// A successful purchase, as the seed answered it (plus the order id and, when locked, fence).
#[derive(Debug, Serialize)]
pub struct PurchaseResponse {
    /// Always `true` (failures are errors).
    pub success: bool,
    /// `Purchase successful (NO LOCK)` or `Purchase successful (WITH LOCK)`.
    pub message: &'static str,
    /// Wall time of the purchase, e.g. `"105ms"`.
    pub duration: String,
    /// Stock left in the database after this sale.
    pub remaining_stock: i32,
    /// The id the outcome is recorded under.
    pub order_id: String,
    /// The fencing token the sale was committed under (locked path only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fence: Option<u64>,
}

/// `{"productId": n, "stock": n}`.
#[derive(Debug, Serialize)]
pub struct StockResponse {
    /// The product.
    #[serde(rename = "productId")]
    pub product_id: i32,
    /// Its stock.
    pub stock: i32,
}

fn quantity_of(body: PurchaseBody) -> Result<Quantity, ApiError> {
    Ok(Quantity::try_from(body.quantity.unwrap_or(1))?)
}

fn duration_text(started: Instant) -> String {
    format!("{}ms", started.elapsed().as_millis())
}

/// `POST /purchase/without-lock/{productId}`: read, wait, sell — no lock, no fence. Oversells
/// under concurrency, exactly like the seed.
pub(crate) async fn without_lock(
    _: Authorized,
    State(state): State<AppState>,
    Path(product): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PurchaseResponse>, ApiError> {
    let started = Instant::now();
    let product = parse_product_id(&product)?;
    let quantity = quantity_of(parse_body(body, state.config().body_limit)?)?;
    let order = PurchaseOrder::new(product, quantity);
    let result = unlocked_purchase(&state, &order).await;
    state
        .metrics()
        .count_purchase("without-lock", result_label(result.as_ref().copied()));
    let (outcome, remaining) = result?;
    respond(
        order,
        outcome,
        remaining,
        None,
        "Purchase successful (NO LOCK)",
        started,
    )
}

#[tracing::instrument(level = "debug", skip_all, fields(order_id = %order.id, product_id = %order.product_id), err(level = "debug"))]
async fn unlocked_purchase(
    state: &AppState,
    order: &PurchaseOrder,
) -> Result<(Outcome, i32), ApiError> {
    let store = state.store();
    let stock = store.stock(order.product_id).await?;
    tokio::time::sleep(state.config().work).await;
    let outcome = Outcome::from_stock(stock, order.quantity);
    let result = store
        .commit_unfenced(order, outcome, &state.config().instance_id, 1)
        .await?;
    let remaining = match result {
        CommitResult::Committed {
            remaining_stock: Some(left),
            ..
        } => left,
        _ => store.stock(order.product_id).await?,
    };
    Ok((result.outcome(), remaining))
}

/// `POST /purchase/with-lock/{productId}`: the worker's fenced path, synchronously, optionally
/// under an `Idempotency-Key` (see [`super::idempotency`]).
pub(crate) async fn with_lock(
    _: Authorized,
    State(state): State<AppState>,
    Path(product): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let product = parse_product_id(&product)?;
    let quantity = quantity_of(parse_body(body, state.config().body_limit)?)?;
    let route = "POST /purchase/with-lock";
    let (order, key) = match idempotency::start(&state, &headers, route, product, quantity).await? {
        Start::Proceed { order, key } => (order, key),
        Start::Replay(answer) => return Ok(answer),
    };
    let result = match locked_purchase(&state, &order).await {
        Err(error) => settle(&state, &order, error).await,
        decided => decided,
    };
    let summary = result
        .as_ref()
        .map(|(outcome, remaining, _)| (*outcome, *remaining));
    state
        .metrics()
        .count_purchase("with-lock", result_label(summary));
    let (outcome, remaining, fence) = result?;
    let response = respond(
        order,
        outcome,
        remaining,
        Some(fence),
        "Purchase successful (WITH LOCK)",
        started,
    )
    .into_response();
    Ok(idempotency::finish(&state, key.as_deref(), order.id, response).await)
}

/// Resolves a failed locked purchase whose commit may have been stored anyway (the reply to it
/// was lost): when the order has an outcome, that outcome is the answer; otherwise `error`.
async fn settle(
    state: &AppState,
    order: &PurchaseOrder,
    error: ApiError,
) -> Result<(Outcome, i32, u64), ApiError> {
    if !matches!(error, ApiError::Unavailable(_) | ApiError::Internal(_)) {
        return Err(error);
    }
    let Ok(Some(record)) = state.store().order(order.id).await else {
        return Err(error);
    };
    let Ok(remaining) = state.store().stock(order.product_id).await else {
        return Err(error);
    };
    tracing::warn!(
        order_id = %order.id,
        error.cause_chain = %chain(&error),
        "the purchase failed after its outcome was stored (lost reply); answering from the stored outcome"
    );
    Ok((record.outcome, remaining, record.fence.unwrap_or(0)))
}

fn respond(
    order: PurchaseOrder,
    outcome: Outcome,
    remaining_stock: i32,
    fence: Option<u64>,
    message: &'static str,
    started: Instant,
) -> Result<Json<PurchaseResponse>, ApiError> {
    match outcome {
        Outcome::Fulfilled => Ok(Json(PurchaseResponse {
            success: true,
            message,
            duration: duration_text(started),
            remaining_stock,
            order_id: order.id.to_string(),
            fence,
        })),
        Outcome::Rejected(_) => Err(ApiError::OutOfStock { order_id: order.id }),
    }
}

/// How one lock hold ended when it did not decide the order.
enum Round {
    /// Take the lock again (lost lock, stale fence).
    Again,
    /// Give up with this error.
    Fail(ApiError),
}

impl From<SaleError> for Round {
    fn from(error: SaleError) -> Self {
        match error {
            SaleError::LockLost | SaleError::Stopped | SaleError::Stale { .. } => Round::Again,
            SaleError::FloorNotRaised(error) => Round::Fail(error.into()),
            SaleError::UnknownProduct(product) => {
                Round::Fail(StoreError::UnknownProduct(product).into())
            }
            SaleError::Store(error) => Round::Fail(error.into()),
        }
    }
}

/// Takes the product's lock and decides the order under it; `(outcome, remaining, fence)`.
#[tracing::instrument(level = "debug", skip_all, fields(order_id = %order.id, product_id = %order.product_id), err(level = "debug"))]
async fn locked_purchase(
    state: &AppState,
    order: &PurchaseOrder,
) -> Result<(Outcome, i32, u64), ApiError> {
    let resource = product_resource(order.product_id);
    let options = LockOptions::with_ttl(state.config().lock_ttl);
    for attempt in 1..=MAX_LOCK_HOLDS {
        let guard = state
            .product_locks()
            .acquire(&resource, &options, state.config().lock_wait)
            .await?;
        let fence = guard.fence().get();
        let round = hold(state, &guard, order, attempt).await;
        release(guard).await;
        match round {
            Ok((outcome, remaining)) => return Ok((outcome, remaining, fence)),
            Err(Round::Again) => {
                tracing::debug!(order_id = %order.id, attempt, "purchase retried under a new lock hold");
            }
            Err(Round::Fail(error)) => return Err(error),
        }
    }
    Err(ApiError::Unavailable(
        format!("no lock hold of {resource} decided the order in {MAX_LOCK_HOLDS} tries").into(),
    ))
}

/// One lock hold: the fenced sale of this one order (claim, slow step, decide, fenced commit).
async fn hold(
    state: &AppState,
    guard: &ProductGuard,
    order: &PurchaseOrder,
    attempt: u32,
) -> Result<(Outcome, i32), Round> {
    let store = state.store();
    let sale = FencedSale::new(
        store,
        state.product_locks(),
        guard,
        order.product_id,
        &state.config().instance_id,
    );
    let stock = sale.claim().await?;
    sale.slow_step(state.config().work, &CancellationToken::new())
        .await?;
    let orders = [SaleOrder {
        order: *order,
        attempts: attempt,
    }];
    let results = sale
        .sell(stock, &orders)
        .await
        .map_err(|stop| Round::from(stop.error))?;
    match results.first() {
        Some(CommitResult::Committed {
            outcome,
            remaining_stock: Some(remaining),
        }) => Ok((*outcome, *remaining)),
        Some(result) => {
            let remaining = store
                .stock(order.product_id)
                .await
                .map_err(|error| Round::Fail(error.into()))?;
            Ok((result.outcome(), remaining))
        }
        None => Err(Round::Again),
    }
}

async fn release(guard: ProductGuard) {
    match guard.release().await {
        Ok(ReleaseOutcome::NotHeld) => {
            tracing::debug!("the product lock had expired before release");
        }
        Ok(_) => {}
        Err(error) => {
            tracing::debug!(error.cause_chain = %chain(&error), "release failed; the TTL frees the lock")
        }
    }
}

/// `GET /stock/{productId}`.
pub(crate) async fn stock(
    State(state): State<AppState>,
    Path(product): Path<String>,
) -> Result<Json<StockResponse>, ApiError> {
    let product = parse_product_id(&product)?;
    let stock = state.store().stock(product).await?;
    Ok(Json(StockResponse {
        product_id: product.get(),
        stock,
    }))
}

/// `POST /stock/{productId}/reset`.
pub(crate) async fn reset_stock(
    _: Authorized,
    State(state): State<AppState>,
    Path(product): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let product: ProductId = parse_product_id(&product)?;
    let body: ResetBody = parse_body(body, state.config().body_limit)?;
    let stock = body.stock.unwrap_or(10);
    let stock = i32::try_from(stock)
        .ok()
        .filter(|s| *s >= 0)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "stock must be an integer between 0 and {}, got {stock}",
                i32::MAX
            ))
        })?;
    state.store().set_stock(product, stock).await?;
    tracing::info!(product_id = %product, stock, "stock reset");
    Ok(Json(serde_json::json!({
        "message": "Stock reset",
        "productId": product.get(),
        "stock": stock,
    })))
}

/// One product in `GET /products`.
#[derive(Debug, Serialize)]
pub struct ProductView {
    /// The product id.
    pub id: i32,
    /// Its name.
    pub name: String,
    /// Units in stock.
    pub stock: i32,
    /// Price as a decimal string.
    pub price: String,
    /// Highest fencing token that claimed it.
    pub last_fence: i64,
}

/// `GET /products`: `{"products": [...]}`.
pub(crate) async fn products(
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let products: Vec<ProductView> = state
        .store()
        .list_products()
        .await?
        .into_iter()
        .map(|p| ProductView {
            id: p.id,
            name: p.name,
            stock: p.stock,
            price: p.price,
            last_fence: p.last_fence,
        })
        .collect();
    Ok(Json(serde_json::json!({ "products": products })))
}

/// The reason a purchase was refused, for counters.
fn result_label(result: Result<(Outcome, i32), &ApiError>) -> &'static str {
    match result {
        Ok((Outcome::Fulfilled, _)) => "fulfilled",
        Ok((Outcome::Rejected(RejectReason::OutOfStock), _)) => "out_of_stock",
        Ok((Outcome::Rejected(_), _)) => "rejected",
        Err(ApiError::NotFound(_)) => "unknown_product",
        Err(ApiError::LockBusy) => "lock_busy",
        Err(_) => "error",
    }
}
