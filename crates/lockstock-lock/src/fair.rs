//! [`FairLock`]: a fenced mutex that serves acquirers in strict FIFO order of arrival.
//!
//! # Guarantees
//! - When waiters are queued, then the lock goes to the oldest live one — on release, and also
//!   when the holder's TTL ran out (the next script call hands it over) — never to a newer
//!   arrival. An acquirer takes the lock at once only when it is free *and* nobody live is
//!   queued. Arrival is the moment the first acquire script ran for the caller.
//! - When the lock is handed over, then the new holder wakes on the hand-off message (no
//!   polling) and owns it without another round trip.
//! - When a waiter gives up (deadline, or its future is dropped), then it leaves the queue and,
//!   if it was at the head of a free lock, the lock goes on to the next live waiter at once. When
//!   a waiter dies, then its entry's lease (renewed every third of it while it lives) runs out
//!   and the next script call skips it: a dead waiter blocks the queue for at most one lease.
//! - Fencing tokens strictly increase in grant order; heartbeat, lost signal and safety deadline
//!   as for every guard.
//!
//! # Not guaranteed
//! - A waiter paused (or cut off from Redis) past its lease loses its place: when it renews, it
//!   is queued again at the back.
//! - Exclusion in the face of pauses: use the fencing token where writes land.
//!
//! # Why a separate type, not a strict mode of the mutex
//! [`super::LockClient`]'s mutex already queues waiters FIFO, but two of its design choices are
//! wrong for strict fairness and right for its own job: its queue entries expire at the waiter's
//! *deadline* (a waiter that dies while waiting 30 s would block a strict queue for 30 s), and
//! its one-round-trip fast path lets an arrival take a *free* lock even while waiters sit queued
//! behind an expired holder. Making that path strict would cost every mutex user a queue check
//! and change the mutex's behaviour under everyone's feet. So the fair lock has its own keys
//! (`P:{R}:fair:*`), scripts and renewable waiter leases, and shares the rest: the notifier, the
//! hand-off message format, the guard's heartbeat and lost signal. A fair lock and a mutex on the
//! same resource name are two different locks.
//!
//! # Example
//! ```rust,no_run
//! use std::time::Duration;
//! use lockstock_lock::{FairLock, LockClient, LockConfig, LockOptions};
//!
//! # async fn demo() -> Result<(), lockstock_lock::LockError> {
//! let client = LockClient::connect("redis://127.0.0.1:6379", LockConfig::default()).await?;
//! let turn = FairLock::new(&client, "printer")?;
//! let guard = turn.acquire(&LockOptions::default(), Duration::from_secs(30)).await?;
//! // ... everyone who asked before us has had their turn ...
//! guard.release().await?;
//! # Ok(()) }
//! ```

use std::{sync::Arc, time::Duration};

use redis::Value;

use super::{
    client::{LockClient, ReleaseOutcome},
    error::Result,
    held::{Held, Holder, held_guard_methods},
    inspect::LockInfo,
    keys::FairKeys,
    options::LockOptions,
    scripts::SCRIPTS,
    semaphore::{DEFAULT_WAITER_LEASE, release_outcome},
    token::LockToken,
    waiting::{self, Attempt, QueuedOps, WaitPlan},
};

/// A strict-FIFO lock on one resource: cheap to clone, shares the client's connection.
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
    client: LockClient,
    keys: Arc<FairKeys>,
    token: String,
    /// This client's own hand-off channel for the resource (kept in the queue entry).
    channel: String,
    ttl_ms: u64,
}

impl FairLock {
    /// A fair lock on `resource` (refused with [`LockError::InvalidArgument`] when the name is
    /// unusable).
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
    #[tracing::instrument(level = "debug", skip_all, fields(resource = %self.keys.resource), err(level = "debug"))]
    pub async fn acquire(&self, options: &LockOptions, wait: Duration) -> Result<FairGuard> {
        options.validate()?;
        let ops = FairOps {
            client: self.client.clone(),
            keys: self.keys.clone(),
            token: LockToken::new().to_string(),
            channel: self.client.inner.notifier.channel_for(&self.keys.handoff),
            ttl_ms: options.ttl_ms(),
        };
        let grant = waiting::acquire(
            &ops,
            WaitPlan {
                notifier: &self.client.inner.notifier,
                channel: &ops.channel,
                token: &ops.token,
                resource: &self.keys.resource,
                wait,
                lease: self.waiter_lease,
            },
        )
        .await?;
        let resource = self.keys.resource.clone();
        Ok(FairGuard {
            held: Held::start(
                ops,
                "fair lock",
                &resource,
                grant.fence,
                options,
                grant.base,
                grant.valid_for,
            ),
        })
    }

    /// Who holds the lock right now, if anyone.
    pub async fn inspect(&self) -> Result<Option<LockInfo>> {
        let mut conn = self.client.connection();
        let (value, pttl): (Option<String>, i64) = redis::pipe()
            .get(&self.keys.lock)
            .pttl(&self.keys.lock)
            .query_async(&mut conn)
            .await?;
        Ok(value.and_then(|value| {
            let mut parts = value.splitn(4, '\n');
            let _token = parts.next()?;
            let fence = parts.next()?.parse().ok()?;
            let since_unix_ms = parts.next()?.parse().ok()?;
            let owner = parts.next().and_then(|o| serde_json::from_str(o).ok());
            Some(LockInfo {
                resource: self.keys.resource.clone(),
                owner,
                since_unix_ms,
                ttl_left_ms: pttl.max(0) as u64,
                fence,
            })
        }))
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

impl QueuedOps for FairOps {
    async fn attempt(&self, lease_ms: u64) -> Result<Attempt> {
        let mut conn = self.client.conn_for_call();
        let reply: Vec<Value> = SCRIPTS
            .fair_acquire
            .key(&self.keys.lock)
            .key(&self.keys.fence)
            .key(&self.keys.queue)
            .key(&self.keys.waiters)
            .arg(&self.token)
            .arg(self.ttl_ms)
            .arg(self.client.owner_json())
            .arg(lease_ms)
            .arg(&self.channel)
            .invoke_async(&mut conn)
            .await?;
        waiting::parse_attempt("fair_acquire", &reply)
    }

    async fn cancel(&self) -> Result<Option<(u64, u64)>> {
        let mut conn = self.client.conn_for_call();
        let reply: Vec<Value> = SCRIPTS
            .fair_cancel
            .key(&self.keys.lock)
            .key(&self.keys.fence)
            .key(&self.keys.queue)
            .key(&self.keys.waiters)
            .arg(&self.token)
            .invoke_async(&mut conn)
            .await?;
        waiting::parse_cancel("fair_cancel", &reply)
    }

    async fn release_orphan(&self) {
        let _ = Holder::release(self).await;
    }
}

impl Holder for FairOps {
    async fn extend(&self, ttl_ms: u64) -> Result<bool> {
        let mut conn = self.client.conn_for_call();
        let reply: i64 = SCRIPTS
            .extend
            .key(&self.keys.lock)
            .arg(&self.token)
            .arg(ttl_ms)
            .invoke_async(&mut conn)
            .await?;
        Ok(reply == 1)
    }

    async fn release(&self) -> Result<ReleaseOutcome> {
        let mut conn = self.client.conn_for_call();
        let reply: i64 = SCRIPTS
            .fair_release
            .key(&self.keys.lock)
            .key(&self.keys.fence)
            .key(&self.keys.queue)
            .key(&self.keys.waiters)
            .arg(&self.token)
            .invoke_async(&mut conn)
            .await?;
        release_outcome("fair_release", reply)
    }

    fn owner(&self) -> &str {
        self.client.owner_json()
    }
}
