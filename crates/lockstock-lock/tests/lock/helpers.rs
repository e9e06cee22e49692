//! Shared set-up: a throwaway `redis-server` and a fresh key prefix per test.

use std::time::{Duration, Instant};

use lockstock_lock::{LockClient, LockConfig, LockGuard, LockOptions, LockOwner};
use redis::aio::ConnectionManager;

use crate::redis_server::RedisServer;

/// A test's own Redis: a throwaway server (killed when the test ends), a unique prefix, and
/// clients on it.
pub struct TestRedis {
    pub url: String,
    pub prefix: String,
    _server: Option<RedisServer>,
}

impl TestRedis {
    pub fn new() -> Self {
        let server = RedisServer::start();
        Self {
            url: server.url(),
            prefix: format!("test-{}", uuid::Uuid::new_v4().simple()),
            _server: Some(server),
        }
    }

    /// On a server the test manages itself (to stop or restart it).
    pub fn on(url: String) -> Self {
        Self {
            url,
            prefix: format!("test-{}", uuid::Uuid::new_v4().simple()),
            _server: None,
        }
    }

    pub fn config(&self, owner: &str) -> LockConfig {
        LockConfig::default()
            .with_prefix(self.prefix.clone())
            .expect("valid prefix")
            .with_owner(LockOwner::this_process(owner))
    }

    /// A new client with its own connection (as a separate process would have).
    pub async fn client(&self, owner: &str) -> LockClient {
        LockClient::connect(&self.url, self.config(owner))
            .await
            .expect("connect to test redis")
    }

    /// A plain connection for poking at keys directly.
    pub async fn raw(&self) -> ConnectionManager {
        let client = redis::Client::open(self.url.as_str()).expect("url");
        ConnectionManager::new(client).await.expect("connect")
    }

    pub fn lock_key(&self, resource: &str) -> String {
        format!("{}:{{{resource}}}:lock", self.prefix)
    }

    pub fn queue_key(&self, resource: &str) -> String {
        format!("{}:{{{resource}}}:queue", self.prefix)
    }
}

/// Polls `condition` until it holds or `within` passes; panics with `what` on timeout.
pub async fn wait_for<F, Fut>(what: &str, within: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if condition().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Length of a Redis list.
pub async fn llen(conn: &ConnectionManager, key: &str) -> usize {
    let mut conn = conn.clone();
    redis::cmd("LLEN")
        .arg(key)
        .query_async(&mut conn)
        .await
        .expect("LLEN")
}

/// Arrange step shared by the hand-off tests: client `a` holds `resource`; client `b` waits for
/// it (up to `wait`) in a spawned task and is queued in Redis when this returns.
pub async fn held_with_a_queued_waiter(
    redis: &TestRedis,
    resource: &str,
    wait: Duration,
) -> (
    LockGuard,
    tokio::task::JoinHandle<lockstock_lock::Result<LockGuard>>,
) {
    let (a, b) = (redis.client("a").await, redis.client("b").await);
    let held = a
        .try_acquire(resource, &LockOptions::default())
        .await
        .expect("try_acquire")
        .expect("the resource is free");
    let owned = resource.to_owned();
    let waiter =
        tokio::spawn(async move { b.acquire(&owned, &LockOptions::default(), wait).await });
    let raw = redis.raw().await;
    let queue = redis.queue_key(resource);
    wait_for("b to queue", Duration::from_secs(2), || async {
        llen(&raw, &queue).await == 1
    })
    .await;
    (held, waiter)
}
