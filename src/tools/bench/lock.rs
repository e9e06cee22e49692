//! `lockctl bench`: the lock's speed next to the raw Redis round trip, measured in one run.
//!
//! Scenarios (each runs for the configured duration):
//! - `raw`: one client's sequential `SET`s: the physical limit of this machine and server;
//! - `uncontended`: one client, sequential acquire + release cycles on distinct keys;
//! - `concurrent`: 50 tasks sharing one client, distinct keys;
//! - `contended`: 10 contenders (own connections, or own processes with `--processes`) on one
//!   key, hold 0: acquisitions/s, owner switches/s, acquire wait, switch wait (from a release to
//!   the next owner's acquisition), and per-contender fairness;
//! - `redlock-uncontended`, `redlock-contended`, `semaphore`, `rwlock`, `fair`: the other
//!   primitives (see [`super::primitives`]).
//!
//! Redis command counts come from the server's `INFO stats` before and after, so calls made
//! inside Lua scripts count too; the client's own round trips are reported beside them.
//!
//! The comparison with the fastest peer (rslock, a dev-dependency of the lock crate only) runs
//! in the lock crate: `cargo bench -p lockstock-lock --bench against_rslock` (raw `SET`, this
//! lock and rslock in one process on one server, both runtime flavours, JSON with `-- --json`).

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use redis::aio::ConnectionManager;
use tokio::io::AsyncReadExt;

use super::{primitives, report::Report, stats::percentile_us};
use lockstock_lock::{LockClient, LockConfig, LockOptions, LockOwner};

/// The scenarios `lockctl bench` knows, in the order they run.
pub const SCENARIOS: [&str; 9] = [
    "raw",
    "uncontended",
    "concurrent",
    "contended",
    "redlock-uncontended",
    "redlock-contended",
    "semaphore",
    "rwlock",
    "fair",
];

/// Settings of one `lockctl bench` run.
#[derive(Debug, Clone)]
pub struct LockBench {
    /// Redis to measure.
    pub url: String,
    /// How long each scenario runs.
    pub duration: Duration,
    /// How long the contended scenario runs.
    pub contended_duration: Duration,
    /// Tasks in the `concurrent` scenario.
    pub tasks: usize,
    /// Contenders in the `contended` scenario.
    pub contenders: usize,
    /// Run contenders as separate processes of this executable (`lockctl bench-contender`).
    pub processes: Option<PathBuf>,
    /// Redlock instances for the `redlock-*` scenarios; empty = start three local ones.
    pub lock_urls: Vec<String>,
}

impl LockBench {
    /// Runs `scenarios` (all when empty), calling `emit` after each.
    pub async fn run(
        &self,
        scenarios: &[String],
        mut emit: impl FnMut(&Report),
    ) -> anyhow::Result<Vec<Report>> {
        for name in scenarios {
            if !SCENARIOS.contains(&name.as_str()) {
                bail!("unknown scenario {name:?}; known: {}", SCENARIOS.join(", "));
            }
        }
        let wanted = |name: &str| scenarios.is_empty() || scenarios.iter().any(|s| s == name);
        let admin = connect(&self.url).await?;
        let mut reports = Vec::new();
        let mut raw_rate = None;
        for name in SCENARIOS {
            // `raw` always runs: it is the reference the others are compared with.
            if name != "raw" && !wanted(name) {
                continue;
            }
            let prefix = format!("bench-{}", uuid::Uuid::new_v4().simple());
            let before = commands_processed(&admin).await?;
            let mut report = match name {
                "raw" => self.raw(&prefix).await?,
                "uncontended" => self.uncontended(&prefix).await?,
                "concurrent" => self.concurrent(&prefix).await?,
                "contended" => self.contended(&prefix).await?,
                "redlock-uncontended" => primitives::redlock_uncontended(self, &prefix).await?,
                "redlock-contended" => primitives::redlock_contended(self, &prefix).await?,
                "semaphore" => primitives::semaphore(self, &prefix).await?,
                "rwlock" => primitives::rwlock(self, &prefix).await?,
                _ => primitives::fair(self, &prefix).await?,
            };
            // The INFO call that read `before` is counted in `after`; take it off.
            let after = commands_processed(&admin).await?.saturating_sub(1);
            report.redis_cmds_per_op =
                (after.saturating_sub(before)) as f64 / report.ops.max(1) as f64;
            delete_prefix(&admin, &prefix).await?;
            if name == "raw" {
                raw_rate = Some(report.ops_per_sec);
                if !wanted("raw") {
                    continue; // measured only as the reference for the ratios
                }
            } else if let (Some(raw), None) = (raw_rate, report.ratio_to_raw) {
                report.ratio_to_raw = Some(report.ops_per_sec / raw);
            }
            emit(&report);
            reports.push(report);
        }
        Ok(reports)
    }

    async fn raw(&self, prefix: &str) -> anyhow::Result<Report> {
        let mut conn = connect(&self.url).await?;
        let key = format!("{prefix}:raw");
        let mut latencies = Vec::new();
        let started = Instant::now();
        while started.elapsed() < self.duration {
            let t = Instant::now();
            let _: () = redis::cmd("SET")
                .arg(&key)
                .arg("x")
                .query_async(&mut conn)
                .await?;
            latencies.push(t.elapsed());
        }
        Ok(finish(
            "raw",
            latencies,
            started.elapsed(),
            Some(1.0),
            "one client, sequential SET",
        ))
    }

    async fn uncontended(&self, prefix: &str) -> anyhow::Result<Report> {
        let client = bench_client(&self.url, prefix, "uncontended").await?;
        let options = LockOptions::default();
        let mut latencies = Vec::new();
        let started = Instant::now();
        let mut i = 0u64;
        while started.elapsed() < self.duration {
            let t = Instant::now();
            let guard = client
                .acquire(&format!("k{i}"), &options, Duration::from_secs(1))
                .await?;
            guard.release().await?;
            latencies.push(t.elapsed());
            i += 1;
        }
        let mut report = finish(
            "uncontended",
            latencies,
            started.elapsed(),
            Some(2.0),
            "acquire+release cycles, distinct keys",
        );
        report.note.push_str("; target ≥ 0.85 × raw/2");
        Ok(report)
    }

    async fn concurrent(&self, prefix: &str) -> anyhow::Result<Report> {
        let client = bench_client(&self.url, prefix, "concurrent").await?;
        let started = Instant::now();
        let end = started + self.duration;
        let mut tasks = Vec::new();
        for task in 0..self.tasks {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                let options = LockOptions::default();
                let mut latencies = Vec::new();
                let mut i = 0u64;
                while Instant::now() < end {
                    let t = Instant::now();
                    let guard = client
                        .acquire(&format!("t{task}:{i}"), &options, Duration::from_secs(5))
                        .await?;
                    guard.release().await?;
                    latencies.push(t.elapsed());
                    i += 1;
                }
                anyhow::Ok(latencies)
            }));
        }
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await??);
        }
        Ok(finish(
            "concurrent",
            latencies,
            started.elapsed(),
            Some(2.0),
            &format!("{} tasks, one shared connection, distinct keys", self.tasks),
        ))
    }

    async fn contended(&self, prefix: &str) -> anyhow::Result<Report> {
        let key = "hot";
        let start_at = unix_us() + 1_000_000; // time for every contender to connect
        let end_at = start_at + self.contended_duration.as_micros() as u64;
        let mut records = Vec::new();
        let mut round_trips = 0;
        if let Some(exe) = &self.processes {
            let mut children = Vec::new();
            for id in 0..self.contenders {
                let child = tokio::process::Command::new(exe)
                    .args([
                        "bench-contender",
                        "--redis-url",
                        &self.url,
                        "--prefix",
                        prefix,
                        "--key",
                        key,
                    ])
                    .args([
                        "--id",
                        &id.to_string(),
                        "--start-at-us",
                        &start_at.to_string(),
                    ])
                    .args(["--end-at-us", &end_at.to_string()])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .kill_on_drop(true)
                    .spawn()
                    .with_context(|| format!("starting contender process {}", exe.display()))?;
                children.push(child);
            }
            for mut child in children {
                let mut out = String::new();
                if let Some(mut stdout) = child.stdout.take() {
                    stdout.read_to_string(&mut out).await?;
                }
                let status = child.wait().await?;
                if !status.success() {
                    bail!("a contender process failed: {status}");
                }
                let run = parse_run(&out)?;
                round_trips += run.round_trips;
                records.extend(run.records);
            }
        } else {
            let mut tasks = Vec::new();
            for id in 0..self.contenders {
                let client = bench_client(&self.url, prefix, &format!("contender-{id}")).await?;
                tasks.push(tokio::spawn(run_contender(
                    client,
                    key.to_owned(),
                    id,
                    start_at,
                    end_at,
                )));
            }
            for task in tasks {
                let run = task.await??;
                round_trips += run.round_trips;
                records.extend(run.records);
            }
        }
        let mut report = contended_report(records, self.contenders, self.processes.is_some());
        report.round_trips_per_op = Some(round_trips as f64 / report.ops.max(1) as f64);
        Ok(report)
    }
}

/// One acquisition by a contender, in Unix µs so processes can be merged.
#[derive(Debug, Clone, Copy)]
pub struct Acquisition {
    /// Which contender.
    pub id: usize,
    /// When it asked.
    pub asked_us: u64,
    /// When it had the lock.
    pub acquired_us: u64,
    /// When it sent the release.
    pub released_us: u64,
}

/// What one contender did.
#[derive(Debug, Clone, Default)]
pub struct ContenderRun {
    /// Its acquisitions in order.
    pub records: Vec<Acquisition>,
    /// Commands its client sent (acquire attempts + releases).
    pub round_trips: u64,
}

/// The loop of one contender: acquire, release at once, record, until `end_at_us`.
pub async fn run_contender(
    client: LockClient,
    key: String,
    id: usize,
    start_at_us: u64,
    end_at_us: u64,
) -> anyhow::Result<ContenderRun> {
    let options = LockOptions::default();
    let now = unix_us();
    if start_at_us > now {
        tokio::time::sleep(Duration::from_micros(start_at_us - now)).await;
    }
    let mut records = Vec::new();
    while unix_us() < end_at_us {
        let asked_us = unix_us();
        let guard = client
            .acquire(&key, &options, Duration::from_secs(10))
            .await?;
        let acquired_us = unix_us();
        let released_us = unix_us();
        guard.release().await?;
        records.push(Acquisition {
            id,
            asked_us,
            acquired_us,
            released_us,
        });
    }
    Ok(ContenderRun {
        records,
        round_trips: client.round_trips(),
    })
}

/// Prints a run as `id asked acquired released` lines plus a final `rt N` line (the contender
/// process's output).
pub fn format_run(run: &ContenderRun) -> String {
    let mut out = String::with_capacity(run.records.len() * 48);
    for r in &run.records {
        out.push_str(&format!(
            "{} {} {} {}\n",
            r.id, r.asked_us, r.acquired_us, r.released_us
        ));
    }
    out.push_str(&format!("rt {}\n", run.round_trips));
    out
}

fn parse_run(text: &str) -> anyhow::Result<ContenderRun> {
    let mut run = ContenderRun::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(count) = line.strip_prefix("rt ") {
            run.round_trips = count.parse().context("bad contender round-trip line")?;
        } else {
            run.records.push(parse_record(line)?);
        }
    }
    Ok(run)
}

fn parse_record(line: &str) -> anyhow::Result<Acquisition> {
    let f: Vec<u64> = line
        .split(' ')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("bad contender line")?;
    let [id, asked_us, acquired_us, released_us] = f[..] else {
        bail!("bad contender line {line:?}")
    };
    Ok(Acquisition {
        id: id as usize,
        asked_us,
        acquired_us,
        released_us,
    })
}

pub(super) fn contended_report(
    mut records: Vec<Acquisition>,
    contenders: usize,
    processes: bool,
) -> Report {
    records.sort_by_key(|r| r.acquired_us);
    let span_us = match (records.first(), records.last()) {
        (Some(first), Some(last)) => (last.released_us.saturating_sub(first.acquired_us)).max(1),
        _ => 1,
    };
    let secs = span_us as f64 / 1e6;
    let mut waits: Vec<Duration> = records
        .iter()
        .map(|r| Duration::from_micros(r.acquired_us.saturating_sub(r.asked_us)))
        .collect();
    let mut switch_waits = Vec::new();
    for pair in records.windows(2) {
        if pair[0].id != pair[1].id {
            switch_waits.push(Duration::from_micros(
                pair[1].acquired_us.saturating_sub(pair[0].released_us),
            ));
        }
    }
    let mut per_client = vec![0u64; contenders];
    for r in &records {
        if let Some(count) = per_client.get_mut(r.id) {
            *count += 1;
        }
    }
    let ops = records.len() as u64;
    Report {
        scenario: "contended".into(),
        ops_per_sec: ops as f64 / secs,
        p50_us: percentile_us(&mut waits, 50.0),
        p99_us: percentile_us(&mut waits, 99.0),
        ops,
        round_trips_per_op: None,
        owner_switches_per_sec: Some(switch_waits.len() as f64 / secs),
        switch_wait_p50_us: Some(percentile_us(&mut switch_waits, 50.0)),
        switch_wait_p99_us: Some(percentile_us(&mut switch_waits, 99.0)),
        min_per_client: per_client.iter().min().copied(),
        max_per_client: per_client.iter().max().copied(),
        note: format!(
            "{contenders} contenders ({}), one key, hold 0; p50/p99 = acquire wait",
            if processes {
                "processes"
            } else {
                "own connections"
            }
        ),
        ..Report::default()
    }
}

pub(super) fn finish(
    name: &str,
    mut latencies: Vec<Duration>,
    elapsed: Duration,
    round_trips: Option<f64>,
    note: &str,
) -> Report {
    let ops = latencies.len() as u64;
    Report {
        scenario: name.into(),
        ops_per_sec: ops as f64 / elapsed.as_secs_f64(),
        p50_us: percentile_us(&mut latencies, 50.0),
        p99_us: percentile_us(&mut latencies, 99.0),
        ops,
        round_trips_per_op: round_trips,
        note: note.into(),
        ..Report::default()
    }
}

/// A lock client for the benchmark under `prefix`.
pub async fn bench_client(url: &str, prefix: &str, owner: &str) -> anyhow::Result<LockClient> {
    let config = LockConfig::default()
        .with_prefix(prefix)?
        .with_owner(LockOwner::this_process(owner));
    Ok(LockClient::connect(url, config).await?)
}

async fn connect(url: &str) -> anyhow::Result<ConnectionManager> {
    let client = redis::Client::open(url).context("parsing the Redis URL")?;
    ConnectionManager::new(client)
        .await
        .context("connecting to Redis")
}

/// The server's `total_commands_processed`.
async fn commands_processed(conn: &ConnectionManager) -> anyhow::Result<u64> {
    let mut conn = conn.clone();
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut conn)
        .await?;
    info.lines()
        .find_map(|line| line.strip_prefix("total_commands_processed:"))
        .and_then(|v| v.trim().parse().ok())
        .context("INFO stats has no total_commands_processed")
}

/// Removes every key the scenario left (fence counters never expire).
async fn delete_prefix(conn: &ConnectionManager, prefix: &str) -> anyhow::Result<()> {
    let mut conn = conn.clone();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            let _: () = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut conn)
                .await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

pub(super) fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
