//! The multi-host run: real `worker` processes on their own network hosts (Linux network
//! namespaces that `scripts/multihost` builds), partitions cut into the network between them
//! while orders flow, and the chaos checker over the recorded history and the final database.
//!
//! The topology is `scripts/multihost`'s: one bridge in the root namespace, every host (Redis,
//! Postgres, worker) a namespace joined to it by a veth pair whose root end is named
//! `<link prefix><namespace>`. This process runs in the root namespace (it produces orders and
//! reads the final state over the bridge) and starts each worker with `ip netns exec`.
//!
//! How a cut is made, and why:
//! - *From both* (the host's only link): the root end of its veth goes down. The worker's own
//!   interface keeps its address and routes but loses its carrier, so every packet it sends is
//!   dropped silently: a cable pulled at the switch.
//! - *From one server only* (Redis, or Postgres, or two of three Redlock hosts): a blackhole
//!   route to the worker's address inside the *server's* namespace (`ip route add blackhole`,
//!   no iptables needed). The server still receives the worker's packets but every reply, ACK
//!   and SYN-ACK is dropped, so the worker sees silence, as it would behind a broken router.
//!   A blackhole on the worker's side would instead fail its sends at once (`EINVAL`), which is
//!   not what a partition looks like from the inside.
//!
//! Guarantees and non-guarantees:
//! - When a scenario starts a cut, then it waits (with a deadline) for the target worker to
//!   log a stock claim and cuts right after it, so the cut lands while a lock is held and its
//!   sale is between the read and the commit (`--work-ms` long). When no claim shows within the
//!   deadline, then the cut is made anyway and the report says so.
//! - When the Redlock scenario runs, then every worker is restarted with the lock on the three
//!   Redis hosts (the queue stays on the first); the history records an epoch there: the lock
//!   deployment changed, so its own fence order restarts (the database fence floor carries
//!   safety over, and the database rules stay strict across it).
//! - Every cut is healed before quiescence, and on every exit path of [`run_multihost`]
//!   (the script's trap removes the namespaces themselves).
//! - Not covered: a partition between two workers (they never talk to each other), a cut of
//!   the producer, and packet loss short of a full cut (no netem here).

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::Context;
use serde::Serialize;
use tokio::process::{Child, Command};

use super::{
    checker::check,
    harness::{
        ChaosReport, final_state, merge_history, quiesce, random_order, seed_products,
        stop_gracefully,
    },
    history::{Event, now_ms, parse_log_line},
};
use crate::{
    queue::{JobQueue, QueueConfig},
    store::OrderStore,
    tools::fleet::sibling_binary,
};

/// Every scenario, in the order they run, by the name `--scenarios` takes.
pub const SCENARIOS: &[&str] = &[
    "redis-cut",
    "pg-cut",
    "both-cut",
    "heal-mid-hold",
    "redlock-minority",
];

/// How often a batch of 1–3 orders is pushed: about 8 orders a second, well below what three
/// workers with a slow step of `--work-ms` decide on three products, so a backlog left by a cut
/// drains within the run and quiescence measures recovery, not overload.
const BATCH_EVERY: Duration = Duration::from_millis(250);

/// The network and servers `scripts/multihost` built.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Every host: namespace name → its address on the bridge.
    pub hosts: BTreeMap<String, IpAddr>,
    /// The root end of host `ns`'s veth is named `<link_prefix><ns>`.
    pub link_prefix: String,
    /// The worker hosts (namespaces), one worker process each.
    pub worker_hosts: Vec<String>,
    /// Queue Redis (and the single-instance lock), reachable from every host.
    pub redis_url: String,
    /// The run's database (migrated and seeded by the run).
    pub database_url: String,
    /// The three Redlock masters (the first is `redis_url`'s server); empty: no Redlock scenario.
    pub redlock_urls: Vec<String>,
}

impl Topology {
    /// Parses `ns=ip` pairs.
    pub fn parse_hosts(pairs: &[String]) -> anyhow::Result<BTreeMap<String, IpAddr>> {
        pairs
            .iter()
            .map(|pair| {
                let (ns, ip) = pair
                    .split_once('=')
                    .with_context(|| format!("host {pair:?} is not NAMESPACE=IP"))?;
                let ip = ip
                    .parse()
                    .with_context(|| format!("host {pair:?}: bad address"))?;
                Ok((ns.to_owned(), ip))
            })
            .collect()
    }

    fn address_of(&self, ns: &str) -> anyhow::Result<IpAddr> {
        self.hosts
            .get(ns)
            .copied()
            .with_context(|| format!("host {ns} is not in --hosts"))
    }

    /// The namespace of the server `url` points at.
    fn host_of_url(&self, url: &str) -> anyhow::Result<String> {
        let parsed = url::Url::parse(url).with_context(|| format!("parsing {url}"))?;
        let ip: IpAddr = parsed
            .host_str()
            .and_then(|host| host.trim_matches(['[', ']']).parse().ok())
            .with_context(|| format!("{url} does not name a host address"))?;
        self.hosts
            .iter()
            .find(|(_, address)| **address == ip)
            .map(|(ns, _)| ns.clone())
            .with_context(|| format!("no host in --hosts has {ip} ({url})"))
    }

    /// The cut that isolates `worker_ns` from the servers `servers` (namespaces), or from
    /// everything when `servers` is empty.
    fn cut(&self, worker_ns: &str, servers: &[String]) -> anyhow::Result<Cut> {
        if servers.is_empty() {
            return Ok(Cut::Link {
                link: format!("{}{worker_ns}", self.link_prefix),
            });
        }
        let worker = self.address_of(worker_ns)?;
        Ok(Cut::Routes(
            servers
                .iter()
                .map(|server| (server.clone(), worker))
                .collect(),
        ))
    }
}

/// One partition, as `ip` commands that make and heal it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cut {
    /// The host's only link: its veth's root end down (silent loss both ways).
    Link {
        /// The root end of the host's veth.
        link: String,
    },
    /// Blackhole routes in these server namespaces towards the worker address.
    Routes(Vec<(String, IpAddr)>),
}

impl Cut {
    /// The `ip` argument lists that make (`on`) or heal the cut.
    pub fn commands(&self, on: bool) -> Vec<Vec<String>> {
        match self {
            Cut::Link { link } => vec![vec![
                "link".into(),
                "set".into(),
                link.clone(),
                if on { "down" } else { "up" }.into(),
            ]],
            Cut::Routes(routes) => routes
                .iter()
                .map(|(server, worker)| {
                    vec![
                        "netns".into(),
                        "exec".into(),
                        server.clone(),
                        "ip".into(),
                        "route".into(),
                        if on { "add" } else { "del" }.into(),
                        "blackhole".into(),
                        format!("{worker}/32"),
                    ]
                })
                .collect(),
        }
    }

    fn apply(&self, on: bool) -> anyhow::Result<()> {
        for args in self.commands(on) {
            let output = std::process::Command::new("ip")
                .args(&args)
                .output()
                .context("running ip")?;
            // Healing a cut that is already healed (a route already gone) is fine.
            anyhow::ensure!(
                output.status.success() || !on,
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    /// Who is cut off from whom, for the report.
    fn describe(&self, worker_ns: &str) -> String {
        match self {
            Cut::Link { link } => format!("{worker_ns} cut from every host ({link} down)"),
            Cut::Routes(routes) => format!(
                "{worker_ns} cut from {}",
                routes
                    .iter()
                    .map(|(server, _)| server.as_str())
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
        }
    }
}

/// What the multi-host run does besides the topology.
#[derive(Debug, Clone)]
pub struct MultihostConfig {
    /// Scenarios to run (names from [`SCENARIOS`]), in that order.
    pub scenarios: Vec<String>,
    /// Seconds of load per scenario (cuts repeat, rotating over the workers, within it).
    pub scenario_seconds: u64,
    /// Seed of the orders.
    pub seed: u64,
    /// Products ordered.
    pub products: i32,
    /// Starting stock of each product.
    pub stock: i32,
    /// Product lock TTL, ms.
    pub lock_ttl_ms: u64,
    /// Worker liveness TTL, ms.
    pub liveness_ttl_ms: u64,
    /// The workers' slow step between the stock read and the commit, ms.
    pub work_ms: u64,
    /// How long a worker holding a lock waits for Postgres before it gives the lock up, ms.
    pub postgres_outage_ms: u64,
    /// Clock drift the window check allows, ms.
    pub drift_ms: u64,
    /// Where the worker logs and `history.jsonl` go.
    pub dir: PathBuf,
    /// Test-only: workers commit without the fence check (the checker must notice).
    pub unsafe_skip_fence: bool,
}

impl MultihostConfig {
    /// How long scenario `name`'s cuts last, in turn (cut `i` lasts `lengths[i % len]`).
    ///
    /// - `heal-mid-hold`: longer than the slow step, shorter than the lock TTL, alternately
    ///   just longer than the step (100 ms more) and half-way to the TTL: the worker never stops
    ///   believing it holds the lock, and it still does when the link comes back.
    /// - `both-cut`: past the lock and liveness TTLs (another worker takes the lock and the
    ///   orders) but short of the worker's Postgres outage limit, so the cut-off worker is still
    ///   waiting on its commit when the link returns; TCP's retransmission delivers that stale
    ///   commit to Postgres after a newer holder's claim, where the fence must refuse it.
    /// - the others: past both TTLs (twice the longer, plus 500 ms): the cut-off worker's lock
    ///   and liveness run out (cut from Redis) or it waits on Postgres while extending its lock
    ///   over Redis, and gives it up at the outage limit (cut from Postgres).
    fn cut_lengths(&self, name: &str) -> Vec<Duration> {
        let ttl = self.lock_ttl_ms.max(self.liveness_ttl_ms);
        let ms = match name {
            "heal-mid-hold" => vec![
                self.work_ms + 100,
                self.work_ms + (self.lock_ttl_ms.saturating_sub(self.work_ms)) / 2,
            ],
            "both-cut" => vec![(ttl + 1_000).min(self.postgres_outage_ms.saturating_sub(1_000))],
            _ => vec![2 * ttl + 500],
        };
        ms.into_iter().map(Duration::from_millis).collect()
    }
}

/// One scenario's tally for the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScenarioTally {
    /// The scenario's name.
    pub name: String,
    /// Cuts made.
    pub cuts: usize,
    /// Cuts that landed right after a claim of the target worker (mid-hold).
    pub mid_hold: usize,
    /// How long the cuts lasted, ms (taken in turn).
    pub cut_ms: Vec<u64>,
    /// Locks the target worker held when its cut began (from the history).
    pub holds_at_cut: usize,
    /// Of those: released normally after the heal (the worker held on through the cut).
    pub holds_kept: usize,
    /// Of those: lost (known lost at release, or never released).
    pub holds_lost: usize,
}

/// One cut made, to match against the history afterwards.
#[derive(Debug, Clone)]
struct CutRecord {
    scenario: String,
    worker: String,
    cut_ms: u64,
    healed_ms: u64,
}

/// What became of the locks `worker` held when a cut began at `cut_ms` (healed at
/// `healed_ms`): `(held at the cut, released normally after the heal, lost)`.
///
/// A hold is held at the cut when its grant came back before `cut_ms` and its release (same
/// resource, fence and worker) came after. A hold released normally before the heal is
/// neither kept nor lost: the worker finished under it while cut off (possible when only
/// Postgres or only a Redlock minority was cut).
fn hold_fates(
    events: &[Event],
    worker: &str,
    cut_ms: u64,
    healed_ms: u64,
) -> (usize, usize, usize) {
    let mut fates = (0, 0, 0);
    for event in events {
        let Event::Grant {
            resource,
            fence,
            worker: holder,
            reply_ms,
            ..
        } = event
        else {
            continue;
        };
        if holder != worker || *reply_ms > cut_ms {
            continue;
        }
        let release = events.iter().find_map(|later| match later {
            Event::Release {
                resource: r,
                fence: f,
                worker: w,
                at_ms,
                lost,
            } if r == resource && f == fence && w == worker => Some((*at_ms, *lost)),
            _ => None,
        });
        match release {
            Some((at_ms, _)) if at_ms < cut_ms => {}
            Some((at_ms, false)) => {
                fates.0 += 1;
                fates.1 += usize::from(at_ms >= healed_ms);
            }
            Some((_, true)) | None => {
                fates.0 += 1;
                fates.2 += 1;
            }
        }
    }
    fates
}

/// What the multi-host run found: the chaos report plus the scenarios.
#[derive(Debug, Clone, Serialize)]
pub struct MultihostReport {
    /// Orders, faults (cuts by scenario), violations, history: as `lockctl chaos` reports them.
    pub chaos: ChaosReport,
    /// Per scenario: cuts and how many landed mid-hold.
    pub scenarios: Vec<ScenarioTally>,
}

/// A worker process on its host.
struct HostWorker {
    host: String,
    name: String,
    child: Child,
    log: PathBuf,
    /// How far (bytes) the log has been searched for claims.
    read_to: u64,
}

/// The running pieces of one multi-host run.
struct Run<'a> {
    topology: &'a Topology,
    config: &'a MultihostConfig,
    exe: PathBuf,
    queue: JobQueue,
    store: OrderStore,
    workers: Vec<HostWorker>,
    retired: Vec<HostWorker>,
    generation: usize,
    events: Vec<Event>,
    produced: usize,
    orders_rng: fastrand::Rng,
    /// Cuts in force (healed on every exit path).
    active: Vec<Cut>,
    /// Every cut made, for [`hold_fates`].
    cut_log: Vec<CutRecord>,
}

/// Runs every configured scenario over `topology`; `print` gets progress lines.
pub async fn run_multihost(
    topology: &Topology,
    config: &MultihostConfig,
    mut print: impl FnMut(&str),
) -> anyhow::Result<MultihostReport> {
    std::fs::create_dir_all(&config.dir)?;
    for scenario in &config.scenarios {
        anyhow::ensure!(
            SCENARIOS.contains(&scenario.as_str()),
            "unknown scenario {scenario} (known: {})",
            SCENARIOS.join(", ")
        );
    }
    anyhow::ensure!(!topology.worker_hosts.is_empty(), "no worker hosts given");
    let store = OrderStore::connect_lazy(&topology.database_url, 4)?;
    store
        .migrate()
        .await
        .context("migrating the run's database")?;
    seed_products(&store, config.products, config.stock).await?;
    let queue = JobQueue::connect(
        &topology.redis_url,
        QueueConfig::default().with_worker_id("multihost"),
    )
    .await
    .context("connecting to the queue's Redis")?;
    let mut run = Run {
        topology,
        config,
        exe: sibling_binary("worker")?,
        queue,
        store,
        workers: Vec::new(),
        retired: Vec::new(),
        generation: 0,
        events: Vec::new(),
        produced: 0,
        orders_rng: fastrand::Rng::with_seed(config.seed),
        active: Vec::new(),
        cut_log: Vec::new(),
    };
    let outcome = run.scenarios(&mut print).await;
    // Heal whatever is still cut, whatever happened.
    for cut in std::mem::take(&mut run.active) {
        cut.apply(false).ok();
    }
    let mut tallies = outcome?;
    print("scenarios done; waiting for quiescence");
    if let Err(error) = quiesce(
        &run.store,
        &run.queue,
        run.produced,
        Duration::from_secs(90),
    )
    .await
    {
        print(&format!("not quiescent: {error:#}"));
    }
    let state = final_state(&run.store, &run.queue, config.products, config.stock).await?;
    run.stop_workers().await;
    let history = config.dir.join("history.jsonl");
    let events = run.collect_history(&history)?;
    let violations = check(&events, &state, config.drift_ms);
    for cut in &run.cut_log {
        let (held, kept, lost) = hold_fates(&events, &cut.worker, cut.cut_ms, cut.healed_ms);
        if let Some(tally) = tallies.iter_mut().find(|tally| tally.name == cut.scenario) {
            tally.holds_at_cut += held;
            tally.holds_kept += kept;
            tally.holds_lost += lost;
        }
    }
    let count = |status: &str| state.outcomes.iter().filter(|r| r.status == status).count();
    let chaos = ChaosReport {
        seed: config.seed,
        seconds: (config.scenario_seconds * tallies.len() as u64) as f64,
        workers: topology.worker_hosts.len(),
        orders: run.produced,
        garbage: 0,
        fulfilled: count("fulfilled"),
        rejected: count("rejected"),
        faults: tallies
            .iter()
            .map(|tally| (tally.name.clone(), tally.cuts))
            .collect(),
        skipped: config
            .scenarios
            .iter()
            .filter(|name| !tallies.iter().any(|tally| &tally.name == *name))
            .map(|name| (name.clone(), "no Redlock hosts given".to_owned()))
            .collect(),
        events: events.len(),
        violations,
        history,
    };
    run.store.pool().close().await;
    Ok(MultihostReport {
        chaos,
        scenarios: tallies,
    })
}

impl Run<'_> {
    async fn scenarios(
        &mut self,
        print: &mut impl FnMut(&str),
    ) -> anyhow::Result<Vec<ScenarioTally>> {
        let mut tallies = Vec::new();
        let mut redlock = false;
        for (index, name) in self.config.scenarios.clone().iter().enumerate() {
            let wants_redlock = name == "redlock-minority";
            if wants_redlock && self.topology.redlock_urls.len() < 3 {
                print(&format!("skipping {name}: no Redlock hosts given"));
                continue;
            }
            if self.workers.is_empty() || wants_redlock != redlock {
                self.restart_workers(wants_redlock).await?;
                redlock = wants_redlock;
            }
            print(&format!("scenario {name}"));
            tallies.push(self.scenario(name, index).await?);
        }
        Ok(tallies)
    }

    /// Stops the current workers (if any) and starts one per host, with the lock on the queue's
    /// Redis or on the Redlock hosts; waits until each has announced itself.
    async fn restart_workers(&mut self, redlock: bool) -> anyhow::Result<()> {
        if !self.workers.is_empty() {
            self.stop_workers().await;
            let stopped = std::mem::take(&mut self.workers);
            self.retired.extend(stopped);
            // A new lock deployment: the lock's own fence order restarts here.
            self.events.push(Event::Epoch { at_ms: now_ms() });
        }
        for host in self.topology.worker_hosts.clone() {
            let worker = self.spawn_worker(&host, redlock)?;
            self.workers.push(worker);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let states = self.queue.worker_states().await.unwrap_or_default();
            let live = self
                .workers
                .iter()
                .filter(|w| states.iter().any(|s| s.alive && s.id == w.name))
                .count();
            if live == self.workers.len() {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {live} of {} workers came up (see their logs in {})",
                self.workers.len(),
                self.config.dir.display()
            );
            self.produce_for(Duration::from_millis(200)).await?;
        }
    }

    fn spawn_worker(&mut self, host: &str, redlock: bool) -> anyhow::Result<HostWorker> {
        self.generation += 1;
        let name = format!("{host}-{}", self.generation);
        let log = self.config.dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let config = self.config;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", host])
            .arg(&self.exe)
            .args(["--redis-url", &self.topology.redis_url])
            .args(["--database-url", &self.topology.database_url])
            .args(["--worker-id", &name, "--log-format", "json"])
            // The lock observer logs every grant, extension, release and loss.
            .arg("--chaos-history")
            .args(["--lock-ttl-ms", &config.lock_ttl_ms.to_string()])
            .args(["--liveness-ttl-ms", &config.liveness_ttl_ms.to_string()])
            .args([
                "--postgres-outage-ms",
                &config.postgres_outage_ms.to_string(),
            ])
            .args(["--recovery-interval-ms", "300"])
            .args(["--work-ms", &config.work_ms.to_string()])
            .args(["--concurrency", "4", "--lock-wait-ms", "2000"])
            .args(["--drain-timeout-ms", "3000", "--batch-limit", "8"])
            .args(["--wait-for-services", "10s"])
            .env(
                "RUST_LOG",
                std::env::var("CHAOS_WORKER_LOG").unwrap_or_else(|_| "warn,history=info".into()),
            )
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true);
        if redlock {
            command.args(["--lock-redis-urls", &self.topology.redlock_urls.join(",")]);
        }
        if config.unsafe_skip_fence {
            command.arg("--chaos-unsafe-skip-fence");
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting a worker in {host}"))?;
        Ok(HostWorker {
            host: host.to_owned(),
            name,
            child,
            log,
            read_to: 0,
        })
    }

    /// Runs scenario `name` for the configured seconds: cuts, one worker at a time (rotating,
    /// starting at `offset`), each right after that worker's next claim; load throughout.
    async fn scenario(&mut self, name: &str, offset: usize) -> anyhow::Result<ScenarioTally> {
        let config = self.config;
        let lengths = config.cut_lengths(name);
        let mut tally = ScenarioTally {
            name: name.to_owned(),
            cut_ms: lengths.iter().map(|l| l.as_millis() as u64).collect(),
            ..ScenarioTally::default()
        };
        let end = Instant::now() + Duration::from_secs(config.scenario_seconds);
        let settle = Duration::from_millis(config.lock_ttl_ms + 500);
        let mut round = offset;
        // Room for one more claim wait, cut and settle before the scenario ends.
        while Instant::now() + lengths[tally.cuts % lengths.len()] + settle < end {
            let length = lengths[tally.cuts % lengths.len()];
            let slot = round % self.workers.len();
            round += 1;
            let host = self.workers[slot].host.clone();
            let servers = self.servers_to_cut(name)?;
            let cut = self.topology.cut(&host, &servers)?;
            let claimed = self.wait_for_claim(slot, Duration::from_secs(5)).await?;
            cut.apply(true)?;
            let cut_ms = now_ms();
            self.active.push(cut.clone());
            tally.cuts += 1;
            tally.mid_hold += usize::from(claimed);
            let detail = format!(
                "{} for {} ms{}",
                cut.describe(&host),
                length.as_millis(),
                if claimed {
                    ", right after a claim"
                } else {
                    ", no claim seen"
                }
            );
            self.events.push(Event::Fault {
                kind: name.to_owned(),
                detail,
                at_ms: cut_ms,
            });
            self.produce_for(length).await?;
            cut.apply(false)?;
            self.cut_log.push(CutRecord {
                scenario: name.to_owned(),
                worker: self.workers[slot].name.clone(),
                cut_ms,
                healed_ms: now_ms(),
            });
            self.active.retain(|active| active != &cut);
            self.events.push(Event::Fault {
                kind: format!("{name}-healed"),
                detail: cut.describe(&host),
                at_ms: now_ms(),
            });
            self.produce_for(settle).await?;
        }
        let rest = end.saturating_duration_since(Instant::now());
        self.produce_for(rest).await?;
        Ok(tally)
    }

    /// The server hosts scenario `name` cuts a worker from (empty: every host).
    fn servers_to_cut(&self, name: &str) -> anyhow::Result<Vec<String>> {
        let topology = self.topology;
        Ok(match name {
            "redis-cut" => vec![topology.host_of_url(&topology.redis_url)?],
            "pg-cut" => vec![topology.host_of_url(&topology.database_url)?],
            // The worker keeps the queue's Redis (the first master) and loses the other two:
            // it sees one of three, a minority.
            "redlock-minority" => topology.redlock_urls[1..]
                .iter()
                .map(|url| topology.host_of_url(url))
                .collect::<anyhow::Result<_>>()?,
            _ => Vec::new(),
        })
    }

    /// Produces orders until worker `slot` logs a new claim (true) or `within` passes (false).
    async fn wait_for_claim(&mut self, slot: usize, within: Duration) -> anyhow::Result<bool> {
        // Only claims logged from now on count.
        self.workers[slot].read_to = std::fs::metadata(&self.workers[slot].log)
            .map(|m| m.len())
            .unwrap_or(0);
        let deadline = Instant::now() + within;
        let mut last_batch = Instant::now();
        while Instant::now() < deadline {
            if self.new_claim(slot) {
                return Ok(true);
            }
            if last_batch.elapsed() >= BATCH_EVERY {
                self.produce_batch().await?;
                last_batch = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(false)
    }

    /// Whether worker `slot`'s log gained a claim since it was last read (only the new bytes are
    /// read; a line still being written is read next time).
    fn new_claim(&mut self, slot: usize) -> bool {
        use std::io::{Read, Seek, SeekFrom};
        let worker = &mut self.workers[slot];
        let mut fresh = Vec::new();
        let read = std::fs::File::open(&worker.log).and_then(|mut file| {
            file.seek(SeekFrom::Start(worker.read_to))?;
            file.read_to_end(&mut fresh)
        });
        if read.is_err() {
            return false;
        }
        let Some(end) = fresh.iter().rposition(|b| *b == b'\n') else {
            return false;
        };
        worker.read_to += end as u64 + 1;
        String::from_utf8_lossy(&fresh[..=end])
            .lines()
            .filter_map(|line| parse_log_line(line, &worker.name))
            .any(|event| matches!(event, Event::Claim { .. }))
    }

    /// Produces a batch every [`BATCH_EVERY`] for `span`.
    async fn produce_for(&mut self, span: Duration) -> anyhow::Result<()> {
        let until = Instant::now() + span;
        while Instant::now() < until {
            self.produce_batch().await?;
            tokio::time::sleep(BATCH_EVERY.min(until - Instant::now())).await;
        }
        Ok(())
    }

    /// Pushes 1–3 orders for random products (this process's Redis link is never cut).
    async fn produce_batch(&mut self) -> anyhow::Result<()> {
        let mut payloads = Vec::new();
        for _ in 0..self.orders_rng.usize(1..=3) {
            let (order, produced) = random_order(&mut self.orders_rng, self.config.products)?;
            self.events.push(produced);
            payloads.push(order.to_json());
        }
        self.queue
            .push_batch(&payloads)
            .await
            .context("producing orders")?;
        self.produced += payloads.len();
        Ok(())
    }

    async fn stop_workers(&mut self) {
        stop_gracefully(self.workers.iter_mut().map(|worker| &mut worker.child)).await;
    }

    /// Merges every worker's history events with the run's own, sorted by time, into `path`.
    fn collect_history(&self, path: &Path) -> anyhow::Result<Vec<Event>> {
        merge_history(
            &self.events,
            self.workers
                .iter()
                .chain(self.retired.iter())
                .map(|worker| (worker.name.as_str(), worker.log.as_path())),
            path,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology() -> Topology {
        Topology {
            hosts: Topology::parse_hosts(&[
                "ls-redis=10.77.0.2".into(),
                "ls-redis2=10.77.0.3".into(),
                "ls-redis3=10.77.0.4".into(),
                "ls-pg=10.77.0.5".into(),
                "ls-w1=10.77.0.11".into(),
            ])
            .unwrap(),
            link_prefix: "v-".into(),
            worker_hosts: vec!["ls-w1".into()],
            redis_url: "redis://10.77.0.2:6379".into(),
            database_url: "postgres://postgres@10.77.0.5:5432/lockstock".into(),
            redlock_urls: vec![
                "redis://10.77.0.2:6379".into(),
                "redis://10.77.0.3:6379".into(),
                "redis://10.77.0.4:6379".into(),
            ],
        }
    }

    #[test]
    fn a_cut_from_one_server_is_a_blackhole_route_on_the_server_side() {
        let topology = topology();
        let pg = topology.host_of_url(&topology.database_url).unwrap();
        assert_eq!(pg, "ls-pg");
        let cut = topology.cut("ls-w1", &[pg]).unwrap();
        assert_eq!(
            cut.commands(true),
            vec![
                "netns exec ls-pg ip route add blackhole 10.77.0.11/32"
                    .split(' ')
                    .map(String::from)
                    .collect::<Vec<_>>()
            ]
        );
        assert_eq!(cut.commands(false)[0][5], "del");
    }

    #[test]
    fn a_cut_from_everything_takes_the_hosts_link_down() {
        let cut = topology().cut("ls-w1", &[]).unwrap();
        assert_eq!(
            cut.commands(true),
            vec![vec!["link", "set", "v-ls-w1", "down"]]
        );
        assert_eq!(cut.commands(false)[0][3], "up");
    }

    #[test]
    fn an_unknown_server_address_is_an_error() {
        let topology = topology();
        assert!(topology.host_of_url("redis://10.9.9.9:6379").is_err());
        assert!(Topology::parse_hosts(&["ls-w1".into()]).is_err());
    }

    fn grant(fence: u64, reply_ms: u64) -> Event {
        Event::Grant {
            resource: "product:1".into(),
            fence,
            worker: "w".into(),
            start_ms: reply_ms,
            reply_ms,
            deadline_ms: reply_ms + 2_000,
        }
    }

    fn release(fence: u64, at_ms: u64, lost: bool) -> Event {
        Event::Release {
            resource: "product:1".into(),
            fence,
            worker: "w".into(),
            at_ms,
            lost,
        }
    }

    #[test]
    fn a_hold_open_at_the_cut_is_kept_when_released_after_the_heal_and_lost_otherwise() {
        let events = vec![
            grant(1, 90),
            release(1, 95, false), // ended before the cut: not counted
            grant(2, 100),
            grant(3, 105),
            grant(4, 106),
            release(2, 1_200, false), // kept through a cut of 110..1_100
            release(3, 900, true),    // lost during it
            grant(5, 1_150),          // granted after the cut: not counted
        ];
        // Fence 4 is never released: lost.
        assert_eq!(hold_fates(&events, "w", 110, 1_100), (3, 1, 2));
        assert_eq!(hold_fates(&events, "other", 110, 1_100), (0, 0, 0));
    }

    #[test]
    fn each_cut_lasts_as_long_as_its_scenario_needs() {
        let config = MultihostConfig {
            scenarios: Vec::new(),
            scenario_seconds: 20,
            seed: 1,
            products: 3,
            stock: 100,
            lock_ttl_ms: 2_000,
            liveness_ttl_ms: 3_000,
            work_ms: 300,
            postgres_outage_ms: 10_000,
            drift_ms: 10,
            dir: PathBuf::new(),
            unsafe_skip_fence: false,
        };
        let ms = |name: &str| {
            config
                .cut_lengths(name)
                .iter()
                .map(|l| l.as_millis() as u64)
                .collect::<Vec<_>>()
        };
        assert_eq!(ms("heal-mid-hold").len(), 2);
        for heal in ms("heal-mid-hold") {
            assert!(heal > config.work_ms && heal < config.lock_ttl_ms);
        }
        for both in ms("both-cut") {
            assert!(both > config.liveness_ttl_ms && both < config.postgres_outage_ms);
        }
        for name in ["redis-cut", "pg-cut", "redlock-minority"] {
            assert!(ms(name).iter().all(|&cut| cut > 2 * config.liveness_ttl_ms));
        }
    }
}
