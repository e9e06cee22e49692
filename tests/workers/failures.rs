//! Workers killed, paused past their lock TTL, and Redis restarted empty.

use std::{collections::HashSet, time::Duration};

use sqlx::PgPool;

use crate::helpers::{Env, order, wait_for};

async fn last_fence(env: &Env, product: i32) -> i64 {
    sqlx::query_scalar("SELECT last_fence FROM products WHERE id = $1")
        .bind(product)
        .fetch_one(&env.pool)
        .await
        .unwrap()
}

/// A worker killed with SIGKILL while holding an order loses nothing: after its liveness expires
/// another worker recovers the order, which gets exactly one outcome.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn a_worker_killed_mid_order_loses_nothing(pool: PgPool) {
    let env = Env::new(pool).await;
    env.products(1, 5).await;
    let mut doomed = env.worker("doomed", &["--work-ms", "5000", "--lock-ttl-ms", "1000"]);
    let o = order(1, 2);
    env.push(&[o]).await;
    wait_for(
        "the doomed worker to claim the product",
        Duration::from_secs(10),
        || async { last_fence(&env, 1).await >= 1 },
    )
    .await;

    doomed.signal("KILL");
    doomed.wait_exit(Duration::from_secs(5)).await;
    let _rescuer = env.worker("rescuer", &[]);

    env.wait_decided(1, Duration::from_secs(15)).await;
    let outcomes = env.outcomes().await;
    assert_eq!(
        outcomes.get(&o.id.as_uuid()).map(|(s, _)| s.as_str()),
        Some("fulfilled")
    );
    assert_eq!(env.stock(1).await, 3);
    wait_for(
        "the processing lists to empty",
        Duration::from_secs(5),
        || async { env.processing_total().await == 0 },
    )
    .await;
}

/// A worker frozen (SIGSTOP) past its lock TTL and resumed before anyone else wants the lock
/// notices the loss (its local safety deadline passed), does not commit under the lost lock,
/// retries under a new one and carries on working.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn a_worker_paused_past_its_ttl_notices_the_loss_and_carries_on(pool: PgPool) {
    let env = Env::new(pool).await;
    env.products(1, 1).await;
    let mut worker = env.worker(
        "sleepy",
        &[
            "--work-ms",
            "1500",
            "--lock-ttl-ms",
            "300",
            "--liveness-ttl-ms",
            "10000",
        ],
    );
    let first = order(1, 1);
    env.push(&[first]).await;
    wait_for("the claim", Duration::from_secs(10), || async {
        last_fence(&env, 1).await == 1
    })
    .await;

    worker.signal("STOP");
    wait_for(
        "the lock to expire in Redis",
        Duration::from_secs(5),
        || async { env.lock_value(1).await.is_none() },
    )
    .await;
    worker.signal("CONT");

    env.wait_decided(1, Duration::from_secs(15)).await;
    assert!(
        last_fence(&env, 1).await >= 2,
        "the order must have been decided under a new lock"
    );
    assert_eq!(env.sold(1).await, 1);
    assert_eq!(env.stock(1).await, 0);

    let second = order(1, 1);
    env.push(&[second]).await;
    env.wait_decided(2, Duration::from_secs(15)).await;
    let outcomes = env.outcomes().await;
    assert_eq!(
        outcomes[&second.id.as_uuid()].1.as_deref(),
        Some("out_of_stock")
    );
    worker.signal("TERM");
    assert!(
        worker.wait_exit(Duration::from_secs(10)).await.success(),
        "{}",
        worker.log()
    );
}

/// The interleaving that defeats a fence checked only at commit: holder A (token 1) is frozen
/// after reading the stock; B recovers A's orders, takes the expired lock (token 2) and reads; A
/// resumes *while B is between its read and its commit*. A's write must be refused whatever the timing: stock 1
/// ends at 0 with exactly one sale, and both orders have exactly one outcome.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn a_stale_holder_resuming_between_the_next_holders_read_and_commit_cannot_oversell(
    pool: PgPool,
) {
    let env = Env::new(pool).await;
    env.products(1, 1).await;
    let a = env.worker("a", &["--work-ms", "2000", "--lock-ttl-ms", "400"]);
    let first = order(1, 1);
    env.push(&[first]).await;
    wait_for("A's claim", Duration::from_secs(10), || async {
        last_fence(&env, 1).await == 1
    })
    .await;
    a.signal("STOP");

    // The frozen A is still blocked in BLMOVE, so Redis hands it the second order too; once A's
    // liveness expires, B recovers both and takes the expired lock.
    let second = order(1, 1);
    env.push(&[second]).await;
    let _b = env.worker("b", &["--work-ms", "1500", "--lock-ttl-ms", "400"]);
    wait_for(
        "B's claim (B is now between its read and its commit)",
        Duration::from_secs(10),
        || async { last_fence(&env, 1).await == 2 },
    )
    .await;
    a.signal("CONT");

    env.wait_decided(2, Duration::from_secs(20)).await;
    assert_eq!(
        env.sold(1).await,
        1,
        "oversold: both holders sold the last unit"
    );
    assert_eq!(env.stock(1).await, 0);
    let outcomes = env.outcomes().await;
    assert_eq!(outcomes.len(), 2);
    let statuses: HashSet<_> = outcomes
        .values()
        .map(|(s, r)| (s.clone(), r.clone()))
        .collect();
    assert!(statuses.contains(&("fulfilled".to_owned(), None)));
    assert!(statuses.contains(&("rejected".to_owned(), Some("out_of_stock".to_owned()))));
}

/// Redis restarted empty mid-run (queue, processing lists and fence counters gone): the producer
/// pushes everything again; workers reconnect, notice the database refusing their restarted fence
/// tokens, raise the counters past its high-water mark, and finish. Every order ends with exactly
/// one outcome and the stock ledger is exact.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn after_redis_restarts_empty_workers_recover_without_overselling(pool: PgPool) {
    let mut env = Env::new(pool).await;
    let initial = 60;
    env.products(5, initial).await;
    let orders: Vec<_> = (0..200).map(|i| order(1 + i % 5, 1)).collect();
    let workers: Vec<_> = (0..2)
        .map(|i| env.worker(&format!("w{i}"), &["--work-ms", "5"]))
        .collect();
    env.push(&orders).await;
    env.wait_decided(40, Duration::from_secs(30)).await;
    let fence_before = last_fence(&env, 1).await;

    env.redis.restart();
    env.push(&orders).await; // the producer's retry: same ids, so no double effect
    env.wait_decided(200, Duration::from_secs(60)).await;
    // Every order may be decided before the restart; the pushed-again copies are handled
    // (claimed under fresh fences, acknowledged) only once the queue is drained.
    wait_for("the queue to drain", Duration::from_secs(30), || async {
        env.llen(&env.pending_key()).await == 0 && env.processing_total().await == 0
    })
    .await;

    let outcomes = env.outcomes().await;
    assert_eq!(outcomes.len(), 200);
    env.assert_ledger(5, initial).await;
    assert!(
        last_fence(&env, 1).await > fence_before,
        "fences must keep increasing across the restart"
    );
    let logs: String = workers.iter().map(|w| w.log()).collect();
    assert!(
        logs.contains("fence counter behind the database"),
        "no worker noticed the reset counters"
    );
}

/// A hot product does not starve the others: with 100 slow orders queued for one product ahead
/// of orders for nine others, the nine are decided while the hot product is still being worked
/// through (the hot orders wait in one lane, not in every concurrency slot).
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn a_hot_product_does_not_starve_the_others(pool: PgPool) {
    let env = Env::new(pool).await;
    env.products(10, 1_000).await;
    let _worker = env.worker("w", &["--concurrency", "4", "--work-ms", "20"]);
    env.push(&(0..100).map(|_| order(1, 1)).collect::<Vec<_>>())
        .await;
    env.push(&(2..=10).map(|p| order(p, 1)).collect::<Vec<_>>())
        .await;

    wait_for("the nine cold orders", Duration::from_secs(10), || async {
        let cold: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE product_id > 1")
            .fetch_one(&env.pool)
            .await
            .unwrap();
        cold == 9
    })
    .await;
    let hot: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE product_id = 1")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert!(hot < 100, "the cold orders waited for all {hot} hot ones");
    env.wait_decided(109, Duration::from_secs(20)).await;
}
