//! Starting before the stores answer: a worker waits and retries (logging each attempt's cause)
//! instead of exiting, unless `--wait-for-services` bounds the wait.

use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::helpers::{Env, order, wait_for};

/// A worker started while its Redis is down waits, logging why, and works once Redis is up:
/// under honcho or `docker compose up` the processes start in any order.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn a_worker_started_before_redis_waits_for_it(pool: PgPool) {
    let mut env = Env::new(pool).await;
    env.products(1, 10).await;
    env.redis.stop();
    let worker = env.worker("early", &[]);
    wait_for(
        "the worker to log a failed attempt with its cause",
        Duration::from_secs(15),
        || async {
            let log = worker.log();
            log.contains("service not answering yet") && log.contains("Redis")
        },
    )
    .await;
    env.redis.restart();
    env.push(&[order(1, 1)]).await;
    env.wait_decided(1, Duration::from_secs(20)).await;
    assert!(worker.log().contains("service answers"), "{}", worker.log());
}

/// `--wait-for-services 1s` with no Redis: the worker gives up after about a second and exits
/// 1, naming what it could not reach.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn wait_for_services_bounds_the_wait(pool: PgPool) {
    let mut env = Env::new(pool).await;
    env.redis.stop();
    let started = Instant::now();
    let mut worker = env.worker("bounded", &["--wait-for-services", "1s"]);
    let status = worker.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(1), "{}", worker.log());
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        worker.log().contains("connecting to Redis"),
        "{}",
        worker.log()
    );
}

/// A worker told to stop while it waits for the stores exits 0 at once.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn a_waiting_worker_stops_on_sigterm(pool: PgPool) {
    let mut env = Env::new(pool).await;
    env.redis.stop();
    let mut worker = env.worker("waiting", &[]);
    wait_for("a failed attempt", Duration::from_secs(15), || async {
        worker.log().contains("service not answering yet")
    })
    .await;
    worker.signal("TERM");
    let status = worker.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{}", worker.log());
}
