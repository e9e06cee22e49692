//! The harness: its own `redis-server`, a database of its own on the configured Postgres, real
//! `worker` processes behind fault proxies, a producer, and a seeded nemesis; then quiescence,
//! the final state, the merged history and the check.
//!
//! - When a run starts, then Redis is a fresh `redis-server` on a free loopback port (so the
//!   nemesis may restart it), and Postgres is a new database `chaos_<pid>_<seed>` on the
//!   configured server (dropped at the end unless a violation was found).
//! - Each worker reaches Redis and Postgres through its own [`FaultProxy`] pair, so a link
//!   fault hurts one worker only. The producer and the harness talk to Redis directly.
//! - When Redis is restarted without its data, then an [`Event::Epoch`] is recorded and the
//!   producer re-pushes every order without an outcome (and every garbage message): messages
//!   that lived only in Redis are the producer's to resend (see the crate's non-guarantees).
//! - The same seed gives the same fault schedule and orders; process timing still differs, so a
//!   replay is likely, not certain, to reproduce an interleaving.
//! - When the run has its own Postgres ([`ChaosConfig::own_postgres`]), then the run's database
//!   lives there and `pg-restart` restarts that server (fast shutdown, start). Never injected:
//!   restarting the shared Postgres (other users rely on it; without a server of its own the run
//!   skips `pg-restart` and link faults stand in). The wall-clock step needs libfaketime
//!   (`faketime`), else it is skipped.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::Context;
use serde::Serialize;
use sqlx::{Connection, PgConnection};
use tokio::process::{Child, Command};

use super::{
    checker::{Violation, check},
    clock::{FakeClock, libfaketime},
    history::{Event, FinalState, OutcomeRow, now_ms, parse_log_line},
    own_postgres::OwnPostgres,
    proxy::{FaultProxy, ProxyMode},
    tail::LogTail,
};
use crate::{
    order::{ProductId, PurchaseOrder, Quantity},
    queue::{JobQueue, QueueConfig},
    store::OrderStore,
    tools::fleet::sibling_binary,
};

/// Every fault the nemesis knows, by the name `--faults` takes.
pub const FAULT_KINDS: &[&str] = &[
    "pause-short",
    "pause-long",
    "pause-waiter",
    "kill",
    "duplicate",
    "producer-retry",
    "redis-delay",
    "redis-freeze",
    "redis-drop",
    "redis-reset",
    "redis-blackhole",
    "pg-delay",
    "pg-freeze",
    "pg-reset",
    "pg-restart",
    "partition",
    "stale-commit",
    "redis-restart",
    "redis-wipe",
    "clock-step",
];

/// What a chaos run does.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    /// The configured Postgres (an admin URL: the run creates its own database there).
    pub database_url: String,
    /// How long faults are injected and orders produced.
    pub duration: Duration,
    /// The seed of the fault schedule and the orders.
    pub seed: u64,
    /// Worker processes.
    pub workers: usize,
    /// Products ordered.
    pub products: i32,
    /// Starting stock of each product.
    pub stock: i32,
    /// Enabled faults (names from [`FAULT_KINDS`]).
    pub faults: Vec<String>,
    /// Product lock TTL the workers use, ms.
    pub lock_ttl_ms: u64,
    /// How long one product-lock acquisition of a worker waits before it gives up and retries,
    /// ms.
    pub lock_wait_ms: u64,
    /// Test-only: the workers' longest single wait for a product lock, ms (default: theirs).
    pub lock_wait_slice_ms: Option<u64>,
    /// Worker liveness TTL, ms.
    pub liveness_ttl_ms: u64,
    /// Clock drift the window check allows, ms.
    pub drift_ms: u64,
    /// The workers' slow step between the stock read and the commit, ms (the window a fault
    /// must hit to make a commit stale).
    pub work_ms: u64,
    /// Where logs, Redis files and `history.jsonl` go.
    pub dir: PathBuf,
    /// Start a throwaway Postgres of the run's own (its database lives there, and `pg-restart`
    /// may restart it).
    pub own_postgres: bool,
    /// Test-only: workers commit without the fence check (the checker must notice).
    pub unsafe_skip_fence: bool,
    /// Test-only: workers' lock clients keep stale hand-offs (the checker must notice).
    pub unsafe_keep_stale_handoffs: bool,
}

/// What a run found.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosReport {
    /// The seed to replay.
    pub seed: u64,
    /// Seconds of faults.
    pub seconds: f64,
    /// Worker processes (at once).
    pub workers: usize,
    /// Distinct orders produced (valid ones).
    pub orders: usize,
    /// Garbage messages produced (must dead-letter).
    pub garbage: usize,
    /// Outcome rows: fulfilled.
    pub fulfilled: usize,
    /// Outcome rows: rejected.
    pub rejected: usize,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, usize>,
    /// Faults asked for but not run, with the reason.
    pub skipped: BTreeMap<String, String>,
    /// History events recorded.
    pub events: usize,
    /// Every violation, with evidence.
    pub violations: Vec<Violation>,
    /// The merged history (JSON lines).
    pub history: PathBuf,
}

/// A worker process of the run.
struct WorkerProc {
    name: String,
    child: Child,
    log: PathBuf,
    /// Whether it runs under the run's [`FakeClock`] (its history times are faked).
    faked: bool,
}

/// The run's Redis server (restartable).
struct OwnRedis {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl OwnRedis {
    async fn start(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let port = free_port()?;
        let mut redis = Self {
            port,
            dir: dir.to_path_buf(),
            child: None,
        };
        redis.spawn().await?;
        Ok(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("redis.log"))?;
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting redis-server (is it on PATH?)")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(client) = redis::Client::open(self.url())
                && let Ok(mut conn) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
            {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "redis-server did not answer");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the server (saving its data or not) and starts it again on the same port.
    /// Stops the server (with `SHUTDOWN SAVE` or `NOSAVE`) and starts it again; returns the
    /// wall-clock ms between the old process's exit and the new one's start: every reply of the
    /// old server came before it, every reply of the new one after (the epoch boundary of a wipe).
    async fn restart(&mut self, keep_data: bool) -> anyhow::Result<u64> {
        let client = redis::Client::open(self.url())?;
        if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
            let how = if keep_data { "SAVE" } else { "NOSAVE" };
            let _: redis::RedisResult<()> =
                redis::cmd("SHUTDOWN").arg(how).query_async(&mut conn).await;
        }
        if let Some(mut child) = self.child.take()
            && tokio::time::timeout(Duration::from_secs(5), child.wait())
                .await
                .is_err()
        {
            let _ = child.kill().await;
        }
        if !keep_data {
            let _ = std::fs::remove_file(self.dir.join("dump.rdb"));
        }
        let between = now_ms();
        self.spawn().await?;
        Ok(between)
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// The running pieces of one chaos run.
struct Run<'a> {
    config: &'a ChaosConfig,
    exe: PathBuf,
    redis: OwnRedis,
    queue: JobQueue,
    store: OrderStore,
    database_url: String,
    pg_addr: SocketAddr,
    /// Per worker slot: (redis proxy, postgres proxy).
    proxies: Vec<(FaultProxy, FaultProxy)>,
    workers: Vec<WorkerProc>,
    retired: Vec<WorkerProc>,
    generation: usize,
    events: Vec<Event>,
    /// Every valid payload produced, by id, and the garbage ones.
    produced: Vec<(String, Vec<u8>)>,
    garbage: Vec<Vec<u8>>,
    last_batch: Vec<Vec<u8>>,
    /// The nemesis's choices (its own stream, so the load does not shift the fault schedule).
    rng: fastrand::Rng,
    /// The orders' contents.
    orders_rng: fastrand::Rng,
    faults: BTreeMap<String, usize>,
    /// The workers' logs as followed by the aimed faults.
    tail: LogTail,
    /// Worker slot 0's faked wall clock, when `clock-step` is enabled.
    clock: Option<FakeClock>,
    /// The run's own Postgres, if it has one (dropped last: stopped and removed).
    postgres: Option<OwnPostgres>,
}

/// Runs the chaos test described by `config`; `print` gets progress lines.
pub async fn run_chaos(
    config: &ChaosConfig,
    mut print: impl FnMut(&str),
) -> anyhow::Result<ChaosReport> {
    std::fs::create_dir_all(&config.dir)?;
    let exe = sibling_binary("worker")?;
    let redis = OwnRedis::start(&config.dir.join("redis")).await?;
    let postgres = if config.own_postgres {
        Some(
            OwnPostgres::start(&config.dir.join("postgres"))
                .await
                .context("starting the run's own Postgres")?,
        )
    } else {
        None
    };
    let admin_url = postgres
        .as_ref()
        .map_or_else(|| config.database_url.clone(), OwnPostgres::url);
    let (database_url, pg_addr) = create_database(&admin_url, config.seed).await?;
    let store = OrderStore::connect_lazy(&database_url, 4)?;
    store
        .migrate()
        .await
        .context("migrating the run's database")?;
    seed_products(&store, config.products, config.stock).await?;
    let queue = JobQueue::connect(&redis.url(), QueueConfig::default().with_worker_id("chaos"))
        .await
        .context("connecting to the run's Redis")?;
    let mut skipped = BTreeMap::new();
    let mut enabled: Vec<String> = Vec::new();
    for fault in &config.faults {
        anyhow::ensure!(
            FAULT_KINDS.contains(&fault.as_str()),
            "unknown fault {fault} (known: {})",
            FAULT_KINDS.join(", ")
        );
        if fault == "clock-step" && libfaketime().is_none() {
            skipped.insert(
                fault.clone(),
                "libfaketime is not installed (apt-get install -y faketime)".to_owned(),
            );
            continue;
        }
        if fault == "pg-restart" && postgres.is_none() {
            skipped.insert(
                fault.clone(),
                "needs --own-postgres (the shared server is never restarted)".to_owned(),
            );
            continue;
        }
        enabled.push(fault.clone());
    }
    for (fault, why) in &skipped {
        print(&format!("skipping fault {fault}: {why}"));
    }
    let mut run = Run {
        config,
        exe,
        redis,
        queue,
        store,
        database_url,
        pg_addr,
        proxies: Vec::new(),
        workers: Vec::new(),
        retired: Vec::new(),
        generation: 0,
        events: Vec::new(),
        produced: Vec::new(),
        garbage: Vec::new(),
        last_batch: Vec::new(),
        rng: fastrand::Rng::with_seed(config.seed),
        orders_rng: fastrand::Rng::with_seed(config.seed.wrapping_add(0x9e37_79b9)),
        faults: BTreeMap::new(),
        tail: LogTail::default(),
        postgres,
        clock: match libfaketime() {
            Some(lib) if enabled.iter().any(|fault| fault == "clock-step") => {
                Some(FakeClock::new(lib, &config.dir)?)
            }
            _ => None,
        },
    };
    for slot in 0..config.workers {
        let redis_proxy = FaultProxy::start(run.redis.addr()).await?;
        let pg_proxy = FaultProxy::start(run.pg_addr).await?;
        run.proxies.push((redis_proxy, pg_proxy));
        let worker = run.spawn_worker(slot)?;
        run.workers.push(worker);
    }
    print(&format!(
        "chaos: seed {}, {} s, {} workers, {} products, faults: {}",
        config.seed,
        config.duration.as_secs_f64(),
        config.workers,
        config.products,
        enabled.join(",")
    ));

    let started = Instant::now();
    let mut next_fault = started + Duration::from_millis(500);
    while started.elapsed() < config.duration {
        run.produce_batch().await?;
        if !enabled.is_empty() && Instant::now() >= next_fault {
            let kind = enabled[run.rng.usize(..enabled.len())].clone();
            run.inject(&kind).await?;
            next_fault = Instant::now() + Duration::from_millis(run.rng.u64(200..1200));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    print("faults stopped; waiting for quiescence");
    run.heal();
    let quiet = run.quiesce(Duration::from_secs(90)).await;
    if let Err(error) = &quiet {
        print(&format!("not quiescent: {error:#}"));
    }
    let state = run.final_state().await?;
    run.stop_workers().await;
    let history_path = config.dir.join("history.jsonl");
    let events = run.collect_history(&history_path)?;
    let violations = check(&events, &state, config.drift_ms);
    let report = ChaosReport {
        seed: config.seed,
        seconds: config.duration.as_secs_f64(),
        workers: config.workers,
        orders: run.produced.len(),
        garbage: run.garbage.len(),
        fulfilled: state
            .outcomes
            .iter()
            .filter(|r| r.status == "fulfilled")
            .count(),
        rejected: state
            .outcomes
            .iter()
            .filter(|r| r.status == "rejected")
            .count(),
        faults: run.faults.clone(),
        skipped,
        events: events.len(),
        violations,
        history: history_path,
    };
    run.store.pool().close().await;
    // Kept for inspection only when it can be inspected (not on a server of the run's own) and
    // the violation was not asked for (the self-tests' unsafe switches).
    let self_test = config.unsafe_skip_fence || config.unsafe_keep_stale_handoffs;
    if report.violations.is_empty() || run.postgres.is_some() || self_test {
        drop_database(&admin_url, &run.database_url).await;
    } else {
        print(&format!(
            "keeping database {} for inspection",
            crate::config::mask_url(&run.database_url)
        ));
    }
    Ok(report)
}

impl Run<'_> {
    fn link(&self, slot: usize, link: &str) -> &FaultProxy {
        let (redis, pg) = &self.proxies[slot];
        if link == "redis" { redis } else { pg }
    }

    /// Starts worker `slot`'s next incarnation (slot 0 under the faked clock, if there is one).
    fn spawn_worker(&mut self, slot: usize) -> anyhow::Result<WorkerProc> {
        self.generation += 1;
        let name = format!("chaos-{slot}-{}", self.generation);
        let log = self.config.dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let (redis_proxy, pg_proxy) = &self.proxies[slot];
        let mut db = url::Url::parse(&self.database_url)?;
        db.set_ip_host(pg_proxy.addr().ip())
            .map_err(|()| anyhow::anyhow!("setting the proxy host"))?;
        db.set_port(Some(pg_proxy.addr().port()))
            .map_err(|()| anyhow::anyhow!("setting the proxy port"))?;
        let mut command = Command::new(&self.exe);
        let clock = self.clock.as_ref().filter(|_| slot == 0);
        if let Some(clock) = clock {
            clock.apply(&mut command);
        }
        command
            .arg("--redis-url")
            .arg(format!("redis://{}", redis_proxy.addr()))
            .arg("--database-url")
            .arg(db.as_str())
            .args(["--worker-id", &name, "--log-format", "json"])
            // The lock observer logs every grant, extension, release and loss.
            .arg("--chaos-history")
            .args(["--lock-ttl-ms", &self.config.lock_ttl_ms.to_string()])
            .args([
                "--liveness-ttl-ms",
                &self.config.liveness_ttl_ms.to_string(),
            ])
            .args(["--recovery-interval-ms", "300"])
            .args(["--work-ms", &self.config.work_ms.to_string()])
            .args(["--concurrency", "4"])
            .args(["--lock-wait-ms", &self.config.lock_wait_ms.to_string()])
            .args(["--drain-timeout-ms", "3000", "--batch-limit", "8"])
            .env(
                "RUST_LOG",
                std::env::var("CHAOS_WORKER_LOG").unwrap_or_else(|_| "warn,history=info".into()),
            )
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true);
        if self.config.unsafe_skip_fence {
            command.arg("--chaos-unsafe-skip-fence");
        }
        if let Some(ms) = self.config.lock_wait_slice_ms {
            command.args(["--chaos-lock-wait-slice-ms", &ms.to_string()]);
        }
        if self.config.unsafe_keep_stale_handoffs {
            command.arg("--chaos-unsafe-keep-stale-handoffs");
        }
        let child = command.spawn().context("starting a worker")?;
        Ok(WorkerProc {
            name,
            child,
            log,
            faked: clock.is_some(),
        })
    }

    async fn produce_batch(&mut self) -> anyhow::Result<()> {
        let mut payloads = Vec::new();
        for _ in 0..self.orders_rng.usize(1..6) {
            if self.orders_rng.u8(..100) < 4 {
                let marker = format!("chaos-garbage-{}", self.orders_rng.u64(..));
                let payload = format!("{{\"not_an_order\":\"{marker}\"}}").into_bytes();
                self.events.push(Event::Produced {
                    id: marker,
                    product: 0,
                    quantity: 0,
                    valid: false,
                    at_ms: now_ms(),
                });
                self.garbage.push(payload.clone());
                payloads.push(payload);
                continue;
            }
            let (order, produced) = random_order(&mut self.orders_rng, self.config.products)?;
            let payload = order.to_json();
            self.events.push(produced);
            self.produced.push((order.id.to_string(), payload.clone()));
            payloads.push(payload);
        }
        // A push refused while Redis restarts (the connection manager reconnecting) is retried.
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Err(error) = self.queue.push_batch(&payloads).await {
            anyhow::ensure!(Instant::now() < deadline, "producing: {error}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.last_batch = payloads;
        Ok(())
    }

    fn note(&mut self, kind: &str, detail: String) {
        *self.faults.entry(kind.to_owned()).or_default() += 1;
        self.events.push(Event::Fault {
            kind: kind.to_owned(),
            detail,
            at_ms: now_ms(),
        });
    }

    async fn inject(&mut self, kind: &str) -> anyhow::Result<()> {
        let slot = self.rng.usize(..self.workers.len());
        let ttl = self.config.lock_ttl_ms.max(self.config.liveness_ttl_ms);
        match kind {
            "pause-short" | "pause-long" => {
                let ms = if kind == "pause-short" {
                    self.rng.u64(50..self.config.lock_ttl_ms / 2)
                } else {
                    self.rng.u64(ttl + 200..2 * ttl + 500)
                };
                self.note(kind, format!("{} for {ms} ms", self.workers[slot].name));
                self.pause(slot, ms).await?;
            }
            "pause-waiter" => {
                // Aimed: right after a grant, pause another worker (with few products, one
                // queued behind that grant) past the TTL, so the lock is handed to it while it
                // sleeps, runs out, and goes to a third; on resume it finds the old hand-off.
                let mut released_by = None;
                let Some((holder, grant)) = self
                    .await_event(|slot, event| match event {
                        Event::Release { .. } => {
                            released_by = Some(slot);
                            false
                        }
                        _ => matches!(event, Event::Grant { .. }),
                    })
                    .await?
                else {
                    return Ok(());
                };
                // The one neither granted nor just released has been queued the longest.
                let waiters: Vec<usize> = (0..self.workers.len())
                    .filter(|slot| *slot != holder && Some(*slot) != released_by)
                    .collect();
                if waiters.is_empty() {
                    return Ok(());
                }
                let slot = waiters[self.rng.usize(..waiters.len())];
                let ms = 2 * self.config.lock_ttl_ms + 1_000;
                let Event::Grant {
                    resource, fence, ..
                } = grant
                else {
                    return Ok(());
                };
                self.note(
                    kind,
                    format!(
                        "{} for {ms} ms right after {} got {resource} (fence {fence})",
                        self.workers[slot].name, self.workers[holder].name
                    ),
                );
                self.pause(slot, ms).await?;
            }
            "stale-commit" => {
                // Aimed: right after a claim (the stock read under a fence), cut that worker from
                // Redis and Postgres past the lock TTL. Its commit, sent before its safety
                // deadline, reaches Postgres only after a newer holder's: the fence must refuse it.
                let Some((slot, claim)) = self
                    .await_event(|_, event| matches!(event, Event::Claim { .. }))
                    .await?
                else {
                    return Ok(());
                };
                self.link(slot, "redis").set(ProxyMode::Freeze);
                self.link(slot, "pg").set(ProxyMode::Freeze);
                let ms = self.config.lock_ttl_ms + 1_500;
                let Event::Claim { product, fence, .. } = claim else {
                    return Ok(());
                };
                self.note(
                    kind,
                    format!(
                        "{} cut from Redis and Postgres for {ms} ms right after its claim of \
                         product {product} under fence {fence}",
                        self.workers[slot].name
                    ),
                );
                self.keep_producing(Duration::from_millis(ms)).await?;
                self.link(slot, "redis").set(ProxyMode::Pass);
                self.link(slot, "pg").set(ProxyMode::Pass);
            }
            "kill" => {
                let name = self.workers[slot].name.clone();
                self.note(kind, format!("{name} (SIGKILL, replaced)"));
                let _ = self.workers[slot].child.start_kill();
                let replacement = self.spawn_worker(slot)?;
                let old = std::mem::replace(&mut self.workers[slot], replacement);
                self.retired.push(old);
            }
            "duplicate" => {
                if !self.produced.is_empty() {
                    let (id, payload) =
                        self.produced[self.rng.usize(..self.produced.len())].clone();
                    self.note(kind, format!("order {id} pushed again"));
                    self.queue.push(&payload).await.ok();
                }
            }
            "producer-retry" => {
                let batch = self.last_batch.clone();
                self.note(kind, format!("{} messages pushed again", batch.len()));
                self.note_garbage_pushed_again(&batch);
                self.queue.push_batch(&batch).await.ok();
            }
            "redis-delay" | "redis-freeze" | "redis-drop" | "redis-reset" | "redis-blackhole"
            | "pg-delay" | "pg-freeze" | "pg-reset" => {
                let (link, fault) = kind.split_once('-').unwrap_or((kind, kind));
                let mode = match fault {
                    "delay" => ProxyMode::Delay {
                        ms: self.rng.u64(20..self.config.lock_ttl_ms / 2),
                    },
                    "freeze" => ProxyMode::Freeze,
                    "drop" => ProxyMode::Drop,
                    "reset" => ProxyMode::Reset,
                    _ => ProxyMode::BlackHole,
                };
                let ms = self.rng.u64(100..2 * ttl);
                self.note(
                    kind,
                    format!("{} {mode:?} for {ms} ms", self.workers[slot].name),
                );
                self.link(slot, link).set(mode);
                self.keep_producing(Duration::from_millis(ms)).await?;
                self.link(slot, link).set(ProxyMode::Pass);
            }
            "partition" => {
                // Both links frozen past the lock TTL: a commit already sent (or about to be)
                // reaches Postgres only after another worker may have taken the lock.
                let ms = self.rng.u64(ttl + 200..2 * ttl + 500);
                self.note(
                    kind,
                    format!(
                        "{} cut from Redis and Postgres for {ms} ms",
                        self.workers[slot].name
                    ),
                );
                self.link(slot, "redis").set(ProxyMode::Freeze);
                self.link(slot, "pg").set(ProxyMode::Freeze);
                self.keep_producing(Duration::from_millis(ms)).await?;
                self.link(slot, "redis").set(ProxyMode::Pass);
                self.link(slot, "pg").set(ProxyMode::Pass);
            }
            "pg-restart" => {
                if self.postgres.is_some() {
                    self.note(
                        kind,
                        "pg_ctl restart -m fast (the run's own server)".to_owned(),
                    );
                }
                if let Some(postgres) = &self.postgres {
                    postgres.restart().await?;
                }
            }
            "redis-restart" => {
                self.note(kind, "SHUTDOWN SAVE, start again".to_owned());
                self.redis.restart(true).await?;
            }
            "redis-wipe" => {
                self.note(kind, "SHUTDOWN NOSAVE, start empty".to_owned());
                // The epoch starts when the old server is gone, not when the harness sees the
                // new one up: a worker may be granted fence 1 by the new server before that.
                let at_ms = self.redis.restart(false).await?;
                self.events.push(Event::Epoch { at_ms });
                self.repush_undecided().await?;
            }
            "clock-step" => {
                // Step worker slot 0's wall clock (its monotonic clock untouched) by 1 to 10
                // minutes, forwards or backwards, while it runs.
                let minutes = i64::from(self.rng.u8(1..=10));
                let delta_ms = if self.rng.bool() { 1 } else { -1 } * minutes * 60_000;
                let name = self.workers[0].name.clone();
                if let Some(clock) = self.clock.as_mut() {
                    let offset = clock.step(delta_ms)?;
                    self.note(
                        kind,
                        format!(
                            "{name}'s wall clock stepped {delta_ms:+} ms (now {offset:+} ms off)"
                        ),
                    );
                }
            }
            other => anyhow::bail!("unknown fault {other}"),
        }
        Ok(())
    }

    /// SIGSTOPs worker `slot` for `ms`, producing meanwhile, then SIGCONTs it.
    async fn pause(&mut self, slot: usize, ms: u64) -> anyhow::Result<()> {
        if let Some(pid) = self.workers[slot].child.id() {
            signal("STOP", pid);
            self.keep_producing(Duration::from_millis(ms)).await?;
            signal("CONT", pid);
        }
        Ok(())
    }

    /// Follows the workers' logs (producing meanwhile) until one logs an event `wanted` accepts
    /// (it sees every event before, with the worker's slot),
    /// for up to three seconds; returns that worker's slot and the event. Events logged before
    /// the call are skipped: an aimed fault hits the moment after the event, not a stale one.
    async fn await_event(
        &mut self,
        mut wanted: impl FnMut(usize, &Event) -> bool,
    ) -> anyhow::Result<Option<(usize, Event)>> {
        for worker in &self.workers {
            self.tail.poll(&worker.log, &worker.name);
        }
        let until = Instant::now() + Duration::from_secs(3);
        let mut next_batch = Instant::now();
        while Instant::now() < until {
            for (slot, worker) in self.workers.iter().enumerate() {
                let found = self.tail.poll(&worker.log, &worker.name);
                if let Some(event) = found.into_iter().find(|event| wanted(slot, event)) {
                    return Ok(Some((slot, event)));
                }
            }
            if Instant::now() >= next_batch {
                self.produce_batch().await?;
                next_batch = Instant::now() + Duration::from_millis(50);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(None)
    }

    /// Produces orders for `span` (faults that last a while do not stop the load).
    async fn keep_producing(&mut self, span: Duration) -> anyhow::Result<()> {
        let until = Instant::now() + span;
        while Instant::now() < until {
            self.produce_batch().await?;
            tokio::time::sleep(Duration::from_millis(50).min(until - Instant::now())).await;
        }
        Ok(())
    }

    /// Records each garbage message among `payloads` as produced again (the checker allows one
    /// dead letter per push).
    fn note_garbage_pushed_again(&mut self, payloads: &[Vec<u8>]) {
        for payload in payloads {
            let marker = serde_json::from_slice::<serde_json::Value>(payload)
                .ok()
                .and_then(|v| v.get("not_an_order")?.as_str().map(str::to_owned));
            if let Some(id) = marker {
                self.events.push(Event::Produced {
                    id,
                    product: 0,
                    quantity: 0,
                    valid: false,
                    at_ms: now_ms(),
                });
            }
        }
    }

    /// After Redis lost its data: push again every order without an outcome, and all garbage.
    async fn repush_undecided(&mut self) -> anyhow::Result<()> {
        let decided: std::collections::HashSet<String> =
            sqlx::query_scalar::<_, uuid::Uuid>("SELECT id FROM orders")
                .fetch_all(self.store.pool())
                .await?
                .into_iter()
                .map(|id| id.to_string())
                .collect();
        let mut again: Vec<Vec<u8>> = self
            .produced
            .iter()
            .filter(|(id, _)| !decided.contains(id))
            .map(|(_, payload)| payload.clone())
            .collect();
        again.extend(self.garbage.iter().cloned());
        self.note_garbage_pushed_again(&self.garbage.clone());
        for chunk in again.chunks(500) {
            let deadline = Instant::now() + Duration::from_secs(10);
            // The connection manager reconnects after the restart; retry until it has.
            while let Err(error) = self.queue.push_batch(chunk).await {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "re-pushing after the wipe: {error}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    fn heal(&mut self) {
        for worker in &self.workers {
            if let Some(pid) = worker.child.id() {
                signal("CONT", pid);
            }
        }
        for (redis, pg) in &self.proxies {
            redis.set(ProxyMode::Pass);
            pg.set(ProxyMode::Pass);
        }
    }

    /// Waits until every produced order has an outcome and nothing is pending or in flight.
    async fn quiesce(&mut self, within: Duration) -> anyhow::Result<()> {
        quiesce(&self.store, &self.queue, self.produced.len(), within).await
    }

    async fn final_state(&self) -> anyhow::Result<FinalState> {
        final_state(
            &self.store,
            &self.queue,
            self.config.products,
            self.config.stock,
        )
        .await
    }

    async fn stop_workers(&mut self) {
        stop_gracefully(
            self.workers
                .iter_mut()
                .chain(self.retired.iter_mut())
                .map(|worker| &mut worker.child),
        )
        .await;
    }

    /// Reads every worker's history events, merges them with the harness's, sorts by time and
    /// writes them as JSON lines to `path`.
    fn collect_history(&self, path: &Path) -> anyhow::Result<Vec<Event>> {
        let mut events = self.events.clone();
        for worker in self.workers.iter().chain(self.retired.iter()) {
            let mut logged = read_log_events(&worker.name, &worker.log);
            if let Some(clock) = self.clock.as_ref().filter(|_| worker.faked) {
                clock.unfake(&mut logged);
            }
            events.extend(logged);
        }
        write_history(events, path)
    }
}

/// Sends SIGTERM to every child (a worker drains and exits), then waits up to 10 s for each,
/// killing what is still running (shared with the multi-host run).
pub(crate) async fn stop_gracefully(children: impl IntoIterator<Item = &mut Child>) {
    let children: Vec<&mut Child> = children.into_iter().collect();
    for child in &children {
        if let Some(pid) = child.id() {
            signal("TERM", pid);
        }
    }
    for child in children {
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}

/// Merges `own` events with the history events in each `(worker name, log file)`, sorts them by
/// time and writes them as JSON lines to `path` (shared with the multi-host run).
pub(crate) fn merge_history<'a>(
    own: &[Event],
    logs: impl IntoIterator<Item = (&'a str, &'a Path)>,
    path: &Path,
) -> anyhow::Result<Vec<Event>> {
    let mut events = own.to_vec();
    for (name, log) in logs {
        events.extend(read_log_events(name, log));
    }
    write_history(events, path)
}

/// The history events one worker logged (`name` is the worker's name in the history); a log
/// that cannot be read yields none.
fn read_log_events(name: &str, log: &Path) -> Vec<Event> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|line| parse_log_line(line, name))
        .collect()
}

/// Sorts `events` by time and writes them to `path` as JSON lines.
fn write_history(mut events: Vec<Event>, path: &Path) -> anyhow::Result<Vec<Event>> {
    events.sort_by_key(Event::at_ms);
    let mut out = String::new();
    for event in &events {
        out.push_str(&serde_json::to_string(event)?);
        out.push('\n');
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))?;
    Ok(events)
}

/// A valid order of 1–3 units of a product in `1..=products`, its id drawn from `rng` too (so a
/// seed replays the same orders), and its `produced` event (shared with the multi-host run).
pub(crate) fn random_order(
    rng: &mut fastrand::Rng,
    products: i32,
) -> anyhow::Result<(PurchaseOrder, Event)> {
    let product = ProductId::new(rng.i32(1..=products))?;
    let quantity = Quantity::new(rng.i32(1..=3))?;
    let mut order = PurchaseOrder::new(product, quantity);
    order.id = uuid::Builder::from_random_bytes(rng.u128(..).to_le_bytes())
        .into_uuid()
        .into();
    let produced = Event::Produced {
        id: order.id.to_string(),
        product: product.get(),
        quantity: quantity.get(),
        valid: true,
        at_ms: now_ms(),
    };
    Ok((order, produced))
}

/// Sends signal `name` (`STOP`, `CONT`, `TERM`) to `pid`.
pub(crate) fn signal(name: &str, pid: u32) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

/// Creates the run's database on the configured server; returns its URL and the server's
/// address (for the proxies).
async fn create_database(admin_url: &str, seed: u64) -> anyhow::Result<(String, SocketAddr)> {
    let mut url = url::Url::parse(admin_url).context("parsing the database URL")?;
    let host = url.host_str().unwrap_or("127.0.0.1").to_owned();
    let port = url.port().unwrap_or(5432);
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await?
        .next()
        .context("resolving the Postgres host")?;
    let name = format!("chaos_{}_{seed}", std::process::id());
    let mut admin = PgConnection::connect(admin_url)
        .await
        .context("connecting to Postgres")?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
        .execute(&mut admin)
        .await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await?;
    admin.close().await.ok();
    url.set_path(&name);
    Ok((url.to_string(), addr))
}

async fn drop_database(admin_url: &str, database_url: &str) {
    let Some(name) = url::Url::parse(database_url)
        .ok()
        .map(|url| url.path().trim_start_matches('/').to_owned())
    else {
        return;
    };
    if let Ok(mut admin) = PgConnection::connect(admin_url).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await;
    }
}

/// Sets products `1..=products` to `stock` units (shared with the multi-host run).
pub(crate) async fn seed_products(
    store: &OrderStore,
    products: i32,
    stock: i32,
) -> anyhow::Result<()> {
    for id in 1..=products {
        sqlx::query(
            "INSERT INTO products (id, name, stock, price) VALUES ($1, $2, $3, 1)
             ON CONFLICT (id) DO UPDATE SET stock = EXCLUDED.stock",
        )
        .bind(id)
        .bind(format!("chaos {id}"))
        .bind(stock)
        .execute(store.pool())
        .await?;
    }
    Ok(())
}

/// Waits until `produced` orders have an outcome and nothing is pending or in flight (shared
/// with the multi-host run).
pub(crate) async fn quiesce(
    store: &OrderStore,
    queue: &JobQueue,
    produced: usize,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let decided: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
            .fetch_one(store.pool())
            .await?;
        let in_flight = in_flight(queue).await.unwrap_or(usize::MAX);
        if in_flight == 0 && usize::try_from(decided).unwrap_or(0) >= produced {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{decided} of {} orders decided, {in_flight} messages in flight",
            produced
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Messages pending or in a worker's processing list.
pub(crate) async fn in_flight(queue: &JobQueue) -> anyhow::Result<usize> {
    let stats = queue.stats().await?;
    let states = queue.worker_states().await?;
    Ok(stats.pending + states.iter().map(|w| w.in_flight).sum::<usize>())
}

/// Reads the final state of a run's first `products` products (each seeded with `stock`).
pub(crate) async fn final_state(
    store: &OrderStore,
    queue: &JobQueue,
    products: i32,
    initial_stock: i32,
) -> anyhow::Result<FinalState> {
    let pool = store.pool();
    let rows_of_products: Vec<(i32, i32)> =
        sqlx::query_as("SELECT id, stock FROM products WHERE id BETWEEN 1 AND $1 ORDER BY id")
            .bind(products)
            .fetch_all(pool)
            .await?;
    #[allow(clippy::type_complexity)]
    let rows: Vec<(
        uuid::Uuid,
        Option<i32>,
        Option<i32>,
        String,
        Option<String>,
        Option<i64>,
        Option<String>,
        i64,
    )> = sqlx::query_as(
        "SELECT id, product_id, quantity, status, reason, fence, worker,
                (extract(epoch FROM decided_at) * 1000000)::bigint FROM orders",
    )
    .fetch_all(pool)
    .await?;
    let dead = queue.dead_letters(100_000).await?;
    Ok(FinalState {
        products: rows_of_products
            .into_iter()
            .map(|(id, stock)| (id, initial_stock, stock))
            .collect(),
        outcomes: rows
            .into_iter()
            .map(
                |(id, product, quantity, status, reason, fence, worker, decided_us)| OutcomeRow {
                    id: id.to_string(),
                    product,
                    quantity,
                    status,
                    reason,
                    fence: fence.and_then(|f| u64::try_from(f).ok()),
                    worker,
                    decided_us,
                },
            )
            .collect(),
        dead_letters: dead.into_iter().map(|d| d.payload).collect(),
        in_flight: in_flight(queue).await.unwrap_or(usize::MAX),
    })
}
