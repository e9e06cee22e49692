//! The race demo (`lockctl demo`, run by `scripts/demo`): the seed's accuracy comparison with
//! real worker processes.
//!
//! Each round sets product 1's stock, enqueues 100 orders of one unit on a fresh queue, runs 4
//! worker processes until every order has an outcome, and counts: first with `--no-lock` (the
//! race: several workers read the same stock before any sells), then with locks.
//!
//! - Each run resets product 1's stock and deletes its earlier outcome rows: run the demo against
//!   a development database, not one holding real orders for product 1.
//! - When a locked run oversells, then [`DemoReport::locked_oversold`] is above zero (the demo's
//!   exit status says so).
//! - The unlocked run *usually* oversells; how much depends on timing, and nothing is promised.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context;
use serde::Serialize;

use crate::{
    order::{ProductId, Quantity},
    producer::OrderProducer,
    queue::{JobQueue, QueueConfig},
    store::OrderStore,
    tools::fleet::{Fleet, sibling_binary},
};

/// Settings of a demo run.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Redis URL handed to the workers.
    pub redis_url: String,
    /// Postgres URL handed to the workers.
    pub database_url: String,
    /// Orders per run.
    pub orders: usize,
    /// Starting stock of each round.
    pub rounds: Vec<i32>,
    /// Worker processes per run.
    pub workers: usize,
    /// The slow step, ms (the seed's 100).
    pub work_ms: u64,
    /// Where worker logs go.
    pub log_dir: PathBuf,
    /// Longest a run may take.
    pub run_timeout: Duration,
}

/// One run's counts.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// `no lock` or `with lock`.
    pub mode: &'static str,
    /// Starting stock.
    pub initial_stock: i32,
    /// Orders enqueued.
    pub orders: usize,
    /// Orders fulfilled.
    pub fulfilled: i64,
    /// Orders rejected.
    pub rejected: i64,
    /// Stock at the end.
    pub final_stock: i32,
    /// Units sold beyond the starting stock.
    pub oversold: i64,
    /// Seconds from enqueue to the last outcome.
    pub elapsed_secs: f64,
}

/// Every run of a demo.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DemoReport {
    /// Runs in order.
    pub runs: Vec<RunResult>,
}

impl DemoReport {
    /// Units oversold by the locked runs (must be 0).
    pub fn locked_oversold(&self) -> i64 {
        self.runs
            .iter()
            .filter(|r| r.mode == "with lock")
            .map(|r| r.oversold)
            .sum()
    }
}

/// The product the demo sells (the seed's iPhone 15).
const PRODUCT: i32 = 1;

/// Runs every round, printing a table per round through `print`.
pub async fn run_demo(
    config: &DemoConfig,
    mut print: impl FnMut(&str),
) -> anyhow::Result<DemoReport> {
    let worker = sibling_binary("worker")?;
    let store =
        OrderStore::connect_lazy(&config.database_url, 4).context("configuring Postgres")?;
    store.migrate().await.context("migrating Postgres")?;
    let product = ProductId::new(PRODUCT).context("demo product id")?;
    let mut report = DemoReport::default();
    for &stock in &config.rounds {
        print(&format!(
            "\n{} orders for product {PRODUCT} with stock {stock}, {} worker processes, {} ms slow step",
            config.orders, config.workers, config.work_ms
        ));
        print(&format!(
            "{:<10} {:>7} {:>10} {:>9} {:>12} {:>9} {:>9}",
            "mode", "orders", "fulfilled", "rejected", "final stock", "oversold", "elapsed"
        ));
        for locked in [false, true] {
            let run = run_once(config, &worker, &store, product, stock, locked).await?;
            print(&format!(
                "{:<10} {:>7} {:>10} {:>9} {:>12} {:>9} {:>8.2}s",
                run.mode,
                run.orders,
                run.fulfilled,
                run.rejected,
                run.final_stock,
                run.oversold,
                run.elapsed_secs
            ));
            report.runs.push(run);
        }
    }
    Ok(report)
}

async fn run_once(
    config: &DemoConfig,
    worker: &std::path::Path,
    store: &OrderStore,
    product: ProductId,
    stock: i32,
    locked: bool,
) -> anyhow::Result<RunResult> {
    store
        .set_stock(product, stock)
        .await
        .context("resetting the demo stock")?;
    store
        .delete_orders_for(product)
        .await
        .context("clearing the demo's earlier outcomes")?;
    let namespace = format!("lockstock-demo-{}", uuid::Uuid::new_v4().simple());
    let queue_config = QueueConfig::namespaced(&namespace);
    let queue = JobQueue::connect(&config.redis_url, queue_config.clone())
        .await
        .context("connecting to Redis")?;

    let args = worker_args(&queue_config, config.work_ms, locked);
    let log_dir = config.log_dir.join(format!(
        "{}-stock{stock}",
        if locked { "locked" } else { "unlocked" }
    ));
    let fleet = Fleet::start(worker, &args, config.workers, &log_dir, &worker_env(config))?;

    let started = Instant::now();
    let producer = OrderProducer::new(queue.clone());
    let quantity = Quantity::new(1).context("quantity")?;
    producer
        .push_generated(product, config.orders, quantity, |_| {})
        .await
        .context("enqueueing the demo orders")?;
    let deadline = started + config.run_timeout;
    let tally = loop {
        let tally = store.tally(Some(product)).await?;
        if (tally.fulfilled + tally.rejected) as usize >= config.orders {
            break tally;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {} orders decided after {:?}; worker logs in {}",
            tally.fulfilled + tally.rejected,
            config.orders,
            config.run_timeout,
            log_dir.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let elapsed = started.elapsed();
    fleet.stop(Duration::from_secs(10)).await;
    let final_stock = store.stock(product).await?;
    Ok(RunResult {
        mode: if locked { "with lock" } else { "no lock" },
        initial_stock: stock,
        orders: config.orders,
        fulfilled: tally.fulfilled,
        rejected: tally.rejected,
        final_stock,
        oversold: (tally.fulfilled_quantity - i64::from(stock)).max(0),
        elapsed_secs: elapsed.as_secs_f64(),
    })
}

/// The worker's command line: no connection URL, since a command line is visible to every user
/// of the host (`ps`); those go through [`worker_env`].
fn worker_args(queue: &QueueConfig, work_ms: u64, locked: bool) -> Vec<String> {
    let mut args = vec![
        "--queue-key".to_owned(),
        queue.pending_key.clone(),
        "--dead-key".to_owned(),
        queue.dead_key.clone(),
        "--work-ms".to_owned(),
        work_ms.to_string(),
    ];
    if !locked {
        args.push("--no-lock".to_owned());
    }
    args
}

/// The worker's environment: the connection URLs (credentials included) and the log level.
fn worker_env(config: &DemoConfig) -> [(&'static str, &str); 3] {
    [
        ("REDIS_URL", config.redis_url.as_str()),
        ("DATABASE_URL", config.database_url.as_str()),
        ("RUST_LOG", "warn"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Credentials reach the workers through the environment, never their command line.
    #[test]
    fn worker_command_lines_carry_no_credentials() {
        let queue = QueueConfig::namespaced("demo");
        for locked in [true, false] {
            let args = worker_args(&queue, 50, locked).join(" ");
            assert!(
                !args.contains("redis://") && !args.contains("postgres"),
                "{args}"
            );
        }
    }
}
