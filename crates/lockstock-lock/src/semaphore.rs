//! [`Semaphore`]: at most N holders of a named resource, each with its own permit (guide on
//! the type).

use std::{sync::Arc, time::Duration};

use redis::{Script, ScriptInvocation, Value};

use super::{
    client::LockClient,
    error::{LockError, Result},
    guard::{Held, Holder, ReleaseOutcome, held_guard_methods},
    inspect::{LockInfo, expiring_members},
    keys::SemaphoreKeys,
    options::LockOptions,
    scripts::SCRIPTS,
    waiting::{self, Attempt, Pace, QueuedOps, Ticket, WaitPlan},
};

/// The default lease of a waiter's queue entry: a dead waiter blocks nobody longer than this.
pub const DEFAULT_WAITER_LEASE: Duration = Duration::from_secs(3);

/// [`Semaphore`]: at most N holders of a named resource, each with its own permit.
///
/// # Guarantees
/// - When N permits are held, then no further acquisition succeeds: the check and the grant are
///   one script, and the holders live in one sorted set whose size never exceeds N.
/// - Each permit has its own random token, fencing token, expiry and heartbeat; releasing or
///   extending acts on the caller's permit only.
/// - When a holder crashes, then its permit returns once its TTL has passed (the next script
///   call drops expired holders); a waiter blocked on it wakes at that instant.
/// - When a permit is released and waiters are queued, then it goes straight to the oldest live
///   waiter, who wakes on the hand-off message (no polling) and owns it without another round
///   trip. Free permits always go to queued waiters before new arrivals (FIFO).
/// - When a waiter gives up (deadline, or its future is dropped), then it leaves the queue; when
///   it dies, then its entry's lease runs out and it blocks nobody for longer than one lease.
/// - Fencing tokens of one semaphore strictly increase in grant order.
///
/// # Not guaranteed
/// - That every user of a resource passes the same N: the limit is the caller's argument, not
///   stored state. Two sizes for one resource name mean the larger one wins at times.
/// - Exclusion in the face of pauses: a holder paused past its TTL may still believe it holds a
///   permit. Use the fencing token where it matters (with N > 1 several holders are legitimate,
///   so a fence only orders them).
///
/// # Example
/// ```rust,no_run
/// use std::time::Duration;
/// use lockstock_lock::{LockClient, LockConfig, LockOptions, Semaphore};
///
/// # async fn demo() -> Result<(), lockstock_lock::LockError> {
/// let client = LockClient::connect("redis://127.0.0.1:6379", LockConfig::default()).await?;
/// // At most 5 concurrent exports.
/// let exports = Semaphore::new(&client, "exports", 5)?;
/// let permit = exports.acquire(&LockOptions::default(), Duration::from_secs(10)).await?;
/// let lost = permit.lost();
/// tokio::select! {
///     () = lost.cancelled() => { /* the permit expired: stop */ }
///     () = tokio::time::sleep(Duration::from_millis(100)) => { /* the export */ }
/// }
/// permit.release().await?;
/// # Ok(()) }
/// ```
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
    ticket: Ticket,
    keys: Arc<SemaphoreKeys>,
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

    /// Takes a permit if one is free and nobody is queued; `Ok(None)` otherwise.
    pub async fn try_acquire(&self, options: &LockOptions) -> Result<Option<SemaphorePermit>> {
        waiting::none_on_timeout(self.acquire(options, Duration::ZERO).await)
    }

    /// Takes a permit, queueing up to `wait` for one ([`LockError::Timeout`] after that).
    #[tracing::instrument(level = "debug", skip_all, fields(resource = %self.keys.resource), err(level = "debug"))]
    pub async fn acquire(&self, options: &LockOptions, wait: Duration) -> Result<SemaphorePermit> {
        options.validate()?;
        let ops = PermitOps {
            ticket: Ticket::new(&self.client, &self.keys.handoff, options),
            keys: self.keys.clone(),
            permits: self.permits,
        };
        let plan = WaitPlan {
            resource: &self.keys.resource,
            wait,
            pace: Pace::lease(self.waiter_lease),
        };
        let grant = waiting::acquire(&ops, plan).await?;
        Ok(SemaphorePermit {
            held: Held::start(ops, "semaphore permit", &self.keys.resource, options, grant),
        })
    }

    /// The live permit holders right now (owner, since when, TTL left, fence), oldest expiry
    /// first. Read in one pipeline; not a lock.
    pub async fn holders(&self) -> Result<Vec<LockInfo>> {
        expiring_members(
            &self.client.inner.conn,
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

impl PermitOps {
    /// `script` on the semaphore's five keys with the caller's token as `ARGV[1]`.
    fn call<'a>(&'a self, script: &'a Script) -> ScriptInvocation<'a> {
        let mut invocation = script.key(&self.keys.holders);
        invocation
            .key(&self.keys.owners)
            .key(&self.keys.fence)
            .key(&self.keys.queue)
            .key(&self.keys.waiters)
            .arg(&self.ticket.token);
        invocation
    }
}

impl QueuedOps for PermitOps {
    fn ticket(&self) -> &Ticket {
        &self.ticket
    }

    async fn attempt(&self, lease_ms: u64) -> Result<Attempt> {
        let client = &self.ticket.client;
        let reply: Vec<Value> = client
            .run(
                self.call(&SCRIPTS.sem_acquire)
                    .arg(self.ticket.ttl_ms)
                    .arg(client.owner_json())
                    .arg(lease_ms)
                    .arg(self.permits)
                    .arg(&self.ticket.channel),
            )
            .await?;
        waiting::parse_attempt("sem_acquire", &reply)
    }

    async fn cancel(&self) -> Result<Option<(u64, u64)>> {
        let reply: Vec<Value> = self
            .ticket
            .client
            .run(self.call(&SCRIPTS.sem_cancel).arg(self.permits))
            .await?;
        waiting::parse_cancel("sem_cancel", &reply)
    }
}

impl Holder for PermitOps {
    async fn extend(&self, ttl_ms: u64) -> Result<bool> {
        self.ticket.extend_member(&self.keys.holders, ttl_ms).await
    }

    async fn release(&self) -> Result<ReleaseOutcome> {
        let reply: i64 = self
            .ticket
            .client
            .run(self.call(&SCRIPTS.sem_release).arg(self.permits))
            .await?;
        ReleaseOutcome::from_reply("sem_release", reply)
    }

    fn owner(&self) -> &str {
        self.ticket.client.owner_json()
    }
}
