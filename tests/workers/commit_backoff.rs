//! A commit that keeps failing backs off across lock holds: growing, bounded waits per product,
//! a log line with the cause, and the other products keep selling.

use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::helpers::{Env, order, wait_for};

/// Makes every commit of product 2 fail in this test's database: a trigger counts the attempt
/// in a sequence (sequences are not rolled back) and raises.
async fn freeze_product_2(pool: &PgPool) {
    for statement in [
        "CREATE SEQUENCE commit_attempts",
        "CREATE FUNCTION refuse_product_2() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.product_id = 2 THEN
             PERFORM nextval('commit_attempts');
             RAISE EXCEPTION 'product 2 is frozen by the test';
           END IF;
           RETURN NEW;
         END $$",
        "CREATE TRIGGER refuse_product_2 BEFORE INSERT ON orders
         FOR EACH ROW EXECUTE FUNCTION refuse_product_2()",
    ] {
        sqlx::query(statement).execute(pool).await.unwrap();
    }
}

/// How many commits of product 2 were attempted so far.
async fn attempts(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM commit_attempts")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Product 2's commits fail for good: over six seconds the worker tries a handful of times
/// (not ~20 a second), at growing intervals, logging the cause; product 1 keeps selling.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn a_commit_that_keeps_failing_backs_off_across_lock_holds(pool: PgPool) {
    freeze_product_2(&pool).await;
    let env = Env::new(pool.clone()).await;
    env.products(2, 100).await;
    let worker = env.worker("backoff", &[]);
    env.push(&[order(2, 1)]).await;
    wait_for(
        "the first failed commit",
        Duration::from_secs(20),
        || async { attempts(&pool).await >= 1 },
    )
    .await;
    let started = Instant::now();
    let mut seen_at = vec![Duration::ZERO];
    while started.elapsed() < Duration::from_secs(6) {
        let now = attempts(&pool).await;
        while (seen_at.len() as i64) < now {
            seen_at.push(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Waits 100 ms doubling (±25 %): about 7 attempts in six seconds; without the back-off
    // carried across holds, over a hundred.
    let count = attempts(&pool).await;
    assert!((4..=10).contains(&count), "{count} attempts: {seen_at:?}");
    let gaps: Vec<Duration> = seen_at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.windows(2).skip(1).all(|w| w[1] > w[0]),
        "intervals grow: {gaps:?}"
    );

    // Other products are not held up.
    env.push(&[order(1, 1), order(1, 1), order(1, 1)]).await;
    env.wait_decided(3, Duration::from_secs(10)).await;
    assert_eq!(env.stock(1).await, 97);
    assert_eq!(env.stock(2).await, 100);

    let log = worker.log();
    let line = log
        .lines()
        .find(|line| line.contains("growing wait"))
        .unwrap_or_else(|| panic!("no back-off line:\n{log}"));
    assert!(line.contains("product 2 is frozen by the test"), "{line}");
    assert!(line.contains("product_id=2"), "{line}");
}
