//! Shared set-up for the pipeline tests.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use lockstock::order::{ProductId, PurchaseOrder, Quantity};

/// Polls `condition` until it holds; panics naming `what` if `within` passes first.
pub async fn wait_for<F, Fut>(what: &str, within: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if condition().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An order with a fresh id.
pub fn order(product: i32, quantity: i32) -> PurchaseOrder {
    PurchaseOrder::new(
        product_id(product),
        Quantity::new(quantity).expect("valid quantity"),
    )
}

/// A validated product id.
pub fn product_id(id: i32) -> ProductId {
    ProductId::new(id).expect("valid product id")
}
