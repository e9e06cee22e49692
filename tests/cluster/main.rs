//! Every lock primitive and the queue against a real three-master Redis Cluster started on
//! loopback per test (`redis-server --cluster-enabled yes` ×3 + `redis-cli --cluster create`).
//! No mocks; each test its own cluster and a unique key prefix.
#![allow(unreachable_pub)]

#[path = "../../crates/lockstock-lock/tests/support/redis_server.rs"]
mod redis_server;

#[path = "../support/redis_cluster.rs"]
mod redis_cluster;

mod locks;
mod queue;
