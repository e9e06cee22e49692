//! Running a model under a bound and reporting what was checked.

use std::time::Instant;

use stateright::{Checker, HasDiscoveries, Model};

use super::mutex::{Config, MutexModel};

/// Checks `cfg` breadth-first to the end of its bounds (or until `stop` is met), printing the
/// bound, the unique state count and the time taken.
pub(crate) fn check(name: &str, cfg: Config, stop: HasDiscoveries) -> impl Checker<MutexModel> {
    let started = Instant::now();
    let checker = MutexModel { cfg }
        .checker()
        .threads(2)
        .finish_when(stop)
        .spawn_bfs()
        .join();
    println!(
        "[{name}] bound: {cfg}\n[{name}] unique states: {}, max depth: {}, {:.1?}",
        checker.unique_state_count(),
        checker.max_depth(),
        started.elapsed()
    );
    checker
}

/// Prints the counterexample for `property` step by step (once, for --nocapture readers).
pub(crate) fn print_path(name: &'static str, checker: &impl Checker<MutexModel>) {
    let Some(path) = checker.discovery(name) else {
        return;
    };
    println!("counterexample for \"{name}\":");
    let steps = path.into_vec();
    for (state, action) in &steps {
        if let Some(action) = action {
            println!("  t={:>2}  {action:?}", state.now);
        }
    }
    if let Some((last, _)) = steps.last() {
        println!("  final state: {last:?}");
    }
}
