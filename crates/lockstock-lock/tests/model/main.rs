//! placeholder doc
mod check;
mod mutex;

use stateright::{Checker, HasDiscoveries};

use mutex::{Config, Fixes};

fn env(name: &str, default: u8) -> u8 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn explore() {
    let cfg = Config {
        clients: env("C", 3),
        ttl: 3,
        lease: 2,
        drift: env("D", 0),
        horizon: env("H", 4),
        pauses: env("P", 2),
        losses: env("L", 0),
        duplicates: env("DU", 0),
        crashes: env("CR", 0),
        restarts: env("R", 0),
        extends: env("E", 1) == 1,
        fixes: Fixes {
            discard_stale_handoff: env("F", 7) & 1 != 0,
            idempotent_requeue: env("F", 7) & 2 != 0,
            waiter_lease: env("F", 7) & 4 != 0,
        },
    };
    let c = check::check("explore", cfg, HasDiscoveries::AnyFailures);
    for (name, _) in c.discoveries() {
        println!("discovered: {name}");
        if !name.starts_with("sometimes") {
            check::print_path(c.model(), name, &c);
        }
    }
}
