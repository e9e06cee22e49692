//! The lock's Lua scripts: one registry, one `.lua` file per atomic operation, each opening with
//! its `KEYS`/`ARGV`/`Returns` contract.
//!
//! Snippets several scripts need (the server clock, the stored lock value, the hand-off to the
//! next live waiter, the wait queue, the expiring holder sets, the read/write grant loop, the
//! Redlock quarantine) are written once under `lib/` — each opening with what it expects in scope
//! and what it returns — and prepended to the scripts that use them at build time
//! (`concat!(include_str!(…), …)`), so Redis still receives one self-contained script per
//! operation.
//!
//! The two scripts of every uncontended cycle (`acquire.lua`, `release.lua`) open with a *fast*
//! part (`acquire_fast.lua`, `release_fast.lua`) placed before the helpers: a Lua chunk defines
//! its `local function`s each time it runs, and the common path returns before any is defined.
//! A fast part answers exactly as the rest of its script would and hands what it read to it in
//! a chunk-level local when it falls through.
//!
//! - When a script runs for the first time on a server (or after a restart emptied the script
//!   cache), then `redis::Script` answers `NOSCRIPT` and is loaded once; every later call is an
//!   `EVALSHA` by its SHA1, computed once per process ([`SCRIPTS`]).
//! - Every read-then-write on Redis (compare-and-delete, compare-and-extend, fence increment) is
//!   one of these scripts, never two round trips.

use std::sync::LazyLock;

use redis::Script;

/// A script built from the helper files named (from `lib/`, in order) and the script's own file;
/// `semaphore`, `rwlock` and `fair` name the helper sets of those primitives' scripts.
macro_rules! script {
    (semaphore, $file:literal) => {
        script!(
            ["now", "lock_value", "handoff", "waiters", "expiring_set", "sem_handoff"],
            $file
        )
    };
    (rwlock, $file:literal) => {
        script!(
            ["now", "lock_value", "handoff", "waiters", "expiring_set", "rw_grant"],
            $file
        )
    };
    (fair, $file:literal) => {
        script!(["now", "lock_value", "handoff", "waiters"], $file)
    };
    (fast $fast:literal, [$($lib:literal),* $(,)?], $file:literal) => {
        Script::new(concat!(
            include_str!($fast),
            $(include_str!(concat!("lib/", $lib, ".lua")),)*
            include_str!($file)
        ))
    };
    ([$($lib:literal),* $(,)?], $file:literal) => {
        Script::new(concat!(
            $(include_str!(concat!("lib/", $lib, ".lua")),)*
            include_str!($file)
        ))
    };
}

/// Every script of every primitive, each listed once.
#[derive(Debug)]
pub(crate) struct Scripts {
    /// `acquire.lua`: take a free mutex (with a new fencing token) or join its wait queue.
    pub(crate) acquire: Script,
    /// `release.lua`: release a mutex if owner, handing it to the oldest live waiter.
    pub(crate) release: Script,
    /// `extend.lua`: reset an exclusive hold's TTL if owner (mutex, fair lock, writer).
    pub(crate) extend: Script,
    /// `cancel_wait.lua`: leave the mutex's wait queue unless handed the lock meanwhile.
    pub(crate) cancel_wait: Script,
    /// `raise_fence.lua`: raise a fence counter to a floor (mutex, Redlock).
    pub(crate) raise_fence: Script,
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
}

/// The scripts, built and hashed once per process.
pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    acquire: script!(
        fast "acquire_fast.lua",
        ["now", "lock_value", "mutex_value", "mutex_queue"],
        "acquire.lua"
    ),
    release: script!(
        fast "release_fast.lua",
        ["now", "lock_value", "mutex_value", "handoff"],
        "release.lua"
    ),
    extend: script!(["lock_value", "mutex_value"], "extend.lua"),
    cancel_wait: script!(["lock_value", "mutex_queue"], "cancel_wait.lua"),
    raise_fence: script!([], "raise_fence.lua"),
    sem_acquire: script!(semaphore, "sem_acquire.lua"),
    sem_release: script!(semaphore, "sem_release.lua"),
    sem_cancel: script!(semaphore, "sem_cancel.lua"),
    permit_extend: script!(["now"], "permit_extend.lua"),
    rw_acquire: script!(rwlock, "rw_acquire.lua"),
    rw_release: script!(rwlock, "rw_release.lua"),
    rw_cancel: script!(rwlock, "rw_cancel.lua"),
    fair_acquire: script!(fair, "fair_acquire.lua"),
    fair_release: script!(fair, "fair_release.lua"),
    fair_cancel: script!(fair, "fair_cancel.lua"),
    redlock_acquire: script!(["now", "lock_value", "redlock"], "redlock_acquire.lua"),
    redlock_fence: script!(["lock_value", "redlock"], "redlock_fence.lua"),
    redlock_extend: script!(["now", "lock_value", "redlock"], "redlock_extend.lua"),
    redlock_release: script!(["lock_value", "redlock"], "redlock_release.lua"),
});
