//! [`Semaphore`]: at most N holders of a named resource, each with its own permit.
//!
//! # Guarantees
//! - When N permits are held, then no further acquisition succeeds: the check and the grant are
//!   one script, and the holders live in one sorted set whose size never exceeds N.
//! - Each permit has its own random token, fencing token, expiry and heartbeat; releasing or
//!   extending acts on the caller's permit only.
//! - When a holder crashes, then its permit returns once its TTL has passed (the next script
//!   call drops expired holders); a waiter blocked on it wakes at that instant.
//! - When a permit is released and waiters are queued, then it goes straight to the oldest live
//!   waiter, who wakes on the hand-off message (no polling) and owns it without another round
//!   trip. Free permits always go to queued waiters before new arrivals (FIFO).
//! - When a waiter gives up (deadline, or its future is dropped), then it leaves the queue; when
//!   it dies, then its entry's lease runs out and it blocks nobody for longer than one lease.
//! - Fencing tokens of one semaphore strictly increase in grant order.
//!
//! # Not guaranteed
//! - That every user of a resource passes the same N: the limit is the caller's argument, not
//!   stored state. Two sizes for one resource name mean the larger one wins at times.
//! - Exclusion in the face of pauses: a holder paused past its TTL may still believe it holds a
//!   permit. Use the fencing token where it matters (with N > 1 several holders are legitimate,
//!   so a fence only orders them).
//!
//! # Example
//! ```rust,no_run
//! use std::time::Duration;
//! use lockstock_lock::{LockClient, LockConfig, LockOptions, Semaphore};
//!
//! # async fn demo() -> Result<(), lockstock_lock::LockError> {
//! let client = LockClient::connect("redis://127.0.0.1:6379", LockConfig::default()).await?;
//! // At most 5 concurrent exports.
//! let exports = Semaphore::new(&client, "exports", 5)?;
//! let permit = exports.acquire(&LockOptions::default(), Duration::from_secs(10)).await?;
//! let lost = permit.lost();
//! tokio::select! {
//!     () = lost.cancelled() => { /* the permit expired: stop */ }
//!     () = tokio::time::sleep(Duration::from_millis(100)) => { /* the export */ }
//! }
//! permit.release().await?;
//! # Ok(()) }
//! ```

use std::{sync::Arc, time::Duration};

use redis::Value;

use super::{
    client::{LockClient, ReleaseOutcome},
    error::{LockError, Result},
    held::{Held, Holder, held_guard_methods},
    inspect::LockInfo,
    keys::SemaphoreKeys,
    options::LockOptions,
    scripts::SCRIPTS,
    token::LockToken,
    waiting::{self, Attempt, QueuedOps, WaitPlan},
};

/// The default lease of a waiter's queue entry: a dead waiter blocks nobody longer than this.
pub const DEFAULT_WAITER_LEASE: Duration = Duration::from_secs(3);

/// A counting semaphore on one resource: cheap to clone, shares the client's connection.
#[derive(Debug, Clone)]
pub struct Semaphore {
    client: LockClient,
    keys: Arc<SemaphoreKeys>,
    permits: u32,
    waiter_lease: Duration,
}

/// One held permit. Release it with [`SemaphorePermit::release`]; watch
/// [`SemaphorePermit::lost`] while working.
#[derive(Debug)]
#[must_use = "a permit should be released with `release().await`"]
pub struct SemaphorePermit {
    held: Held<PermitOps>,
}

/// The Redis side of one permit (one token), waiting or held.
#[derive(Debug, Clone)]
struct PermitOps {
    client: LockClient,
    keys: Arc<SemaphoreKeys>,
    token: String,
    /// This client's own hand-off channel for the resource (kept in the queue entry).
    channel: String,
    ttl_ms: u64,
    permits: u32,
}

impl Semaphore {
    /// A semaphore of `permits` on `resource`.
    ///
    /// - When `permits` is 0 or the resource name is unusable, then
    ///   [`LockError::InvalidArgument`].
    pub fn new(client: &LockClient, resource: &str, permits: u32) -> Result<Self> {
        if permits == 0 {
            return Err(LockError::InvalidArgument(format!(
                "a semaphore needs at least 1 permit (got 0 for {resource:?})"
            )));
        }
        Ok(Self {
            keys: Arc::new(client.keys().semaphore(resource)?),
            client: client.clone(),
            permits,
            waiter_lease: DEFAULT_WAITER_LEASE,
        })
    }

    /// Sets how long a waiter's queue entry lives without renewal (renewed every third of it
    /// while the waiter lives); refuses leases under 30 ms.
    pub fn with_waiter_lease(mut self, lease: Duration) -> Result<Self> {
        self.waiter_lease = waiting::check_waiter_lease(lease)?;
        Ok(self)
    }

    /// The resource name.
    pub fn resource(&self) -> &str {
        &self.keys.resource
    }

    /// How many holders it admits.
    pub fn permits(&self) -> u32 {
        self.permits
    }

    fn ops(&self, options: &LockOptions) -> PermitOps {
        PermitOps {
            client: self.client.clone(),
            keys: self.keys.clone(),
            token: LockToken::new().to_string(),
            channel: self.client.inner.notifier.channel_for(&self.keys.handoff),
            ttl_ms: options.ttl_ms(),
            permits: self.permits,
        }
    }

    /// Takes a permit if one is free and nobody is queued; `Ok(None)` otherwise.
    pub async fn try_acquire(&self, options: &LockOptions) -> Result<Option<SemaphorePermit>> {
        waiting::none_on_timeout(self.acquire(options, Duration::ZERO).await)
    }

    /// Takes a permit, queueing up to `wait` for one ([`LockError::Timeout`] after that).
    #[tracing::instrument(level = "debug", skip_all, fields(resource = %self.keys.resource), err(level = "debug"))]
    pub async fn acquire(&self, options: &LockOptions, wait: Duration) -> Result<SemaphorePermit> {
        options.validate()?;
        let ops = self.ops(options);
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
        Ok(SemaphorePermit {
            held: Held::start(
                ops,
                "semaphore permit",
                &resource,
                grant.fence,
                options,
                grant.base,
                grant.valid_for,
            ),
        })
    }

    /// The live permit holders right now (owner, since when, TTL left, fence), oldest expiry
    /// first. Read in one pipeline; not a lock.
    pub async fn holders(&self) -> Result<Vec<LockInfo>> {
        expiring_members(
            &self.client,
            &self.keys.resource,
            &self.keys.holders,
            &self.keys.owners,
        )
        .await
    }
}

impl SemaphorePermit {
    held_guard_methods!();
}

impl QueuedOps for PermitOps {
    async fn attempt(&self, lease_ms: u64) -> Result<Attempt> {
        let mut conn = self.client.conn_for_call();
        let reply: Vec<Value> = SCRIPTS
            .sem_acquire
            .key(&self.keys.holders)
            .key(&self.keys.owners)
            .key(&self.keys.fence)
            .key(&self.keys.queue)
            .key(&self.keys.waiters)
            .arg(&self.token)
            .arg(self.ttl_ms)
            .arg(self.client.owner_json())
            .arg(lease_ms)
            .arg(self.permits)
            .arg(&self.channel)
            .invoke_async(&mut conn)
            .await?;
        waiting::parse_attempt("sem_acquire", &reply)
    }

    async fn cancel(&self) -> Result<Option<(u64, u64)>> {
        let mut conn = self.client.conn_for_call();
        let reply: Vec<Value> = SCRIPTS
            .sem_cancel
            .key(&self.keys.holders)
            .key(&self.keys.owners)
            .key(&self.keys.fence)
            .key(&self.keys.queue)
            .key(&self.keys.waiters)
            .arg(&self.token)
            .arg(self.permits)
            .invoke_async(&mut conn)
            .await?;
        waiting::parse_cancel("sem_cancel", &reply)
    }

    async fn release_orphan(&self) {
        let _ = Holder::release(self).await;
    }
}

impl Holder for PermitOps {
    async fn extend(&self, ttl_ms: u64) -> Result<bool> {
        let mut conn = self.client.conn_for_call();
        let reply: i64 = SCRIPTS
            .permit_extend
            .key(&self.keys.holders)
            .arg(&self.token)
            .arg(ttl_ms)
            .invoke_async(&mut conn)
            .await?;
        Ok(reply == 1)
    }

    async fn release(&self) -> Result<ReleaseOutcome> {
        let mut conn = self.client.conn_for_call();
        let reply: i64 = SCRIPTS
            .sem_release
            .key(&self.keys.holders)
            .key(&self.keys.owners)
            .key(&self.keys.fence)
            .key(&self.keys.queue)
            .key(&self.keys.waiters)
            .arg(&self.token)
            .arg(self.permits)
            .invoke_async(&mut conn)
            .await?;
        release_outcome("sem_release", reply)
    }

    fn owner(&self) -> &str {
        self.client.owner_json()
    }
}

/// Maps a release script's `1 | 2 | 0` reply.
pub(crate) fn release_outcome(operation: &'static str, reply: i64) -> Result<ReleaseOutcome> {
    match reply {
        1 => Ok(ReleaseOutcome::Released),
        2 => Ok(ReleaseOutcome::HandedOff),
        0 => Ok(ReleaseOutcome::NotHeld),
        other => Err(LockError::UnexpectedReply {
            operation,
            detail: other.to_string(),
        }),
    }
}

/// The unexpired members of an expiring set (token → expiry ms) with their owner records
/// (`fence\nsince_ms\nowner`), as [`LockInfo`]s.
pub(crate) async fn expiring_members(
    client: &LockClient,
    resource: &str,
    set: &str,
    owners: &str,
) -> Result<Vec<LockInfo>> {
    let mut conn = client.connection();
    // Keyed commands first: on a cluster the pipeline goes to the node of the first key.
    type Members = Vec<(String, f64)>;
    type Records = Vec<(String, String)>;
    let (members, records, time): (Members, Records, Vec<u64>) = redis::pipe()
        .cmd("ZRANGE")
        .arg(set)
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .cmd("HGETALL")
        .arg(owners)
        .cmd("TIME")
        .query_async(&mut conn)
        .await?;
    let now = match time.as_slice() {
        [secs, micros, ..] => secs * 1000 + micros / 1000,
        _ => 0,
    };
    let records: std::collections::HashMap<String, String> = records.into_iter().collect();
    Ok(members
        .into_iter()
        .filter(|(_, expiry)| *expiry as u64 > now)
        .map(|(token, expiry)| {
            let record = records.get(&token).map(String::as_str).unwrap_or("");
            let mut parts = record.splitn(3, '\n');
            let fence = parts.next().and_then(|f| f.parse().ok()).unwrap_or(0);
            let since_unix_ms = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            let owner = parts.next().and_then(|o| serde_json::from_str(o).ok());
            LockInfo {
                resource: resource.to_owned(),
                owner,
                since_unix_ms,
                ttl_left_ms: (expiry as u64).saturating_sub(now),
                fence,
            }
        })
        .collect())
}
