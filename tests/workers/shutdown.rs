//! Graceful and immediate shutdown.

use std::time::Duration;

use sqlx::PgPool;

use crate::helpers::{Env, order, wait_for};

/// SIGTERM: the worker stops pulling, finishes what it holds, leaves no processing items, no
/// lock keys and no liveness key, and exits 0. Nothing is lost: every order is decided once.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn sigterm_drains_and_leaves_nothing_behind(pool: PgPool) {
    let env = Env::new(pool).await;
    env.products(3, 1_000).await;
    let mut worker = env.worker("w", &["--work-ms", "100", "--concurrency", "2"]);
    let orders: Vec<_> = (0..30).map(|i| order(1 + i % 3, 1)).collect();
    env.push(&orders).await;
    env.wait_decided(2, Duration::from_secs(10)).await;

    worker.signal("TERM");
    let status = worker.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "exit {status:?}\n{}", worker.log());
    assert_eq!(
        env.processing_total().await,
        0,
        "processing items left behind"
    );
    assert!(
        env.held_locks().await.is_empty(),
        "lock keys left behind: {:?}",
        env.held_locks().await
    );
    let mut conn = env.raw().await;
    let alive: i64 = redis::cmd("EXISTS")
        .arg(format!("{}:alive:{}", env.pending_key(), worker.id))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(alive, 0, "liveness key left behind");

    let _next = env.worker("next", &[]);
    env.wait_decided(30, Duration::from_secs(15)).await;
    assert_eq!(env.outcomes().await.len(), 30);
    let sold: i64 = env.sold(1).await + env.sold(2).await + env.sold(3).await;
    assert_eq!(sold, 30);
}

/// A second signal exits at once (status 130); the orders it held stay in its processing list and
/// are recovered by another worker once its liveness expires. Nothing is lost or decided twice.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn a_second_signal_exits_at_once_and_recovery_finishes_the_work(pool: PgPool) {
    let env = Env::new(pool).await;
    env.products(2, 1_000).await;
    let mut worker = env.worker("w", &["--work-ms", "2000"]);
    let orders: Vec<_> = (0..10).map(|i| order(1 + i % 2, 1)).collect();
    env.push(&orders).await;
    wait_for(
        "orders to be in flight",
        Duration::from_secs(10),
        || async { env.processing_total().await == 10 },
    )
    .await;

    worker.signal("TERM");
    wait_for(
        "the first signal to be handled",
        Duration::from_secs(5),
        || async { worker.log().contains("shutdown requested") },
    )
    .await;
    worker.signal("TERM");
    let status = worker.wait_exit(Duration::from_secs(3)).await;
    assert_eq!(status.code(), Some(130), "{}", worker.log());

    let _rescuer = env.worker("rescuer", &[]);
    env.wait_decided(10, Duration::from_secs(30)).await;
    assert_eq!(env.outcomes().await.len(), 10);
    assert_eq!(env.sold(1).await + env.sold(2).await, 10);
}
