//! [`Redlock`]: one lock over N independent Redis masters (N odd, at least 3), held while a
//! majority agrees, with fencing tokens that keep increasing while instances fail and recover.
//!
//! # How it works
//! 1. **Acquire**: the same script runs on every instance concurrently, under one short
//!    per-instance deadline. It sets the lock (`SET NX PX ttl`) and, in the same atomic step,
//!    raises that instance's fence counter to the caller's *proposed* token, reporting the
//!    counter as it was. Every phase (acquire, write-back, extend, release) is decided as soon as
//!    a majority has agreed: the caller waits for the quorum, not for the slowest instance, and
//!    the remaining calls complete in the background (still under the deadline).
//! 2. The acquisition stands only when a majority granted it *and* time is left:
//!    `validity = ttl − elapsed − drift` must be positive, `elapsed` counted from the send
//!    instant. Otherwise the lock is undone on every instance (including those that did not
//!    answer) and the caller retries or fails.
//! 3. **Fence**: the token is `max(proposal, highest counter read + 1)`. When the proposal beat
//!    every counter read (the usual case), it was already written to the majority in step 1.
//!    Otherwise the token is written back (`redlock_fence.lua`) to every instance, and handed out
//!    only once a majority confirmed the write *under the caller's lock* with validity left.
//! 4. **Hold**: the guard's heartbeat extends on all instances every `ttl / 3`; an extension
//!    counts when a majority agreed. An instance where the key is missing (it restarted, or was
//!    unreachable past the TTL) gets it set again, so the hold keeps a majority as instances come
//!    and go. When no majority can be had, the lost signal fires at the safety deadline.
//! 5. **Release** deletes the lock on every instance and announces it; waiters retry at once.
//!
//! # Guarantees
//! - When an acquisition succeeds, then a majority of instances held the caller's token with
//!   validity left, and the guard's safety deadline is the send instant plus `ttl − drift`.
//! - When fewer than a majority answer (e.g. 2 of 3 down), then acquisition fails within its
//!   wait with [`LockError::NoQuorum`], which says what every instance answered.
//! - When an instance restarts empty, then for the *restart quarantine* (default: the TTL of the
//!   call; set [`RedlockConfig::restart_quarantine`] to the longest TTL any client uses) it
//!   refuses to grant: the locks it forgot may still be valid on other instances, and granting
//!   could let a second holder reach a majority (the "delayed restart" of the Redlock analysis,
//!   enforced by the server itself from its uptime).
//! - Per-instance answers are never collapsed to a bool: errors carry [`InstanceReport`]s.
//!
//! ## Why the fencing tokens strictly increase
//! Let holder H hand out token `t`. It did so only after `t` sat in the fence counter of a set
//! `W` of at least a majority of instances, each written while H's lock key was present there
//! (in the acquire script itself, or by the write-back, which checks the key). Let H′ be the next
//! holder; it acquired on a majority `M′`. Two majorities of the same N instances share at least
//! one instance `m`. On `m`, H′'s `SET NX` succeeded, so it ran after H's key had left `m`
//! (released, or expired — and the key outlives H's validity, so after H's write on `m`). H′
//! therefore read a counter of at least `t` on `m` and took a token of at least `t + 1`.
//!
//! The argument needs `m` to have kept its counter. Data loss is covered as follows:
//! - the write goes to *every* instance that holds H's lock (normally all N; the calls to the
//!   instances beyond the first majority land in the background), so with N = 3 and all three
//!   written, H′'s majority shares *two* written instances with `W`: one of them may restart
//!   empty and the other still carries `t`. (H′ reads the counters of the instances that
//!   answered before its acquisition was decided: at least a majority.)
//! - extensions and releases raise the counter of every instance they reach to the holder's
//!   token, so an instance that restarted empty is brought up to date by the current holder's
//!   next heartbeat, within its restart quarantine;
//! - what remains uncovered is an instance losing its data while it is the only written instance
//!   in a later majority (H held a bare majority because one instance was down, and then one of
//!   H's instances restarts empty before anyone writes to the recovered one). Then a token can
//!   repeat or go down — and the fenced resource refuses it (it never accepts a token at or below
//!   the highest it has seen); [`Redlock::raise_fence_floor`] lifts every counter above the
//!   resource's high-water mark, as for the single-instance mutex.
//!
//! Proposals come from the wall clock in microseconds (and above the client's last proposal),
//! so successive holders usually propose above every counter and skip the write-back; a client
//! whose clock is behind only takes the slower path. Correctness never depends on clocks being
//! in sync — only the fast path's hit rate does. Tokens stay below 2^53 (Lua numbers).
//!
//! # Not guaranteed
//! - Exclusion under unbounded pauses or clock jumps: a holder paused past its validity, or an
//!   instance whose clock jumps forward, can let a second holder in while the first still
//!   believes it holds. Fencing tokens, checked by the protected resource, keep that harmless.
//! - Fairness: waiters are not queued (no instance can order them alone); they retry when any
//!   instance announces a release (after a random delay of up to 0.4 ms, so that waiters woken
//!   together split the votes less often), and after a jittered back-off bounded by the holder's
//!   TTL.
//! - An operator's `FLUSHALL` on an instance is not detected (its uptime does not change): flush
//!   by restarting, or raise the fence floor afterwards.
//! - Redlock keys live on independent masters; it is not meant for a Redis Cluster (use the
//!   single-instance primitives there).
//!
//! # Example
//! ```rust,no_run
//! use std::time::Duration;
//! use lockstock_lock::{LockOptions, Redlock, RedlockConfig};
//!
//! # async fn demo() -> Result<(), lockstock_lock::LockError> {
//! let redlock = Redlock::connect(
//!     &["redis://10.0.0.1:6379", "redis://10.0.0.2:6379", "redis://10.0.0.3:6379"],
//!     RedlockConfig::default(),
//! )
//! .await?;
//! let guard = redlock.acquire("product:1", &LockOptions::default(), Duration::from_secs(5)).await?;
//! // Hand guard.fence() to the protected resource before reading; watch guard.lost().
//! guard.release().await?;
//! # Ok(()) }
//! ```

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures_util::{StreamExt, future::join_all, stream::FuturesUnordered};
use redis::{Script, ToRedisArgs, Value, aio::ConnectionManager};

use super::{
    client::ReleaseOutcome,
    error::{InstanceReply, InstanceReport, LockError, Result},
    held::{Held, Holder, held_guard_methods},
    inspect::LockInfo,
    keys::{KeySpace, RedlockKeys},
    notify::{Notifier, Watch},
    options::LockOptions,
    owner::LockOwner,
    scripts::SCRIPTS,
    token::{FencingToken, LockToken},
};

/// Settings of a [`Redlock`].
#[derive(Debug, Clone)]
pub struct RedlockConfig {
    /// Where the keys live on every instance.
    pub keys: KeySpace,
    /// Who this process is, recorded beside every lock it holds.
    pub owner: LockOwner,
    /// How long one instance may take to answer one call before it counts as failed; keep it
    /// well below the TTL. Default 100 ms.
    pub instance_timeout: Duration,
    /// How long a restarted instance refuses to grant; `None` = the TTL of each call (right when
    /// every client of a resource uses one TTL). Must be at least the longest TTL in use.
    pub restart_quarantine: Option<Duration>,
    /// First retry delay of a waiting acquisition (jittered, doubled up to `retry_max`, never
    /// past the holder's TTL). Waiters are normally woken by a release message.
    pub retry_min: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
}

impl Default for RedlockConfig {
    fn default() -> Self {
        Self {
            keys: KeySpace::default(),
            owner: LockOwner::default(),
            instance_timeout: Duration::from_millis(100),
            restart_quarantine: None,
            retry_min: Duration::from_millis(10),
            retry_max: Duration::from_millis(250),
        }
    }
}

impl RedlockConfig {
    /// Sets the key prefix.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Result<Self> {
        self.keys = KeySpace::new(prefix)?;
        Ok(self)
    }

    /// Sets the owner record.
    pub fn with_owner(mut self, owner: LockOwner) -> Self {
        self.owner = owner;
        self
    }

    /// Sets the restart quarantine.
    pub fn with_restart_quarantine(mut self, quarantine: Duration) -> Self {
        self.restart_quarantine = Some(quarantine);
        self
    }
}

/// A Redlock client over N independent Redis masters: cheap to clone.
#[derive(Debug, Clone)]
pub struct Redlock {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    instances: Vec<Instance>,
    /// How many instances make a majority.
    quorum: usize,
    config: RedlockConfig,
    owner_json: String,
    /// The last fencing token this client proposed (proposals strictly increase).
    last_proposal: AtomicU64,
}

/// One master.
#[derive(Debug)]
struct Instance {
    /// The URL with its password masked, for reports and logs.
    name: String,
    /// Lazily connected, auto-reconnecting.
    conn: ConnectionManager,
    /// Release announcements from this instance.
    notifier: Arc<Notifier>,
}

/// A held Redlock. Release it with [`RedlockGuard::release`]; watch [`RedlockGuard::lost`].
#[derive(Debug)]
#[must_use = "a Redlock guard should be released with `release().await`"]
pub struct RedlockGuard {
    held: Held<RedlockHold>,
}

/// The Redis side of one held Redlock.
#[derive(Debug)]
struct RedlockHold {
    redlock: Redlock,
    keys: RedlockKeys,
    token: String,
    fence: u64,
}

/// One instance's view of a resource, from [`Redlock::inspect`].
#[derive(Debug)]
pub struct InstanceLock {
    /// The instance's URL, password masked.
    pub instance: String,
    /// The lock there (`Ok(None)`: free there), or why it could not be read.
    pub lock: Result<Option<LockInfo>>,
}

/// What one acquisition attempt came to.
enum Attempt {
    Acquired {
        fence: u64,
        sent: Instant,
    },
    Failed {
        error: LockError,
        /// Someone else holds it somewhere (contention rather than failure).
        held: bool,
        /// When to try again at the latest (the shortest TTL or quarantine reported).
        retry_in: Option<Duration>,
    },
}

impl Redlock {
    /// Connects (lazily) to every instance of `urls`.
    ///
    /// - When the count is even or below 3, a URL does not parse, or two URLs name the same
    ///   instance, then [`LockError::InvalidArgument`] says which.
    /// - Instances that are down now are not an error: calls report them per instance, and
    ///   succeed while a majority answers.
    pub async fn connect<S: AsRef<str>>(urls: &[S], config: RedlockConfig) -> Result<Self> {
        let count = urls.len();
        if count < 3 || count.is_multiple_of(2) {
            return Err(LockError::InvalidArgument(format!(
                "Redlock needs an odd number of at least 3 independent instances (got {count}); with an even count a failure splits the vote"
            )));
        }
        if config.instance_timeout.is_zero() {
            return Err(LockError::InvalidArgument(
                "the Redlock per-instance timeout must be above zero".into(),
            ));
        }
        let mut seen = HashSet::new();
        let mut instances = Vec::with_capacity(count);
        for (index, url) in urls.iter().enumerate() {
            let url = url.as_ref().trim();
            let client = redis::Client::open(url).map_err(|e| {
                LockError::InvalidArgument(format!(
                    "cannot parse Redlock instance URL #{} ({}): {}",
                    index + 1,
                    mask_url(url),
                    e.detail().unwrap_or("invalid URL")
                ))
            })?;
            let address = client.get_connection_info().addr().to_string();
            if !seen.insert(address.clone()) {
                return Err(LockError::InvalidArgument(format!(
                    "Redlock instance {address} is listed twice; the instances must be independent"
                )));
            }
            let manager_config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(
                    config.instance_timeout.max(Duration::from_millis(200)),
                ))
                .set_response_timeout(Some(config.instance_timeout))
                .set_number_of_retries(0)
                .set_max_delay(Duration::from_millis(500));
            let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager_config)?;
            instances.push(Instance {
                name: mask_url(url),
                conn,
                notifier: Notifier::new(client),
            });
        }
        Ok(Self {
            inner: Arc::new(Inner {
                quorum: count / 2 + 1,
                owner_json: config.owner.to_json(),
                config,
                instances,
                last_proposal: AtomicU64::new(0),
            }),
        })
    }

    /// How many instances must agree.
    pub fn quorum(&self) -> usize {
        self.inner.quorum
    }

    /// The instances' URLs (passwords masked), in configuration order.
    pub fn instances(&self) -> Vec<String> {
        self.inner
            .instances
            .iter()
            .map(|i| i.name.clone())
            .collect()
    }

    /// The key space on every instance.
    pub fn keys(&self) -> &KeySpace {
        &self.inner.config.keys
    }

    /// One attempt: the lock if a majority grants it now; `Ok(None)` when another holder has it.
    ///
    /// - When no majority can be reached for other reasons (instances down or in quarantine),
    ///   then [`LockError::NoQuorum`] with every instance's answer.
    pub async fn try_acquire(
        &self,
        resource: &str,
        options: &LockOptions,
    ) -> Result<Option<RedlockGuard>> {
        self.check_options(options)?;
        let keys = self.keys().redlock(resource)?;
        let token = LockToken::new().to_string();
        match self.attempt(&keys, &token, options).await {
            Attempt::Acquired { fence, sent } => {
                Ok(Some(self.guard(keys, token, fence, options, sent)))
            }
            Attempt::Failed { held: true, .. } => Ok(None),
            Attempt::Failed { error, .. } => Err(error),
        }
    }

    /// Takes the lock, retrying up to `wait`.
    ///
    /// - When another holder kept it the whole time, then [`LockError::Timeout`].
    /// - When instances kept failing (no majority reachable), then [`LockError::NoQuorum`] from
    ///   the last attempt, with every instance's answer — within `wait` plus one per-instance
    ///   timeout.
    #[tracing::instrument(level = "debug", skip_all, fields(resource = %resource), err(level = "debug"))]
    pub async fn acquire(
        &self,
        resource: &str,
        options: &LockOptions,
        wait: Duration,
    ) -> Result<RedlockGuard> {
        self.check_options(options)?;
        let keys = self.keys().redlock(resource)?;
        let token = LockToken::new().to_string();
        let started = Instant::now();
        let deadline = started + wait;
        let mut watches: Option<Vec<Watch>> = None;
        let mut backoff = self.inner.config.retry_min;
        loop {
            let (held, retry_in, error) = match self.attempt(&keys, &token, options).await {
                Attempt::Acquired { fence, sent } => {
                    return Ok(self.guard(keys, token, fence, options, sent));
                }
                Attempt::Failed {
                    error,
                    held,
                    retry_in,
                } => (held, retry_in, error),
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(if held {
                    LockError::Timeout {
                        resource: keys.resource,
                        waited: started.elapsed(),
                    }
                } else {
                    error
                });
            }
            tracing::debug!(%error, "Redlock attempt failed; retrying");
            let watches = watches.get_or_insert_with(|| self.watch_releases(&keys.released));
            let jittered = backoff.mul_f64(0.8 + fastrand::f64() * 0.4);
            backoff = (backoff * 2).min(self.inner.config.retry_max);
            let nap = retry_in
                .map_or(jittered, |r| r.min(jittered))
                .min(deadline.saturating_duration_since(now));
            let changed = watches.iter_mut().map(|w| Box::pin(w.receiver.changed()));
            let announced = tokio::select! {
                _ = futures_util::future::select_all(changed) => true,
                () = tokio::time::sleep(nap) => false,
            };
            if announced {
                // Every waiter hears the same announcement: a short random delay spreads their
                // attempts, so fewer of them split the instances' votes between them.
                tokio::time::sleep(Duration::from_micros(fastrand::u64(0..400))).await;
            }
        }
    }

    /// Raises `resource`'s fence counter on every instance to at least `floor` (after the fenced
    /// resource refused a token: an instance lost its counters). Returns the highest counter
    /// afterwards; needs a majority.
    pub async fn raise_fence_floor(&self, resource: &str, floor: u64) -> Result<FencingToken> {
        let keys = self.keys().redlock(resource)?;
        let replies = self
            .on_all(
                Call::new(&SCRIPTS.raise_fence)
                    .key(&keys.fence)
                    .arg(floor),
                |_| false,
            )
            .await;
        let mut reports = Vec::new();
        let mut agreed = 0;
        let mut highest = 0u64;
        for (instance, reply) in self.inner.instances.iter().zip(replies) {
            let reply = match reply {
                Ok(Value::Int(value)) => {
                    let value = value.max(0) as u64;
                    agreed += 1;
                    highest = highest.max(value);
                    InstanceReply::Agreed
                }
                Ok(other) => failed(unexpected("raise_fence", &[other])),
                Err(error) => failed(error),
            };
            reports.push(report(instance, reply));
        }
        if agreed < self.inner.quorum {
            return Err(LockError::NoQuorum {
                operation: "raise fence floor",
                resource: keys.resource,
                needed: self.inner.quorum,
                agreed,
                reports,
            });
        }
        Ok(FencingToken(highest))
    }

    /// Each instance's view of `resource` (who holds it there, with TTL and fence).
    pub async fn inspect(&self, resource: &str) -> Result<Vec<InstanceLock>> {
        let keys = self.keys().redlock(resource)?;
        let timeout = self.inner.config.instance_timeout;
        let views = self.inner.instances.iter().map(|instance| {
            let mut conn = instance.conn.clone();
            let keys = &keys;
            async move {
                let read = tokio::time::timeout(
                    timeout,
                    redis::pipe()
                        .get(&keys.lock)
                        .pttl(&keys.lock)
                        .query_async::<(Option<String>, i64)>(&mut conn),
                )
                .await;
                let lock = match read {
                    Ok(Ok((value, pttl))) => {
                        Ok(value.and_then(|v| parse_lock(&keys.resource, &v, pttl)))
                    }
                    Ok(Err(error)) => Err(LockError::from(error)),
                    Err(_) => Err(timed_out_error()),
                };
                InstanceLock {
                    instance: instance.name.clone(),
                    lock,
                }
            }
        });
        Ok(join_all(views).await)
    }

    /// Refuses options that cannot work with these instances (besides
    /// [`LockOptions::validate`]: a TTL not above the per-instance timeout plus the drift), so a
    /// process can check its settings at start-up.
    pub fn check_options(&self, options: &LockOptions) -> Result<()> {
        options.validate()?;
        if options.ttl <= self.inner.config.instance_timeout + options.drift() {
            return Err(LockError::InvalidArgument(format!(
                "the Redlock TTL ({:?}) must exceed the per-instance timeout ({:?}) plus the drift allowance ({:?})",
                options.ttl,
                self.inner.config.instance_timeout,
                options.drift()
            )));
        }
        Ok(())
    }

    fn quarantine_ms(&self, options: &LockOptions) -> u64 {
        let quarantine = self.inner.config.restart_quarantine.unwrap_or(options.ttl);
        u64::try_from(quarantine.as_millis()).unwrap_or(u64::MAX)
    }

    /// A proposal above the wall clock in µs and above this client's last proposal.
    fn propose(&self) -> u64 {
        let clock = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let mut last = self.inner.last_proposal.load(Ordering::Relaxed);
        loop {
            let next = clock.max(last + 1);
            match self.inner.last_proposal.compare_exchange_weak(
                last,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(current) => last = current,
            }
        }
    }

    /// Runs `call` on every instance concurrently under one per-instance deadline; results in
    /// instance order (an instance that did not answer by the deadline: a timeout error).
    ///
    /// When a majority has answered so that `agreed` holds, then this returns at once and the
    /// other calls finish in the background (still bounded by the deadline): the caller waits
    /// for the quorum, not for the slowest instance. Their replies are then reported as
    /// timeouts, which only matters to a caller that failed anyway (it waited for all).
    async fn on_all(&self, call: Call, agreed: impl Fn(&Value) -> bool) -> Vec<Result<Value>> {
        let deadline = tokio::time::Instant::now() + self.inner.config.instance_timeout;
        let call = Arc::new(call);
        let mut pending: FuturesUnordered<_> = self
            .inner
            .instances
            .iter()
            .enumerate()
            .map(|(index, instance)| {
                let mut conn = instance.conn.clone();
                let call = call.clone();
                async move {
                    let mut invocation = call.script.prepare_invoke();
                    for key in &call.keys {
                        invocation.key(key.as_slice());
                    }
                    for arg in &call.args {
                        invocation.arg(arg.as_slice());
                    }
                    let reply = match invocation.invoke_async::<Value>(&mut conn).await {
                        Ok(Value::ServerError(error)) => Err(LockError::UnexpectedReply {
                            operation: "redlock script",
                            detail: format!("{error:?}"),
                        }),
                        Ok(value) => Ok(value),
                        Err(error) => Err(LockError::from(error)),
                    };
                    (index, reply)
                }
            })
            .collect();
        let mut replies: Vec<Option<Result<Value>>> =
            (0..self.inner.instances.len()).map(|_| None).collect();
        let mut agreeing = 0;
        while agreeing < self.inner.quorum {
            match tokio::time::timeout_at(deadline, pending.next()).await {
                Ok(Some((index, reply))) => {
                    if reply.as_ref().is_ok_and(&agreed) {
                        agreeing += 1;
                    }
                    if let Some(slot) = replies.get_mut(index) {
                        *slot = Some(reply);
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        if !pending.is_empty() && tokio::time::Instant::now() < deadline {
            // Decided by a majority: let the rest land (a grant, a release) in the background.
            tokio::spawn(async move {
                let _ = tokio::time::timeout_at(deadline, pending.collect::<Vec<_>>()).await;
            });
        }
        replies
            .into_iter()
            .map(|reply| reply.unwrap_or_else(|| Err(timed_out_error())))
            .collect()
    }

    async fn attempt(&self, keys: &RedlockKeys, token: &str, options: &LockOptions) -> Attempt {
        let proposal = self.propose();
        let quarantine = self.quarantine_ms(options);
        let ttl_ms = options.ttl_ms();
        let sent = Instant::now();
        let replies = self
            .on_all(
                Call::new(&SCRIPTS.redlock_acquire)
                    .key(&keys.lock)
                    .key(&keys.fence)
                    .arg(token)
                    .arg(ttl_ms)
                    .arg(&self.inner.owner_json)
                    .arg(proposal)
                    .arg(quarantine),
                |reply| matches!(reply, Value::Array(items) if matches!(items.first(), Some(Value::Int(1)))),
            )
            .await;
        let mut reports = Vec::with_capacity(replies.len());
        let mut granted = 0;
        let mut highest = 0u64;
        let mut held = false;
        let mut unknown = false; // an instance failed or timed out: it may have granted
        let mut retry_in: Option<u64> = None;
        for (instance, reply) in self.inner.instances.iter().zip(replies) {
            let reply = match reply {
                Ok(Value::Array(items)) => match items.as_slice() {
                    [Value::Int(1), Value::Int(counter), ..] => {
                        granted += 1;
                        highest = highest.max((*counter).max(0) as u64);
                        InstanceReply::Agreed
                    }
                    [Value::Int(0), Value::Int(counter), Value::Int(pttl), ..] => {
                        held = true;
                        highest = highest.max((*counter).max(0) as u64);
                        let left = (*pttl).max(0) as u64;
                        retry_in = Some(retry_in.map_or(left, |r| r.min(left)));
                        InstanceReply::Held { ttl_left_ms: left }
                    }
                    [Value::Int(-1), Value::Int(ready), ..] => {
                        let ready = (*ready).max(0) as u64;
                        retry_in = Some(retry_in.map_or(ready, |r| r.min(ready)));
                        InstanceReply::Quarantined { ready_in_ms: ready }
                    }
                    other => failed(unexpected("redlock_acquire", other)),
                },
                Ok(other) => failed(unexpected("redlock_acquire", &[other])),
                Err(error) => failed(error),
            };
            unknown |= matches!(reply, InstanceReply::Failed(_) | InstanceReply::TimedOut);
            reports.push(report(instance, reply));
        }

        let valid =
            |now: Instant| options.ttl.saturating_sub(now.duration_since(sent)) > options.drift();
        let retry_in = retry_in.map(|ms| Duration::from_millis(ms + fastrand::u64(0..3)));
        if granted < self.inner.quorum || !valid(Instant::now()) {
            if granted > 0 || unknown {
                self.undo(keys, token).await;
            }
            let agreed = granted;
            let error = if granted >= self.inner.quorum {
                LockError::Timeout {
                    resource: keys.resource.clone(),
                    waited: sent.elapsed(),
                }
            } else {
                LockError::NoQuorum {
                    operation: "acquire",
                    resource: keys.resource.clone(),
                    needed: self.inner.quorum,
                    agreed,
                    reports,
                }
            };
            return Attempt::Failed {
                error,
                held,
                retry_in,
            };
        }

        let fence = proposal.max(highest + 1);
        if fence != proposal {
            // Some counter was at or above the proposal: write the token back before using it.
            let written = self.write_fence(keys, token, fence).await;
            if written.0 < self.inner.quorum || !valid(Instant::now()) {
                self.undo(keys, token).await;
                return Attempt::Failed {
                    error: LockError::NoQuorum {
                        operation: "fence write-back",
                        resource: keys.resource.clone(),
                        needed: self.inner.quorum,
                        agreed: written.0,
                        reports: written.1,
                    },
                    held: false,
                    retry_in: None,
                };
            }
        }
        Attempt::Acquired { fence, sent }
    }

    /// Writes `fence` to every instance; counts those where the caller's lock held it.
    async fn write_fence(
        &self,
        keys: &RedlockKeys,
        token: &str,
        fence: u64,
    ) -> (usize, Vec<InstanceReport>) {
        let replies = self
            .on_all(
                Call::new(&SCRIPTS.redlock_fence)
                    .key(&keys.lock)
                    .key(&keys.fence)
                    .arg(token)
                    .arg(fence),
                |reply| matches!(reply, Value::Int(1)),
            )
            .await;
        let mut agreed = 0;
        let reports = self
            .inner
            .instances
            .iter()
            .zip(replies)
            .map(|(instance, reply)| {
                let reply = match reply {
                    Ok(Value::Int(1)) => {
                        agreed += 1;
                        InstanceReply::Agreed
                    }
                    Ok(Value::Int(0)) => InstanceReply::NotHeld,
                    Ok(other) => failed(unexpected("redlock_fence", &[other])),
                    Err(error) => failed(error),
                };
                report(instance, reply)
            })
            .collect();
        (agreed, reports)
    }

    /// Deletes the caller's lock on every instance (a failed acquisition's partial grants),
    /// waiting for every instance (or the deadline).
    async fn undo(&self, keys: &RedlockKeys, token: &str) {
        let _ = self.release_all(keys, token, 0, |_| false).await;
    }

    async fn release_all(
        &self,
        keys: &RedlockKeys,
        token: &str,
        fence: u64,
        agreed: impl Fn(&Value) -> bool,
    ) -> Vec<Result<Value>> {
        self.on_all(
            Call::new(&SCRIPTS.redlock_release)
                .key(&keys.lock)
                .key(&keys.fence)
                .arg(token)
                .arg(fence)
                .arg(&keys.released),
            agreed,
        )
        .await
    }

    /// Watches every instance's release channel (subscribing in the background, so a slow or
    /// dead instance does not delay the waiter).
    fn watch_releases(&self, channel: &str) -> Vec<Watch> {
        self.inner
            .instances
            .iter()
            .map(|instance| {
                let watch = instance.notifier.watch(channel);
                let notifier = instance.notifier.clone();
                let channel = channel.to_owned();
                tokio::spawn(async move {
                    notifier.ensure_subscribed(&channel).await;
                });
                watch
            })
            .collect()
    }

    fn guard(
        &self,
        keys: RedlockKeys,
        token: String,
        fence: u64,
        options: &LockOptions,
        sent: Instant,
    ) -> RedlockGuard {
        let resource = keys.resource.clone();
        RedlockGuard {
            held: Held::start(
                RedlockHold {
                    redlock: self.clone(),
                    keys,
                    token,
                    fence,
                },
                "redlock",
                &resource,
                fence,
                options,
                sent,
                options.ttl,
            ),
        }
    }
}

impl RedlockGuard {
    held_guard_methods!();
}

impl Holder for RedlockHold {
    async fn extend(&self, ttl_ms: u64) -> Result<bool> {
        let redlock = &self.redlock;
        let quarantine = redlock
            .inner
            .config
            .restart_quarantine
            .map_or(ttl_ms, |q| u64::try_from(q.as_millis()).unwrap_or(u64::MAX));
        let replies = redlock
            .on_all(
                Call::new(&SCRIPTS.redlock_extend)
                    .key(&self.keys.lock)
                    .key(&self.keys.fence)
                    .arg(&self.token)
                    .arg(ttl_ms)
                    .arg(self.fence)
                    .arg(&redlock.inner.owner_json)
                    .arg(quarantine),
                |reply| matches!(reply, Value::Int(1 | 2)),
            )
            .await;
        let mut agreed = 0;
        let mut taken = 0;
        let mut reports = Vec::new();
        for (instance, reply) in redlock.inner.instances.iter().zip(replies) {
            let reply = match reply {
                Ok(Value::Int(1 | 2)) => {
                    agreed += 1;
                    InstanceReply::Agreed
                }
                Ok(Value::Int(0)) => {
                    taken += 1;
                    InstanceReply::NotHeld
                }
                Ok(Value::Int(-1)) => InstanceReply::Quarantined { ready_in_ms: 0 },
                Ok(other) => failed(unexpected("redlock_extend", &[other])),
                Err(error) => failed(error),
            };
            reports.push(report(instance, reply));
        }
        let total = redlock.inner.instances.len();
        if agreed >= redlock.inner.quorum {
            return Ok(true);
        }
        if total - taken < redlock.inner.quorum {
            // Enough instances have another holder that a majority is out of reach.
            return Ok(false);
        }
        Err(LockError::NoQuorum {
            operation: "extend",
            resource: self.keys.resource.clone(),
            needed: redlock.inner.quorum,
            agreed,
            reports,
        })
    }

    async fn release(&self) -> Result<ReleaseOutcome> {
        let redlock = &self.redlock;
        let replies = redlock
            .release_all(&self.keys, &self.token, self.fence, |reply| {
                matches!(reply, Value::Int(1))
            })
            .await;
        let mut released = 0;
        let mut answered = 0;
        let mut reports = Vec::new();
        for (instance, reply) in redlock.inner.instances.iter().zip(replies) {
            let reply = match reply {
                Ok(Value::Int(1)) => {
                    released += 1;
                    answered += 1;
                    InstanceReply::Agreed
                }
                Ok(Value::Int(0)) => {
                    answered += 1;
                    InstanceReply::NotHeld
                }
                Ok(other) => failed(unexpected("redlock_release", &[other])),
                Err(error) => failed(error),
            };
            reports.push(report(instance, reply));
        }
        if released > 0 {
            Ok(ReleaseOutcome::Released)
        } else if answered >= redlock.inner.quorum {
            Ok(ReleaseOutcome::NotHeld)
        } else {
            Err(LockError::NoQuorum {
                operation: "release",
                resource: self.keys.resource.clone(),
                needed: redlock.inner.quorum,
                agreed: released,
                reports,
            })
        }
    }

    fn owner(&self) -> &str {
        &self.redlock.inner.owner_json
    }
}

/// One script call to send to every instance, with owned keys and arguments (so calls still in
/// flight when a majority has decided can finish in the background).
#[derive(Debug)]
struct Call {
    script: &'static Script,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl Call {
    fn new(script: &'static Script) -> Self {
        Self {
            script,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }

    fn key(mut self, key: impl ToRedisArgs) -> Self {
        self.keys.extend(key.to_redis_args());
        self
    }

    fn arg(mut self, arg: impl ToRedisArgs) -> Self {
        self.args.extend(arg.to_redis_args());
        self
    }
}

fn report(instance: &Instance, reply: InstanceReply) -> InstanceReport {
    InstanceReport {
        instance: instance.name.clone(),
        reply,
    }
}

fn failed(error: LockError) -> InstanceReply {
    if matches!(&error, LockError::Connection(e) if e.is_timeout()) {
        InstanceReply::TimedOut
    } else {
        InstanceReply::Failed(Box::new(error))
    }
}

fn timed_out_error() -> LockError {
    LockError::Connection(redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "no answer within the per-instance timeout",
    )))
}

fn unexpected(operation: &'static str, reply: &[Value]) -> LockError {
    LockError::UnexpectedReply {
        operation,
        detail: format!("{reply:?}"),
    }
}

fn parse_lock(resource: &str, value: &str, pttl: i64) -> Option<LockInfo> {
    let mut parts = value.splitn(4, '\n');
    let _token = parts.next()?;
    let fence = parts.next()?.parse().ok()?;
    let since_unix_ms = parts.next()?.parse().ok()?;
    let owner = parts.next().and_then(|o| serde_json::from_str(o).ok());
    Some(LockInfo {
        resource: resource.to_owned(),
        owner,
        since_unix_ms,
        ttl_left_ms: pttl.max(0) as u64,
        fence,
    })
}

/// The URL with any password replaced by `***`.
fn mask_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "<unparsable URL>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proposals_strictly_increase() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let urls = [
                "redis://127.0.0.1:1",
                "redis://127.0.0.1:2",
                "redis://127.0.0.1:3",
            ];
            let redlock = Redlock::connect(&urls, RedlockConfig::default())
                .await
                .unwrap();
            let mut last = 0;
            for _ in 0..1000 {
                let p = redlock.propose();
                assert!(p > last);
                last = p;
            }
            assert!(last < 1 << 53);
        });
    }

    #[test]
    fn passwords_are_masked_in_instance_names() {
        assert_eq!(mask_url("redis://:pw@h:1"), "redis://:***@h:1");
    }
}
