//! `lockctl`: the operator's command line: migrations, stock, the race demo and benchmarks.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand};
use lockstock::{
    config::{DatabaseArgs, LockPrefixArgs, LogArgs, QueueArgs, RedisArgs, mask_url},
    observe::{StatusReport, dead_letters_table, escape_control},
    order::{OrderId, ProductId},
    queue::{DeadLetterAction, DeadLetterFilter, JobQueue, MAX_DEAD_LETTERS},
    services,
    store::OrderStore,
    telemetry::init_tracing,
    tools::{
        bench::{
            Report,
            lock::{LockBench, bench_client, format_run, run_contender},
            pipeline::{PipelineBench, PipelineReport},
            scale::{ScaleBench, ScalePoint},
        },
        demo::{DemoConfig, run_demo},
    },
};
use lockstock_lock::{LockClient, LockOwner};

#[derive(Debug, Parser)]
#[command(name = "lockctl", version, about = "Operate and measure lockstock")]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply the database migrations (safe while workers start at the same time).
    Migrate {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Read or set a product's stock.
    Stock {
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(subcommand)]
        action: StockAction,
    },
    /// Queue depth, workers and their in-flight orders, dead letters, held locks.
    Status {
        #[command(flatten)]
        keys: KeysArgs,
        /// One JSON document: `{"queue": {...}, "locks": [...]}`, the bodies of the API's
        /// `GET /queue` (without dead letters) and `GET /locks`.
        #[arg(long)]
        json: bool,
    },
    /// Where an order is: its outcome, or pending / in flight at which worker / dead-lettered.
    Order {
        /// The order id (UUID).
        order_id: String,
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        keys: KeysArgs,
        /// Pending and dead-letter entries searched (newest first).
        #[arg(long, default_value_t = 100_000)]
        scan_limit: usize,
        /// One JSON document: `{"order_id", "status", ...}` (`status`: the outcome, or `pending`,
        /// `in_flight`, `dead_lettered`, `unknown`).
        #[arg(long)]
        json: bool,
    },
    /// List or requeue the dead letters.
    DeadLetters {
        #[command(subcommand)]
        action: DeadLettersAction,
    },
    /// The race demo: 100 orders, 4 worker processes, without and with locks.
    Demo(DemoArgs),
    /// Benchmark the lock against the raw Redis round trip on the same server.
    Bench(BenchArgs),
    /// Benchmark the order pipeline end to end against Postgres's own commit rate.
    BenchPipeline(BenchPipelineArgs),
    /// Fault injection: real workers under a seeded nemesis, the history checked afterwards.
    Chaos(lockstock::tools::chaos::cli::ChaosArgs),
    /// (internal) the multi-host partition run `scripts/multihost` starts inside its network.
    #[command(hide = true)]
    ChaosMultihost(lockstock::tools::chaos::multihost_cli::MultihostArgs),
    /// (internal) one contender process of `bench --processes`.
    #[command(hide = true)]
    BenchContender(ContenderArgs),
    /// Draw the benchmark charts (SVG) from the benches' JSON lines (see `scripts/bench-charts`).
    #[command(hide = true)]
    BenchCharts {
        /// Directory of `*.jsonl` bench outputs, `commands.txt` and `load.txt`.
        #[arg(long)]
        input: PathBuf,
        /// Where the SVGs go.
        #[arg(long, default_value = "docs/charts")]
        out: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    #[command(flatten)]
    redis: RedisArgs,
    /// Run only this scenario (repeatable): raw, uncontended, concurrent, contended,
    /// redlock-uncontended, redlock-contended, semaphore, rwlock, fair.
    #[arg(long = "scenario")]
    scenarios: Vec<String>,
    /// Redlock instances for the redlock-* scenarios (comma-separated, odd, at least 3);
    /// unset = start three local redis-server processes for the run.
    #[arg(
        long,
        env = "LOCK_REDIS_URLS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    lock_redis_urls: Vec<String>,
    /// Seconds each of raw/uncontended/concurrent runs.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Seconds each contended scenario runs (contended, redlock-contended, semaphore, rwlock,
    /// fair).
    #[arg(long, default_value_t = 10.0)]
    contended_seconds: f64,
    /// Tasks in the concurrent scenario.
    #[arg(long, default_value_t = 50)]
    tasks: usize,
    /// Contenders in the contended scenario.
    #[arg(long, default_value_t = 10)]
    contenders: usize,
    /// Run the contenders as separate processes.
    #[arg(long)]
    processes: bool,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

/// What `lockctl stock get --json` prints (stable field names).
#[derive(Debug, serde::Serialize)]
struct StockLine {
    /// The product id.
    product_id: i32,
    /// Its stock.
    stock: i32,
}

#[derive(Debug, Subcommand)]
enum StockAction {
    /// Print a product's stock.
    Get {
        /// Product id.
        product: i32,
        /// Print `{"product_id": n, "stock": n}` instead of the bare number.
        #[arg(long)]
        json: bool,
    },
    /// Set a product's stock.
    Set {
        /// Product id.
        product: i32,
        /// New stock.
        stock: i32,
    },
}

#[derive(Debug, clap::Args)]
struct DemoArgs {
    #[command(flatten)]
    redis: RedisArgs,
    #[command(flatten)]
    database: DatabaseArgs,
    /// Orders per run.
    #[arg(long, default_value_t = 100)]
    orders: usize,
    /// Starting stock of each round (repeatable).
    #[arg(long = "stock", default_values_t = vec![1, 10])]
    stocks: Vec<i32>,
    /// Worker processes per run.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// The slow step between the stock check and the sale, ms.
    #[arg(long, default_value_t = 100)]
    work_ms: u64,
    /// Where the workers' logs go.
    #[arg(long, default_value = ".local/demo")]
    log_dir: PathBuf,
    /// Print the results as JSON after the tables.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct BenchPipelineArgs {
    #[command(flatten)]
    redis: RedisArgs,
    #[command(flatten)]
    database: DatabaseArgs,
    /// Worker processes.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Concurrency of each worker.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Orders per case.
    #[arg(long, default_value_t = 4000)]
    orders: usize,
    /// Seconds each Postgres reference runs.
    #[arg(long, default_value_t = 3.0)]
    reference_seconds: f64,
    /// Where worker logs go.
    #[arg(long, default_value = ".local/bench-pipeline")]
    log_dir: PathBuf,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Measure the scaling curve instead: 1, 2, 4 and 8 worker processes × 1, 10 and 100
    /// products on `REDIS_URL` (one server or a cluster), with Redis commands and Postgres
    /// transactions per order and Redis and worker CPU.
    #[arg(long)]
    scale: bool,
    /// Start the workers with `--group-commit` (several product holds per transaction).
    #[arg(long)]
    group_commit: bool,
    /// Start the workers with this `--prefetch` (orders reserved beside the batches being
    /// decided; unset = the worker's default): more parked orders per product, larger batches.
    #[arg(long)]
    prefetch: Option<usize>,
}

#[derive(Debug, clap::Args)]
struct ContenderArgs {
    #[command(flatten)]
    redis: RedisArgs,
    #[arg(long)]
    prefix: String,
    #[arg(long)]
    key: String,
    #[arg(long)]
    id: usize,
    #[arg(long)]
    start_at_us: u64,
    #[arg(long)]
    end_at_us: u64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing("warn", cli.log.format());
    let command = cli.command;
    // A contender process runs one task; a single-threaded runtime saves it the hop between
    // the I/O driver and a worker thread on every hand-off.
    let runtime = match command {
        Command::BenchContender(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    }
    .context("starting the async runtime")?;
    runtime.block_on(run(command))
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Migrate { database } => {
            let store = connect_store(&database).await?;
            println!("migrations applied to {}", mask_url(&database.database_url));
            drop(store);
            Ok(())
        }
        Command::Stock { database, action } => {
            let store = check_store(&database).await?;
            match action {
                StockAction::Get { product, json } => {
                    let stock = store.stock(ProductId::new(product)?).await?;
                    if json {
                        let line = StockLine {
                            product_id: product,
                            stock,
                        };
                        println!("{}", serde_json::to_string(&line)?);
                    } else {
                        println!("{stock}");
                    }
                }
                StockAction::Set { product, stock } => {
                    store.set_stock(ProductId::new(product)?, stock).await?;
                    println!("product {product} stock set to {stock}");
                }
            }
            Ok(())
        }
        Command::Status { keys, json } => status(keys, json).await,
        Command::Order {
            order_id,
            database,
            keys,
            scan_limit,
            json,
        } => order(&order_id, &database, &keys, scan_limit, json).await,
        Command::DeadLetters { action } => dead_letters(action).await,
        Command::Demo(args) => demo(args).await,
        Command::Chaos(args) => lockstock::tools::chaos::cli::chaos_command(args).await,
        Command::ChaosMultihost(args) => {
            lockstock::tools::chaos::multihost_cli::multihost_command(args).await
        }
        Command::Bench(args) => bench(args).await,
        Command::BenchPipeline(args) => bench_pipeline(args).await,
        Command::BenchCharts { input, out } => {
            let machine = lockstock::tools::bench::charts::machine_from_proc();
            let written = lockstock::tools::bench::charts::render_all(&input, &out, machine)?;
            anyhow::ensure!(
                !written.is_empty(),
                "no bench output in {}",
                input.display()
            );
            print!("{}", lockstock::tools::bench::charts::summary(&written));
            Ok(())
        }
        Command::BenchContender(args) => {
            let client = bench_client(
                &args.redis.redis_url,
                &args.prefix,
                &format!("contender-{}", args.id),
            )
            .await?;
            let run =
                run_contender(client, args.key, args.id, args.start_at_us, args.end_at_us).await?;
            print!("{}", format_run(&run));
            Ok(())
        }
    }
}

async fn connect_store(database: &DatabaseArgs) -> anyhow::Result<OrderStore> {
    Ok(services::open_store_with(database, 2, true).await?)
}

/// A store whose schema is checked, not migrated (migrating is `lockctl migrate`'s job).
async fn check_store(database: &DatabaseArgs) -> anyhow::Result<OrderStore> {
    Ok(services::open_store_with(database, 2, false).await?)
}

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.orders > 0 && args.workers > 0,
        "--orders and --workers must be above zero"
    );
    let config = DemoConfig {
        redis_url: args.redis.redis_url,
        database_url: args.database.database_url,
        orders: args.orders,
        rounds: args.stocks,
        workers: args.workers,
        work_ms: args.work_ms,
        log_dir: args.log_dir,
        run_timeout: Duration::from_secs(120),
    };
    let report = run_demo(&config, |line| println!("{line}")).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    let oversold = report.locked_oversold();
    if oversold > 0 {
        anyhow::bail!("the locked runs oversold {oversold} units: the lock failed");
    }
    println!("\nlocked runs oversold nothing.");
    Ok(())
}

async fn bench_pipeline(args: BenchPipelineArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.workers > 0 && args.concurrency > 0 && args.orders > 0,
        "counts must be above zero"
    );
    anyhow::ensure!(
        args.reference_seconds > 0.0,
        "--reference-seconds must be above zero"
    );
    if args.scale {
        return bench_scale(args).await;
    }
    let bench = PipelineBench {
        redis_url: args.redis.redis_url,
        database_url: args.database.database_url,
        workers: args.workers,
        concurrency: args.concurrency,
        orders: args.orders,
        reference_duration: Duration::from_secs_f64(args.reference_seconds),
        log_dir: args.log_dir,
        group_commit: args.group_commit,
        prefetch: args.prefetch,
    };
    let json = args.json;
    let mut header = !json;
    bench
        .run(|report| {
            if json {
                println!("{}", serde_json::to_string(report).unwrap_or_default());
                return;
            }
            if std::mem::take(&mut header) {
                if let Some(settings) = &report.postgres {
                    println!("{}", settings.describe());
                }
                println!("{}", PipelineReport::table_header());
            }
            println!("{}", report.table_row());
        })
        .await?;
    Ok(())
}

/// `bench-pipeline --scale`: the table (or JSON lines) of [`ScaleBench`].
async fn bench_scale(args: BenchPipelineArgs) -> anyhow::Result<()> {
    let bench = ScaleBench {
        redis_url: args.redis.redis_url,
        database_url: args.database.database_url,
        workers: vec![1, 2, 4, 8],
        products: vec![1, 10, 100],
        concurrency: args.concurrency,
        orders: args.orders,
        log_dir: args.log_dir,
        group_commit: args.group_commit,
        prefetch: args.prefetch,
    };
    if !args.json {
        println!("{}", ScalePoint::table_header());
    }
    bench
        .run(|point| {
            if args.json {
                println!("{}", serde_json::to_string(point).unwrap_or_default());
            } else {
                println!("{}", point.table_row());
            }
        })
        .await?;
    Ok(())
}

async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.seconds > 0.0 && args.contended_seconds > 0.0,
        "--seconds must be above zero"
    );
    anyhow::ensure!(
        args.tasks > 0 && args.contenders > 0,
        "--tasks and --contenders must be above zero"
    );
    let bench = LockBench {
        url: args.redis.redis_url.clone(),
        duration: Duration::from_secs_f64(args.seconds),
        contended_duration: Duration::from_secs_f64(args.contended_seconds),
        tasks: args.tasks,
        contenders: args.contenders,
        processes: if args.processes {
            Some(std::env::current_exe().context("finding lockctl's own path for --processes")?)
        } else {
            None
        },
        lock_urls: args
            .lock_redis_urls
            .iter()
            .map(|url| url.trim().to_owned())
            .filter(|url| !url.is_empty())
            .collect(),
    };
    if !args.json {
        println!("{}", Report::table_header());
    }
    let json = args.json;
    bench
        .run(&args.scenarios, |report| {
            if json {
                println!("{}", serde_json::to_string(report).unwrap_or_default());
            } else {
                println!("{}", report.table_row());
            }
        })
        .await?;
    Ok(())
}

/// Where the queue and the locks live: the workers' flags, with the same defaults.
#[derive(Debug, clap::Args)]
struct KeysArgs {
    #[command(flatten)]
    redis: RedisArgs,
    #[command(flatten)]
    queue: QueueArgs,
    #[command(flatten)]
    locks: LockPrefixArgs,
}

#[derive(Debug, Subcommand)]
enum DeadLettersAction {
    /// Print the newest dead letters.
    List {
        #[command(flatten)]
        keys: KeysArgs,
        /// How many to show.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// One JSON object per line, newest first: `{"payload", "reason", "worker", "at"}`
        /// (`at` in Unix milliseconds).
        #[arg(long)]
        json: bool,
    },
    /// Push dead letters back onto the pending list, oldest first, in batches of 1,000 (entries
    /// whose payload was truncated are never requeued).
    Requeue {
        #[command(flatten)]
        keys: KeysArgs,
        #[command(flatten)]
        filter: DeadLetterFilterArgs,
    },
    /// Delete dead letters, oldest first, in batches of 1,000.
    Purge {
        #[command(flatten)]
        keys: KeysArgs,
        #[command(flatten)]
        filter: DeadLetterFilterArgs,
    },
}

/// Which dead letters `requeue` / `purge` touch (all by default).
#[derive(Debug, clap::Args)]
struct DeadLetterFilterArgs {
    /// Only entries whose reason starts with this (e.g. `not_json`).
    #[arg(long)]
    reason: Option<String>,
    /// Only entries at least this old: a number with a unit, `90s`, `15m`, `2h`, `7d`.
    #[arg(long, value_parser = parse_age)]
    older_than: Option<Duration>,
    /// At most this many entries.
    #[arg(long)]
    limit: Option<usize>,
}

impl DeadLetterFilterArgs {
    fn filter(self) -> DeadLetterFilter {
        DeadLetterFilter {
            reason: self.reason,
            older_than: self.older_than,
            limit: self.limit,
        }
    }
}

/// `90s`, `15m`, `2h`, `7d` as a duration.
fn parse_age(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(text.trim_end_matches(char::is_alphabetic).len());
    let number: u64 = number
        .parse()
        .map_err(|_| format!("expected a number with a unit (s, m, h, d), got {text:?}"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit in {text:?}: use s, m, h or d")),
    };
    Ok(Duration::from_secs(number.saturating_mul(seconds)))
}

/// A queue handle (that never consumes) and a lock client on the given keys.
async fn connect_keys(keys: &KeysArgs) -> anyhow::Result<(JobQueue, LockClient)> {
    let redis = services::connect_redis(&keys.redis).await?;
    let queue = redis.queue(keys.queue.queue_config("lockctl"))?;
    let lock_config = keys
        .locks
        .lock_config(LockOwner::default())
        .context("configuring the locks")?;
    Ok((queue, redis.lock_client(lock_config)))
}

async fn status(keys: KeysArgs, json: bool) -> anyhow::Result<()> {
    let (queue, locks) = connect_keys(&keys).await?;
    let report = StatusReport::collect(&queue, &locks)
        .await
        .context("reading the queue and the locks")?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}

/// `lockctl order <id>`: the stored outcome, else where the queue holds the order.
async fn order(
    raw: &str,
    database: &DatabaseArgs,
    keys: &KeysArgs,
    scan_limit: usize,
    json: bool,
) -> anyhow::Result<()> {
    let id: OrderId = raw
        .parse()
        .map_err(|_| anyhow::anyhow!("order id must be a UUID, got {raw:?}"))?;
    let store = check_store(database).await?;
    let mut report = serde_json::json!({ "order_id": id.to_string() });
    let text = if let Some(record) = store.order(id).await.context("reading the outcome")? {
        report["status"] = record.outcome.status().into();
        report["reason"] = record.reason_text.clone().into();
        report["fence"] = record.fence.into();
        report["worker"] = record.worker.clone().into();
        report["decided_at"] = record.decided_at.to_rfc3339().into();
        format!(
            "order {id}: {}{} by {} at {} (fence {})",
            record.outcome.status(),
            record
                .reason_text
                .as_deref()
                .map_or(String::new(), |r| format!(" ({})", escape_control(r))),
            record.worker.as_deref().unwrap_or("?"),
            record.decided_at.to_rfc3339(),
            record.fence.map_or("none".to_owned(), |f| f.to_string()),
        )
    } else {
        let (queue, _) = connect_keys(keys).await?;
        let found = queue
            .locate(id.to_string().as_bytes(), scan_limit)
            .await
            .context("searching the queue")?;
        report["location"] = serde_json::to_value(&found)?;
        if let Some((worker, alive)) = found.in_flight_at.first() {
            report["status"] = "in_flight".into();
            let state = if *alive {
                "alive"
            } else {
                "not alive: it will be recovered"
            };
            format!("order {id}: in flight at worker {worker} ({state})")
        } else if let Some(ahead) = found.pending_position {
            report["status"] = "pending".into();
            format!("order {id}: pending, {ahead} message(s) ahead of it")
        } else if found.dead_lettered {
            report["status"] = "dead_lettered".into();
            format!("order {id}: dead-lettered (see `lockctl dead-letters list`)")
        } else {
            report["status"] = "unknown".into();
            format!(
                "order {id}: no outcome, not in flight, not among the {scan_limit} newest pending or dead letters"
            )
        }
    };
    if json {
        println!("{report}");
    } else {
        println!("{text}");
    }
    Ok(())
}

async fn dead_letters(action: DeadLettersAction) -> anyhow::Result<()> {
    match action {
        DeadLettersAction::List { keys, limit, json } => {
            let (queue, _) = connect_keys(&keys).await?;
            let letters = queue
                .dead_letters(limit)
                .await
                .context("reading the dead letters")?;
            if json {
                for letter in &letters {
                    println!("{}", serde_json::to_string(letter)?);
                }
            } else {
                print!("{}", dead_letters_table(&letters));
                let dropped = queue
                    .dead_dropped()
                    .await
                    .context("reading the drop count")?;
                if dropped > 0 {
                    println!(
                        "({dropped} older dead letter(s) were dropped: the list keeps the newest {MAX_DEAD_LETTERS})"
                    );
                }
            }
        }
        DeadLettersAction::Requeue { keys, filter } => {
            let (queue, _) = connect_keys(&keys).await?;
            let done = queue
                .move_dead_letters(DeadLetterAction::Requeue, &filter.filter())
                .await
                .context("requeueing the dead letters")?;
            println!(
                "requeued {} dead letter(s) onto {} ({} left in place)",
                done.moved,
                escape_control(&keys.queue.queue_key),
                done.kept
            );
        }
        DeadLettersAction::Purge { keys, filter } => {
            let (queue, _) = connect_keys(&keys).await?;
            let done = queue
                .move_dead_letters(DeadLetterAction::Purge, &filter.filter())
                .await
                .context("purging the dead letters")?;
            println!("purged {} dead letter(s) ({} left)", done.moved, done.kept);
        }
    }
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
