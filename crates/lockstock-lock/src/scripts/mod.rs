//! The lock's Lua scripts, one file per atomic operation, each opening with its
//! `KEYS`/`ARGV`/`Returns` contract.
//!
//! - When a script runs for the first time on a server (or after a restart emptied the script
//!   cache), then `redis::Script` answers `NOSCRIPT` and is loaded once; every later call is an
//!   `EVALSHA` by its SHA1.
//! - Every read-then-write on Redis (compare-and-delete, compare-and-extend, fence increment) is
//!   one of these scripts, never two round trips.

use std::sync::LazyLock;

use redis::Script;

/// One `redis::Script` per `.lua` file, built once per [`super::LockClient`].
#[derive(Debug)]
pub(crate) struct Scripts {
    /// `acquire.lua`: take a free lock (with a new fencing token) or join the wait queue.
    pub(crate) acquire: Script,
    /// `release.lua`: release if owner, handing the lock to the oldest live waiter.
    pub(crate) release: Script,
    /// `extend.lua`: reset the TTL if owner.
    pub(crate) extend: Script,
    /// `cancel_wait.lua`: leave the wait queue unless the lock was handed over meanwhile.
    pub(crate) cancel_wait: Script,
    /// `raise_fence.lua`: raise the fence counter to a floor.
    pub(crate) raise_fence: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            acquire: Script::new(include_str!("acquire.lua")),
            release: Script::new(include_str!("release.lua")),
            extend: Script::new(include_str!("extend.lua")),
            cancel_wait: Script::new(include_str!("cancel_wait.lua")),
            raise_fence: Script::new(include_str!("raise_fence.lua")),
        }
    }
}

/// The scripts of the semaphore, the read/write lock, the fair lock and Redlock, hashed once per
/// process (each `.lua` file is one atomic operation; `extend.lua` and `raise_fence.lua` above
/// are reused for the fair lock's, the writer's and Redlock's keys).
#[derive(Debug)]
pub(crate) struct PrimitiveScripts {
    /// `sem_acquire.lua`: take a free permit or queue for one.
    pub(crate) sem_acquire: Script,
    /// `sem_release.lua`: give a permit back, handing free permits to waiters.
    pub(crate) sem_release: Script,
    /// `sem_cancel.lua`: leave the semaphore's queue unless a permit was handed over.
    pub(crate) sem_cancel: Script,
    /// `permit_extend.lua`: reset the expiry of a member of an expiring set (permits, readers).
    pub(crate) permit_extend: Script,
    /// `rw_acquire.lua`: take a read or write hold or queue for one.
    pub(crate) rw_acquire: Script,
    /// `rw_release.lua`: release a read or write hold, granting waiters that fit.
    pub(crate) rw_release: Script,
    /// `rw_cancel.lua`: leave the read/write queue unless granted meanwhile.
    pub(crate) rw_cancel: Script,
    /// `fair_acquire.lua`: take the fair lock (strict FIFO) or queue for it.
    pub(crate) fair_acquire: Script,
    /// `fair_release.lua`: release, handing to the oldest live waiter.
    pub(crate) fair_release: Script,
    /// `fair_cancel.lua`: leave the fair queue unless handed the lock meanwhile.
    pub(crate) fair_cancel: Script,
    /// `redlock_acquire.lua`: one instance's part of a Redlock acquisition.
    pub(crate) redlock_acquire: Script,
    /// `redlock_fence.lua`: write a Redlock fencing token back to one instance.
    pub(crate) redlock_fence: Script,
    /// `redlock_extend.lua`: one instance's part of a Redlock extension.
    pub(crate) redlock_extend: Script,
    /// `redlock_release.lua`: one instance's part of a Redlock release or undo.
    pub(crate) redlock_release: Script,
    /// `extend.lua` again (fair lock, writer of the read/write lock).
    pub(crate) extend: Script,
    /// `raise_fence.lua` again (Redlock's counters).
    pub(crate) raise_fence: Script,
}

/// The primitives' scripts, hashed once per process.
pub(crate) static PRIMITIVES: LazyLock<PrimitiveScripts> = LazyLock::new(|| PrimitiveScripts {
    sem_acquire: Script::new(include_str!("sem_acquire.lua")),
    sem_release: Script::new(include_str!("sem_release.lua")),
    sem_cancel: Script::new(include_str!("sem_cancel.lua")),
    permit_extend: Script::new(include_str!("permit_extend.lua")),
    rw_acquire: Script::new(include_str!("rw_acquire.lua")),
    rw_release: Script::new(include_str!("rw_release.lua")),
    rw_cancel: Script::new(include_str!("rw_cancel.lua")),
    fair_acquire: Script::new(include_str!("fair_acquire.lua")),
    fair_release: Script::new(include_str!("fair_release.lua")),
    fair_cancel: Script::new(include_str!("fair_cancel.lua")),
    redlock_acquire: Script::new(include_str!("redlock_acquire.lua")),
    redlock_fence: Script::new(include_str!("redlock_fence.lua")),
    redlock_extend: Script::new(include_str!("redlock_extend.lua")),
    redlock_release: Script::new(include_str!("redlock_release.lua")),
    extend: Script::new(include_str!("extend.lua")),
    raise_fence: Script::new(include_str!("raise_fence.lua")),
});
