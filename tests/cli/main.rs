//! The binaries' shared conventions, run as real processes: the same environment variables mean
//! the same thing to every binary, `LOG_FORMAT` switches every binary's logs to JSON, and the
//! README's table names every variable the binaries read. A throwaway `redis-server` per test;
//! Postgres through `#[sqlx::test]` (a fresh migrated database per test).
#![allow(unreachable_pub)]

#[path = "../../crates/lockstock-lock/tests/support/redis_server.rs"]
mod redis_server;
#[path = "../support/test_env.rs"]
mod test_env;

mod helpers;

mod env;
mod logs;
mod readme;
mod secrets;
