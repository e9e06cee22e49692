//! The seed's unsafe path (`--no-lock`), kept for the race demo: read the stock, wait, sell,
//! without any lock or fence.
//!
//! - When several workers sell one product at once, then they oversell and the stock goes
//!   negative: that is the race the demo shows.
//! - When an order already has an outcome, then it is acknowledged without a second effect:
//!   even this path records one outcome per order.

use std::sync::Arc;

use super::{Ctx, lanes::Job, poison::reject_unknown_product, retry::Retry};
use crate::{order::Outcome, store::StoreError};

/// The seed's unsafe path (`--no-lock`): read, wait, then sell without any lock or fence.
pub(crate) async fn run_unlocked(ctx: Arc<Ctx>, mut job: Job) {
    let order = job.order;
    let mut retry = Retry::default();
    loop {
        job.attempts += 1;
        let stock = match ctx.store.stock(order.product_id).await {
            Ok(stock) => stock,
            Err(StoreError::UnknownProduct(_)) => {
                if let Err(error) = reject_unknown_product(&ctx, &job).await {
                    tracing::warn!(%error, "rejecting an unknown product failed");
                }
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "reading stock failed; retrying");
                if !ctx.pause(retry.next_delay()).await {
                    return;
                }
                continue;
            }
        };
        if !ctx.config.work.is_zero() && !ctx.pause(ctx.config.work).await {
            return;
        }
        match ctx
            .store
            .commit_unfenced(
                &order,
                Outcome::from_stock(stock, order.quantity),
                &ctx.config.worker_id,
                job.attempts,
            )
            .await
        {
            Ok(result) => {
                ctx.record(&job.order, result);
                ctx.ack(&job.payload).await;
                return;
            }
            Err(StoreError::UnknownProduct(_)) => {
                let _ = reject_unknown_product(&ctx, &job).await;
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "unfenced commit failed; retrying");
                if !ctx.pause(retry.next_delay()).await {
                    return;
                }
            }
        }
    }
}
