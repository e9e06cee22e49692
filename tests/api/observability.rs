//! Health, readiness, metrics, held locks and the queue view.

use std::{sync::Arc, time::Duration};

use lockstock::observe::{WorkerMetrics, WorkerStats, serve_worker_metrics};
use lockstock_lock::LockOptions;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::helpers::{Settings, TestApp, parse_prometheus, sample};

/// `/healthz` always answers; `/readyz` answers 200 while Redis and Postgres answer, and 503
/// naming Redis once it is gone.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn readiness_follows_redis_and_postgres(pool: PgPool) {
    let mut app = TestApp::spawn(pool).await;
    assert_eq!(
        app.get_json("/healthz", StatusCode::OK).await,
        json!({ "status": "ok" })
    );
    assert_eq!(
        app.get_json("/readyz", StatusCode::OK).await,
        json!({ "status": "ready", "redis": "ok", "postgres": "ok" })
    );

    app.redis.stop();
    let body = app
        .get_json("/readyz", StatusCode::SERVICE_UNAVAILABLE)
        .await;
    assert_eq!(
        body,
        json!({ "status": "unavailable", "redis": "unavailable", "postgres": "ok" })
    );
    assert_eq!(
        app.get_json("/healthz", StatusCode::OK).await,
        json!({ "status": "ok" })
    );
    app.stop().await;
}

/// `/metrics` is well-formed Prometheus text with the lock, order, queue and API families, and the
/// numbers follow what happened.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn metrics_text_parses_and_counts_what_happened(pool: PgPool) {
    // Arrange: two locked purchases (one sells, one is out of stock), one queued order.
    let app = TestApp::spawn_with(
        pool,
        Settings {
            work: Duration::from_millis(20),
            ..Settings::default()
        },
    )
    .await;
    app.reset_stock(2, 1).await;
    for expected in [StatusCode::OK, StatusCode::BAD_REQUEST] {
        let response = app.post("/purchase/with-lock/2", json!({})).await;
        assert_eq!(response.status(), expected);
    }
    let response = app.post("/purchase/without-lock/2", json!({})).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    app.post("/orders", json!({ "product_id": 1, "quantity": 1 }))
        .await;

    // Act
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    let samples = parse_prometheus(&text);

    // Assert
    let get = |name: &str, labels: &[(&str, &str)]| {
        sample(&samples, name, labels).unwrap_or_else(|| panic!("no {name}{labels:?} in\n{text}"))
    };
    assert_eq!(get("lockstock_lock_acquisitions_total", &[]), 2.0);
    assert_eq!(get("lockstock_lock_acquire_timeouts_total", &[]), 0.0);
    assert_eq!(get("lockstock_lock_acquire_failures_total", &[]), 0.0);
    assert_eq!(get("lockstock_lock_losses_total", &[]), 0.0);
    assert_eq!(get("lockstock_lock_acquire_wait_seconds_count", &[]), 2.0);
    assert_eq!(get("lockstock_lock_hold_seconds_count", &[]), 2.0);
    assert!(
        get("lockstock_lock_hold_seconds_sum", &[]) >= 0.04,
        "two holds of >= 20 ms"
    );
    assert_eq!(
        get(
            "lockstock_orders",
            &[("status", "fulfilled"), ("reason", "")]
        ),
        1.0
    );
    assert_eq!(
        get(
            "lockstock_orders",
            &[("status", "rejected"), ("reason", "out_of_stock")]
        ),
        2.0
    );
    assert_eq!(
        get(
            "lockstock_api_purchases_total",
            &[("path", "with-lock"), ("result", "fulfilled")]
        ),
        1.0
    );
    assert_eq!(
        get(
            "lockstock_api_purchases_total",
            &[("path", "with-lock"), ("result", "out_of_stock")]
        ),
        1.0
    );
    assert_eq!(
        get(
            "lockstock_api_purchases_total",
            &[("path", "without-lock"), ("result", "out_of_stock")]
        ),
        1.0
    );
    assert_eq!(get("lockstock_queue_pending", &[]), 1.0);
    assert_eq!(get("lockstock_queue_dead_letters", &[]), 0.0);
    assert_eq!(
        get("lockstock_dependency_up", &[("dependency", "redis")]),
        1.0
    );
    assert_eq!(
        get("lockstock_dependency_up", &[("dependency", "postgres")]),
        1.0
    );
    assert!(get("lockstock_api_responses_total", &[("class", "2xx")]) >= 2.0);
}

/// A worker's metrics endpoint serves the same lock families plus its own counters.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn worker_metrics_endpoint_serves_lock_and_worker_families(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let locks = app.lock_client("worker-m").await;
    let guard = locks
        .acquire("product:1", &LockOptions::default(), Duration::from_secs(1))
        .await
        .unwrap();
    guard.release().await.unwrap();
    let stats = Arc::new(WorkerStats::default());
    stats
        .fulfilled
        .fetch_add(3, std::sync::atomic::Ordering::Relaxed);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let server = tokio::spawn(serve_worker_metrics(
        listener,
        WorkerMetrics {
            locks,
            stats,
            queue: app.queue("worker-m").await,
        },
        stop.clone(),
    ));

    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let samples = parse_prometheus(&text);
    assert_eq!(
        sample(&samples, "lockstock_lock_acquisitions_total", &[]),
        Some(1.0)
    );
    assert_eq!(
        sample(&samples, "lockstock_lock_hold_seconds_count", &[]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &samples,
            "lockstock_worker_orders_total",
            &[("outcome", "fulfilled")]
        ),
        Some(3.0)
    );
    assert_eq!(sample(&samples, "lockstock_queue_pending", &[]), Some(0.0));
    stop.cancel();
    server.await.unwrap().unwrap();
}

/// `GET /locks` lists a held lock with its owner, fencing token, age and TTL left, and forgets it
/// once released.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn locks_lists_held_locks_with_owner_fence_and_ttl(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    assert_eq!(
        app.get_json("/locks", StatusCode::OK).await,
        json!({ "locks": [] })
    );
    let holder = app.lock_client("holder-7").await;
    let guard = holder
        .acquire(
            "product:2",
            &LockOptions::with_ttl(Duration::from_secs(30)),
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;

    let body = app.get_json("/locks", StatusCode::OK).await;
    let locks = body["locks"].as_array().unwrap();
    assert_eq!(locks.len(), 1, "{body}");
    let lock = &locks[0];
    assert_eq!(lock["resource"], "product:2");
    assert_eq!(lock["owner"]["id"], "holder-7");
    assert_eq!(lock["owner"]["pid"], std::process::id());
    assert_eq!(lock["fence"].as_u64(), Some(guard.fence().get()));
    let age = lock["age_ms"].as_u64().unwrap();
    assert!((40..5_000).contains(&age), "age {age}");
    let ttl = lock["ttl_left_ms"].as_u64().unwrap();
    assert!(ttl > 20_000 && ttl <= 30_000, "ttl {ttl}");
    assert!(
        lock.get("token").is_none(),
        "the secret token is never shown"
    );

    guard.release().await.unwrap();
    assert_eq!(
        app.get_json("/locks", StatusCode::OK).await,
        json!({ "locks": [] })
    );
}

/// `GET /queue` shows pending orders, each worker's in-flight count and liveness, and dead
/// letters.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn queue_shows_pending_in_flight_per_worker_and_dead_letters(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    for _ in 0..3 {
        let response = app
            .post("/orders", json!({ "product_id": 1, "quantity": 1 }))
            .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    // A live worker reserves one order; another reserves one and dead-letters it.
    let worker = app.queue("worker-a").await;
    worker
        .heartbeat_liveness(Duration::from_secs(30))
        .await
        .unwrap();
    worker
        .reserve(Duration::ZERO)
        .await
        .unwrap()
        .expect("an order");
    let other = app.queue("worker-b").await;
    other
        .heartbeat_liveness(Duration::from_secs(30))
        .await
        .unwrap();
    let doomed = other
        .reserve(Duration::ZERO)
        .await
        .unwrap()
        .expect("an order");
    other.dead_letter(&doomed, "test_reason").await.unwrap();

    let body = app.get_json("/queue", StatusCode::OK).await;
    assert_eq!(body["pending"], 1, "{body}");
    assert_eq!(body["in_flight"], 1);
    assert_eq!(body["dead_letters"], 1);
    assert_eq!(body["live_workers"], 2);
    assert_eq!(
        body["workers"],
        json!([
            { "id": "worker-a", "alive": true, "in_flight": 1 },
            { "id": "worker-b", "alive": true, "in_flight": 0 },
        ])
    );
    assert_eq!(body["recent_dead_letters"][0]["reason"], "test_reason");
    assert_eq!(body["recent_dead_letters"][0]["worker"], "worker-b");
}

/// Metrics keep answering when Redis is down: the queue families are left out and
/// `lockstock_dependency_up{dependency="redis"}` is 0.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn metrics_still_answer_without_redis(pool: PgPool) {
    let mut app = TestApp::spawn(pool).await;
    app.redis.stop();
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    let samples = parse_prometheus(&response.text().await.unwrap());
    assert_eq!(
        sample(
            &samples,
            "lockstock_dependency_up",
            &[("dependency", "redis")]
        ),
        Some(0.0)
    );
    assert_eq!(sample(&samples, "lockstock_queue_pending", &[]), None);
    assert!(sample(&samples, "lockstock_lock_acquisitions_total", &[]).is_some());
}
