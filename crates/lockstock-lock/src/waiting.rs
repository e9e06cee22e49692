//! Waiting in a Redis FIFO queue with a lease, for the semaphore, the read/write lock and the
//! fair lock (the mutex has its own, older loop in `client.rs`).
//!
//! Every queued primitive keeps, per resource, a list of waiting tokens (oldest first) and a
//! hash of each waiter's entry with a *lease*: the server time until which the entry counts as
//! alive. Their scripts share one contract:
//!
//! - `acquire` grants when the primitive allows it and no older live waiter is ahead, else
//!   (when asked to) queues the caller or renews its lease; it prunes dead waiters at the head
//!   and hands free capacity to the oldest live waiters first, announcing each hand-off as
//!   `token\nfence\nserver_ms\nttl_ms` (the mutex's format, so the shared [`Notifier`] delivers
//!   it) on the channel the waiter's entry names: its own client's channel for the resource
//!   ([`Notifier::channel_for`]), so a hand-off wakes only the process it is for.
//! - `cancel` leaves the queue unless the caller was handed the hold meanwhile.
//!
//! What this loop guarantees:
//! - When the hold is handed to a waiter, then the waiter wakes on the hand-off message (no
//!   polling) and owns it without another round trip.
//! - While waiting, the waiter renews its lease every `lease / 3`; each renewal is also a
//!   fallback attempt, so a lost message costs at most that long. When the blocking holder's
//!   TTL runs out first, then the waiter wakes at that instant (the script reports it) and
//!   tries again.
//! - When a waiter dies (its process is gone), then its lease runs out and the next script call
//!   skips it: it blocks nobody for longer than one lease.
//! - When the deadline passes, or the waiting future is dropped, then the waiter leaves the
//!   queue (in the background when dropped); a hold handed to it meanwhile is taken (deadline)
//!   or released (dropped).

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use super::{
    error::{LockError, Result},
    notify::{Handoff, Notifier},
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

/// What one `acquire` script call found.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Attempt {
    /// Granted (or already ours): the fencing token and the TTL left.
    Granted { fence: u64, pttl_ms: u64 },
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
    pub(crate) fence: u64,
    pub(crate) base: Instant,
    pub(crate) valid_for: Duration,
}

/// The Redis side of one queued acquisition (one token).
pub(crate) trait QueuedOps: Send + Sync + 'static {
    /// One `acquire` call; `lease_ms == 0` means "do not queue".
    fn attempt(&self, lease_ms: u64) -> impl Future<Output = Result<Attempt>> + Send;

    /// Leaves the queue; `Some((fence, pttl_ms))` if the hold was handed over meanwhile.
    fn cancel(&self) -> impl Future<Output = Result<Option<(u64, u64)>>> + Send;

    /// Releases a hold that was handed to a waiter nobody waits for any more.
    fn release_orphan(&self) -> impl Future<Output = ()> + Send;
}

/// Parses an `acquire` script's reply: `{1, fence, pttl_ms, server_ms}` or
/// `{0, wake_ms, server_ms}` (`wake_ms` < 0: unknown).
pub(crate) fn parse_attempt(operation: &'static str, reply: &[redis::Value]) -> Result<Attempt> {
    use redis::Value;
    match reply {
        [Value::Int(1), Value::Int(fence), Value::Int(pttl), ..] => Ok(Attempt::Granted {
            fence: (*fence).max(0) as u64,
            pttl_ms: (*pttl).max(0) as u64,
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

/// Where one acquisition listens and how long it may wait.
#[derive(Debug)]
pub(crate) struct WaitPlan<'a> {
    pub(crate) notifier: &'a Arc<Notifier>,
    pub(crate) channel: &'a str,
    pub(crate) token: &'a str,
    pub(crate) resource: &'a str,
    pub(crate) wait: Duration,
    pub(crate) lease: Duration,
}

/// Acquires through `ops`: at once when allowed, else queued until a hand-off, the blocking
/// hold's expiry, or the deadline.
pub(crate) async fn acquire<Q: QueuedOps + Clone>(ops: &Q, plan: WaitPlan<'_>) -> Result<Grant> {
    let started = Instant::now();
    let deadline = started + plan.wait;
    let lease_ms = |remaining: Duration| -> u64 {
        // The entry lives one lease, but never past the caller's deadline (plus a margin so a
        // renewal right at the deadline still finds it).
        let lease = plan.lease.min(remaining + MIN_WAITER_LEASE);
        (lease.as_millis() as u64).max(1)
    };

    if plan.wait.is_zero() {
        let sent = Instant::now();
        return match ops.attempt(0).await? {
            Attempt::Granted { fence, pttl_ms } => Ok(Grant {
                fence,
                base: sent,
                valid_for: Duration::from_millis(pttl_ms),
            }),
            Attempt::Waiting { .. } => Err(LockError::Timeout {
                resource: plan.resource.to_owned(),
                waited: started.elapsed(),
            }),
        };
    }

    // From the first call on, the caller holds a queue entry (its place in arrival order).
    let mut queued = QueuedEntry {
        ops: ops.clone(),
        armed: true,
    };
    let mut registration = None;
    // The latest (local send instant, server time) of a successful call: bounds when a hand-off
    // announced with a later server time happened locally.
    let mut clock_pair: Option<(Instant, u64)> = None;
    let mut backoff = Duration::from_millis(10);
    loop {
        let sent = Instant::now();
        let attempt = ops
            .attempt(lease_ms(deadline.saturating_duration_since(sent)))
            .await;
        let wake_ms = match attempt {
            Ok(Attempt::Granted { fence, pttl_ms }) => {
                queued.armed = false;
                return Ok(Grant {
                    fence,
                    base: sent,
                    valid_for: Duration::from_millis(pttl_ms),
                });
            }
            Ok(Attempt::Waiting { wake_ms, server_ms }) => {
                clock_pair = Some((sent, server_ms));
                wake_ms
            }
            Err(error) if error.is_transient() && Instant::now() < deadline => {
                tracing::debug!(%error, resource = plan.resource, "queued attempt failed; retrying");
                backoff = (backoff * 2).min(plan.lease / 3);
                Some(backoff.as_millis() as u64)
            }
            Err(error) => return Err(error),
        };

        if registration.is_none() {
            // First time queued: listen, then look again (a hand-off published before the
            // subscription was confirmed would otherwise be missed).
            registration = Some(plan.notifier.register(plan.token, plan.channel));
            plan.notifier.ensure_subscribed(plan.channel).await;
            continue;
        }

        if Instant::now() >= deadline {
            queued.armed = false;
            let cancel_sent = Instant::now();
            return match ops.cancel().await? {
                Some((fence, pttl_ms)) => Ok(Grant {
                    fence,
                    base: cancel_sent,
                    valid_for: Duration::from_millis(pttl_ms),
                }),
                None => Err(LockError::Timeout {
                    resource: plan.resource.to_owned(),
                    waited: started.elapsed(),
                }),
            };
        }

        let renew = plan.lease / 3;
        let until_expiry = wake_ms.map(|ms| {
            Duration::from_millis(ms.max(1)) + Duration::from_millis(fastrand::u64(0..3))
        });
        let nap = until_expiry
            .map_or(renew, |e| e.min(renew))
            .min(deadline.saturating_duration_since(Instant::now()));
        let Some(active) = registration.as_mut() else {
            continue;
        };
        tokio::select! {
            handoff = &mut active.receiver => {
                match handoff {
                    Ok(Handoff { fence, server_ms: handed_at, ttl_ms }) => {
                        queued.armed = false;
                        let received = Instant::now();
                        let base = match clock_pair {
                            Some((sent, server_ms)) => {
                                let gap = Duration::from_millis(handed_at.saturating_sub(server_ms));
                                (sent + gap).min(received)
                            }
                            None => started,
                        };
                        return Ok(Grant { fence, base, valid_for: Duration::from_millis(ttl_ms) });
                    }
                    // The notifier went away: carry on with renewals only.
                    Err(_) => registration = Some(plan.notifier.register(plan.token, plan.channel)),
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
        if !self.armed {
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
