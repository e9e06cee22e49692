//! The one wait loop every queued primitive runs (mutex, semaphore, read/write lock, fair lock),
//! and the jittered back-off it (and Redlock) falls back on.
//!
//! Every queued primitive keeps, per resource, a FIFO queue of waiters in Redis. Its scripts
//! share one contract ([`QueuedOps`]):
//!
//! - `attempt` grants when the primitive allows it and no older live waiter is ahead, else (when
//!   asked to) queues the caller, or keeps its entry; it hands free capacity to the oldest live
//!   waiters first, announcing each hand-off as `token\nfence\nserver_ms\nttl_ms` on the channel
//!   the waiter's entry names: its own client's channel for the resource
//!   ([`Notifier::channel_for`]), so a hand-off wakes only the process it is for.
//! - `cancel` leaves the queue unless the caller was handed the hold meanwhile.
//!
//! Two paces ([`Pace`]) differ only in how long a queue entry lives and when the waiter looks
//! again without a message:
//!
//! - [`Pace::Lease`] (semaphore, read/write lock, fair lock): an entry lives one *lease*, renewed
//!   every `lease / 3` by the next attempt; a dead waiter blocks nobody longer than one lease.
//! - [`Pace::Backoff`] (mutex): an entry lives one lease too (renewed at least every
//!   `lease / 3`); the waiter listens before it queues (a free lock costs one round trip while
//!   the process is not yet listening on the resource), and looks again on a jittered back-off
//!   ([`Backoff`]) in case a message was lost or the holder vanished.
//!
//! Either way a hand-off grants the waiter its TTL capped by its lease (the scripts keep the
//! capped TTL in the entry); the guard counts its deadline and first extension from that
//! (`guard.rs`), and the first extension restores the full TTL.
//!
//! What the loop guarantees:
//! - When the hold is handed to a waiter, then the waiter wakes on the hand-off message (no
//!   polling) and owns it without another round trip; its hold counts from the earliest local
//!   instant the hand-off can have happened.
//! - When a hand-off message is older (its server time below) than the server time of a call of
//!   the waiter's that already found the hold not the waiter's, then the hold it announced is
//!   gone (it expired, e.g. while the waiter was paused, and may be someone else's now): the
//!   message is discarded, never turned into a guard, and the waiter keeps waiting. (Equal
//!   server times cannot prove it: the call may have run just before the hand-off.)
//! - When a hand-off message's hold has already run out by the time it is read (counted from the
//!   earliest local instant the hand-off can have happened), then it is discarded too: a guard is
//!   never born expired. If the hold was in fact still the waiter's, the next attempt answers
//!   "already yours". (Found by the model in `tests/model/`.) Both discards are skipped only
//!   under the test-only `LockConfig::unsafe_keep_stale_handoffs` (the chaos self-test).
//! - When the blocking holder's TTL runs out first, then the waiter wakes at that instant (the
//!   script reports it) and tries again; a lost message costs at most one renewal or back-off
//!   step.
//! - When the deadline passes, or the waiting future is dropped, then the waiter leaves the
//!   queue (in the background when dropped, or when leaving at the deadline failed); a hold
//!   handed to it meanwhile is taken (deadline) or released (dropped). Leaving is by token, so a
//!   retry after a lost reply still finds the entry; if every try fails, the entry's lease runs
//!   out and a hand-off to it costs one lease at most.
//! - When a call fails with a connection error while waiting, then the loop keeps waiting (the
//!   queue entry still stands) until the deadline, then reports the error.
//! - Not guaranteed: a place in the queue for a waiter cut off from Redis past its lease; it
//!   queues again at the back when it renews.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use super::{
    client::LockClient,
    error::{LockError, Result},
    guard::Holder,
    notify::{Handoff, Notifier},
    options::LockOptions,
    scripts::SCRIPTS,
    token::LockToken,
};

/// The shortest waiter lease accepted.
pub(crate) const MIN_WAITER_LEASE: Duration = Duration::from_millis(30);

/// Refuses a waiter lease shorter than [`MIN_WAITER_LEASE`], with a sentence saying why.
pub(crate) fn check_waiter_lease(lease: Duration) -> Result<Duration> {
    if lease < MIN_WAITER_LEASE {
        return Err(LockError::InvalidArgument(format!(
            "the waiter lease must be at least {MIN_WAITER_LEASE:?} (got {lease:?})"
        )));
    }
    Ok(lease)
}

/// A zero-wait acquisition's answer as `try_*` methods give it: a timeout is `Ok(None)`.
pub(crate) fn none_on_timeout<T>(result: Result<T>) -> Result<Option<T>> {
    match result {
        Ok(held) => Ok(Some(held)),
        Err(LockError::Timeout { .. }) => Ok(None),
        Err(error) => Err(error),
    }
}

/// A jittered exponential back-off: each delay is the current step ±20 %, and the step doubles
/// up to a ceiling. (Not `backon`: its jitter only adds, up to a whole step, which would make
/// every fallback wait longer; here the schedule is a nap inside a loop that also wakes on
/// messages, not a retried call.)
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    step: Duration,
    max: Duration,
}

impl Backoff {
    /// Starts at `min`, doubling up to `max`.
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Self { step: min, max }
    }

    /// The current step, not jittered (what a failed call waits at most).
    pub(crate) fn current(&self) -> Duration {
        self.step
    }

    /// The next delay: the current step ±20 %; the step then doubles.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.step.mul_f64(0.8 + fastrand::f64() * 0.4);
        self.step = (self.step * 2).min(self.max);
        delay
    }
}

/// How long a queue entry lives and when a waiter looks again without a message.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Pace {
    /// Entries live one lease and are renewed every third of it (semaphore, read/write lock,
    /// fair lock). `retry` is the back-off after a failed call, capped at a third of the lease.
    Lease { lease: Duration, retry: Duration },
    /// Entries live one lease too, renewed at least every third of it; the waiter listens
    /// before it queues and looks again on a jittered back-off in between (mutex).
    Backoff { backoff: Backoff, lease: Duration },
}

impl Pace {
    /// Leased queue entries of `lease`.
    pub(crate) fn lease(lease: Duration) -> Self {
        Self::Lease {
            lease,
            retry: Duration::from_millis(10),
        }
    }

    /// Leased queue entries of `lease`, with looks on `backoff` in between.
    pub(crate) fn backoff(backoff: Backoff, lease: Duration) -> Self {
        Self::Backoff { backoff, lease }
    }

    fn listens_first(&self) -> bool {
        matches!(self, Self::Backoff { .. })
    }

    /// How long the entry of an attempt made with `remaining` wait left should live, in ms
    /// (`0`: do not queue).
    fn queue_ms(&self, remaining: Duration) -> u64 {
        match self {
            // The entry lives one lease, but never past the caller's deadline (plus a margin so a
            // renewal right at the deadline still finds it).
            Self::Lease { lease, .. } | Self::Backoff { lease, .. } => {
                ((*lease).min(remaining + MIN_WAITER_LEASE).as_millis() as u64).max(1)
            }
        }
    }

    /// After a failed call: how soon to look again at the latest.
    fn after_error(&mut self) -> Duration {
        match self {
            Self::Lease { lease, retry } => {
                *retry = (*retry * 2).min(*lease / 3);
                *retry
            }
            Self::Backoff { backoff, lease } => backoff.current().min(*lease / 3),
        }
    }

    /// How long to sleep before looking again, given when the blocking hold expires (`wake`).
    fn nap(&mut self, wake: Option<Duration>) -> Duration {
        match self {
            Self::Lease { lease, .. } => {
                let renew = *lease / 3;
                wake.map_or(renew, |wake| {
                    (wake.max(Duration::from_millis(1))
                        + Duration::from_millis(fastrand::u64(0..3)))
                    .min(renew)
                })
            }
            Self::Backoff { backoff, lease } => {
                let jittered = backoff.next_delay().min(*lease / 3);
                wake.map_or(jittered, |wake| {
                    jittered.min(
                        wake.max(Duration::from_millis(1))
                            + Duration::from_millis(fastrand::u64(0..5)),
                    )
                })
            }
        }
    }
}

/// What one `acquire` script call found.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Attempt {
    /// Granted (or already ours): the fencing token, the TTL left and, when the script read
    /// it, the server time of the grant.
    Granted {
        fence: u64,
        pttl_ms: u64,
        server_ms: Option<u64>,
    },
    /// Not granted. `wake_ms`: when the blocking hold expires at the latest, if known;
    /// `server_ms`: the server time of this call.
    Waiting {
        wake_ms: Option<u64>,
        server_ms: u64,
    },
}

/// A granted hold, with the local instant it is known to have been granted by.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Grant {
    /// The fencing token.
    pub(crate) fence: u64,
    /// The local instant the hold was granted by.
    pub(crate) base: Instant,
    /// The TTL the hold had at `base`.
    pub(crate) valid_for: Duration,
    /// The server time (Unix ms) of the grant, when the reply or message carried it.
    pub(crate) server_ms: Option<u64>,
}

impl Grant {
    fn at(base: Instant, fence: u64, pttl_ms: u64, server_ms: Option<u64>) -> Self {
        Self {
            fence,
            base,
            valid_for: Duration::from_millis(pttl_ms),
            server_ms,
        }
    }
}

/// Who one acquisition is: its client, token, hand-off channel and TTL. Every primitive's
/// Redis side starts from one.
#[derive(Debug, Clone)]
pub(crate) struct Ticket {
    /// The client (connection, owner record, notifier, metrics).
    pub(crate) client: LockClient,
    /// The acquisition's token, as stored in Redis.
    pub(crate) token: String,
    /// This client's own hand-off channel for the resource (kept in the queue entry).
    pub(crate) channel: String,
    /// The TTL of the hold, ms.
    pub(crate) ttl_ms: u64,
}

impl Ticket {
    /// A fresh token for one acquisition on the resource whose hand-off channel is `handoff`.
    pub(crate) fn new(client: &LockClient, handoff: &str, options: &LockOptions) -> Self {
        Self::with_token(client, handoff, options, LockToken::new())
    }

    /// As [`Ticket::new`], with a given token.
    pub(crate) fn with_token(
        client: &LockClient,
        handoff: &str,
        options: &LockOptions,
        token: LockToken,
    ) -> Self {
        Self {
            client: client.clone(),
            token: token.to_string(),
            channel: client.inner.notifier.channel_for(handoff),
            ttl_ms: options.ttl_ms(),
        }
    }
}

impl Ticket {
    /// Resets the TTL of the exclusive hold at `key` if it is still this ticket's
    /// (`extend.lua`: mutex, fair lock, writer): `Ok(false)` when gone or taken.
    pub(crate) async fn extend_exclusive(&self, key: &str, ttl_ms: u64) -> Result<bool> {
        let reply: i64 = self
            .client
            .run(SCRIPTS.extend.key(key).arg(&self.token).arg(ttl_ms))
            .await?;
        Ok(reply == 1)
    }

    /// Resets the expiry of this ticket's member of the expiring set `set`
    /// (`permit_extend.lua`: semaphore permit, reader): `Ok(false)` when gone.
    pub(crate) async fn extend_member(&self, set: &str, ttl_ms: u64) -> Result<bool> {
        let reply: i64 = self
            .client
            .run(SCRIPTS.permit_extend.key(set).arg(&self.token).arg(ttl_ms))
            .await?;
        Ok(reply == 1)
    }
}

/// The Redis side of one queued acquisition (one [`Ticket`]); once granted, the same value
/// extends and releases the hold ([`Holder`]).
pub(crate) trait QueuedOps: Holder {
    /// The acquisition's ticket.
    fn ticket(&self) -> &Ticket;

    /// One `acquire` call; `queue_ms == 0` means "do not queue".
    fn attempt(&self, queue_ms: u64) -> impl Future<Output = Result<Attempt>> + Send;

    /// Leaves the queue; `Some((fence, pttl_ms))` if the hold was handed over meanwhile.
    fn cancel(&self) -> impl Future<Output = Result<Option<(u64, u64)>>> + Send;

    /// Releases a hold that was handed to a waiter nobody waits for any more.
    fn release_orphan(&self) -> impl Future<Output = ()> + Send {
        async move {
            let _ = Holder::release(self).await;
        }
    }

    /// Whether an entry of this acquisition may be in the queue (leaving it then needs a call).
    fn may_be_queued(&self) -> bool {
        true
    }
}

/// Parses an `acquire` script's reply: `{1, fence, pttl_ms[, server_ms]}` or
/// `{0, wake_ms, server_ms}` (`wake_ms` < 0: unknown).
pub(crate) fn parse_attempt(operation: &'static str, reply: &[redis::Value]) -> Result<Attempt> {
    use redis::Value;
    match reply {
        [
            Value::Int(1),
            Value::Int(fence),
            Value::Int(pttl),
            rest @ ..,
        ] => Ok(Attempt::Granted {
            fence: (*fence).max(0) as u64,
            pttl_ms: (*pttl).max(0) as u64,
            server_ms: match rest {
                [Value::Int(now), ..] => u64::try_from(*now).ok(),
                _ => None,
            },
        }),
        [Value::Int(0), Value::Int(wake), Value::Int(now), ..] => Ok(Attempt::Waiting {
            wake_ms: u64::try_from(*wake).ok(),
            server_ms: (*now).max(0) as u64,
        }),
        other => Err(LockError::UnexpectedReply {
            operation,
            detail: format!("{other:?}"),
        }),
    }
}

/// Parses a `cancel` script's reply: `{1, fence, pttl_ms}` or `{0}`.
pub(crate) fn parse_cancel(
    operation: &'static str,
    reply: &[redis::Value],
) -> Result<Option<(u64, u64)>> {
    use redis::Value;
    match reply {
        [Value::Int(1), Value::Int(fence), Value::Int(pttl), ..] => {
            Ok(Some(((*fence).max(0) as u64, (*pttl).max(0) as u64)))
        }
        [Value::Int(0), ..] => Ok(None),
        other => Err(LockError::UnexpectedReply {
            operation,
            detail: format!("{other:?}"),
        }),
    }
}

/// How long one acquisition may wait, and at what pace.
#[derive(Debug)]
pub(crate) struct WaitPlan<'a> {
    /// The resource name (for errors and logs).
    pub(crate) resource: &'a str,
    /// How long to wait at most (zero: one unqueued attempt).
    pub(crate) wait: Duration,
    /// Entry lifetime and fallback schedule.
    pub(crate) pace: Pace,
}

/// Acquires through `ops`: at once when allowed, else queued until a hand-off, the blocking
/// hold's expiry, or the deadline.
pub(crate) async fn acquire<Q: QueuedOps + Clone>(ops: &Q, plan: WaitPlan<'_>) -> Result<Grant> {
    let started = Instant::now();
    let deadline = started + plan.wait;
    let mut pace = plan.pace;
    let ticket = ops.ticket();
    let notifier: &Arc<Notifier> = &ticket.client.inner.notifier;
    let discard_stale = !ticket.client.config().unsafe_keep_stale_handoffs;
    let timed_out = || LockError::Timeout {
        resource: plan.resource.to_owned(),
        waited: started.elapsed(),
    };

    // One unqueued look first: for a zero wait, and for the mutex while this process does not
    // listen on the resource yet (it was not contended lately): a free lock costs one round trip.
    let listening = notifier.is_subscribed(&ticket.channel);
    if plan.wait.is_zero() || (pace.listens_first() && !listening) {
        let sent = Instant::now();
        if let Attempt::Granted {
            fence,
            pttl_ms,
            server_ms,
        } = ops.attempt(0).await?
        {
            return Ok(Grant::at(sent, fence, pttl_ms, server_ms));
        }
        if plan.wait.is_zero() {
            return Err(timed_out());
        }
    }
    let mut registration = None;
    if pace.listens_first() {
        notifier.ensure_subscribed(&ticket.channel).await;
        registration = Some(notifier.register(&ticket.token, &ticket.channel));
    }

    // From the first queued call on, the caller may hold a queue entry (its place in arrival
    // order); dropping this removes it.
    let mut queued = QueuedEntry {
        ops: ops.clone(),
        armed: true,
    };
    // The latest (local send instant, server time) of a successful call: the server ran that
    // call after the local instant, which bounds when a later hand-off happened locally.
    let mut clock_pair: Option<(Instant, u64)> = None;
    loop {
        let sent = Instant::now();
        let attempt = ops
            .attempt(pace.queue_ms(deadline.saturating_duration_since(sent)))
            .await;
        let wake = match attempt {
            Ok(Attempt::Granted {
                fence,
                pttl_ms,
                server_ms,
            }) => {
                queued.armed = false;
                return Ok(Grant::at(sent, fence, pttl_ms, server_ms));
            }
            Ok(Attempt::Waiting { wake_ms, server_ms }) => {
                clock_pair = Some((sent, server_ms));
                wake_ms.map(Duration::from_millis)
            }
            // A connection error while waiting: keep waiting (the queue entry, if any, still
            // stands) until the deadline, then report the error.
            Err(error) if error.is_transient() && Instant::now() < deadline => {
                tracing::debug!(%error, resource = plan.resource, "queued attempt failed; retrying");
                Some(pace.after_error())
            }
            Err(error) => return Err(error),
        };

        let Some(active) = registration.as_mut() else {
            // First time queued: listen, then look again (a hand-off published before the
            // subscription was confirmed would otherwise be missed).
            registration = Some(notifier.register(&ticket.token, &ticket.channel));
            notifier.ensure_subscribed(&ticket.channel).await;
            continue;
        };

        if Instant::now() >= deadline {
            let cancel_sent = Instant::now();
            // When leaving fails, the entry stays armed: dropping it retries in the background
            // (and the entry's lease bounds what it can cost meanwhile).
            let left = ops.cancel().await?;
            queued.armed = false;
            return match left {
                Some((fence, pttl_ms)) => Ok(Grant::at(cancel_sent, fence, pttl_ms, None)),
                None => Err(timed_out()),
            };
        }

        let nap = pace
            .nap(wake)
            .min(deadline.saturating_duration_since(Instant::now()));
        tokio::select! {
            handoff = &mut active.receiver => {
                match handoff {
                    // Older than a call that already found the hold not ours: the hold it
                    // announced is gone (expired during a pause, maybe taken by another). Never
                    // a guard; keep waiting (the next attempt re-queues if the entry is gone).
                    Ok(Handoff { server_ms: handed_at, .. })
                        if discard_stale && clock_pair.is_some_and(|(_, seen)| handed_at < seen) =>
                    {
                        tracing::debug!(resource = plan.resource, handed_at, "discarding a stale hand-off message");
                        drop(registration.take());
                        registration = Some(notifier.register(&ticket.token, &ticket.channel));
                    }
                    Ok(Handoff { fence, server_ms: handed_at, ttl_ms }) => {
                        // The call that saw the server at `server_ms` was sent at `sent`; the
                        // hand-off ran `handed_at - server_ms` later on the server's clock, so
                        // locally it happened no earlier than `sent` plus that gap.
                        let received = Instant::now();
                        let base = match clock_pair {
                            Some((sent, server_ms)) => {
                                let gap = Duration::from_millis(handed_at.saturating_sub(server_ms));
                                (sent + gap).min(received)
                            }
                            None => started,
                        };
                        // Born expired: the hold it announced ran out before the message was
                        // read (e.g. the reply that would have shown a later server time was
                        // lost). Never a guard; keep waiting. If the hold is in fact still ours,
                        // the next attempt answers "already yours".
                        if discard_stale && base + Duration::from_millis(ttl_ms) <= received {
                            tracing::debug!(resource = plan.resource, handed_at, ttl_ms, "discarding an expired hand-off message");
                            drop(registration.take());
                            registration = Some(notifier.register(&ticket.token, &ticket.channel));
                            continue;
                        }
                        queued.armed = false;
                        return Ok(Grant::at(base, fence, ttl_ms, Some(handed_at)));
                    }
                    // The notifier went away: carry on with the fallback looks only.
                    Err(_) => {
                        // Drop the old registration first: its removal is by token.
                        drop(registration.take());
                        registration = Some(notifier.register(&ticket.token, &ticket.channel));
                    }
                }
            }
            () = tokio::time::sleep(nap) => {}
        }
    }
}

/// A waiter's queue entry; left in the background if the waiting future is dropped.
struct QueuedEntry<Q: QueuedOps + Clone> {
    ops: Q,
    /// Whether the entry may still be in Redis.
    armed: bool,
}

impl<Q: QueuedOps + Clone> Drop for QueuedEntry<Q> {
    fn drop(&mut self) {
        if !self.armed || !self.ops.may_be_queued() {
            return;
        }
        let ops = self.ops.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Ok(Some(_)) = ops.cancel().await {
                    ops.release_orphan().await;
                }
            });
        }
    }
}
