//! [`HistoryObserver`]: the lock observer a worker attaches when `lockctl chaos` asks for a
//! history (`--chaos-history`): it logs every grant, extension, release, hand-off and loss of
//! the single-instance mutex as a `history` event (target `history`, message `history`), the
//! lines `lockctl chaos` reads back from each worker's JSON log.
//!
//! - When the flag is absent, then no observer is attached and the lock crate builds no event
//!   (production pays one `Option` check per would-be event).
//! - Every instant is converted to wall-clock milliseconds against a (monotonic, wall) pair read
//!   when the event is logged, so one event's times keep their exact monotonic distances and
//!   are on the wall clock in force when the line was written: a worker whose wall clock the
//!   `clock-step` fault fakes is mapped back by the harness per line, in log order (`clock.rs`).
//! - A release or hand-off line says `lost` when the hold was already lost: the lock answered
//!   "not held", the lost signal had fired, or it was sent at or after the last deadline (so the
//!   checker ends that guard's window at the deadline, not at the late release).
//! - Not covered: Redlock holds (the lock crate observes only the mutex; `product_lock` logs
//!   their grants and releases itself, without extensions).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use lockstock_lock::{LockEvent, LockObserver, ReleaseOutcome};

/// Logs a client's lock events as chaos `history` lines (see the module docs).
#[derive(Debug, Default)]
pub struct HistoryObserver {
    /// Per live hold (resource, fence): its latest deadline and whether it was lost.
    held: Mutex<HashMap<(String, u64), Hold>>,
}

#[derive(Debug, Clone, Copy)]
struct Hold {
    deadline: Instant,
    lost: bool,
}

impl HistoryObserver {
    /// An observer with no holds seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces what is known of a hold by `update(what was known)` (`None`: forget it).
    fn note(&self, key: (String, u64), update: impl FnOnce(Option<Hold>) -> Option<Hold>) {
        let Ok(mut held) = self.held.lock() else {
            return;
        };
        let before = held.get(&key).copied();
        match update(before) {
            Some(hold) => held.insert(key, hold),
            None => held.remove(&key),
        };
    }

    /// Forgets a released hold; says whether it was lost by the time `sent_at`.
    fn end(&self, resource: &str, fence: u64, sent_at: Instant, not_held: bool) -> bool {
        let mut lost = not_held;
        self.note((resource.to_owned(), fence), |before| {
            if let Some(hold) = before {
                lost |= hold.lost || sent_at >= hold.deadline;
            }
            None
        });
        lost
    }
}

impl LockObserver for HistoryObserver {
    fn on_event(&self, event: &LockEvent) {
        let wall = WallClock::now();
        match event {
            LockEvent::Grant {
                resource,
                fence,
                sent_at,
                deadline,
                server_time_ms,
                ..
            } => {
                self.note((resource.clone(), *fence), |_| {
                    Some(Hold {
                        deadline: *deadline,
                        lost: false,
                    })
                });
                let (start_ms, reply_ms) = (wall.ms(*sent_at), wall.now_ms);
                let deadline_ms = wall.ms(*deadline);
                tracing::info!(target: "history", event = "grant", resource, fence, start_ms, reply_ms, deadline_ms, server_ms = server_time_ms, "history");
            }
            LockEvent::Extend {
                resource,
                fence,
                sent_at,
                deadline,
                ..
            } => {
                self.note((resource.clone(), *fence), |before| {
                    Some(Hold {
                        deadline: *deadline,
                        lost: before.is_some_and(|hold| hold.lost),
                    })
                });
                let (at_ms, deadline_ms) = (wall.ms(*sent_at), wall.ms(*deadline));
                tracing::info!(target: "history", event = "extend", resource, fence, at_ms, deadline_ms, "history");
            }
            LockEvent::Release {
                resource,
                fence,
                sent_at,
                outcome,
                ..
            } => {
                let not_held = *outcome == ReleaseOutcome::NotHeld;
                let lost = self.end(resource, *fence, *sent_at, not_held);
                let at_ms = wall.ms(*sent_at);
                tracing::info!(target: "history", event = "release", resource, fence, at_ms, lost, "history");
            }
            LockEvent::HandOff {
                resource,
                fence,
                sent_at,
                ..
            } => {
                let lost = self.end(resource, *fence, *sent_at, false);
                let at_ms = wall.ms(*sent_at);
                tracing::info!(target: "history", event = "release", resource, fence, at_ms, lost, hand_off = true, "history");
            }
            LockEvent::Lost {
                resource,
                fence,
                why,
                ..
            } => {
                self.note((resource.clone(), *fence), |before| {
                    before.map(|hold| Hold { lost: true, ..hold })
                });
                let at_ms = wall.now_ms;
                tracing::info!(target: "history", event = "lost", resource, fence, at_ms, why, "history");
            }
        }
    }
}

/// One reading of the monotonic and the wall clock, to convert instants near it.
#[derive(Debug, Clone, Copy)]
struct WallClock {
    instant: Instant,
    now_ms: u64,
}

impl WallClock {
    fn now() -> Self {
        let instant = Instant::now();
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as u64);
        Self { instant, now_ms }
    }

    /// `at` in wall ms (before or after the reading).
    fn ms(&self, at: Instant) -> u64 {
        match at.checked_duration_since(self.instant) {
            Some(after) => self.now_ms.saturating_add(after.as_millis() as u64),
            None => self
                .now_ms
                .saturating_sub(self.instant.duration_since(at).as_millis() as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn instants_map_to_wall_ms_around_the_reading() {
        let wall = WallClock {
            instant: Instant::now(),
            now_ms: 1_000_000,
        };
        let later = wall.instant + Duration::from_millis(250);
        assert_eq!(wall.ms(later), 1_000_250);
        if let Some(earlier) = wall.instant.checked_sub(Duration::from_millis(40)) {
            assert_eq!(wall.ms(earlier), 999_960);
        }
    }

    #[test]
    fn a_release_after_the_deadline_or_the_lost_signal_is_lost() {
        let observer = HistoryObserver::new();
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_millis(100);
        observer.note(("r".into(), 1), |_| {
            Some(Hold {
                deadline,
                lost: false,
            })
        });
        assert!(!observer.end("r", 1, t0 + Duration::from_millis(50), false));
        observer.note(("r".into(), 2), |_| {
            Some(Hold {
                deadline,
                lost: false,
            })
        });
        assert!(observer.end("r", 2, deadline, false));
        observer.note(("r".into(), 3), |_| {
            Some(Hold {
                deadline,
                lost: true,
            })
        });
        assert!(observer.end("r", 3, t0, false));
        assert!(observer.end("r", 4, t0, true), "not held: lost");
    }
}
