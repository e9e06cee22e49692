//! Every binary on a local Redis Cluster, named by `REDIS_URL` alone (one node, or every seed
//! node comma-separated): the producer pushes, two workers decide, `lockctl` and the API inspect
//! the queue, the dead letters and the locks held on every master.

use std::time::Duration;

use lockstock_lock::LockOptions;
use serde_json::Value;
use sqlx::PgPool;

use crate::{
    fleet::{Fleet, order},
    test_env::wait_for,
};

/// `producer` → two `worker`s on a cluster: 300 orders over 10 products each get exactly one
/// outcome, the stock ledger is exact, a poison message lands in the dead letters (listed by
/// `lockctl`), and both workers logged that they chose cluster mode.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn producer_and_two_workers_decide_every_order_once_on_a_cluster(pool: PgPool) {
    let fleet = Fleet::new(pool);
    let initial = 30;
    fleet.products(10, initial).await;
    let workers = [fleet.worker("w0", &[]), fleet.worker("w1", &[])];
    let orders: Vec<_> = (0..300)
        .map(|i| order(1 + (i * 7 % 10), 1 + (i % 3)))
        .collect();

    let printed = fleet.produce(&orders);
    assert!(printed.contains("enqueued 300 orders"), "{printed}");
    fleet.queue().await.push(b"not an order").await.unwrap();
    fleet.wait_decided(300, Duration::from_secs(60)).await;
    wait_for(
        "the poison message dead-lettered",
        Duration::from_secs(10),
        || async { fleet.queue().await.dead_depth().await.unwrap() == 1 },
    )
    .await;

    fleet.assert_exactly_once(&orders, 10, initial).await;
    let letters = fleet.lockctl(&["dead-letters", "list", "--json"]);
    let letter: Value = serde_json::from_str(letters.trim()).expect("one dead letter");
    assert_eq!(letter["payload"], "not an order");
    for worker in &workers {
        assert!(
            worker.log().contains("Redis: a cluster"),
            "{}",
            worker.log()
        );
    }
}

/// Locks held on products spread over all three masters are listed by `lockctl status --json`
/// and by the API's `/locks` (a scan of every master), and `/queue` answers on the cluster.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn lockctl_and_the_api_list_the_locks_held_on_every_master(pool: PgPool) {
    let fleet = Fleet::new(pool);
    let locks = fleet.locks("holder").await;
    let mut guards = Vec::new();
    for product in 1..=12 {
        let guard = locks
            .try_acquire(&format!("product:{product}"), &LockOptions::default())
            .await
            .unwrap()
            .expect("free lock");
        guards.push(guard);
    }
    let masters_with_locks = fleet.nodes_holding_keys();
    assert_eq!(masters_with_locks, 3, "the locks sit on every master");

    let status: Value = serde_json::from_str(&fleet.lockctl(&["status", "--json"])).unwrap();
    let listed = status["locks"].as_array().expect("locks");
    assert_eq!(listed.len(), 12, "{status}");
    assert!(listed.iter().all(|lock| lock["owner"]["id"] == "holder"));
    assert_eq!(status["queue"]["pending"], 0);

    let (api, base) = fleet.api().await;
    let held: Value = reqwest::get(format!("{base}/locks"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        held["locks"].as_array().expect("an array").len(),
        12,
        "{held}"
    );
    let queue = reqwest::get(format!("{base}/queue")).await.unwrap();
    assert!(queue.status().is_success());
    assert!(api.log().contains("Redis: a cluster"), "{}", api.log());
    drop(guards);
}
