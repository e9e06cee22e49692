//! The API's locked purchases take product locks the way workers do (`ProductLocks`, from
//! `--lock-redis-urls`): real `api` and `worker` processes over Redlock and over the
//! single-instance mutex.

use std::{collections::HashSet, time::Duration};

use sqlx::PgPool;

use crate::helpers::{Env, lock_instances, order};

/// Flags for the API that keep concurrent purchases well within the lock wait.
const API_FLAGS: [&str; 4] = ["--work-ms", "10", "--lock-wait-ms", "30000"];

/// Whether `key` exists on the Redis at `url`.
async fn key_exists(url: &str, key: &str) -> bool {
    let client = redis::Client::open(url).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    redis::cmd("EXISTS")
        .arg(key)
        .query_async::<bool>(&mut conn)
        .await
        .expect("EXISTS")
}

/// An API started with three lock Redis URLs sells exactly the stock under concurrent locked
/// purchases: stock 10, 30 purchases at once, 10 answered 200 and 20 answered 400, the stock at
/// 0. Its product locks are Redlock's (the fence counters live on the lock instances, none on
/// the queue's Redis).
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn an_api_on_redlock_sells_exactly_the_stock_under_concurrent_purchases(pool: PgPool) {
    // Arrange
    let env = Env::new(pool).await;
    let (instances, urls) = lock_instances();
    env.products(1, 10).await;
    let mut flags = vec!["--lock-redis-urls", urls.as_str()];
    flags.extend(API_FLAGS);
    let api = env.api("api", &flags).await;

    // Act
    let statuses = api.buy_concurrently(1, 30).await;

    // Assert
    let sold = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 400).count();
    assert_eq!(
        (sold, refused),
        (10, 20),
        "{statuses:?}\n{}",
        api.process.log()
    );
    assert_eq!(env.sold(1).await, 10);
    assert_eq!(env.stock(1).await, 0);
    assert_eq!(env.decided().await, 30);
    assert!(
        api.process.log().contains("product locks use Redlock"),
        "{}",
        api.process.log()
    );
    let redlock_fence = format!("{}:{{product:1}}:rl:fence", env.lock_prefix());
    for instance in &instances {
        assert!(key_exists(&instance.url(), &redlock_fence).await);
    }
    let mutex_fence = format!("{}:{{product:1}}:fence", env.lock_prefix());
    assert!(!key_exists(&env.redis.url(), &mutex_fence).await);
}

/// API purchases and queued orders for one product, decided at the same time by one API and two
/// workers configured with the same lock settings (`lock_urls`), never oversell together and
/// take turns under one lock: stock 20 for 30 purchases plus 30 queued orders sells exactly 20,
/// every fence is used by one lock hold only (API and worker fences never coincide), and no
/// process ever found its fence refused as stale.
async fn api_and_workers_take_turns_on_one_product(env: &Env, lock_urls: Option<&str>) {
    // Arrange
    env.products(1, 20).await;
    let mut shared: Vec<&str> = Vec::new();
    if let Some(urls) = lock_urls {
        shared.extend(["--lock-redis-urls", urls]);
    }
    let mut api_flags = shared.clone();
    api_flags.extend(API_FLAGS);
    let api = env.api("api", &api_flags).await;
    let mut worker_flags = shared.clone();
    worker_flags.extend(["--work-ms", "5", "--batch-limit", "4"]);
    let workers = [
        env.worker("a", &worker_flags),
        env.worker("b", &worker_flags),
    ];
    let queued: Vec<_> = (0..30).map(|_| order(1, 1)).collect();

    // Act
    env.push(&queued).await;
    let statuses = api.buy_concurrently(1, 30).await;
    env.wait_decided(60, Duration::from_secs(60)).await;

    // Assert
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 400),
        "{statuses:?}"
    );
    assert_eq!(env.sold(1).await, 20, "API and workers together oversold");
    assert_eq!(env.stock(1).await, 0);
    let rows: Vec<(Option<i64>, String)> =
        sqlx::query_as("SELECT fence, worker FROM orders WHERE product_id = 1")
            .fetch_all(&env.pool)
            .await
            .expect("fences");
    let api_fences: HashSet<i64> = rows
        .iter()
        .filter(|(_, worker)| worker.starts_with("api-"))
        .filter_map(|(fence, _)| *fence)
        .collect();
    let worker_fences: HashSet<i64> = rows
        .iter()
        .filter(|(_, worker)| !worker.starts_with("api-"))
        .filter_map(|(fence, _)| *fence)
        .collect();
    assert_eq!(api_fences.len(), 30, "one lock hold per API purchase");
    assert!(!worker_fences.is_empty());
    assert!(
        api_fences.is_disjoint(&worker_fences),
        "API and workers held the same fence: they did not share one lock"
    );
    let logs = [api.process.log(), workers[0].log(), workers[1].log()].concat();
    assert!(
        !logs.contains("fence counter behind the database")
            && !logs.contains("the row carries a newer fence"),
        "a process was fenced off, so the locks did not exclude each other:\n{logs}"
    );
    env.wait_processing_empty().await;
}

/// API purchases and queued orders exclude each other on Redlock (`--lock-redis-urls` with three
/// instances for the API and the workers).
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn api_purchases_and_queued_orders_on_redlock_never_oversell_together(pool: PgPool) {
    let env = Env::new(pool).await;
    let (_instances, urls) = lock_instances();
    api_and_workers_take_turns_on_one_product(&env, Some(&urls)).await;
}

/// The same on the single-instance mutex on the queue's Redis (no `--lock-redis-urls`).
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn api_purchases_and_queued_orders_on_the_mutex_never_oversell_together(pool: PgPool) {
    let env = Env::new(pool).await;
    api_and_workers_take_turns_on_one_product(&env, None).await;
}
