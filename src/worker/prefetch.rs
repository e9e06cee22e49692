//! How many reserved orders may wait in a worker (parked behind a product's lock or for a slot):
//! a fixed number (`worker --prefetch N`), or by default a number that follows the worker's pace.
//!
//! The adaptive limit is a quarter of a second of work at the pace of the last window (the
//! orders the worker took in over about a second), kept between a floor (one batch,
//! `--batch-limit`) and a cap (a batch for every slot, `--concurrency` × `--batch-limit`). A
//! reservation is a promise that this process gets to the order soon, and "soon" is what the
//! pace says: a worker whose orders take a slow step, or that waits its turn on a hot product,
//! takes in a few orders a second and so reserves little beyond one batch (idle workers take
//! the rest); a worker deciding thousands of orders a second with no slow step reserves enough
//! for its lanes to fill their batches (with the floor alone, orders spread over 100 products
//! came one per lock hold: 0.14 × the commit ceiling, BENCHMARKS.md).
//!
//! - When the limit is read, then it is between the floor and the cap (equal for a fixed one).
//! - When the pace falls, then the limit falls with it one window later; orders reserved while it
//!   was higher stay reserved (they are given back at shutdown like any other).
//! - When the worker is idle, then the pace is zero and the limit is the floor.
//! - Not guaranteed: a steady limit. It moves with every window; the bytes budget
//!   (`--max-reserved-bytes`) bounds memory whatever it says.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

/// How long the pace is measured over before the limit moves. Long enough to smooth the bursts
/// of a lane taking a whole batch at once (a worker that gets a hot product's lock for one
/// 800 ms batch of 8 and then waits its turn takes in 8 orders in a burst: over a quarter of a
/// second that would read as 32 a second).
const WINDOW: Duration = Duration::from_secs(1);

/// How much work, at the measured pace, the limit lets wait.
const HORIZON: Duration = Duration::from_millis(250);

/// The most orders that may wait at once.
#[derive(Debug)]
pub(crate) struct PrefetchLimit {
    floor: usize,
    cap: usize,
    current: AtomicUsize,
    /// Orders taken in since the worker started.
    admitted: AtomicU64,
    /// Where the current window started, and `admitted` then.
    window: Mutex<(Instant, u64)>,
}

impl PrefetchLimit {
    /// Always `limit`.
    pub(crate) fn fixed(limit: usize) -> Self {
        Self::between(limit, limit)
    }

    /// Following the pace, between `floor` and `cap` (raised to `floor` if below it).
    pub(crate) fn adaptive(floor: usize, cap: usize) -> Self {
        Self::between(floor, cap.max(floor))
    }

    fn between(floor: usize, cap: usize) -> Self {
        Self {
            floor,
            cap,
            current: AtomicUsize::new(floor),
            admitted: AtomicU64::new(0),
            window: Mutex::new((Instant::now(), 0)),
        }
    }

    /// Counts one order taken in.
    pub(crate) fn admitted(&self) {
        if self.cap > self.floor {
            self.admitted.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The limit now.
    pub(crate) fn get(&self) -> usize {
        self.get_at(Instant::now())
    }

    fn get_at(&self, now: Instant) -> usize {
        if self.cap == self.floor {
            return self.floor;
        }
        // Whoever finds the window over moves the limit; a reader that finds it being moved
        // reads the old value rather than wait.
        if let Ok(mut window) = self.window.try_lock() {
            let (started, admitted_then) = *window;
            let elapsed = now.saturating_duration_since(started);
            if elapsed >= WINDOW {
                let admitted = self.admitted.load(Ordering::Relaxed);
                let pace = admitted.saturating_sub(admitted_then) as f64 / elapsed.as_secs_f64();
                let limit = (pace * HORIZON.as_secs_f64()).ceil() as usize;
                self.current
                    .store(limit.clamp(self.floor, self.cap), Ordering::Relaxed);
                *window = (now, admitted);
            }
        }
        self.current.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admit(limit: &PrefetchLimit, n: usize) {
        for _ in 0..n {
            limit.admitted();
        }
    }

    #[test]
    fn a_fixed_limit_never_moves() {
        let limit = PrefetchLimit::fixed(8);
        admit(&limit, 10_000);
        assert_eq!(limit.get_at(Instant::now() + Duration::from_secs(1)), 8);
    }

    #[test]
    fn the_adaptive_limit_is_a_quarter_second_at_the_last_windows_pace_between_floor_and_cap() {
        let limit = PrefetchLimit::adaptive(64, 1024);
        let start = limit.window.lock().unwrap().0;
        assert_eq!(limit.get_at(start), 64, "starts at the floor");

        // 2,000 orders in a second: a quarter of a second of it is 500.
        admit(&limit, 2_000);
        assert_eq!(
            limit.get_at(start + Duration::from_millis(500)),
            64,
            "window not over"
        );
        assert_eq!(limit.get_at(start + Duration::from_millis(1_000)), 500);

        // 10,000/s would be 2,500: capped.
        admit(&limit, 10_000);
        assert_eq!(limit.get_at(start + Duration::from_millis(2_000)), 1_024);

        // A hot product's burst: 16 orders in a second is 4, below the floor.
        admit(&limit, 16);
        assert_eq!(limit.get_at(start + Duration::from_millis(3_000)), 64);

        // Idle: the floor.
        assert_eq!(limit.get_at(start + Duration::from_millis(4_000)), 64);
    }

    #[test]
    fn a_cap_below_the_floor_is_the_floor() {
        let limit = PrefetchLimit::adaptive(64, 16);
        admit(&limit, 100_000);
        assert_eq!(limit.get_at(Instant::now() + Duration::from_secs(1)), 64);
    }
}
