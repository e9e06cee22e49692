//! The `api` binary's start-up rules and shutdown, `lockctl status` / `dead-letters`, and the
//! worker's `--metrics-addr`, run as real processes.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;

use crate::{
    helpers::{TestApp, parse_prometheus, sample, wait_for},
    redis_server::free_port,
};

/// Without API_TOKEN the server refuses a non-loopback address (before connecting anywhere),
/// unless `--allow-public` is given.
#[test]
fn api_refuses_a_public_address_without_a_token() {
    let output = Command::new(env!("CARGO_BIN_EXE_api"))
        .args(["--bind", "0.0.0.0:0"])
        .env_remove("API_TOKEN")
        .env("RUST_LOG", "error")
        .output()
        .expect("run the api binary");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0 without API_TOKEN"),
        "{stderr}"
    );
}

/// The binary serves on the given address, logs its URLs with passwords masked, and exits 0 on
/// SIGTERM.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn api_binary_serves_and_stops_on_sigterm(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let port = free_port();
    let database_url = app.database_url();
    let child = Command::new(env!("CARGO_BIN_EXE_api"))
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .args([
            "--redis-url",
            &app.redis.url(),
            "--database-url",
            &database_url,
        ])
        .env_remove("API_TOKEN")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the api binary");
    let client = reqwest::Client::new();
    wait_for("the api binary to answer", Duration::from_secs(20), || {
        let client = client.clone();
        async move {
            client
                .get(format!("http://127.0.0.1:{port}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK)
        }
    })
    .await;
    let stock: serde_json::Value = client
        .get(format!("http://127.0.0.1:{port}/stock/1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stock, json!({ "productId": 1, "stock": 10 }));

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?}: {stderr}",
        output.status
    );
    assert!(stderr.contains("api listening"), "{stderr}");
    let password = url::Url::parse(&database_url)
        .unwrap()
        .password()
        .map(str::to_owned);
    if let Some(password) = password.filter(|p| p.len() >= 3) {
        assert!(!stderr.contains(&password), "the password leaked: {stderr}");
        assert!(stderr.contains(":***@"), "{stderr}");
    }
}

/// `lockctl status` prints the queue, the workers and the held locks; `dead-letters list` shows the
/// dead letters and `dead-letters requeue` puts them back on the pending list.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn lockctl_status_and_dead_letters(pool: PgPool) {
    // Arrange: one queued order, one in flight with a live worker, one dead letter, one lock.
    let app = TestApp::spawn(pool).await;
    for _ in 0..3 {
        app.post("/orders", json!({ "product_id": 1, "quantity": 1 }))
            .await;
    }
    let worker = app.queue("status-worker").await;
    worker
        .heartbeat_liveness(Duration::from_secs(30))
        .await
        .unwrap();
    worker.reserve(Duration::ZERO).await.unwrap().unwrap();
    let doomed = worker.reserve(Duration::ZERO).await.unwrap().unwrap();
    worker
        .dead_letter(&doomed, "poison_for_test")
        .await
        .unwrap();
    let locks = app.lock_client("status-holder").await;
    let guard = locks
        .acquire(
            "product:3",
            &lockstock_lock::LockOptions::default(),
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    let lockctl = |args: &[&str]| app.lockctl_on_keys(args);

    // Act + Assert: status
    let status = lockctl(&["status"]);
    assert!(status.contains("pending       1"), "{status}");
    assert!(status.contains("in flight     1"), "{status}");
    assert!(status.contains("dead letters  1"), "{status}");
    assert!(status.contains("1 live of 1 known"), "{status}");
    assert!(status.contains("status-worker  live"), "{status}");
    assert!(status.contains("product:3"), "{status}");
    assert!(status.contains("status-holder"), "{status}");

    // dead-letters list / requeue
    let list = lockctl(&["dead-letters", "list"]);
    assert!(list.contains("poison_for_test"), "{list}");
    assert!(list.contains("status-worker"), "{list}");
    let requeued = lockctl(&["dead-letters", "requeue"]);
    assert!(requeued.contains("requeued 1"), "{requeued}");
    let queue = app.queue("inspector").await;
    assert_eq!(queue.depth().await.unwrap(), 2);
    assert_eq!(queue.dead_depth().await.unwrap(), 0);
    guard.release().await.unwrap();
}

/// A worker started with `--metrics-addr` serves Prometheus text there.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn worker_serves_metrics_on_metrics_addr(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_worker"))
        .args([
            "--redis-url",
            &app.redis.url(),
            "--database-url",
            &app.database_url(),
        ])
        .args(["--queue-key", &format!("{}:orders:pending", app.prefix)])
        .args(["--dead-key", &format!("{}:orders:dead", app.prefix)])
        .args(["--lock-prefix", &app.lock_prefix()])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .args(["--max-connections", "2"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the worker binary");
    app.post("/orders", json!({ "product_id": 1, "quantity": 1 }))
        .await;
    let url = format!("http://127.0.0.1:{port}/metrics");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let text = loop {
        if let Ok(response) = reqwest::get(&url).await {
            let text = response.text().await.unwrap_or_default();
            if text.contains("lockstock_worker_orders_total{outcome=\"fulfilled\"} 1") {
                break text;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the worker did not report the decided order on {url}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let samples = parse_prometheus(&text);
    assert_eq!(
        sample(&samples, "lockstock_lock_acquisitions_total", &[]),
        Some(1.0)
    );
    assert!(sample(&samples, "lockstock_queue_live_workers", &[]).is_some());
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
}
