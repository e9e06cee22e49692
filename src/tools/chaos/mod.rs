//! `lockctl chaos`: a seeded fault-injection run against real worker processes, recorded as a
//! history and checked (Jepsen-style) against the final database.
//!
//! - [`proxy`]: a TCP fault proxy (delay, freeze, drop, reset, black hole) between a worker and
//!   Redis.
//! - [`history`]: the recorded events and the final state.
//! - [`checker`]: the rules over both; each violation carries its evidence.
//! - [`clock`]: the wall-clock step fault (a worker under libfaketime).
//! - [`own_postgres`]: a throwaway Postgres the run may restart.
//! - [`tail`]: follows the workers' logs during the run, for the faults aimed at a moment.
//! - [`harness`]: starts Redis, workers, the producer and the nemesis; stops, waits, checks.
//! - [`multihost`]: workers on their own network hosts (`scripts/multihost`), partitions cut
//!   between them, the same checker.

pub mod checker;
pub mod cli;
pub mod clock;
pub mod harness;
pub mod history;
pub mod multihost;
pub mod multihost_cli;
pub mod own_postgres;
pub mod proxy;
pub mod tail;
