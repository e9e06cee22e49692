//! A test's world on a local Redis Cluster: the cluster, a fresh database, and the real
//! binaries (`worker`, `producer`, `api`, `lockctl`) pointed at it with `REDIS_URL` alone, plus
//! the data checks the pipeline tests assert.
//!
//! - Every process gets the test's queue keys and lock prefix; worker `w0` and the API are given
//!   one node (the first live one), every other process all live seed nodes comma-separated, so
//!   both ways of naming a cluster are exercised.
//! - Processes are killed when their handle drops; their output is in the test's log directory.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use lockstock::{
    order::{ProductId, PurchaseOrder, Quantity},
    queue::{JobQueue, QueueConfig},
    services::SharedRedis,
    store::OrderStore,
};
use lockstock_lock::{LockClient, LockConfig, LockOwner};
use sqlx::PgPool;

use crate::{
    redis_cluster::RedisCluster,
    redis_server::free_port,
    test_env::{database_url, wait_for},
};

/// One test's cluster, database and keys.
pub struct Fleet {
    pub cluster: RedisCluster,
    pub prefix: String,
    pub pool: PgPool,
    pub store: OrderStore,
    database_url: String,
    logs: PathBuf,
    shards: usize,
}

impl Fleet {
    /// A three-master cluster over the test's database.
    pub fn new(pool: PgPool) -> Self {
        Self::on(RedisCluster::start(), pool)
    }

    /// The given cluster over the test's database.
    pub fn on(cluster: RedisCluster, pool: PgPool) -> Self {
        let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
        let logs = std::env::temp_dir().join(format!("lockstock-tests/{prefix}"));
        std::fs::create_dir_all(&logs).expect("log dir");
        Self {
            cluster,
            database_url: database_url(&pool),
            store: OrderStore::new(pool.clone()),
            pool,
            prefix,
            logs,
            shards: 1,
        }
    }

    /// The same world with the queue spread over `shards` lists (`QUEUE_SHARDS` for every
    /// process, and for the test's own queue handle).
    pub fn sharded(mut self, shards: usize) -> Self {
        self.shards = shards;
        self
    }

    /// All live seed nodes, comma-separated (a valid `REDIS_URL` for a cluster).
    pub fn seeds(&self) -> String {
        self.cluster.live_urls().join(",")
    }

    /// The first live node (the `REDIS_URL` of the processes given one node).
    pub fn first_node(&self) -> String {
        self.cluster.live_urls()[0].clone()
    }

    /// The queue and lock settings every process shares, as environment variables.
    fn key_env(&self) -> [(&'static str, String); 4] {
        [
            ("QUEUE_KEY", format!("{}:orders:pending", self.prefix)),
            ("DEAD_KEY", format!("{}:orders:dead", self.prefix)),
            ("LOCK_PREFIX", self.lock_prefix()),
            ("QUEUE_SHARDS", self.shards.to_string()),
        ]
    }

    pub fn lock_prefix(&self) -> String {
        format!("{}-locks", self.prefix)
    }

    /// Starts `exe` as `name` with `REDIS_URL` = `redis_url`, the test's database and keys, and
    /// `args`.
    fn spawn(&self, exe: &str, name: &str, redis_url: &str, args: &[&str]) -> Proc {
        let log = self.logs.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("process log");
        let child = Command::new(exe)
            .args(args)
            .envs(self.key_env())
            .env("REDIS_URL", redis_url)
            .env("DATABASE_URL", &self.database_url)
            .env("RUST_LOG", "info")
            .env_remove("API_TOKEN")
            .env_remove("LOCK_REDIS_URLS")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log handle"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {exe}: {e}"));
        Proc {
            child: Some(child),
            log,
        }
    }

    /// A worker process `name` (1 s liveness, recovery every 200 ms) plus `extra` flags.
    pub fn worker(&self, name: &str, extra: &[&str]) -> Proc {
        let url = if name == "w0" {
            self.first_node()
        } else {
            self.seeds()
        };
        self.worker_at(name, &url, extra)
    }

    /// A worker process `name` as [`Fleet::worker`] makes it, with `REDIS_URL` = `url`.
    pub fn worker_at(&self, name: &str, url: &str, extra: &[&str]) -> Proc {
        let id = format!("{}-{name}", self.prefix);
        let mut args = vec!["--worker-id", &id, "--max-connections", "4"];
        args.extend(["--liveness-ttl-ms", "1000", "--recovery-interval-ms", "200"]);
        args.extend(extra);
        self.spawn(env!("CARGO_BIN_EXE_worker"), name, url, &args)
    }

    /// The `api` binary on a free loopback port (one node as `REDIS_URL`); answers once
    /// `/readyz` does. Returns the process and its base URL.
    pub async fn api(&self) -> (Proc, String) {
        self.api_at(&self.first_node()).await
    }

    /// The `api` binary as [`Fleet::api`] makes it, with `REDIS_URL` = `url`.
    pub async fn api_at(&self, url: &str) -> (Proc, String) {
        let bind = format!("127.0.0.1:{}", free_port());
        let api = self.spawn(env!("CARGO_BIN_EXE_api"), "api", url, &["--bind", &bind]);
        let base = format!("http://{bind}");
        let ready = format!("{base}/readyz");
        wait_for("the api to answer", Duration::from_secs(20), || {
            let request = reqwest::get(ready.clone());
            async move { request.await.is_ok_and(|r| r.status().is_success()) }
        })
        .await;
        (api, base)
    }

    /// Runs `producer --file` with `orders` as JSON lines; returns its output once it exits 0.
    pub fn produce(&self, orders: &[PurchaseOrder]) -> String {
        let file = self.logs.join("orders.jsonl");
        let lines: Vec<String> = orders
            .iter()
            .map(|o| String::from_utf8(o.to_json()).expect("utf-8 json"))
            .collect();
        std::fs::write(&file, lines.join("\n")).expect("write orders");
        self.run(
            env!("CARGO_BIN_EXE_producer"),
            &["--file", file.to_str().expect("utf-8 path")],
        )
    }

    /// Runs `lockctl args` against the cluster and the test's keys; returns its stdout.
    pub fn lockctl(&self, args: &[&str]) -> String {
        self.run(env!("CARGO_BIN_EXE_lockctl"), args)
    }

    /// Runs `lockctl args` with `REDIS_URL` = `url`; returns its stdout.
    pub fn lockctl_at(&self, url: &str, args: &[&str]) -> String {
        self.run_at(env!("CARGO_BIN_EXE_lockctl"), url, args)
    }

    fn run(&self, exe: &str, args: &[&str]) -> String {
        self.run_at(exe, &self.seeds(), args)
    }

    fn run_at(&self, exe: &str, url: &str, args: &[&str]) -> String {
        let output = Command::new(exe)
            .args(args)
            .envs(self.key_env())
            .env("REDIS_URL", url)
            .env("DATABASE_URL", &self.database_url)
            .env("RUST_LOG", "info")
            .output()
            .expect("run the binary");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{exe} {args:?} failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    /// The test's connections to the cluster, made as the binaries make them.
    pub async fn redis(&self) -> SharedRedis {
        let redis = SharedRedis::connect(&self.seeds())
            .await
            .expect("connect to the cluster");
        assert!(redis.is_cluster(), "the cluster is detected");
        redis
    }

    /// A queue handle on the test's keys (pushes and inspection; never consumes).
    pub async fn queue(&self) -> JobQueue {
        let config = QueueConfig {
            shards: self.shards,
            ..QueueConfig::namespaced(&self.prefix)
        }
        .with_worker_id(format!("{}-test", self.prefix));
        self.redis().await.queue(config).expect("queue config")
    }

    /// A lock client under the test's prefix, owned by `owner`.
    pub async fn locks(&self, owner: &str) -> LockClient {
        let config = LockConfig::default()
            .with_prefix(self.lock_prefix())
            .expect("lock prefix")
            .with_owner(LockOwner::this_process(owner));
        self.redis().await.lock_client(config)
    }

    /// How many of the cluster's nodes hold at least one key.
    pub fn nodes_holding_keys(&self) -> usize {
        self.cluster
            .live_urls()
            .iter()
            .filter(|url| {
                let mut conn = redis::Client::open(url.as_str())
                    .unwrap()
                    .get_connection()
                    .unwrap();
                redis::cmd("DBSIZE").query::<usize>(&mut conn).unwrap() > 0
            })
            .count()
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

    /// Outcome rows written by the worker process `name`.
    pub async fn decided_by(&self, name: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM orders WHERE worker = $1")
            .bind(format!("{}-{name}", self.prefix))
            .fetch_one(&self.pool)
            .await
            .expect("count a worker's orders")
    }

    /// Waits until `n` orders have outcomes.
    pub async fn wait_decided(&self, n: i64, within: Duration) {
        crate::test_env::wait_decided(&self.pool, n, within).await;
    }

    /// Waits (30 s deadline) until the queue has nothing pending or in a processing list: the
    /// acknowledgements that follow the last outcomes have landed.
    pub async fn wait_drained(&self) {
        wait_for("the queue to drain", Duration::from_secs(30), || async {
            let stats = self.queue().await.stats().await.expect("queue stats");
            stats.pending == 0 && stats.processing == 0
        })
        .await;
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

    /// Asserts exactly one outcome per pushed order (no other rows), and for products
    /// `1..=products` stock never below zero and `initial = final + fulfilled`.
    pub async fn assert_exactly_once(&self, pushed: &[PurchaseOrder], products: i32, initial: i32) {
        let outcomes = self.outcomes().await;
        let ids: HashSet<_> = pushed.iter().map(|o| o.id.as_uuid()).collect();
        assert_eq!(outcomes.len(), ids.len(), "one row per order");
        assert_eq!(outcomes.keys().copied().collect::<HashSet<_>>(), ids);
        for product in 1..=products {
            let (stock, sold) = (self.stock(product).await, self.sold(product).await);
            assert!(stock >= 0, "product {product} oversold: stock {stock}");
            assert_eq!(
                i64::from(initial),
                i64::from(stock) + sold,
                "ledger of product {product}"
            );
        }
        let stats = self.queue().await.stats().await.expect("queue stats");
        assert_eq!((stats.pending, stats.processing), (0, 0), "{stats:?}");
    }
}

/// An order with a fresh id.
pub fn order(product: i32, quantity: i32) -> PurchaseOrder {
    PurchaseOrder::new(
        ProductId::new(product).expect("product"),
        Quantity::new(quantity).expect("quantity"),
    )
}

/// A running process; killed when dropped.
pub struct Proc {
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    /// Kills the process with SIGKILL (a crash: no drain, no deregistration).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}
