//! `lockctl`: the operator's command line: benchmarks (and, with later issues, status and
//! administration).

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use lockstock::{
    bench::{
        Report,
        lock::{LockBench, bench_client, format_run, run_contender},
    },
    config::RedisArgs,
    telemetry::init_tracing,
};

#[derive(Debug, Parser)]
#[command(name = "lockctl", version, about = "Operate and measure lockstock")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Benchmark the lock against the raw Redis round trip on the same server.
    Bench(BenchArgs),
    /// (internal) one contender process of `bench --processes`.
    #[command(hide = true)]
    BenchContender(ContenderArgs),
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    #[command(flatten)]
    redis: RedisArgs,
    /// Run only this scenario (repeatable): raw, uncontended, concurrent, contended.
    #[arg(long = "scenario")]
    scenarios: Vec<String>,
    /// Seconds each of raw/uncontended/concurrent runs.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Seconds the contended scenario runs.
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing("warn");
    match Cli::parse().command {
        Command::Bench(args) => bench(args).await,
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
