//! Model checking of the single-instance mutex protocol with [`stateright`]: every interleaving
//! of a few clients, Redis, the network and the database, up to a stated bound, against the
//! properties the lock promises. The model is the *specification* of the hardened protocol; it
//! imports nothing from the crate and describes, abstractly:
//!
//! - `src/scripts/acquire.lua`: take a free lock (SET-if-absent with a TTL plus `INCR` of the
//!   fence counter, atomically) or join the FIFO wait queue; an acquire by a token that already
//!   holds the lock answers "yours" (a retried call, or a hand-off whose message was missed).
//!   A queueing call marks the hold it finds (`+w` in the value), and a queueing call that takes
//!   a free lock marks it when others are still queued (`src/scripts/lib/mutex_value.lua`).
//! - `src/scripts/release.lua`: release if owner; an unmarked hold is simply deleted (the queue is
//!   not looked at), a marked one goes to the oldest queue entry whose lease is live, publishing
//!   `token, fence, server time, ttl` on the waiter's channel (the new hold is marked). Property 4
//!   below is what shows an unmarked release never leaves a live waiter behind.
//! - `src/scripts/extend.lua` (only the owner extends), `src/scripts/raise_fence.lua` (the
//!   operator's fence-floor repair after Redis lost its data), and the clients' loops in
//!   `src/client.rs` / `src/mutex/` (acquire, wait, turn a hand-off into a guard), `src/notify.rs`
//!   (hand-off delivery by token) and the guard's deadline and heartbeat (`src/held.rs`,
//!   `src/guard.rs`, or wherever they live after the module split).
//! - The application's fenced sale, `src/store/products.rs` and `src/store/orders.rs` at the
//!   workspace root: the claim raises `last_fence` to the token and reads the stock in one
//!   statement (only if the token is higher), the commit writes only `WHERE last_fence = token`.
//!
//! # The fixes, and the holes they close
//! [`mutex::Fixes`] switches each fix off to show the checker finds the hole again:
//! - **Hole 1** (`discard_stale_handoff`): a waiter took a hand-off message that was already stale
//!   (the lock it announced had expired and another client held it, as the waiter's own later
//!   "held by another" reply showed). Fixed: a hand-off whose server time is older than the
//!   latest server time the waiter has seen, *or whose guard would be born past its deadline*,
//!   is discarded and the waiter keeps waiting.
//! - **Hole 6** (`idempotent_requeue`): a lost reply to the queueing call left the waiter without
//!   its entry string, so its retry pushed a second entry; the lock was later handed to the
//!   leftover entry of a client that had already finished. Fixed: queueing is keyed by token.
//! - **Hole 7** (`waiter_lease`): a waiter's entry lived for its whole wait, so a dead waiter was
//!   handed the lock (for a whole TTL) long after it died. Fixed: the entry carries a lease that
//!   every call of the waiter renews, an entry whose lease ran out is skipped, and a hand-off
//!   grants at most one lease of TTL (the live waiter extends at once).
//!
//! # The abstraction
//! - Time is discrete: one server clock in ticks. Every client's monotonic clock reads the same
//!   ticks; a clock-rate error is modelled by letting Redis expire a key up to `drift` ticks
//!   early, and every guard's deadline is `send instant + TTL - drift` (for a hand-off: the
//!   earliest local instant it can have happened, from the latest (send, server time) pair).
//! - A call runs atomically on its server when it is made (a slow request is the same as a
//!   client pause before it; a slow reply, one after it). A request can be lost (it never runs)
//!   or its reply lost (it ran); either way the client only sees its response timeout.
//! - Pub/sub hand-off messages are a multiset in flight: delivered in any order, any time later,
//!   lost or duplicated within the budget; a message for a token nobody waits on is dropped.
//! - A pause stops a client (time goes on, messages wait); a crash stops it for good. A Redis
//!   restart loses the lock, the queue and the fence counter (and takes a tick); the operator
//!   may then raise the counter to the database's high-water mark.
//! - Each client acquires once, claims, commits (`stock = read - 1`), releases; a holder may
//!   extend once. Clients are alike, so client `i` starts only after client `i - 1` did.
//!
//! # The properties (see `mutex.rs` for the exact checks)
//! 1. At any time at most one guard is valid (its deadline not passed, not lost, not yet
//!    released), among guards granted since the last Redis restart (a restart that loses data
//!    breaks mutual exclusion by design; the fence is what protects the database then).
//! 2. Fences granted strictly increase in grant order (within one Redis epoch).
//! 3. The database never accepts a write (claim or commit) whose fence is below one it accepted
//!    before, and every accepted commit's read is the current value (no lost update).
//! 4. Bounded liveness instead of `Property::eventually` (the model has unfair paths, where a
//!    client simply never acts again, and every path stops at the horizon): whenever a release
//!    runs while an alive client waits with a live-leased queue entry, the lock goes to a client
//!    that is waiting on it or died less than a lease ago, never to nobody or to a stale token.
//! 5. A hand-off only goes to a client waiting on that token, or one dead for less than a lease.
//! 6. A hand-off to a dead waiter holds the lock for at most one lease.
//!
//! # Not modelled
//! The unqueued first look (`try_acquire`, or a process not yet listening on the resource): it
//! takes a free lock without scanning the queue, so a lock taken that way while waiters are
//! queued (its previous holder expired) is unmarked until a waiter's next attempt marks it.
//! Several resources, Redlock and Redis Cluster, the semaphore / read-write / fair locks (which
//! share the lease-based queue), a waiter giving up at its deadline (`cancel_wait.lua`), more than
//! one acquisition per client, the retry schedule's timing, script-cache misses, and clock jumps
//! larger than `drift`.

mod check;
mod mutex;

use std::collections::BTreeSet;

use stateright::{Checker, HasDiscoveries};

use mutex::{Config, Fixes, P1_ONE_VALID_GUARD, P5_HANDOFF_TO_WAITER, P6_DEAD_WAITER_LEASE};

/// Three clients, TTL 3, lease 2, no faults: each test adds the ones it needs.
fn bound(horizon: u8, fixes: Fixes) -> Config {
    Config {
        clients: 3,
        ttl: 3,
        lease: 2,
        drift: 1,
        horizon,
        pauses: 0,
        losses: 0,
        duplicates: 0,
        crashes: 0,
        restarts: 0,
        extends: true,
        fixes,
    }
}

#[test]
fn with_every_fix_pauses_and_extensions_keep_every_property() {
    let cfg = Config {
        pauses: 2,
        ..bound(5, Fixes::ALL)
    };
    check::check("pauses", cfg, HasDiscoveries::All).assert_properties();
}

#[test]
fn with_every_fix_a_lost_call_or_message_a_duplicate_and_a_crash_keep_every_property() {
    let cfg = Config {
        losses: 1,
        duplicates: 1,
        crashes: 1,
        ..bound(4, Fixes::ALL)
    };
    check::check("faults", cfg, HasDiscoveries::All).assert_properties();
}

#[test]
fn with_every_fix_a_redis_restart_and_the_fence_repair_keep_every_property() {
    let cfg = Config {
        restarts: 1,
        ..bound(5, Fixes::ALL)
    };
    check::check("restart", cfg, HasDiscoveries::All).assert_properties();
}

/// Runs `cfg` until `property` fails, prints the counterexample and asserts it was found.
fn assert_hole(name: &str, cfg: Config, property: &'static str) {
    let checker = check::check(name, cfg, HasDiscoveries::AnyOf(BTreeSet::from([property])));
    check::print_path(property, &checker);
    assert!(
        checker.discovery(property).is_some(),
        "{name}: expected a counterexample for \"{property}\""
    );
}

#[test]
fn hole_1_without_discarding_stale_hand_offs_two_guards_are_valid_at_once() {
    let fixes = Fixes {
        discard_stale_handoff: false,
        ..Fixes::ALL
    };
    assert_hole("hole 1", bound(4, fixes), P1_ONE_VALID_GUARD);
}

#[test]
fn hole_6_without_idempotent_requeue_the_lock_goes_to_a_finished_client() {
    let fixes = Fixes {
        idempotent_requeue: false,
        ..Fixes::ALL
    };
    let cfg = Config {
        losses: 1,
        ..bound(4, fixes)
    };
    assert_hole("hole 6", cfg, P5_HANDOFF_TO_WAITER);
}

#[test]
fn hole_7_without_waiter_leases_a_dead_waiter_is_handed_the_lock() {
    let fixes = Fixes {
        waiter_lease: false,
        ..Fixes::ALL
    };
    let cfg = Config {
        crashes: 1,
        ..bound(4, fixes)
    };
    assert_hole("hole 7 (long hold)", cfg, P6_DEAD_WAITER_LEASE);
    assert_hole("hole 7 (dead for a lease)", cfg, P5_HANDOFF_TO_WAITER);
}
