//! A throwaway three-master Redis Cluster on loopback, per test.
//!
//! - When a test calls [`RedisCluster::start`], then three `redis-server --cluster-enabled yes`
//!   processes (no persistence, no replicas) listen on free 127.0.0.1 ports, `redis-cli --cluster
//!   create` assigns the 16384 slots among them, and the call returns once every node reports
//!   `cluster_state:ok` and agrees on the slot map.
//! - When a test calls [`RedisCluster::start_with_replicas`], then six nodes: three masters and one
//!   replica each, returned once every replica's link to its master is up.
//! - [`RedisCluster::promote_replica_of`] fails over the master that owns a key's slot to its
//!   replica (`CLUSTER FAILOVER` on the replica) and returns once the replica reports itself a
//!   master.
//! - When the value is dropped, then the processes are killed and their directories removed.
#![allow(dead_code, unreachable_pub)]

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::redis_server::free_port;

/// A running three-master cluster owned by a test.
#[derive(Debug)]
pub struct RedisCluster {
    /// The nodes' loopback ports.
    pub ports: Vec<u16>,
    dirs: Vec<PathBuf>,
    children: Vec<Child>,
}

impl RedisCluster {
    /// Starts three masters, creates the cluster, and waits until it serves every slot.
    pub fn start() -> Self {
        Self::start_nodes(0)
    }

    /// Starts three masters with one replica each and waits until every replica is in sync.
    pub fn start_with_replicas() -> Self {
        let cluster = Self::start_nodes(1);
        for &port in &cluster.ports {
            wait_until(port, "INFO replication", |info| {
                info.contains("role:master") || info.contains("master_link_status:up")
            });
        }
        cluster
    }

    /// Starts `3 * (1 + replicas)` nodes and creates the cluster.
    fn start_nodes(replicas: usize) -> Self {
        let mut cluster = RedisCluster {
            ports: Vec::new(),
            dirs: Vec::new(),
            children: Vec::new(),
        };
        for _ in 0..3 * (1 + replicas) {
            let port = free_port();
            let dir = std::env::temp_dir()
                .join(format!("lockstock-cluster-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("create cluster node dir");
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                ])
                .args(["--cluster-node-timeout", "2000"])
                .args(["--save", "", "--appendonly", "no"])
                .args(["--dir", dir.to_str().expect("utf-8 temp dir")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed (scripts/test installs it)");
            cluster.ports.push(port);
            cluster.dirs.push(dir);
            cluster.children.push(child);
        }
        for &port in &cluster.ports {
            wait_until(port, "PING", |reply| reply == "PONG");
        }
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli must be installed");
        assert!(status.success(), "redis-cli --cluster create failed");
        for &port in &cluster.ports {
            wait_until(port, "CLUSTER INFO", |info| {
                info.contains("cluster_state:ok") && info.contains("cluster_slots_assigned:16384")
            });
        }
        cluster
    }

    /// Fails the master owning `key`'s slot over to its replica (`CLUSTER FAILOVER` on the
    /// replica, which the old master agrees to: no acknowledged write is lost); returns the
    /// promoted node's port once it reports itself a master and every node sees the new map.
    pub fn promote_replica_of(&self, key: &str) -> u16 {
        let nodes: String = query(self.ports[0], &["CLUSTER", "NODES"]);
        let slot: i64 = query(self.ports[0], &["CLUSTER", "KEYSLOT", key]);
        let lines: Vec<Vec<&str>> = nodes
            .lines()
            .map(|line| line.split(' ').collect())
            .collect();
        let owner = lines
            .iter()
            .find(|fields| {
                fields[2].contains("master")
                    && fields[8..].iter().any(|range| {
                        let (low, high) = range.split_once('-').unwrap_or((range, range));
                        low.parse::<i64>().is_ok_and(|low| low <= slot)
                            && high.parse::<i64>().is_ok_and(|high| slot <= high)
                    })
            })
            .expect("a master owns the slot")[0];
        let replica = lines
            .iter()
            .find(|fields| fields[3] == owner)
            .expect("the owner has a replica");
        let port: u16 = replica[1]
            .split(['@', ':'])
            .nth(1)
            .and_then(|port| port.parse().ok())
            .expect("replica address");
        assert_eq!(query::<String>(port, &["CLUSTER", "FAILOVER"]), "OK");
        wait_until(port, "INFO replication", |info| {
            info.contains("role:master")
        });
        for &other in &self.ports {
            wait_until(other, "CLUSTER INFO", |info| {
                info.contains("cluster_state:ok")
            });
        }
        port
    }

    /// The nodes' `redis://` URLs.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for dir in &self.dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// `args` on node `port`, its reply as `T`.
fn query<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> T {
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .and_then(|client| client.get_connection_with_timeout(Duration::from_secs(2)))
        .expect("connect to a cluster node");
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query(&mut conn).expect("cluster node command")
}

/// Polls `command` on `port` until `ok(reply)` holds (10 s deadline).
fn wait_until(port: u16, command: &str, ok: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .and_then(|client| client.get_connection_with_timeout(Duration::from_millis(200)))
            .and_then(|mut conn| {
                let mut parts = command.split(' ');
                let mut cmd = redis::cmd(parts.next().unwrap_or("PING"));
                for part in parts {
                    cmd.arg(part);
                }
                cmd.query::<String>(&mut conn)
            });
        if reply.as_deref().is_ok_and(&ok) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "cluster node {port} not ready for {command:?} within 10 s: {reply:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
