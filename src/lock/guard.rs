//! [`LockGuard`]: a held lock, its heartbeat, and its lost signal.
//!
//! - When the lock is acquired, then the guard computes a local safety deadline on the monotonic
//!   clock: the instant the acquire was *sent* (for a hand-off, the earliest local instant it can
//!   have happened) plus the TTL minus a drift allowance. Every successful extension pushes it to
//!   that extension's send time plus the TTL minus the drift.
//! - While held, a heartbeat task extends the TTL every `ttl / 3` (configurable). When an
//!   extension finds the lock gone or taken, then the lost signal fires at once; when Redis does
//!   not answer, then the heartbeat retries quickly and the lost signal fires at the safety
//!   deadline, before Redis can expire the key, so the critical section can stop before it
//!   commits even when Redis is unreachable.
//! - When `max_hold` is set and reached, then renewal stops (a wedged holder loses the lock at its
//!   deadline); when `warn_after` is set, then a warning is logged at each multiple of it.
//! - When [`LockGuard::release`] is called, then the heartbeat is stopped first, then the release
//!   is sent. When a guard is dropped unreleased, then the heartbeat stops and the release is sent
//!   from a background task (the TTL is the safety net if the runtime is gone).
//! - Not guaranteed: that the lock is still held at any instant. Only the fencing token, checked
//!   by the protected resource, makes a stale holder's writes harmless.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{
    client::{LockClient, ReleaseOutcome},
    error::Result,
    keys::ResourceKeys,
    metrics::LockMetrics,
    options::LockOptions,
    token::{FencingToken, LockToken},
};

/// What the guard, its heartbeat and its leases share.
#[derive(Debug)]
struct Shared {
    keys: ResourceKeys,
    token: LockToken,
    fence: FencingToken,
    /// The local instant the lock is known to have been granted by (see module docs).
    acquired_at: Instant,
    /// The local safety deadline; the lost signal fires when it passes.
    deadline: Mutex<Instant>,
    /// Fired when the lock is (or may be) lost.
    lost: CancellationToken,
    /// The TTL each extension sets.
    ttl: Duration,
    /// The drift allowance subtracted from the TTL for the safety deadline.
    drift: Duration,
    /// The client's metrics (losses and hold times are recorded here).
    metrics: Arc<LockMetrics>,
}

impl Shared {
    fn deadline(&self) -> Instant {
        *self.deadline.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_deadline(&self, deadline: Instant) {
        *self.deadline.lock().unwrap_or_else(|p| p.into_inner()) = deadline;
    }

    fn lose(&self, why: &'static str) {
        if !self.lost.is_cancelled() {
            tracing::warn!(
                resource = %self.keys.resource,
                fence = self.fence.get(),
                held_for_ms = self.acquired_at.elapsed().as_millis() as u64,
                why,
                "lock lost"
            );
            self.metrics.lost();
            self.lost.cancel();
        }
    }
}

/// Everything needed to start a guard.
#[derive(Debug)]
pub(crate) struct GuardParts {
    pub(crate) client: LockClient,
    pub(crate) keys: ResourceKeys,
    pub(crate) token: LockToken,
    pub(crate) fence: FencingToken,
    pub(crate) options: LockOptions,
    /// The local instant the grant is known to have happened by.
    pub(crate) base: Instant,
    /// The TTL the lock had at `base`.
    pub(crate) valid_for: Duration,
}

/// A held lock. Release it with [`LockGuard::release`]; watch [`LockGuard::lost`] while working.
#[derive(Debug)]
#[must_use = "a lock guard should be released with `release().await`"]
pub struct LockGuard {
    shared: Arc<Shared>,
    client: LockClient,
    /// Stops the heartbeat.
    stop: CancellationToken,
    heartbeat: Option<JoinHandle<()>>,
    released: bool,
}

/// A cheap, clonable view of a held lock for the code running under it: its fencing token and
/// lost signal. It does not keep the lock alive; the [`LockGuard`] does.
#[derive(Debug, Clone)]
pub struct LockLease {
    shared: Arc<Shared>,
}

impl LockGuard {
    pub(crate) fn start(parts: GuardParts) -> Self {
        let deadline = parts.base + parts.valid_for.saturating_sub(parts.options.drift());
        let shared = Arc::new(Shared {
            keys: parts.keys,
            token: parts.token,
            fence: parts.fence,
            acquired_at: parts.base,
            deadline: Mutex::new(deadline),
            lost: CancellationToken::new(),
            ttl: parts.options.ttl,
            drift: parts.options.drift(),
            metrics: parts.client.metrics_handle(),
        });
        let stop = CancellationToken::new();
        let heartbeat = tokio::spawn(heartbeat(
            parts.client.clone(),
            shared.clone(),
            parts.options,
            stop.clone(),
        ));
        Self {
            shared,
            client: parts.client,
            stop,
            heartbeat: Some(heartbeat),
            released: false,
        }
    }

    /// The resource this lock protects.
    pub fn resource(&self) -> &str {
        &self.shared.keys.resource
    }

    /// The fencing token of this acquisition: hand it to the protected resource before reading.
    pub fn fence(&self) -> FencingToken {
        self.shared.fence
    }

    /// This holder's token.
    pub fn token(&self) -> LockToken {
        self.shared.token
    }

    /// Fires when the lock is lost, or may be (safety deadline passed without an extension).
    /// `select!` on `lost().cancelled()` around the critical section.
    pub fn lost(&self) -> CancellationToken {
        self.shared.lost.clone()
    }

    /// Whether the lost signal has fired.
    pub fn is_lost(&self) -> bool {
        self.shared.lost.is_cancelled()
    }

    /// Time left before the local safety deadline (zero once passed).
    pub fn remaining(&self) -> Duration {
        self.shared
            .deadline()
            .saturating_duration_since(Instant::now())
    }

    /// How long the lock has been held.
    pub fn held_for(&self) -> Duration {
        self.shared.acquired_at.elapsed()
    }

    /// A clonable view (fence + lost signal) to hand to the code running under the lock.
    pub fn lease(&self) -> LockLease {
        LockLease {
            shared: self.shared.clone(),
        }
    }

    /// Extends the TTL now (the heartbeat does this by itself). `Ok(false)` when the lock is no
    /// longer ours; the lost signal then fires too.
    pub async fn extend(&self) -> Result<bool> {
        let sent = Instant::now();
        let ttl_ms = u64::try_from(self.shared.ttl.as_millis()).unwrap_or(u64::MAX);
        let still_ours = self
            .client
            .extend_token(&self.shared.keys, &self.shared.token, ttl_ms)
            .await?;
        if still_ours {
            self.shared
                .set_deadline(sent + self.shared.ttl.saturating_sub(self.shared.drift));
        } else {
            self.shared
                .lose("an extension found the lock gone or taken");
        }
        Ok(still_ours)
    }

    /// Stops the heartbeat, then releases the lock (handing it to the next waiter if any).
    ///
    /// [`ReleaseOutcome::NotHeld`] means the lock had expired or been taken: nothing was changed.
    pub async fn release(mut self) -> Result<ReleaseOutcome> {
        self.stop_heartbeat().await;
        self.released = true;
        self.shared
            .metrics
            .released(self.shared.acquired_at.elapsed());
        let outcome = self
            .client
            .release_token(&self.shared.keys, &self.shared.token)
            .await?;
        if outcome == ReleaseOutcome::NotHeld {
            tracing::debug!(resource = %self.shared.keys.resource, "released a lock that was no longer held");
        }
        Ok(outcome)
    }

    async fn stop_heartbeat(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.heartbeat.take() {
            task.abort();
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.stop.cancel();
        if self.released {
            return;
        }
        self.shared
            .metrics
            .released(self.shared.acquired_at.elapsed());
        let client = self.client.clone();
        let shared = self.shared.clone();
        let heartbeat = self.heartbeat.take();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Some(task) = heartbeat {
                    let _ = task.await;
                }
                if let Err(error) = client.release_token(&shared.keys, &shared.token).await {
                    tracing::debug!(%error, resource = %shared.keys.resource, "background release failed; the TTL will free the lock");
                }
            });
        }
    }
}

impl LockLease {
    /// The resource this lock protects.
    pub fn resource(&self) -> &str {
        &self.shared.keys.resource
    }

    /// The fencing token of this acquisition.
    pub fn fence(&self) -> FencingToken {
        self.shared.fence
    }

    /// Fires when the lock is lost (see [`LockGuard::lost`]).
    pub fn lost(&self) -> CancellationToken {
        self.shared.lost.clone()
    }

    /// Whether the lost signal has fired.
    pub fn is_lost(&self) -> bool {
        self.shared.lost.is_cancelled()
    }

    /// Time left before the local safety deadline.
    pub fn remaining(&self) -> Duration {
        self.shared
            .deadline()
            .saturating_duration_since(Instant::now())
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Extends the lock, fires the lost signal, logs hold-time warnings; ends on `stop`.
async fn heartbeat(
    client: LockClient,
    shared: Arc<Shared>,
    options: LockOptions,
    stop: CancellationToken,
) {
    let period = options.heartbeat_period();
    let ttl = options.ttl;
    let ttl_ms = options.ttl_ms();
    let drift = options.drift();
    let retry_after = period.map(|p| (p / 4).max(Duration::from_millis(5)));
    let mut next_extend = period.map(|p| shared.acquired_at + p);
    let mut warnings = 1u32;
    let mut warn_at = options.warn_after.map(|w| shared.acquired_at + w);
    let owner = client.owner_json().to_owned();

    loop {
        let deadline = shared.deadline();
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = tokio::time::sleep_until(deadline.into()) => {
                shared.lose("safety deadline passed without a successful extension");
                return;
            }
            () = sleep_until_some(warn_at) => {
                tracing::warn!(
                    resource = %shared.keys.resource,
                    owner = %owner,
                    held_for_ms = shared.acquired_at.elapsed().as_millis() as u64,
                    "lock held longer than the warning threshold"
                );
                warnings += 1;
                warn_at = options.warn_after.map(|w| shared.acquired_at + w * warnings);
            }
            () = sleep_until_some(next_extend) => {
                if options.max_hold.is_some_and(|cap| shared.acquired_at.elapsed() >= cap) {
                    tracing::warn!(
                        resource = %shared.keys.resource,
                        owner = %owner,
                        held_for_ms = shared.acquired_at.elapsed().as_millis() as u64,
                        "lock reached its maximum hold time; no longer extending it"
                    );
                    next_extend = None;
                    continue;
                }
                let sent = Instant::now();
                let answer = tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep_until(deadline.into()) => None,
                    answer = client.extend_token(&shared.keys, &shared.token, ttl_ms) => Some(answer),
                };
                match answer {
                    Some(Ok(true)) => {
                        shared.set_deadline(sent + ttl.saturating_sub(drift));
                        next_extend = period.map(|p| sent + p);
                    }
                    Some(Ok(false)) => {
                        shared.lose("an extension found the lock gone or taken");
                        return;
                    }
                    Some(Err(error)) => {
                        tracing::debug!(%error, resource = %shared.keys.resource, "extension failed; retrying");
                        next_extend = retry_after.map(|r| Instant::now() + r);
                    }
                    None => {} // deadline reached; the next turn fires the lost signal
                }
            }
        }
    }
}
