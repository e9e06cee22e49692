//! `api`: the HTTP API and live page (the seed's Express server, grown into the operator's
//! window). Stop with SIGTERM/SIGINT: it stops accepting connections and answers the requests in
//! flight before exiting.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;
use clap::Parser;
use lockstock::{
    api::{ApiConfig, AppState, check_bind, serve},
    config::{DatabaseArgs, LockArgs, LogArgs, QueueArgs, RedisArgs, WaitArgs, mask_url},
    services,
    shutdown::spawn_signal_handler,
    telemetry::init_tracing,
};
use lockstock_lock::LockOwner;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "api",
    version,
    about = "HTTP API: purchases, orders, locks, queue, metrics and a live page"
)]
struct Cli {
    #[command(flatten)]
    wait: WaitArgs,
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
    /// Address to listen on (host:port). Without API_TOKEN only loopback addresses are allowed.
    #[arg(long, env = "API_BIND", default_value = "127.0.0.1:3000")]
    bind: String,
    /// Listen on a non-loopback address even without API_TOKEN (mutating routes are then open).
    #[arg(long)]
    allow_public: bool,
    /// Bearer token required by mutating routes (POST). Read from the environment only, so it
    /// never shows in `ps`.
    #[arg(skip)]
    api_token: Option<String>,
    /// The seed's simulated slow step between reading the stock and selling, in milliseconds.
    #[arg(long, default_value_t = 100)]
    work_ms: u64,
    /// How long a locked purchase waits for the product's lock before answering 503, in ms.
    #[arg(long, default_value_t = 10_000)]
    lock_wait_ms: u64,
    /// Largest accepted request body, in bytes.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(64..=1_048_576))]
    body_limit: u64,
    /// Postgres connections in this process's pool.
    #[arg(long, default_value_t = 16)]
    max_connections: u32,
    /// How long any request may take before the API answers 408, in milliseconds.
    #[arg(long, env = "REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    request_timeout_ms: u64,
    /// How long shutdown waits for requests in flight, in milliseconds.
    #[arg(long, default_value_t = 15_000)]
    drain_timeout_ms: u64,
    /// How long a connection may take to send its request head before it is closed, in ms.
    #[arg(long, default_value_t = 10_000)]
    header_read_timeout_ms: u64,
    /// Most HTTP connections open at once (beyond it, new ones wait in the listen backlog).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    max_open_connections: u64,
    /// Most requests handled at once (beyond it 503; /healthz and /readyz are never refused).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    max_in_flight: u64,
    /// With API_TOKEN set, require the token for reads too (all but /, /healthz and /readyz).
    #[arg(long)]
    token_for_reads: bool,
    /// Serve the seed's deliberately unsafe POST /purchase/without-lock/{id} (oversells).
    #[arg(long)]
    enable_unsafe_demo: bool,
    /// Apply the database migrations at start (the quick start). Without it the API only checks
    /// that the schema has what it needs (newer migrations are fine): run `lockctl migrate`.
    #[arg(long)]
    migrate: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    init_tracing("info", cli.log.format());
    cli.api_token = std::env::var("API_TOKEN").ok().filter(|t| !t.is_empty());

    let addresses: Vec<SocketAddr> = tokio::net::lookup_host(&cli.bind)
        .await
        .with_context(|| format!("resolving --bind {}", cli.bind))?
        .collect();
    anyhow::ensure!(
        !addresses.is_empty(),
        "--bind {} resolves to nothing",
        cli.bind
    );
    check_bind(&addresses, cli.api_token.is_some(), cli.allow_public)?;
    if cli.api_token.is_none() {
        tracing::warn!("API_TOKEN is not set: mutating routes are open to whoever can connect");
    }

    let root = CancellationToken::new();
    spawn_signal_handler(root.clone());
    // Started before the stores (honcho, docker compose): wait for them, retrying.
    let limit = cli.wait.wait_for_services;
    let connected = async {
        let store = services::wait_for_service("Postgres", limit, &root, || {
            services::open_store_with(&cli.database, cli.max_connections, cli.migrate)
        })
        .await?;
        let redis = services::wait_for_service("Redis", limit, &root, || {
            services::connect_redis(&cli.redis)
        })
        .await?;
        Ok::<_, services::ServiceError>((store, redis))
    };
    let (store, redis) = match connected.await {
        Ok(connected) => connected,
        Err(services::ServiceError::Stopped { service }) => {
            tracing::info!(service, "stopped before the services answered");
            return Ok(());
        }
        Err(error) => return Err(error).context("connecting the stores"),
    };

    let config = ApiConfig {
        work: Duration::from_millis(cli.work_ms),
        lock_ttl: cli.locks.lock_ttl(),
        lock_wait: Duration::from_millis(cli.lock_wait_ms),
        token: cli.api_token.clone(),
        body_limit: usize::try_from(cli.body_limit).context("--body-limit")?,
        request_timeout: Duration::from_millis(cli.request_timeout_ms),
        header_read_timeout: Duration::from_millis(cli.header_read_timeout_ms),
        max_connections: usize::try_from(cli.max_open_connections)
            .context("--max-open-connections")?,
        max_in_flight: usize::try_from(cli.max_in_flight).context("--max-in-flight")?,
        token_for_reads: cli.token_for_reads,
        enable_unsafe_demo: cli.enable_unsafe_demo,
        ..ApiConfig::default()
    };
    let queue = redis.queue(cli.queue.queue_config(config.instance_id.clone()))?;
    let owner = LockOwner::this_process(config.instance_id.clone());
    // Product locks where the workers take theirs (the mutex, one lock server, or Redlock), so
    // API purchases and queued orders for one product exclude each other.
    let product_locks = services::connect_product_locks(&redis, &cli.locks, owner.clone()).await?;
    let locks = services::reporting_lock_client(&redis, &product_locks, &cli.locks, owner)?;
    let state = AppState::with_product_locks(store, locks, product_locks, queue, config);

    let listener = tokio::net::TcpListener::bind(addresses.as_slice())
        .await
        .with_context(|| format!("listening on {}", cli.bind))?;
    let local = listener.local_addr().context("reading the bound address")?;
    tracing::info!(
        address = %local,
        redis = %mask_url(&cli.redis.redis_url),
        postgres = %mask_url(&cli.database.database_url),
        token = cli.api_token.is_some(),
        "api listening"
    );

    let mut server = tokio::spawn(serve(listener, state, root.clone()));
    tokio::select! {
        joined = &mut server => {
            joined.context("the server task panicked")?.context("serving HTTP")?;
            return Ok(());
        }
        () = root.cancelled() => {}
    }
    match tokio::time::timeout(Duration::from_millis(cli.drain_timeout_ms), server).await {
        Ok(joined) => joined
            .context("the server task panicked")?
            .context("serving HTTP")?,
        Err(_) => tracing::warn!("requests still in flight after the drain timeout; exiting"),
    }
    tracing::info!("api stopped");
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
