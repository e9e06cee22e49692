//! `lockctl chaos-multihost` (hidden; `scripts/multihost` calls it inside the network it built):
//! flags, entry point and report. Exits non-zero on a violation, after printing the report.

use std::{path::PathBuf, time::Duration};

use super::{
    cli::{format_report, print_verdict, progress},
    multihost::{MultihostConfig, MultihostReport, SCENARIOS, Topology, run_multihost},
};

/// `lockctl chaos-multihost`: partition scenarios over worker hosts, checked against the history.
///
/// Every address is explicit (no environment defaults): the run migrates and seeds the database
/// it is given, so it must never fall back to a shared one.
#[derive(Debug, clap::Args)]
pub struct MultihostArgs {
    /// Every host as NAMESPACE=IP, comma-separated (servers and workers).
    #[arg(long, value_delimiter = ',', required = true)]
    pub hosts: Vec<String>,
    /// The worker hosts (namespaces), comma-separated: one worker process each.
    #[arg(long, value_delimiter = ',', required = true)]
    pub worker_hosts: Vec<String>,
    /// The root end of host NS's veth is named PREFIX + NS.
    #[arg(long, default_value = "v-")]
    pub link_prefix: String,
    /// The queue's Redis (and the single-instance lock's).
    #[arg(long)]
    pub redis_url: String,
    /// The run's Postgres database (throwaway: it is migrated and its products reset).
    #[arg(long)]
    pub database_url: String,
    /// Three Redlock masters, comma-separated, the first being --redis-url's server (none: the
    /// Redlock scenario is skipped).
    #[arg(long, value_delimiter = ',')]
    pub redlock_urls: Vec<String>,
    /// Scenarios, comma-separated (default: all, in order).
    #[arg(long, value_delimiter = ',')]
    pub scenarios: Vec<String>,
    /// Seconds of load per scenario.
    #[arg(long, default_value_t = 30)]
    pub scenario_seconds: u64,
    /// Seed of the orders.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Products ordered.
    #[arg(long, default_value_t = 3)]
    pub products: i32,
    /// Starting stock of each product.
    #[arg(long, default_value_t = 5_000)]
    pub stock: i32,
    /// Product lock TTL of the workers, ms.
    #[arg(long, default_value_t = 2_000)]
    pub lock_ttl_ms: u64,
    /// Liveness TTL of the workers, ms.
    #[arg(long, default_value_t = 3_000)]
    pub liveness_ttl_ms: u64,
    /// The workers' slow step between the stock read and the commit, ms.
    #[arg(long, default_value_t = 150)]
    pub work_ms: u64,
    /// How long a worker holding a lock waits for Postgres before giving the lock up, ms
    /// (longer than the `both-cut` cut, so the cut-off worker's commit is still pending).
    #[arg(long, default_value_t = 10_000)]
    pub postgres_outage_ms: u64,
    /// Clock drift allowed by the window check, ms.
    #[arg(long, default_value_t = 10)]
    pub drift_ms: u64,
    /// Where the worker logs and `history.jsonl` go.
    #[arg(long)]
    pub dir: PathBuf,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// UNSAFE self-test: workers commit without the fence check; the run must find violations.
    #[arg(long, hide = true)]
    pub unsafe_skip_fence: bool,
}

/// Runs `lockctl chaos-multihost`; an error when a violation was found (the report is printed
/// first).
pub async fn multihost_command(args: MultihostArgs) -> anyhow::Result<()> {
    let topology = Topology {
        hosts: Topology::parse_hosts(&args.hosts)?,
        link_prefix: args.link_prefix,
        worker_hosts: args.worker_hosts,
        redis_url: args.redis_url,
        database_url: args.database_url,
        redlock_urls: args.redlock_urls,
    };
    let config = MultihostConfig {
        scenarios: if args.scenarios.is_empty() {
            SCENARIOS.iter().map(|s| (*s).to_owned()).collect()
        } else {
            args.scenarios
        },
        scenario_seconds: args.scenario_seconds,
        seed: args.seed,
        products: args.products.max(1),
        stock: args.stock,
        lock_ttl_ms: args.lock_ttl_ms,
        liveness_ttl_ms: args.liveness_ttl_ms,
        work_ms: args.work_ms,
        postgres_outage_ms: args.postgres_outage_ms,
        drift_ms: args.drift_ms,
        dir: args.dir,
        unsafe_skip_fence: args.unsafe_skip_fence,
    };
    let started = std::time::Instant::now();
    let report = run_multihost(&topology, &config, progress(args.json)).await?;
    print_verdict(
        &report,
        args.json,
        || format_multihost_report(&report, started.elapsed()),
        &report.chaos,
    )
}

/// The report as text: the scenarios, then `lockctl chaos`'s report.
pub fn format_multihost_report(report: &MultihostReport, took: Duration) -> String {
    let mut out = format!(
        "multi-host run, {:.0} s in all\nscenarios:\n",
        took.as_secs_f64()
    );
    for tally in &report.scenarios {
        out.push_str(&format!(
            "  {:<18} {} cuts of {} ms ({} right after a claim); locks held at the cut {}: kept through it {}, lost {}\n",
            tally.name,
            tally.cuts,
            tally
                .cut_ms
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join("/"),
            tally.mid_hold,
            tally.holds_at_cut,
            tally.holds_kept,
            tally.holds_lost
        ));
    }
    out.push_str(&format_report(&report.chaos));
    out
}
