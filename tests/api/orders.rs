//! Asynchronous orders through the API and a real worker, and the locked purchase sharing the
//! workers' lock and fencing.

use std::time::Duration;

use lockstock::{
    order::decode,
    worker::{Worker, WorkerConfig},
};
use lockstock_lock::LockOptions;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::helpers::{Settings, TestApp, json_of, wait_for};

/// `POST /orders` answers 202 with an id and puts the canonical message on the producer's list;
/// the order is `pending` until a worker decides it, then `GET /orders/{id}` shows the outcome.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn posted_orders_are_queued_then_decided_by_a_worker(pool: PgPool) {
    // Arrange
    let app = TestApp::spawn(pool.clone()).await;

    // Act: enqueue
    let response = app
        .post("/orders", json!({ "product_id": 3, "quantity": 2 }))
        .await;
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = json_of(response, StatusCode::ACCEPTED).await;
    let id = body["order_id"].as_str().expect("order id").to_owned();

    // Assert: queued, pending
    assert_eq!(body["status"], "pending");
    assert_eq!(location.as_deref(), Some(format!("/orders/{id}").as_str()));
    let queue = app.queue("inspector").await;
    assert_eq!(queue.depth().await.unwrap(), 1);
    let pending = app.get_json(&format!("/orders/{id}"), StatusCode::OK).await;
    assert_eq!(pending, json!({ "order_id": id, "status": "pending" }));
    let message = queue
        .reserve(Duration::ZERO)
        .await
        .unwrap()
        .expect("message");
    let order = decode(&message).expect("a valid wire message");
    assert_eq!(order.id.to_string(), id);
    assert_eq!((order.product_id.get(), order.quantity.get()), (3, 2));
    queue.requeue(&message).await.unwrap();

    // Act: a worker on the same list and lock key space decides it.
    let worker_queue = app.queue("worker-1").await;
    let worker = Worker::new(
        worker_queue,
        app.lock_client("worker-1").await,
        app.store.clone(),
        WorkerConfig {
            poll_timeout: Duration::from_millis(100),
            drain_timeout: Duration::from_secs(5),
            ..WorkerConfig::default()
        },
    )
    .expect("worker config");
    let stop = CancellationToken::new();
    let running = tokio::spawn(worker.run(stop.clone()));
    wait_for(
        "the order to be decided",
        Duration::from_secs(20),
        || async {
            app.get_json(&format!("/orders/{id}"), StatusCode::OK).await["status"] != "pending"
        },
    )
    .await;
    stop.cancel();
    running.await.unwrap();

    // Assert: the outcome as stored
    let decided = app.get_json(&format!("/orders/{id}"), StatusCode::OK).await;
    assert_eq!(decided["status"], "fulfilled");
    assert_eq!(decided["product_id"], 3);
    assert_eq!(decided["quantity"], 2);
    assert_eq!(decided["worker"], "worker-1");
    assert!(decided["fence"].as_u64().unwrap() >= 1);
    assert!(decided["decided_at"].is_string());
    assert_eq!(app.stock(3).await, 18);
    let recent = app.get_json("/orders?limit=5", StatusCode::OK).await;
    assert_eq!(recent["orders"][0]["order_id"], id);
}

/// A locked purchase takes the very lock the workers take (`product:<id>` in the shared key
/// space): while someone else holds it, the purchase waits, and past the wait it answers 503
/// without touching the stock.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn a_held_product_lock_makes_locked_purchases_wait_then_answer_503(pool: PgPool) {
    // Arrange: another process holds product 1's lock.
    let app = TestApp::spawn_with(
        pool,
        Settings {
            lock_wait: Duration::from_millis(300),
            work: Duration::ZERO,
            ..Settings::default()
        },
    )
    .await;
    let holder = app.lock_client("another-worker").await;
    let guard = holder
        .acquire("product:1", &LockOptions::default(), Duration::from_secs(1))
        .await
        .unwrap();

    // Act
    let started = std::time::Instant::now();
    let response = app.post("/purchase/with-lock/1", json!({})).await;
    let waited = started.elapsed();

    // Assert
    assert_eq!(
        response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .unwrap(),
        "1"
    );
    let body = json_of(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body, json!({ "error": "the product is busy; try again" }));
    assert!(waited >= Duration::from_millis(300), "waited {waited:?}");
    assert_eq!(app.stock(1).await, 10);

    // Once released, the purchase goes through under a higher fence.
    let fence = guard.fence().get();
    guard.release().await.unwrap();
    let body = json_of(
        app.post("/purchase/with-lock/1", json!({})).await,
        StatusCode::OK,
    )
    .await;
    assert!(body["fence"].as_u64().unwrap() > fence);
    assert_eq!(body["remaining_stock"], 9);
}

/// When Redis' fence counter is behind the database (Redis lost its data), the first claim is
/// refused as stale; the API raises the counter past the row's fence, takes the lock again and
/// the purchase succeeds under a fence above the old high-water mark — as the worker does.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn a_fence_counter_behind_the_database_is_raised_and_the_purchase_succeeds(pool: PgPool) {
    // Arrange: the row has seen fence 1000; this fresh Redis starts counting at 1.
    let app = TestApp::spawn_with(
        pool.clone(),
        Settings {
            work: Duration::ZERO,
            ..Settings::default()
        },
    )
    .await;
    sqlx::query("UPDATE products SET last_fence = 1000 WHERE id = 1")
        .execute(&pool)
        .await
        .unwrap();

    // Act
    let body = json_of(
        app.post("/purchase/with-lock/1", json!({ "quantity": 1 }))
            .await,
        StatusCode::OK,
    )
    .await;

    // Assert
    let fence = body["fence"].as_u64().unwrap();
    assert!(fence > 1000, "fence {fence}");
    assert_eq!(body["remaining_stock"], 9);
    let id = body["order_id"].as_str().unwrap();
    let order = app.get_json(&format!("/orders/{id}"), StatusCode::OK).await;
    assert_eq!(order["status"], "fulfilled");
    assert_eq!(order["fence"].as_u64(), Some(fence));
    assert_eq!(order["attempts"], 2, "decided on the second lock hold");
}
