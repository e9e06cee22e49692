//! `lockctl bench` scenarios for the primitives beyond the mutex: Redlock, the semaphore, the
//! read/write lock and the fair lock.
//!
//! - `redlock-uncontended`: one client, sequential acquire + release on distinct keys over three
//!   instances, alternating 250 ms slices with the single-instance mutex on the first of those
//!   instances; the ratio column is Redlock's rate over the mutex's (target ≥ 0.8).
//! - `redlock-contended`: `--contenders` Redlock clients on one key, hold 0: owner switches and
//!   the release-to-next-owner wait (waiters are woken by release announcements).
//! - `semaphore`: 20 contenders on a 5-permit semaphore, hold 0; checks that never more than 5
//!   held at once.
//! - `rwlock`: 10 contenders, 90 % reads, hold 0; checks that a writer is always alone.
//! - `fair`: 10 contenders on one fair lock, hold 0: hand-off latency (release to the next
//!   holder's grant, target p99 < 5 ms) and an order check: how many waiters were served after
//!   one that asked more than 10 ms later. The check uses the client's clock at the call, not
//!   the arrival in Redis; on a loaded machine a thread descheduled for an OS time slice between
//!   the two looks like an overtake, hence the margin. (Strict FIFO itself is proven by the
//!   `tests/lock/fair.rs` scenarios, which order arrivals exactly.)
//!
//! Redlock instances: `--lock-redis-urls` / `LOCK_REDIS_URLS` when given (an odd number ≥ 3);
//! otherwise the bench starts three throwaway `redis-server` processes on free loopback ports
//! (no persistence; killed afterwards), which needs `redis-server` on the `PATH`. Instances the
//! bench started are fresh and used by nothing else, so their restart quarantine is off.

use std::{
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use super::{
    lock::{Acquisition, LockBench, bench_client, contended_report, finish, unix_us},
    report::Report,
};
use lockstock_lock::{FairLock, LockOptions, LockOwner, Redlock, RedlockConfig, RwLock, Semaphore};

/// Redis servers the bench started for Redlock; killed when dropped.
#[derive(Debug)]
struct LocalInstances {
    children: Vec<tokio::process::Child>,
    urls: Vec<String>,
}

impl LocalInstances {
    async fn start(count: usize) -> anyhow::Result<Self> {
        let mut instances = LocalInstances {
            children: Vec::new(),
            urls: Vec::new(),
        };
        for _ in 0..count {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .context("finding a free loopback port")?
                .port();
            let child = tokio::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .context("starting redis-server for the Redlock instances (is it on the PATH? or pass --lock-redis-urls)")?;
            instances.children.push(child);
            instances.urls.push(format!("redis://127.0.0.1:{port}"));
        }
        for url in &instances.urls {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let client = redis::Client::open(url.as_str())?;
                if let Ok(mut conn) = client.get_multiplexed_async_connection().await
                    && redis::cmd("PING")
                        .query_async::<String>(&mut conn)
                        .await
                        .is_ok()
                {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("the redis-server at {url} did not answer within 10 s");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(instances)
    }
}

/// The Redlock instances of a run: the configured ones, or three started here.
async fn instances(bench: &LockBench) -> anyhow::Result<(Vec<String>, Option<LocalInstances>)> {
    if bench.lock_urls.is_empty() {
        let local = LocalInstances::start(3).await?;
        Ok((local.urls.clone(), Some(local)))
    } else {
        Ok((bench.lock_urls.clone(), None))
    }
}

async fn redlock_client(
    urls: &[String],
    local: bool,
    prefix: &str,
    owner: &str,
) -> anyhow::Result<Redlock> {
    let mut config = RedlockConfig::default()
        .with_prefix(prefix)?
        .with_owner(LockOwner::this_process(owner));
    if local {
        config = config.with_restart_quarantine(Duration::ZERO);
    }
    Ok(Redlock::connect(urls, config).await?)
}

fn origin(local: bool) -> &'static str {
    if local {
        "3 local instances started by the bench"
    } else {
        "LOCK_REDIS_URLS instances"
    }
}

/// `redlock-uncontended`.
pub(super) async fn redlock_uncontended(bench: &LockBench, prefix: &str) -> anyhow::Result<Report> {
    let (urls, local) = instances(bench).await?;
    let redlock = redlock_client(&urls, local.is_some(), prefix, "redlock-uncontended").await?;
    let mutex = bench_client(&urls[0], prefix, "mutex-reference").await?;
    let options = LockOptions::default();
    let slice = Duration::from_millis(250);
    let slices = (bench.duration.as_millis() / slice.as_millis()).max(1) as usize;
    let (mut red_latencies, mut red_time) = (Vec::new(), Duration::ZERO);
    let (mut mutex_ops, mut mutex_time) = (0u64, Duration::ZERO);
    let mut i = 0u64;
    // Warm both up (connections, script cache), then alternate slices so machine noise hits
    // both alike.
    for _ in 0..50 {
        redlock
            .acquire(&format!("w{i}"), &options, Duration::from_secs(1))
            .await?
            .release()
            .await?;
        mutex
            .acquire(&format!("w{i}"), &options, Duration::from_secs(1))
            .await?
            .release()
            .await?;
        i += 1;
    }
    for _ in 0..slices {
        let started = Instant::now();
        while started.elapsed() < slice {
            let guard = mutex
                .acquire(&format!("m{i}"), &options, Duration::from_secs(1))
                .await?;
            guard.release().await?;
            mutex_ops += 1;
            i += 1;
        }
        mutex_time += started.elapsed();
        let started = Instant::now();
        while started.elapsed() < slice {
            let t = Instant::now();
            let guard = redlock
                .acquire(&format!("k{i}"), &options, Duration::from_secs(1))
                .await?;
            guard.release().await?;
            red_latencies.push(t.elapsed());
            i += 1;
        }
        red_time += started.elapsed();
    }
    let mutex_rate = mutex_ops as f64 / mutex_time.as_secs_f64();
    let red_rate = red_latencies.len() as f64 / red_time.as_secs_f64();
    let ceiling = parallel_ceiling(&urls, slice).await?;
    let mut report = finish(
        "redlock-uncontended",
        red_latencies,
        red_time,
        Some(2.0),
        &format!(
            "acquire+release, distinct keys, {}; {:.2} × the mutex on instance 1 in alternating slices ({mutex_rate:.0} ops/s), target ≥ 0.8; this machine's ceiling (a PING to all instances in parallel vs to one) {ceiling:.2}",
            origin(local.is_some()),
            red_rate / mutex_rate,
        ),
    );
    report.ratio_to_raw = Some(red_rate / mutex_rate);
    drop(local);
    Ok(report)
}

/// How much a round trip to every instance in parallel costs next to one to a single instance
/// (rate ratio): the best a Redlock cycle can do next to the mutex's on this machine, since both
/// take two round trips.
async fn parallel_ceiling(urls: &[String], slice: Duration) -> anyhow::Result<f64> {
    let mut conns = Vec::new();
    for url in urls {
        let client = redis::Client::open(url.as_str())?;
        conns.push(client.get_multiplexed_async_connection().await?);
    }
    let (mut single, mut all) = ((0u64, Duration::ZERO), (0u64, Duration::ZERO));
    for _ in 0..4 {
        let started = Instant::now();
        while started.elapsed() < slice / 2 {
            redis::cmd("PING")
                .query_async::<String>(&mut conns[0])
                .await?;
            single.0 += 1;
        }
        single.1 += started.elapsed();
        let started = Instant::now();
        while started.elapsed() < slice / 2 {
            let pings = conns.iter().map(|conn| {
                let mut conn = conn.clone();
                async move { redis::cmd("PING").query_async::<String>(&mut conn).await }
            });
            for reply in futures_util::future::join_all(pings).await {
                reply?;
            }
            all.0 += 1;
        }
        all.1 += started.elapsed();
    }
    let rate = |(ops, time): (u64, Duration)| ops as f64 / time.as_secs_f64();
    Ok(rate(all) / rate(single))
}

/// `redlock-contended`.
pub(super) async fn redlock_contended(bench: &LockBench, prefix: &str) -> anyhow::Result<Report> {
    let (urls, local) = instances(bench).await?;
    let contenders = bench.contenders;
    let start_at = unix_us() + 1_000_000;
    let end_at = start_at + bench.contended_duration.as_micros() as u64;
    let mut tasks = Vec::new();
    for id in 0..contenders {
        let redlock =
            redlock_client(&urls, local.is_some(), prefix, &format!("contender-{id}")).await?;
        tasks.push(tokio::spawn(async move {
            let options = LockOptions::default();
            wait_until_us(start_at).await;
            let mut records = Vec::new();
            while unix_us() < end_at {
                let asked_us = unix_us();
                let guard = redlock
                    .acquire("hot", &options, Duration::from_secs(10))
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
            anyhow::Ok(records)
        }));
    }
    let mut records = Vec::new();
    for task in tasks {
        records.extend(task.await??);
    }
    let mut report = contended_report(records, contenders, false);
    report.scenario = "redlock-contended".into();
    report.note = format!(
        "{contenders} Redlock clients, one key, hold 0, {}; waiters woken by release announcements; p50/p99 = acquire wait",
        origin(local.is_some())
    );
    drop(local);
    Ok(report)
}

/// `semaphore`: N = 5, 20 contenders.
pub(super) async fn semaphore(bench: &LockBench, prefix: &str) -> anyhow::Result<Report> {
    const PERMITS: u32 = 5;
    const CONTENDERS: usize = 20;
    let inside = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let start_at = unix_us() + 1_000_000;
    let end_at = start_at + bench.contended_duration.as_micros() as u64;
    let mut tasks = Vec::new();
    for id in 0..CONTENDERS {
        let client = bench_client(&bench.url, prefix, &format!("contender-{id}")).await?;
        let semaphore = Semaphore::new(&client, "pool", PERMITS)?;
        let (inside, most) = (inside.clone(), most.clone());
        tasks.push(tokio::spawn(async move {
            let options = LockOptions::default();
            wait_until_us(start_at).await;
            let mut records = Vec::new();
            while unix_us() < end_at {
                let asked_us = unix_us();
                let permit = semaphore.acquire(&options, Duration::from_secs(10)).await?;
                let acquired_us = unix_us();
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                // Hold 0, but let the other holders run meanwhile, so overlaps are visible.
                tokio::task::yield_now().await;
                inside.fetch_sub(1, Ordering::SeqCst);
                let released_us = unix_us();
                permit.release().await?;
                records.push(Acquisition {
                    id,
                    asked_us,
                    acquired_us,
                    released_us,
                });
            }
            anyhow::Ok(records)
        }));
    }
    let mut records = Vec::new();
    for task in tasks {
        records.extend(task.await??);
    }
    let most = most.load(Ordering::SeqCst);
    if most > PERMITS as usize {
        bail!("{most} holders of a {PERMITS}-permit semaphore at once");
    }
    let mut report = contended_report(records, CONTENDERS, false);
    report.scenario = "semaphore".into();
    report.owner_switches_per_sec = None;
    report.switch_wait_p50_us = None;
    report.switch_wait_p99_us = None;
    report.note = format!(
        "N = {PERMITS}, {CONTENDERS} contenders (own connections), hold 0; most holders at once {most} (≤ {PERMITS}); p50/p99 = acquire wait"
    );
    Ok(report)
}

/// `rwlock`: 10 contenders, 90 % reads.
pub(super) async fn rwlock(bench: &LockBench, prefix: &str) -> anyhow::Result<Report> {
    const CONTENDERS: usize = 10;
    // Readers add 1, a writer subtracts 1000: a writer must see 0, a reader a positive value.
    let gauge = Arc::new(AtomicI64::new(0));
    let most_readers = Arc::new(AtomicI64::new(0));
    let writes = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let end = started + bench.contended_duration;
    let mut tasks = Vec::new();
    for id in 0..CONTENDERS {
        let client = bench_client(&bench.url, prefix, &format!("contender-{id}")).await?;
        let lock = RwLock::new(&client, "doc")?;
        let (gauge, most_readers, writes) = (gauge.clone(), most_readers.clone(), writes.clone());
        tasks.push(tokio::spawn(async move {
            let options = LockOptions::default();
            let mut waits = Vec::new();
            while Instant::now() < end {
                let asked = Instant::now();
                if fastrand::u8(0..10) == 0 {
                    let guard = lock.write(&options, Duration::from_secs(10)).await?;
                    waits.push(asked.elapsed());
                    let before = gauge.fetch_sub(1000, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    gauge.fetch_add(1000, Ordering::SeqCst);
                    writes.fetch_add(1, Ordering::SeqCst);
                    guard.release().await?;
                    if before != 0 {
                        bail!("a writer found {before} in the gauge");
                    }
                } else {
                    let guard = lock.read(&options, Duration::from_secs(10)).await?;
                    waits.push(asked.elapsed());
                    let now = gauge.fetch_add(1, Ordering::SeqCst) + 1;
                    most_readers.fetch_max(now, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    gauge.fetch_sub(1, Ordering::SeqCst);
                    guard.release().await?;
                    if now <= 0 {
                        bail!("a reader found a writer inside");
                    }
                }
            }
            anyhow::Ok(waits)
        }));
    }
    let mut waits = Vec::new();
    for task in tasks {
        waits.extend(task.await??);
    }
    let ops = waits.len();
    let writes = writes.load(Ordering::SeqCst);
    let mut report = finish(
        "rwlock",
        waits,
        started.elapsed(),
        None,
        &format!(
            "{CONTENDERS} contenders, 90 % reads ({} reads, {writes} writes), hold 0; most readers together {}; no writer beside anyone; p50/p99 = acquire wait",
            ops - writes,
            most_readers.load(Ordering::SeqCst)
        ),
    );
    report.round_trips_per_op = None;
    Ok(report)
}

/// `fair`: 10 contenders on one fair lock.
pub(super) async fn fair(bench: &LockBench, prefix: &str) -> anyhow::Result<Report> {
    const CONTENDERS: usize = 10;
    let start_at = unix_us() + 1_000_000;
    let end_at = start_at + bench.contended_duration.as_micros() as u64;
    let mut tasks = Vec::new();
    for id in 0..CONTENDERS {
        let client = bench_client(&bench.url, prefix, &format!("contender-{id}")).await?;
        let lock = FairLock::new(&client, "turn")?;
        tasks.push(tokio::spawn(async move {
            let options = LockOptions::default();
            wait_until_us(start_at).await;
            let mut records = Vec::new();
            while unix_us() < end_at {
                let asked_us = unix_us();
                let guard = lock.acquire(&options, Duration::from_secs(10)).await?;
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
            anyhow::Ok(records)
        }));
    }
    let mut records = Vec::new();
    for task in tasks {
        records.extend(task.await??);
    }
    let overtaken = overtaken(&records, 10_000);
    let mut report = contended_report(records, CONTENDERS, false);
    report.scenario = "fair".into();
    report.note = format!(
        "{CONTENDERS} contenders (own connections), one key, hold 0; sw p99 = hand-off latency, target < 5000 µs; served after a caller that asked > 10 ms later (client clock): {overtaken}"
    );
    Ok(report)
}

/// Acquisitions granted after one that asked more than `margin_us` later (FIFO violations).
fn overtaken(records: &[Acquisition], margin_us: u64) -> usize {
    let mut by_ask: Vec<&Acquisition> = records.iter().collect();
    by_ask.sort_by_key(|r| r.asked_us);
    let mut violations = 0;
    let mut earlier = 0; // records[..earlier] asked more than the margin before the current one
    let mut latest_grant_of_earlier = 0u64;
    for current in &by_ask {
        while earlier < by_ask.len() && by_ask[earlier].asked_us + margin_us < current.asked_us {
            latest_grant_of_earlier = latest_grant_of_earlier.max(by_ask[earlier].acquired_us);
            earlier += 1;
        }
        if latest_grant_of_earlier > current.acquired_us {
            violations += 1;
        }
    }
    violations
}

async fn wait_until_us(at_us: u64) {
    let now = unix_us();
    if at_us > now {
        tokio::time::sleep(Duration::from_micros(at_us - now)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acquisition(id: usize, asked_us: u64, acquired_us: u64) -> Acquisition {
        Acquisition {
            id,
            asked_us,
            acquired_us,
            released_us: acquired_us,
        }
    }

    #[test]
    fn overtaking_is_counted_beyond_the_margin_only() {
        let fifo = [acquisition(0, 0, 5_000), acquisition(1, 2_000, 6_000)];
        assert_eq!(overtaken(&fifo, 1_000), 0);
        let unfair = [acquisition(0, 0, 9_000), acquisition(1, 2_000, 6_000)];
        assert_eq!(overtaken(&unfair, 1_000), 1);
        let within_margin = [acquisition(0, 0, 9_000), acquisition(1, 500, 6_000)];
        assert_eq!(overtaken(&within_margin, 1_000), 0);
    }
}
