//! Bad input, unknown things, size limits, the bearer token, and errors that must not leak.

use axum::{body::Body, http::Request};
use lockstock::api::app;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;
use tower::ServiceExt;

use crate::helpers::{Settings, TestApp, build_state, json_of};

/// Invalid ids and bodies answer 400 with a JSON error that says what is wrong; nothing changes.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn invalid_ids_and_bodies_answer_400(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    for id in ["abc", "0", "-1", "1.5", "99999999999"] {
        for path in [
            format!("/stock/{id}"),
            format!("/purchase/with-lock/{id}"),
            format!("/purchase/without-lock/{id}"),
            format!("/stock/{id}/reset"),
        ] {
            let response = if path.starts_with("/stock/") && !path.ends_with("reset") {
                app.get(&path).await
            } else {
                app.post(&path, json!({})).await
            };
            let body = json_of(response, StatusCode::BAD_REQUEST).await;
            assert!(
                body["error"]
                    .as_str()
                    .unwrap()
                    .contains("product id must be a positive integer"),
                "{path}: {body}"
            );
        }
    }
    let bad_bodies = [
        (json!({ "quantity": 0 }), "quantity must be"),
        (json!({ "quantity": -3 }), "quantity must be"),
        (json!({ "quantity": "2" }), "invalid JSON body"),
        (json!({ "quantity": 1.5 }), "invalid JSON body"),
        (json!("3"), "invalid JSON body"),
    ];
    for (body, expected) in bad_bodies {
        for path in ["/purchase/with-lock/1", "/purchase/without-lock/1"] {
            let answer = json_of(app.post(path, body.clone()).await, StatusCode::BAD_REQUEST).await;
            assert!(
                answer["error"].as_str().unwrap().contains(expected),
                "{path} {body}: {answer}"
            );
        }
    }
    let not_json = app
        .client
        .post(app.url("/purchase/with-lock/1"))
        .header("content-type", "application/json")
        .body("quantity=1")
        .send()
        .await
        .unwrap();
    json_of(not_json, StatusCode::BAD_REQUEST).await;
    // Without a JSON content type the body is not even read (issue 14: cross-site requests).
    let untyped = app
        .client
        .post(app.url("/purchase/with-lock/1"))
        .body("quantity=1")
        .send()
        .await
        .unwrap();
    json_of(untyped, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    for body in [
        json!({ "stock": -1 }),
        json!({ "stock": 3_000_000_000_i64 }),
    ] {
        json_of(
            app.post("/stock/1/reset", body).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    for body in [
        json!({ "quantity": 1 }),
        json!({ "product_id": 0, "quantity": 1 }),
        json!({ "product_id": 1, "quantity": 0 }),
        json!({ "product_id": "1", "quantity": 1 }),
    ] {
        json_of(app.post("/orders", body).await, StatusCode::BAD_REQUEST).await;
    }
    json_of(app.get("/orders/not-a-uuid").await, StatusCode::BAD_REQUEST).await;
    json_of(app.get("/orders?limit=0").await, StatusCode::BAD_REQUEST).await;
    json_of(app.get("/orders?limit=x").await, StatusCode::BAD_REQUEST).await;
    // Nothing was bought, reset or queued.
    assert_eq!(app.stock(1).await, 10);
    assert_eq!(app.queue("inspector").await.depth().await.unwrap(), 0);
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(orders, 0);
}

/// Unknown products answer 404 on every route that names one; unknown routes answer 404 and wrong
/// methods 405, all in JSON.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn unknown_products_and_routes_answer_404(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let body = json_of(app.get("/stock/999").await, StatusCode::NOT_FOUND).await;
    assert_eq!(body, json!({ "error": "unknown product 999" }));
    for path in [
        "/purchase/with-lock/999",
        "/purchase/without-lock/999",
        "/stock/999/reset",
    ] {
        json_of(app.post(path, json!({})).await, StatusCode::NOT_FOUND).await;
    }
    json_of(
        app.post("/orders", json!({ "product_id": 999, "quantity": 1 }))
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(app.queue("inspector").await.depth().await.unwrap(), 0);
    json_of(app.get("/nope").await, StatusCode::NOT_FOUND).await;
    json_of(
        app.get("/purchase/with-lock/1").await,
        StatusCode::METHOD_NOT_ALLOWED,
    )
    .await;
}

/// A request slower than the request timeout answers 408 in JSON instead of hanging, and its
/// handler is dropped before it commits: the stock is untouched.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn requests_slower_than_the_timeout_answer_408(pool: PgPool) {
    // Arrange: a locked purchase whose slow step (30 s) outlasts the 300 ms request timeout.
    let app = TestApp::spawn_with(
        pool,
        Settings {
            work: std::time::Duration::from_secs(30),
            request_timeout: std::time::Duration::from_millis(300),
            ..Settings::default()
        },
    )
    .await;
    app.reset_stock(1, 5).await;

    // Act: a client that would give up long before the slow step ends.
    let started = std::time::Instant::now();
    let response = app
        .client
        .post(app.url("/purchase/with-lock/1"))
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .expect("the API answers before the client's own 10 s timeout");

    // Assert
    let elapsed = started.elapsed();
    let body = json_of(response, StatusCode::REQUEST_TIMEOUT).await;
    assert_eq!(body, json!({ "error": "request timed out" }));
    assert!(elapsed < std::time::Duration::from_secs(10), "{elapsed:?}");
    assert_eq!(app.stock(1).await, 5, "a timed-out purchase sold nothing");
}

/// A body over the limit is refused with 413 before anything happens.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn oversized_bodies_answer_413(pool: PgPool) {
    let app = TestApp::spawn_with(
        pool,
        Settings {
            body_limit: 256,
            ..Settings::default()
        },
    )
    .await;
    let padding = "x".repeat(1024);
    for path in ["/purchase/with-lock/1", "/stock/1/reset", "/orders"] {
        let response = app
            .post(path, json!({ "quantity": 1, "stock": 1, "pad": padding }))
            .await;
        let body = json_of(response, StatusCode::PAYLOAD_TOO_LARGE).await;
        assert_eq!(
            body,
            json!({ "error": "request body is larger than 256 bytes" })
        );
    }
    assert_eq!(app.stock(1).await, 10);
}

/// With API_TOKEN set, every mutating route needs `Authorization: Bearer <token>`; reads stay
/// open. A refused request changes nothing.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn mutating_routes_need_the_bearer_token(pool: PgPool) {
    let app = TestApp::spawn_with(
        pool,
        Settings {
            token: Some("s3cret-token".to_owned()),
            work: std::time::Duration::ZERO,
            ..Settings::default()
        },
    )
    .await;
    let routes = [
        ("/purchase/with-lock/1", json!({})),
        ("/purchase/without-lock/1", json!({})),
        ("/stock/1/reset", json!({ "stock": 0 })),
        ("/orders", json!({ "product_id": 1, "quantity": 1 })),
    ];
    for (path, body) in &routes {
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("s3cret-token"),
            Some("Basic s3cret-token"),
        ] {
            let mut request = app.client.post(app.url(path)).json(body);
            if let Some(value) = auth {
                request = request.header("Authorization", value);
            }
            let response = request.send().await.unwrap();
            assert_eq!(
                response.headers().get("www-authenticate").unwrap(),
                "Bearer"
            );
            let answer = json_of(response, StatusCode::UNAUTHORIZED).await;
            assert_eq!(
                answer,
                json!({ "error": "missing or invalid bearer token" })
            );
        }
    }
    assert_eq!(app.stock(1).await, 10, "reads need no token");
    assert_eq!(app.queue("inspector").await.depth().await.unwrap(), 0);

    // With the token, each route works.
    for (path, body) in &routes {
        let response = app.post(path, body.clone()).await;
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
    }
}

/// When Postgres or Redis fails, the caller gets a generic error; the cause (which may name
/// hosts, users or SQL) stays in the logs.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn internal_failures_answer_generic_errors(pool: PgPool) {
    // Arrange: the API's pool is closed (Postgres "gone") and its Redis is stopped.
    let mut redis = crate::redis_server::RedisServer::start();
    let store = lockstock::store::OrderStore::new(pool.clone());
    let state = build_state(&redis.url(), "leak-test", store, &Settings::default()).await;
    pool.close().await;
    redis.stop();

    for (method, path, body) in [
        ("GET", "/stock/1", ""),
        ("GET", "/products", ""),
        ("GET", "/orders/6f1c1c8e-3b5e-4a55-9a1e-0c7d2b4e8f10", ""),
        ("POST", "/purchase/without-lock/1", "{}"),
        ("GET", "/locks", ""),
        ("GET", "/queue", ""),
    ] {
        // Act
        let response = app(state.clone())
            .oneshot(
                Request::builder()
                    .method(method)
                    .uri(path)
                    .header("content-type", "application/json")
                    .body(Body::from(body))
                    .unwrap(),
            )
            .await
            .unwrap();

        // Assert
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(status.is_server_error(), "{path}: {status} {text}");
        assert!(
            text == r#"{"error":"a backing service is unavailable"}"#
                || text == r#"{"error":"internal error"}"#,
            "{path}: {text}"
        );
    }
}
