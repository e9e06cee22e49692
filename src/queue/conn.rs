//! The queue's connections: one Redis server, or a Redis Cluster.
//!
//! - When the queue runs on one server, then every non-blocking command goes over the process's
//!   shared [`ConnectionManager`], and `BLMOVE` over a dedicated multiplexed connection.
//! - When it runs on a cluster, then commands are routed by their first key's slot. The queue's
//!   keys all carry the pending key's hash tag (see [`super::QueueKeys`]), so they live in one
//!   slot: every script and pipeline runs whole on one node, and the `SCAN` for processing lists
//!   is sent to that node.

use std::time::Duration;

use redis::{
    AsyncConnectionConfig, Client, Cmd, FromRedisValue, Pipeline, RedisFuture, RedisResult, Value,
    aio::{ConnectionLike, ConnectionManager, MultiplexedConnection},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
    cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr},
};

/// The queue's shared connection: one server or a cluster. Cheap to clone.
#[derive(Clone)]
pub(super) enum QueueConnection {
    /// One server (multiplexed, auto-reconnecting).
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl QueueConnection {
    /// Runs `cmd` on the node serving `key`'s slot (for keyless commands such as `SCAN`, which a
    /// cluster would otherwise send to a random node).
    pub(super) async fn query_at<T: FromRedisValue>(
        &mut self,
        cmd: &Cmd,
        key: &str,
    ) -> RedisResult<T> {
        match self {
            QueueConnection::Single(conn) => cmd.query_async(conn).await,
            QueueConnection::Cluster(conn) => {
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                    Route::with_key(key, SlotAddr::Master),
                ));
                let value = conn.route_command(cmd.clone(), route).await?;
                Ok(T::from_redis_value(value)?)
            }
        }
    }
}

impl ConnectionLike for QueueConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            QueueConnection::Single(conn) => conn.req_packed_command(cmd),
            QueueConnection::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            QueueConnection::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            QueueConnection::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            QueueConnection::Single(conn) => conn.get_db(),
            QueueConnection::Cluster(conn) => conn.get_db(),
        }
    }
}

/// Opens the dedicated connection for blocking moves.
#[derive(Clone)]
pub(super) enum Opener {
    /// A plain connection to the one server.
    Single(Box<Client>),
    /// A cluster connection (routed to the pending key's node).
    Cluster(Box<ClusterClient>),
}

/// The dedicated connection for blocking moves (no response timeout of its own: the queue puts a
/// deadline on each call).
pub(super) enum Blocking {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Opener {
    pub(super) async fn open(&self) -> RedisResult<Blocking> {
        match self {
            Opener::Single(client) => {
                let config = AsyncConnectionConfig::new().set_response_timeout(None);
                Ok(Blocking::Single(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                ))
            }
            Opener::Cluster(client) => Ok(Blocking::Cluster(client.get_async_connection().await?)),
        }
    }
}

impl Blocking {
    pub(super) async fn query<T: FromRedisValue>(&mut self, cmd: &Cmd) -> RedisResult<T> {
        match self {
            Blocking::Single(conn) => cmd.query_async(conn).await,
            Blocking::Cluster(conn) => cmd.query_async(conn).await,
        }
    }
}

/// A cluster client for the queue: `shared` for every command, `blocking` (response timeout far
/// above any block) for `BLMOVE`.
pub(super) fn cluster_clients(nodes: &[&str]) -> RedisResult<(ClusterClient, ClusterClient)> {
    let shared = ClusterClient::builder(nodes.iter().copied())
        .connection_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(2))
        .retries(2)
        .build()?;
    let blocking = ClusterClient::builder(nodes.iter().copied())
        .connection_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(24 * 3600))
        .retries(0)
        .build()?;
    Ok((shared, blocking))
}
