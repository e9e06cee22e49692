//! `lockctl ... --json`: the real binary's machine-readable output parses, with the documented
//! field names (`status`: one document; `stock get`: one document; `dead-letters list`: JSON
//! lines).

use std::time::Duration;

use lockstock_lock::LockOptions;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{TestApp, lockctl};

/// `lockctl status --json` is one JSON document with the queue (counts and workers) and the held
/// locks, under the same names as `GET /queue` and `GET /locks`.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn status_json_is_one_document_with_queue_and_locks(pool: PgPool) {
    // Arrange: two queued orders, one reserved by a live worker, one held lock.
    let app = TestApp::spawn(pool).await;
    for _ in 0..2 {
        app.post("/orders", json!({ "product_id": 1, "quantity": 1 }))
            .await;
    }
    let worker = app.queue("json-worker").await;
    worker
        .heartbeat_liveness(Duration::from_secs(30))
        .await
        .unwrap();
    worker.reserve(Duration::ZERO).await.unwrap().unwrap();
    let locks = app.lock_client("json-holder").await;
    let guard = locks
        .acquire("product:2", &LockOptions::default(), Duration::from_secs(1))
        .await
        .unwrap();

    // Act
    let stdout = app.lockctl_on_keys(&["status", "--json"]);

    // Assert
    let report: Value = serde_json::from_str(&stdout).expect("one JSON document");
    let queue = &report["queue"];
    assert_eq!(queue["pending"], 1, "{report}");
    assert_eq!(queue["in_flight"], 1);
    assert_eq!(queue["dead_letters"], 0);
    assert_eq!(queue["live_workers"], 1);
    assert_eq!(
        queue["workers"],
        json!([{ "id": "json-worker", "alive": true, "in_flight": 1 }])
    );
    let held = report["locks"].as_array().expect("locks is an array");
    assert_eq!(held.len(), 1, "{report}");
    assert_eq!(held[0]["resource"], "product:2");
    assert_eq!(held[0]["owner"]["id"], "json-holder");
    assert_eq!(held[0]["fence"].as_u64(), Some(guard.fence().get()));
    assert!(held[0]["ttl_left_ms"].as_u64().is_some());
    assert!(held[0]["age_ms"].as_u64().is_some());
    guard.release().await.unwrap();
}

/// `lockctl dead-letters list --json` prints one object per dead letter, newest first, with
/// `payload`, `reason`, `worker` and `at`.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn dead_letters_json_is_one_object_per_line(pool: PgPool) {
    // Arrange: two dead letters from one worker.
    let app = TestApp::spawn(pool).await;
    let worker = app.queue("json-dlq").await;
    for reason in ["first_reason", "second_reason"] {
        app.post("/orders", json!({ "product_id": 1, "quantity": 1 }))
            .await;
        let message = worker.reserve(Duration::ZERO).await.unwrap().unwrap();
        worker.dead_letter(&message, reason).await.unwrap();
    }

    // Act
    let stdout = app.lockctl_on_keys(&["dead-letters", "list", "--json"]);

    // Assert
    let lines: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(
        lines[0]["reason"], "second_reason",
        "newest first: {stdout}"
    );
    assert_eq!(lines[1]["reason"], "first_reason");
    for line in &lines {
        assert_eq!(line["worker"], "json-dlq");
        assert!(line["at"].as_i64().is_some_and(|at| at > 0), "{line}");
        let payload: Value = serde_json::from_str(line["payload"].as_str().unwrap()).unwrap();
        assert_eq!(payload["product_id"], 1);
    }
}

/// `lockctl stock get --json` prints `{"product_id", "stock"}`.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn stock_get_json_names_product_and_stock(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.reset_stock(3, 7).await;
    let database_url = app.database_url();

    let stdout = lockctl(&[
        "stock",
        "--database-url",
        &database_url,
        "get",
        "3",
        "--json",
    ]);

    let stock: Value = serde_json::from_str(&stdout).expect("one JSON document");
    assert_eq!(stock, json!({ "product_id": 3, "stock": 7 }));
}
