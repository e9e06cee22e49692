//! Every lock primitive, the queue and the real binaries against a real Redis Cluster started on
//! loopback per test (`redis-server --cluster-enabled yes` ×3, or ×6 with replicas, + `redis-cli
//! --cluster create`). No mocks; each test its own cluster, database and key prefix.
#![allow(unreachable_pub)]

#[path = "../../crates/lockstock-lock/tests/support/redis_server.rs"]
mod redis_server;

#[path = "../support/redis_cluster.rs"]
mod redis_cluster;

#[path = "../support/test_env.rs"]
mod test_env;

mod fleet;

mod binaries;
mod failover;
mod intake;
mod locks;
mod pipeline;
mod queue;
mod shards;
