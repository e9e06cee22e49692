//! Failover under load on a 3-master, 3-replica cluster, while orders stream in:
//!
//! - a graceful one (`CLUSTER FAILOVER` on the replica of the queue's master): no write is lost;
//! - a crash (the queue's master SIGKILLed; its replica promoted after `cluster-node-timeout`):
//!   writes the replica had not received die with the master, and the durable intake's sweep
//!   pushes the lost orders again.
//!
//! Either way the workers follow the new topology without a restart, every order gets exactly
//! one outcome, the ledger is exact, and the test prints how long processing paused.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use lockstock::{order::PurchaseOrder, queue::JobQueue};
use lockstock_lock::LockOptions;
use serde_json::Value;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{
    fleet::{Fleet, order},
    pipeline::to_json,
    redis_cluster::RedisCluster,
    test_env::wait_for,
};

/// Orders pushed every 20 ms for 6 s; after 2 s the queue's master fails over (`CLUSTER
/// FAILOVER` on its replica). All orders get exactly one outcome, the ledger is exact, and the
/// longest gap between two decisions (the pause) stays under 15 s.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn workers_follow_a_failover_without_losing_or_repeating_an_order(pool: PgPool) {
    let fleet = Arc::new(Fleet::on(RedisCluster::start_with_replicas(), pool));
    let initial = 10_000;
    fleet.products(10, initial).await;
    let _workers = [fleet.worker("w0", &[]), fleet.worker("w1", &[])];
    let queue = fleet.queue().await;
    let pending_key = queue.keys().pending().to_owned();

    let pusher = Pusher::start(&fleet, queue, Duration::from_secs(6), false);
    let watch = DecisionWatch::start(&fleet);

    tokio::time::sleep(Duration::from_secs(2)).await;
    let failover_at = Instant::now();
    let promoted = blocking(&fleet, move |fleet| {
        fleet.cluster.promote_replica_of(&pending_key)
    })
    .await;
    let promoted_after = failover_at.elapsed();
    let pushed = pusher.finish().await;
    fleet
        .wait_decided(pushed.len() as i64, Duration::from_secs(60))
        .await;
    let pause = watch.longest_pause_after(failover_at).await;

    fleet.assert_exactly_once(&pushed, 10, initial).await;
    println!(
        "failover: node {promoted} promoted in {promoted_after:?}; {} orders decided; longest pause in decisions after the failover began: {pause:?}",
        pushed.len()
    );
    assert!(
        pause < Duration::from_secs(15),
        "processing paused {pause:?}"
    );
}

/// Orders recorded in the intake and pushed every 20 ms for 8 s (as the producer does), to two
/// workers and an API; `w0` and the API are given one node only, the one about to be killed. Once orders are being decided, the queue's
/// master stops replicating, 1,000 more orders are pushed (they reach that master only) and the
/// master is SIGKILLed at once; its replica is promoted after the 1 s `cluster-node-timeout`. Then:
/// - every order, the lost ones included, gets exactly one outcome and the ledger is exact: the
///   workers' intake sweep pushed the lost ones again (counted as restored, > 0), and the
///   fence in Postgres refused any sale under a lock that died with the master;
/// - `w0` goes on deciding orders after the failover (≥ 20);
/// - the longest gap between two decisions after the kill (the pause) stays under 30 s;
/// - locks then held on products spread over all three masters (the promoted replica among
///   them) are listed by `lockctl status` (given the dead node as its first seed) and by the
///   API that was running across the failover, whose `/queue` answers too.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn workers_follow_a_killed_master_and_the_intake_brings_back_what_died_with_it(pool: PgPool) {
    let fleet = Arc::new(Fleet::on(RedisCluster::start_for_kill_failover(), pool));
    let initial = 10_000;
    fleet.products(10, initial).await;
    let queue = fleet.queue().await;
    let pending_key = queue.keys().pending().to_owned();
    // `w0` and the API know only the node about to die; they must find the rest themselves.
    let doomed_node = format!(
        "redis://127.0.0.1:{}",
        fleet.cluster.master_of(&pending_key)
    );
    let sweep = ["--intake-sweep-ms", "500", "--intake-stale-ms", "2000"];
    let _workers = [
        fleet.worker_at("w0", &doomed_node, &sweep),
        fleet.worker("w1", &sweep),
    ];
    let (api, base) = fleet.api_at(&doomed_node).await;

    let pusher = Pusher::start(&fleet, queue.clone(), Duration::from_secs(8), true);
    let watch = DecisionWatch::start(&fleet);
    wait_for("the first decisions", Duration::from_secs(30), || async {
        fleet.decided().await >= 50
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The master stops replicating; 1,000 orders are recorded and pushed (they exist on that
    // master only) and it is killed at once: what the workers have not taken dies with it.
    let master = blocking(&fleet, {
        let key = pending_key.clone();
        move |fleet| fleet.cluster.stop_replication_of(&key)
    })
    .await;
    let doomed: Vec<PurchaseOrder> = (0..1_000).map(|i| order(1 + i % 10, 1)).collect();
    fleet
        .store
        .record_intake(&pending_key, &doomed)
        .await
        .unwrap();
    queue.push_batch(&to_json(&doomed)).await.unwrap();
    let killed_at = Instant::now();
    let (killed, promoted) = blocking(&fleet, {
        let key = pending_key.clone();
        move |fleet| fleet.cluster.kill_master_of(&key)
    })
    .await;
    let promoted_after = killed_at.elapsed();
    let w0_before = fleet.decided_by("w0").await;
    assert_eq!(
        killed, master,
        "the master that stopped replicating was killed"
    );

    let mut pushed = pusher.finish().await;
    let doomed_count = doomed.len();
    pushed.extend(doomed);
    fleet
        .wait_decided(pushed.len() as i64, Duration::from_secs(120))
        .await;
    let all_decided_after = killed_at.elapsed();
    let pause = watch.longest_pause_after(killed_at).await;
    fleet.wait_drained().await;
    fleet.assert_exactly_once(&pushed, 10, initial).await;
    let restored = fleet.queue().await.restored_count().await.unwrap();
    let w0_after = fleet.decided_by("w0").await - w0_before;
    println!(
        "kill failover: master {killed} SIGKILLed, replica {promoted} serving after {promoted_after:?}; \
         {} orders, all decided {all_decided_after:?} after the kill; longest pause in decisions: {pause:?}; \
         restored by the intake sweep: {restored} ({} pushed after it stopped replicating); \
         w0 (given the dead node only) decided {w0_after} after the failover",
        pushed.len(),
        doomed_count
    );
    assert!(restored > 0, "orders died with the master, none restored");
    assert!(
        w0_after >= 20,
        "w0, given only the dead node, decided {w0_after} orders after the failover"
    );
    assert!(
        pause < Duration::from_secs(30),
        "processing paused {pause:?}"
    );

    locks_are_listed_after_the_failover(&fleet, &doomed_node, promoted, &base).await;
    drop(api);
}

/// Holds locks on four products per master (the promoted replica among the three) and waits
/// until `lockctl status --json` (its seed list naming the dead node first) and the API's
/// `/locks` list all twelve and `/queue` answers.
async fn locks_are_listed_after_the_failover(
    fleet: &Fleet,
    dead_node: &str,
    promoted: u16,
    base: &str,
) {
    let mut per_master: std::collections::HashMap<u16, Vec<String>> = Default::default();
    for product in 101.. {
        if per_master.len() == 3 && per_master.values().all(|held| held.len() >= 4) {
            break;
        }
        let resource = format!("product:{product}");
        let master = fleet.cluster.master_of(&format!("{{{resource}}}"));
        let held = per_master.entry(master).or_default();
        if held.len() < 4 {
            held.push(resource);
        }
    }
    assert!(per_master.contains_key(&promoted), "{per_master:?}");
    let locks = fleet.locks("after-failover").await;
    let mut guards = Vec::new();
    for resource in per_master.values().flatten() {
        let guard = locks
            .try_acquire(resource, &LockOptions::default())
            .await
            .unwrap()
            .expect("a free lock");
        guards.push(guard);
    }
    let ours = |locks: &Value| {
        locks
            .as_array()
            .map(|all| {
                all.iter()
                    .filter(|lock| lock["owner"]["id"] == "after-failover")
                    .count()
            })
            .unwrap_or(0)
    };
    let seeds = format!("{dead_node},{}", fleet.seeds());
    let status: Value =
        serde_json::from_str(&fleet.lockctl_at(&seeds, &["status", "--json"])).unwrap();
    assert_eq!(ours(&status["locks"]), 12, "{status}");
    let url = format!("{base}/locks");
    wait_for(
        "the API's /locks to list the 12 locks",
        Duration::from_secs(30),
        || {
            let request = reqwest::get(url.clone());
            async move {
                match request.await {
                    Ok(reply) => reply
                        .json::<Value>()
                        .await
                        .is_ok_and(|v| ours(&v["locks"]) == 12),
                    Err(_) => false,
                }
            }
        },
    )
    .await;
    let queue = reqwest::get(format!("{base}/queue")).await.unwrap();
    assert!(queue.status().is_success());
    drop(guards);
}

/// Runs `work` on the fleet off the async runtime (the cluster helpers block).
async fn blocking<T: Send + 'static>(
    fleet: &Arc<Fleet>,
    work: impl FnOnce(&Fleet) -> T + Send + 'static,
) -> T {
    let fleet = fleet.clone();
    tokio::task::spawn_blocking(move || work(&fleet))
        .await
        .unwrap()
}

/// A task pushing five orders every 20 ms (recorded in the intake first when `intake`, as the
/// producer does); a push that fails while a slot moves is retried with the same orders.
struct Pusher {
    task: JoinHandle<()>,
    pushed: Arc<Mutex<Vec<PurchaseOrder>>>,
}

impl Pusher {
    fn start(fleet: &Arc<Fleet>, queue: JobQueue, run_for: Duration, intake: bool) -> Self {
        let pushed = Arc::new(Mutex::new(Vec::new()));
        let store = intake.then(|| fleet.store.clone());
        let task = {
            let pushed = pushed.clone();
            tokio::spawn(async move {
                let end = Instant::now() + run_for;
                let mut i = 0;
                while Instant::now() < end {
                    let orders: Vec<_> = (0..5).map(|k| order(1 + (i + k) % 10, 1)).collect();
                    if let Some(store) = &store {
                        store
                            .record_intake(queue.keys().pending(), &orders)
                            .await
                            .unwrap();
                    }
                    // A push whose reply was lost is merely delivered twice (same order ids).
                    while queue.push_batch(&to_json(&orders)).await.is_err() {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    pushed.lock().unwrap().extend(orders);
                    i += 5;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        Self { task, pushed }
    }

    /// Waits for the pushing to end; every order pushed.
    async fn finish(self) -> Vec<PurchaseOrder> {
        self.task.await.unwrap();
        self.pushed.lock().unwrap().clone()
    }
}

/// A task noting when the count of decided orders changes (every 5 ms).
struct DecisionWatch {
    task: JoinHandle<()>,
    stop: CancellationToken,
    decisions: Arc<Mutex<Vec<(Instant, i64)>>>,
}

impl DecisionWatch {
    fn start(fleet: &Arc<Fleet>) -> Self {
        let decisions = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let task = {
            let (fleet, decisions, stop) = (fleet.clone(), decisions.clone(), stop.clone());
            tokio::spawn(async move {
                let mut last = -1;
                while !stop.is_cancelled() {
                    let decided = fleet.decided().await;
                    if decided != last {
                        decisions.lock().unwrap().push((Instant::now(), decided));
                        last = decided;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };
        Self {
            task,
            stop,
            decisions,
        }
    }

    /// Stops watching; the longest gap between two changes that ends at or after `since` (the
    /// gap running when `since` came counts whole).
    async fn longest_pause_after(self, since: Instant) -> Duration {
        self.stop.cancel();
        self.task.await.unwrap();
        let decisions = self.decisions.lock().unwrap().clone();
        decisions
            .windows(2)
            .filter(|pair| pair[1].0 >= since)
            .map(|pair| pair[1].0 - pair[0].0)
            .max()
            .unwrap_or_default()
    }
}
