//! The recovery sweep of the durable intake: orders recorded in Postgres that Redis lost are
//! pushed again. Leader-free: every worker runs it; the queue's restore script is atomic, so two
//! sweeps at once push an order once, and a duplicate from any other race is harmless because
//! orders are idempotent by id.
//!
//! Every `intake_sweep_interval` (with jitter):
//! 1. prune intake rows whose order has an outcome;
//! 2. read this queue's oldest intake rows without an outcome, recorded at least `intake_stale_after` ago
//!    (younger ones may be between the producer's insert and its push);
//! 3. ask the queue which of them are in none of its lists (pending, any processing list, dead
//!    letters); of those, keep the ones Postgres still shows undecided (an order acknowledged
//!    meanwhile was decided first: workers commit before they acknowledge); push those back in
//!    one script that checks the lists again, counting them (`lockctl status`: "restored").
//!
//! - When the queue is sharded (`QUEUE_SHARDS=N`), then the intake rows are those of the base
//!   pending key (the producer records that one), an order counts as missing only when no shard
//!   holds it, and it is pushed back onto the shard the producer's push chose (the queue routes
//!   it by the same hash of the same message bytes); the restored count adds up the shards'.
//! - When Redis restarts empty, then every recorded, undecided order is pushed again within
//!   about one sweep interval of Redis answering (once it is `intake_stale_after` old), with no
//!   operator step.
//! - When Postgres or Redis fail, then the sweep logs at debug level and tries again next time.
//! - Not guaranteed: orders pushed with `producer --no-intake` are not in the intake and are not
//!   restored.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::{order::PurchaseOrder, queue::QueueError, store::StoreError};

/// Why one sweep stopped; the next one tries again.
#[derive(Debug, thiserror::Error)]
enum SweepError {
    /// Reading or pruning the intake failed.
    #[error("reading the intake: {0}")]
    Store(#[from] StoreError),
    /// Pushing the missing orders failed.
    #[error("restoring orders to the queue: {0}")]
    Queue(#[from] QueueError),
}

/// Most intake rows looked at per sweep.
const SWEEP_BATCH: i64 = 1_000;
/// Most decided intake rows pruned per sweep.
const PRUNE_BATCH: i64 = 10_000;

/// Runs the sweep until `stop` fires.
pub(crate) async fn run(ctx: Arc<Ctx>, stop: CancellationToken) {
    let interval = ctx.config.intake_sweep_interval;
    if interval.is_zero() {
        return;
    }
    loop {
        // Jitter so that workers started together do not sweep in lockstep.
        let jitter = interval.mul_f64(fastrand::f64() * 0.25);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval + jitter) => {}
        }
        if let Err(error) = sweep_once(&ctx).await {
            tracing::debug!(error = %error, "intake sweep failed; trying again next time");
        }
    }
}

/// One sweep; returns how many orders were pushed again.
async fn sweep_once(ctx: &Ctx) -> Result<usize, SweepError> {
    let pruned = ctx.store.prune_intake(PRUNE_BATCH).await?;
    if pruned > 0 {
        tracing::debug!(pruned, "pruned decided intake rows");
    }
    let undecided = ctx
        .store
        .undecided_intake(
            ctx.queue.keys().pending(),
            ctx.config.intake_stale_after,
            SWEEP_BATCH,
        )
        .await?;
    if undecided.is_empty() {
        return Ok(0);
    }
    // Missing from Redis first, then still undecided in Postgres: an order acknowledged in
    // between was decided first (workers commit before they acknowledge), so it is not pushed.
    let payloads: Vec<Vec<u8>> = undecided.iter().map(PurchaseOrder::to_json).collect();
    let missing: Vec<&PurchaseOrder> = ctx
        .queue
        .missing(&payloads)
        .await?
        .into_iter()
        .filter_map(|position| undecided.get(position))
        .collect();
    if missing.is_empty() {
        return Ok(0);
    }
    let ids: Vec<_> = missing.iter().map(|order| order.id).collect();
    let still_undecided: std::collections::HashSet<_> =
        ctx.store.undecided(&ids).await?.into_iter().collect();
    let payloads: Vec<Vec<u8>> = missing
        .iter()
        .filter(|order| still_undecided.contains(&order.id))
        .map(|order| order.to_json())
        .collect();
    let restored = ctx.queue.restore_missing(&payloads).await?;
    if restored > 0 {
        tracing::warn!(
            restored,
            looked_at = undecided.len(),
            "pushed recorded orders that were in no Redis list again (Redis lost them)"
        );
    }
    Ok(restored)
}

/// Default time between sweeps.
pub(crate) const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// Default age below which an undecided intake row is left alone.
pub(crate) const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(10);
