//! HTTP API tests: the real `app` served on 127.0.0.1:0 (or driven with `oneshot`) over a
//! throwaway `redis-server` per test and a fresh migrated database per test (`#[sqlx::test]`),
//! talked to with a real HTTP client. No mocks. Includes the seed's two test scripts, the
//! 100-request accuracy comparison, and an end-to-end check of the live page in headless Chromium.
#![allow(unreachable_pub)]

#[path = "../../crates/lockstock-lock/tests/support/redis_server.rs"]
mod redis_server;

mod helpers;
#[path = "../support/test_env.rs"]
mod test_env;

mod idempotency;

mod binaries;
mod dead_letters;
mod defences;
mod errors;
mod lockctl_json;
mod observability;
mod orders;
mod page;
mod seed;
mod upgrades;
