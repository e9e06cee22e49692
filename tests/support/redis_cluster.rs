//! A throwaway three-master Redis Cluster on loopback, per test.
//!
//! - When a test calls [`RedisCluster::start`], then three `redis-server --cluster-enabled yes`
//!   processes (no persistence, no replicas) listen on free 127.0.0.1 ports, `redis-cli --cluster
//!   create` assigns the 16384 slots among them, and the call returns once every node reports
//!   `cluster_state:ok` and agrees on the slot map.
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
        let mut cluster = RedisCluster {
            ports: Vec::new(),
            dirs: Vec::new(),
            children: Vec::new(),
        };
        for _ in 0..3 {
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
            .args(["--cluster-replicas", "0", "--cluster-yes"])
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
