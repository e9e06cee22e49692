//! `worker`: pulls purchase orders from Redis and processes each under its product's lock,
//! writing outcomes to Postgres. Run several (see the Procfile); stop with SIGTERM/SIGINT.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use lockstock::{
    config::{DatabaseArgs, LockArgs, LogArgs, QueueArgs, RedisArgs, WaitArgs},
    observe::{WorkerMetrics, serve_worker_metrics},
    queue::default_worker_id,
    services,
    shutdown::spawn_signal_handler,
    telemetry::{LogFormat, init_tracing},
    worker::{DEFAULT_MAX_RESERVED_BYTES, Worker, WorkerConfig},
};
use lockstock_lock::LockOwner;
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
    #[command(flatten)]
    queue: QueueArgs,
    #[command(flatten)]
    locks: LockArgs,
    #[command(flatten)]
    log: LogArgs,
    #[command(flatten)]
    wait: WaitArgs,
    /// Orders processed at once by this process.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    concurrency: u32,
    /// Simulated slow step between the stock check and the sale, in milliseconds.
    #[arg(long, default_value_t = 0)]
    work_ms: u64,
    /// UNSAFE: process without locks (the seed's race, for the demo only).
    #[arg(long)]
    no_lock: bool,
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
    /// Claim and commit the holds of several products in shared transactions (group commit).
    #[arg(long)]
    group_commit: bool,
    /// How long a worker may go without Postgres answering while it holds a product lock before
    /// it releases the lock, gives its unstarted orders back and pauses until Postgres answers,
    /// in milliseconds.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(100..))]
    postgres_outage_ms: u64,
    /// How often the intake recovery sweep pushes recorded, undecided orders that are in no Redis
    /// list again, in milliseconds (0: never).
    #[arg(long, default_value_t = 5_000)]
    intake_sweep_ms: u64,
    /// How old an undecided intake entry must be before the sweep may push it again, in
    /// milliseconds (covers the gap between a producer's insert and its push).
    #[arg(long, default_value_t = 10_000)]
    intake_stale_ms: u64,
    /// Most reserved orders waiting (parked behind a product's lock or for a slot) beside the
    /// batches being decided. Default: follow the pace, half a second of work at the rate orders
    /// came in lately, between --batch-limit and --concurrency × --batch-limit. Orders reserved
    /// here are promised to this process; a small prefetch leaves the rest to idle workers.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    prefetch: Option<u32>,
    /// Most bytes of reserved, unacknowledged messages this process holds (64 MiB by default);
    /// at the budget it stops reserving until some are acknowledged.
    #[arg(long, env = "MAX_RESERVED_BYTES", default_value_t = DEFAULT_MAX_RESERVED_BYTES as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_reserved_bytes: u64,
    /// Postgres connections in this process's pool (default: concurrency + 2).
    #[arg(long)]
    max_connections: Option<u32>,
    /// Serve Prometheus metrics on this address (`GET /metrics`), e.g. 127.0.0.1:9101.
    #[arg(long, env = "METRICS_ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Apply the database migrations at start (the quick start). Without it the worker only
    /// checks that the schema has what it needs (newer migrations are fine): run `lockctl migrate`.
    #[arg(long)]
    migrate: bool,
    /// UNSAFE, test-only (`lockctl chaos` self-test): commit without the fence check.
    #[arg(long, hide = true)]
    chaos_unsafe_skip_fence: bool,
    /// Test-only (`lockctl chaos` self-test): the longest single wait for a product lock, ms.
    #[arg(long, hide = true)]
    chaos_lock_wait_slice_ms: Option<u64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The per-hold `history` events are for `lockctl chaos` (which asks for them with
    // `RUST_LOG=…,history=info`): a line per lock hold is noise in a deployment's log.
    init_tracing("info,history=off", cli.log.format());
    if cli.no_lock {
        if cli.log.format() == LogFormat::Text {
            eprintln!("\n  !!! WARNING: --no-lock: orders are processed WITHOUT locks or fencing.");
            eprintln!(
                "  !!! Concurrent orders for one product WILL oversell. Use only to demonstrate the race.\n"
            );
        }
        tracing::warn!("running without locks: overselling is expected");
    }
    let worker_id = cli.worker_id.clone().unwrap_or_else(default_worker_id);

    let root = CancellationToken::new();
    spawn_signal_handler(root.clone());
    // Started before the stores (honcho, docker compose): wait for them, retrying.
    let limit = cli.wait.wait_for_services;
    let pool_size = cli.max_connections.unwrap_or(cli.concurrency + 2);
    let connected = async {
        let store = services::wait_for_service("Postgres", limit, &root, || {
            services::open_store_with(&cli.database, pool_size, cli.migrate)
        })
        .await?;
        let redis = services::wait_for_service("Redis", limit, &root, || {
            services::connect_redis(&cli.redis)
        })
        .await?;
        let owner = LockOwner::this_process(worker_id.clone());
        let product_locks = services::wait_for_service("the lock Redis", limit, &root, || {
            services::connect_product_locks(&redis, &cli.locks, owner.clone())
        })
        .await?;
        Ok::<_, services::ServiceError>((store, redis, owner, product_locks))
    };
    let (store, redis, owner, product_locks) = match connected.await {
        Ok(connected) => connected,
        Err(services::ServiceError::Stopped { service }) => {
            tracing::info!(service, "stopped before the services answered");
            return Ok(());
        }
        Err(error) => return Err(error).context("connecting the stores"),
    };
    let store = if cli.chaos_unsafe_skip_fence {
        store.chaos_unsafe_skip_fence()
    } else {
        store
    };
    let queue = redis.queue(cli.queue.queue_config(worker_id.clone()))?;
    let locks = services::reporting_lock_client(&redis, &product_locks, &cli.locks, owner)?;
    let config = WorkerConfig {
        worker_id,
        concurrency: cli.concurrency as usize,
        lock_ttl: cli.locks.lock_ttl(),
        lock_wait: Duration::from_millis(cli.lock_wait_ms),
        lock_wait_slice: cli.chaos_lock_wait_slice_ms.map_or(
            WorkerConfig::default().lock_wait_slice,
            Duration::from_millis,
        ),
        work: Duration::from_millis(cli.work_ms),
        use_lock: !cli.no_lock,
        batch_limit: cli.batch_limit as usize,
        group_commit: cli.group_commit,
        backlog_limit: cli.prefetch.unwrap_or(cli.batch_limit) as usize,
        adaptive_prefetch: cli.prefetch.is_none(),
        max_reserved_bytes: usize::try_from(cli.max_reserved_bytes).unwrap_or(usize::MAX),
        drain_timeout: Duration::from_millis(cli.drain_timeout_ms),
        liveness_ttl: Duration::from_millis(cli.liveness_ttl_ms),
        recovery_interval: Duration::from_millis(cli.recovery_interval_ms),
        postgres_outage_limit: Duration::from_millis(cli.postgres_outage_ms),
        intake_sweep_interval: Duration::from_millis(cli.intake_sweep_ms),
        intake_stale_after: Duration::from_millis(cli.intake_stale_ms),
        ..WorkerConfig::default()
    };
    let worker = Worker::new(queue.clone(), product_locks, store, config)
        .context("configuring the worker")?;

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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// The flag definitions, shared groups included, are consistent (clap's own checks).
    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
