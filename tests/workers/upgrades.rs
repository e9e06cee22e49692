//! Rolling upgrades with real worker processes: a newer build's migrations and outcome reasons
//! do not stop this worker; a schema older than it needs is refused unless it is told to
//! migrate (`--migrate`).

use std::time::Duration;

use sqlx::PgPool;

use crate::helpers::{Env, order, wait_for};

/// The migration that creates `idempotency_keys`.
const IDEMPOTENCY_MIGRATION: i64 = 20261129120100;

/// Records a migration this build does not know, as a newer build's `lockctl migrate` would.
async fn apply_newer_migration(pool: &PgPool) {
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (99991231000000, 'from a newer build', true, '\\x00'::bytea, 0)",
    )
    .execute(pool)
    .await
    .unwrap();
}

/// Takes one of this build's migrations away (an old database before `lockctl migrate`).
async fn remove_idempotency_migration(pool: &PgPool) {
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1")
        .bind(IDEMPOTENCY_MIGRATION)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("DROP TABLE idempotency_keys")
        .execute(pool)
        .await
        .unwrap();
}

/// A database a newer build migrated further: this build's worker and api start without
/// `--migrate`, side by side, and both sell (the state in the middle of a rolling upgrade,
/// and after a rollback).
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn worker_and_api_run_on_a_newer_schema(pool: PgPool) {
    apply_newer_migration(&pool).await;
    let env = Env::new(pool).await;
    env.products(1, 10).await;
    let worker = env.worker("current", &[]);
    let api = env.api("current-api", &[]).await;
    env.push(&[order(1, 1), order(1, 1)]).await;
    env.wait_decided(2, Duration::from_secs(20)).await;
    let answers = api.buy_concurrently(1, 2).await;
    assert_eq!(answers, [200, 200], "{}", api.process.log());
    assert_eq!(env.stock(1).await, 6, "{}", worker.log());
}

/// A database missing one of this build's migrations: the worker (and the producer) refuse at
/// once, naming `lockctl migrate`, and apply nothing; with `--migrate` the worker migrates and
/// works.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn worker_refuses_an_older_schema_unless_told_to_migrate(pool: PgPool) {
    remove_idempotency_migration(&pool).await;
    let env = Env::new(pool.clone()).await;
    env.products(1, 10).await;
    let mut refused = env.worker("old-schema", &["--wait-for-services", "5s"]);
    let status = refused.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(1), "{}", refused.log());
    let log = refused.log();
    assert!(log.contains("lockctl migrate"), "{log}");
    assert!(log.contains(&IDEMPOTENCY_MIGRATION.to_string()), "{log}");
    assert!(
        lockstock::store::check_schema(&pool).await.is_err(),
        "a worker without --migrate applies nothing"
    );

    // The producer (recording its orders in the intake) refuses the same way.
    let producer = env.produce(&["--product", "1", "--count", "1"]);
    let text = String::from_utf8_lossy(&producer.stderr);
    assert!(!producer.status.success(), "{text}");
    assert!(text.contains("lockctl migrate"), "{text}");
    assert_eq!(env.llen(&env.pending_key()).await, 0);

    let _migrating = env.worker("migrating", &["--migrate"]);
    env.push(&[order(1, 1)]).await;
    env.wait_decided(1, Duration::from_secs(20)).await;
    lockstock::store::check_schema(&pool)
        .await
        .expect("--migrate applied the missing migration");
}

/// An order a newer build decided with a reason this build does not know: a redelivered copy is
/// acknowledged as decided (the row and the stock unchanged, nothing dead-lettered) with a log
/// line naming the order.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn a_redelivered_order_with_an_unknown_reason_is_acknowledged_and_logged(pool: PgPool) {
    let env = Env::new(pool.clone()).await;
    env.products(1, 10).await;
    let decided = order(1, 1);
    sqlx::query(
        "INSERT INTO orders (id, product_id, quantity, status, reason, worker)
         VALUES ($1, 1, 1, 'rejected', 'fraud_suspected', 'worker-v2')",
    )
    .bind(decided.id.as_uuid())
    .execute(&pool)
    .await
    .unwrap();
    let worker = env.worker("old", &[]);
    env.push(&[decided, order(1, 1)]).await;
    env.wait_decided(2, Duration::from_secs(20)).await;
    let id = decided.id.to_string();
    wait_for(
        "the worker to log the order it acknowledged",
        Duration::from_secs(10),
        || async { worker.log().contains(&id) },
    )
    .await;
    env.wait_processing_empty().await;
    assert_eq!(env.llen(&env.pending_key()).await, 0);
    assert_eq!(env.llen(&env.dead_key()).await, 0, "{}", worker.log());
    let outcomes = env.outcomes().await;
    assert_eq!(
        outcomes[&decided.id.as_uuid()],
        ("rejected".to_owned(), Some("fraud_suspected".to_owned()))
    );
    assert_eq!(env.stock(1).await, 9, "only the other order sold");
    let line = worker
        .log()
        .lines()
        .find(|line| line.contains(&id))
        .unwrap_or_default()
        .to_owned();
    assert!(line.contains("does not know"), "{line}");
}
