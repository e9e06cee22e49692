//! `producer`: enqueue purchase orders onto the Redis order queue.
//!
//! `producer --product ID --count N [--quantity Q]` pushes N generated orders;
//! `producer --file FILE` (`-` for stdin) pushes one order per JSON line. Input is validated in
//! full before anything is pushed; bad input exits non-zero with the offending line number.
//!
//! Every batch is recorded in Postgres's durable intake (`--database-url` / `DATABASE_URL`)
//! before it is pushed, so an enqueued order survives Redis losing its data. `--no-intake` skips
//! that for producers that cannot reach Postgres, and loses the guarantee.

use std::{
    fs::File,
    io::{self, BufReader, IsTerminal},
    path::PathBuf,
};

use anyhow::Context;
use clap::{ArgGroup, Parser};
use indicatif::{ProgressBar, ProgressStyle};
use lockstock::{
    config::{DatabaseArgs, LogArgs, QueueArgs, RedisArgs},
    order::{ProductId, PurchaseOrder, Quantity},
    producer::{OrderProducer, parse_json_lines},
    queue::default_worker_id,
    services,
    telemetry::init_tracing,
};

/// Show a progress bar (on a terminal) from this many orders up.
const PROGRESS_FROM: usize = 10_000;

#[derive(Debug, Parser)]
#[command(
    name = "producer",
    version,
    about = "Enqueue purchase orders onto the Redis order queue"
)]
#[command(group(ArgGroup::new("source").required(true).args(["product", "file"])))]
struct Cli {
    #[command(flatten)]
    redis: RedisArgs,
    #[command(flatten)]
    database: DatabaseArgs,
    #[command(flatten)]
    queue: QueueArgs,
    #[command(flatten)]
    log: LogArgs,
    /// Push to Redis only, without recording orders in Postgres first. LOSES THE GUARANTEE: an
    /// order that is only in Redis is gone if Redis loses its data before a worker decides it.
    #[arg(long)]
    no_intake: bool,
    /// Apply the database migrations at start (the quick start). Without it the producer only
    /// checks that the schema has what its intake needs (newer migrations are fine): run
    /// `lockctl migrate`. Not used with --no-intake.
    #[arg(long)]
    migrate: bool,
    /// Generate orders for this product id.
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..), requires = "count")]
    product: Option<i32>,
    /// How many orders to generate.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), requires = "product")]
    count: Option<u64>,
    /// Units per generated order.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..), requires = "product")]
    quantity: i32,
    /// Read orders as JSON lines from FILE (`-` for stdin): {"id"?, "product_id", "quantity"}.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["product", "count", "quantity"])]
    file: Option<PathBuf>,
}

/// What to push, validated before connecting.
enum Orders {
    Generated {
        product: ProductId,
        count: usize,
        quantity: Quantity,
    },
    Listed(Vec<PurchaseOrder>),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing("warn", cli.log.format());

    let orders = read_orders(&cli)?;
    let total = match &orders {
        Orders::Generated { count, .. } => *count,
        Orders::Listed(orders) => orders.len(),
    };

    let redis = services::connect_redis(&cli.redis).await?;
    let queue_key = &cli.queue.queue_key;
    let mut producer =
        OrderProducer::new(redis.queue(cli.queue.queue_config(default_worker_id()))?);
    if cli.no_intake {
        tracing::warn!("--no-intake: orders live only in Redis until decided");
    } else {
        producer =
            producer.with_intake(services::open_store_with(&cli.database, 2, cli.migrate).await?);
    }

    let bar = progress_bar(total);
    let progress = |done: usize| bar.set_position(u64::try_from(done).unwrap_or(u64::MAX));
    let pushed = match orders {
        Orders::Generated {
            product,
            count,
            quantity,
        } => {
            producer
                .push_generated(product, count, quantity, progress)
                .await
        }
        Orders::Listed(orders) => producer.push_orders(&orders, progress).await,
    }
    .with_context(|| format!("pushing orders to {queue_key}"))?;
    bar.finish_and_clear();

    tracing::info!(pushed, queue = %queue_key, "orders enqueued");
    println!("enqueued {pushed} orders to {queue_key}");
    Ok(())
}

/// Builds or reads and validates the orders the flags ask for.
fn read_orders(cli: &Cli) -> anyhow::Result<Orders> {
    if let Some(path) = &cli.file {
        let orders = if path.as_os_str() == "-" {
            parse_json_lines(io::stdin().lock()).context("invalid orders on stdin")?
        } else {
            let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
            parse_json_lines(BufReader::new(file))
                .with_context(|| format!("invalid orders in {}", path.display()))?
        };
        return Ok(Orders::Listed(orders));
    }
    // clap guarantees product and count together when there is no file, and their ranges.
    let (Some(product), Some(count)) = (cli.product, cli.count) else {
        anyhow::bail!("either --product with --count, or --file, is required");
    };
    Ok(Orders::Generated {
        product: ProductId::new(product)?,
        count: usize::try_from(count).context("--count is too large for this platform")?,
        quantity: Quantity::new(cli.quantity)?,
    })
}

/// A progress bar on a terminal for long runs; hidden otherwise.
fn progress_bar(total: usize) -> ProgressBar {
    if total < PROGRESS_FROM || !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(u64::try_from(total).unwrap_or(u64::MAX));
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} orders ({per_sec}, eta {eta})")
    {
        bar.set_style(style);
    }
    bar
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// The flag definitions are consistent (clap's own checks).
    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
