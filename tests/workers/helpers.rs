//! Test environment: a Redis server, a fresh database, worker processes, and data checks.

use std::{
    collections::HashMap,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use lockstock::{
    order::{ProductId, PurchaseOrder, Quantity},
    queue::{JobQueue, QueueConfig},
    services::SharedRedis,
    store::OrderStore,
};
use redis::aio::ConnectionManager;
use sqlx::PgPool;

use crate::redis_server::{RedisServer, free_port};

/// Three independent lock instances (Redlock) and their `--lock-redis-urls` value.
pub fn lock_instances() -> (Vec<RedisServer>, String) {
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let urls = servers
        .iter()
        .map(RedisServer::url)
        .collect::<Vec<_>>()
        .join(",");
    (servers, urls)
}

/// One test's world.
pub struct Env {
    pub redis: RedisServer,
    pub prefix: String,
    pub database_url: String,
    pub store: OrderStore,
    pub pool: PgPool,
    logs: PathBuf,
}

impl Env {
    /// A fresh Redis server and key prefix over the test's fresh database.
    pub async fn new(pool: PgPool) -> Self {
        let database = pool
            .connect_options()
            .get_database()
            .expect("test database name")
            .to_owned();
        let base = std::env::var("DATABASE_URL").expect("DATABASE_URL (scripts/test exports it)");
        let mut url = url::Url::parse(&base).expect("DATABASE_URL parses");
        url.set_path(&format!("/{database}"));
        Self::on(pool, url.to_string())
    }

    /// A fresh Redis server and key prefix over the `postgres` database of a throwaway cluster,
    /// migrated here.
    pub async fn on_server(postgres: &crate::postgres_server::PostgresServer) -> Self {
        let url = postgres.url_via("127.0.0.1", "postgres", "");
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await
            .expect("connect to the throwaway Postgres");
        lockstock::store::MIGRATOR
            .run(&pool)
            .await
            .expect("migrate the throwaway Postgres");
        Self::on(pool, url)
    }

    /// A fresh Redis server and key prefix over the migrated database at `database_url`, which
    /// `pool` connects to (e.g. a throwaway Postgres cluster the test stops and starts).
    pub fn on(pool: PgPool, database_url: String) -> Self {
        let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
        let logs = std::env::temp_dir().join(format!("lockstock-tests/{prefix}"));
        std::fs::create_dir_all(&logs).expect("log dir");
        Self {
            redis: RedisServer::start(),
            database_url,
            store: OrderStore::new(pool.clone()),
            pool,
            prefix,
            logs,
        }
    }

    pub fn pending_key(&self) -> String {
        format!("{}:orders:pending", self.prefix)
    }

    pub fn dead_key(&self) -> String {
        format!("{}:orders:dead", self.prefix)
    }

    pub fn lock_prefix(&self) -> String {
        format!("{}-locks", self.prefix)
    }

    /// The lock key of a product.
    pub fn lock_key(&self, product: i32) -> String {
        format!("{}:{{product:{product}}}:lock", self.lock_prefix())
    }

    /// Starts binary `exe` as process `name` with the test's Redis, database (unless `args`
    /// name another), queue keys and lock prefix, then `args`; its output goes to the test's log
    /// directory.
    fn spawn(&self, exe: &str, name: &str, args: &[&str]) -> WorkerProc {
        let log = self.logs.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("process log");
        let database: &[&str] = if args.contains(&"--database-url") {
            &[]
        } else {
            &["--database-url", &self.database_url]
        };
        let child = Command::new(exe)
            .args(["--redis-url", &self.redis.url()])
            .args(database)
            .args([
                "--queue-key",
                &self.pending_key(),
                "--dead-key",
                &self.dead_key(),
            ])
            .args(["--lock-prefix", &self.lock_prefix()])
            .args(args)
            .env_remove("API_TOKEN")
            .env_remove("LOCK_REDIS_URLS")
            .env("RUST_LOG", "info,lockstock=debug")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log handle"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {exe}: {e}"));
        WorkerProc {
            child: Some(child),
            id: format!("{}-{name}", self.prefix),
            log,
        }
    }

    /// Starts a worker process named `name` with the test's keys plus `extra` flags (which
    /// override the test defaults: a 1 s liveness TTL, recovery every 200 ms).
    pub fn worker(&self, name: &str, extra: &[&str]) -> WorkerProc {
        let id = format!("{}-{name}", self.prefix);
        let mut args = vec!["--worker-id", id.as_str()];
        args.extend(
            [
                ("--liveness-ttl-ms", "1000"),
                ("--recovery-interval-ms", "200"),
                ("--max-connections", "4"),
            ]
            .into_iter()
            .filter(|(flag, _)| !extra.contains(flag))
            .flat_map(|(flag, value)| [flag, value]),
        );
        args.extend(extra);
        self.spawn(env!("CARGO_BIN_EXE_worker"), name, &args)
    }

    /// Runs the `producer` binary against the test's Redis, database and queue to its end.
    pub fn produce(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_producer"))
            .args(["--redis-url", &self.redis.url()])
            .args(["--database-url", &self.database_url])
            .args([
                "--queue-key",
                &self.pending_key(),
                "--dead-key",
                &self.dead_key(),
            ])
            .args(args)
            .output()
            .expect("run the producer")
    }

    /// Starts the `api` binary on a free loopback port with the test's keys (the workers'
    /// queue, dead letter list and lock prefix) plus `extra` flags; answers once `/readyz` does.
    pub async fn api(&self, name: &str, extra: &[&str]) -> ApiProc {
        let bind = format!("127.0.0.1:{}", free_port());
        let mut args = vec!["--bind", bind.as_str()];
        args.extend(extra);
        let api = ApiProc {
            process: self.spawn(env!("CARGO_BIN_EXE_api"), name, &args),
            base: format!("http://{bind}"),
            client: reqwest::Client::new(),
        };
        let ready = format!("{}/readyz", api.base);
        wait_for("the api to answer", Duration::from_secs(20), || {
            let request = api.client.get(&ready).send();
            async move { request.await.is_ok_and(|r| r.status().is_success()) }
        })
        .await;
        api
    }

    /// Waits until every processing list of the test's queue is empty (all acknowledged).
    pub async fn wait_processing_empty(&self) {
        wait_for(
            "the processing lists to empty",
            Duration::from_secs(5),
            || async { self.processing_total().await == 0 },
        )
        .await;
    }

    /// A queue handle for pushing and inspecting (not a consumer).
    pub async fn queue(&self) -> JobQueue {
        let config =
            QueueConfig::namespaced(&self.prefix).with_worker_id(format!("{}-test", self.prefix));
        self.connect().await.queue(config).expect("queue config")
    }

    /// A plain connection for looking at keys directly.
    pub async fn raw(&self) -> ConnectionManager {
        self.connect().await.connection()
    }

    /// A process's connections to the test redis, made as the binaries make them.
    async fn connect(&self) -> SharedRedis {
        SharedRedis::connect(&self.redis.url())
            .await
            .expect("connect to the test redis")
    }

    /// Pushes orders as JSON messages.
    pub async fn push(&self, orders: &[PurchaseOrder]) {
        let payloads: Vec<Vec<u8>> = orders.iter().map(PurchaseOrder::to_json).collect();
        self.push_raw(&payloads).await;
    }

    /// Pushes raw messages.
    pub async fn push_raw(&self, payloads: &[Vec<u8>]) {
        self.queue().await.push_batch(payloads).await.expect("push");
    }

    /// Sets products `1..=count` to `stock`.
    pub async fn products(&self, count: i32, stock: i32) {
        self.store
            .create_products(count, stock)
            .await
            .expect("create products");
    }

    /// Rows in `orders`.
    pub async fn decided(&self) -> i64 {
        crate::test_env::decided(&self.pool).await
    }

    /// Waits until `n` orders have outcomes.
    pub async fn wait_decided(&self, n: i64, within: Duration) {
        crate::test_env::wait_decided(&self.pool, n, within).await;
    }

    /// Every outcome row: id -> (status, reason).
    pub async fn outcomes(&self) -> HashMap<uuid::Uuid, (String, Option<String>)> {
        crate::test_env::outcomes(&self.pool).await
    }

    /// Stock of a product.
    pub async fn stock(&self, product: i32) -> i32 {
        self.store
            .stock(ProductId::new(product).expect("id"))
            .await
            .expect("stock")
    }

    /// Sum of fulfilled quantities of a product.
    pub async fn sold(&self, product: i32) -> i64 {
        crate::test_env::sold(&self.pool, product).await
    }

    /// Asserts that products `1..=count`, each started with `initial` units, lost exactly what
    /// was sold and never went below zero.
    pub async fn assert_ledger(&self, count: i32, initial: i32) {
        for product in 1..=count {
            let (stock, sold) = (self.stock(product).await, self.sold(product).await);
            assert!(stock >= 0, "product {product} oversold: stock {stock}");
            assert_eq!(
                i64::from(initial),
                i64::from(stock) + sold,
                "ledger of product {product}"
            );
        }
    }

    /// How many orders the intake sweep has pushed again (`<queue>:restored`).
    pub async fn restored(&self) -> u64 {
        let mut conn = self.raw().await;
        let restored: Option<u64> = redis::cmd("GET")
            .arg(format!("{}:restored", self.pending_key()))
            .query_async(&mut conn)
            .await
            .expect("GET restored");
        restored.unwrap_or(0)
    }

    /// Messages in every processing list of this test's queue.
    pub async fn processing_total(&self) -> usize {
        let mut conn = self.raw().await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:processing:*", self.pending_key()))
            .query_async(&mut conn)
            .await
            .expect("KEYS");
        let mut total = 0;
        for key in keys {
            let n: usize = redis::cmd("LLEN")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .expect("LLEN");
            total += n;
        }
        total
    }

    /// Orders `worker` holds reserved right now (its processing list).
    pub async fn reserved_by(&self, worker: &WorkerProc) -> usize {
        self.llen(&format!("{}:processing:{}", self.pending_key(), worker.id))
            .await
    }

    pub async fn llen(&self, key: &str) -> usize {
        let mut conn = self.raw().await;
        redis::cmd("LLEN")
            .arg(key)
            .query_async(&mut conn)
            .await
            .expect("LLEN")
    }

    /// Keys under the lock prefix that are locks (held right now).
    pub async fn held_locks(&self) -> Vec<String> {
        let mut conn = self.raw().await;
        redis::cmd("KEYS")
            .arg(format!("{}:*:lock", self.lock_prefix()))
            .query_async(&mut conn)
            .await
            .expect("KEYS")
    }

    /// The lock value (`token\nfence\nsince\nowner`) of a product, if locked.
    pub async fn lock_value(&self, product: i32) -> Option<String> {
        let mut conn = self.raw().await;
        redis::cmd("GET")
            .arg(self.lock_key(product))
            .query_async(&mut conn)
            .await
            .expect("GET")
    }
}

/// An order with a fresh id.
pub fn order(product: i32, quantity: i32) -> PurchaseOrder {
    PurchaseOrder::new(
        ProductId::new(product).expect("product"),
        Quantity::new(quantity).expect("quantity"),
    )
}

pub use crate::test_env::wait_for;

/// A running `api` process and a client for it; killed when dropped.
pub struct ApiProc {
    /// The process (its log, its signals).
    pub process: WorkerProc,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    client: reqwest::Client,
}

impl ApiProc {
    /// `n` concurrent locked purchases of one unit of `product`; the HTTP status of each.
    pub async fn buy_concurrently(&self, product: i32, n: usize) -> Vec<u16> {
        let url = format!("{}/purchase/with-lock/{product}", self.base);
        let requests = (0..n).map(|_| {
            self.client
                .post(&url)
                .json(&serde_json::json!({ "quantity": 1 }))
                .send()
        });
        futures_util::future::join_all(requests)
            .await
            .into_iter()
            .map(|answer| answer.expect("purchase request").status().as_u16())
            .collect()
    }
}

/// A running worker process; killed when dropped.
pub struct WorkerProc {
    child: Option<Child>,
    /// Its worker id.
    pub id: String,
    log: PathBuf,
}

impl WorkerProc {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("running")
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .expect("running")
                .try_wait()
                .expect("try_wait")
            {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "worker {} did not exit within {within:?}\n{}",
                self.id,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| child.try_wait().expect("try_wait").is_none())
    }

    /// The process's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(child.id().to_string())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
