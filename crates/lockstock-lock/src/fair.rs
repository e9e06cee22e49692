//! [`FairLock`]: a fenced mutex serving acquirers in strict FIFO order of arrival (guide on
//! the type).

use std::{sync::Arc, time::Duration};

use redis::{Script, ScriptInvocation, Value};

use super::{
    client::LockClient,
    error::Result,
    guard::{Held, Holder, ReleaseOutcome, held_guard_methods},
    inspect::{LockInfo, read_lock},
    keys::FairKeys,
    options::LockOptions,
    scripts::SCRIPTS,
    semaphore::DEFAULT_WAITER_LEASE,
    waiting::{self, Attempt, Pace, QueuedOps, Ticket, WaitPlan},
};

/// [`FairLock`]: a fenced mutex that serves acquirers in strict FIFO order of arrival.
///
/// # Guarantees
/// - When waiters are queued, then the lock goes to the oldest live one — on release, and also
///   when the holder's TTL ran out (the next script call hands it over) — never to a newer
///   arrival. An acquirer takes the lock at once only when it is free *and* nobody live is
///   queued. Arrival is the moment the first acquire script ran for the caller.
/// - When the lock is handed over, then the new holder wakes on the hand-off message (no
///   polling) and owns it without another round trip.
/// - When a waiter gives up (deadline, or its future is dropped), then it leaves the queue and,
///   if it was at the head of a free lock, the lock goes on to the next live waiter at once. When
///   a waiter dies, then its entry's lease (renewed every third of it while it lives) runs out
///   and the next script call skips it: a dead waiter blocks the queue for at most one lease.
/// - Fencing tokens strictly increase in grant order; heartbeat, lost signal and safety deadline
///   as for every guard.
///
/// # Not guaranteed
/// - A waiter paused (or cut off from Redis) past its lease loses its place: when it renews, it
///   is queued again at the back.
/// - Exclusion in the face of pauses: use the fencing token where writes land.
///
/// # Why a separate type, not a strict mode of the mutex
/// [`crate::LockClient`]'s mutex already queues waiters FIFO, but two of its design choices are
/// wrong for strict fairness and right for its own job: its queue entries expire at the waiter's
/// *deadline* (a waiter that dies while waiting 30 s would block a strict queue for 30 s), and
/// its one-round-trip fast path lets an arrival take a *free* lock even while waiters sit queued
/// behind an expired holder. Making that path strict would cost every mutex user a queue check
/// and change the mutex's behaviour under everyone's feet. So the fair lock has its own keys
/// (`P:{R}:fair:*`), scripts and renewable waiter leases, and shares the rest: the notifier, the
/// hand-off message format, the guard's heartbeat and lost signal. A fair lock and a mutex on the
/// same resource name are two different locks.
///
/// # Example
/// ```rust,no_run
/// use std::time::Duration;
/// use lockstock_lock::{FairLock, LockClient, LockConfig, LockOptions};
///
/// # async fn demo() -> Result<(), lockstock_lock::LockError> {
/// let client = LockClient::connect("redis://127.0.0.1:6379", LockConfig::default()).await?;
/// let turn = FairLock::new(&client, "printer")?;
/// let guard = turn.acquire(&LockOptions::default(), Duration::from_secs(30)).await?;
/// // ... everyone who asked before us has had their turn ...
/// guard.release().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct FairLock {
    client: LockClient,
    keys: Arc<FairKeys>,
    waiter_lease: Duration,
}

/// A held fair lock.
#[derive(Debug)]
#[must_use = "a fair lock should be released with `release().await`"]
pub struct FairGuard {
    held: Held<FairOps>,
}

/// The Redis side of one acquisition (one token), waiting or held.
#[derive(Debug, Clone)]
struct FairOps {
    ticket: Ticket,
    keys: Arc<FairKeys>,
}

impl FairLock {
    /// A fair lock on `resource` (refused with [`LockError::InvalidArgument`] when the name is
    /// unusable).
    ///
    /// [`LockError::InvalidArgument`]: crate::LockError::InvalidArgument
    pub fn new(client: &LockClient, resource: &str) -> Result<Self> {
        Ok(Self {
            keys: Arc::new(client.keys().fair(resource)?),
            client: client.clone(),
            waiter_lease: DEFAULT_WAITER_LEASE,
        })
    }

    /// Sets how long a waiter's queue entry lives without renewal (the longest a dead waiter
    /// can block the queue); refuses leases under 30 ms.
    pub fn with_waiter_lease(mut self, lease: Duration) -> Result<Self> {
        self.waiter_lease = waiting::check_waiter_lease(lease)?;
        Ok(self)
    }

    /// The resource name.
    pub fn resource(&self) -> &str {
        &self.keys.resource
    }

    /// Takes the lock if it is free and nobody is queued; `Ok(None)` otherwise.
    pub async fn try_acquire(&self, options: &LockOptions) -> Result<Option<FairGuard>> {
        waiting::none_on_timeout(self.acquire(options, Duration::ZERO).await)
    }

    /// Takes the lock in arrival order, waiting up to `wait` ([`LockError::Timeout`] after
    /// that, having left the queue).
    ///
    /// [`LockError::Timeout`]: crate::LockError::Timeout
    #[tracing::instrument(level = "debug", skip_all, fields(resource = %self.keys.resource), err(level = "debug"))]
    pub async fn acquire(&self, options: &LockOptions, wait: Duration) -> Result<FairGuard> {
        options.validate()?;
        let ops = FairOps {
            ticket: Ticket::new(&self.client, &self.keys.handoff, options),
            keys: self.keys.clone(),
        };
        let plan = WaitPlan {
            resource: &self.keys.resource,
            wait,
            pace: Pace::lease(self.waiter_lease),
        };
        let grant = waiting::acquire(&ops, plan).await?;
        Ok(FairGuard {
            held: Held::start(ops, "fair lock", &self.keys.resource, options, grant),
        })
    }

    /// Who holds the lock right now, if anyone.
    pub async fn inspect(&self) -> Result<Option<LockInfo>> {
        read_lock(
            &mut self.client.connection(),
            &self.keys.lock,
            &self.keys.resource,
        )
        .await
    }

    /// How many entries the wait queue has (live or not yet pruned).
    pub async fn queue_len(&self) -> Result<usize> {
        let mut conn = self.client.connection();
        Ok(redis::cmd("LLEN")
            .arg(&self.keys.queue)
            .query_async(&mut conn)
            .await?)
    }
}

impl FairGuard {
    held_guard_methods!();
}

impl FairOps {
    /// `script` on the fair lock's four keys with the caller's token as `ARGV[1]`.
    fn call<'a>(&'a self, script: &'a Script) -> ScriptInvocation<'a> {
        let mut invocation = script.key(&self.keys.lock);
        invocation
            .key(&self.keys.fence)
            .key(&self.keys.queue)
            .key(&self.keys.waiters)
            .arg(&self.ticket.token);
        invocation
    }
}

impl QueuedOps for FairOps {
    fn ticket(&self) -> &Ticket {
        &self.ticket
    }

    async fn attempt(&self, lease_ms: u64) -> Result<Attempt> {
        let client = &self.ticket.client;
        let reply: Vec<Value> = client
            .run(
                self.call(&SCRIPTS.fair_acquire)
                    .arg(self.ticket.ttl_ms)
                    .arg(client.owner_json())
                    .arg(lease_ms)
                    .arg(&self.ticket.channel),
            )
            .await?;
        waiting::parse_attempt("fair_acquire", &reply)
    }

    async fn cancel(&self) -> Result<Option<(u64, u64)>> {
        let reply: Vec<Value> = self
            .ticket
            .client
            .run(&mut self.call(&SCRIPTS.fair_cancel))
            .await?;
        waiting::parse_cancel("fair_cancel", &reply)
    }
}

impl Holder for FairOps {
    async fn extend(&self, ttl_ms: u64) -> Result<bool> {
        self.ticket.extend_exclusive(&self.keys.lock, ttl_ms).await
    }

    async fn release(&self) -> Result<ReleaseOutcome> {
        let reply: i64 = self
            .ticket
            .client
            .run(&mut self.call(&SCRIPTS.fair_release))
            .await?;
        ReleaseOutcome::from_reply("fair_release", reply)
    }

    fn owner(&self) -> &str {
        self.ticket.client.owner_json()
    }
}
