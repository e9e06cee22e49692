//! The seed's test scripts (`race-condition-test.js`, `lock-test.js`) and its accuracy table,
//! as integration tests against the running API.

use std::time::Duration;

use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{Settings, TestApp, json_of};

/// Sends `n` concurrent purchases of one unit of `product` on `path` (`with-lock` or
/// `without-lock`); returns the successful answers and the failed ones.
async fn concurrent_purchases(
    app: &TestApp,
    path: &str,
    product: i32,
    n: usize,
) -> (Vec<Value>, Vec<(StatusCode, Value)>) {
    let url = format!("/purchase/{path}/{product}");
    let answers = join_all((0..n).map(|_| app.post(&url, json!({ "quantity": 1 })))).await;
    let mut successes = Vec::new();
    let mut failures = Vec::new();
    for response in answers {
        let status = response.status();
        let body: Value = response.json().await.expect("JSON answer");
        if status.is_success() {
            successes.push(body);
        } else {
            failures.push((status, body));
        }
    }
    (successes, failures)
}

/// Rows in `orders` per (status, reason) for one product.
async fn outcomes(pool: &PgPool, product: i32) -> Vec<(String, Option<String>, i64)> {
    sqlx::query_as(
        "SELECT status, reason, count(*) FROM orders WHERE product_id = $1 \
         GROUP BY status, reason ORDER BY status",
    )
    .bind(product)
    .fetch_all(pool)
    .await
    .expect("count outcomes")
}

/// race-condition-test.js: stock 1 and five concurrent purchases without the lock — more than
/// one succeeds and the stock goes negative (the seed's race, kept on purpose).
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn without_the_lock_five_concurrent_purchases_oversell(pool: PgPool) {
    // Arrange
    let app = TestApp::spawn(pool.clone()).await;
    app.reset_stock(1, 1).await;

    // Act
    let (successes, failures) = concurrent_purchases(&app, "without-lock", 1, 5).await;

    // Assert
    assert!(
        successes.len() > 1,
        "expected the race to oversell; {} succeeded, failures: {failures:?}",
        successes.len()
    );
    let stock = app.stock(1).await;
    assert_eq!(stock, 1 - successes.len() as i64, "stock after the race");
    assert!(stock < 0, "the stock went negative ({stock})");
    for success in &successes {
        assert_eq!(success["success"], true);
        assert_eq!(success["message"], "Purchase successful (NO LOCK)");
        assert!(success["duration"].as_str().unwrap().ends_with("ms"));
    }
    for (status, body) in &failures {
        assert_eq!(*status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"], "Out of stock");
    }
    // Every purchase is recorded like a worker's decision, without a fence.
    let recorded: i64 = outcomes(&pool, 1).await.iter().map(|r| r.2).sum();
    assert_eq!(recorded, 5);
    let fenced: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM orders WHERE product_id = 1 AND fence IS NOT NULL",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(fenced, 0);
}

/// lock-test.js: stock 1 and five concurrent purchases with the lock — exactly one succeeds, the
/// other four are told "Out of stock", and the stock ends at 0; every decision is fenced.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn with_the_lock_exactly_one_of_five_concurrent_purchases_succeeds(pool: PgPool) {
    // Arrange
    let app = TestApp::spawn(pool.clone()).await;
    app.reset_stock(1, 1).await;

    // Act
    let (successes, failures) = concurrent_purchases(&app, "with-lock", 1, 5).await;

    // Assert
    assert_eq!(successes.len(), 1, "failures: {failures:?}");
    assert_eq!(successes[0]["success"], true);
    assert_eq!(successes[0]["message"], "Purchase successful (WITH LOCK)");
    assert_eq!(successes[0]["remaining_stock"], 0);
    assert!(successes[0]["fence"].as_u64().unwrap() >= 1);
    assert_eq!(failures.len(), 4);
    for (status, body) in &failures {
        assert_eq!(*status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"], "Out of stock");
        assert!(body["order_id"].is_string());
    }
    assert_eq!(app.stock(1).await, 0);
    assert_eq!(
        outcomes(&pool, 1).await,
        vec![
            ("fulfilled".to_owned(), None, 1),
            ("rejected".to_owned(), Some("out_of_stock".to_owned()), 4)
        ]
    );
    // Five lock holds, five distinct fences, one per decision.
    let fences: Vec<i64> =
        sqlx::query_scalar("SELECT fence FROM orders WHERE product_id = 1 ORDER BY decided_at")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(fences.len(), 5);
    assert!(
        fences.windows(2).all(|w| w[0] < w[1]),
        "fences rise with each hold: {fences:?}"
    );
}

/// The seed's accuracy comparison: 100 concurrent requests for a stock of 1. Without the lock
/// several succeed and the stock is oversold; with it exactly one succeeds and the stock is 0.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn accuracy_comparison_of_100_concurrent_requests(pool: PgPool) {
    // The unlocked run oversells when a second request reads the stock before the first one's
    // slow step ends: 300 ms leaves room for the pool opening connections on a loaded machine
    // (at 30 ms, one CI-like run saw every later read come after the first sale). The locked
    // run serializes 100 holds, so its app keeps the slow step short.
    let slow_step = |ms| Settings {
        work: Duration::from_millis(ms),
        ..Settings::default()
    };
    let unlocked_app = TestApp::spawn_with(pool.clone(), slow_step(300)).await;
    let app = TestApp::spawn_with(pool.clone(), slow_step(30)).await;

    unlocked_app.reset_stock(1, 1).await;
    let (unlocked, _) = concurrent_purchases(&unlocked_app, "without-lock", 1, 100).await;
    let unlocked_stock = unlocked_app.stock(1).await;

    app.reset_stock(1, 1).await;
    let (locked, locked_failures) = concurrent_purchases(&app, "with-lock", 1, 100).await;
    let locked_stock = app.stock(1).await;

    eprintln!("| Method       | 100 concurrent requests         | Oversold? |");
    eprintln!(
        "| Without lock | {:>3} succeeded (stock: {:>4}) | {:>3} oversold |",
        unlocked.len(),
        unlocked_stock,
        unlocked.len().saturating_sub(1)
    );
    eprintln!(
        "| With lock    | {:>3} succeeded (stock: {:>4}) | {:>3} oversold |",
        locked.len(),
        locked_stock,
        locked.len().saturating_sub(1)
    );

    assert!(unlocked.len() > 1, "the unlocked run should oversell");
    assert_eq!(unlocked_stock, 1 - unlocked.len() as i64);
    assert_eq!(locked.len(), 1);
    assert_eq!(locked_stock, 0);
    assert!(
        locked_failures
            .iter()
            .all(|(status, body)| *status == StatusCode::BAD_REQUEST
                && body["error"] == "Out of stock"),
        "every locked failure is a clean out-of-stock answer"
    );
}

/// The seed's `curl -X POST .../purchase/with-lock/1` works with no body at all (quantity 1),
/// and a larger quantity is honoured.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn a_purchase_without_a_body_buys_one_unit(pool: PgPool) {
    let app = TestApp::spawn_with(
        pool,
        Settings {
            work: Duration::ZERO,
            ..Settings::default()
        },
    )
    .await;
    let response = app
        .client
        .post(app.url("/purchase/with-lock/2"))
        .send()
        .await
        .unwrap();
    let body = json_of(response, StatusCode::OK).await;
    assert_eq!(body["remaining_stock"], 4);

    let body = json_of(
        app.post("/purchase/with-lock/2", json!({ "quantity": 3 }))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(body["remaining_stock"], 1);
    let body = json_of(
        app.post("/purchase/with-lock/2", json!({ "quantity": 2 }))
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(body["error"], "Out of stock");
    assert_eq!(app.stock(2).await, 1);
}
