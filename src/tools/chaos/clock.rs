//! The wall-clock step fault: one worker slot runs under libfaketime (Debian's `faketime`
//! package), whose offset the nemesis steps by minutes, forwards and backwards, mid-run.
//!
//! - When the `clock-step` fault is enabled, then worker slot 0 (every incarnation of it) starts
//!   with `LD_PRELOAD` of libfaketime and `FAKETIME_TIMESTAMP_FILE` pointing at a file of the
//!   run's; `FAKETIME_NO_CACHE=1` makes it read the file on every clock call, so a step takes
//!   effect at once, in the running process.
//! - Only the wall clock is faked: `FAKETIME_DONT_FAKE_MONOTONIC=1` (and the older spelling
//!   `DONT_FAKE_MONOTONIC=1`) leave `CLOCK_MONOTONIC` alone. The protocol relies on it: lock
//!   deadlines are measured on the monotonic clock from the request's send instant, and lock
//!   expiry and fence order on Redis's own clock. A faked monotonic clock would be a different
//!   fault (a process whose timers run wrong), which no lock survives.
//! - The faked worker writes its history times from its faked wall clock; [`FakeClock::unfake`]
//!   maps them back, knowing when each step was made, so the checker compares real times.
//!   Not guaranteed: an event whose times straddle a step (a grant asked for before and answered
//!   after) keeps the offset of its reply for all its times.

use std::path::{Path, PathBuf};

use tokio::process::Command;

use super::history::{Event, now_ms};

/// The multi-threaded libfaketime (the workers run several threads), where Debian installs it.
pub fn libfaketime() -> Option<PathBuf> {
    let mut candidates = vec![
        PathBuf::from("/usr/lib/faketime/libfaketimeMT.so.1"),
        PathBuf::from("/usr/local/lib/faketime/libfaketimeMT.so.1"),
    ];
    if let Ok(entries) = std::fs::read_dir("/usr/lib") {
        candidates.extend(
            entries
                .flatten()
                .map(|entry| entry.path().join("faketime/libfaketimeMT.so.1")),
        );
    }
    candidates.into_iter().find(|path| path.is_file())
}

/// One worker slot's faked wall clock: the offset file and every step made.
#[derive(Debug)]
pub struct FakeClock {
    lib: PathBuf,
    file: PathBuf,
    /// (real wall ms when set, offset ms from then on), oldest first.
    steps: Vec<(u64, i64)>,
}

impl FakeClock {
    /// A clock with offset zero, its file in `dir`.
    pub fn new(lib: PathBuf, dir: &Path) -> anyhow::Result<Self> {
        let mut clock = Self {
            lib,
            file: dir.join("faketime.rc"),
            steps: Vec::new(),
        };
        clock.set(0)?;
        Ok(clock)
    }

    /// Makes `command` run under this clock.
    pub fn apply(&self, command: &mut Command) {
        command
            .env("LD_PRELOAD", &self.lib)
            .env("FAKETIME_TIMESTAMP_FILE", &self.file)
            .env("FAKETIME_NO_CACHE", "1")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .env("DONT_FAKE_MONOTONIC", "1");
    }

    /// The current offset, ms.
    pub fn offset_ms(&self) -> i64 {
        self.steps.last().map_or(0, |(_, offset)| *offset)
    }

    /// Steps the clock by `delta_ms` (negative: backwards); returns the new offset.
    pub fn step(&mut self, delta_ms: i64) -> anyhow::Result<i64> {
        let offset = self.offset_ms() + delta_ms;
        self.set(offset)?;
        Ok(offset)
    }

    fn set(&mut self, offset_ms: i64) -> anyhow::Result<()> {
        // Seconds with a sign (libfaketime's relative format); written whole by a rename, so a
        // reader never sees half a line.
        let seconds = format!("{:+}\n", offset_ms / 1000);
        let tmp = self.file.with_extension("tmp");
        std::fs::write(&tmp, seconds)?;
        std::fs::rename(&tmp, &self.file)?;
        self.steps.push((now_ms(), offset_ms / 1000 * 1000));
        Ok(())
    }

    /// Maps the times of `events`, logged by the faked process in this order, back to real
    /// ones. A faked time alone can be ambiguous (after a step backwards the faked clock
    /// repeats itself), the log order is not: each event takes the first step, from the
    /// previous event's on, whose span its corrected time falls in (within a second either
    /// side, for a read racing a step); none: the previous event's. A grant's start may predate
    /// the step its reply saw: it takes the latest step up to that one under which it falls in
    /// its span and not after the reply.
    pub fn unfake(&self, events: &mut [Event]) {
        let now = now_ms();
        let mut current = 0;
        for event in events {
            let faked = event.at_ms();
            if let Some(k) = (current..self.steps.len()).find(|k| self.fits(*k, faked, now)) {
                current = k;
            }
            let offset = self.offset_of(current);
            let real_at = faked.saturating_add_signed(-offset);
            let start_offset = match event {
                Event::Grant { start_ms, .. } => (0..=current)
                    .rev()
                    .find(|j| {
                        self.fits(*j, *start_ms, now)
                            && start_ms.saturating_add_signed(-self.offset_of(*j)) <= real_at
                    })
                    .map(|j| self.offset_of(j)),
                _ => None,
            };
            event.map_times(|time| time.saturating_add_signed(-offset));
            if let (Event::Grant { start_ms, .. }, Some(start_offset)) = (event, start_offset) {
                *start_ms = start_ms.saturating_add_signed(offset - start_offset);
            }
        }
    }

    fn offset_of(&self, step: usize) -> i64 {
        self.steps.get(step).map_or(0, |(_, offset)| *offset)
    }

    /// Whether `faked`, corrected by step `k`'s offset, falls in step `k`'s span (which ends at
    /// the next step, or `now`), give or take a second.
    fn fits(&self, k: usize, faked: u64, now: u64) -> bool {
        let slack = 1_000;
        let (from, offset) = self.steps[k];
        let until = self.steps.get(k + 1).map_or(now, |(next, _)| *next);
        let real = faked.saturating_add_signed(-offset);
        real + slack >= from && real <= until + slack
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faked_times_map_back_by_the_step_in_force_in_log_order() {
        const T: u64 = 1_000_000_000;
        let clock = FakeClock {
            lib: PathBuf::new(),
            file: PathBuf::new(),
            steps: vec![(T + 1_000, 0), (T + 5_000, -360_000), (T + 9_000, 300_000)],
        };
        let claim = |at_ms| Event::Claim {
            product: 1,
            fence: 1,
            worker: "w".into(),
            stock: 1,
            at_ms,
        };
        let back = |real: u64| real - 360_000;
        let mut events = vec![
            claim(T + 2_000),
            // Asked for before the step back, answered after it.
            Event::Grant {
                resource: "r".into(),
                fence: 1,
                worker: "w".into(),
                start_ms: T + 4_900,
                reply_ms: back(T + 5_100),
                deadline_ms: back(T + 6_000),
            },
            // Logged after the step back, before the next step.
            claim(back(T + 8_000)),
            claim(T + 9_500 + 300_000),
        ];
        clock.unfake(&mut events);
        let times: Vec<u64> = events.iter().map(Event::at_ms).collect();
        assert_eq!(times, [T + 2_000, T + 5_100, T + 8_000, T + 9_500]);
        assert!(
            matches!(
                events[1],
                Event::Grant {
                    start_ms,
                    deadline_ms,
                    ..
                } if start_ms == T + 4_900 && deadline_ms == T + 6_000
            ),
            "{:?}",
            events[1]
        );
    }
}
