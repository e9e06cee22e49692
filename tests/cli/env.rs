//! One variable, one meaning: the producer and the workers read the queue's keys from the same
//! environment variables, so started with the same environment they use the same list.

use std::{process::Stdio, time::Duration};

use sqlx::PgPool;

use crate::{
    helpers::{Running, assert_success, command, database_url, llen, prefix, run, wait_decided},
    redis_server::RedisServer,
};

/// With `QUEUE_KEY` set and no `--queue-key`, the producer pushes onto `QUEUE_KEY`'s list, not
/// the default one.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn producer_pushes_to_the_list_named_by_queue_key(pool: PgPool) {
    // Arrange
    let redis = RedisServer::start();
    let key = format!("{}:orders:pending", prefix());

    // Act
    let mut producer = command("producer");
    producer
        .env("REDIS_URL", redis.url())
        .env("QUEUE_KEY", &key)
        .env("DATABASE_URL", database_url(&pool))
        .args(["--product", "1", "--count", "5"]);
    let output = tokio::task::spawn_blocking(move || run(producer))
        .await
        .unwrap();

    // Assert
    assert_success("producer", &output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.trim(), format!("enqueued 5 orders to {key}"));
    assert_eq!(llen(&redis.url(), &key).await, 5);
    assert_eq!(llen(&redis.url(), "orders:pending").await, 0);
}

/// A producer and a worker given only the environment (`QUEUE_KEY`, `DEAD_KEY`, `LOCK_PREFIX`,
/// `REDIS_URL`, `DATABASE_URL`) meet on one list: every order the producer pushes is decided
/// by the worker.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn producer_and_worker_meet_on_the_queue_named_by_the_environment(pool: PgPool) {
    // Arrange
    let redis = RedisServer::start();
    let prefix = prefix();
    let environment = [
        ("REDIS_URL", redis.url()),
        ("DATABASE_URL", database_url(&pool)),
        ("QUEUE_KEY", format!("{prefix}:orders:pending")),
        ("DEAD_KEY", format!("{prefix}:orders:dead")),
        ("LOCK_PREFIX", format!("{prefix}-locks")),
    ];
    let mut worker = command("worker");
    worker
        .envs(environment.iter().map(|(k, v)| (k, v)))
        .args(["--max-connections", "4"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let worker = Running::spawn(&mut worker);

    // Act
    let mut producer = command("producer");
    producer
        .envs(environment.iter().map(|(k, v)| (k, v)))
        .args(["--product", "1", "--count", "5"]);
    let output = tokio::task::spawn_blocking(move || run(producer))
        .await
        .unwrap();
    assert_success("producer", &output);

    // Assert
    wait_decided(&pool, 5, Duration::from_secs(30)).await;
    assert_eq!(llen(&redis.url(), "orders:pending").await, 0);
    assert_success("worker", &worker.stop().await);
}
