//! The fenced path: a product's lane, decided in batches under the product's lock.
//!
//! Per lock hold:
//! 0. take a Postgres connection and check it answers (no lock is held while waiting for one);
//! 1. take the product's lock (FIFO hand-off between processes; heartbeat while held);
//! 2. take the orders waiting in the product's lane (up to `batch_limit`, each order id once);
//! 3. drive the ONE fenced sale (`crate::sale`): claim the row with the lock's token before
//!    reading, the slow step of every order (abandoned if the lost signal fires), decide them in
//!    order from the stock, commit them in ONE statement that applies only while the row still
//!    carries the token. With `group_commit`, the claim and the commit go through the worker's
//!    group commit (`crate::sale::SaleGroup`): the steps of several product holds share one
//!    transaction, each product still checked against its own token;
//! 4. acknowledge the messages (one pipelined round trip), release the lock.
//!
//! - When a stale holder (paused past its TTL) resumes, then its commit is refused by the fence
//!   whatever the timing, because the next holder's claim raised the row's fence before that
//!   holder read anything. The lost signal only saves wasted work.
//! - When the database refuses a fresh token as stale (Redis lost its fence counters), then the
//!   lock's counter is raised above the row's fence and the lock is taken again.
//! - When an order already has an outcome (redelivery), then the batch commit writes nothing and
//!   the batch is decided again order by order, so the redelivered one is acknowledged with no
//!   second effect.
//! - When a copy of an order already in the batch arrives in the lane, then it waits for a later
//!   hold, where it is found decided and acknowledged without a decision: within one hold an
//!   order is decided once, so its copy cannot cost a later order its unit.
//! - When shutdown begins, then no further order of a batch starts its slow step: the started
//!   ones are decided and committed, the rest (and the lane's parked orders, and a batch still
//!   waiting for the lock) are given back to the pending list at once.
//! - When Postgres or Redis fail, then the step is retried with the worker's one back-off
//!   ([`super::retry`]) while the lock is held, or under a new hold; but a worker that has not
//!   heard from Postgres for `postgres_outage_limit` under a held lock releases it and gives its
//!   orders back (see `outage.rs`), and no lock is taken before Postgres answers.

use std::{sync::Arc, time::Duration};

use sqlx::{Postgres, pool::PoolConnection};
use tokio::time::Instant;

use super::{
    Ctx, WorkerStats,
    error::ProcessError,
    lanes::Job,
    outage::{self, PostgresCheck},
    poison::{dead_letter, reject_unknown_product},
    retry::Retry,
};
use crate::{
    order::ProductId,
    product_lock::{ProductGuard, product_resource},
    sale::{FencedSale, SaleError, SaleOrder, SaleStop},
    telemetry::cause_chain,
};
use lockstock_lock::{LockError, LockOptions, ReleaseOutcome};

/// How a lock hold ended.
enum HoldEnd {
    /// Every job of the batch was decided (or dead-lettered).
    Done,
    /// The jobs left in the batch must be retried under a new lock hold, after `pause`.
    Retry { pause: Duration },
    /// Postgres did not answer within the outage limit: release the lock and give the lane back.
    Outage,
}

impl HoldEnd {
    /// Take the lock again at once.
    const AGAIN: HoldEnd = HoldEnd::Retry {
        pause: Duration::ZERO,
    };
}

/// Runs one product's lane: takes the lock, decides a batch of the lane's orders under it,
/// releases, and repeats until the lane is empty.
pub(crate) async fn run_lane(ctx: Arc<Ctx>, first: Job) {
    let product = first.order.product_id;
    let mut batch = vec![first];
    // Copies of an order already in the batch (redeliveries): each waits for a later hold.
    let mut copies: Vec<Job> = Vec::new();
    // Backs off while no Postgres connection is to be had.
    let mut busy = Retry::default();
    loop {
        if ctx.stopping.is_cancelled() || ctx.health.is_down() {
            give_back_lane(&ctx, product, batch, copies).await;
            return;
        }
        if batch.is_empty() {
            if copies.is_empty() {
                match ctx.lanes.next(product) {
                    Some(job) => batch.push(job),
                    None => return, // the lane is closed
                }
            } else {
                for job in std::mem::take(&mut copies) {
                    add_once(&mut batch, &mut copies, job);
                }
            }
        }
        while batch.len() < ctx.config.batch_limit {
            match ctx.lanes.pop_parked(product) {
                Some(job) => add_once(&mut batch, &mut copies, job),
                None => break,
            }
        }
        // Postgres first, the lock second: never hold a lock while waiting for a connection.
        let conn = match outage::check_postgres(&ctx).await {
            PostgresCheck::Answers(conn) => conn,
            PostgresCheck::Down => continue, // recorded: give the lane back (top of the loop)
            PostgresCheck::Busy => {
                if !ctx.pause(busy.next_delay()).await {
                    return;
                }
                continue;
            }
        };
        busy = Retry::default();
        let Some(guard) = take_lock(&ctx, product).await else {
            if ctx.hard_stop.is_cancelled() {
                return; // hard stop: the jobs stay in the processing list for recovery
            }
            continue; // stopping, or Postgres down: give the lane back (top of the loop)
        };
        let end = hold(&ctx, &guard, conn, product, &mut batch).await;
        match guard.release().await {
            Ok(ReleaseOutcome::NotHeld) => {
                tracing::debug!(product_id = %product, "the product lock had expired before release");
            }
            Err(error) => {
                tracing::debug!(%error, product_id = %product, "release failed; the TTL frees the lock")
            }
            Ok(_) => {}
        }
        if matches!(end, HoldEnd::Outage) {
            continue; // the lock is released: give the lane back (top of the loop)
        }
        if let HoldEnd::Retry { pause } = end
            && !pause.is_zero()
            && !ctx.pause_unless_stopping(pause).await
        {
            return;
        }
    }
}

/// Shutdown: gives back every order of the lane that has not started (the batch, the copies
/// and whatever is parked) and closes the lane.
async fn give_back_lane(ctx: &Ctx, product: ProductId, batch: Vec<Job>, copies: Vec<Job>) {
    let mut payloads: Vec<Vec<u8>> = batch
        .into_iter()
        .chain(copies)
        .map(|job| job.payload)
        .collect();
    while let Some(job) = ctx.lanes.next(product) {
        payloads.push(job.payload);
    }
    ctx.give_back(&payloads).await;
}

/// Adds `job` to `batch` unless the batch already holds its order id: then the copy waits in
/// `copies` for a later hold, where the store finds the order decided and the copy is
/// acknowledged without a decision. Deciding both in one hold would count the order twice
/// against the stock (only one row is written), refusing a later order a unit that remains.
fn add_once(batch: &mut Vec<Job>, copies: &mut Vec<Job>, job: Job) {
    if batch.iter().any(|held| held.order.id == job.order.id) {
        copies.push(job);
    } else {
        batch.push(job);
    }
}

/// Takes the product's lock, waiting and retrying until it is had, shutdown begins, Postgres is
/// found down, or the worker stops hard.
async fn take_lock(ctx: &Ctx, product: ProductId) -> Option<ProductGuard> {
    let resource = product_resource(product);
    let options = LockOptions::with_ttl(ctx.config.lock_ttl).warn_after(ctx.config.lock_ttl);
    // Wait in slices, never dropping an acquisition mid-way on shutdown (one dropped at the
    // moment of a hand-off leaves the lock to its TTL once the process exits): each slice ends
    // by itself, and shutdown or an outage is noticed between slices.
    let slice = ctx.config.lock_wait.min(ctx.config.lock_wait_slice);
    let mut retry = Retry::default();
    let mut waited = Duration::ZERO;
    loop {
        if ctx.stopping.is_cancelled() || ctx.health.is_down() {
            return None;
        }
        let attempt = tokio::select! {
            () = ctx.hard_stop.cancelled() => return None,
            attempt = ctx.locks.acquire(&resource, &options, slice) => attempt,
        };
        match attempt {
            Ok(guard) if ctx.health.is_down() || ctx.stopping.is_cancelled() => {
                // Postgres went away, or shutdown began, while we waited: do not hold it.
                if let Err(error) = guard.release().await {
                    tracing::debug!(%error, %resource, "release failed; the TTL frees the lock");
                }
                return None;
            }
            Ok(guard) => return Some(guard),
            Err(LockError::Timeout { .. }) => {
                waited += slice;
                if waited >= ctx.config.lock_wait {
                    waited = Duration::ZERO;
                    tracing::debug!(%resource, "still waiting for the product lock");
                }
            }
            Err(error) => {
                WorkerStats::bump(&ctx.stats.retries);
                tracing::warn!(%error, %resource, "cannot take the product lock; retrying");
                if !ctx.pause(retry.next_delay()).await {
                    return None;
                }
            }
        }
    }
}

/// Decides `batch` (orders of `product`) while holding the product's lock, through the fenced
/// sale, every statement on `conn` (taken before the lock). Decided jobs leave `batch`; what is
/// left must be retried.
async fn hold(
    ctx: &Ctx,
    guard: &ProductGuard,
    conn: PoolConnection<Postgres>,
    product: ProductId,
    batch: &mut Vec<Job>,
) -> HoldEnd {
    let mut sale = FencedSale::new(
        &ctx.store,
        &ctx.locks,
        guard,
        product,
        &ctx.config.worker_id,
    )
    .on_connection(conn);
    if ctx.config.group_commit {
        sale = sale.in_group(&ctx.sale_group);
    }
    let stock = match claim(ctx, &sale, product, batch).await {
        Ok(stock) => stock,
        Err(end) => return end,
    };
    // The slow step of each order in turn, abandoned if the lock is lost. Once shutdown begins,
    // no further order starts: those are given back, the started ones are decided below.
    let mut started = 0;
    while started < batch.len() && !ctx.stopping.is_cancelled() {
        if let Err(error) = sale.slow_step(ctx.config.work, &ctx.hard_stop).await {
            if matches!(error, SaleError::LockLost) {
                WorkerStats::bump(&ctx.stats.locks_lost);
            }
            return HoldEnd::AGAIN;
        }
        started += 1;
    }
    if started < batch.len() {
        let unstarted: Vec<Vec<u8>> = batch.drain(started..).map(|job| job.payload).collect();
        ctx.give_back(&unstarted).await;
        if batch.is_empty() {
            return HoldEnd::Done;
        }
    }
    let mut retry = Retry::default();
    let deadline = ctx.health.step_deadline(ctx.config.postgres_outage_limit);
    loop {
        let orders: Vec<SaleOrder> = batch
            .iter_mut()
            .map(|job| {
                job.attempts += 1;
                SaleOrder {
                    order: job.order,
                    attempts: job.attempts,
                }
            })
            .collect();
        let (results, stopped) =
            match tokio::time::timeout_at(deadline, sale.sell(stock, &orders)).await {
                Ok(Ok(results)) => (results, None),
                Ok(Err(SaleStop { decided, error })) => (decided, Some(error)),
                Err(_) => {
                    ctx.health
                        .mark_down("the commit got no answer within the outage limit");
                    return HoldEnd::Outage;
                }
            };
        let decided: Vec<Job> = batch.drain(..results.len()).collect();
        for (job, result) in decided.iter().zip(results) {
            ctx.record(&job.order, result);
        }
        let payloads: Vec<&[u8]> = decided.iter().map(|job| job.payload.as_slice()).collect();
        ctx.ack_many(&payloads).await;
        let Some(error) = stopped else {
            ctx.commit_failures.succeeded(product);
            return HoldEnd::Done;
        };
        match error {
            SaleError::LockLost => {
                // Not required for safety (the fence refuses a stale commit); saves a doomed one.
                WorkerStats::bump(&ctx.stats.locks_lost);
                return HoldEnd::AGAIN;
            }
            SaleError::Stale { current } => {
                WorkerStats::bump(&ctx.stats.stale_fences);
                tracing::debug!(
                    fence = sale.fence(),
                    current,
                    "commit refused: the row carries a newer fence"
                );
                return HoldEnd::AGAIN;
            }
            SaleError::UnknownProduct(_) => return reject_all_unknown(ctx, batch).await,
            SaleError::Store(error) if error.is_no_connection() => {
                // Nothing was sent: back off without the lock rather than wait holding it.
                WorkerStats::bump(&ctx.stats.retries);
                tracing::warn!(%error, product_id = %product, "no Postgres connection for the commit; releasing the lock and backing off");
                return HoldEnd::Retry {
                    pause: retry.next_delay(),
                };
            }
            SaleError::Store(error) if error.is_transient() => {
                WorkerStats::bump(&ctx.stats.retries);
                if Instant::now() >= deadline {
                    ctx.health.mark_down(&error.to_string());
                    return HoldEnd::Outage;
                }
                tracing::warn!(%error, product_id = %product, "commit failed; retrying");
                if !ctx.pause(until(deadline, retry.next_delay())).await {
                    return HoldEnd::AGAIN;
                }
            }
            SaleError::Store(error) => {
                let cause = cause_chain(&error);
                match ProcessError::from(error) {
                    // Fails the same way under every hold: a back-off that outlives the hold.
                    ProcessError::Retryable(_) => {
                        return HoldEnd::Retry {
                            pause: ctx.commit_failures.failed(product, &cause),
                        };
                    }
                    ProcessError::Fatal(why) => {
                        // The order the commit stopped at can never be decided; the rest can.
                        let job = batch.remove(0);
                        dead_letter(ctx, &job.payload, &why).await;
                        if batch.is_empty() {
                            return HoldEnd::Done;
                        }
                    }
                }
            }
            SaleError::Stopped | SaleError::FloorNotRaised(_) => return HoldEnd::AGAIN,
        }
    }
}

/// Claims the product row, retrying transient failures while the lock is held; `Err` ends the
/// hold.
async fn claim(
    ctx: &Ctx,
    sale: &FencedSale<'_>,
    product: ProductId,
    batch: &mut Vec<Job>,
) -> Result<i32, HoldEnd> {
    let mut retry = Retry::default();
    let deadline = ctx.health.step_deadline(ctx.config.postgres_outage_limit);
    loop {
        let Ok(claimed) = tokio::time::timeout_at(deadline, sale.claim()).await else {
            ctx.health
                .mark_down("the claim got no answer within the outage limit");
            return Err(HoldEnd::Outage);
        };
        match claimed {
            Ok(stock) => return Ok(stock),
            Err(SaleError::UnknownProduct(_)) => return Err(reject_all_unknown(ctx, batch).await),
            Err(SaleError::Stale { .. }) => {
                // The floor is raised: the next acquisition gets a token the database accepts.
                WorkerStats::bump(&ctx.stats.stale_fences);
                return Err(HoldEnd::AGAIN);
            }
            Err(SaleError::FloorNotRaised(error)) => {
                WorkerStats::bump(&ctx.stats.stale_fences);
                tracing::warn!(%error, product_id = %product, "raising the fence floor failed");
                return Err(HoldEnd::Retry {
                    pause: retry.next_delay(),
                });
            }
            Err(SaleError::Store(error)) if error.is_no_connection() => {
                // Never hold the lock while waiting for a connection: back off without it.
                WorkerStats::bump(&ctx.stats.retries);
                tracing::warn!(%error, product_id = %product, "no Postgres connection; releasing the lock and backing off");
                return Err(HoldEnd::Retry {
                    pause: retry.next_delay(),
                });
            }
            Err(SaleError::Store(error)) if error.is_transient() => {
                WorkerStats::bump(&ctx.stats.retries);
                if Instant::now() >= deadline {
                    ctx.health.mark_down(&error.to_string());
                    return Err(HoldEnd::Outage);
                }
                tracing::warn!(%error, product_id = %product, "claiming the product failed; retrying");
            }
            Err(error) => {
                tracing::error!(%error, product_id = %product, "claiming the product failed");
                if Instant::now() >= deadline {
                    return Err(HoldEnd::Retry {
                        pause: retry.next_delay(),
                    });
                }
            }
        }
        if sale.is_lost() || !ctx.pause(until(deadline, retry.next_delay())).await {
            return Err(HoldEnd::AGAIN);
        }
    }
}

/// Records every job of `batch` as rejected for an unknown product; those that could not be
/// recorded stay in `batch` for a later hold.
async fn reject_all_unknown(ctx: &Ctx, batch: &mut Vec<Job>) -> HoldEnd {
    for job in std::mem::take(batch) {
        if reject_unknown_product(ctx, &job).await.is_err() {
            batch.push(job);
        }
    }
    if batch.is_empty() {
        HoldEnd::Done
    } else {
        HoldEnd::Retry {
            pause: Retry::default().next_delay(),
        }
    }
}

/// `delay`, but ending no later than `deadline` (a retry under a held lock never waits past it).
fn until(deadline: Instant, delay: Duration) -> Duration {
    delay.min(deadline.saturating_duration_since(Instant::now()))
}
