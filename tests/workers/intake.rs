//! The durable intake: orders recorded in Postgres before they are pushed survive Redis losing
//! its data; the workers' sweep pushes them again with no operator step.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use sqlx::PgPool;

use crate::helpers::{Env, wait_for};

/// Runs the `producer` binary against the test's Redis, database and queue; it must succeed.
fn produce(env: &Env, args: &[&str]) -> std::process::Output {
    let output = env.produce(args);
    assert!(
        output.status.success(),
        "producer failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// 1,000 orders pushed by the producer (recorded in the intake first); Redis is SIGKILLed
/// mid-run and restarted empty, without persistence: every order is still decided exactly once,
/// the ledger is exact, and nobody pushed anything again by hand.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn orders_survive_redis_restarting_empty_without_an_operator(pool: PgPool) {
    let mut env = Env::new(pool).await;
    let initial = 150;
    env.products(5, initial).await;
    let sweep = ["--intake-sweep-ms", "300", "--intake-stale-ms", "1000"];
    let workers: Vec<_> = (0..2)
        .map(|i| {
            let mut args = vec!["--work-ms", "20", "--batch-limit", "16"];
            args.extend(sweep);
            env.worker(&format!("w{i}"), &args)
        })
        .collect();
    for product in 1..=5 {
        produce(&env, &["--product", &product.to_string(), "--count", "200"]);
    }
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM intake")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert!(recorded > 0, "the producer recorded nothing in the intake");
    env.wait_decided(100, Duration::from_secs(30)).await;

    env.redis.restart(); // SIGKILL, then a fresh server on the same port with no data
    let decided_at_restart = env.decided().await;
    assert!(
        decided_at_restart < 1_000,
        "everything was decided before the restart; the test proves nothing"
    );
    let restarted = Instant::now();
    env.wait_decided(1_000, Duration::from_secs(90)).await;
    eprintln!(
        "all 1000 decided {:?} after the restart ({decided_at_restart} were decided before it)",
        restarted.elapsed()
    );

    let outcomes = env.outcomes().await;
    assert_eq!(outcomes.len(), 1_000, "every order decided exactly once");
    env.assert_ledger(5, initial).await;
    let fulfilled = outcomes.values().filter(|(s, _)| s == "fulfilled").count();
    assert_eq!(fulfilled, 5 * initial as usize, "every unit sold, no more");
    let restored = env.restored().await;
    assert!(
        restored > 0,
        "the sweep restored nothing; logs:\n{}",
        workers.iter().map(|w| w.log()).collect::<String>()
    );
    let status = Command::new(env!("CARGO_BIN_EXE_lockctl"))
        .args(["status", "--redis-url", &env.redis.url()])
        .args([
            "--queue-key",
            &env.pending_key(),
            "--dead-key",
            &env.dead_key(),
        ])
        .args(["--lock-prefix", &env.lock_prefix()])
        .output()
        .expect("run lockctl status");
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains(&format!("restored      {restored}")),
        "lockctl status does not show the restored count:\n{status}"
    );
    wait_for("the queue to drain", Duration::from_secs(30), || async {
        env.llen(&env.pending_key()).await == 0 && env.processing_total().await == 0
    })
    .await;
}

/// While Redis keeps its data, the sweep pushes nothing: orders waiting in the pending list or
/// held in a processing list are seen there, however old.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn the_sweep_leaves_queued_orders_alone(pool: PgPool) {
    let env = Env::new(pool).await;
    env.products(1, 1_000).await;
    produce(&env, &["--product", "1", "--count", "50"]);
    // A slow worker holds the orders (processing list) and more wait (pending) for many sweeps.
    let worker = env.worker(
        "slow",
        &[
            "--work-ms",
            "200",
            "--batch-limit",
            "1",
            "--intake-sweep-ms",
            "100",
            "--intake-stale-ms",
            "1",
        ],
    );
    env.wait_decided(10, Duration::from_secs(30)).await;
    assert_eq!(env.restored().await, 0, "{}", worker.log());
}

/// `producer --no-intake` pushes to Redis only (the escape hatch): nothing is recorded.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn no_intake_records_nothing(pool: PgPool) {
    let env = Env::new(pool).await;
    produce(&env, &["--product", "1", "--count", "10", "--no-intake"]);
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM intake")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(recorded, 0);
    assert_eq!(env.llen(&env.pending_key()).await, 10);
}
