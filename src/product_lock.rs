//! Product locks behind one small interface: the single-instance fenced mutex, or Redlock over
//! several independent Redis masters (`LOCK_REDIS_URLS`).
//!
//! - When the worker uses [`ProductLocks::Single`], then product locks are the mutex of
//!   [`LockClient`] (FIFO hand-off between processes), usually on the queue's Redis.
//! - When it uses [`ProductLocks::Redlock`], then each product lock needs a majority of the
//!   instances; with one instance down locking carries on, with a majority down acquisitions
//!   fail (and are retried: orders wait in the queue, none is lost). The queue stays on its own
//!   Redis either way.
//! - Either way the processing code sees the same three things: a fencing token, a lost signal,
//!   and an explicit release; every commit is fenced in Postgres (see `crate::sale`).
//! - Chaos history (`lockctl chaos`): the mutex's events are logged by the lock observer of
//!   `crate::lock_history` (attached only with `--chaos-history`); Redlock grants and releases,
//!   which the lock crate does not observe, are logged here (always; no extensions).
//! - When the worker and the API build their locks with `services::connect_product_locks` from the same
//!   settings, then they lock the same resource ([`product_resource`]) in the same key space, so
//!   API purchases and queued orders for one product exclude each other.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use lockstock_lock::{
    FencingToken, HoldLease, LockClient, LockError, LockGuard, LockLease, LockOptions, Redlock,
    RedlockGuard, ReleaseOutcome,
};

use crate::order::ProductId;

/// The lock resource of a product, `product:<id>`: the one name every holder of that product's
/// lock uses, worker or API, whichever kind of lock.
pub fn product_resource(product: ProductId) -> String {
    format!("product:{product}")
}

/// Where a worker takes its product locks.
#[derive(Debug, Clone)]
pub enum ProductLocks {
    /// The single-instance fenced mutex.
    Single(LockClient),
    /// Redlock over several independent masters.
    Redlock(Redlock),
}

impl From<LockClient> for ProductLocks {
    fn from(client: LockClient) -> Self {
        ProductLocks::Single(client)
    }
}

impl From<Redlock> for ProductLocks {
    fn from(redlock: Redlock) -> Self {
        ProductLocks::Redlock(redlock)
    }
}

/// A held product lock of either kind.
#[derive(Debug)]
pub(crate) enum ProductGuard {
    Single(LockGuard),
    Redlock(RedlockGuard),
}

/// The fencing token and lost signal of a held product lock, for the code running under it.
#[derive(Debug, Clone)]
pub(crate) enum ProductLease {
    Single(LockLease),
    Redlock(HoldLease),
}

impl ProductLocks {
    /// Takes `resource`'s lock, waiting up to `wait`.
    pub(crate) async fn acquire(
        &self,
        resource: &str,
        options: &LockOptions,
        wait: Duration,
    ) -> Result<ProductGuard, LockError> {
        let guard = match self {
            ProductLocks::Single(client) => client
                .acquire(resource, options, wait)
                .await
                .map(ProductGuard::Single),
            ProductLocks::Redlock(redlock) => {
                let start_ms = history_now_ms();
                let guard = redlock.acquire(resource, options, wait).await?;
                let (reply_ms, left) = (history_now_ms(), guard.remaining().as_millis() as u64);
                // A grant that came back with no time left has a deadline in the past: record
                // the start, a lower bound, so the chaos checker never sees a window longer
                // than it was.
                let deadline_ms = if left > 0 { reply_ms + left } else { start_ms };
                tracing::info!(target: "history", event = "grant", resource, fence = guard.fence().get(), start_ms, reply_ms, deadline_ms, "history");
                Ok(ProductGuard::Redlock(guard))
            }
        }?;
        Ok(guard)
    }

    /// Raises `resource`'s fence counter(s) to at least `floor`.
    pub(crate) async fn raise_fence_floor(
        &self,
        resource: &str,
        floor: u64,
    ) -> Result<FencingToken, LockError> {
        match self {
            ProductLocks::Single(client) => client.raise_fence_floor(resource, floor).await,
            ProductLocks::Redlock(redlock) => redlock.raise_fence_floor(resource, floor).await,
        }
    }
}

impl ProductGuard {
    /// The held lock's fencing token.
    pub(crate) fn fence(&self) -> FencingToken {
        match self {
            ProductGuard::Single(guard) => guard.fence(),
            ProductGuard::Redlock(guard) => guard.fence(),
        }
    }

    /// The token and lost signal, for code running under the lock.
    pub(crate) fn lease(&self) -> ProductLease {
        match self {
            ProductGuard::Single(guard) => ProductLease::Single(guard.lease()),
            ProductGuard::Redlock(guard) => ProductLease::Redlock(guard.lease()),
        }
    }

    /// Releases the lock (explicitly: no network I/O in `Drop`).
    pub(crate) async fn release(self) -> Result<ReleaseOutcome, LockError> {
        match self {
            ProductGuard::Single(guard) => guard.release().await,
            ProductGuard::Redlock(guard) => {
                let lost = guard.lease().is_lost() || guard.remaining().is_zero();
                tracing::info!(target: "history", event = "release", resource = guard.resource(), fence = guard.fence().get(), at_ms = history_now_ms(), lost, "history");
                guard.release().await
            }
        }
    }
}

impl ProductLease {
    /// Cancelled when the lock is lost (an extension failed or the key vanished).
    pub(crate) fn lost(&self) -> CancellationToken {
        match self {
            ProductLease::Single(lease) => lease.lost(),
            ProductLease::Redlock(lease) => lease.lost(),
        }
    }

    /// Whether the lock is known to be lost.
    pub(crate) fn is_lost(&self) -> bool {
        match self {
            ProductLease::Single(lease) => lease.is_lost(),
            ProductLease::Redlock(lease) => lease.is_lost(),
        }
    }
}

/// Wall-clock milliseconds for the `history` events (target `history`, message `history`) that
/// `lockctl chaos` reads back from worker logs: Redlock grants and releases here (the mutex's
/// come from `crate::lock_history` when `--chaos-history` attaches it), claims in the sale.
pub(crate) fn history_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}
