//! A throwaway three-master Redis Cluster on loopback, per test.
//!
//! - When a test calls [`RedisCluster::start`], then three `redis-server --cluster-enabled yes`
//!   processes (no persistence, no replicas) listen on free 127.0.0.1 ports, `redis-cli --cluster
//!   create` assigns the 16384 slots among them, and the call returns once every node reports
//!   `cluster_state:ok` and agrees on the slot map.
//! - When a test calls [`RedisCluster::start_with_replicas`], then six nodes: three masters and one
//!   replica each, returned once every replica's link to its master is up.
//! - [`RedisCluster::start_for_kill_failover`] is the same six nodes with a 1 s
//!   `cluster-node-timeout`, so that a killed master's replica takes over about 2–3 s later.
//! - [`RedisCluster::kill_master_of`] SIGKILLs the master that owns a key's slot and returns
//!   once its replica reports itself a master and every surviving node sees `cluster_state:ok`.
//! - [`RedisCluster::stop_replication_of`] makes a master stop replicating, so that writes from
//!   then on reach that master only (and die with it).
//! - [`RedisCluster::flush_masters`] runs `FLUSHALL` on every live master (Redis losing its data).
//! - [`RedisCluster::promote_replica_of`] fails over the master that owns a key's slot to its
//!   replica (`CLUSTER FAILOVER` on the replica) and returns once the replica reports itself a
//!   master.
//! - When the value is dropped, then the processes are killed and their directories removed.
#![allow(dead_code, unreachable_pub)]

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::redis_server::free_port;

/// A running three-master cluster owned by a test.
#[derive(Debug)]
pub struct RedisCluster {
    /// The nodes' loopback ports.
    pub ports: Vec<u16>,
    dirs: Vec<PathBuf>,
    /// The node processes, in port order (behind a lock: a shared cluster can lose a node).
    children: Mutex<Vec<Child>>,
    /// Ports of the nodes [`RedisCluster::kill_master_of`] killed.
    killed: Mutex<Vec<u16>>,
}

impl RedisCluster {
    /// Starts three masters, creates the cluster, and waits until it serves every slot.
    pub fn start() -> Self {
        Self::start_nodes(0, 2000)
    }

    /// Starts three masters with one replica each and waits until every replica is in sync.
    pub fn start_with_replicas() -> Self {
        Self::replicated(2000)
    }

    /// Three masters and three replicas that notice a dead master after 1 s (a replica may be
    /// promoted whatever its lag: `cluster-replica-validity-factor 0`).
    pub fn start_for_kill_failover() -> Self {
        Self::replicated(1000)
    }

    fn replicated(node_timeout_ms: u32) -> Self {
        let cluster = Self::start_nodes(1, node_timeout_ms);
        for &port in &cluster.ports {
            wait_until(port, "INFO replication", |info| {
                info.contains("role:master") || info.contains("master_link_status:up")
            });
        }
        cluster
    }

    /// Starts `3 * (1 + replicas)` nodes and creates the cluster.
    fn start_nodes(replicas: usize, node_timeout_ms: u32) -> Self {
        let mut cluster = RedisCluster {
            ports: Vec::new(),
            dirs: Vec::new(),
            children: Mutex::new(Vec::new()),
            killed: Mutex::new(Vec::new()),
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
                .args(["--cluster-node-timeout", &node_timeout_ms.to_string()])
                .args(["--cluster-replica-validity-factor", "0"])
                .args(["--save", "", "--appendonly", "no"])
                .args(["--dir", dir.to_str().expect("utf-8 temp dir")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed (scripts/test installs it)");
            cluster.ports.push(port);
            cluster.dirs.push(dir);
            cluster.children.get_mut().expect("children").push(child);
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

    /// The port of the master that serves `key`'s slot, as a live node sees it.
    pub fn master_of(&self, key: &str) -> u16 {
        let (nodes, owner) = self.owner(key);
        node_port(&nodes[owner][1])
    }

    /// The ports of the master serving `key`'s slot and of one of its live replicas.
    fn owner_and_replica(&self, key: &str) -> (u16, u16) {
        let (nodes, owner) = self.owner(key);
        let replica = nodes
            .iter()
            .find(|fields| fields[3] == nodes[owner][0] && !fields[2].contains("fail"))
            .expect("the owner has a live replica");
        (node_port(&nodes[owner][1]), node_port(&replica[1]))
    }

    /// A live node's `CLUSTER NODES`, split into fields, and the index of the line of the live
    /// master that serves `key`'s slot.
    fn owner(&self, key: &str) -> (Vec<Vec<String>>, usize) {
        let live = self.live_ports()[0];
        let nodes: String = query(live, &["CLUSTER", "NODES"]);
        let slot: i64 = query(live, &["CLUSTER", "KEYSLOT", key]);
        let lines: Vec<Vec<String>> = nodes
            .lines()
            .map(|line| line.split(' ').map(str::to_owned).collect())
            .collect();
        let owner = lines
            .iter()
            .position(|fields| {
                fields[2].contains("master")
                    && !fields[2].contains("fail")
                    && fields[8..].iter().any(|range| {
                        let (low, high) = range.split_once('-').unwrap_or((range, range));
                        low.parse::<i64>().is_ok_and(|low| low <= slot)
                            && high.parse::<i64>().is_ok_and(|high| slot <= high)
                    })
            })
            .expect("a master owns the slot");
        (lines, owner)
    }

    /// SIGKILLs the master serving `key`'s slot (no failover handshake: writes its replica had
    /// not received are lost) and waits until the replica has taken over: it reports itself a
    /// master and every surviving node reports `cluster_state:ok` (deadline 30 s: the failure
    /// is noticed after `cluster-node-timeout`). Returns (killed port, promoted port).
    pub fn kill_master_of(&self, key: &str) -> (u16, u16) {
        let (owner, replica) = self.owner_and_replica(key);
        let index = self
            .ports
            .iter()
            .position(|&port| port == owner)
            .expect("the owner is one of ours");
        {
            let mut children = self.children.lock().expect("children");
            children[index].kill().expect("SIGKILL the master");
            let _ = children[index].wait();
        }
        self.killed.lock().expect("killed").push(owner);
        wait_until_within(
            replica,
            "INFO replication",
            Duration::from_secs(30),
            |info| info.contains("role:master"),
        );
        for port in self.live_ports() {
            wait_until_within(port, "CLUSTER INFO", Duration::from_secs(30), |info| {
                info.contains("cluster_state:ok")
            });
        }
        (owner, replica)
    }

    /// Stops the master serving `key`'s slot from replicating: its replica is given a wrong
    /// `masterauth` (the master has no password, so the replica's handshake fails), its link is
    /// dropped (`CLIENT KILL TYPE replica`), and the call returns once the master reports no
    /// connected replica. Writes from then on reach that master only, and die with it. Returns
    /// the master's port.
    pub fn stop_replication_of(&self, key: &str) -> u16 {
        let (master, replica) = self.owner_and_replica(key);
        let _: String = query(
            replica,
            &["CONFIG", "SET", "masterauth", "not-the-password"],
        );
        let _: i64 = query(master, &["CLIENT", "KILL", "TYPE", "replica"]);
        wait_until(master, "INFO replication", |info| {
            info.contains("connected_slaves:0")
        });
        master
    }

    /// `FLUSHALL` on every live master: the cluster loses every key, as after a restart without
    /// persistence.
    pub fn flush_masters(&self) {
        for port in self.live_ports() {
            let role: String = query(port, &["INFO", "replication"]);
            if role.contains("role:master") {
                let _: String = query(port, &["FLUSHALL"]);
            }
        }
    }

    /// The ports of the nodes not killed.
    pub fn live_ports(&self) -> Vec<u16> {
        let killed = self.killed.lock().expect("killed").clone();
        self.ports
            .iter()
            .copied()
            .filter(|port| !killed.contains(port))
            .collect()
    }

    /// The `redis://` URLs of the nodes not killed.
    pub fn live_urls(&self) -> Vec<String> {
        self.live_ports()
            .iter()
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .collect()
    }

    /// Fails the master owning `key`'s slot over to its replica (`CLUSTER FAILOVER` on the
    /// replica, which the old master agrees to: no acknowledged write is lost); returns the
    /// promoted node's port once it reports itself a master and every node sees the new map.
    pub fn promote_replica_of(&self, key: &str) -> u16 {
        let (_, port) = self.owner_and_replica(key);
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
        for child in self.children.get_mut().expect("children") {
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

/// The client port of a `CLUSTER NODES` address (`ip:port@cport[,hostname]`).
fn node_port(address: &str) -> u16 {
    address
        .split(['@', ':'])
        .nth(1)
        .and_then(|port| port.parse().ok())
        .expect("node address")
}

/// Polls `command` on `port` until `ok(reply)` holds (10 s deadline).
fn wait_until(port: u16, command: &str, ok: impl Fn(&str) -> bool) {
    wait_until_within(port, command, Duration::from_secs(10), ok);
}

/// Polls `command` on `port` until `ok(reply)` holds or `within` passes (then panics).
fn wait_until_within(port: u16, command: &str, within: Duration, ok: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + within;
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
            "cluster node {port} not ready for {command:?} within {within:?}: {reply:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
