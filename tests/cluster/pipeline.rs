//! The pipeline scenarios of `tests/workers` (the race, a crash, exactly once) once more with
//! real worker processes on a local Redis Cluster.

use std::time::Duration;

use sqlx::PgPool;

use crate::{
    fleet::{Fleet, order},
    test_env::wait_for,
};

/// The race on a cluster: with `--no-lock` four workers oversell a stock of 1; with locks exactly
/// one of 20 orders is fulfilled.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn without_the_lock_workers_oversell_and_with_it_they_do_not_on_a_cluster(pool: PgPool) {
    let fleet = Fleet::new(pool);
    let queue = fleet.queue().await;
    fleet.products(2, 1).await;

    let unlocked: Vec<_> = (0..4)
        .map(|i| fleet.worker(&format!("unlocked{i}"), &["--no-lock", "--work-ms", "100"]))
        .collect();
    let orders: Vec<_> = (0..20).map(|_| order(1, 1)).collect();
    queue.push_batch(&to_json(&orders)).await.unwrap();
    fleet.wait_decided(20, Duration::from_secs(30)).await;
    drop(unlocked);
    let sold = fleet.sold(1).await;
    assert!(
        sold > 1,
        "the unlocked run sold {sold}: the race did not show"
    );

    let locked: Vec<_> = (0..4)
        .map(|i| fleet.worker(&format!("locked{i}"), &["--work-ms", "100"]))
        .collect();
    let orders: Vec<_> = (0..20).map(|_| order(2, 1)).collect();
    queue.push_batch(&to_json(&orders)).await.unwrap();
    fleet.wait_decided(40, Duration::from_secs(30)).await;
    assert_eq!(
        fleet.sold(2).await,
        1,
        "exactly one locked purchase succeeds"
    );
    assert_eq!(fleet.stock(2).await, 0);
    drop(locked);
}

/// A worker killed with SIGKILL mid-run on a cluster loses nothing: the survivor recovers its
/// processing list once its liveness expires, and 200 orders each get exactly one outcome.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn a_worker_killed_mid_run_loses_nothing_on_a_cluster(pool: PgPool) {
    let fleet = Fleet::new(pool);
    let initial = 50;
    fleet.products(5, initial).await;
    let mut doomed = fleet.worker("doomed", &["--work-ms", "20"]);
    let orders: Vec<_> = (0..200).map(|i| order(1 + (i % 5), 1)).collect();
    fleet
        .queue()
        .await
        .push_batch(&to_json(&orders))
        .await
        .unwrap();
    wait_for(
        "the doomed worker to start deciding",
        Duration::from_secs(20),
        || async { fleet.decided().await >= 5 },
    )
    .await;
    doomed.kill();
    let _survivor = fleet.worker("survivor", &[]);
    fleet.wait_decided(200, Duration::from_secs(60)).await;
    wait_for(
        "the processing lists to empty",
        Duration::from_secs(10),
        || async { fleet.queue().await.stats().await.unwrap().processing == 0 },
    )
    .await;
    fleet.assert_exactly_once(&orders, 5, initial).await;
}

/// The orders as queue messages.
pub fn to_json(orders: &[lockstock::order::PurchaseOrder]) -> Vec<Vec<u8>> {
    orders.iter().map(|o| o.to_json()).collect()
}
