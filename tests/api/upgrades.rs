//! Rolling upgrades: old and new builds against one database. A newer build's migrations and
//! outcome reasons do not break this one; a missing migration is reported, not applied behind
//! the operator's back. And `lockctl order <id>` says where an order is.

use std::{process::Command, time::Duration};

use lockstock::store::{StoreError, check_schema, migrate};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{TestApp, lockctl};

/// The migration that creates `idempotency_keys`.
const IDEMPOTENCY_MIGRATION: i64 = 20261129120100;

/// Runs `lockctl <args>` and returns (success, stdout + stderr).
fn lockctl_result(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_lockctl"))
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("run lockctl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// A database that a newer build migrated further (a migration row this build does not know)
/// passes this build's schema check, and migrating with this build leaves it alone; a database
/// missing one of this build's migrations fails the check with a hint, and `lockctl migrate`
/// brings it up to date.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn newer_migrations_are_ignored_and_missing_ones_reported(pool: PgPool) {
    // A "newer build" applied a migration we do not have.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (99991231000000, 'from a newer build', true, '\\x00'::bytea, 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
    check_schema(&pool)
        .await
        .expect("newer migrations are fine");
    migrate(&pool)
        .await
        .expect("migrating ignores the newer row");
    let url = crate::helpers::database_url(&pool);
    let (ok, text) = lockctl_result(&["stock", "--database-url", &url, "get", "1"]);
    assert!(ok, "{text}");
    assert_eq!(text.trim(), "10");

    // One of our migrations is missing (an old database, before `lockctl migrate`).
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1")
        .bind(IDEMPOTENCY_MIGRATION)
        .execute(&pool)
        .await
        .unwrap();
    let error = check_schema(&pool).await.unwrap_err();
    assert!(matches!(error, StoreError::SchemaBehind(_)), "{error}");
    let (ok, text) = lockctl_result(&["stock", "--database-url", &url, "get", "1"]);
    assert!(!ok, "a binary refuses a schema older than it needs");
    assert!(text.contains("lockctl migrate"), "{text}");
    // Its table exists already: drop it so `lockctl migrate` re-applies it for real.
    sqlx::query("DROP TABLE IF EXISTS idempotency_keys")
        .execute(&pool)
        .await
        .unwrap();
    lockctl(&["migrate", "--database-url", &url]);
    check_schema(&pool).await.expect("migrated");
}

/// An outcome reason written by a newer build is shown as it is by `GET /orders/{id}`,
/// `GET /orders` and `lockctl order`, never a 500.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn unknown_outcome_reasons_are_shown_as_they_are(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let id = uuid::Uuid::new_v4();
    sqlx::query(
        "INSERT INTO orders (id, product_id, quantity, status, reason, worker)
         VALUES ($1, 1, 1, 'rejected', 'fraud_suspected', 'worker-v2')",
    )
    .bind(id)
    .execute(&pool)
    .await
    .unwrap();
    let one = app.get_json(&format!("/orders/{id}"), StatusCode::OK).await;
    assert_eq!(one["status"], "rejected");
    assert_eq!(one["reason"], "fraud_suspected");
    let recent = app.get_json("/orders", StatusCode::OK).await;
    assert_eq!(recent["orders"][0]["reason"], "fraud_suspected");
    let url = app.database_url();
    let out = app.lockctl_on_keys(&["order", &id.to_string(), "--json", "--database-url", &url]);
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["status"], "rejected");
    assert_eq!(report["reason"], "fraud_suspected");
}

/// `lockctl order <id>` says whether an order is pending, in flight at which worker, or decided.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn lockctl_order_says_where_an_order_is(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let url = app.database_url();
    let accepted = app
        .post("/orders", json!({ "product_id": 1, "quantity": 1 }))
        .await;
    let id = accepted.json::<Value>().await.unwrap()["order_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let status = |app: &TestApp| {
        let out = app.lockctl_on_keys(&["order", &id, "--json", "--database-url", &url]);
        serde_json::from_str::<Value>(out.trim()).unwrap()
    };
    assert_eq!(status(&app)["status"], "pending");
    let worker = app.queue("order-worker").await;
    worker
        .heartbeat_liveness(Duration::from_secs(30))
        .await
        .unwrap();
    worker.reserve(Duration::ZERO).await.unwrap().unwrap();
    let report = status(&app);
    assert_eq!(report["status"], "in_flight");
    assert_eq!(report["location"]["in_flight_at"][0][0], "order-worker");
    sqlx::query(
        "INSERT INTO orders (id, product_id, quantity, status, fence, worker)
         VALUES ($1::uuid, 1, 1, 'fulfilled', 7, 'order-worker')",
    )
    .bind(&id)
    .execute(&pool)
    .await
    .unwrap();
    let report = status(&app);
    assert_eq!(report["status"], "fulfilled");
    assert_eq!(report["fence"], 7);
}
