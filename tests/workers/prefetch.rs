//! The default prefetch follows the worker's pace (`src/worker/prefetch.rs`): a worker deciding
//! orders quickly reserves enough for its lanes to fill their batches, where a fixed prefetch of
//! one batch spreads its orders one per lock hold. (The other side, a slow step keeping the
//! reservations near one batch, is `shutdown::sigterm_gives_unstarted_orders_back_and_exits_promptly`.)

use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::helpers::{Env, order};

/// The most orders one worker held reserved while it decided `orders` orders spread over 100
/// products, sampled every 10 ms; and the orders per lock hold (stored rows per distinct
/// product and fence). The worker is stopped with SIGTERM once they are decided, so it
/// acknowledges its last orders and leaves nothing for the next run's recovery.
async fn run(env: &Env, name: &str, flags: &[&str], orders: usize) -> (usize, f64) {
    let decided_before = env.decided().await;
    let batch: Vec<_> = (0..orders)
        .map(|i| order(1 + (i % 100) as i32, 1))
        .collect();
    env.push(&batch).await;
    let mut worker = env.worker(name, flags);
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while env.decided().await < decided_before + orders as i64 {
        assert!(
            Instant::now() < deadline,
            "orders not decided in time\n{}",
            worker.log()
        );
        most = most.max(env.reserved_by(&worker).await);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    worker.signal("TERM");
    let status = worker.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "exit {status:?}\n{}", worker.log());
    let per_hold: f64 = sqlx::query_scalar(
        "SELECT count(*)::float8 / count(DISTINCT (product_id, fence)) FROM orders WHERE worker = $1",
    )
    .bind(&worker.id)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    (most, per_hold)
}

/// Invariant: with the default prefetch (floor 16 = the batch limit, cap 16 slots × 16) a
/// worker with no slow step, deciding a thousand orders a second or more, holds at least twice
/// as many reserved orders as the same worker with `--prefetch 16`, and its lock holds carry
/// more orders each. Every order is decided once either way.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn a_fast_worker_prefetches_past_one_batch_and_fills_its_holds(pool: PgPool) {
    let env = Env::new(pool).await;
    env.products(100, 100_000).await;
    let orders = 6_000;

    let fixed_flags = ["--batch-limit", "16", "--prefetch", "16"];
    let (fixed_most, fixed_per_hold) = run(&env, "fixed", &fixed_flags, orders).await;
    let (paced_most, paced_per_hold) = run(&env, "paced", &["--batch-limit", "16"], orders).await;
    eprintln!(
        "most reserved: fixed {fixed_most}, paced {paced_most}; orders per hold: fixed \
         {fixed_per_hold:.2}, paced {paced_per_hold:.2}"
    );

    assert!(
        paced_most > 2 * fixed_most,
        "the paced prefetch held at most {paced_most}, the fixed one {fixed_most}: it did not \
         follow the pace"
    );
    assert!(
        paced_per_hold > 1.5 * fixed_per_hold,
        "orders per hold: paced {paced_per_hold:.2}, fixed {fixed_per_hold:.2}"
    );
    assert_eq!(env.outcomes().await.len(), 2 * orders);
}
