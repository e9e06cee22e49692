//! [`LockGuard`]: a held mutex, a thin wrapper over [`Held`] (see there for the heartbeat, the
//! safety deadline, the lost signal, `max_hold`/`warn_after` and the release on drop).
//!
//! - When the lock is acquired, then the safety deadline is the instant the acquire was *sent*
//!   (for a hand-off, the earliest local instant it can have happened) plus the TTL minus a drift
//!   allowance, and the heartbeat first extends one period after that instant.
//! - When the lost signal fires, then the client's [`LockMetrics`](super::LockMetrics) count one
//!   loss; when the guard is released or dropped, then they record its hold time.
//! - When [`LockGuard::release`] is called, then the heartbeat is stopped first, then the release
//!   is sent (handing the lock to the next waiter if any). When a guard is dropped unreleased,
//!   then the heartbeat stops and the release is sent from a background task (the TTL is the
//!   safety net if the runtime is gone).
//! - Not guaranteed: that the lock is still held at any instant. Only the fencing token, checked
//!   by the protected resource, makes a stale holder's writes harmless.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use super::{
    client::{LockClient, ReleaseOutcome},
    error::Result,
    held::{Held, HoldLease, Holder, held_guard_methods},
    keys::ResourceKeys,
    metrics::LockMetrics,
    options::LockOptions,
    token::LockToken,
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

/// The Redis side of one held mutex.
#[derive(Debug)]
struct MutexOps {
    client: LockClient,
    keys: ResourceKeys,
    token: LockToken,
}

impl LockGuard {
    /// Starts the heartbeat of a lock granted by `base` with `valid_for` of TTL left then.
    pub(crate) fn start(
        client: LockClient,
        keys: ResourceKeys,
        token: LockToken,
        fence: u64,
        options: &LockOptions,
        base: Instant,
        valid_for: Duration,
    ) -> Self {
        let resource = keys.resource.clone();
        let ops = MutexOps {
            client,
            keys,
            token,
        };
        Self {
            held: Held::start(ops, "lock", &resource, fence, options, base, valid_for),
        }
    }

    held_guard_methods!();

    /// This holder's token.
    pub fn token(&self) -> LockToken {
        self.held.holder().token
    }
}

impl Holder for MutexOps {
    async fn extend(&self, ttl_ms: u64) -> Result<bool> {
        self.client
            .extend_token(&self.keys, &self.token, ttl_ms)
            .await
    }

    async fn release(&self) -> Result<ReleaseOutcome> {
        self.client.release_token(&self.keys, &self.token).await
    }

    fn owner(&self) -> &str {
        self.client.owner_json()
    }

    fn metrics(&self) -> Option<Arc<LockMetrics>> {
        Some(self.client.metrics_handle())
    }

    /// One period after the grant, as the mutex's guard always did.
    fn first_extend_after(&self, period: Duration, _valid_for: Duration) -> Duration {
        period
    }
}
