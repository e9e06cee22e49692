//! [`RwLock`]: many readers or one writer on a named resource (guide on the type).

use std::{sync::Arc, time::Duration};

use redis::{Script, ScriptInvocation, Value};

use super::{
    client::LockClient,
    error::Result,
    guard::{Held, Holder, ReleaseOutcome, held_guard_methods},
    inspect::{LockInfo, expiring_members, read_lock},
    keys::RwLockKeys,
    options::LockOptions,
    scripts::SCRIPTS,
    semaphore::DEFAULT_WAITER_LEASE,
    waiting::{self, Attempt, Pace, QueuedOps, Ticket, WaitPlan},
};

/// [`RwLock`]: many readers or one writer on a named resource.
///
/// # Guarantees
/// - When a writer holds the lock, then no reader and no other writer does; when readers hold
///   it, then no writer does. Each grant is checked and made in one script.
/// - When a writer is waiting, then readers that arrive after it queue behind it: a stream of new
///   readers cannot starve a writer. Waiters are granted in arrival order — a run of readers at
///   the head of the queue together, a writer alone.
/// - Each reader holds its own expiring entry (and heartbeat): when a reader crashes, then its
///   entry expires after its TTL and stops blocking writers; the other readers are unaffected.
/// - When the last blocking hold is released, then the waiters it blocked are granted in the
///   same script and woken by a hand-off message (no polling).
/// - When a waiter gives up or dies, then it leaves the queue (at once, or when its lease runs
///   out) and blocks nobody for longer than one lease.
/// - Fencing tokens (readers' and writers') strictly increase in grant order: a writer's token is
///   above every token granted before it.
///
/// # Not guaranteed
/// - Upgrading a read hold to a write hold: release the read hold and queue as a writer (another
///   writer may go first).
/// - Exclusion in the face of pauses: a holder paused past its TTL may still believe it holds
///   the lock. Check the writer's fencing token where writes land.
///
/// # Example
/// ```rust,no_run
/// use std::time::Duration;
/// use lockstock_lock::{LockClient, LockConfig, LockOptions, RwLock};
///
/// # async fn demo() -> Result<(), lockstock_lock::LockError> {
/// let client = LockClient::connect("redis://127.0.0.1:6379", LockConfig::default()).await?;
/// let catalog = RwLock::new(&client, "catalog")?;
///
/// let read = catalog.read(&LockOptions::default(), Duration::from_secs(5)).await?;
/// // ... many readers may be here at once ...
/// read.release().await?;
///
/// let write = catalog.write(&LockOptions::default(), Duration::from_secs(5)).await?;
/// // ... alone; hand write.fence() to the store before writing ...
/// write.release().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RwLock {
    client: LockClient,
    keys: Arc<RwLockKeys>,
    waiter_lease: Duration,
}

/// A held read lock (shared with other readers).
#[derive(Debug)]
#[must_use = "a read lock should be released with `release().await`"]
pub struct ReadGuard {
    held: Held<RwOps>,
}

/// A held write lock (exclusive).
#[derive(Debug)]
#[must_use = "a write lock should be released with `release().await`"]
pub struct WriteGuard {
    held: Held<RwOps>,
}

/// Read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Read,
    Write,
}

impl Mode {
    fn arg(self) -> &'static str {
        match self {
            Mode::Read => "r",
            Mode::Write => "w",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Mode::Read => "read lock",
            Mode::Write => "write lock",
        }
    }
}

/// The Redis side of one read or write hold (one token), waiting or held.
#[derive(Debug, Clone)]
struct RwOps {
    ticket: Ticket,
    keys: Arc<RwLockKeys>,
    mode: Mode,
}

/// Who holds a read/write lock right now.
#[derive(Debug, Clone, PartialEq)]
pub struct RwHolders {
    /// The writer, if any.
    pub writer: Option<LockInfo>,
    /// The live readers.
    pub readers: Vec<LockInfo>,
}

impl RwLock {
    /// A read/write lock on `resource` (refused with [`LockError::InvalidArgument`] when the name
    /// is unusable).
    ///
    /// [`LockError::InvalidArgument`]: crate::LockError::InvalidArgument
    pub fn new(client: &LockClient, resource: &str) -> Result<Self> {
        Ok(Self {
            keys: Arc::new(client.keys().rwlock(resource)?),
            client: client.clone(),
            waiter_lease: DEFAULT_WAITER_LEASE,
        })
    }

    /// Sets how long a waiter's queue entry lives without renewal; refuses leases under 30 ms.
    pub fn with_waiter_lease(mut self, lease: Duration) -> Result<Self> {
        self.waiter_lease = waiting::check_waiter_lease(lease)?;
        Ok(self)
    }

    /// The resource name.
    pub fn resource(&self) -> &str {
        &self.keys.resource
    }

    /// Takes a read hold, waiting up to `wait` ([`LockError::Timeout`] after that).
    ///
    /// [`LockError::Timeout`]: crate::LockError::Timeout
    #[tracing::instrument(level = "debug", skip_all, fields(resource = %self.keys.resource), err(level = "debug"))]
    pub async fn read(&self, options: &LockOptions, wait: Duration) -> Result<ReadGuard> {
        let held = self.acquire(Mode::Read, options, wait).await?;
        Ok(ReadGuard { held })
    }

    /// Takes the write hold, waiting up to `wait` ([`LockError::Timeout`] after that).
    ///
    /// [`LockError::Timeout`]: crate::LockError::Timeout
    #[tracing::instrument(level = "debug", skip_all, fields(resource = %self.keys.resource), err(level = "debug"))]
    pub async fn write(&self, options: &LockOptions, wait: Duration) -> Result<WriteGuard> {
        let held = self.acquire(Mode::Write, options, wait).await?;
        Ok(WriteGuard { held })
    }

    /// A read hold if one can be had right now without waiting; `Ok(None)` otherwise.
    pub async fn try_read(&self, options: &LockOptions) -> Result<Option<ReadGuard>> {
        waiting::none_on_timeout(self.read(options, Duration::ZERO).await)
    }

    /// The write hold if it can be had right now without waiting; `Ok(None)` otherwise.
    pub async fn try_write(&self, options: &LockOptions) -> Result<Option<WriteGuard>> {
        waiting::none_on_timeout(self.write(options, Duration::ZERO).await)
    }

    async fn acquire(
        &self,
        mode: Mode,
        options: &LockOptions,
        wait: Duration,
    ) -> Result<Held<RwOps>> {
        options.validate()?;
        let ops = RwOps {
            ticket: Ticket::new(&self.client, &self.keys.handoff, options),
            keys: self.keys.clone(),
            mode,
        };
        let plan = WaitPlan {
            resource: &self.keys.resource,
            wait,
            pace: Pace::lease(self.waiter_lease),
        };
        let grant = waiting::acquire(&ops, plan).await?;
        Ok(Held::start(
            ops,
            mode.what(),
            &self.keys.resource,
            options,
            grant,
        ))
    }

    /// Who holds the lock right now. Read in two pipelines; not a snapshot.
    pub async fn holders(&self) -> Result<RwHolders> {
        let readers = expiring_members(
            &self.client.inner.conn,
            &self.keys.resource,
            &self.keys.readers,
            &self.keys.owners,
        )
        .await?;
        let writer = read_lock(
            &mut self.client.connection(),
            &self.keys.writer,
            &self.keys.resource,
        )
        .await?;
        Ok(RwHolders { writer, readers })
    }
}

impl ReadGuard {
    held_guard_methods!();
}

impl WriteGuard {
    held_guard_methods!();
}

impl RwOps {
    /// `script` on the read/write lock's six keys with the caller's token and mode as
    /// `ARGV[1]`, `ARGV[2]`.
    fn call<'a>(&'a self, script: &'a Script) -> ScriptInvocation<'a> {
        let mut invocation = script.key(&self.keys.writer);
        invocation
            .key(&self.keys.readers)
            .key(&self.keys.owners)
            .key(&self.keys.fence)
            .key(&self.keys.queue)
            .key(&self.keys.waiters)
            .arg(&self.ticket.token)
            .arg(self.mode.arg());
        invocation
    }
}

impl QueuedOps for RwOps {
    fn ticket(&self) -> &Ticket {
        &self.ticket
    }

    async fn attempt(&self, lease_ms: u64) -> Result<Attempt> {
        let client = &self.ticket.client;
        let reply: Vec<Value> = client
            .run(
                self.call(&SCRIPTS.rw_acquire)
                    .arg(self.ticket.ttl_ms)
                    .arg(client.owner_json())
                    .arg(lease_ms)
                    .arg(&self.ticket.channel),
            )
            .await?;
        waiting::parse_attempt("rw_acquire", &reply)
    }

    async fn cancel(&self) -> Result<Option<(u64, u64)>> {
        let reply: Vec<Value> = self
            .ticket
            .client
            .run(&mut self.call(&SCRIPTS.rw_cancel))
            .await?;
        waiting::parse_cancel("rw_cancel", &reply)
    }
}

impl Holder for RwOps {
    async fn extend(&self, ttl_ms: u64) -> Result<bool> {
        match self.mode {
            Mode::Write => {
                self.ticket
                    .extend_exclusive(&self.keys.writer, ttl_ms)
                    .await
            }
            Mode::Read => self.ticket.extend_member(&self.keys.readers, ttl_ms).await,
        }
    }

    async fn release(&self) -> Result<ReleaseOutcome> {
        let reply: i64 = self
            .ticket
            .client
            .run(&mut self.call(&SCRIPTS.rw_release))
            .await?;
        ReleaseOutcome::from_reply("rw_release", reply)
    }

    fn owner(&self) -> &str {
        self.ticket.client.owner_json()
    }
}
