//! The queue's Lua scripts, one file per atomic operation, each opening with its
//! `KEYS`/`ARGV`/`Returns` contract.
//!
//! - When a script runs for the first time on a server (or after a restart emptied the script
//!   cache), then `redis::Script` gets `NOSCRIPT`, loads it once and retries; later calls are
//!   `EVALSHA`.
//! - Every multi-step change to the lists (remove from processing + push elsewhere) is one of
//!   these scripts, never two round trips, so a crash between steps cannot lose or duplicate a
//!   message.

use std::sync::LazyLock;

use redis::Script;

/// One `redis::Script` per `.lua` file.
#[derive(Debug)]
pub(super) struct Scripts {
    /// `dead_letter.lua`: processing → dead letter list.
    pub(super) dead_letter: Script,
    /// `requeue.lua`: processing → back of the pending list.
    pub(super) requeue: Script,
    /// `reclaim_worker.lua`: a worker's whole processing list → front of the pending list.
    pub(super) reclaim_worker: Script,
    /// `requeue_dead.lua`: one batch of dead letter payloads → pending list (or dropped).
    pub(super) requeue_dead: Script,
    /// `reserve_many.lua`: up to N pending messages → processing list.
    pub(super) reserve_many: Script,
    /// `restore_missing.lua`: messages in none of the queue's lists → pending list.
    pub(super) restore_missing: Script,
}

/// The scripts, hashed once per process.
pub(super) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    dead_letter: Script::new(include_str!("dead_letter.lua")),
    requeue: Script::new(include_str!("requeue.lua")),
    reclaim_worker: Script::new(include_str!("reclaim_worker.lua")),
    requeue_dead: Script::new(include_str!("requeue_dead.lua")),
    reserve_many: Script::new(include_str!("reserve_many.lua")),
    restore_missing: Script::new(include_str!("restore_missing.lua")),
});
