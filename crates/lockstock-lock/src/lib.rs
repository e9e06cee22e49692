//! Fenced Redis locks: a FIFO-hand-off mutex with heartbeat and lost signal, plus a strict-FIFO
//! lock, a counting semaphore, a read/write lock and Redlock — all handing out the same guard.
//!
//! The crate knows Redis and nothing else (no application types); the `README.md` beside it is
//! the quick start, and `examples/` has runnable programs.
//!
//! # Primitives
//! Every primitive hands out a guard of the same shape — a fencing token, a heartbeat that
//! extends every `ttl / 3`, a lost signal, a local safety deadline and an explicit `release` —
//! and states its own guarantees and non-guarantees in its type's docs.
//!
//! | type | holders | waiting | module guide |
//! |---|---|---|---|
//! | [`LockClient`] (mutex) | one | FIFO among waiters, dead waiters leave by their lease; a free lock goes to whoever asks | below, [`LockGuard`] |
//! | [`FairLock`] | one | strict FIFO of arrival, dead waiters leave by their lease | [`FairLock`] |
//! | [`Semaphore`] | at most N | FIFO, permits handed to the oldest waiter | [`Semaphore`] |
//! | [`RwLock`] | many readers or one writer | FIFO; a waiting writer is not starved | [`RwLock`] |
//! | [`Redlock`] | one, on a majority of N independent masters | retries woken by releases | [`Redlock`] |
//!
//! On a Redis Cluster ([`LockClient::connect_cluster`]) every primitive but Redlock works
//! unchanged: each resource's keys share its `{R}` hash tag ([`KeySpace`]).
//!
//! # Module map
//! Data flows from the client through a primitive's wait loop to its guard:
//!
//! | file | what it holds |
//! |---|---|
//! | `client.rs` | [`LockClient`]: the shared connection, owner record, hand-off listener, metrics; the one counted script entry point; inspection |
//! | `conn.rs` | [`LockConnection`]: one server or a Redis Cluster |
//! | `mutex/` | the mutex: `acquire` / `try_acquire` / `raise_fence_floor` (`mod.rs`) and [`LockGuard`] (`guard.rs`) |
//! | `with_lock.rs` | [`LockClient::with_lock`]: a closure under a lock, released on return, error and panic |
//! | `fair.rs`, `semaphore.rs`, `rwlock.rs` | [`FairLock`], [`Semaphore`], [`RwLock`] and their guards |
//! | `redlock/` | [`Redlock`]: config and type (`mod.rs`), the per-instance fan-out and majority counting (`quorum.rs`), acquisition with undo and fencing write-back (`acquire.rs`), the held guard (`hold.rs`) |
//! | `waiting.rs` | the one wait loop every queued primitive runs: queue, sleep until hand-off, expiry or deadline, leave on give-up |
//! | `notify.rs` | hand-off messages: one shared pub/sub subscription per client, delivered to the one local waiter |
//! | `guard.rs` | the generic guard every primitive wraps: heartbeat, lost signal, safety deadline, release; [`HoldLease`], [`ReleaseOutcome`] |
//! | `inspect.rs` | [`LockInfo`] and the one parser of what a hold stores in Redis |
//! | `observe.rs` | [`LockObserver`] and [`LockEvent`]: an optional hook that sees every grant, extension, release, loss and hand-off of a client's mutex holds (for history checkers) |
//! | `scripts/` | one registry of the Lua scripts (one file per atomic operation; shared helpers in `scripts/lib/`, prepended at build time) |
//! | `keys.rs`, `token.rs`, `owner.rs`, `options.rs`, `error.rs`, `metrics.rs` | key names (built in one place), tokens, owner records, settings, errors, counters |
//!
//! # Guarantees
//! - When [`LockClient::acquire`] or [`LockClient::try_acquire`] succeeds, then the caller's
//!   random token was set on the resource's key with a millisecond TTL in one atomic script, and
//!   the returned [`FencingToken`] is higher than every token handed out before for that resource
//!   (across expiries, releases and hand-offs).
//! - When the lock is held by someone else, then waiters queue in Redis in arrival order and the
//!   holder's release hands the lock straight to the oldest live waiter, announcing it on a
//!   per-resource channel that each process listens to over one shared subscription: no polling,
//!   one process-local wake-up per hand-off.
//! - Release and extend act only while the caller's token is still on the key (compared in a
//!   script); otherwise they report [`ReleaseOutcome::NotHeld`] / the lost signal.
//! - While queued, a mutex waiter holds a lease on its entry ([`LockConfig::waiter_lease`],
//!   renewed every third of it); a hand-off grants its TTL capped by that lease until the waiter
//!   extends it, so a waiter that died queued blocks the lock one lease at most.
//! - While held, the [`LockGuard`]'s heartbeat extends the TTL every `ttl / 3`; its lost signal
//!   fires when an extension finds the lock gone, and also at a local safety deadline (measured
//!   on the monotonic clock from when the request was *sent*, over the TTL actually granted)
//!   when extensions stop succeeding. A host suspended past the deadline (the monotonic clock
//!   does not run while suspended) learns of the loss late: at its next extension.
//! - Retrying a call whose reply was lost is safe: re-acquiring with the same token is a success,
//!   re-queueing renews the one entry, a second release is a no-op. A hand-off message older
//!   than a reply that already found the lock not the waiter's is discarded. Redis stores no
//!   client wall-clock time.
//!
//! # Not guaranteed
//! - Mutual exclusion in the face of pauses. A holder can be paused (GC, SIGSTOP, swap) past its
//!   TTL and wake up believing it still holds the lock. Only the fencing token, checked by the
//!   protected resource, makes its writes harmless. **A token checked only at write time does not
//!   protect a read-then-write**: a stale holder may commit a decision based on what it read
//!   before the next holder's writes. Hand the token to the resource *before reading* (raise the
//!   row's fence to your token and read in one statement), and make the write conditional on the
//!   row still carrying your token.
//! - Survival of Redis data loss. If Redis restarts empty, fence counters restart low; a fenced
//!   resource then refuses the new tokens (safe, not wrong) until
//!   [`LockClient::raise_fence_floor`] lifts the counter above the resource's high-water mark.
//!
//! # Example
//! ```rust,no_run
//! use std::time::Duration;
//! use lockstock_lock::{LockClient, LockConfig, LockOptions, LockOwner, ReleaseOutcome};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = LockConfig::default().with_owner(LockOwner::this_process("worker-1"));
//! let locks = LockClient::connect("redis://127.0.0.1:6379", config).await?;
//!
//! let guard = locks.acquire("product:1", &LockOptions::default(), Duration::from_secs(5)).await?;
//! // 1. Hand the fencing token to the resource *before* reading from it, e.g.
//! //    UPDATE products SET last_fence = $fence WHERE id = 1 AND last_fence <= $fence RETURNING stock
//! let fence = guard.fence();
//! // 2. Do the work, stopping if the lock is lost.
//! let lost = guard.lost();
//! tokio::select! {
//!     () = lost.cancelled() => { /* do not commit; retry later */ }
//!     () = tokio::time::sleep(Duration::from_millis(100)) => {
//!         // 3. Commit only if the row still carries our token:
//!         //    UPDATE products SET stock = stock - 1 WHERE id = 1 AND last_fence = $fence
//!         let _ = fence;
//!     }
//! }
//! // 4. Release (the heartbeat stops first). NotHeld means it had expired: nothing changed.
//! if guard.release().await? == ReleaseOutcome::NotHeld {
//!     eprintln!("the lock expired while held");
//! }
//! # Ok(()) }
//! ```

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod client;
mod conn;
mod error;
mod fair;
mod guard;
mod inspect;
mod keys;
mod metrics;
mod mutex;
mod notify;
pub mod observe;
mod options;
mod owner;
mod redlock;
mod rwlock;
mod scripts;
mod semaphore;
mod token;
mod waiting;
mod with_lock;

pub use client::LockClient;
pub use conn::LockConnection;
pub use error::{InstanceReply, InstanceReport, LockError, Result};
pub use fair::{FairGuard, FairLock};
pub use guard::{HoldLease, ReleaseOutcome};
pub use inspect::LockInfo;
pub use keys::{
    FairKeys, KeySpace, MAX_RESOURCE_LEN, RedlockKeys, ResourceKeys, RwLockKeys, SemaphoreKeys,
};
pub use metrics::{DURATION_BUCKETS, LockMetrics};
pub use mutex::{LockGuard, LockLease};
pub use observe::{LockEvent, LockObserver};
pub use options::{Heartbeat, LockConfig, LockOptions};
pub use owner::LockOwner;
pub use redlock::{InstanceLock, Redlock, RedlockConfig, RedlockGuard};
pub use rwlock::{ReadGuard, RwHolders, RwLock, WriteGuard};
pub use semaphore::{DEFAULT_WAITER_LEASE, Semaphore, SemaphorePermit};
pub use token::{FencingToken, LockToken};
