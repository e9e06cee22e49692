//! The lock's Lua scripts, one file per atomic operation, each opening with its
//! `KEYS`/`ARGV`/`Returns` contract.
//!
//! - When a script runs for the first time on a server (or after a restart emptied the script
//!   cache), then `redis::Script` answers `NOSCRIPT` and is loaded once; every later call is an
//!   `EVALSHA` by its SHA1.
//! - Every read-then-write on Redis (compare-and-delete, compare-and-extend, fence increment) is
//!   one of these scripts, never two round trips.

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
