//! The one place that connects the services a process needs, from the shared argument groups in
//! [`crate::config`]: Redis (queue and locks), the product locks (mutex or Redlock), Postgres.
//!
//! - [`SharedRedis::connect`] opens the client (for dedicated connections: blocking pops,
//!   pub/sub) and one multiplexed, auto-reconnecting connection that a process shares between
//!   its queue ([`SharedRedis::queue`]) and its locks ([`SharedRedis::lock_client`]).
//! - When Redis does not answer, then the error comes back within a few seconds, naming the URL
//!   with its password masked.
//! - [`connect_product_locks`] picks the product locks from `LOCK_REDIS_URLS`: unset, the mutex
//!   on the queue's Redis (sharing its connection); one URL, the mutex on that server; several,
//!   Redlock over them, checked against the lock TTL. Workers and the API call it, so they lock a
//!   product in the same place.
//! - [`open_store_with`] opens the Postgres pool and either applies the migrations (safe when
//!   several processes start at once) or checks the schema is at least what this build needs.
//!
//! A binary's wiring, from its flattened argument groups:
//!
//! ```rust,no_run
//! use clap::Parser;
//! use lockstock::{
//!     config::{DatabaseArgs, LockArgs, QueueArgs, RedisArgs},
//!     services,
//! };
//! use lockstock_lock::LockOwner;
//!
//! #[derive(Debug, Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     redis: RedisArgs,
//!     #[command(flatten)]
//!     database: DatabaseArgs,
//!     #[command(flatten)]
//!     queue: QueueArgs,
//!     #[command(flatten)]
//!     locks: LockArgs,
//! }
//!
//! # async fn wire() -> anyhow::Result<()> {
//! let cli = Cli::parse();
//! let store = services::open_store_with(&cli.database, 8, false).await?;
//! let redis = services::connect_redis(&cli.redis).await?;
//! let queue = redis.queue(cli.queue.queue_config("worker-1"))?;
//! let owner = LockOwner::this_process("worker-1");
//! let product_locks = services::connect_product_locks(&redis, &cli.locks, owner).await?;
//! # let _ = (store, queue, product_locks);
//! # Ok(()) }
//! ```
//!
//! Redis Cluster: [`SharedRedis::connect`] asks the first node of `REDIS_URL` that answers
//! (one URL, or several seed nodes comma-separated) whether it is a cluster node (`INFO
//! cluster`). When it is, then the process holds one cluster connection instead, and hands out cluster queues (keys
//! mapped into one slot, see [`QueueConfig::for_cluster`]) and cluster lock clients; callers do
//! not change. The log says which mode was chosen. Only [`SharedRedis::connection`], raw
//! access, stays a connection to that node.

use std::time::Duration;

use lockstock_lock::{
    LockClient, LockConfig, LockError, LockOptions, LockOwner, Redlock, RedlockConfig,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio_util::sync::CancellationToken;

mod cluster;

use self::cluster::{ClusterRedis, seed_nodes};
use crate::{
    config::{DatabaseArgs, LockArgs, RedisArgs, mask_url},
    product_lock::ProductLocks,
    queue::{JobQueue, QueueConfig, QueueError},
    store::{OrderStore, StoreError},
};

/// Why a service could not be connected; every variant names what was being connected.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Redis did not answer or refused the URL.
    #[error("connecting to Redis at {url}")]
    Redis {
        /// The URL, password masked.
        url: String,
        /// The client's error.
        #[source]
        source: redis::RedisError,
    },
    /// The queue's settings are invalid (an empty key or worker id).
    #[error("configuring the queue")]
    Queue(#[source] QueueError),
    /// The lock settings are invalid (a bad key prefix).
    #[error("configuring the locks")]
    LockConfig(#[source] LockError),
    /// The single lock server named by `LOCK_REDIS_URLS` did not answer.
    #[error("connecting to the lock Redis at {url}")]
    LockRedis {
        /// The URL, password masked.
        url: String,
        /// The lock library's error.
        #[source]
        source: LockError,
    },
    /// Redlock could not be set up over the `LOCK_REDIS_URLS` masters (too few, an even
    /// number, or unreachable).
    #[error("configuring Redlock from LOCK_REDIS_URLS")]
    Redlock(#[source] LockError),
    /// The lock TTL is too short for Redlock's clock-drift and timeout allowances.
    #[error("checking --lock-ttl-ms against Redlock")]
    RedlockTtl(#[source] LockError),
    /// The Postgres URL is invalid.
    #[error("configuring Postgres at {url}")]
    Postgres {
        /// The URL, password masked.
        url: String,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// The process was told to stop while waiting for a service to answer.
    #[error("stopped while waiting for {service}")]
    Stopped {
        /// Which service was being waited for.
        service: String,
    },
    /// Postgres did not answer, or the migrations failed.
    #[error("migrating Postgres at {url}")]
    Migrate {
        /// The URL, password masked.
        url: String,
        /// The store's error.
        #[source]
        source: StoreError,
    },
}

impl ServiceError {
    /// Whether the service may answer if asked again: it did not answer, refused the connection
    /// or timed out (not a bad URL, bad credentials, a bad setting or a failing migration).
    pub fn is_retryable(&self) -> bool {
        fn redis_down(error: &redis::RedisError) -> bool {
            error.is_io_error()
                || error.is_connection_refusal()
                || error.is_timeout()
                || error.is_connection_dropped()
                || error.is_unrecoverable_error()
        }
        match self {
            ServiceError::Redis { source, .. } => redis_down(source),
            ServiceError::LockRedis { source, .. } | ServiceError::Redlock(source) => {
                matches!(source, LockError::Redis(error) if redis_down(error))
            }
            ServiceError::Migrate { source, .. } => source.is_transient(),
            _ => false,
        }
    }
}

/// The error and its causes on one line (`what: why: why`), for logs.
fn chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

/// Calls `connect` until the service answers, for a binary starting before its stores are up
/// (under honcho/foreman or `docker compose up`, in any order).
///
/// - When an attempt fails with a retryable error ([`ServiceError::is_retryable`]), then it is
///   logged (warn, with the whole cause chain and the next delay) and tried again after a wait
///   from `backon`'s exponential back-off: 200 ms doubling to 5 s, with jitter.
/// - When `limit` is `Some` and has passed, or the error is not retryable, then the last error
///   is returned; with `None` it waits indefinitely.
/// - When `stop` fires while waiting, then [`ServiceError::Stopped`].
pub async fn wait_for_service<T, F, Fut>(
    service: &str,
    limit: Option<Duration>,
    stop: &CancellationToken,
    mut connect: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    use backon::BackoffBuilder;
    let started = tokio::time::Instant::now();
    let mut delays = backon::ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build();
    let mut attempt = 0_u32;
    loop {
        attempt += 1;
        let error = tokio::select! {
            () = stop.cancelled() => return Err(ServiceError::Stopped { service: service.to_owned() }),
            result = connect() => match result {
                Ok(connected) => {
                    if attempt > 1 {
                        tracing::info!(service, attempt, waited_ms = started.elapsed().as_millis() as u64, "service answers");
                    }
                    return Ok(connected);
                }
                Err(error) => error,
            },
        };
        let delay = delays.next().unwrap_or(Duration::from_secs(5));
        let out_of_time = limit.is_some_and(|limit| started.elapsed() + delay > limit);
        if !error.is_retryable() || out_of_time {
            return Err(error);
        }
        tracing::warn!(
            service,
            attempt,
            error = %chain(&error),
            retry_in_ms = delay.as_millis() as u64,
            "service not answering yet; retrying"
        );
        tokio::select! {
            () = stop.cancelled() => return Err(ServiceError::Stopped { service: service.to_owned() }),
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// Shorthand for results of connecting services.
pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// A process's Redis: the client and the one shared connection its queue and locks use.
#[derive(Clone)]
pub struct SharedRedis {
    /// Opens dedicated connections (the queue's blocking pops, the locks' pub/sub).
    client: redis::Client,
    /// Multiplexed and auto-reconnecting; cloned into every user (on a cluster: to the first
    /// node, for raw access only).
    conn: ConnectionManager,
    /// Set when the first node said it is part of a Redis Cluster.
    cluster: Option<ClusterRedis>,
}

impl std::fmt::Debug for SharedRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRedis").finish_non_exhaustive()
    }
}

impl SharedRedis {
    /// Opens the client and the shared connection for `url`: one instance, or a Redis Cluster
    /// reached through any of its nodes (several seed nodes comma-separated).
    ///
    /// - When Redis does not answer, then [`ServiceError::Redis`] within a few seconds (2 s
    ///   connection and response timeouts, two reconnection attempts).
    /// - When the first node is a cluster node, then every queue and lock client handed out
    ///   runs on the cluster (see the module docs); the log says so either way.
    /// - When several URLs are given, then they are tried in turn and the first that answers
    ///   is asked; when it is not a cluster node, then [`ServiceError::Redis`]: seed lists only
    ///   make sense for a cluster. When none answers, then the last one's error.
    pub async fn connect(url: &str) -> Result<Self> {
        let mut nodes = seed_nodes(url);
        if nodes.is_empty() {
            nodes.push(url);
        }
        let failed = |source| ServiceError::Redis {
            url: mask_url(url),
            source,
        };
        // The first seed node that answers is asked about the cluster (it goes first).
        let mut answered = None;
        let mut last_error = None;
        for (index, node) in nodes.iter().enumerate() {
            match connect_one(node).await {
                Ok(connected) => {
                    answered = Some((index, connected));
                    break;
                }
                Err(error) => {
                    if nodes.len() > 1 {
                        tracing::warn!(node = %mask_url(node), %error, "Redis seed node not answering; trying the next");
                    }
                    last_error = Some(error);
                }
            }
        }
        let Some((index, (client, conn))) = answered else {
            return Err(failed(last_error.unwrap_or_else(|| {
                redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "no Redis URL"))
            })));
        };
        nodes.swap(0, index);
        let cluster = ClusterRedis::detect(&conn, &nodes).await.map_err(failed)?;
        Ok(Self {
            client,
            conn,
            cluster,
        })
    }

    /// Whether the process runs on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// A queue handle on the shared connection (on a cluster, with its keys mapped into one
    /// slot by [`QueueConfig::for_cluster`]).
    ///
    /// - When the config has an empty key or worker id, then [`ServiceError::Queue`].
    pub fn queue(&self, config: QueueConfig) -> Result<JobQueue> {
        match &self.cluster {
            None => JobQueue::new(self.client.clone(), self.conn.clone(), config),
            Some(cluster) => cluster.queue(config),
        }
        .map_err(ServiceError::Queue)
    }

    /// A lock client on the shared connection (hand-off messages over the first node; on a
    /// cluster a `PUBLISH` reaches every node).
    pub fn lock_client(&self, config: LockConfig) -> LockClient {
        match &self.cluster {
            None => LockClient::with_connection(self.client.clone(), self.conn.clone(), config),
            Some(cluster) => cluster.lock_client(self.client.clone(), config),
        }
    }

    /// The shared connection, for raw commands (on a cluster: to the first node only; see the
    /// module docs).
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }
}

/// A client and a shared connection to one Redis node (2 s timeouts, two reconnection attempts).
async fn connect_one(node: &str) -> redis::RedisResult<(redis::Client, ConnectionManager)> {
    let client = redis::Client::open(node)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2));
    let conn = ConnectionManager::new_with_config(client.clone(), config).await?;
    Ok((client, conn))
}

/// Connects the Redis named by `--redis-url` / `REDIS_URL`.
pub async fn connect_redis(args: &RedisArgs) -> Result<SharedRedis> {
    SharedRedis::connect(&args.redis_url).await
}

/// The product locks that `--lock-redis-urls` / `LOCK_REDIS_URLS` asks for, owned by `owner`
/// (see the module docs for the three cases).
///
/// - When the prefix is invalid, then [`ServiceError::LockConfig`]; when the one lock server
///   does not answer, then [`ServiceError::LockRedis`]; when Redlock cannot be set up or the TTL
///   is too short for it, then [`ServiceError::Redlock`] / [`ServiceError::RedlockTtl`].
pub async fn connect_product_locks(
    redis: &SharedRedis,
    args: &LockArgs,
    owner: LockOwner,
) -> Result<ProductLocks> {
    let config = args.lock_config(owner).map_err(ServiceError::LockConfig)?;
    match args.lock_servers().as_slice() {
        [] => Ok(redis.lock_client(config).into()),
        [url] => LockClient::connect(url, config)
            .await
            .map(ProductLocks::from)
            .map_err(|source| ServiceError::LockRedis {
                url: mask_url(url),
                source,
            }),
        urls => {
            let redlock = connect_redlock(urls, config).await?;
            redlock
                .check_options(&LockOptions::with_ttl(args.lock_ttl()))
                .map_err(ServiceError::RedlockTtl)?;
            tracing::info!(
                instances = ?redlock.instances(),
                quorum = redlock.quorum(),
                "product locks use Redlock"
            );
            Ok(redlock.into())
        }
    }
}

/// The lock client whose metrics and inspection describe `product_locks`: the mutex's own client
/// (so its acquisitions are counted where they happen), or, under Redlock, a client on the
/// queue's Redis with the same key space and owner (which sees no product locks).
///
/// - When the prefix is invalid, then [`ServiceError::LockConfig`].
pub fn reporting_lock_client(
    redis: &SharedRedis,
    product_locks: &ProductLocks,
    args: &LockArgs,
    owner: LockOwner,
) -> Result<LockClient> {
    match product_locks {
        ProductLocks::Single(client) => Ok(client.clone()),
        ProductLocks::Redlock(_) => {
            Ok(redis.lock_client(args.lock_config(owner).map_err(ServiceError::LockConfig)?))
        }
    }
}

/// Redlock over `urls` with the key space and owner of `config`.
async fn connect_redlock(urls: &[&str], config: LockConfig) -> Result<Redlock> {
    let config = RedlockConfig {
        keys: config.keys,
        owner: config.owner,
        ..RedlockConfig::default()
    };
    Redlock::connect(urls, config)
        .await
        .map_err(ServiceError::Redlock)
}

/// Opens a pool of up to `max_connections` to the Postgres named by `--database-url` /
/// `DATABASE_URL`, applying the migrations when `migrate` is true (safe when several processes
/// start at once); otherwise checking that the schema has every migration this build needs
/// ([`crate::store::check_schema`]; newer ones are fine), so migrations are an explicit step
/// (`lockctl migrate`, or `--migrate`).
///
/// - When the URL is invalid, then [`ServiceError::Postgres`]; when Postgres does not answer
///   or a migration fails, then [`ServiceError::Migrate`]; both name the database with its
///   password masked.
/// - When the schema is behind, then [`ServiceError::Migrate`] whose cause names the missing
///   migrations.
pub async fn open_store_with(
    args: &DatabaseArgs,
    max_connections: u32,
    migrate: bool,
) -> Result<OrderStore> {
    let url = &args.database_url;
    let store = OrderStore::connect_lazy(url, max_connections).map_err(|source| {
        ServiceError::Postgres {
            url: mask_url(url),
            source,
        }
    })?;
    let checked = if migrate {
        store.migrate().await
    } else {
        crate::store::check_schema(store.pool()).await
    };
    checked.map_err(|source| ServiceError::Migrate {
        url: mask_url(url),
        source,
    })?;
    Ok(store)
}
