//! The generic guard: the shape every primitive shares once acquired — a heartbeat, a lost
//! signal, a local safety deadline and an explicit release. [`LockGuard`](crate::LockGuard),
//! [`SemaphorePermit`](crate::SemaphorePermit), [`ReadGuard`](crate::ReadGuard),
//! [`WriteGuard`](crate::WriteGuard), [`FairGuard`](crate::FairGuard) and
//! [`RedlockGuard`](crate::RedlockGuard) are thin wrappers over `Held`, each with its own
//! `Holder` (the Redis side: extend and release); [`HoldLease`] is the view they hand out.
//!
//! - When a primitive is acquired, then the safety deadline is the instant the acquiring request
//!   was *sent* (for a hand-off: the earliest local instant it can have happened) plus the TTL
//!   *actually granted* minus the drift allowance scaled to it (a hand-off to a waiter is granted
//!   with the waiter's lease at most, so a dead waiter cannot sit on it for a TTL); each
//!   successful extension moves it to that extension's send instant plus the full TTL minus the
//!   drift.
//! - Deadlines are measured on the local monotonic clock (`Instant`), which on most platforms
//!   does not advance while the host is suspended: a host that sleeps through its deadline wakes
//!   believing it still holds, and the lost signal fires late — at the next extension, which then
//!   finds the hold gone. Only the fencing token protects the resource across a suspend.
//! - While held, the heartbeat extends every `ttl / 3` (see [`Heartbeat`](crate::Heartbeat));
//!   the first time after the period scaled to the TTL actually granted (a third of the waiter's
//!   lease for a capped hand-off), so the first extension always comes before the deadline. When an
//!   extension finds the hold gone, then the lost signal fires at once; when extensions fail
//!   (Redis unreachable, no majority), then they are retried quickly and the lost signal fires
//!   at the safety deadline, before any Redis could expire the hold.
//! - When `max_hold` is set and reached, then renewal stops (a wedged holder loses the hold at its
//!   deadline); when `warn_after` is set, then a warning naming the owner is logged at each
//!   multiple of it.
//! - When the `Holder` has [`LockMetrics`](crate::LockMetrics) (the mutex: its client's), then
//!   the lost signal counts one loss per hold and the release (explicit, or by drop) records
//!   the hold time.
//! - When the guard is released, then the heartbeat stops first; when it is dropped unreleased,
//!   then the release is sent from a background task (the TTL is the safety net without a
//!   runtime). No `Drop` does network I/O itself.
//! - Not guaranteed: that the hold still exists at any instant. Only a fencing token checked by
//!   the protected resource makes a stale holder's writes harmless.

use std::{
    fmt,
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{
    error::{LockError, Result},
    metrics::LockMetrics,
    observe::{LockEvent, Observed},
    options::LockOptions,
    token::FencingToken,
    waiting::Grant,
};

/// What releasing a lock found ([`LockGuard::release`](crate::LockGuard::release) and the other guards' `release`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseOutcome {
    /// The lock was ours and is now free.
    Released,
    /// The lock was ours and went straight to the next waiter.
    HandedOff,
    /// The lock was no longer ours (expired, or taken by another holder): nothing was changed.
    NotHeld,
}

impl ReleaseOutcome {
    /// Maps a release script's reply: `1` released, `2` handed to a waiter, `0` not held.
    pub(crate) fn from_reply(operation: &'static str, reply: i64) -> Result<Self> {
        match reply {
            1 => Ok(Self::Released),
            2 => Ok(Self::HandedOff),
            0 => Ok(Self::NotHeld),
            other => Err(LockError::UnexpectedReply {
                operation,
                detail: other.to_string(),
            }),
        }
    }
}

/// The Redis side of one hold: how to extend and release it.
pub(crate) trait Holder: fmt::Debug + Send + Sync + 'static {
    /// Resets the hold's TTL: `Ok(true)` still held, `Ok(false)` definitely gone or taken, `Err`
    /// when that could not be found out (the heartbeat retries until the safety deadline).
    fn extend(&self, ttl_ms: u64) -> impl Future<Output = Result<bool>> + Send;

    /// Gives the hold up (handing it on where the primitive does).
    fn release(&self) -> impl Future<Output = Result<ReleaseOutcome>> + Send;

    /// Who holds it, as logged with hold-time warnings.
    fn owner(&self) -> &str {
        ""
    }

    /// Where losses and hold times are counted, if anywhere.
    fn metrics(&self) -> Option<Arc<LockMetrics>> {
        None
    }

    /// The observer of this hold's events, if one is attached (the mutex: its client's).
    fn observed(&self) -> Option<Observed> {
        None
    }
}

/// What a guard, its heartbeat and its leases share.
#[derive(Debug)]
struct State {
    /// The resource name.
    resource: String,
    /// What is held, for logs ("semaphore permit", "write lock", ...).
    what: &'static str,
    /// The fencing token of this hold.
    fence: FencingToken,
    /// The local instant the hold is known to have been granted by.
    acquired_at: Instant,
    /// The local safety deadline; the lost signal fires when it passes.
    deadline: Mutex<Instant>,
    /// Fired when the hold is (or may be) lost.
    lost: CancellationToken,
    /// The TTL each extension sets.
    ttl: Duration,
    /// The drift allowance subtracted from the TTL for the safety deadline.
    drift: Duration,
    /// Where the loss and the hold time are counted, if anywhere.
    metrics: Option<Arc<LockMetrics>>,
    /// Who sees this hold's events, if anyone.
    observed: Option<Observed>,
}

impl State {
    /// Tells the observer, if any, what `event` builds (nothing is built without one).
    fn observe(&self, event: impl FnOnce(&Observed) -> LockEvent) {
        if let Some(observed) = &self.observed {
            observed.observer.on_event(&event(observed));
        }
    }

    /// A successful extension sent at `sent` moved the deadline to `deadline`.
    fn extended(&self, sent: Instant, deadline: Instant) {
        self.set_deadline(deadline);
        self.observe(|o| LockEvent::Extend {
            resource: self.resource.clone(),
            token: o.token,
            fence: self.fence.get(),
            sent_at: sent,
            deadline,
        });
    }

    /// A release sent at `sent` found `outcome`.
    fn released(&self, sent: Instant, outcome: ReleaseOutcome) {
        self.observe(|o| match outcome {
            ReleaseOutcome::HandedOff => LockEvent::HandOff {
                resource: self.resource.clone(),
                token: o.token,
                fence: self.fence.get(),
                sent_at: sent,
            },
            outcome => LockEvent::Release {
                resource: self.resource.clone(),
                token: o.token,
                fence: self.fence.get(),
                sent_at: sent,
                outcome,
            },
        });
    }

    fn deadline(&self) -> Instant {
        *self.deadline.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_deadline(&self, deadline: Instant) {
        *self.deadline.lock().unwrap_or_else(|p| p.into_inner()) = deadline;
    }

    fn lose(&self, why: &'static str) {
        if !self.lost.is_cancelled() {
            tracing::warn!(
                resource = %self.resource,
                what = self.what,
                fence = self.fence.get(),
                held_for_ms = self.acquired_at.elapsed().as_millis() as u64,
                why,
                "hold lost"
            );
            if let Some(metrics) = &self.metrics {
                metrics.lost();
            }
            self.observe(|o| LockEvent::Lost {
                resource: self.resource.clone(),
                token: o.token,
                fence: self.fence.get(),
                why,
            });
            self.lost.cancel();
        }
    }

    /// Records the hold time (once, when the hold ends).
    fn ended(&self) {
        if let Some(metrics) = &self.metrics {
            metrics.released(self.acquired_at.elapsed());
        }
    }
}

/// A held primitive: the state, the heartbeat task and the Redis side.
#[derive(Debug)]
pub(crate) struct Held<H: Holder> {
    state: Arc<State>,
    holder: Arc<H>,
    /// Stops the heartbeat.
    stop: CancellationToken,
    heartbeat: Option<JoinHandle<()>>,
    released: bool,
}

/// A cheap, clonable view of a held lock, semaphore permit, read/write lock, fair lock or Redlock
/// for the code running under it: its fencing token and lost signal. It does not keep the hold
/// alive; the guard does.
#[derive(Debug, Clone)]
pub struct HoldLease {
    state: Arc<State>,
}

impl<H: Holder> Held<H> {
    /// Starts the heartbeat of a hold granted by `grant.base` with `grant.valid_for` of TTL left
    /// then.
    pub(crate) fn start(
        holder: H,
        what: &'static str,
        resource: &str,
        options: &LockOptions,
        grant: Grant,
    ) -> Self {
        let Grant {
            fence,
            base,
            valid_for,
            server_ms,
        } = grant;
        let drift = options.drift();
        // A hand-off capped by the waiter's lease is granted for less than the TTL: its deadline
        // and first extension count from the TTL actually granted (the full TTL's drift
        // allowance could exceed a short grant and lose it before its first extension).
        let state = Arc::new(State {
            resource: resource.to_owned(),
            what,
            fence: FencingToken(fence),
            acquired_at: base,
            deadline: Mutex::new(
                base + valid_for.saturating_sub(scaled(drift, valid_for, options.ttl)),
            ),
            lost: CancellationToken::new(),
            ttl: options.ttl,
            drift,
            metrics: holder.metrics(),
            observed: holder.observed(),
        });
        state.observe(|o| LockEvent::Grant {
            resource: state.resource.clone(),
            token: o.token,
            fence,
            server_time_ms: server_ms,
            sent_at: base,
            deadline: state.deadline(),
        });
        let stop = CancellationToken::new();
        let first_extend = match options.heartbeat_period() {
            Some(period) => Some(base + scaled(period, valid_for, options.ttl)),
            // No heartbeat: a hand-off granted for less than the TTL is still extended once, to
            // the TTL the caller asked for.
            None => (valid_for < options.ttl).then(|| base + valid_for / 3),
        };
        let holder = Arc::new(holder);
        let heartbeat = tokio::spawn(heartbeat(
            holder.clone(),
            state.clone(),
            options.clone(),
            stop.clone(),
            first_extend,
        ));
        Self {
            state,
            holder,
            stop,
            heartbeat: Some(heartbeat),
            released: false,
        }
    }

    pub(crate) fn resource(&self) -> &str {
        &self.state.resource
    }

    /// The Redis side (for primitive-specific accessors such as the mutex's token).
    pub(crate) fn holder(&self) -> &H {
        &self.holder
    }

    pub(crate) fn fence(&self) -> FencingToken {
        self.state.fence
    }

    pub(crate) fn lost(&self) -> CancellationToken {
        self.state.lost.clone()
    }

    pub(crate) fn is_lost(&self) -> bool {
        self.state.lost.is_cancelled()
    }

    pub(crate) fn remaining(&self) -> Duration {
        self.state
            .deadline()
            .saturating_duration_since(Instant::now())
    }

    pub(crate) fn held_for(&self) -> Duration {
        self.state.acquired_at.elapsed()
    }

    pub(crate) fn lease(&self) -> HoldLease {
        HoldLease {
            state: self.state.clone(),
        }
    }

    pub(crate) async fn extend(&self) -> Result<bool> {
        let sent = Instant::now();
        let ttl_ms = u64::try_from(self.state.ttl.as_millis()).unwrap_or(u64::MAX);
        let still_held = self.holder.extend(ttl_ms).await?;
        if still_held {
            self.state
                .extended(sent, sent + self.state.ttl.saturating_sub(self.state.drift));
        } else {
            self.state.lose("an extension found the hold gone or taken");
        }
        Ok(still_held)
    }

    pub(crate) async fn release(mut self) -> Result<ReleaseOutcome> {
        self.stop.cancel();
        if let Some(task) = self.heartbeat.take() {
            task.abort();
        }
        self.released = true;
        self.state.ended();
        let sent = Instant::now();
        let outcome = self.holder.release().await?;
        self.state.released(sent, outcome);
        if outcome == ReleaseOutcome::NotHeld {
            tracing::debug!(resource = %self.state.resource, what = self.state.what, "released a hold that was no longer held");
        }
        Ok(outcome)
    }
}

impl<H: Holder> Drop for Held<H> {
    fn drop(&mut self) {
        self.stop.cancel();
        if self.released {
            return;
        }
        self.state.ended();
        let holder = self.holder.clone();
        let state = self.state.clone();
        let heartbeat = self.heartbeat.take();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Some(task) = heartbeat {
                    let _ = task.await;
                }
                let sent = Instant::now();
                match holder.release().await {
                    Ok(outcome) => state.released(sent, outcome),
                    Err(error) => {
                        tracing::debug!(%error, resource = %state.resource, what = state.what, "background release failed; the TTL will free it");
                    }
                }
            });
        }
    }
}

impl HoldLease {
    /// The resource held.
    pub fn resource(&self) -> &str {
        &self.state.resource
    }

    /// The fencing token of this hold.
    pub fn fence(&self) -> FencingToken {
        self.state.fence
    }

    /// Fires when the hold is lost, or may be (its safety deadline passed).
    pub fn lost(&self) -> CancellationToken {
        self.state.lost.clone()
    }

    /// Whether the lost signal has fired.
    pub fn is_lost(&self) -> bool {
        self.state.lost.is_cancelled()
    }

    /// Time left before the local safety deadline (zero once passed).
    pub fn remaining(&self) -> Duration {
        self.state
            .deadline()
            .saturating_duration_since(Instant::now())
    }
}

/// The public methods every guard over [`Held`] shares (the guard keeps it in a `held` field).
macro_rules! held_guard_methods {
    () => {
        /// The resource held.
        pub fn resource(&self) -> &str {
            self.held.resource()
        }

        /// The fencing token of this hold: hand it to the protected resource before reading.
        pub fn fence(&self) -> $crate::FencingToken {
            self.held.fence()
        }

        /// Fires when the hold is lost, or may be (its safety deadline passed without a
        /// successful extension). `select!` on `lost().cancelled()` around the critical section.
        pub fn lost(&self) -> tokio_util::sync::CancellationToken {
            self.held.lost()
        }

        /// Whether the lost signal has fired.
        pub fn is_lost(&self) -> bool {
            self.held.is_lost()
        }

        /// Time left before the local safety deadline (zero once passed).
        pub fn remaining(&self) -> std::time::Duration {
            self.held.remaining()
        }

        /// How long the hold has lasted.
        pub fn held_for(&self) -> std::time::Duration {
            self.held.held_for()
        }

        /// A clonable view (fence + lost signal) to hand to the code running under the hold.
        pub fn lease(&self) -> $crate::HoldLease {
            self.held.lease()
        }

        /// Extends the TTL now (the heartbeat does this by itself). `Ok(false)` when the hold is
        /// gone; the lost signal then fires too.
        pub async fn extend(&self) -> $crate::Result<bool> {
            self.held.extend().await
        }

        /// Stops the heartbeat, then releases (handing on to waiters where the primitive does).
        /// [`ReleaseOutcome::NotHeld`](crate::ReleaseOutcome::NotHeld) means it had
        /// expired or been taken: nothing was changed.
        pub async fn release(self) -> $crate::Result<$crate::ReleaseOutcome> {
            self.held.release().await
        }
    };
}
pub(crate) use held_guard_methods;

/// `span` (a drift allowance or heartbeat period of a full-TTL hold) scaled to a hold granted
/// for `granted`: in proportion when that is shorter than `ttl`. Validation keeps the period below
/// `ttl - drift`, so the scaled period stays below the scaled deadline too.
fn scaled(span: Duration, granted: Duration, ttl: Duration) -> Duration {
    if granted >= ttl || ttl.is_zero() {
        span
    } else {
        span.mul_f64(granted.as_secs_f64() / ttl.as_secs_f64())
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Extends the hold, fires the lost signal, logs hold-time warnings; ends on `stop`.
async fn heartbeat<H: Holder>(
    holder: Arc<H>,
    state: Arc<State>,
    options: LockOptions,
    stop: CancellationToken,
    first_extend: Option<Instant>,
) {
    let period = options.heartbeat_period();
    let ttl = options.ttl;
    let ttl_ms = options.ttl_ms();
    let drift = options.drift();
    let retry_after = (period.unwrap_or(ttl / 3) / 4).max(Duration::from_millis(5));
    let mut next_extend = first_extend;
    let mut warnings = 1u32;
    let mut warn_at = options.warn_after.map(|w| state.acquired_at + w);
    let owner = holder.owner();

    loop {
        let deadline = state.deadline();
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = tokio::time::sleep_until(deadline.into()) => {
                state.lose("safety deadline passed without a successful extension");
                return;
            }
            () = sleep_until_some(warn_at) => {
                tracing::warn!(
                    resource = %state.resource,
                    what = state.what,
                    owner = %owner,
                    held_for_ms = state.acquired_at.elapsed().as_millis() as u64,
                    "held longer than the warning threshold"
                );
                warnings += 1;
                warn_at = options.warn_after.map(|w| state.acquired_at + w * warnings);
            }
            () = sleep_until_some(next_extend) => {
                if options.max_hold.is_some_and(|cap| state.acquired_at.elapsed() >= cap) {
                    tracing::warn!(
                        resource = %state.resource,
                        what = state.what,
                        owner = %owner,
                        held_for_ms = state.acquired_at.elapsed().as_millis() as u64,
                        "reached its maximum hold time; no longer extending it"
                    );
                    next_extend = None;
                    continue;
                }
                let sent = Instant::now();
                let answer = tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep_until(deadline.into()) => None,
                    answer = holder.extend(ttl_ms) => Some(answer),
                };
                match answer {
                    Some(Ok(true)) => {
                        state.extended(sent, sent + ttl.saturating_sub(drift));
                        next_extend = period.map(|p| sent + p);
                    }
                    Some(Ok(false)) => {
                        state.lose("an extension found the hold gone or taken");
                        return;
                    }
                    Some(Err(error)) => {
                        tracing::debug!(%error, resource = %state.resource, what = state.what, "extension failed; retrying");
                        next_extend = Some(Instant::now() + retry_after);
                    }
                    None => {} // deadline reached; the next turn fires the lost signal
                }
            }
        }
    }
}
