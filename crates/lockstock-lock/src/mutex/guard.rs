//! [`LockGuard`]: a held mutex, a thin wrapper over the generic guard (`guard.rs`: the heartbeat,
//! the safety deadline, the lost signal, `max_hold`/`warn_after` and the release on drop).
//!
//! - When the lock is acquired, then the safety deadline is the instant the acquire was *sent*
//!   (for a hand-off, the earliest local instant it can have happened) plus the TTL granted
//!   minus a drift allowance scaled to it; a hand-off is granted for the TTL capped by the
//!   waiter's lease, and the heartbeat first extends a third of that later (one period for a
//!   direct grant), restoring the full TTL. Deadlines use the monotonic clock: a host suspended
//!   past one finds out at its next extension.
//! - When the lost signal fires, then the client's [`LockMetrics`](crate::LockMetrics) count one
//!   loss; when the guard is released or dropped, then they record its hold time.
//! - When [`LockGuard::release`] is called, then the heartbeat is stopped first, then the release
//!   is sent (handing the lock to the next waiter if any). When a guard is dropped unreleased,
//!   then the heartbeat stops and the release is sent from a background task (the TTL is the
//!   safety net if the runtime is gone).
//! - Not guaranteed: that the lock is still held at any instant. Only the fencing token, checked
//!   by the protected resource, makes a stale holder's writes harmless.

use super::MutexOps;
use crate::{
    guard::{Held, HoldLease, held_guard_methods},
    options::LockOptions,
    token::LockToken,
    waiting::Grant,
};

/// A held lock. Release it with [`LockGuard::release`]; watch [`LockGuard::lost`] while working.
#[derive(Debug)]
#[must_use = "a lock guard should be released with `release().await`"]
pub struct LockGuard {
    held: Held<MutexOps>,
}

/// A cheap, clonable view of a held lock for the code running under it: its fencing token and
/// lost signal. It does not keep the lock alive; the [`LockGuard`] does.
pub type LockLease = HoldLease;

impl LockGuard {
    /// Starts the heartbeat of a granted lock.
    pub(crate) fn start(ops: MutexOps, options: &LockOptions, grant: Grant) -> Self {
        let resource = ops.keys.resource.clone();
        Self {
            held: Held::start(ops, "lock", &resource, options, grant),
        }
    }

    held_guard_methods!();

    /// This holder's token.
    pub fn token(&self) -> LockToken {
        self.held.holder().token
    }
}
