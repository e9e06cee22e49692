//! `lockctl bench-pipeline --scale`: the scaling curve. Orders per second and push-to-commit p99
//! for 1, 2, 4 and 8 worker processes × 1, 10 and 100 products, on whatever `REDIS_URL` names
//! (one server, or a cluster: run it once on each), with what each case cost:
//!
//! - Redis commands per order: `total_commands_processed` summed over every master, before and
//!   after the case (includes the idle workers' polls and heartbeats and the bench's own
//!   registration checks: an upper bound);
//! - Postgres transactions per order: `xact_commit` of the bench database, minus the bench's own
//!   progress polls and setup;
//! - CPU: Redis (`used_cpu_user + used_cpu_sys` over the masters) and the worker processes
//!   (`/proc/<pid>/stat`), each as a share of one core over the case's wall time. Where the
//!   curve flattens, the resource at or near 100 % of what it can use (Redis: one core per
//!   master; everything: the host's cores) is the one saturated.
//!
//! Not measured: Postgres's own CPU (the host total is what is left).

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use serde::Serialize;

use super::pipeline::{
    BENCH_APPLICATION, BENCH_CONNECTIONS, PgSettings, PipelineBench, bench_database, bench_store,
};
use crate::{
    order::{ProductId, PurchaseOrder, Quantity},
    services::SharedRedis,
    store::OrderStore,
    tools::fleet::sibling_binary,
};

/// Settings of one `--scale` run.
#[derive(Debug, Clone)]
pub struct ScaleBench {
    /// Redis (one server or any cluster node(s)).
    pub redis_url: String,
    /// Postgres; the bench uses `<name>_bench`.
    pub database_url: String,
    /// Worker process counts to measure.
    pub workers: Vec<usize>,
    /// Product counts to measure.
    pub products: Vec<usize>,
    /// Concurrency of each worker.
    pub concurrency: usize,
    /// Orders per case.
    pub orders: usize,
    /// Where worker logs go.
    pub log_dir: PathBuf,
    /// Start the workers with `--group-commit`.
    pub group_commit: bool,
    /// Start the workers with this `--prefetch` (`None`: the worker's default).
    pub prefetch: Option<usize>,
}

/// One point of the curve.
#[derive(Debug, Clone, Serialize)]
pub struct ScalePoint {
    /// `single` or `cluster`.
    pub redis: String,
    /// Worker processes.
    pub workers: usize,
    /// Products the orders spread over.
    pub products: usize,
    /// Orders per second, first push to last commit.
    pub orders_per_sec: f64,
    /// 99th percentile push-to-commit latency, µs.
    pub p99_us: u64,
    /// Redis commands per order (upper bound, see the module docs).
    pub redis_cmds_per_order: f64,
    /// Postgres transactions per order.
    pub pg_xacts_per_order: f64,
    /// Redis CPU over the case, % of one core (summed over masters).
    pub redis_cpu_pct: f64,
    /// Worker CPU over the case, % of one core (summed over processes).
    pub worker_cpu_pct: f64,
    /// The Postgres settings of the run.
    pub postgres: PgSettings,
}

impl ScalePoint {
    /// Table header for [`ScalePoint::table_row`].
    pub fn table_header() -> String {
        format!(
            "{:<8} {:>7} {:>8} {:>9} {:>9} {:>10} {:>9} {:>9} {:>9}",
            "redis",
            "workers",
            "products",
            "orders/s",
            "p99 ms",
            "redis/ord",
            "pg/ord",
            "redis cpu",
            "wrk cpu"
        )
    }

    /// One table line.
    pub fn table_row(&self) -> String {
        format!(
            "{:<8} {:>7} {:>8} {:>9.0} {:>9.1} {:>10.1} {:>9.2} {:>8.0}% {:>8.0}%",
            self.redis,
            self.workers,
            self.products,
            self.orders_per_sec,
            self.p99_us as f64 / 1000.0,
            self.redis_cmds_per_order,
            self.pg_xacts_per_order,
            self.redis_cpu_pct,
            self.worker_cpu_pct
        )
    }
}

impl ScaleBench {
    /// Runs every (workers, products) case, calling `emit` after each.
    pub async fn run(&self, mut emit: impl FnMut(&ScalePoint)) -> anyhow::Result<Vec<ScalePoint>> {
        let worker = sibling_binary("worker")?;
        let redis = SharedRedis::connect(&self.redis_url).await?;
        let mode = if redis.is_cluster() {
            "cluster"
        } else {
            "single"
        };
        let masters = masters(&redis, &self.redis_url).await?;
        let bench_url = bench_database(&self.database_url).await?;
        let (pool, store) = bench_store(&bench_url, BENCH_CONNECTIONS, BENCH_APPLICATION).await?;
        let settings = PgSettings::read(&pool).await?;
        let one = Quantity::new(1)?;
        let mut points = Vec::new();
        for &workers in &self.workers {
            for &products in &self.products {
                let orders: Vec<PurchaseOrder> = (0..self.orders)
                    .map(|i| {
                        Ok(PurchaseOrder::new(
                            ProductId::new(1 + (i % products) as i32)?,
                            one,
                        ))
                    })
                    .collect::<anyhow::Result<_>>()?;
                let bench = PipelineBench {
                    redis_url: self.redis_url.clone(),
                    database_url: self.database_url.clone(),
                    workers,
                    concurrency: self.concurrency,
                    orders: self.orders,
                    reference_duration: Duration::ZERO,
                    log_dir: self.log_dir.clone(),
                    group_commit: self.group_commit,
                    prefetch: self.prefetch,
                };
                let redis_before = redis_totals(&masters).await?;
                let pg_before = xact_commits(&store).await?;
                let case = format!("scale-{mode}-{workers}w-{products}p");
                let (report, costs) = bench
                    .run_case(&case, &worker, &bench_url, &store, &orders)
                    .await?;
                // Backends of stopped workers flush their statistics as they exit.
                tokio::time::sleep(Duration::from_millis(500)).await;
                let redis_after = redis_totals(&masters).await?;
                let pg_after = xact_commits(&store).await?;
                let n = self.orders as f64;
                let wall =
                    (report.ops as f64 / report.ops_per_sec.max(f64::MIN_POSITIVE)).max(1e-3);
                // Setup (TRUNCATE, products) and the last reads are the bench's: 4 transactions.
                let bench_xacts = costs.polls + 4;
                let point = ScalePoint {
                    redis: mode.into(),
                    workers,
                    products,
                    orders_per_sec: report.ops_per_sec,
                    p99_us: report.p99_us,
                    redis_cmds_per_order: (redis_after.commands - redis_before.commands) as f64 / n,
                    pg_xacts_per_order: pg_after
                        .saturating_sub(pg_before)
                        .saturating_sub(bench_xacts) as f64
                        / n,
                    redis_cpu_pct: 100.0 * (redis_after.cpu_secs - redis_before.cpu_secs) / wall,
                    worker_cpu_pct: 100.0 * costs.worker_cpu_secs / wall,
                    postgres: settings.clone(),
                };
                emit(&point);
                points.push(point);
            }
        }
        pool.close().await;
        Ok(points)
    }
}

/// Counters summed over every master.
#[derive(Debug, Clone, Copy)]
struct RedisTotals {
    commands: u64,
    cpu_secs: f64,
}

/// The URLs of every master: the one server, or each master of the cluster (the seed URL with
/// the master's host and port, so credentials and TLS carry over).
async fn masters(redis: &SharedRedis, url: &str) -> anyhow::Result<Vec<String>> {
    let seed = url.split(',').next().unwrap_or(url).trim().to_owned();
    if !redis.is_cluster() {
        return Ok(vec![seed]);
    }
    let mut conn = redis.connection();
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut conn)
        .await?;
    let mut urls = Vec::new();
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (Some(address), Some(flags)) = (fields.get(1), fields.get(2)) else {
            continue;
        };
        if !flags.contains("master") || flags.contains("fail") {
            continue;
        }
        let Some((host, port)) = address.split('@').next().and_then(|a| a.rsplit_once(':')) else {
            continue;
        };
        let mut master = url::Url::parse(&seed).context("parsing REDIS_URL")?;
        master.set_host(Some(host)).context("a master's host")?;
        master
            .set_port(port.parse().ok())
            .map_err(|()| anyhow::anyhow!("a master's port"))?;
        urls.push(master.to_string());
    }
    Ok(urls)
}

/// `total_commands_processed` and Redis's own CPU seconds, summed over `masters`.
async fn redis_totals(masters: &[String]) -> anyhow::Result<RedisTotals> {
    let mut totals = RedisTotals {
        commands: 0,
        cpu_secs: 0.0,
    };
    for url in masters {
        let client = redis::Client::open(url.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let info: String = redis::cmd("INFO").query_async(&mut conn).await?;
        for line in info.lines() {
            let Some((name, value)) = line.trim().split_once(':') else {
                continue;
            };
            match name {
                "total_commands_processed" => totals.commands += value.parse::<u64>().unwrap_or(0),
                "used_cpu_user" | "used_cpu_sys" => {
                    totals.cpu_secs += value.parse::<f64>().unwrap_or(0.0);
                }
                _ => {}
            }
        }
    }
    Ok(totals)
}

/// Committed transactions of the bench database so far.
async fn xact_commits(store: &OrderStore) -> anyhow::Result<u64> {
    let commits: i64 = sqlx::query_scalar(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(store.pool())
    .await?;
    Ok(u64::try_from(commits).unwrap_or(0))
}
