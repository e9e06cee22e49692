//! The worker: the only module that composes the queue, the lock and the store.
//!
//! A [`Worker`] pulls purchase orders from the Redis list with a blocking atomic move into its own
//! processing list, processes each under its product's lock (the fenced path, `fenced.rs`, over
//! the one fenced sale of `crate::sale`) and acknowledges it only after its outcome is
//! committed in Postgres.
//!
//! | file | concern |
//! |---|---|
//! | `fenced.rs` | product lanes decided in batches under the product's lock |
//! | `unlocked.rs` | the seed's unsafe `--no-lock` path, for the demo |
//! | `poison.rs` | invalid messages, unknown products, dead letters |
//! | `retry.rs` | the one retry policy (on `backon`) every loop waits by |
//! | `lanes.rs` | per-product lanes and concurrency slots |
//! | `intake_sweep.rs` | pushing recorded orders Redis lost back onto the queue |
//! | `outage.rs` | Postgres outages: no lock held without Postgres, pause and resume |
//! | `inflight.rs` | reserved messages by digest, and the byte budget that bounds them |
//! | `reconcile.rs` | adopting messages of our processing list whose reserve reply was lost |
//! | `failing.rs` | commits that keep failing: a per-product back-off across lock holds |
//!
//! # Guarantees
//! - When an order is pulled, then it stays in this worker's processing list until its outcome
//!   (or dead letter) is stored; a worker killed at any point loses nothing: once its liveness key
//!   expires, a live worker moves its processing list back to the pending list.
//! - Every order gets exactly one outcome row: commits are idempotent by order id, so a
//!   redelivered order is acknowledged without a second effect.
//! - Stock never goes below zero on the locked path, whatever the pauses: every decision is
//!   fenced (see `crate::sale`).
//! - When many queued orders want one product, then they wait in that product's lane without
//!   taking concurrency slots; orders for other products keep flowing.
//! - When a blocking move's reply was lost, then the message sits in this worker's processing
//!   list unknown to it; the periodic reconciliation adopts it after it was seen orphaned twice.
//! - When shutdown is requested, then the worker stops pulling, gives every reserved order whose
//!   slow step has not begun back to the pending list at once (parked, waiting for a slot or for
//!   the lock, or later in a batch), finishes the orders whose slow step has begun and commits
//!   them, releases its locks, deletes its liveness key and returns. The drain is bounded by one
//!   order's slow step plus one commit, or one 500 ms lock-wait slice for a lane waiting for its
//!   lock (plus the give-back and release round trips), not by the backlog; the drain timeout
//!   caps it when Postgres or Redis hang.
//! - Reservations are bounded by what the process can start soon: at most a prefetch limit of
//!   orders wait beside the batches being decided, so a hot product or a slow step does not make
//!   one worker hoard orders that idle workers could take. By default the limit follows the
//!   worker's pace (`prefetch.rs`: half a second of work, between one batch and a batch per
//!   slot); `backlog_limit` with `adaptive_prefetch` off fixes it.
//! - The bytes of reserved, unacknowledged messages are bounded too (`max_reserved_bytes`,
//!   default 64 MiB): the puller stops reserving at the budget, so large messages cannot grow
//!   the process beyond it (exceeded by at most one pull's estimate, see `inflight.rs`). Each
//!   message is held once (its exact bytes, which the acknowledging `LREM` needs) plus its
//!   decoded order (unknown JSON fields are dropped there); the in-flight set keeps digests.
//!
//! # Not guaranteed
//! - Orders pushed without the durable intake (`producer --no-intake`, or raw `LPUSH`es) are
//!   lost when Redis loses its data; recorded ones are pushed again by the intake sweep
//!   (`intake_sweep.rs`) with no operator step.
//! - When Postgres stops answering, then no product lock is held beyond
//!   `postgres_outage_limit` (see `outage.rs`), but orders wait until it answers again.
//! - Order of outcomes across products, or across workers for one product beyond the lock's FIFO.

mod error;
mod failing;
mod fenced;
mod inflight;
mod intake_sweep;
mod lanes;
mod outage;
mod poison;
mod prefetch;
mod reconcile;
mod retry;
mod unlocked;

use std::{sync::Arc, time::Duration};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::product_lock::ProductLocks;

pub use self::error::ProcessError;
use self::{
    lanes::{Admitted, Job, Lanes, Task},
    prefetch::PrefetchLimit,
    retry::Retry,
};
pub use crate::observe::{StatsSnapshot, WorkerStats};
use crate::{
    order::{Outcome, PurchaseOrder, RejectReason, decode},
    queue::JobQueue,
    store::{CommitResult, OrderStore},
};

/// How a worker behaves. `WorkerConfig::default()` matches the `worker` binary's defaults.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// This worker's id (recorded on outcome rows; must match the queue's worker id).
    pub worker_id: String,
    /// Orders processed at once (product lanes active at once). Default 16.
    pub concurrency: usize,
    /// Product lock TTL. Default 10 s, as in the seed.
    pub lock_ttl: Duration,
    /// The simulated slow step between reading the stock and selling. Default 0.
    pub work: Duration,
    /// Take product locks (`false` = the seed's unsafe path, for the demo only).
    pub use_lock: bool,
    /// How long one lock acquisition waits before it is retried (and logged). Default 30 s.
    pub lock_wait: Duration,
    /// The longest single wait for a product lock: how late a waiting lane notices shutdown or
    /// an outage. Default 500 ms (longer only for the chaos harness's paused-waiter self-test).
    pub lock_wait_slice: Duration,
    /// Most orders decided under one lock hold (one commit statement) before giving other
    /// processes a turn. Default 64.
    pub batch_limit: usize,
    /// Send the lanes' claims and commits through one group commit (`crate::sale::SaleGroup`):
    /// several product holds per transaction. Default off: on a fast disk with a busy CPU it
    /// measured slower than a statement per hold (BENCHMARKS.md).
    pub group_commit: bool,
    /// Most orders parked in product lanes or waiting for a slot at once: the prefetch beyond the
    /// batches being decided; with `adaptive_prefetch`, the least the limit falls to. Default
    /// 64 (one batch): a reservation is a promise that this process will get to the order soon,
    /// and orders parked behind a hot product's lock are orders idle workers could take.
    pub backlog_limit: usize,
    /// Let the prefetch limit follow the pace (`prefetch.rs`): half a second of work at the rate
    /// orders were taken in lately, between `backlog_limit` and `concurrency` × `batch_limit`.
    /// Default on; off, the limit is `backlog_limit` (`worker --prefetch N`).
    pub adaptive_prefetch: bool,
    /// Most bytes of reserved, unacknowledged messages before the puller waits. Default 64 MiB.
    pub max_reserved_bytes: usize,
    /// How long a graceful shutdown waits for in-flight orders. Default 30 s.
    pub drain_timeout: Duration,
    /// Liveness key TTL; renewed every third of it. Default 10 s.
    pub liveness_ttl: Duration,
    /// How often dead workers' processing lists are looked for. Default 5 s.
    pub recovery_interval: Duration,
    /// How often this worker's own processing list is reconciled. Default 10 s.
    pub reconcile_interval: Duration,
    /// How long one blocking pull waits. Default 1 s.
    pub poll_timeout: Duration,
    /// How often a summary line is logged. Default 10 s.
    pub summary_interval: Duration,
    /// How long a worker may go without Postgres answering while it holds a product lock (or
    /// reserved orders) before it releases the lock, gives the orders back and pauses until
    /// Postgres answers. Default 5 s.
    pub postgres_outage_limit: Duration,
    /// How often the intake recovery sweep runs (zero: never). Default 5 s.
    pub intake_sweep_interval: Duration,
    /// How old an undecided intake row must be before the sweep may push it again. Default 10 s.
    pub intake_stale_after: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            worker_id: crate::queue::default_worker_id(),
            concurrency: 16,
            lock_ttl: Duration::from_secs(10),
            work: Duration::ZERO,
            use_lock: true,
            lock_wait: Duration::from_secs(30),
            lock_wait_slice: Duration::from_millis(500),
            batch_limit: 64,
            group_commit: false,
            backlog_limit: 64,
            adaptive_prefetch: true,
            max_reserved_bytes: DEFAULT_MAX_RESERVED_BYTES,
            drain_timeout: Duration::from_secs(30),
            liveness_ttl: Duration::from_secs(10),
            recovery_interval: Duration::from_secs(5),
            reconcile_interval: Duration::from_secs(10),
            poll_timeout: Duration::from_secs(1),
            summary_interval: Duration::from_secs(10),
            postgres_outage_limit: Duration::from_secs(5),
            intake_sweep_interval: intake_sweep::DEFAULT_INTERVAL,
            intake_stale_after: intake_sweep::DEFAULT_STALE_AFTER,
        }
    }
}

/// The default byte budget of reserved messages ([`WorkerConfig::max_reserved_bytes`]): 64 MiB.
pub const DEFAULT_MAX_RESERVED_BYTES: usize = 64 << 20;

/// Errors that stop a worker from starting.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A setting cannot work.
    #[error("invalid worker configuration: {0}")]
    Config(String),
}

/// What every task of a worker shares.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) queue: JobQueue,
    pub(crate) locks: ProductLocks,
    pub(crate) store: OrderStore,
    pub(crate) config: WorkerConfig,
    pub(crate) stats: Arc<WorkerStats>,
    pub(crate) lanes: Lanes,
    /// Messages pulled and not yet acknowledged, by digest, and their byte budget.
    inflight: inflight::InFlight,
    /// Cancelled when in-flight work must be abandoned (drain timeout, or hard stop).
    pub(crate) hard_stop: CancellationToken,
    /// Cancelled when shutdown begins: orders whose slow step has not begun are given back.
    pub(crate) stopping: CancellationToken,
    /// Whether Postgres is being waited out (see `outage.rs`).
    pub(crate) health: outage::PostgresHealth,
    /// Products whose commits keep failing, and their back-offs (see `failing.rs`).
    pub(crate) commit_failures: failing::CommitFailures,
    /// The lanes' claims and commits, grouped into shared transactions (`crate::sale`).
    pub(crate) sale_group: crate::sale::SaleGroup,
}

impl Ctx {
    fn track(&self, payload: &[u8]) {
        self.inflight.track(payload);
    }

    /// Forgets one in-flight copy of `payload` (after it was acknowledged or dead-lettered).
    pub(crate) fn forget(&self, payload: &[u8]) {
        self.inflight.forget(payload);
    }

    /// Acknowledges a decided message, retrying while Redis is away (until a hard stop: the
    /// message is then redelivered and recognised as already decided).
    pub(crate) async fn ack(&self, payload: &[u8]) {
        self.ack_many(&[payload]).await;
    }

    /// Acknowledges several decided messages in one round trip, retrying like [`Ctx::ack`].
    pub(crate) async fn ack_many<P: AsRef<[u8]>>(&self, payloads: &[P]) {
        let mut retry = Retry::default();
        loop {
            match self.queue.ack_many(payloads).await {
                Ok(_) => break,
                Err(error) => {
                    tracing::warn!(%error, "acknowledging failed; retrying");
                    if !self.pause(retry.next_delay()).await {
                        break;
                    }
                }
            }
        }
        for payload in payloads {
            self.forget(payload.as_ref());
        }
    }

    /// Gives reserved messages this worker will not start back to the pending list at once (one
    /// script each, all in flight together) and forgets them. A message that cannot be given
    /// back stays in the processing list, which deregistering (or recovery) hands back later.
    pub(crate) async fn give_back<P: AsRef<[u8]>>(&self, payloads: &[P]) {
        if payloads.is_empty() {
            return;
        }
        let results = futures_util::future::join_all(
            payloads
                .iter()
                .map(|payload| self.queue.requeue(payload.as_ref())),
        )
        .await;
        let failed = results.iter().filter(|r| r.is_err()).count();
        if failed > 0 {
            tracing::warn!(
                failed,
                "giving orders back failed; they stay in the processing list"
            );
        }
        for payload in payloads {
            self.forget(payload.as_ref());
        }
        tracing::debug!(
            given_back = payloads.len() - failed,
            "gave unstarted orders back"
        );
    }

    /// Counts and logs what a commit did.
    pub(crate) fn record(&self, order: &PurchaseOrder, result: CommitResult) {
        match result {
            CommitResult::Committed {
                outcome,
                remaining_stock,
            } => {
                match outcome {
                    Outcome::Fulfilled => WorkerStats::bump(&self.stats.fulfilled),
                    Outcome::Rejected(_) => WorkerStats::bump(&self.stats.rejected),
                }
                tracing::debug!(order_id = %order.id, product_id = %order.product_id, %outcome, ?remaining_stock, "order decided");
            }
            CommitResult::AlreadyDecided(outcome) => {
                WorkerStats::bump(&self.stats.already_decided);
                if outcome.reason() == Some(RejectReason::Unrecognized) {
                    // A newer version decided it: acknowledged as decided, never re-decided or
                    // dead-lettered, and said so.
                    tracing::info!(order_id = %order.id, product_id = %order.product_id, "order already decided with a reason this version does not know; acknowledged again");
                } else {
                    tracing::debug!(order_id = %order.id, %outcome, "order already decided; acknowledged again");
                }
            }
        }
    }

    /// Sleeps for `duration` or until shutdown begins; `false` when a hard stop interrupted it.
    /// For waits between lock holds, which shutdown ends early (the lane then gives its orders
    /// back).
    pub(crate) async fn pause_unless_stopping(&self, duration: Duration) -> bool {
        tokio::select! {
            () = self.stopping.cancelled() => !self.hard_stop.is_cancelled(),
            keep_going = self.pause(duration) => keep_going,
        }
    }

    /// Sleeps for `duration`; `false` when a hard stop interrupted it.
    pub(crate) async fn pause(&self, duration: Duration) -> bool {
        tokio::select! {
            () = self.hard_stop.cancelled() => false,
            () = tokio::time::sleep(duration) => true,
        }
    }
}

/// A worker process's engine.
#[derive(Debug)]
pub struct Worker {
    ctx: Arc<Ctx>,
}

impl Worker {
    /// A worker over a queue (whose worker id names this worker), its product locks (a
    /// [`lockstock_lock::LockClient`] or a [`lockstock_lock::Redlock`]) and a store.
    pub fn new(
        queue: JobQueue,
        locks: impl Into<ProductLocks>,
        store: OrderStore,
        mut config: WorkerConfig,
    ) -> Result<Self, WorkerError> {
        if config.concurrency == 0 {
            return Err(WorkerError::Config("concurrency must be at least 1".into()));
        }
        if config.max_reserved_bytes == 0 {
            return Err(WorkerError::Config(
                "the reserved bytes budget must be at least 1".into(),
            ));
        }
        if config.batch_limit == 0 || config.backlog_limit == 0 {
            return Err(WorkerError::Config(
                "batch and backlog limits must be at least 1".into(),
            ));
        }
        if config.lock_ttl.as_millis() < 3 {
            return Err(WorkerError::Config(
                "the lock TTL must be at least 3 ms".into(),
            ));
        }
        if config.postgres_outage_limit < Duration::from_millis(100) {
            return Err(WorkerError::Config(
                "the Postgres outage limit must be at least 100 ms".into(),
            ));
        }
        if config.liveness_ttl < Duration::from_millis(300) {
            return Err(WorkerError::Config(
                "the liveness TTL must be at least 300 ms".into(),
            ));
        }
        config.worker_id = queue.worker_id().to_owned();
        let prefetch = if config.adaptive_prefetch {
            PrefetchLimit::adaptive(
                config.backlog_limit,
                config.concurrency.saturating_mul(config.batch_limit),
            )
        } else {
            PrefetchLimit::fixed(config.backlog_limit)
        };
        let lanes = Lanes::new(config.concurrency, prefetch);
        let stats = Arc::new(WorkerStats::default());
        Ok(Self {
            ctx: Arc::new(Ctx {
                inflight: inflight::InFlight::new(config.max_reserved_bytes, stats.clone()),
                queue,
                locks: locks.into(),
                store,
                lanes,
                config,
                stats,
                hard_stop: CancellationToken::new(),
                stopping: CancellationToken::new(),
                health: outage::PostgresHealth::default(),
                commit_failures: failing::CommitFailures::default(),
                sale_group: crate::sale::SaleGroup::default(),
            }),
        })
    }

    /// The worker's live counters.
    pub fn stats(&self) -> Arc<WorkerStats> {
        self.ctx.stats.clone()
    }

    /// Cancelled to abandon in-flight work at once (e.g. on a second signal); the orders stay in
    /// the processing list for recovery.
    pub fn hard_stop(&self) -> CancellationToken {
        self.ctx.hard_stop.clone()
    }

    /// Runs until `shutdown` is cancelled, then drains and returns the final counters.
    pub async fn run(self, shutdown: CancellationToken) -> StatsSnapshot {
        let ctx = self.ctx;
        let config = &ctx.config;
        tracing::info!(
            worker = %config.worker_id,
            concurrency = config.concurrency,
            lock_ttl_ms = config.lock_ttl.as_millis() as u64,
            work_ms = config.work.as_millis() as u64,
            locked = config.use_lock,
            "worker started"
        );
        // Liveness first, so no other worker mistakes this one for dead.
        let mut retry = Retry::default();
        while let Err(error) = ctx.queue.heartbeat_liveness(config.liveness_ttl).await {
            tracing::warn!(%error, "registering liveness failed; retrying");
            tokio::select! {
                () = shutdown.cancelled() => return ctx.stats.snapshot(),
                () = tokio::time::sleep(retry.next_delay()) => {}
            }
        }
        let upkeep_stop = CancellationToken::new();
        let upkeep = tokio::spawn(upkeep(ctx.clone(), upkeep_stop.clone()));
        let sweep = tokio::spawn(intake_sweep::run(ctx.clone(), upkeep_stop.clone()));
        let monitor = tokio::spawn(outage::monitor(ctx.clone(), upkeep_stop.clone()));
        let tracker = TaskTracker::new();

        pull(&ctx, &tracker, &shutdown).await;

        // Drain: finish what has begun, give the rest back at once.
        ctx.stopping.cancel();
        tracker.close();
        let waiting = ctx.lanes.take_waiting();
        tracing::info!(
            in_flight = tracker.len(),
            given_back = waiting.len(),
            "stopping: finishing orders whose slow step has begun, giving the rest back"
        );
        ctx.give_back(&waiting).await;
        if tokio::time::timeout(config.drain_timeout, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                abandoned = tracker.len(),
                drain_timeout_ms = config.drain_timeout.as_millis() as u64,
                "drain timed out; abandoning the rest to the pending list"
            );
            ctx.hard_stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
        }
        ctx.hard_stop.cancel();
        upkeep_stop.cancel();
        let _ = upkeep.await;
        let _ = sweep.await;
        let _ = monitor.await;
        match ctx.queue.deregister().await {
            Ok(0) => {}
            Ok(moved) => {
                tracing::info!(moved, "moved unfinished messages back to the pending list")
            }
            Err(error) => {
                tracing::warn!(%error, "deregistering failed; the liveness key will expire")
            }
        }
        let summary = ctx.stats.snapshot();
        tracing::info!(worker = %config.worker_id, ?summary, "worker stopped");
        summary
    }
}

/// Most messages taken from the queue in one round trip.
const PULL_BATCH: usize = 64;

/// The pull loop: reserve (a batch when messages are waiting), decode, hand to the lanes;
/// reconcile the processing list between pulls. It waits only for backlog room, never for a
/// slot (see [`lanes`]).
async fn pull(ctx: &Arc<Ctx>, tracker: &TaskTracker, shutdown: &CancellationToken) {
    let mut reconciler = reconcile::Reconciler::new();
    let mut retry = Retry::default();
    loop {
        if ctx.health.is_down() {
            outage::wait_for_postgres(ctx, shutdown).await;
            continue;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = async {
                ctx.lanes.wait_for_space().await;
                ctx.inflight.wait_for_room().await;
            } => {}
        }
        if reconciler.due() {
            for payload in reconciler.pass(ctx).await {
                dispatch(ctx, tracker, payload);
            }
        }
        // Orphans still waiting for room: do not block on an empty queue meanwhile.
        let wait = if reconciler.has_left_over() {
            Duration::ZERO
        } else {
            ctx.config.poll_timeout
        };
        let room = ctx
            .inflight
            .pull_limit(ctx.lanes.room().clamp(1, PULL_BATCH));
        let reserved = tokio::select! {
            () = shutdown.cancelled() => return,
            reserved = ctx.queue.reserve_many(room, wait) => reserved,
        };
        match reserved {
            Ok(payloads) => {
                retry = Retry::default();
                for payload in payloads {
                    ctx.track(&payload);
                    dispatch(ctx, tracker, payload);
                }
            }
            Err(error) => {
                tracing::warn!(%error, "pulling from the queue failed; backing off");
                WorkerStats::bump(&ctx.stats.retries);
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(retry.next_delay()) => {}
                }
            }
        }
    }
}

/// Hands a pulled (and tracked) message to the lanes, starting a slot task when one is free.
fn dispatch(ctx: &Arc<Ctx>, tracker: &TaskTracker, payload: Vec<u8>) {
    let task = match decode(&payload) {
        Ok(order) => {
            let job = Job {
                payload,
                order,
                attempts: 0,
            };
            if ctx.config.use_lock {
                Task::Lane(job)
            } else {
                Task::Unlocked(job)
            }
        }
        Err(poison) => Task::Poison(payload, poison),
    };
    if let Admitted::Run(task) = ctx.lanes.admit(task) {
        tracker.spawn(run_slot(ctx.clone(), task));
    }
}

/// One concurrency slot: runs its task, then whatever waits for a slot, until nothing does.
async fn run_slot(ctx: Arc<Ctx>, first: Task) {
    let mut task = first;
    loop {
        match task {
            Task::Lane(job) => fenced::run_lane(ctx.clone(), job).await,
            Task::Unlocked(job) => unlocked::run_unlocked(ctx.clone(), job).await,
            Task::Poison(payload, poison) => poison::run_poison(ctx.clone(), payload, poison).await,
        }
        if ctx.hard_stop.is_cancelled() {
            return;
        }
        match ctx.lanes.slot_next() {
            Some(next) => task = next,
            None => return,
        }
    }
}

/// Background duties: liveness, recovery of dead workers, a periodic summary.
async fn upkeep(ctx: Arc<Ctx>, stop: CancellationToken) {
    let config = &ctx.config;
    let mut liveness = tokio::time::interval(config.liveness_ttl / 3);
    let mut recovery = tokio::time::interval(config.recovery_interval);
    let mut summary = tokio::time::interval(config.summary_interval);
    for timer in [&mut liveness, &mut recovery, &mut summary] {
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    let mut last = ctx.stats.snapshot();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = liveness.tick() => {
                if let Err(error) = ctx.queue.heartbeat_liveness(config.liveness_ttl).await {
                    tracing::warn!(%error, "renewing liveness failed");
                }
            }
            _ = recovery.tick() => {
                match ctx.queue.recover_dead_workers().await {
                    Ok(0) => {}
                    Ok(moved) => {
                        ctx.stats.recovered.fetch_add(moved as u64, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(error) => tracing::debug!(%error, "recovering dead workers failed"),
                }
            }
            _ = summary.tick() => {
                let now = ctx.stats.snapshot();
                if now != last {
                    tracing::info!(
                        fulfilled = now.fulfilled,
                        rejected = now.rejected,
                        dead_lettered = now.dead_lettered,
                        already_decided = now.already_decided,
                        locks_lost = now.locks_lost,
                        stale_fences = now.stale_fences,
                        parked = ctx.lanes.parked(),
                        "progress"
                    );
                    last = now;
                }
            }
        }
    }
}
