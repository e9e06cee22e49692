//! A commit that keeps failing backs off across lock holds: growing, bounded waits per product,
//! a log line with the cause, and the other products keep selling.

use std::time::Duration;

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
    // An observation window (attempts are counted over it), not synchronisation.
    tokio::time::sleep(Duration::from_secs(6)).await;
    // Waits 100 ms doubling (±25 %): about 7 attempts in six seconds; without the back-off
    // carried across holds, over a hundred.
    let count = attempts(&pool).await;
    assert!((4..=10).contains(&count), "{count} attempts");
    // The waits the worker chose, in order, from its log: growing, and bounded.
    let log = worker.log();
    let waits: Vec<u64> = log
        .lines()
        .filter(|line| line.contains("growing wait"))
        .filter_map(|line| {
            let rest = &line[line.find("wait_ms=")? + "wait_ms=".len()..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(waits.len() >= 4, "{waits:?}\n{log}");
    assert!(
        waits.windows(2).all(|w| w[1] > w[0]),
        "waits grow: {waits:?}"
    );
    assert!(
        waits.iter().all(|w| *w <= 12_500),
        "waits are capped: {waits:?}"
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
