//! [`LockObserver`]: a hook that sees every grant, extension, release, loss and hand-off of a
//! client's mutex holds, for a test or a fault-injection harness that records a history and
//! checks it (fences increase in grant order; validity windows never overlap).
//!
//! - When no observer is attached ([`LockConfig::with_observer`](crate::LockConfig::with_observer)),
//!   then nothing is built or sent: each would-be event costs one `Option` check, and the
//!   acquire script reads no server clock.
//! - When one is attached, then [`LockObserver::on_event`] is called synchronously, on the task
//!   that caused the event (keep it short: push to a buffer or a channel), once per event:
//!   [`LockEvent::Grant`] when an acquisition returns a guard (with the server time of the
//!   grant: the acquire script then also reads `TIME`), [`LockEvent::Extend`] after each
//!   successful extension, [`LockEvent::Release`] / [`LockEvent::HandOff`] when a release
//!   (explicit or by drop) has been answered, and [`LockEvent::Lost`] when the lost signal fires.
//! - Every instant is the local monotonic clock; `sent_at` is when the request that produced
//!   the event was sent (for a hand-off grant, the earliest local instant it can have happened),
//!   so a guard's validity window is `[Grant.sent_at, min(deadline, Release.sent_at)]`.
//! - Not covered: the other primitives (semaphore, read/write, fair lock, Redlock), and events
//!   of a guard whose release task never ran (the runtime shut down first).

use std::{fmt, sync::Arc, time::Instant};

use crate::{guard::ReleaseOutcome, token::LockToken};

/// Receives a client's [`LockEvent`]s. Implementations must be quick and must not block (they
/// run on the task that caused the event).
pub trait LockObserver: fmt::Debug + Send + Sync + 'static {
    /// Called once per event.
    fn on_event(&self, event: &LockEvent);
}

/// One thing that happened to a mutex hold of an observed client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockEvent {
    /// An acquisition returned a guard.
    Grant {
        /// The resource.
        resource: String,
        /// The holder's token.
        token: LockToken,
        /// The fencing token of the grant.
        fence: u64,
        /// Redis server time (Unix ms) of the grant, when known (a direct grant reads it because
        /// an observer is attached; a hand-off message carries it; a hold found handed over
        /// while giving up has none).
        server_time_ms: Option<u64>,
        /// When the granting request was sent (a hand-off: the earliest local instant it can
        /// have happened).
        sent_at: Instant,
        /// The local safety deadline of the new guard.
        deadline: Instant,
    },
    /// An extension succeeded.
    Extend {
        /// The resource.
        resource: String,
        /// The holder's token.
        token: LockToken,
        /// The hold's fencing token.
        fence: u64,
        /// When the extension was sent.
        sent_at: Instant,
        /// The guard's new safety deadline.
        deadline: Instant,
    },
    /// A release was answered: the lock is free ([`ReleaseOutcome::Released`]) or was no longer
    /// this holder's ([`ReleaseOutcome::NotHeld`]).
    Release {
        /// The resource.
        resource: String,
        /// The holder's token.
        token: LockToken,
        /// The hold's fencing token.
        fence: u64,
        /// When the release was sent (the end of the guard's validity window).
        sent_at: Instant,
        /// What the release found.
        outcome: ReleaseOutcome,
    },
    /// The lost signal fired (an extension found the hold gone, or the safety deadline passed).
    Lost {
        /// The resource.
        resource: String,
        /// The holder's token.
        token: LockToken,
        /// The hold's fencing token.
        fence: u64,
        /// Why, in words.
        why: &'static str,
    },
    /// A release handed the lock straight to the next waiter.
    HandOff {
        /// The resource.
        resource: String,
        /// The releasing holder's token.
        token: LockToken,
        /// The releasing hold's fencing token.
        fence: u64,
        /// When the release was sent.
        sent_at: Instant,
    },
}

/// An attached observer and the token of the hold it watches (kept by a guard's shared state).
#[derive(Debug, Clone)]
pub(crate) struct Observed {
    pub(crate) observer: Arc<dyn LockObserver>,
    pub(crate) token: LockToken,
}
