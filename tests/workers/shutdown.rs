//! Graceful and immediate shutdown.

use std::time::{Duration, Instant};

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
    let env = Env::new(pool.clone()).await;
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
    // Reserved is not started: only an order whose slow step has begun keeps the draining worker
    // busy (the rest are given back at once and it exits 0 before a second signal). Both products
    // claimed (their rows carry a fence) means a batch of each is in its 2 s slow step.
    wait_for(
        "both products to be claimed (slow steps begun)",
        Duration::from_secs(10),
        || async {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM products WHERE last_fence > 0")
                .fetch_one(&pool)
                .await
                .unwrap()
                == 2
        },
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

/// Three workers, orders for one hot product, a 100 ms slow step. Each worker reserves at most
/// what it can start soon (one batch deciding plus one batch of prefetch), not the backlog; on
/// SIGTERM each finishes only the order whose slow step has begun, gives the rest back at once
/// and exits well within a second (the old drain took 19 s); workers started afterwards decide
/// every order exactly once.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn sigterm_gives_unstarted_orders_back_and_exits_promptly(pool: PgPool) {
    let env = Env::new(pool).await;
    env.products(1, 1_000).await;
    let batch = 8;
    let flags = ["--work-ms", "100", "--batch-limit", "8"];
    let mut workers: Vec<_> = (0..3)
        .map(|i| env.worker(&format!("w{i}"), &flags))
        .collect();
    let orders: Vec<_> = (0..120).map(|_| order(1, 1)).collect();
    env.push(&orders).await;
    env.wait_decided(3, Duration::from_secs(15)).await;

    // Prefetch: sample every worker's reservations for a while.
    let mut most = 0;
    let sampling = Instant::now();
    while sampling.elapsed() < Duration::from_secs(2) {
        for worker in &workers {
            most = most.max(env.reserved_by(worker).await);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "most orders reserved by one worker: {most} (bound {})",
        2 * batch
    );
    assert!(
        most <= 2 * batch,
        "one worker hoarded {most} orders of a hot product"
    );
    assert!(
        env.llen(&env.pending_key()).await > 0,
        "the backlog should still wait in the pending list"
    );

    let stopping = Instant::now();
    for worker in &workers {
        worker.signal("TERM");
    }
    for worker in &mut workers {
        let status = worker.wait_exit(Duration::from_secs(5)).await;
        assert!(status.success(), "exit {status:?}\n{}", worker.log());
    }
    let drained = stopping.elapsed();
    eprintln!("three workers exited {drained:?} after SIGTERM");
    assert!(
        drained < Duration::from_secs(2),
        "shutdown took {drained:?}; bound is one slow step (100 ms) plus one commit"
    );
    assert_eq!(env.processing_total().await, 0, "reservations left behind");
    assert!(env.held_locks().await.is_empty(), "locks left behind");
    let decided = env.decided().await;
    assert!(decided < 120, "everything was decided before SIGTERM");

    let _next: Vec<_> = (0..2)
        .map(|i| env.worker(&format!("next{i}"), &["--batch-limit", "64"]))
        .collect();
    env.wait_decided(120, Duration::from_secs(30)).await;
    assert_eq!(env.outcomes().await.len(), 120);
    assert_eq!(env.sold(1).await, 120);
    assert_eq!(env.stock(1).await, 880);
}
