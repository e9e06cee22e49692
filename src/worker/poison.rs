//! Orders that cannot be sold: poison messages, orders for unknown products, dead letters.
//!
//! - When a message names an order id but is invalid (bad quantity or product, malformed), then
//!   a `rejected` row with the reason is recorded once and the message acknowledged.
//! - When an order's product does not exist, then a `rejected` (`unknown_product`) row.
//! - When a message names no order, or can never be recorded, then it moves to the dead letter
//!   list with the reason; nothing is dropped silently.
//! - When Postgres or Redis fail meanwhile, then the step is retried with the worker's one
//!   back-off ([`super::retry`]) until it is done or the worker stops hard.

use std::sync::Arc;

use super::{Ctx, WorkerStats, error::ProcessError, lanes::Job, retry::Retry};
use crate::{
    order::{Poison, RejectReason},
    store::CommitResult,
};

/// A message that is not a valid order: a `rejected` row when it names an order, else a dead
/// letter.
pub(crate) async fn run_poison(ctx: Arc<Ctx>, payload: Vec<u8>, poison: Poison) {
    match poison {
        Poison::Rejectable {
            order_id,
            product_id,
            quantity,
            reason,
            detail,
        } => {
            tracing::info!(%order_id, reason = reason.as_str(), detail, "rejecting an invalid order");
            let mut retry = Retry::default();
            loop {
                match ctx
                    .store
                    .record_rejection(
                        order_id,
                        product_id,
                        quantity,
                        reason,
                        &ctx.config.worker_id,
                        1,
                    )
                    .await
                {
                    Ok(result) => {
                        match result {
                            CommitResult::Committed { .. } => {
                                WorkerStats::bump(&ctx.stats.rejected)
                            }
                            CommitResult::AlreadyDecided(_) => {
                                WorkerStats::bump(&ctx.stats.already_decided)
                            }
                        }
                        ctx.ack(&payload).await;
                        return;
                    }
                    Err(error) if error.is_transient() => {
                        tracing::warn!(%error, "recording a rejection failed; retrying");
                        if !ctx.pause(retry.next_delay()).await {
                            return;
                        }
                    }
                    Err(error) => {
                        dead_letter(&ctx, &payload, &format!("{}: {error}", reason.as_str())).await;
                        return;
                    }
                }
            }
        }
        Poison::DeadLetter { kind, detail } => {
            tracing::info!(
                reason = kind.as_str(),
                detail,
                "dead-lettering an unreadable message"
            );
            dead_letter(&ctx, &payload, kind.as_str()).await;
        }
    }
}

/// Records `job` as rejected for an unknown product and acknowledges it.
pub(super) async fn reject_unknown_product(ctx: &Ctx, job: &Job) -> Result<(), ProcessError> {
    let order = job.order;
    let mut retry = Retry::default();
    loop {
        let result = ctx
            .store
            .record_rejection(
                order.id,
                Some(order.product_id.get()),
                Some(order.quantity.get()),
                RejectReason::UnknownProduct,
                &ctx.config.worker_id,
                job.attempts,
            )
            .await;
        match result {
            Ok(result) => {
                ctx.record(&job.order, result);
                ctx.ack(&job.payload).await;
                return Ok(());
            }
            Err(error) if error.is_transient() => {
                tracing::warn!(%error, "recording a rejection failed; retrying");
                if !ctx.pause(retry.next_delay()).await {
                    return Err(ProcessError::Retryable("stopping".into()));
                }
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Moves a message to the dead letter list (with `reason`), retrying until it is done or the
/// worker stops hard.
pub(super) async fn dead_letter(ctx: &Ctx, payload: &[u8], reason: &str) {
    // Never silently: every dead letter is logged with its reason, whichever path sent it.
    tracing::warn!(
        reason,
        bytes = payload.len(),
        "moving a message to the dead letter list"
    );
    let mut retry = Retry::default();
    loop {
        match ctx.queue.dead_letter(payload, reason).await {
            Ok(_) => {
                WorkerStats::bump(&ctx.stats.dead_lettered);
                ctx.forget(payload);
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "dead-lettering failed; retrying");
                if !ctx.pause(retry.next_delay()).await {
                    return;
                }
            }
        }
    }
}
