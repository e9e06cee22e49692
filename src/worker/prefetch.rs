//! How many reserved orders may wait in a worker (parked behind a product's lock or for a slot):
//! a fixed number (`worker --prefetch N`), or by default a number that follows the worker's pace.
//!
//! The adaptive limit is half a second of work at the pace of the last second (the orders the
//! worker took in over it, counted every quarter of a second), kept between a floor (one batch,
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
//! - Not guaranteed: a steady limit. It moves every quarter second; the bytes budget
//!   (`--max-reserved-bytes`) bounds memory whatever it says.

use std::{
    collections::VecDeque,
    sync::{
        Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

/// How long the pace is measured over. Long enough to smooth the bursts of a lane taking a whole
/// batch at once (a worker that gets a hot product's lock for one 800 ms batch of 8 and then
/// waits its turn takes in 8 orders in a burst: over a quarter of a second that would read as
/// 32 a second). Before the worker has run this long, the pace counts its orders over this
/// whole span (it starts low).
const WINDOW: Duration = Duration::from_secs(1);

/// How often the limit moves.
const STEP: Duration = Duration::from_millis(250);

/// How much work, at the measured pace, the limit lets wait.
const HORIZON: Duration = Duration::from_millis(500);

/// The most orders that may wait at once.
#[derive(Debug)]
pub(crate) struct PrefetchLimit {
    floor: usize,
    cap: usize,
    current: AtomicUsize,
    /// Orders taken in since the worker started.
    admitted: AtomicU64,
    /// `admitted` when the limit last moved (every `STEP`), oldest first: the oldest is the
    /// newest that is at least `WINDOW` old, or the start.
    samples: Mutex<VecDeque<(Instant, u64)>>,
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
            samples: Mutex::new(VecDeque::from([(Instant::now(), 0)])),
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
        // Whoever finds a step over moves the limit; a reader that finds it being moved reads
        // the old value rather than wait.
        if let Ok(mut samples) = self.samples.try_lock() {
            let last = samples.back().map_or(now, |&(at, _)| at);
            if now.saturating_duration_since(last) >= STEP {
                let admitted = self.admitted.load(Ordering::Relaxed);
                samples.push_back((now, admitted));
                while samples.len() > 2 && now.saturating_duration_since(samples[1].0) >= WINDOW {
                    samples.pop_front();
                }
                let (since, admitted_then) = samples[0];
                let span = now.saturating_duration_since(since).max(WINDOW);
                let pace = admitted.saturating_sub(admitted_then) as f64 / span.as_secs_f64();
                let limit = (pace * HORIZON.as_secs_f64()).ceil() as usize;
                self.current
                    .store(limit.clamp(self.floor, self.cap), Ordering::Relaxed);
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
    fn the_adaptive_limit_is_half_a_second_at_the_last_seconds_pace_between_floor_and_cap() {
        let limit = PrefetchLimit::adaptive(64, 1024);
        let start = limit.samples.lock().unwrap()[0].0;
        let at = |ms: u64| start + Duration::from_millis(ms);
        assert_eq!(limit.get_at(start), 64, "starts at the floor");

        // 1,000 orders in the first quarter second: counted over a whole second at first (1,000
        // a second, half a second of it is 500), it moves only once the step is over.
        admit(&limit, 1_000);
        assert_eq!(limit.get_at(at(100)), 64, "step not over");
        assert_eq!(limit.get_at(at(250)), 500);
        // 1,000 more by half a second: 2,000 in the last second.
        admit(&limit, 1_000);
        assert_eq!(limit.get_at(at(500)), 1_000);

        // 10,000 more: capped.
        admit(&limit, 10_000);
        assert_eq!(limit.get_at(at(750)), 1_024);

        // Then a hot product's burst: 16 orders in the next second, counted from the sample at
        // 1,000 ms (the newest one at least a second old).
        assert_eq!(limit.get_at(at(1_000)), 1_024);
        admit(&limit, 16);
        assert_eq!(limit.get_at(at(2_000)), 64, "8 is below the floor");

        // Idle: the floor.
        assert_eq!(limit.get_at(at(4_000)), 64);
    }

    #[test]
    fn a_cap_below_the_floor_is_the_floor() {
        let limit = PrefetchLimit::adaptive(64, 16);
        admit(&limit, 100_000);
        assert_eq!(limit.get_at(Instant::now() + Duration::from_secs(1)), 64);
    }
}
