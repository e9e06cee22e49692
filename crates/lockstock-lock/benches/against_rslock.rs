//! The lock next to its fastest peer, in one process against one Redis:
//! `cargo bench -p lockstock-lock --bench against_rslock [-- --seconds 3 --tasks 50 --json]`.
//!
//! For each runtime flavour (`current_thread`, `multi_thread`) and each shape (one task doing
//! sequential cycles; `--tasks` tasks sharing one client, distinct keys), it runs the same loop
//! three ways, one after the other on the same server (`REDIS_URL` or `--redis-url`):
//!
//! - `raw`: `SET key x` (one round trip; a lock cycle needs two, so the reference is raw / 2);
//! - `lockstock`: [`LockClient::acquire`] + [`LockGuard::release`] (fencing, heartbeat, FIFO
//!   queue on contention), default options;
//! - `rslock`: rslock 0.10's `LockManager::lock` + `unlock` on the same server (no fencing, no
//!   queue, no heartbeat);
//! - `scripts`: the protocol's floor — the uncontended parts of lockstock's two scripts
//!   (`acquire_fast.lua`, `release_fast.lua`, with the same keys and arguments as the client
//!   sends) run as two `redis::Script`s on the raw connection, with no client around them (no
//!   guard, heartbeat, metrics or key building). What `lockstock` costs above `scripts` is the
//!   client; what `scripts` costs above `rslock` is the fenced grant on the server.
//!
//! Every row reports cycles/s, p50/p99 of one cycle, the server's commands per cycle (the delta
//! of the `calls` in `INFO commandstats`, script-internal calls included; other clients of the
//! same server add to it), the server's CPU time per cycle (`usec` of the `SET` and `EVALSHA`
//! a cycle sends, a script's inner commands included) and the ratios the issue sets targets on; the machine's load average
//! is printed with the run. `--json` prints one object per row with `lockctl bench --json`'s
//! field names (`scenario`, `ops_per_sec`, `p50_us`, `p99_us`, `redis_cmds_per_op`, `ops`,
//! `ratio_to_raw`, `note`) plus `peer`, `runtime`, `tasks`, `redis_usec_per_op`,
//! `ratio_to_rslock` and `load_avg`.
//!
//! Not measured here: contention (one key, many processes): `lockctl bench --scenario contended
//! --processes` does that, and rslock has no queue to compare it with.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use lockstock_lock::{LockClient, LockConfig, LockGuard, LockOptions, LockOwner};
use redis::{AsyncCommands, aio::ConnectionManager};

#[path = "../tests/support/commandstats.rs"]
mod commandstats;
use serde::Serialize;

/// One measured loop.
#[derive(Debug, Clone, Default, Serialize)]
struct Row {
    /// `uncontended` (one task) or `concurrent` (`tasks` tasks), as `lockctl bench` names them.
    scenario: String,
    /// `raw`, `lockstock` or `rslock`.
    peer: String,
    /// `current_thread` or `multi_thread`.
    runtime: String,
    /// Tasks running the loop at once.
    tasks: usize,
    /// Cycles (raw: SETs) per second.
    ops_per_sec: f64,
    /// Median latency of one cycle, µs.
    p50_us: u64,
    /// 99th-percentile latency of one cycle, µs.
    p99_us: u64,
    /// Commands the server ran per cycle (`INFO commandstats` delta).
    redis_cmds_per_op: f64,
    /// Server CPU per cycle, µs (the `usec` of `INFO commandstats`: an `EVALSHA`'s includes the
    /// commands its script runs, so only top-level commands are summed).
    redis_usec_per_op: f64,
    /// Cycles measured.
    ops: u64,
    /// This row's rate over the raw rate (raw / 2 for lock cycles: two round trips each).
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio_to_raw: Option<f64>,
    /// This row's rate over rslock's, same flavour and shape (lockstock and scripts rows).
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio_to_rslock: Option<f64>,
    /// 1-minute load average when the row finished.
    load_avg: f64,
    /// What a cycle is.
    note: String,
}

#[derive(Debug, Clone)]
struct Settings {
    url: String,
    seconds: f64,
    tasks: usize,
    json: bool,
    /// Only these peers (all when empty): for profiling one loop.
    peers: Vec<String>,
    /// Only this shape: `uncontended` or `concurrent` (both when unset).
    scenario: Option<String>,
}

fn parse_args() -> Settings {
    let mut settings = Settings {
        url: std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
        seconds: 3.0,
        tasks: 50,
        json: false,
        peers: Vec::new(),
        scenario: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--redis-url" => settings.url = args.next().expect("--redis-url URL"),
            "--seconds" => {
                settings.seconds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--seconds N")
            }
            "--tasks" => {
                settings.tasks = args.next().and_then(|v| v.parse().ok()).expect("--tasks N")
            }
            "--json" => settings.json = true,
            "--peer" => settings
                .peers
                .push(args.next().expect("--peer raw|lockstock|rslock|scripts")),
            "--scenario" => {
                settings.scenario = Some(args.next().expect("--scenario uncontended|concurrent"))
            }
            // `cargo bench` passes `--bench`; anything else is a filter we do not use.
            _ => {}
        }
    }
    settings
}

fn load_avg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn percentile_us(sorted: &[Duration], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let index = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[index.min(sorted.len() - 1)].as_micros() as u64
}

/// The sums of `calls` over `INFO commandstats` (the INFO that reads it counts itself) and of
/// `usec` over the commands a client can send (script-internal ones are inside `evalsha`'s).
async fn server_calls(conn: &ConnectionManager) -> (u64, u64) {
    let stats = commandstats::read(conn).await;
    let calls = stats.iter().map(|stat| stat.calls).sum();
    // What a script runs is counted in its EVALSHA's usec too; only the commands a cycle sends
    // itself are summed, so the figure is the cycle's server time.
    let usec = stats
        .iter()
        .filter(|stat| matches!(stat.name.as_str(), "set" | "evalsha" | "eval"))
        .map(|stat| stat.usec)
        .sum();
    (calls, usec)
}

/// Removes the keys a loop left under `prefix` (fence counters never expire).
async fn delete_prefix(conn: &ConnectionManager, prefix: &str) {
    use futures_util::StreamExt;
    let mut conn = conn.clone();
    let mut scanning = conn.clone();
    let keys: Vec<String> = {
        let mut scan = scanning
            .scan_match::<_, String>(format!("{prefix}*"))
            .await
            .expect("SCAN");
        let mut keys = Vec::new();
        while let Some(key) = scan.next().await {
            keys.push(key.expect("a key name"));
        }
        keys
    };
    for chunk in keys.chunks(1000) {
        let () = redis::cmd("UNLINK")
            .arg(chunk)
            .query_async(&mut conn)
            .await
            .expect("UNLINK");
    }
}

/// What one task of a loop does per cycle.
#[derive(Clone)]
enum Peer {
    Raw(ConnectionManager),
    Lockstock(LockClient),
    Rslock(rslock::LockManager),
    Scripts(ConnectionManager, Arc<FloorScripts>),
}

/// The uncontended parts of the mutex's acquire and release scripts, as the `scripts` peer
/// sends them (each ends where its fast part would fall through to the helpers).
struct FloorScripts {
    acquire: redis::Script,
    release: redis::Script,
    owner: String,
}

impl FloorScripts {
    fn new() -> Self {
        Self {
            acquire: redis::Script::new(concat!(
                include_str!("../src/scripts/acquire_fast.lua"),
                "\nreturn redis.error_reply('the floor bench found its key held')"
            )),
            release: redis::Script::new(concat!(
                include_str!("../src/scripts/release_fast.lua"),
                "\nreturn redis.error_reply('the floor bench found a foreign hold')"
            )),
            owner: serde_json::json!({"name": "bench-scripts", "pid": std::process::id()})
                .to_string(),
        }
    }

    /// One acquire + release of `key`, with the client's key layout and arguments.
    async fn cycle(&self, conn: &mut ConnectionManager, key: &str, ttl_ms: u64) {
        let token = lockstock_lock::LockToken::new().to_string();
        let (lock, fence, queue) = (
            format!("{key}:lock"),
            format!("{key}:fence"),
            format!("{key}:queue"),
        );
        let _fence: i64 = self
            .acquire
            .key(&lock)
            .key(&fence)
            .key(&queue)
            .arg(&token)
            .arg(ttl_ms)
            .arg(&self.owner)
            .arg(0)
            .arg(format!("{key}:handoff"))
            .arg(0)
            .invoke_async(conn)
            .await
            .expect("floor acquire");
        let released: i64 = self
            .release
            .key(&lock)
            .key(&fence)
            .key(&queue)
            .arg(&token)
            .arg(ttl_ms)
            .invoke_async(conn)
            .await
            .expect("floor release");
        assert_eq!(released, 1, "the floor bench's release");
    }
}

impl Peer {
    fn name(&self) -> &'static str {
        match self {
            Self::Raw(_) => "raw",
            Self::Lockstock(_) => "lockstock",
            Self::Rslock(_) => "rslock",
            Self::Scripts(..) => "scripts",
        }
    }

    async fn cycle(&mut self, key: &str, options: &LockOptions) {
        match self {
            Self::Raw(conn) => {
                let () = redis::cmd("SET")
                    .arg(key)
                    .arg("x")
                    .query_async(conn)
                    .await
                    .expect("SET");
            }
            Self::Lockstock(client) => {
                let guard: LockGuard = client
                    .acquire(key, options, Duration::from_secs(5))
                    .await
                    .expect("lockstock acquire");
                guard.release().await.expect("lockstock release");
            }
            Self::Scripts(conn, scripts) => {
                scripts
                    .cycle(conn, key, options.ttl.as_millis() as u64)
                    .await
            }
            Self::Rslock(manager) => {
                let lock = manager.lock(key, options.ttl).await.expect("rslock lock");
                manager.unlock(&lock).await;
            }
        }
    }
}

/// Runs `tasks` copies of `peer`'s loop for `seconds` on distinct keys under `prefix`.
async fn measure(
    peer: Peer,
    prefix: String,
    tasks: usize,
    seconds: f64,
) -> (u64, Vec<Duration>, f64) {
    let options = Arc::new(LockOptions::default());
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(seconds);
    let mut handles = Vec::new();
    for task in 0..tasks {
        let mut peer = peer.clone();
        let options = options.clone();
        let prefix = prefix.clone();
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(1 << 16);
            let mut i = 0u64;
            let mut key = String::with_capacity(prefix.len() + 24);
            while Instant::now() < end {
                key.clear();
                use std::fmt::Write;
                let _ = write!(key, "{prefix}t{task}:{i}");
                let t = Instant::now();
                peer.cycle(&key, &options).await;
                latencies.push(t.elapsed());
                i += 1;
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for handle in handles {
        latencies.extend(handle.await.expect("bench task"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    (latencies.len() as u64, latencies, elapsed)
}

async fn run_flavour(settings: &Settings, runtime: &str) -> Vec<Row> {
    let admin = ConnectionManager::new(redis::Client::open(settings.url.as_str()).expect("URL"))
        .await
        .expect("connect to Redis");
    let mut rows = Vec::new();
    for tasks in [1, settings.tasks] {
        let scenario = if tasks == 1 {
            "uncontended"
        } else {
            "concurrent"
        };
        if settings.scenario.as_deref().is_some_and(|s| s != scenario) {
            continue;
        }
        let mut shape_rows: Vec<Row> = Vec::new();
        for which in ["raw", "lockstock", "rslock", "scripts"] {
            if !settings.peers.is_empty() && !settings.peers.iter().any(|p| p == which) {
                continue;
            }
            let prefix = format!("bench-rslock-{}:", uuid::Uuid::new_v4().simple());
            let peer = match which {
                "raw" => Peer::Raw(admin.clone()),
                "lockstock" => {
                    let config = LockConfig::default()
                        .with_prefix(prefix.trim_end_matches(':'))
                        .expect("prefix")
                        .with_owner(LockOwner::this_process("bench-lockstock"));
                    Peer::Lockstock(
                        LockClient::connect(&settings.url, config)
                            .await
                            .expect("lockstock connect"),
                    )
                }
                "scripts" => Peer::Scripts(admin.clone(), Arc::new(FloorScripts::new())),
                _ => Peer::Rslock(rslock::LockManager::new(vec![settings.url.clone()])),
            };
            // One warm-up cycle: connections open, scripts loaded.
            peer.clone()
                .cycle(&format!("{prefix}warm"), &LockOptions::default())
                .await;
            let before = server_calls(&admin).await;
            let name = peer.name();
            let (ops, latencies, elapsed) =
                measure(peer, prefix.clone(), tasks, settings.seconds).await;
            // The INFO that read `before` is counted in `after`; take it off.
            let (after, after_usec) = server_calls(&admin).await;
            let after = after.saturating_sub(1);
            let (before, before_usec) = before;
            delete_prefix(&admin, &prefix).await;
            shape_rows.push(Row {
                scenario: scenario.into(),
                peer: name.into(),
                runtime: runtime.into(),
                tasks,
                ops_per_sec: ops as f64 / elapsed,
                p50_us: percentile_us(&latencies, 50.0),
                p99_us: percentile_us(&latencies, 99.0),
                redis_cmds_per_op: after.saturating_sub(before) as f64 / ops.max(1) as f64,
                redis_usec_per_op: after_usec.saturating_sub(before_usec) as f64
                    / ops.max(1) as f64,
                ops,
                load_avg: load_avg(),
                note: if name == "raw" {
                    format!("{tasks} task(s), SET on distinct keys")
                } else if name == "scripts" {
                    format!("{tasks} task(s), the two scripts' fast parts, plain redis-rs")
                } else {
                    format!("{tasks} task(s), acquire + release on distinct keys")
                },
                ..Row::default()
            });
        }
        let rate = |peer: &str| {
            shape_rows
                .iter()
                .find(|row| row.peer == peer)
                .map(|row| row.ops_per_sec)
        };
        let (raw, rslock) = (rate("raw"), rate("rslock"));
        for row in &mut shape_rows {
            match row.peer.as_str() {
                "raw" => row.ratio_to_raw = Some(1.0),
                peer => {
                    row.ratio_to_raw = raw.map(|raw| row.ops_per_sec / (raw / 2.0));
                    if peer != "rslock" {
                        row.ratio_to_rslock = rslock.map(|rslock| row.ops_per_sec / rslock);
                    }
                }
            }
        }
        rows.extend(shape_rows);
    }
    rows
}

fn print_row(row: &Row, json: bool) {
    if json {
        println!("{}", serde_json::to_string(row).expect("a row serialises"));
        return;
    }
    let ratio = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.2}"));
    println!(
        "{:<12} {:<15} {:<10} {:>5} {:>10.0} {:>7} {:>7} {:>8.2} {:>8.2} {:>9} {:>9} {:>5.2}",
        row.scenario,
        row.runtime,
        row.peer,
        row.tasks,
        row.ops_per_sec,
        row.p50_us,
        row.p99_us,
        row.redis_cmds_per_op,
        row.redis_usec_per_op,
        ratio(row.ratio_to_raw),
        ratio(row.ratio_to_rslock),
        row.load_avg,
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it
    // (in a debug build, against the shared server): measure only when benchmarking.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("against_rslock: run with `cargo bench -p lockstock-lock --bench against_rslock`");
        return;
    }
    let settings = parse_args();
    if !settings.json {
        println!(
            "# against_rslock: {} s per row on {}; load average at start {:.2}",
            settings.seconds,
            settings.url,
            load_avg()
        );
        println!(
            "{:<12} {:<15} {:<10} {:>5} {:>10} {:>7} {:>7} {:>8} {:>8} {:>9} {:>9} {:>5}",
            "scenario",
            "runtime",
            "peer",
            "tasks",
            "cycles/s",
            "p50 µs",
            "p99 µs",
            "cmds/op",
            "srv µs/op",
            "×raw/2",
            "×rslock",
            "load"
        );
    }
    for runtime in ["current_thread", "multi_thread"] {
        let rt = match runtime {
            "current_thread" => tokio::runtime::Builder::new_current_thread(),
            _ => tokio::runtime::Builder::new_multi_thread(),
        }
        .enable_all()
        .build()
        .expect("a tokio runtime");
        let rows = rt.block_on(run_flavour(&settings, runtime));
        for row in &rows {
            print_row(row, settings.json);
        }
    }
}
