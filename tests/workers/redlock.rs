//! Worker processes taking product locks with Redlock over three lock instances
//! (`--lock-redis-urls`), while the queue stays on its own Redis: instances killed mid-run, a
//! majority down, and back.

use std::time::Duration;

use sqlx::PgPool;

use crate::helpers::{Env, lock_instances, order, wait_for};

/// Invariant: nothing oversold with one lock instance killed mid-run. Two workers decide 90
/// orders for three products of stock 20 (demand 30 each) under Redlock; one of the three lock
/// instances is killed once a third are decided. Every order gets exactly one outcome, exactly 20
/// units of each product are sold and every stock ends at 0.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn one_lock_instance_killed_mid_run_oversells_nothing(pool: PgPool) {
    let env = Env::new(pool).await;
    let (mut instances, urls) = lock_instances();
    env.products(3, 20).await;
    let args = [
        "--lock-redis-urls",
        urls.as_str(),
        "--lock-ttl-ms",
        "1000",
        "--work-ms",
        "5",
        "--batch-limit",
        "4",
    ];
    let workers = [env.worker("a", &args), env.worker("b", &args)];
    let orders: Vec<_> = (0..90).map(|i| order(1 + i % 3, 1)).collect();
    env.push(&orders).await;

    env.wait_decided(30, Duration::from_secs(30)).await;
    instances[1].stop();
    env.wait_decided(90, Duration::from_secs(60)).await;

    assert_eq!(env.outcomes().await.len(), 90);
    for product in 1..=3 {
        assert_eq!(env.sold(product).await, 20, "product {product}");
        assert_eq!(env.stock(product).await, 0, "product {product}");
    }
    wait_for(
        "the processing lists to empty",
        Duration::from_secs(5),
        || async { env.processing_total().await == 0 },
    )
    .await;
    let log = workers[0].log() + &workers[1].log();
    assert!(log.contains("product locks use Redlock"), "{log}");
}

/// With two of the three lock instances down, lock acquisitions fail within their wait with an
/// error naming every instance, and no order is decided or lost: they stay queued or in the
/// worker's processing list. Once one instance is back, every order is decided correctly.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn a_lock_majority_down_fails_clearly_and_loses_no_order(pool: PgPool) {
    let env = Env::new(pool).await;
    let (mut instances, urls) = lock_instances();
    env.products(1, 5).await;
    instances[0].stop();
    instances[2].stop();
    let worker = env.worker(
        "w",
        &[
            "--lock-redis-urls",
            urls.as_str(),
            "--lock-ttl-ms",
            "1000",
            "--lock-wait-ms",
            "300",
        ],
    );
    let orders: Vec<_> = (0..8).map(|_| order(1, 1)).collect();
    env.push(&orders).await;

    wait_for(
        "the quorum error in the log",
        Duration::from_secs(15),
        || async { worker.log().contains("needs 2 of 3 instances and got 1") },
    )
    .await;
    assert_eq!(env.decided().await, 0);
    let queued = env.llen(&env.pending_key()).await + env.processing_total().await;
    assert_eq!(queued, 8, "orders went missing while the locks were down");
    let log = worker.log();
    assert!(
        log.contains(&instances[0].url()) && log.contains(&instances[2].url()),
        "{log}"
    );

    instances[2].restart();
    env.wait_decided(8, Duration::from_secs(30)).await;
    assert_eq!(env.sold(1).await, 5);
    assert_eq!(env.stock(1).await, 0);
    wait_for(
        "the processing lists to empty",
        Duration::from_secs(5),
        || async { env.processing_total().await == 0 },
    )
    .await;
}
