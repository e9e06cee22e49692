//! Redis Cluster detection for [`super::SharedRedis`]: the same `REDIS_URL` names one server or
//! any node(s) of a cluster, and the process finds out which.
//!
//! - When the first node that answers (see `SharedRedis::connect`) says `cluster_enabled:1` in
//!   `INFO cluster`, then one cluster connection over every seed node is opened and shared by
//!   the queue and the lock clients; commands are routed by their key's slot, and the
//!   connection follows slot moves and failovers (it refreshes the slot map on `MOVED` and on
//!   connection errors).
//! - When it says `cluster_enabled:0`, or `INFO` is not allowed (a restricted ACL user), then the
//!   process runs on one server, as before.
//! - Either way the log says which mode was chosen, naming the nodes with passwords masked.

use std::{collections::HashSet, time::Duration};

use lockstock_lock::{LockClient, LockConfig, LockConnection};
use redis::{
    ErrorKind, RedisError, RedisResult, aio::ConnectionManager, cluster::ClusterClient,
    cluster_async::ClusterConnection,
};

use crate::{
    config::mask_url,
    queue::{JobQueue, QueueConfig, QueueError},
};

/// The URLs in `REDIS_URL`: one, or several seed nodes comma-separated (blanks dropped).
pub(super) fn seed_nodes(url: &str) -> Vec<&str> {
    url.split(',')
        .map(str::trim)
        .filter(|node| !node.is_empty())
        .collect()
}

/// A process's connection to a Redis Cluster.
#[derive(Clone)]
pub(super) struct ClusterRedis {
    /// The seed nodes (the queue's blocking connections are opened through them).
    nodes: Vec<String>,
    /// Routed by slot; shared by the queue and the lock clients.
    conn: ClusterConnection,
}

impl ClusterRedis {
    /// Asks `nodes[0]`, the node that answered first (over `first`), whether it is a cluster
    /// node; when it is, then opens a cluster connection through `nodes` and every node it lists.
    ///
    /// - When several nodes are given but the first is not a cluster node, then an error.
    pub(super) async fn detect(
        first: &ConnectionManager,
        nodes: &[&str],
    ) -> RedisResult<Option<Self>> {
        let masked: Vec<String> = nodes.iter().map(|node| mask_url(node)).collect();
        let mut conn = first.clone();
        let info = redis::cmd("INFO")
            .arg("cluster")
            .query_async::<String>(&mut conn)
            .await;
        let enabled = match &info {
            Ok(info) => cluster_enabled(info),
            Err(error) => {
                tracing::debug!(%error, "INFO cluster refused; assuming a single Redis");
                false
            }
        };
        if !enabled {
            if nodes.len() > 1 {
                return Err(RedisError::from((
                    ErrorKind::InvalidClientConfig,
                    "several Redis URLs name the seed nodes of a cluster, but the first is not a cluster node",
                )));
            }
            tracing::info!(mode = "single", redis = ?masked, "Redis: one server");
            return Ok(None);
        }
        let nodes = with_known_nodes(&mut conn, nodes).await;
        let client = ClusterClient::builder(nodes.iter().map(String::as_str))
            .connection_timeout(Duration::from_secs(2))
            .response_timeout(Duration::from_secs(2))
            .retries(3)
            .build()?;
        let conn = client.get_async_connection().await?;
        tracing::info!(mode = "cluster", seeds = ?masked, "Redis: a cluster");
        Ok(Some(Self { nodes, conn }))
    }

    /// A queue on the cluster, its keys mapped into one slot.
    pub(super) fn queue(&self, config: QueueConfig) -> Result<JobQueue, QueueError> {
        let config = config.for_cluster();
        tracing::debug!(pending = %config.pending_key, dead = %config.dead_key, "queue keys on the cluster");
        let nodes: Vec<&str> = self.nodes.iter().map(String::as_str).collect();
        JobQueue::on_cluster(&nodes, self.conn.clone(), config)
    }

    /// A lock client on the cluster; `pubsub` (the node that answered first) carries hand-off
    /// messages.
    pub(super) fn lock_client(&self, pubsub: redis::Client, config: LockConfig) -> LockClient {
        LockClient::with_connection(pubsub, LockConnection::Cluster(self.conn.clone()), config)
    }
}

/// `seeds`, then every other node `CLUSTER NODES` (asked over `first`) lists, as URLs built on
/// the first seed; only `seeds` when the command is refused.
async fn with_known_nodes(first: &mut ConnectionManager, seeds: &[&str]) -> Vec<String> {
    let mut nodes: Vec<String> = seeds.iter().map(|node| (*node).to_owned()).collect();
    let listed = match redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async::<String>(first)
        .await
    {
        Ok(listed) => listed,
        Err(error) => {
            tracing::debug!(%error, "CLUSTER NODES refused; using the seed nodes only");
            return nodes;
        }
    };
    // Nodes already named, as `host:port` (a URL without a port means Redis's 6379).
    let mut named: HashSet<String> = seeds
        .iter()
        .filter_map(|seed| url::Url::parse(seed).ok())
        .filter_map(|url| {
            Some(format!(
                "{}:{}",
                url.host_str()?,
                url.port().unwrap_or(6379)
            ))
        })
        .collect();
    for address in node_addresses(&listed) {
        if !named.insert(address.clone()) {
            continue;
        }
        if let Some(url) = seeds.first().and_then(|seed| node_url(seed, &address)) {
            nodes.push(url);
        }
    }
    nodes
}

/// The `host:port` of every node a `CLUSTER NODES` reply lists that is not failed, not without
/// an address and not still in the handshake.
fn node_addresses(nodes: &str) -> Vec<String> {
    nodes
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let _id = fields.next()?;
            let address = fields.next()?;
            let flags = fields.next()?;
            let unusable = flags
                .split(',')
                .any(|flag| matches!(flag, "fail" | "fail?" | "noaddr" | "handshake"));
            // `ip:port@cport[,hostname]`: the client address is before the `@`.
            let address = address.split(['@', ',']).next()?;
            (!unusable && address.contains(':') && !address.starts_with(':'))
                .then(|| address.to_owned())
        })
        .collect()
}

/// `seed` with its host and port replaced by `address` (`host:port`); `None` when either does
/// not parse.
fn node_url(seed: &str, address: &str) -> Option<String> {
    let (host, port) = address.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let mut url = url::Url::parse(seed).ok()?;
    url.set_host(Some(host.trim_start_matches('[').trim_end_matches(']')))
        .ok()?;
    url.set_port(Some(port)).ok()?;
    Some(url.to_string())
}

/// Whether an `INFO cluster` reply says the node runs in cluster mode.
fn cluster_enabled(info: &str) -> bool {
    info.lines().any(|line| line.trim() == "cluster_enabled:1")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seeds split on commas, blanks dropped; the INFO field is read exactly.
    #[test]
    fn seeds_and_the_cluster_flag_are_read() {
        assert_eq!(
            seed_nodes(" redis://a:1, ,redis://b:2 "),
            ["redis://a:1", "redis://b:2"]
        );
        assert_eq!(seed_nodes("redis://a:1"), ["redis://a:1"]);
        assert!(cluster_enabled("# Cluster\r\ncluster_enabled:1\r\n"));
        assert!(!cluster_enabled("# Cluster\r\ncluster_enabled:0\r\n"));
    }

    /// Live nodes of a `CLUSTER NODES` reply become URLs with the seed's credentials.
    #[test]
    fn known_nodes_are_read_and_reached_like_the_seed() {
        let reply = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001,node-b master - 0 0 2 connected 5461-10922
c3 127.0.0.1:7002@17002 master,fail - 0 0 3 connected
d4 :0@0 slave,noaddr c3 0 0 3 disconnected
e5 127.0.0.1:7003@17003 slave a1 0 0 1 connected
";
        assert_eq!(
            node_addresses(reply),
            ["127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7003"]
        );
        assert_eq!(
            node_url("rediss://u:p@10.0.0.1:6379/?insecure=1", "10.0.0.2:7001").as_deref(),
            Some("rediss://u:p@10.0.0.2:7001/?insecure=1")
        );
        assert_eq!(node_url("redis://a:1", "nonsense"), None);
    }
}
