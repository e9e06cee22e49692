//! `lockctl bench-pipeline`: orders per second end to end, next to Postgres's own commit rate
//! measured in the same run.
//!
//! Runs in its own database (`<database>_bench`, created and migrated on demand) and its own
//! Redis namespace, so it never touches real orders. Each case starts `workers` real worker
//! processes (`--work-ms 0`), pushes every order at once, and measures from the first push to
//! the last outcome:
//! - `even`: orders spread evenly over 100 products;
//! - `hot`: every order for one product (the lock hand-off next to a commit);
//! - `mixed`: half on one hot product, the rest over 99 others; the cold orders' latency (push to
//!   commit) is reported separately and compared with their latency in the even case.
//!
//! References, same run: `pg-ceiling` = single-row `UPDATE` commits by as many tasks as the
//! workers' total concurrency through one pool; `pg-single` = the same from one connection.
//!
//! - Every line states the Postgres settings it ran under ([`PgSettings`]: `fsync`,
//!   `synchronous_commit`, `max_connections`): figures with `fsync = off` say nothing about
//!   durable commits.
//! - When the references are done, then their pool (one connection per task) is closed before
//!   the workers start: the cases run with the workers' pools plus the bench's own two
//!   connections, so a stock `max_connections = 100` server is not exhausted by the bench.

use std::{
    collections::HashMap,
    path::PathBuf,
    str::FromStr,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use serde::Serialize;
use sqlx::{
    Connection, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use uuid::Uuid;

use super::stats::percentile_us;
use crate::{
    order::{ProductId, PurchaseOrder, Quantity},
    queue::{JobQueue, QueueConfig},
    store::OrderStore,
    tools::fleet::{Fleet, sibling_binary},
};

/// Settings of one `lockctl bench-pipeline` run.
#[derive(Debug, Clone)]
pub struct PipelineBench {
    /// Redis for the queue and the locks.
    pub redis_url: String,
    /// Postgres; the bench uses a sibling database named `<name>_bench`.
    pub database_url: String,
    /// Worker processes.
    pub workers: usize,
    /// Concurrency of each worker.
    pub concurrency: usize,
    /// Orders per case.
    pub orders: usize,
    /// How long each reference measurement runs.
    pub reference_duration: Duration,
    /// Where worker logs go.
    pub log_dir: PathBuf,
    /// Start the workers with `--group-commit`.
    pub group_commit: bool,
    /// Start the workers with this `--prefetch` (`None`: the worker's default).
    pub prefetch: Option<usize>,
}

/// One line of the pipeline benchmark.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PipelineReport {
    /// `pg-ceiling`, `pg-single`, `even`, `hot` or `mixed`.
    pub scenario: String,
    /// Orders (or commits) per second.
    pub ops_per_sec: f64,
    /// Orders measured.
    pub ops: u64,
    /// Median push-to-commit latency, µs (all orders of the case).
    pub p50_us: u64,
    /// 99th percentile of the same, µs.
    pub p99_us: u64,
    /// Median latency of the cold orders (mixed and even), µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cold_p50_us: Option<u64>,
    /// 99th percentile of the cold orders' latency, µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cold_p99_us: Option<u64>,
    /// The case's rate over its reference (`pg-ceiling` for even/mixed, `pg-single` for hot).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    /// Highest peak resident set size of the worker processes, KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_peak_rss_kib: Option<u64>,
    /// The Postgres settings of the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PgSettings>,
    /// What was measured.
    pub note: String,
}

/// The Postgres settings that bound commit rates, as `SHOW` reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PgSettings {
    /// `fsync`: `on` makes every commit wait for the disk.
    pub fsync: String,
    /// `synchronous_commit`: `on` makes the client wait for its commit's WAL flush.
    pub synchronous_commit: String,
    /// `max_connections`: what the references and the workers' pools share.
    pub max_connections: i64,
}

impl PgSettings {
    /// Reads the settings of the server `pool` connects to.
    pub async fn read(pool: &PgPool) -> anyhow::Result<Self> {
        let show = |name: &'static str| async move {
            sqlx::query_scalar::<_, String>(&format!("SHOW {name}"))
                .fetch_one(pool)
                .await
                .with_context(|| format!("SHOW {name}"))
        };
        Ok(Self {
            fsync: show("fsync").await?,
            synchronous_commit: show("synchronous_commit").await?,
            max_connections: show("max_connections")
                .await?
                .parse()
                .context("max_connections is a number")?,
        })
    }

    /// One line for a table's heading: `postgres: fsync=on synchronous_commit=on ...`.
    pub fn describe(&self) -> String {
        format!(
            "postgres: fsync={} synchronous_commit={} max_connections={}",
            self.fsync, self.synchronous_commit, self.max_connections
        )
    }
}

impl PipelineReport {
    /// Table header for [`PipelineReport::table_row`].
    pub fn table_header() -> String {
        format!(
            "{:<11} {:>10} {:>7} {:>10} {:>10} {:>11} {:>11} {:>7} {:>9}  {}",
            "scenario",
            "ops/s",
            "ops",
            "p50 µs",
            "p99 µs",
            "cold p50",
            "cold p99",
            "ratio",
            "rss KiB",
            "note"
        )
    }

    /// One table line.
    pub fn table_row(&self) -> String {
        let opt = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        format!(
            "{:<11} {:>10.0} {:>7} {:>10} {:>10} {:>11} {:>11} {:>7} {:>9}  {}",
            self.scenario,
            self.ops_per_sec,
            self.ops,
            self.p50_us,
            self.p99_us,
            opt(self.cold_p50_us),
            opt(self.cold_p99_us),
            self.ratio
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}")),
            opt(self.worker_peak_rss_kib),
            self.note
        )
    }
}

/// The product every hot order buys.
const HOT: i32 = 1;

/// The bench's own connections while a case runs (set-up, progress polls).
pub(super) const BENCH_CONNECTIONS: u32 = 2;

/// `application_name` of the references' connections.
pub const REFERENCE_APPLICATION: &str = "lockstock-bench-reference";

/// `application_name` of the bench's own connections while the cases run.
pub const BENCH_APPLICATION: &str = "lockstock-bench";

impl PipelineBench {
    /// Runs the references and the three cases, calling `emit` after each.
    pub async fn run(
        &self,
        mut emit: impl FnMut(&PipelineReport),
    ) -> anyhow::Result<Vec<PipelineReport>> {
        let worker = sibling_binary("worker")?;
        let bench_url = bench_database(&self.database_url).await?;
        let total_concurrency = (self.workers * self.concurrency) as u32;
        let (reference_pool, _) =
            bench_store(&bench_url, total_concurrency, REFERENCE_APPLICATION).await?;
        let settings = PgSettings::read(&reference_pool).await?;
        let mut emit = |mut report: PipelineReport| {
            report.postgres = Some(settings.clone());
            emit(&report);
            report
        };

        let mut reports = Vec::new();
        let ceiling = emit(
            commit_rate(
                &reference_pool,
                total_concurrency as usize,
                self.reference_duration,
            )
            .await?,
        );
        let ceiling_rate = ceiling.ops_per_sec;
        reports.push(ceiling);
        let single = emit(commit_rate(&reference_pool, 1, self.reference_duration).await?);
        let single_rate = single.ops_per_sec;
        reports.push(single);
        // The references' connections would count against `max_connections` beside the
        // workers' pools: close them before any worker starts.
        reference_pool.close().await;
        let (pool, store) = bench_store(&bench_url, BENCH_CONNECTIONS, BENCH_APPLICATION).await?;

        let mut even_cold_p99 = None;
        let one = Quantity::new(1)?;
        for case in ["even", "hot", "mixed"] {
            let orders: Vec<PurchaseOrder> = (0..self.orders)
                .map(|i| {
                    let product = match case {
                        "even" => 1 + (i % 100) as i32,
                        "hot" => HOT,
                        _ if i % 2 == 0 => HOT,
                        _ => 2 + (i / 2 % 99) as i32,
                    };
                    Ok(PurchaseOrder::new(ProductId::new(product)?, one))
                })
                .collect::<anyhow::Result<_>>()?;
            let (mut report, _) = self
                .run_case(case, &worker, &bench_url, &store, &orders)
                .await?;
            match case {
                "even" => {
                    report.ratio = Some(report.ops_per_sec / ceiling_rate);
                    even_cold_p99 = report.cold_p99_us;
                    report.note =
                        format!("100 products; target ≥ 0.6 × pg-ceiling; {}", report.note);
                }
                "hot" => {
                    report.ratio = Some(report.ops_per_sec / single_rate);
                    report.note = format!("one product; target ≥ 0.5 × pg-single; {}", report.note);
                }
                _ => {
                    report.ratio = Some(report.ops_per_sec / ceiling_rate);
                    let cold = report.cold_p99_us.unwrap_or(0) as f64;
                    let even = even_cold_p99.unwrap_or(0).max(1) as f64;
                    report.note = format!(
                        "half hot; cold p99 = {:.2} × even p99 (target ≤ 2); {}",
                        cold / even,
                        report.note
                    );
                }
            }
            reports.push(emit(report));
        }
        pool.close().await;
        Ok(reports)
    }

    /// One case: `self.workers` worker processes decide `orders`; the report, and what the
    /// case cost besides (worker CPU, the bench's own Postgres polls).
    pub(super) async fn run_case(
        &self,
        case: &str,
        worker: &std::path::Path,
        bench_url: &str,
        store: &OrderStore,
        orders: &[PurchaseOrder],
    ) -> anyhow::Result<(PipelineReport, CaseCosts)> {
        store.create_products(100, 1_000_000_000).await?;
        sqlx::query("TRUNCATE orders").execute(store.pool()).await?;
        let namespace = format!("lockstock-bench-{}", Uuid::new_v4().simple());
        let queue_config =
            QueueConfig::namespaced(&namespace).with_worker_id(format!("{namespace}-bench"));
        // As the binaries connect: one server or a cluster (keys mapped into one slot).
        let queue = crate::services::SharedRedis::connect(&self.redis_url)
            .await?
            .queue(queue_config.clone())?;
        let args: Vec<String> = [
            "--redis-url",
            &self.redis_url,
            "--database-url",
            bench_url,
            "--queue-key",
            &queue_config.pending_key,
            "--dead-key",
            &queue_config.dead_key,
            "--lock-prefix",
            &format!("{namespace}-locks"),
            "--concurrency",
            &self.concurrency.to_string(),
            "--work-ms",
            "0",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(self.group_commit.then(|| "--group-commit".to_owned()))
        .chain(
            self.prefetch
                .into_iter()
                .flat_map(|prefetch| ["--prefetch".to_owned(), prefetch.to_string()]),
        )
        .collect();
        let fleet = Fleet::start(
            worker,
            &args,
            self.workers,
            &self.log_dir.join(case),
            &[("RUST_LOG", "warn")],
        )?;
        // Let every worker connect and block on the queue before the clock starts.
        wait_for_workers(&queue, self.workers).await?;

        let payloads: Vec<Vec<u8>> = orders.iter().map(PurchaseOrder::to_json).collect();
        let mut pushed_at: HashMap<Uuid, u64> = HashMap::with_capacity(orders.len());
        let started = Instant::now();
        for (chunk_orders, chunk) in orders.chunks(500).zip(payloads.chunks(500)) {
            let now = unix_us();
            for order in chunk_orders {
                pushed_at.insert(order.id.as_uuid(), now);
            }
            queue.push_batch(chunk).await?;
        }
        let deadline = started + Duration::from_secs(300);
        let mut polls = 0;
        loop {
            polls += 1;
            let decided: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
                .fetch_one(store.pool())
                .await?;
            if decided as usize >= orders.len() {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "case {case}: only {decided} of {} decided",
                orders.len()
            );
            tokio::time::sleep(PROGRESS_POLL).await;
        }
        let decided_rows: Vec<(Uuid, i32, i64)> = sqlx::query_as(
            "SELECT id, product_id, (extract(epoch FROM decided_at) * 1000000)::bigint FROM orders",
        )
        .fetch_all(store.pool())
        .await?;
        let last = decided_rows.iter().map(|r| r.2).max().unwrap_or(0) as u64;
        let first = pushed_at.values().copied().min().unwrap_or(0);
        let elapsed_secs = (last.saturating_sub(first)).max(1) as f64 / 1e6;
        let rss = fleet
            .pids()
            .iter()
            .filter_map(|pid| peak_rss_kib(*pid))
            .max();
        let worker_cpu_secs = fleet.pids().iter().filter_map(|pid| cpu_secs(*pid)).sum();
        fleet.stop(Duration::from_secs(10)).await;

        let mut all = Vec::new();
        let mut cold = Vec::new();
        for (id, product, decided_us) in &decided_rows {
            let Some(pushed) = pushed_at.get(id) else {
                continue;
            };
            let latency = Duration::from_micros((*decided_us as u64).saturating_sub(*pushed));
            all.push(latency);
            if *product != HOT {
                cold.push(latency);
            }
        }
        let has_cold = !cold.is_empty();
        let report = PipelineReport {
            scenario: case.into(),
            ops_per_sec: orders.len() as f64 / elapsed_secs,
            ops: orders.len() as u64,
            p50_us: percentile_us(&mut all, 50.0),
            p99_us: percentile_us(&mut all, 99.0),
            cold_p50_us: has_cold.then(|| percentile_us(&mut cold, 50.0)),
            cold_p99_us: has_cold.then(|| percentile_us(&mut cold, 99.0)),
            ratio: None,
            worker_peak_rss_kib: rss,
            postgres: None,
            note: format!(
                "{} workers × concurrency {}, work 0 ms",
                self.workers, self.concurrency
            ),
        };
        Ok((
            report,
            CaseCosts {
                worker_cpu_secs,
                polls,
            },
        ))
    }
}

/// How often a case looks whether every order is decided. Each look counts the `orders` rows (a
/// scan, ~2 ms at 20,000 rows), and the case's rate comes from the rows' `decided_at`, not from
/// when the bench noticed, so the bench need not look often: every 5 ms it ran 701 counts with
/// 1.6 s of execution in one 20,000-order run (`pg_stat_statements`), Postgres CPU taken from
/// the cases it measures. (Measured after the change: the figures stayed within their noise.)
const PROGRESS_POLL: Duration = Duration::from_millis(50);

/// What a case cost besides its report.
#[derive(Debug, Clone, Copy)]
pub(super) struct CaseCosts {
    /// CPU seconds the worker processes used (start to stop).
    pub(super) worker_cpu_secs: f64,
    /// Postgres transactions the bench itself ran to see the case finish.
    pub(super) polls: u64,
}

/// Single-row `UPDATE` commits by `tasks` tasks through `pool` for `duration`.
async fn commit_rate(
    pool: &PgPool,
    tasks: usize,
    duration: Duration,
) -> anyhow::Result<PipelineReport> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS bench_counters (id integer PRIMARY KEY, n bigint NOT NULL)",
    )
    .execute(pool)
    .await?;
    sqlx::query("INSERT INTO bench_counters SELECT g, 0 FROM generate_series(0, $1) g ON CONFLICT DO NOTHING")
        .bind(tasks as i32)
        .execute(pool)
        .await?;
    let started = Instant::now();
    let end = started + duration;
    let mut handles = Vec::new();
    for task in 0..tasks {
        let pool = pool.clone();
        handles.push(tokio::spawn(async move {
            let mut conn = pool.acquire().await?;
            let mut latencies = Vec::new();
            while Instant::now() < end {
                let t = Instant::now();
                sqlx::query("UPDATE bench_counters SET n = n + 1 WHERE id = $1")
                    .bind(task as i32)
                    .execute(&mut *conn)
                    .await?;
                latencies.push(t.elapsed());
            }
            conn.ping().await?;
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for handle in handles {
        latencies.extend(handle.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ops = latencies.len() as u64;
    Ok(PipelineReport {
        scenario: if tasks == 1 {
            "pg-single".into()
        } else {
            "pg-ceiling".into()
        },
        ops_per_sec: ops as f64 / elapsed,
        ops,
        p50_us: percentile_us(&mut latencies, 50.0),
        p99_us: percentile_us(&mut latencies, 99.0),
        note: format!("single-row UPDATE commits, {tasks} connection(s)"),
        ..PipelineReport::default()
    })
}

/// A pool of up to `connections` on the bench database, its connections named `application`
/// (as `pg_stat_activity` shows them), and the store over it, migrated.
pub(super) async fn bench_store(
    bench_url: &str,
    connections: u32,
    application: &str,
) -> anyhow::Result<(PgPool, OrderStore)> {
    let options = PgConnectOptions::from_str(bench_url)
        .context("parsing the bench database URL")?
        .application_name(application);
    let pool = PgPoolOptions::new()
        .max_connections(connections)
        .connect_with(options)
        .await
        .context("connecting to the bench database")?;
    let store = OrderStore::new(pool.clone());
    store
        .migrate()
        .await
        .context("migrating the bench database")?;
    Ok((pool, store))
}

/// Creates (if needed) the sibling database `<name>_bench` and returns its URL.
pub(super) async fn bench_database(database_url: &str) -> anyhow::Result<String> {
    let mut url = url::Url::parse(database_url).context("parsing the database URL")?;
    let name = url.path().trim_start_matches('/').to_owned();
    let bench_name = format!(
        "{}_bench",
        if name.is_empty() { "lockstock" } else { &name }
    );
    anyhow::ensure!(
        bench_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "database name {name:?} is not a plain identifier"
    );
    let mut admin = sqlx::PgConnection::connect(database_url)
        .await
        .context("connecting to Postgres")?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&bench_name)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        sqlx::query(&format!("CREATE DATABASE {bench_name}"))
            .execute(&mut admin)
            .await?;
    }
    url.set_path(&format!("/{bench_name}"));
    Ok(url.to_string())
}

/// Waits until `count` workers have registered their liveness.
async fn wait_for_workers(queue: &JobQueue, count: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if queue.stats().await?.live_workers >= count {
            // Registration happens just before the first pull; give the pulls a moment to block.
            tokio::time::sleep(Duration::from_millis(200)).await;
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "workers did not start within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Peak resident set size (`VmHWM`) of a process, KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// CPU seconds (user + system) a process has used so far, from `/proc/<pid>/stat` (clock ticks
/// at the usual 100 Hz).
pub(super) fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
