//! Failover under load: a 3-master, 3-replica cluster; the master owning the queue's slot is
//! failed over to its replica while orders stream in. Workers follow the new topology without a
//! restart, every order gets exactly one outcome, and the test prints how long processing paused.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{
    fleet::{Fleet, order},
    pipeline::to_json,
    redis_cluster::RedisCluster,
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

    let pushed = Arc::new(Mutex::new(Vec::new()));
    let pusher = {
        let pushed = pushed.clone();
        tokio::spawn(async move {
            let end = Instant::now() + Duration::from_secs(6);
            let mut i = 0;
            while Instant::now() < end {
                let orders: Vec<_> = (0..5).map(|k| order(1 + (i + k) % 10, 1)).collect();
                // A push may fail while the slot moves: retry it (the same order ids, so a
                // push whose reply was lost is merely delivered twice).
                while queue.push_batch(&to_json(&orders)).await.is_err() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                pushed.lock().unwrap().extend(orders);
                i += 5;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let decisions = Arc::new(Mutex::new(Vec::<(Instant, i64)>::new()));
    let watching = CancellationToken::new();
    let watcher = {
        let (fleet, decisions, watching) = (fleet.clone(), decisions.clone(), watching.clone());
        tokio::spawn(async move {
            let mut last = -1;
            while !watching.is_cancelled() {
                let decided = fleet.decided().await;
                if decided != last {
                    decisions.lock().unwrap().push((Instant::now(), decided));
                    last = decided;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    tokio::time::sleep(Duration::from_secs(2)).await;
    let failover_at = Instant::now();
    let promoted = {
        let fleet = fleet.clone();
        tokio::task::spawn_blocking(move || fleet.cluster.promote_replica_of(&pending_key))
            .await
            .unwrap()
    };
    let promoted_after = failover_at.elapsed();
    pusher.await.unwrap();
    let pushed = pushed.lock().unwrap().clone();
    fleet
        .wait_decided(pushed.len() as i64, Duration::from_secs(60))
        .await;
    watching.cancel();
    watcher.await.unwrap();

    fleet.assert_exactly_once(&pushed, 10, initial).await;
    let decisions = decisions.lock().unwrap().clone();
    let pause = decisions
        .windows(2)
        .filter(|pair| pair[1].0 >= failover_at)
        .map(|pair| pair[1].0 - pair[0].0)
        .max()
        .unwrap_or_default();
    println!(
        "failover: node {promoted} promoted in {promoted_after:?}; {} orders decided; longest pause in decisions after the failover began: {pause:?}",
        pushed.len()
    );
    assert!(
        pause < Duration::from_secs(15),
        "processing paused {pause:?}"
    );
}
