//! TLS for both stores, against local servers that speak only TLS with a certificate from a
//! certificate authority the test makes itself (`rcgen`): `rediss://` for the lock client,
//! Redlock, the queue and the binaries, and `sslmode=require` / `verify-ca` / `verify-full` with
//! `sslrootcert=` for Postgres.
//!
//! Needs `redis-server` built with TLS (Debian's is) and Postgres server binaries under
//! `/usr/lib/postgresql/*/bin` (both installed by `scripts/services`). When the test runs as
//! root, Postgres runs as the `postgres` OS user. The Postgres tests print `SKIPPED:` and pass
//! only when no server binaries are installed, or root has no `postgres` user to run them.
#![allow(unreachable_pub)]

#[path = "../../crates/lockstock-lock/tests/support/redis_server.rs"]
mod redis_server;

#[path = "../support/postgres_server.rs"]
mod postgres_server;

mod ca;
mod child;
mod tls_postgres;
mod tls_redis;

mod binaries;
mod postgres;
mod rediss;
