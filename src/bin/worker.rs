//! `worker`: pulls purchase orders from Redis and processes each under its product's lock,
//! writing outcomes to Postgres. Run several (see the Procfile); stop with SIGTERM/SIGINT.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use lockstock::{
    config::{DatabaseArgs, RedisArgs, mask_url},
    observe::{WorkerMetrics, serve_worker_metrics},
    product_lock::ProductLocks,
    queue::{JobQueue, QueueConfig, default_worker_id},
    redis_conn,
    shutdown::spawn_signal_handler,
    telemetry::init_tracing,
    worker::{Worker, WorkerConfig},
};
use lockstock_lock::{LockClient, LockConfig, LockOptions, LockOwner, Redlock, RedlockConfig};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "worker",
    version,
    about = "Process purchase orders under per-product locks"
)]
struct Cli {
    #[command(flatten)]
    redis: RedisArgs,
    #[command(flatten)]
    database: DatabaseArgs,
    /// Orders processed at once by this process.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    concurrency: u32,
    /// Product lock TTL in milliseconds (extended by a heartbeat while held).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(3..))]
    lock_ttl_ms: u64,
    /// Simulated slow step between the stock check and the sale, in milliseconds.
    #[arg(long, default_value_t = 0)]
    work_ms: u64,
    /// UNSAFE: process without locks (the seed's race, for the demo only).
    #[arg(long)]
    no_lock: bool,
    /// The pending list.
    #[arg(long, env = "QUEUE_KEY", default_value = "orders:pending")]
    queue_key: String,
    /// The dead letter list.
    #[arg(long, env = "DEAD_KEY", default_value = "orders:dead")]
    dead_key: String,
    /// Prefix of the lock keys.
    #[arg(long, env = "LOCK_PREFIX", default_value = "lockstock")]
    lock_prefix: String,
    /// Take product locks with Redlock over these independent Redis masters: comma-separated,
    /// an odd number of at least 3 (e.g. `redis://a:6379,redis://b:6379,redis://c:6379`). One
    /// URL: the single-instance lock on that server. Unset: the lock on `--redis-url`. The queue
    /// always stays on `--redis-url`.
    #[arg(long, env = "LOCK_REDIS_URLS", value_delimiter = ',')]
    lock_redis_urls: Vec<String>,
    /// How long one product-lock acquisition waits before its failure is logged and it is
    /// retried, in milliseconds.
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    lock_wait_ms: u64,
    /// This worker's id (default: host-pid-random). Reusing an id after a crash lets the new
    /// process take over the old one's processing list at once.
    #[arg(long, env = "WORKER_ID")]
    worker_id: Option<String>,
    /// How long a graceful shutdown waits for in-flight orders, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    drain_timeout_ms: u64,
    /// Liveness key TTL in milliseconds (a dead worker's orders are recovered after it).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(300..))]
    liveness_ttl_ms: u64,
    /// How often to look for dead workers, in milliseconds.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(10..))]
    recovery_interval_ms: u64,
    /// Most orders processed under one lock hold.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    batch_limit: u32,
    /// Postgres connections in this process's pool (default: concurrency + 2).
    #[arg(long)]
    max_connections: Option<u32>,
    /// Serve Prometheus metrics on this address (`GET /metrics`), e.g. 127.0.0.1:9101.
    #[arg(long, env = "METRICS_ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing("info");
    if cli.no_lock {
        eprintln!("\n  !!! WARNING: --no-lock: orders are processed WITHOUT locks or fencing.");
        eprintln!(
            "  !!! Concurrent orders for one product WILL oversell. Use only to demonstrate the race.\n"
        );
        tracing::warn!("running without locks: overselling is expected");
    }
    let worker_id = cli.worker_id.clone().unwrap_or_else(default_worker_id);

    let store = cli
        .database
        .open_store(cli.max_connections.unwrap_or(cli.concurrency + 2))
        .await?;
    let (client, conn) = redis_conn::connect(&cli.redis.redis_url)
        .await
        .with_context(|| format!("connecting to Redis at {}", mask_url(&cli.redis.redis_url)))?;

    let queue_config = QueueConfig::default()
        .with_pending_key(cli.queue_key)
        .with_dead_key(cli.dead_key)
        .with_worker_id(worker_id.clone());
    let queue = JobQueue::new(client.clone(), conn.clone(), queue_config)
        .context("configuring the queue")?;
    let lock_config = LockConfig::default()
        .with_prefix(cli.lock_prefix)
        .context("configuring the locks")?
        .with_owner(LockOwner::this_process(worker_id.clone()));
    let locks = LockClient::with_connection(client, conn, lock_config.clone());
    let lock_urls: Vec<&str> = cli
        .lock_redis_urls
        .iter()
        .map(|url| url.trim())
        .filter(|url| !url.is_empty())
        .collect();
    let product_locks: ProductLocks = match lock_urls.as_slice() {
        [] => locks.clone().into(),
        [url] => LockClient::connect(url, lock_config.clone())
            .await
            .with_context(|| format!("connecting to the lock Redis at {}", mask_url(url)))?
            .into(),
        urls => {
            let config = RedlockConfig {
                keys: lock_config.keys.clone(),
                owner: lock_config.owner.clone(),
                ..RedlockConfig::default()
            };
            let redlock = Redlock::connect(urls, config)
                .await
                .context("configuring Redlock from LOCK_REDIS_URLS")?;
            redlock
                .check_options(&LockOptions::with_ttl(Duration::from_millis(
                    cli.lock_ttl_ms,
                )))
                .context("checking --lock-ttl-ms against Redlock")?;
            tracing::info!(instances = ?redlock.instances(), quorum = redlock.quorum(), "product locks use Redlock");
            redlock.into()
        }
    };
    let config = WorkerConfig {
        worker_id,
        concurrency: cli.concurrency as usize,
        lock_ttl: Duration::from_millis(cli.lock_ttl_ms),
        lock_wait: Duration::from_millis(cli.lock_wait_ms),
        work: Duration::from_millis(cli.work_ms),
        use_lock: !cli.no_lock,
        batch_limit: cli.batch_limit as usize,
        drain_timeout: Duration::from_millis(cli.drain_timeout_ms),
        liveness_ttl: Duration::from_millis(cli.liveness_ttl_ms),
        recovery_interval: Duration::from_millis(cli.recovery_interval_ms),
        ..WorkerConfig::default()
    };
    let worker = Worker::new(queue.clone(), product_locks, store, config)
        .context("configuring the worker")?;

    let root = CancellationToken::new();
    spawn_signal_handler(root.clone());
    let metrics_stop = CancellationToken::new();
    if let Some(addr) = cli.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening for metrics on {addr}"))?;
        tracing::info!(address = %addr, "serving metrics");
        let metrics = WorkerMetrics {
            locks,
            stats: worker.stats(),
            queue,
        };
        tokio::spawn(serve_worker_metrics(
            listener,
            metrics,
            metrics_stop.clone(),
        ));
    }
    worker.run(root).await;
    metrics_stop.cancel();
    Ok(())
}
