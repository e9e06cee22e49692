//! [`LockConnection`]: the one connection type every lock primitive talks over — one Redis
//! server, or a Redis Cluster.
//!
//! - When the client was built on one server, then commands go over one multiplexed,
//!   auto-reconnecting [`ConnectionManager`].
//! - When it was built on a cluster, then each command (each script call) is routed by the slot
//!   of its first key. Every key one script touches shares its resource's `{R}` hash tag (see
//!   [`super::KeySpace`]), so every script runs whole on one node.
//! - Pub/sub hand-off messages travel over a plain connection to one cluster node: a `PUBLISH`
//!   on any node of a Redis Cluster reaches subscribers on every node.
//! - [`super::LockClient::list_held`] scans every master of a cluster in turn (a `SCAN` sees one
//!   node only); a slot migrating meanwhile may hide or repeat a key, as any `SCAN` may.

use std::{fmt, time::Duration};

use redis::{
    Cmd, Pipeline, RedisFuture, Value,
    aio::{ConnectionLike, ConnectionManager},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
    cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo},
};

use super::{
    client::LockClient,
    error::{LockError, Result},
    options::LockConfig,
};

/// A connection to one Redis server or to a Redis Cluster. Cheap to clone (clones share the
/// underlying connections).
#[derive(Clone)]
pub enum LockConnection {
    /// One server, over an auto-reconnecting multiplexed connection.
    Single(ConnectionManager),
    /// A Redis Cluster; commands are routed by their first key's slot.
    Cluster(ClusterConnection),
}

impl fmt::Debug for LockConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockConnection::Single(_) => f.write_str("LockConnection::Single"),
            LockConnection::Cluster(_) => f.write_str("LockConnection::Cluster"),
        }
    }
}

impl LockConnection {
    /// Whether this is a cluster connection.
    pub fn is_cluster(&self) -> bool {
        matches!(self, LockConnection::Cluster(_))
    }

    /// Connects to a Redis Cluster through any of its `nodes` (`redis://host:port` each); each
    /// command may take `timeout`.
    ///
    /// - When a URL does not parse, then [`LockError::InvalidArgument`].
    /// - When no node answers within about three times `timeout`, then
    ///   [`LockError::Connection`].
    pub async fn cluster(nodes: &[&str], timeout: Duration) -> Result<Self> {
        if nodes.is_empty() {
            return Err(LockError::InvalidArgument(
                "a cluster connection needs at least one node URL".into(),
            ));
        }
        let client = ClusterClient::builder(nodes.iter().copied())
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(2)
            .build()
            .map_err(|e| {
                LockError::InvalidArgument(format!(
                    "cannot use the cluster node URLs: {}",
                    e.detail().unwrap_or("invalid URL")
                ))
            })?;
        let conn = tokio::time::timeout(timeout * 3, client.get_async_connection())
            .await
            .map_err(|_| {
                LockError::Connection(redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connecting to the Redis Cluster timed out",
                )))
            })??;
        Ok(LockConnection::Cluster(conn))
    }
}

impl LockConnection {
    /// Every key matching `pattern`: one `SCAN` walk on a single server, one per master on a
    /// cluster (the masters as the connection's slot map knows them).
    pub(crate) async fn scan_every_master(&self, pattern: &str) -> Result<Vec<String>> {
        match self {
            LockConnection::Single(conn) => {
                scan_walk(pattern, |scan| {
                    let mut conn = conn.clone();
                    async move { scan.query_async(&mut conn).await }
                })
                .await
            }
            LockConnection::Cluster(conn) => {
                let mut conn = conn.clone();
                let masters = conn
                    .route_command(
                        redis::cmd("PING"),
                        RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None)),
                    )
                    .await?;
                let Value::Map(masters) = masters else {
                    return Err(LockError::InvalidArgument(
                        "the cluster did not name its masters".into(),
                    ));
                };
                let mut keys = Vec::new();
                for (address, _) in masters {
                    let address: String =
                        redis::from_redis_value(address).map_err(redis::RedisError::from)?;
                    let Some((host, port)) = address
                        .rsplit_once(':')
                        .and_then(|(host, port)| Some((host.to_owned(), port.parse().ok()?)))
                    else {
                        continue;
                    };
                    keys.extend(
                        scan_walk(pattern, |scan| {
                            let mut conn = conn.clone();
                            let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                                host: host.clone(),
                                port,
                            });
                            async move {
                                let reply = conn.route_command(scan, route).await?;
                                Ok(redis::from_redis_value(reply)?)
                            }
                        })
                        .await?,
                    );
                }
                Ok(keys)
            }
        }
    }
}

/// Walks a `SCAN ... MATCH pattern` cursor to its end with `send`.
async fn scan_walk<F, Fut>(pattern: &str, mut send: F) -> Result<Vec<String>>
where
    F: FnMut(Cmd) -> Fut,
    Fut: std::future::Future<Output = redis::RedisResult<(u64, Vec<String>)>>,
{
    let mut cursor: u64 = 0;
    let mut found = Vec::new();
    loop {
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(500);
        let (next, keys) = send(scan).await?;
        found.extend(keys);
        if next == 0 {
            return Ok(found);
        }
        cursor = next;
    }
}

impl From<ConnectionManager> for LockConnection {
    fn from(conn: ConnectionManager) -> Self {
        LockConnection::Single(conn)
    }
}

impl From<ClusterConnection> for LockConnection {
    fn from(conn: ClusterConnection) -> Self {
        LockConnection::Cluster(conn)
    }
}

impl ConnectionLike for LockConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            LockConnection::Single(conn) => conn.req_packed_command(cmd),
            LockConnection::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            LockConnection::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            LockConnection::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            LockConnection::Single(conn) => conn.get_db(),
            LockConnection::Cluster(conn) => conn.get_db(),
        }
    }
}

impl LockClient {
    /// Connects to a Redis Cluster through any of its `nodes` (`redis://host:port` each): every
    /// primitive's scripts then run on the node owning the resource's slot, and hand-off
    /// messages are received over one pub/sub connection to the first node.
    ///
    /// ```rust,no_run
    /// use lockstock_lock::{LockClient, LockConfig};
    ///
    /// # async fn demo() -> Result<(), lockstock_lock::LockError> {
    /// let nodes = ["redis://10.0.0.1:7000", "redis://10.0.0.2:7000", "redis://10.0.0.3:7000"];
    /// let locks = LockClient::connect_cluster(&nodes, LockConfig::default()).await?;
    /// # let _ = locks; Ok(()) }
    /// ```
    pub async fn connect_cluster(nodes: &[&str], config: LockConfig) -> Result<Self> {
        let conn = LockConnection::cluster(nodes, config.response_timeout).await?;
        let first = nodes.first().copied().unwrap_or_default();
        let pubsub = redis::Client::open(first).map_err(|e| {
            LockError::InvalidArgument(format!(
                "cannot parse the cluster node URL: {}",
                e.detail().unwrap_or("invalid URL")
            ))
        })?;
        Ok(Self::with_connection(pubsub, conn, config))
    }
}
