//! Integration tests for the order pipeline against a real Redis and a real Postgres.
//!
//! Redis: a throwaway `redis-server` per test (`helpers::TestRedis`) plus a unique key prefix.
//! Postgres: `#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]` gives each test a fresh,
//! migrated database from `DATABASE_URL`.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

#[path = "../../crates/lockstock-lock/tests/support/redis_server.rs"]
mod redis_server;

#[path = "../support/postgres_server.rs"]
mod postgres_server;

mod bench;
mod grouped;
mod helpers;
mod producer;
mod queue;
mod store;
#[path = "../support/test_env.rs"]
mod test_env;
