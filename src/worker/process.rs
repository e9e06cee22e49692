//! Processing orders: under a product's lock (the fenced path), without it (the seed's unsafe
//! path, kept for the demo), and poison messages.
//!
//! The fenced path, per lock hold:
//! 1. take the product's lock (FIFO hand-off between processes; heartbeat while held);
//! 2. **claim** the product row with the lock's fencing token *before reading*: one statement
//!    raises the row's `last_fence` to the token and returns the stock;
//! 3. take the orders waiting in the product's lane (up to `batch_limit`), run each one's slow
//!    step (abandoned if the lost signal fires), decide them in order from the stock;
//! 4. commit them in ONE statement (one transaction) that applies only if the row still carries
//!    the token: every outcome row and the total stock decrement, or nothing;
//! 5. acknowledge the messages (one pipelined round trip), release the lock.
//!
//! - When a stale holder (paused past its TTL) resumes, then its commit is refused by the fence
//!   whatever the timing, because the next holder's claim raised the row's fence before that
//!   holder read anything. The lost signal only saves wasted work.
//! - When the database refuses a fresh token as stale (Redis lost its fence counters), then the
//!   lock's counter is raised above the row's fence and the lock is taken again.
//! - When an order already has an outcome (redelivery), then the batch commit writes nothing and
//!   the batch is decided again order by order, so the redelivered one is acknowledged with no
//!   second effect.

use std::{sync::Arc, time::Duration};

use super::{Ctx, WorkerStats, error::ProcessError, lanes::Job};
use crate::{
    order::{Outcome, Poison, ProductId, PurchaseOrder, RejectReason},
    product_lock::{ProductGuard, ProductLease},
    store::{BatchCommit, CommitResult, Decision, StoreError},
};
use lockstock_lock::{LockError, LockOptions, ReleaseOutcome};

/// How a lock hold ended.
enum HoldEnd {
    /// Every job of the batch was decided (or dead-lettered).
    Done,
    /// The jobs left in the batch must be retried under a new lock hold, after `pause`.
    Retry { pause: Duration },
}

/// The lock resource of a product.
pub(crate) fn product_resource(product: ProductId) -> String {
    format!("product:{product}")
}

/// Runs one product's lane: takes the lock, decides a batch of the lane's orders under it,
/// releases, and repeats until the lane is empty.
pub(crate) async fn run_lane(ctx: Arc<Ctx>, first: Job) {
    let product = first.order.product_id;
    let mut batch = vec![first];
    loop {
        if batch.is_empty() {
            match ctx.lanes.next(product) {
                Some(job) => batch.push(job),
                None => return, // the lane is closed
            }
        }
        while batch.len() < ctx.config.batch_limit {
            match ctx.lanes.pop_parked(product) {
                Some(job) => batch.push(job),
                None => break,
            }
        }
        let Some(guard) = take_lock(&ctx, product).await else {
            return; // hard stop: the jobs stay in the processing list for recovery
        };
        let end = hold(&ctx, &guard, &mut batch).await;
        match guard.release().await {
            Ok(ReleaseOutcome::NotHeld) => {
                tracing::debug!(product_id = %product, "the product lock had expired before release");
            }
            Err(error) => {
                tracing::debug!(%error, product_id = %product, "release failed; the TTL frees the lock")
            }
            Ok(_) => {}
        }
        if let HoldEnd::Retry { pause } = end
            && !pause.is_zero()
            && !ctx.pause(pause).await
        {
            return;
        }
    }
}

/// Takes the product's lock, waiting and retrying until it is had or the worker stops hard.
async fn take_lock(ctx: &Ctx, product: ProductId) -> Option<ProductGuard> {
    let resource = product_resource(product);
    let options = LockOptions::with_ttl(ctx.config.lock_ttl).warn_after(ctx.config.lock_ttl);
    let mut backoff = Backoff::default();
    loop {
        let attempt = tokio::select! {
            () = ctx.hard_stop.cancelled() => return None,
            attempt = ctx.locks.acquire(&resource, &options, ctx.config.lock_wait) => attempt,
        };
        match attempt {
            Ok(guard) => return Some(guard),
            Err(LockError::Timeout { .. }) => {
                tracing::debug!(%resource, "still waiting for the product lock");
            }
            Err(error) => {
                WorkerStats::bump(&ctx.stats.retries);
                tracing::warn!(%error, %resource, "cannot take the product lock; retrying");
                if !ctx.pause(backoff.next()).await {
                    return None;
                }
            }
        }
    }
}

/// Outcome of claiming the product row.
enum Claim {
    /// The row carries our token; its stock.
    Stock(i32),
    /// No such product.
    Unknown,
}

/// Decides `batch` (orders of one product) while holding the product's lock: claims the row with
/// the lock's fence, runs each order's slow step, decides them in order from the stock, and
/// commits them in one statement. Decided jobs leave `batch`; what is left must be retried.
async fn hold(ctx: &Ctx, guard: &ProductGuard, batch: &mut Vec<Job>) -> HoldEnd {
    let product = guard_product(batch);
    let fence = guard.fence().get();
    let lease = guard.lease();
    let mut stock = match claim(ctx, &lease, product, fence).await {
        Ok(Claim::Stock(stock)) => stock,
        Ok(Claim::Unknown) => {
            for job in std::mem::take(batch) {
                if reject_unknown_product(ctx, &job).await.is_err() {
                    batch.push(job);
                }
            }
            return if batch.is_empty() {
                HoldEnd::Done
            } else {
                HoldEnd::Retry {
                    pause: Backoff::default().next(),
                }
            };
        }
        Err(pause) => return HoldEnd::Retry { pause },
    };
    // The slow step of every order, abandoned if the lock is lost.
    if !ctx.config.work.is_zero() {
        let lost = lease.lost();
        for _ in 0..batch.len() {
            tokio::select! {
                () = lost.cancelled() => {
                    WorkerStats::bump(&ctx.stats.locks_lost);
                    return HoldEnd::Retry { pause: Duration::ZERO };
                }
                () = ctx.hard_stop.cancelled() => return HoldEnd::Retry { pause: Duration::ZERO },
                () = tokio::time::sleep(ctx.config.work) => {}
            }
        }
    }
    let mut backoff = Backoff::default();
    loop {
        if lease.is_lost() {
            // Not required for safety (the fence refuses a stale commit); saves a doomed one.
            WorkerStats::bump(&ctx.stats.locks_lost);
            return HoldEnd::Retry {
                pause: Duration::ZERO,
            };
        }
        let mut available = stock;
        let decisions: Vec<Decision> = batch
            .iter_mut()
            .map(|job| {
                job.attempts += 1;
                let outcome = decide(available, job.order.quantity.get());
                if outcome == Outcome::Fulfilled {
                    available -= job.order.quantity.get();
                }
                Decision {
                    order: job.order,
                    outcome,
                    attempts: job.attempts,
                }
            })
            .collect();
        match ctx
            .store
            .commit_fenced_batch(product, &decisions, fence, &ctx.config.worker_id)
            .await
        {
            Ok(BatchCommit::Committed { remaining_stock }) => {
                for decision in &decisions {
                    let result = CommitResult::Committed {
                        outcome: decision.outcome,
                        remaining_stock: Some(remaining_stock),
                    };
                    record(ctx, &decision.order, result);
                }
                let payloads: Vec<Vec<u8>> = batch.drain(..).map(|job| job.payload).collect();
                ctx.ack_many(&payloads).await;
                return HoldEnd::Done;
            }
            Ok(BatchCommit::SomeAlreadyDecided) => {
                return decide_one_by_one(ctx, &lease, batch, fence, stock).await;
            }
            Err(StoreError::InsufficientStock { stock: now, .. }) => stock = now, // changed outside: decide again
            Err(StoreError::UnknownProduct(_)) => {
                for job in std::mem::take(batch) {
                    if reject_unknown_product(ctx, &job).await.is_err() {
                        batch.push(job);
                    }
                }
                return HoldEnd::Done;
            }
            Err(StoreError::StaleFence { current }) => {
                WorkerStats::bump(&ctx.stats.stale_fences);
                tracing::debug!(
                    fence,
                    current,
                    "batch refused: the row carries a newer fence"
                );
                return HoldEnd::Retry {
                    pause: Duration::ZERO,
                };
            }
            Err(error) if error.is_transient() => {
                WorkerStats::bump(&ctx.stats.retries);
                tracing::warn!(%error, product_id = %product, "batch commit failed; retrying");
                if !ctx.pause(backoff.next()).await {
                    return HoldEnd::Retry {
                        pause: Duration::ZERO,
                    };
                }
            }
            Err(error) => match ProcessError::from(error) {
                ProcessError::Fatal(why) => {
                    for job in batch.drain(..) {
                        dead_letter(ctx, &job.payload, &why).await;
                    }
                    return HoldEnd::Done;
                }
                ProcessError::Retryable(why) => {
                    tracing::warn!(why, product_id = %product, "batch commit failed; retrying under a new lock");
                    return HoldEnd::Retry {
                        pause: backoff.next(),
                    };
                }
            },
        }
    }
}

/// The product of a non-empty batch.
fn guard_product(batch: &[Job]) -> ProductId {
    batch[0].order.product_id
}

/// Some of the batch was decided before (a redelivery): decide each order on its own, so the
/// already-decided ones are acknowledged without effect.
async fn decide_one_by_one(
    ctx: &Ctx,
    lease: &ProductLease,
    batch: &mut Vec<Job>,
    fence: u64,
    stock: i32,
) -> HoldEnd {
    let mut stock = Some(stock);
    while !batch.is_empty() {
        let mut job = batch.remove(0);
        match decide_and_commit(ctx, lease, &mut job, fence, &mut stock).await {
            Ok(()) => {}
            Err(ProcessError::Retryable(why)) => {
                tracing::debug!(order_id = %job.order.id, why, "order will be retried under a new lock");
                batch.insert(0, job);
                let pause = if lease.is_lost() {
                    Duration::ZERO
                } else {
                    Backoff::default().next()
                };
                return HoldEnd::Retry { pause };
            }
            Err(ProcessError::Fatal(why)) => dead_letter(ctx, &job.payload, &why).await,
        }
    }
    HoldEnd::Done
}

/// Registers the fence on the product row and reads the stock; `Err(pause)` to retry the hold.
async fn claim(
    ctx: &Ctx,
    lease: &ProductLease,
    product: ProductId,
    fence: u64,
) -> Result<Claim, Duration> {
    let mut backoff = Backoff::default();
    loop {
        match ctx.store.claim_product(product, fence).await {
            Ok(stock) => return Ok(Claim::Stock(stock)),
            Err(StoreError::UnknownProduct(_)) => return Ok(Claim::Unknown),
            Err(StoreError::StaleFence { current }) => {
                // The lock's counter is behind the database: Redis lost it. Raise it past the
                // row's high-water mark and take the lock again with a fresh token. This covers
                // `current == fence` too: after Redis lost its counters, another holder may have
                // been given the same token, so an equal fence is never taken as our own claim
                // (a lost reply of our own claim costs one more acquisition).
                WorkerStats::bump(&ctx.stats.stale_fences);
                tracing::warn!(product_id = %product, fence, current, "fence counter behind the database; raising it");
                let resource = product_resource(product);
                if let Err(error) = ctx.locks.raise_fence_floor(&resource, current).await {
                    tracing::warn!(%error, "raising the fence floor failed");
                    return Err(backoff.next());
                }
                return Err(Duration::ZERO);
            }
            Err(error) if error.is_transient() => {
                WorkerStats::bump(&ctx.stats.retries);
                tracing::warn!(%error, product_id = %product, "claiming the product failed; retrying");
            }
            Err(error) => {
                tracing::error!(%error, product_id = %product, "claiming the product failed");
            }
        }
        if lease.is_lost() {
            return Err(Duration::ZERO);
        }
        if !ctx.pause(backoff.next()).await {
            return Err(Duration::ZERO);
        }
    }
}

/// The slow step, the decision and the fenced commit of one order; acknowledges it when decided.
async fn decide_and_commit(
    ctx: &Ctx,
    lease: &ProductLease,
    job: &mut Job,
    fence: u64,
    stock: &mut Option<i32>,
) -> Result<(), ProcessError> {
    job.attempts += 1;
    let order = job.order;
    let Some(mut available) = *stock else {
        return reject_unknown_product(ctx, job).await;
    };
    let mut backoff = Backoff::default();
    loop {
        if lease.is_lost() {
            // Not required for safety (the fence refuses a stale commit); saves a doomed one.
            WorkerStats::bump(&ctx.stats.locks_lost);
            return Err(ProcessError::Retryable(
                "lock lost before the commit".into(),
            ));
        }
        let outcome = decide(available, order.quantity.get());
        match ctx
            .store
            .commit_fenced(&order, outcome, fence, &ctx.config.worker_id, job.attempts)
            .await
        {
            Ok(result) => {
                if let CommitResult::Committed {
                    remaining_stock: Some(left),
                    ..
                } = result
                {
                    *stock = Some(left);
                }
                record(ctx, &job.order, result);
                break;
            }
            Err(StoreError::InsufficientStock { stock: now, .. }) => {
                available = now; // changed outside the fenced path: decide again
                *stock = Some(now);
            }
            Err(StoreError::UnknownProduct(_)) => {
                *stock = None;
                return reject_unknown_product(ctx, job).await;
            }
            Err(StoreError::StaleFence { current }) => {
                WorkerStats::bump(&ctx.stats.stale_fences);
                return Err(ProcessError::Retryable(format!(
                    "fence {fence} refused; the row carries {current}"
                )));
            }
            Err(error) if error.is_transient() => {
                WorkerStats::bump(&ctx.stats.retries);
                tracing::warn!(%error, order_id = %order.id, "commit failed; retrying");
                if !ctx.pause(backoff.next()).await {
                    return Err(ProcessError::Retryable("stopping".into()));
                }
            }
            Err(error) => return Err(error.into()),
        }
    }
    ctx.ack(&job.payload).await;
    Ok(())
}

fn decide(stock: i32, quantity: i32) -> Outcome {
    if stock >= quantity {
        Outcome::Fulfilled
    } else {
        Outcome::Rejected(RejectReason::OutOfStock)
    }
}

/// Counts and logs what a commit did.
fn record(ctx: &Ctx, order: &PurchaseOrder, result: CommitResult) {
    match result {
        CommitResult::Committed {
            outcome,
            remaining_stock,
        } => {
            match outcome {
                Outcome::Fulfilled => WorkerStats::bump(&ctx.stats.fulfilled),
                Outcome::Rejected(_) => WorkerStats::bump(&ctx.stats.rejected),
            }
            tracing::debug!(order_id = %order.id, product_id = %order.product_id, %outcome, ?remaining_stock, "order decided");
        }
        CommitResult::AlreadyDecided(outcome) => {
            WorkerStats::bump(&ctx.stats.already_decided);
            tracing::debug!(order_id = %order.id, %outcome, "order already decided; acknowledged again");
        }
    }
}

async fn reject_unknown_product(ctx: &Ctx, job: &Job) -> Result<(), ProcessError> {
    let order = job.order;
    let mut backoff = Backoff::default();
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
                record(ctx, &job.order, result);
                ctx.ack(&job.payload).await;
                return Ok(());
            }
            Err(error) if error.is_transient() => {
                tracing::warn!(%error, "recording a rejection failed; retrying");
                if !ctx.pause(backoff.next()).await {
                    return Err(ProcessError::Retryable("stopping".into()));
                }
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// The seed's unsafe path (`--no-lock`): read, wait, then sell without any lock or fence.
pub(crate) async fn run_unlocked(ctx: Arc<Ctx>, mut job: Job) {
    let order = job.order;
    let mut backoff = Backoff::default();
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
                if !ctx.pause(backoff.next()).await {
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
                decide(stock, order.quantity.get()),
                &ctx.config.worker_id,
                job.attempts,
            )
            .await
        {
            Ok(result) => {
                record(&ctx, &job.order, result);
                ctx.ack(&job.payload).await;
                return;
            }
            Err(StoreError::UnknownProduct(_)) => {
                let _ = reject_unknown_product(&ctx, &job).await;
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "unfenced commit failed; retrying");
                if !ctx.pause(backoff.next()).await {
                    return;
                }
            }
        }
    }
}

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
            let mut backoff = Backoff::default();
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
                        if !ctx.pause(backoff.next()).await {
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

/// Moves a message to the dead letter list (with `reason`), retrying until it is done or the
/// worker stops hard.
async fn dead_letter(ctx: &Ctx, payload: &[u8], reason: &str) {
    let mut backoff = Backoff::default();
    loop {
        match ctx.queue.dead_letter(payload, reason).await {
            Ok(_) => {
                WorkerStats::bump(&ctx.stats.dead_lettered);
                ctx.forget(payload);
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "dead-lettering failed; retrying");
                if !ctx.pause(backoff.next()).await {
                    return;
                }
            }
        }
    }
}

/// Exponential back-off with jitter: 50 ms doubling to 2 s.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: Duration::from_millis(50),
        }
    }
}

impl Backoff {
    pub(crate) fn next(&mut self) -> Duration {
        let current = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(2));
        current.mul_f64(0.75 + fastrand::f64() * 0.5)
    }
}
