//! `lockctl chaos`'s flags and entry point: parse, run, print the report, exit non-zero on a
//! violation.

use std::{path::PathBuf, time::Duration};

use super::harness::{ChaosConfig, ChaosReport, FAULT_KINDS, run_chaos};
use crate::config::DatabaseArgs;

/// `lockctl chaos`: a seeded fault-injection run checked against its history.
#[derive(Debug, clap::Args)]
pub struct ChaosArgs {
    /// The configured Postgres (the run creates and drops its own database there).
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Seconds of load and faults.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Seed of the fault schedule and the orders (printed, to replay).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Worker processes.
    #[arg(long, default_value_t = 3)]
    pub workers: usize,
    /// Products ordered (fewer = more contention).
    #[arg(long, default_value_t = 3)]
    pub products: i32,
    /// Starting stock of each product.
    #[arg(long, default_value_t = 1_000)]
    pub stock: i32,
    /// Faults to inject, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    pub faults: Vec<String>,
    /// Product lock TTL of the workers, ms.
    #[arg(long, default_value_t = 1_000)]
    pub lock_ttl_ms: u64,
    /// How long one product-lock acquisition of a worker waits before it gives up and retries,
    /// ms.
    #[arg(long, default_value_t = 2_000)]
    pub lock_wait_ms: u64,
    /// The workers' longest single wait for a product lock, ms (default: theirs, 500). Longer
    /// waits let a paused waiter resume inside its wait (the paused-waiter self-test).
    #[arg(long, hide = true)]
    pub lock_wait_slice_ms: Option<u64>,
    /// Liveness TTL of the workers, ms.
    #[arg(long, default_value_t = 1_500)]
    pub liveness_ttl_ms: u64,
    /// Clock drift allowed by the window check, ms.
    #[arg(long, default_value_t = 10)]
    pub drift_ms: u64,
    /// The workers' slow step between the stock read and the commit, ms.
    #[arg(long, default_value_t = 40)]
    pub work_ms: u64,
    /// Where logs and `history.jsonl` go (default: a fresh temp directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Start a throwaway Postgres of the run's own (as root, run as the `postgres` user), so
    /// `pg-restart` can restart it; implied when `--faults` names `pg-restart`. Without it the
    /// run's database is on the configured server, which is never restarted.
    #[arg(long)]
    pub own_postgres: bool,
    /// UNSAFE self-test: workers commit without the fence check; the run must find violations.
    #[arg(long, hide = true)]
    pub unsafe_skip_fence: bool,
    /// UNSAFE self-test: workers' lock clients keep stale hand-offs (a waiter paused past its
    /// hand-off holds a guard beside the next holder); the run must find `window_overlap`.
    #[arg(long, hide = true)]
    pub unsafe_keep_stale_handoffs: bool,
}

/// Runs `lockctl chaos`; an error when a violation was found (the report is printed first).
pub async fn chaos_command(args: ChaosArgs) -> anyhow::Result<()> {
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!(
            "lockstock-chaos-{}-{}",
            args.seed,
            std::process::id()
        ))
    });
    let faults = if args.faults.is_empty() {
        FAULT_KINDS.iter().map(|s| (*s).to_owned()).collect()
    } else {
        args.faults.clone()
    };
    let config = ChaosConfig {
        database_url: args.database.database_url.clone(),
        duration: Duration::from_secs(args.seconds),
        seed: args.seed,
        workers: args.workers.max(1),
        products: args.products.max(1),
        stock: args.stock,
        faults,
        lock_ttl_ms: args.lock_ttl_ms,
        lock_wait_ms: args.lock_wait_ms,
        lock_wait_slice_ms: args.lock_wait_slice_ms,
        liveness_ttl_ms: args.liveness_ttl_ms,
        drift_ms: args.drift_ms,
        work_ms: args.work_ms,
        dir,
        own_postgres: args.own_postgres || args.faults.iter().any(|f| f == "pg-restart"),
        unsafe_skip_fence: args.unsafe_skip_fence,
        unsafe_keep_stale_handoffs: args.unsafe_keep_stale_handoffs,
    };
    let report = run_chaos(&config, progress(args.json)).await?;
    print_verdict(&report, args.json, || format_report(&report), &report)
}

/// Where a run's progress lines go: stderr, unless the output is `--json`.
pub(super) fn progress(json: bool) -> impl FnMut(&str) {
    move |line| {
        if !json {
            eprintln!("{line}");
        }
    }
}

/// Prints `report` (one JSON line with `json`, else `text`) and fails, naming the count and the
/// seed, when `chaos` found violations: how `lockctl chaos` and `lockctl chaos-multihost` end.
pub(super) fn print_verdict(
    report: &impl serde::Serialize,
    json: bool,
    text: impl FnOnce() -> String,
    chaos: &ChaosReport,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        print!("{}", text());
    }
    anyhow::ensure!(
        chaos.violations.is_empty(),
        "{} violations (seed {})",
        chaos.violations.len(),
        chaos.seed
    );
    Ok(())
}

/// The report as text.
pub fn format_report(report: &ChaosReport) -> String {
    let mut out = format!(
        "seed {}  {:.0} s  {} workers\norders {} (+{} garbage)  fulfilled {}  rejected {}  history events {}\nfaults:\n",
        report.seed,
        report.seconds,
        report.workers,
        report.orders,
        report.garbage,
        report.fulfilled,
        report.rejected,
        report.events
    );
    for (kind, count) in &report.faults {
        out.push_str(&format!("  {kind:<16} {count}\n"));
    }
    for (kind, why) in &report.skipped {
        out.push_str(&format!("  {kind:<16} skipped: {why}\n"));
    }
    out.push_str(&format!(
        "violations: {}\n",
        if report.violations.is_empty() {
            "0".to_owned()
        } else {
            report.violations.len().to_string()
        }
    ));
    for violation in report.violations.iter().take(20) {
        out.push_str(&format!("  [{}] {}\n", violation.rule, violation.message));
        for item in &violation.evidence {
            out.push_str(&format!("      {item}\n"));
        }
    }
    out.push_str(&format!("history: {}\n", report.history.display()));
    out
}
