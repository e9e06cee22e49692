//! [`LockClient`]: acquires, inspects and administers locks over one shared Redis connection.
//!
//! - When [`LockClient::try_acquire`] finds the resource free, then it returns a
//!   [`LockGuard`] in one round trip; when the lock is held, then `Ok(None)`.
//! - When [`LockClient::acquire`] finds the lock held, then the caller joins the resource's FIFO
//!   wait queue in Redis and sleeps until the holder's release hands the lock over (no polling):
//!   the hand-off costs the waiter no further round trip. A jittered retry schedule, never
//!   sleeping past the holder's remaining TTL, is the fallback for a holder that vanished or a
//!   lost hand-off message. Past the deadline it returns [`LockError::Timeout`].
//! - When a call's reply is lost and it is retried, then re-acquiring with the same token counts
//!   as success and a repeated release is harmless.
//! - When a waiting acquire is cancelled (its future dropped), then its queue entry is removed in
//!   the background, and a lock handed to it meanwhile is released.
//! - Not guaranteed: fairness towards acquirers that arrive while the lock is *free* (they take
//!   it at once); FIFO order holds among those that found it held. A waiter that died while queued
//!   may be handed the lock once, which then sits idle for one TTL, as after a holder's crash.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use redis::{Value, aio::ConnectionManager};

use super::conn::LockConnection;

use super::{
    error::{LockError, Result},
    guard::LockGuard,
    inspect::LockInfo,
    keys::{KeySpace, ResourceKeys},
    metrics::LockMetrics,
    notify::{Handoff, Notifier},
    options::{LockConfig, LockOptions},
    scripts::SCRIPTS,
    token::{FencingToken, LockToken},
};

/// A handle to the lock service: cheap to clone, shared by every lock of a process.
#[derive(Debug, Clone)]
pub struct LockClient {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    /// The shared connection for every command: one server (multiplexed, auto-reconnecting) or
    /// a Redis Cluster.
    pub(crate) conn: LockConnection,
    /// Settings.
    pub(crate) config: LockConfig,
    /// The owner record as stored in Redis.
    pub(crate) owner_json: String,
    /// Hand-off messages for local waiters.
    pub(crate) notifier: Arc<Notifier>,
    /// Commands this client has sent (one per script call), for benchmarks and metrics.
    round_trips: AtomicU64,
    /// Acquisitions, timeouts, losses, wait and hold times (shared with the guards).
    metrics: Arc<LockMetrics>,
}

/// What releasing a lock found ([`LockGuard::release`] and the other guards' `release`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseOutcome {
    /// The lock was ours and is now free.
    Released,
    /// The lock was ours and went straight to the next waiter.
    HandedOff,
    /// The lock was no longer ours (expired, or taken by another holder): nothing was changed.
    NotHeld,
}

/// What one acquire script call found.
enum Attempt {
    Acquired {
        fence: u64,
        pttl_ms: u64,
    },
    Held {
        pttl_ms: u64,
        server_ms: u64,
        entry: String,
    },
}

impl LockClient {
    /// Connects to Redis at `url` (`redis://`, `rediss://` for TLS, user and password in the
    /// URL) with one multiplexed, auto-reconnecting connection.
    ///
    /// Fails with [`LockError::Connection`] within about `config.connection_timeout` when Redis
    /// does not answer, and with [`LockError::InvalidArgument`] for a URL that does not parse.
    pub async fn connect(url: &str, config: LockConfig) -> Result<Self> {
        let client = redis::Client::open(url).map_err(|e| {
            LockError::InvalidArgument(format!(
                "cannot parse the Redis URL: {}",
                e.detail().unwrap_or("invalid URL")
            ))
        })?;
        let manager_config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connection_timeout))
            .set_response_timeout(Some(config.response_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let conn = tokio::time::timeout(
            config.connection_timeout * 3,
            ConnectionManager::new_with_config(client.clone(), manager_config),
        )
        .await
        .map_err(|_| {
            LockError::Connection(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connecting to Redis timed out",
            )))
        })??;
        Ok(Self::with_connection(client, conn, config))
    }

    /// Builds a client on an existing connection (so one process shares one connection between
    /// locks and other uses): a [`ConnectionManager`] or a cluster [`LockConnection`]. `client`
    /// opens the pub/sub connection for hand-offs when needed (on a cluster: any one node).
    pub fn with_connection(
        client: redis::Client,
        conn: impl Into<LockConnection>,
        config: LockConfig,
    ) -> Self {
        let conn = conn.into();
        let owner_json = config.owner.to_json();
        Self {
            inner: Arc::new(Inner {
                conn,
                owner_json,
                notifier: Notifier::new(client),
                config,
                round_trips: AtomicU64::new(0),
                metrics: Arc::default(),
            }),
        }
    }

    /// The key space this client uses.
    pub fn keys(&self) -> &KeySpace {
        &self.inner.config.keys
    }

    /// The client's settings.
    pub fn config(&self) -> &LockConfig {
        &self.inner.config
    }

    /// A clone of the shared connection (for callers that need plain Redis commands).
    pub fn connection(&self) -> LockConnection {
        self.inner.conn.clone()
    }

    /// Takes the lock on `resource` if it is free right now; `Ok(None)` when it is held.
    #[tracing::instrument(level = "debug", skip_all, fields(resource = %resource), err(level = "debug"))]
    pub async fn try_acquire(
        &self,
        resource: &str,
        options: &LockOptions,
    ) -> Result<Option<LockGuard>> {
        let started = Instant::now();
        let result = self.try_acquire_once(resource, options).await;
        let got = result.as_ref().map(Option::is_some);
        self.inner.metrics.record_acquire(got, started.elapsed());
        result
    }

    async fn try_acquire_once(
        &self,
        resource: &str,
        options: &LockOptions,
    ) -> Result<Option<LockGuard>> {
        options.validate()?;
        let keys = self.keys().resource(resource)?;
        let token = LockToken::new();
        let sent = Instant::now();
        match self
            .attempt(&keys, &token, options, Duration::ZERO, "", "")
            .await?
        {
            Attempt::Acquired { fence, pttl_ms } => {
                Ok(Some(self.guard(keys, token, fence, options, sent, pttl_ms)))
            }
            Attempt::Held { .. } => Ok(None),
        }
    }

    /// Takes the lock on `resource`, waiting up to `wait` for it.
    ///
    /// Waiters are served in FIFO order and woken by the holder's release. Returns
    /// [`LockError::Timeout`] when the lock could not be had in time.
    #[tracing::instrument(level = "debug", skip_all, fields(resource = %resource), err(level = "debug"))]
    pub async fn acquire(
        &self,
        resource: &str,
        options: &LockOptions,
        wait: Duration,
    ) -> Result<LockGuard> {
        let started = Instant::now();
        let result = self.acquire_waiting(resource, options, wait).await;
        let got = result.as_ref().map(|_| true);
        self.inner.metrics.record_acquire(got, started.elapsed());
        result
    }

    async fn acquire_waiting(
        &self,
        resource: &str,
        options: &LockOptions,
        wait: Duration,
    ) -> Result<LockGuard> {
        options.validate()?;
        let keys = self.keys().resource(resource)?;
        let token = LockToken::new();
        let started = Instant::now();
        let deadline = started + wait;
        let notifier = &self.inner.notifier;

        // Fast path: one round trip when the lock is free. Skipped when this process already
        // listens on the resource's channel (it was contended lately): then the first call
        // already queues.
        // This client's own hand-off channel for the resource: a release wakes only the process
        // whose waiter is next, not every process that waits on the resource.
        let channel = notifier.channel_for(&keys.handoff);
        if !notifier.is_subscribed(&channel) {
            let sent = Instant::now();
            if let Attempt::Acquired { fence, pttl_ms } = self
                .attempt(&keys, &token, options, Duration::ZERO, "", "")
                .await?
            {
                return Ok(self.guard(keys, token, fence, options, sent, pttl_ms));
            }
            if wait.is_zero() {
                return Err(LockError::Timeout {
                    resource: keys.resource,
                    waited: started.elapsed(),
                });
            }
            notifier.ensure_subscribed(&channel).await;
        }

        let token_text = token.to_string();
        let mut registration = notifier.register(&token_text, &channel);
        let mut queued = QueuedEntry {
            client: self.clone(),
            keys: keys.clone(),
            token,
            entry: String::new(),
        };
        let mut backoff = self.inner.config.retry_min;
        // The latest (local send instant, server time) pair of a successful queue call: the
        // server ran that call after the local instant, which bounds when a hand-off happened.
        let mut clock_pair: Option<(Instant, u64)> = None;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let sent = Instant::now();
            let attempt = self
                .attempt(&keys, &token, options, remaining, &queued.entry, &channel)
                .await;
            let pttl_ms = match attempt {
                Ok(Attempt::Acquired { fence, pttl_ms }) => {
                    queued.entry.clear();
                    return Ok(self.guard(keys, token, fence, options, sent, pttl_ms));
                }
                Ok(Attempt::Held {
                    pttl_ms,
                    server_ms,
                    entry,
                }) => {
                    queued.entry = entry;
                    clock_pair = Some((sent, server_ms));
                    pttl_ms
                }
                // A connection error while waiting: keep waiting (the queue entry, if any, still
                // stands) until the deadline, then report the error.
                Err(error) if error.is_transient() && Instant::now() < deadline => {
                    tracing::debug!(%error, "acquire attempt failed; retrying");
                    backoff.as_millis() as u64
                }
                Err(error) => return Err(error),
            };

            if Instant::now() >= deadline {
                return match queued.give_up().await? {
                    Some((fence, pttl_ms, cancel_sent)) => {
                        Ok(self.guard(keys, token, fence, options, cancel_sent, pttl_ms))
                    }
                    None => Err(LockError::Timeout {
                        resource: keys.resource,
                        waited: started.elapsed(),
                    }),
                };
            }

            // Sleep until the hand-off, the fallback retry, or the deadline.
            let jittered = backoff.mul_f64(0.8 + fastrand::f64() * 0.4);
            let until_expiry =
                Duration::from_millis(pttl_ms.max(1)) + Duration::from_millis(fastrand::u64(0..5));
            let nap = jittered
                .min(until_expiry)
                .min(deadline.saturating_duration_since(Instant::now()));
            backoff = (backoff * 2).min(self.inner.config.retry_max);
            tokio::select! {
                handoff = &mut registration.receiver => {
                    if let Ok(Handoff { fence, server_ms: handed_at, ttl_ms }) = handoff {
                        queued.entry.clear();
                        // The registration call ran at server time `server_ms`, after `sent`;
                        // the hand-off ran `handed_at - server_ms` later on the server's clock, so
                        // locally it happened no earlier than `sent` plus that gap.
                        let received = Instant::now();
                        let base = match clock_pair {
                            Some((sent, server_ms)) => {
                                let gap = Duration::from_millis(handed_at.saturating_sub(server_ms));
                                (sent + gap).min(received)
                            }
                            None => started,
                        };
                        return Ok(self.guard(keys, token, fence, options, base, ttl_ms));
                    }
                    // The notifier went away; continue with retries only.
                    registration = notifier.register(&token_text, &channel);
                }
                () = tokio::time::sleep(nap) => {}
            }
        }
    }

    /// One call of `acquire.lua`.
    async fn attempt(
        &self,
        keys: &ResourceKeys,
        token: &LockToken,
        options: &LockOptions,
        queue_for: Duration,
        entry: &str,
        channel: &str,
    ) -> Result<Attempt> {
        let mut conn = self.conn_for_call();
        let reply: Vec<Value> = SCRIPTS.acquire
            .key(&keys.lock)
            .key(&keys.fence)
            .key(&keys.queue)
            .arg(token.to_string())
            .arg(options.ttl_ms())
            .arg(&self.inner.owner_json)
            .arg(queue_for.as_millis() as u64)
            .arg(entry)
            .arg(channel)
            .invoke_async(&mut conn)
            .await?;
        let bad = |detail: &str| LockError::UnexpectedReply {
            operation: "acquire",
            detail: detail.to_owned(),
        };
        match reply.as_slice() {
            [Value::Int(1), Value::Int(fence), Value::Int(pttl), _] => Ok(Attempt::Acquired {
                fence: *fence as u64,
                pttl_ms: (*pttl).max(0) as u64,
            }),
            [Value::Int(0), Value::Int(pttl), Value::Int(now), entry] => Ok(Attempt::Held {
                pttl_ms: (*pttl).max(0) as u64,
                server_ms: (*now).max(0) as u64,
                entry: match entry {
                    Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                    _ => String::new(),
                },
            }),
            other => Err(bad(&format!("{other:?}"))),
        }
    }

    fn guard(
        &self,
        keys: ResourceKeys,
        token: LockToken,
        fence: u64,
        options: &LockOptions,
        base: Instant,
        pttl_ms: u64,
    ) -> LockGuard {
        LockGuard::start(
            self.clone(),
            keys,
            token,
            fence,
            options,
            base,
            Duration::from_millis(pttl_ms),
        )
    }

    /// Releases by token (what [`LockGuard::release`] calls after stopping its heartbeat).
    pub(crate) async fn release_token(
        &self,
        keys: &ResourceKeys,
        token: &LockToken,
    ) -> Result<ReleaseOutcome> {
        let mut conn = self.conn_for_call();
        let reply: i64 = SCRIPTS.release
            .key(&keys.lock)
            .key(&keys.fence)
            .key(&keys.queue)
            .arg(token.to_string())
            .invoke_async(&mut conn)
            .await?;
        match reply {
            1 => Ok(ReleaseOutcome::Released),
            2 => Ok(ReleaseOutcome::HandedOff),
            0 => Ok(ReleaseOutcome::NotHeld),
            other => Err(LockError::UnexpectedReply {
                operation: "release",
                detail: other.to_string(),
            }),
        }
    }

    /// Extends by token: `Ok(true)` when still ours, `Ok(false)` when gone or taken.
    pub(crate) async fn extend_token(
        &self,
        keys: &ResourceKeys,
        token: &LockToken,
        ttl_ms: u64,
    ) -> Result<bool> {
        let mut conn = self.conn_for_call();
        let reply: i64 = SCRIPTS.extend
            .key(&keys.lock)
            .arg(token.to_string())
            .arg(ttl_ms)
            .invoke_async(&mut conn)
            .await?;
        Ok(reply == 1)
    }

    /// Raises `resource`'s fence counter to at least `floor`, returning its value afterwards.
    ///
    /// Use it after Redis lost its data (a restart without persistence): the counter restarted
    /// low, so a fenced resource refuses the new tokens until the counter passes the resource's
    /// high-water mark.
    pub async fn raise_fence_floor(&self, resource: &str, floor: u64) -> Result<FencingToken> {
        let keys = self.keys().resource(resource)?;
        let mut conn = self.conn_for_call();
        let value: u64 = SCRIPTS.raise_fence
            .key(&keys.fence)
            .arg(floor)
            .invoke_async(&mut conn)
            .await?;
        Ok(FencingToken(value))
    }

    /// Who holds `resource` right now, if anyone.
    pub async fn inspect(&self, resource: &str) -> Result<Option<LockInfo>> {
        let keys = self.keys().resource(resource)?;
        super::inspect::inspect(&self.inner.conn, &keys).await
    }

    /// Whether `resource` is locked right now.
    pub async fn is_locked(&self, resource: &str) -> Result<bool> {
        Ok(self.inspect(resource).await?.is_some())
    }

    /// Every lock held under this client's prefix (a `SCAN`, for operators; not atomic).
    pub async fn list_held(&self) -> Result<Vec<LockInfo>> {
        super::inspect::list(&self.inner.conn, self.keys()).await
    }

    /// How many commands this client has sent to Redis so far (script calls and inspections;
    /// the pub/sub subscription is not counted).
    pub fn round_trips(&self) -> u64 {
        self.inner.round_trips.load(Ordering::Relaxed)
    }

    /// What this client's acquisitions and guards did so far (counters and histograms).
    pub fn metrics(&self) -> &LockMetrics {
        &self.inner.metrics
    }

    /// The metrics handle, for guards that outlive a borrow of the client.
    pub(crate) fn metrics_handle(&self) -> Arc<LockMetrics> {
        self.inner.metrics.clone()
    }

    /// The shared connection, counting the call about to be made.
    pub(crate) fn conn_for_call(&self) -> LockConnection {
        self.inner.round_trips.fetch_add(1, Ordering::Relaxed);
        self.inner.conn.clone()
    }

    /// The owner description this client records beside its locks.
    pub(crate) fn owner_json(&self) -> &str {
        &self.inner.owner_json
    }
}

/// A waiter's queue entry in Redis; removed in the background if the waiter is dropped.
struct QueuedEntry {
    client: LockClient,
    keys: ResourceKeys,
    token: LockToken,
    /// The entry string as stored in the queue ("" when not queued).
    entry: String,
}

impl QueuedEntry {
    /// Leaves the queue; `Some((fence, pttl_ms, sent))` if the lock turned out to be ours.
    async fn give_up(&mut self) -> Result<Option<(u64, u64, Instant)>> {
        let entry = std::mem::take(&mut self.entry);
        let sent = Instant::now();
        let mut conn = self.client.conn_for_call();
        let reply: Vec<Value> = SCRIPTS.cancel_wait
            .key(&self.keys.lock)
            .key(&self.keys.queue)
            .arg(self.token.to_string())
            .arg(&entry)
            .invoke_async(&mut conn)
            .await?;
        match reply.as_slice() {
            [Value::Int(1), Value::Int(fence), Value::Int(pttl)] => {
                Ok(Some((*fence as u64, (*pttl).max(0) as u64, sent)))
            }
            [Value::Int(0)] => Ok(None),
            other => Err(LockError::UnexpectedReply {
                operation: "cancel_wait",
                detail: format!("{other:?}"),
            }),
        }
    }
}

impl Drop for QueuedEntry {
    fn drop(&mut self) {
        if self.entry.is_empty() {
            return;
        }
        // The waiting future was dropped while queued: leave the queue, and release a lock that
        // was handed over in the meantime, in the background (no I/O in drop itself).
        let mut orphan = QueuedEntry {
            client: self.client.clone(),
            keys: self.keys.clone(),
            token: self.token,
            entry: std::mem::take(&mut self.entry),
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Ok(Some(_)) = orphan.give_up().await {
                    let _ = orphan
                        .client
                        .release_token(&orphan.keys, &orphan.token)
                        .await;
                }
            });
        }
    }
}
