//! [`RwLock`]: many readers or one writer on a named resource.
//!
//! # Guarantees
//! - When a writer holds the lock, then no reader and no other writer does; when readers hold
//!   it, then no writer does. Each grant is checked and made in one script.
//! - When a writer is waiting, then readers that arrive after it queue behind it: a stream of new
//!   readers cannot starve a writer. Waiters are granted in arrival order — a run of readers at
//!   the head of the queue together, a writer alone.
//! - Each reader holds its own expiring entry (and heartbeat): when a reader crashes, then its
//!   entry expires after its TTL and stops blocking writers; the other readers are unaffected.
//! - When the last blocking hold is released, then the waiters it blocked are granted in the
//!   same script and woken by a hand-off message (no polling).
//! - When a waiter gives up or dies, then it leaves the queue (at once, or when its lease runs
//!   out) and blocks nobody for longer than one lease.
//! - Fencing tokens (readers' and writers') strictly increase in grant order: a writer's token is
//!   above every token granted before it.
//!
//! # Not guaranteed
//! - Upgrading a read hold to a write hold: release the read hold and queue as a writer (another
//!   writer may go first).
//! - Exclusion in the face of pauses: a holder paused past its TTL may still believe it holds
//!   the lock. Check the writer's fencing token where writes land.
//!
//! # Example
//! ```rust,no_run
//! use std::time::Duration;
//! use lockstock_lock::{LockClient, LockConfig, LockOptions, RwLock};
//!
//! # async fn demo() -> Result<(), lockstock_lock::LockError> {
//! let client = LockClient::connect("redis://127.0.0.1:6379", LockConfig::default()).await?;
//! let catalog = RwLock::new(&client, "catalog")?;
//!
//! let read = catalog.read(&LockOptions::default(), Duration::from_secs(5)).await?;
//! // ... many readers may be here at once ...
//! read.release().await?;
//!
//! let write = catalog.write(&LockOptions::default(), Duration::from_secs(5)).await?;
//! // ... alone; hand write.fence() to the store before writing ...
//! write.release().await?;
//! # Ok(()) }
//! ```

use std::{sync::Arc, time::Duration};

use redis::Value;

use super::{
    client::{LockClient, ReleaseOutcome},
    error::Result,
    held::{Held, Holder, held_guard_methods},
    inspect::LockInfo,
    keys::RwLockKeys,
    options::LockOptions,
    scripts::SCRIPTS,
    semaphore::{DEFAULT_WAITER_LEASE, expiring_members, release_outcome},
    token::LockToken,
    waiting::{self, Attempt, QueuedOps, WaitPlan},
};

/// A read/write lock on one resource: cheap to clone, shares the client's connection.
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
}

/// The Redis side of one read or write hold (one token), waiting or held.
#[derive(Debug, Clone)]
struct RwOps {
    client: LockClient,
    keys: Arc<RwLockKeys>,
    token: String,
    /// This client's own hand-off channel for the resource (kept in the queue entry).
    channel: String,
    mode: Mode,
    ttl_ms: u64,
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
    #[tracing::instrument(level = "debug", skip_all, fields(resource = %self.keys.resource), err(level = "debug"))]
    pub async fn read(&self, options: &LockOptions, wait: Duration) -> Result<ReadGuard> {
        let held = self.acquire(Mode::Read, options, wait).await?;
        Ok(ReadGuard { held })
    }

    /// Takes the write hold, waiting up to `wait` ([`LockError::Timeout`] after that).
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
            client: self.client.clone(),
            keys: self.keys.clone(),
            token: LockToken::new().to_string(),
            channel: self.client.inner.notifier.channel_for(&self.keys.handoff),
            mode,
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
        let what = match mode {
            Mode::Read => "read lock",
            Mode::Write => "write lock",
        };
        let resource = self.keys.resource.clone();
        Ok(Held::start(
            ops,
            what,
            &resource,
            grant.fence,
            options,
            grant.base,
            grant.valid_for,
        ))
    }

    /// Who holds the lock right now. Read in two pipelines; not a snapshot.
    pub async fn holders(&self) -> Result<RwHolders> {
        let readers = expiring_members(
            &self.client,
            &self.keys.resource,
            &self.keys.readers,
            &self.keys.owners,
        )
        .await?;
        let mut conn = self.client.connection();
        let (value, pttl): (Option<String>, i64) = redis::pipe()
            .get(&self.keys.writer)
            .pttl(&self.keys.writer)
            .query_async(&mut conn)
            .await?;
        let writer = value.and_then(|value| {
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
        });
        Ok(RwHolders { writer, readers })
    }
}

impl ReadGuard {
    held_guard_methods!();
}

impl WriteGuard {
    held_guard_methods!();
}

impl QueuedOps for RwOps {
    async fn attempt(&self, lease_ms: u64) -> Result<Attempt> {
        let mut conn = self.client.conn_for_call();
        let reply: Vec<Value> = SCRIPTS
            .rw_acquire
            .key(&self.keys.writer)
            .key(&self.keys.readers)
            .key(&self.keys.owners)
            .key(&self.keys.fence)
            .key(&self.keys.queue)
            .key(&self.keys.waiters)
            .arg(&self.token)
            .arg(self.mode.arg())
            .arg(self.ttl_ms)
            .arg(self.client.owner_json())
            .arg(lease_ms)
            .arg(&self.channel)
            .invoke_async(&mut conn)
            .await?;
        waiting::parse_attempt("rw_acquire", &reply)
    }

    async fn cancel(&self) -> Result<Option<(u64, u64)>> {
        let mut conn = self.client.conn_for_call();
        let reply: Vec<Value> = SCRIPTS
            .rw_cancel
            .key(&self.keys.writer)
            .key(&self.keys.readers)
            .key(&self.keys.owners)
            .key(&self.keys.fence)
            .key(&self.keys.queue)
            .key(&self.keys.waiters)
            .arg(&self.token)
            .arg(self.mode.arg())
            .invoke_async(&mut conn)
            .await?;
        waiting::parse_cancel("rw_cancel", &reply)
    }

    async fn release_orphan(&self) {
        let _ = Holder::release(self).await;
    }
}

impl Holder for RwOps {
    async fn extend(&self, ttl_ms: u64) -> Result<bool> {
        let mut conn = self.client.conn_for_call();
        let reply: i64 = match self.mode {
            Mode::Write => {
                SCRIPTS
                    .extend
                    .key(&self.keys.writer)
                    .arg(&self.token)
                    .arg(ttl_ms)
                    .invoke_async(&mut conn)
                    .await?
            }
            Mode::Read => {
                SCRIPTS
                    .permit_extend
                    .key(&self.keys.readers)
                    .arg(&self.token)
                    .arg(ttl_ms)
                    .invoke_async(&mut conn)
                    .await?
            }
        };
        Ok(reply == 1)
    }

    async fn release(&self) -> Result<ReleaseOutcome> {
        let mut conn = self.client.conn_for_call();
        let reply: i64 = SCRIPTS
            .rw_release
            .key(&self.keys.writer)
            .key(&self.keys.readers)
            .key(&self.keys.owners)
            .key(&self.keys.fence)
            .key(&self.keys.queue)
            .key(&self.keys.waiters)
            .arg(&self.token)
            .arg(self.mode.arg())
            .invoke_async(&mut conn)
            .await?;
        release_outcome("rw_release", reply)
    }

    fn owner(&self) -> &str {
        self.client.owner_json()
    }
}
