//! [`Redlock`]: one lock over N independent Redis masters (guide on the type). The phases live
//! in `quorum.rs` (fan-out, majority), `acquire.rs` (attempt, undo, fencing write-back, wait)
//! and `hold.rs` (the guard: extend, release).

mod acquire;
mod hold;
mod quorum;

use std::{
    collections::HashSet,
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};

use futures_util::future::join_all;
use redis::{Value, aio::ConnectionManager};

pub use self::hold::RedlockGuard;
use self::quorum::{Call, agreed, count, timed_out_error};
use crate::{
    error::{InstanceReply, LockError, Result},
    inspect::{LockInfo, read_lock},
    keys::KeySpace,
    notify::Notifier,
    options::LockOptions,
    owner::LockOwner,
    scripts::SCRIPTS,
    token::FencingToken,
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

/// [`Redlock`]: one lock over N independent Redis masters (N odd, at least 3), held while a
/// majority agrees, with fencing tokens that keep increasing while instances fail and recover.
///
/// # How it works
/// 1. **Acquire**: the same script runs on every instance concurrently, under one short
///    per-instance deadline. It sets the lock (`SET NX PX ttl`) and, in the same atomic step,
///    raises that instance's fence counter to the caller's *proposed* token, reporting the
///    counter as it was. Every phase (acquire, write-back, extend, release) is decided as soon as
///    a majority has agreed: the caller waits for the quorum, not for the slowest instance, and
///    the remaining calls complete in the background (still under the deadline).
/// 2. The acquisition stands only when a majority granted it *and* time is left:
///    `validity = ttl − elapsed − drift` must be positive, `elapsed` counted from the send
///    instant. Otherwise the lock is undone on every instance (including those that did not
///    answer) and the caller retries or fails.
/// 3. **Fence**: the token is `max(proposal, highest counter read + 1)`. When the proposal beat
///    every counter read (the usual case), it was already written to the majority in step 1.
///    Otherwise the token is written back (`redlock_fence.lua`) to every instance, and handed out
///    only once a majority confirmed the write *under the caller's lock* with validity left.
/// 4. **Hold**: the guard's heartbeat extends on all instances every `ttl / 3`; an extension
///    counts when a majority agreed. An instance where the key is missing (it restarted, or was
///    unreachable past the TTL) gets it set again, so the hold keeps a majority as instances come
///    and go. When no majority can be had, the lost signal fires at the safety deadline.
/// 5. **Release** deletes the lock on every instance and announces it; waiters retry at once.
///
/// # Guarantees
/// - When an acquisition succeeds, then a majority of instances held the caller's token with
///   validity left, and the guard's safety deadline is the send instant plus `ttl − drift`.
/// - When fewer than a majority answer (e.g. 2 of 3 down), then acquisition fails within its
///   wait with [`LockError::NoQuorum`], which says what every instance answered.
/// - When an instance restarts empty, then for the *restart quarantine* (default: the TTL of the
///   call; set [`RedlockConfig::restart_quarantine`] to the longest TTL any client uses) it
///   refuses to grant: the locks it forgot may still be valid on other instances, and granting
///   could let a second holder reach a majority (the "delayed restart" of the Redlock analysis,
///   enforced by the server itself from its uptime).
/// - Per-instance answers are never collapsed to a bool: errors carry [`InstanceReport`](crate::InstanceReport)s.
///
/// ## Why the fencing tokens strictly increase
/// Let holder H hand out token `t`. It did so only after `t` sat in the fence counter of a set
/// `W` of at least a majority of instances, each written while H's lock key was present there
/// (in the acquire script itself, or by the write-back, which checks the key). Let H′ be the next
/// holder; it acquired on a majority `M′`. Two majorities of the same N instances share at least
/// one instance `m`. On `m`, H′'s `SET NX` succeeded, so it ran after H's key had left `m`
/// (released, or expired — and the key outlives H's validity, so after H's write on `m`). H′
/// therefore read a counter of at least `t` on `m` and took a token of at least `t + 1`.
///
/// The argument needs `m` to have kept its counter. Data loss is covered as follows:
/// - the write goes to *every* instance that holds H's lock (normally all N; the calls to the
///   instances beyond the first majority land in the background), so with N = 3 and all three
///   written, H′'s majority shares *two* written instances with `W`: one of them may restart
///   empty and the other still carries `t`. (H′ reads the counters of the instances that
///   answered before its acquisition was decided: at least a majority.)
/// - extensions and releases raise the counter of every instance they reach to the holder's
///   token, so an instance that restarted empty is brought up to date by the current holder's
///   next heartbeat, within its restart quarantine;
/// - what remains uncovered is an instance losing its data while it is the only written instance
///   in a later majority (H held a bare majority because one instance was down, and then one of
///   H's instances restarts empty before anyone writes to the recovered one). Then a token can
///   repeat or go down — and the fenced resource refuses it (it never accepts a token at or below
///   the highest it has seen); [`Redlock::raise_fence_floor`] lifts every counter above the
///   resource's high-water mark, as for the single-instance mutex.
///
/// Every instance in `W` and `M′` is counted for the attempt that *set* it, in that very
/// script call: one acquisition retries with one token, so an instance can still hold the
/// caller's key from an earlier attempt whose undo was lost. The acquire script then grants it
/// afresh — TTL reset to this attempt's, counter and stored fence raised to this attempt's
/// proposal, the counter *before* that reported — exactly as if the key had been free. Such an
/// instance therefore never counts with an older attempt's TTL (the guard's safety deadline,
/// counted from this attempt's send, would outlive the key) nor without the new fence (which
/// would leave the token written to less than the majority the argument needs).
///
/// Proposals come from the wall clock in microseconds (and above the client's last proposal),
/// so successive holders usually propose above every counter and skip the write-back; a client
/// whose clock is behind only takes the slower path. Correctness never depends on clocks being
/// in sync — only the fast path's hit rate does. Tokens stay below 2^53 (Lua numbers).
///
/// # Not guaranteed
/// - Exclusion under unbounded pauses or clock jumps: a holder paused past its validity, or an
///   instance whose clock jumps forward, can let a second holder in while the first still
///   believes it holds. Fencing tokens, checked by the protected resource, keep that harmless.
/// - Fairness: waiters are not queued (no instance can order them alone); they retry when any
///   instance announces a release (after a random delay of up to 0.4 ms, so that waiters woken
///   together split the votes less often), and after a jittered back-off bounded by the holder's
///   TTL.
/// - An operator's `FLUSHALL` on an instance is not detected (its uptime does not change): flush
///   by restarting, or raise the fence floor afterwards.
/// - Redlock keys live on independent masters; it is not meant for a Redis Cluster (use the
///   single-instance primitives there).
///
/// # Example
/// ```rust,no_run
/// use std::time::Duration;
/// use lockstock_lock::{LockOptions, Redlock, RedlockConfig};
///
/// # async fn demo() -> Result<(), lockstock_lock::LockError> {
/// let redlock = Redlock::connect(
///     &["redis://10.0.0.1:6379", "redis://10.0.0.2:6379", "redis://10.0.0.3:6379"],
///     RedlockConfig::default(),
/// )
/// .await?;
/// let guard = redlock.acquire("product:1", &LockOptions::default(), Duration::from_secs(5)).await?;
/// // Hand guard.fence() to the protected resource before reading; watch guard.lost().
/// guard.release().await?;
/// # Ok(()) }
/// ```
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

/// One instance's view of a resource, from [`Redlock::inspect`].
#[derive(Debug)]
pub struct InstanceLock {
    /// The instance's URL, password masked.
    pub instance: String,
    /// The lock there (`Ok(None)`: free there), or why it could not be read.
    pub lock: Result<Option<LockInfo>>,
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

    /// Raises `resource`'s fence counter on every instance to at least `floor` (after the fenced
    /// resource refused a token: an instance lost its counters). Returns the highest counter
    /// afterwards; needs a majority.
    pub async fn raise_fence_floor(&self, resource: &str, floor: u64) -> Result<FencingToken> {
        let keys = self.keys().redlock(resource)?;
        let replies = self
            .on_all(
                Call::new(&SCRIPTS.raise_fence).key(&keys.fence).arg(floor),
                |_| false,
            )
            .await;
        let mut highest = 0u64;
        let reports = self.reports("raise_fence", replies, |reply| match reply {
            Value::Int(value) => {
                highest = highest.max((*value).max(0) as u64);
                Some(InstanceReply::Agreed)
            }
            _ => None,
        });
        let agreed = count(&reports, agreed);
        if agreed < self.inner.quorum {
            return Err(self.no_quorum("raise fence floor", &keys.resource, agreed, reports));
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
                let lock =
                    tokio::time::timeout(timeout, read_lock(&mut conn, &keys.lock, &keys.resource))
                        .await
                        .unwrap_or_else(|_| Err(timed_out_error()));
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
    fn passwords_are_masked_in_instance_names() {
        assert_eq!(mask_url("redis://:pw@h:1"), "redis://:***@h:1");
    }
}
