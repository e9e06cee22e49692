//! Process-level tests: real `worker` processes (started from `CARGO_BIN_EXE_worker`) against a
//! real Redis (a throwaway server per test) and Postgres (a fresh migrated database per test via
//! `#[sqlx::test]`). Each test states its invariant and checks it on the stored data.
#![allow(unreachable_pub)]

#[path = "../../crates/lockstock-lock/tests/support/redis_server.rs"]
mod redis_server;

#[path = "../support/postgres_server.rs"]
mod postgres_server;
#[path = "../support/tcp_proxy.rs"]
mod tcp_proxy;

mod helpers;
#[path = "../support/test_env.rs"]
mod test_env;

mod commit_backoff;
mod exactly_once;
mod failures;
mod intake;
mod memory;
mod messages;
mod postgres_faults;
mod prefetch;
mod redlock;
mod shared_locks;
mod shutdown;
mod startup;
mod upgrades;
