//! [`LockClient`]: the handle every primitive is reached through — one shared Redis connection
//! (one server or a cluster), the owner record, the hand-off listener, the metrics — plus
//! inspection and administration of mutexes.
//!
//! - When a client is cloned, then the clones share everything: one connection, one pub/sub
//!   subscription, one set of counters.
//! - When Redis does not answer at connect time, then [`LockClient::connect`] fails within about
//!   `config.connection_timeout`; later, the connection reconnects by itself and calls in
//!   between fail with [`LockError::Connection`].
//! - Every script call is counted as one round trip ([`LockClient::round_trips`]), whether sent
//!   through a `ScriptInvocation` or, for the two calls of the uncontended cycle, as an `EVALSHA`
//!   built in place.
//! - The mutex's own operations (`acquire`, `try_acquire`, `raise_fence_floor`) live in the
//!   `mutex` module; `with_lock` in `with_lock.rs`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use redis::{
    Cmd, ErrorKind, FromRedisValue, Script, ScriptInvocation, ServerErrorKind,
    aio::ConnectionManager,
};

use super::{
    conn::LockConnection,
    error::{LockError, Result},
    inspect::LockInfo,
    keys::KeySpace,
    metrics::LockMetrics,
    notify::Notifier,
    options::LockConfig,
};

/// A handle to the lock service: cheap to clone, shared by every lock of a process.
#[derive(Debug, Clone)]
pub struct LockClient {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    /// The shared connection for every command: one server (multiplexed, auto-reconnecting) or
    /// a Redis Cluster.
    pub(crate) conn: LockConnection,
    /// Settings.
    pub(crate) config: LockConfig,
    /// The owner record as stored in Redis.
    pub(crate) owner_json: String,
    /// Hand-off messages for local waiters.
    pub(crate) notifier: Arc<Notifier>,
    /// Commands this client has sent (one per script call), for benchmarks and metrics.
    round_trips: AtomicU64,
    /// Acquisitions, timeouts, losses, wait and hold times (shared with the guards).
    metrics: Arc<LockMetrics>,
}

impl LockClient {
    /// Connects to Redis at `url` (`redis://`, `rediss://` for TLS, user and password in the
    /// URL) with one multiplexed, auto-reconnecting connection.
    ///
    /// Fails with [`LockError::Connection`] within about `config.connection_timeout` when Redis
    /// does not answer, and with [`LockError::InvalidArgument`] for a URL that does not parse.
    pub async fn connect(url: &str, config: LockConfig) -> Result<Self> {
        let client = redis::Client::open(url).map_err(|e| {
            LockError::InvalidArgument(format!(
                "cannot parse the Redis URL: {}",
                e.detail().unwrap_or("invalid URL")
            ))
        })?;
        let manager_config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connection_timeout))
            .set_response_timeout(Some(config.response_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let conn = tokio::time::timeout(
            config.connection_timeout * 3,
            ConnectionManager::new_with_config(client.clone(), manager_config),
        )
        .await
        .map_err(|_| {
            LockError::Connection(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connecting to Redis timed out",
            )))
        })??;
        Ok(Self::with_connection(client, conn, config))
    }

    /// Builds a client on an existing connection (so one process shares one connection between
    /// locks and other uses): a [`ConnectionManager`] or a cluster [`LockConnection`]. `client`
    /// opens the pub/sub connection for hand-offs when needed (on a cluster: any one node).
    pub fn with_connection(
        client: redis::Client,
        conn: impl Into<LockConnection>,
        config: LockConfig,
    ) -> Self {
        let conn = conn.into();
        let owner_json = config.owner.to_json();
        Self {
            inner: Arc::new(Inner {
                conn,
                owner_json,
                notifier: Notifier::new(client),
                config,
                round_trips: AtomicU64::new(0),
                metrics: Arc::default(),
            }),
        }
    }

    /// The key space this client uses.
    pub fn keys(&self) -> &KeySpace {
        &self.inner.config.keys
    }

    /// The client's settings.
    pub fn config(&self) -> &LockConfig {
        &self.inner.config
    }

    /// A clone of the shared connection (for callers that need plain Redis commands).
    pub fn connection(&self) -> LockConnection {
        self.inner.conn.clone()
    }

    /// Who holds `resource` right now, if anyone.
    pub async fn inspect(&self, resource: &str) -> Result<Option<LockInfo>> {
        let keys = self.keys().resource(resource)?;
        super::inspect::inspect(&self.inner.conn, &keys).await
    }

    /// Whether `resource` is locked right now.
    pub async fn is_locked(&self, resource: &str) -> Result<bool> {
        Ok(self.inspect(resource).await?.is_some())
    }

    /// Every lock held under this client's prefix (a `SCAN`, for operators; not atomic).
    pub async fn list_held(&self) -> Result<Vec<LockInfo>> {
        super::inspect::list(&self.inner.conn, self.keys()).await
    }

    /// How many commands this client has sent to Redis so far (script calls and inspections;
    /// the pub/sub subscription is not counted).
    pub fn round_trips(&self) -> u64 {
        self.inner.round_trips.load(Ordering::Relaxed)
    }

    /// What this client's acquisitions and guards did so far (counters and histograms).
    pub fn metrics(&self) -> &LockMetrics {
        &self.inner.metrics
    }

    /// The metrics handle, for guards that outlive a borrow of the client.
    pub(crate) fn metrics_handle(&self) -> Arc<LockMetrics> {
        self.inner.metrics.clone()
    }

    /// Runs one script call over the shared connection, counting it as one round trip.
    pub(crate) async fn run<T: FromRedisValue>(
        &self,
        invocation: &mut ScriptInvocation<'_>,
    ) -> Result<T> {
        self.inner.round_trips.fetch_add(1, Ordering::Relaxed);
        let mut conn = self.inner.conn.clone();
        Ok(invocation.invoke_async(&mut conn).await?)
    }

    /// Runs `script` as one `EVALSHA` of `key_count` keys whose keys and arguments `fill`
    /// writes straight into the command, counting it as one round trip; on `NOSCRIPT` (first use
    /// on a server, or its script cache emptied) the script is loaded and the call sent again.
    ///
    /// The same call as [`LockClient::run`] without a `ScriptInvocation`, which holds each
    /// argument in a buffer of its own and copies them all into the command it sends: the two
    /// calls of every uncontended cycle (the mutex's acquire and release) go this way.
    pub(crate) async fn run_evalsha<T: FromRedisValue>(
        &self,
        script: &Script,
        key_count: usize,
        fill: impl FnOnce(&mut Cmd),
    ) -> Result<T> {
        self.inner.round_trips.fetch_add(1, Ordering::Relaxed);
        let mut cmd = Cmd::with_capacity(12, 256);
        cmd.arg("EVALSHA").arg(script.get_hash()).arg(key_count);
        fill(&mut cmd);
        let mut conn = self.inner.conn.clone();
        match cmd.query_async(&mut conn).await {
            Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                script.load_async(&mut conn).await?;
                Ok(cmd.query_async(&mut conn).await?)
            }
            reply => Ok(reply?),
        }
    }

    /// The owner description this client records beside its locks.
    pub(crate) fn owner_json(&self) -> &str {
        &self.inner.owner_json
    }
}
