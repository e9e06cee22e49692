//! The API's defences: cross-site requests, DNS rebinding, slow clients, load, reads that cost
//! the database, the unsafe demo route and the read token.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use sqlx::{PgPool, postgres::PgPoolOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{Settings, TestApp, json_of, parse_prometheus, sample, wait_for};

fn quick() -> Settings {
    Settings {
        work: Duration::ZERO,
        ..Settings::default()
    }
}

/// A page on another site cannot reset stock or enqueue orders through the user's browser:
/// `text/plain` bodies get 415, a foreign `Origin` gets 403, and nothing changes; curl-style
/// requests (no body, no type) and same-origin requests keep working.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn cross_site_requests_are_refused(pool: PgPool) {
    let app = TestApp::spawn_with(pool, quick()).await;

    // A "simple" cross-site form post: text/plain, no preflight.
    let response = app
        .client
        .post(app.url("/stock/1/reset"))
        .header("content-type", "text/plain")
        .header("origin", "http://evil.example")
        .body(r#"{"stock": 0}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = app
        .client
        .post(app.url("/stock/1/reset"))
        .header("content-type", "text/plain")
        .body(r#"{"stock": 0}"#)
        .send()
        .await
        .unwrap();
    let body = json_of(response, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    assert_eq!(
        body,
        json!({ "error": "mutating requests take application/json bodies only" })
    );
    // A body without any type is refused too.
    let response = app
        .client
        .post(app.url("/orders"))
        .body(r#"{"product_id": 1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // JSON with a foreign Origin.
    for path in ["/stock/1/reset", "/orders", "/purchase/with-lock/1"] {
        let response = app
            .client
            .post(app.url(path))
            .header("origin", "http://evil.example")
            .json(&json!({ "stock": 0, "product_id": 1 }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
    }
    assert_eq!(app.stock(1).await, 10, "nothing was reset or sold");
    assert_eq!(app.queue("inspector").await.depth().await.unwrap(), 0);

    // curl -X POST (no body, no type) and the page's own origin still work.
    let response = app
        .client
        .post(app.url("/purchase/with-lock/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = app
        .client
        .post(app.url("/stock/1/reset"))
        .header("origin", format!("http://{}", app.addr))
        .json(&json!({ "stock": 7 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(app.stock(1).await, 7);
}

/// Without a token, a DNS-rebinding page (a foreign `Host`) cannot read the API; the loopback
/// names with the bound port can. With a token, any `Host` is served.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn foreign_hosts_are_refused_without_a_token(pool: PgPool) {
    let app = TestApp::spawn_with(pool.clone(), quick()).await;
    let port = app.addr.port();
    let host = |value: String| {
        let request = app.client.get(app.url("/stock/1")).header("host", value);
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(
        host(format!("rebind.evil.example:{port}")).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        host(format!("localhost:{}", port.wrapping_add(1))).await,
        StatusCode::FORBIDDEN
    );
    for name in ["localhost", "127.0.0.1", "[::1]"] {
        assert_eq!(
            host(format!("{name}:{port}")).await,
            StatusCode::OK,
            "{name}"
        );
    }
    let guarded = TestApp::spawn_with(
        pool,
        Settings {
            token: Some("tok".to_owned()),
            ..quick()
        },
    )
    .await;
    let response = guarded
        .client
        .get(guarded.url("/stock/1"))
        .header("host", "api.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// `BEARER x` is as good as `Bearer x`.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn the_authorization_scheme_is_case_insensitive(pool: PgPool) {
    let app = TestApp::spawn_with(
        pool,
        Settings {
            token: Some("tok".to_owned()),
            ..quick()
        },
    )
    .await;
    for scheme in ["BEARER", "bearer", "Bearer"] {
        let response = app
            .client
            .post(app.url("/stock/1/reset"))
            .header("authorization", format!("{scheme} tok"))
            .json(&json!({ "stock": 3 }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{scheme}");
    }
}

/// With `token_for_reads`, reads need the token; the page and the probes do not.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn reads_can_require_the_token(pool: PgPool) {
    let app = TestApp::spawn_with(
        pool,
        Settings {
            token: Some("tok".to_owned()),
            token_for_reads: true,
            ..quick()
        },
    )
    .await;
    for path in ["/locks", "/queue", "/orders", "/products", "/metrics"] {
        assert_eq!(
            app.get(path).await.status(),
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        let response = app
            .client
            .get(app.url(path))
            .bearer_auth("tok")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    for path in ["/", "/healthz", "/readyz"] {
        assert_eq!(app.get(path).await.status(), StatusCode::OK, "{path}");
    }
}

/// The unsafe route exists only with `--enable-unsafe-demo`.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn the_unsafe_route_needs_the_flag(pool: PgPool) {
    let app = TestApp::spawn_with(
        pool,
        Settings {
            unsafe_demo: false,
            ..quick()
        },
    )
    .await;
    let response = app.post("/purchase/without-lock/1", json!({})).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.stock(1).await, 10);
}

/// Connections that never finish their headers are closed after the header-read timeout, more
/// of them than the connection cap wait in the backlog, and `/healthz` answers throughout.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn slow_clients_cannot_starve_the_server(pool: PgPool) {
    let app = TestApp::spawn_with(
        pool,
        Settings {
            header_read_timeout: Duration::from_millis(500),
            max_connections: 8,
            ..quick()
        },
    )
    .await;
    let mut idle = Vec::new();
    for _ in 0..40 {
        let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .await
            .unwrap();
        idle.push(stream);
    }
    let health = tokio::time::timeout(Duration::from_secs(20), app.get("/healthz"))
        .await
        .expect("/healthz answers while slow clients hold connections");
    assert_eq!(health.status(), StatusCode::OK);
    // The first slow client was cut off (EOF or reset), not left open for ever.
    let mut buffer = [0_u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(5), idle[0].read(&mut buffer))
        .await
        .expect("the server closes a connection that never finishes its headers");
    assert!(
        matches!(read, Ok(0) | Err(_)) || buffer.starts_with(b"HTTP/1.1 408"),
        "{read:?}"
    );
}

/// Beyond the cap on requests in flight, requests get 503 at once; the probes still answer.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn the_in_flight_cap_spares_the_probes(pool: PgPool) {
    let app = TestApp::spawn_with(
        pool,
        Settings {
            work: Duration::from_secs(3),
            max_in_flight: 1,
            ..Settings::default()
        },
    )
    .await;
    let slow = {
        let request = app.client.post(app.url("/purchase/with-lock/1")).send();
        tokio::spawn(request)
    };
    wait_for(
        "a read refused for load",
        Duration::from_secs(3),
        || async { app.get("/products").await.status() == StatusCode::SERVICE_UNAVAILABLE },
    )
    .await;
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    assert_eq!(app.get("/readyz").await.status(), StatusCode::OK);
    assert_eq!(slow.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(app.get("/products").await.status(), StatusCode::OK);
}

/// `/readyz` reports Postgres up while other requests hold every connection of the API's pool.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn readiness_is_not_starved_by_a_full_pool(pool: PgPool) {
    let small = PgPoolOptions::new()
        .max_connections(2)
        .connect_with((*pool.connect_options()).clone())
        .await
        .unwrap();
    let held = [
        small.acquire().await.unwrap(),
        small.acquire().await.unwrap(),
    ];
    let app = TestApp::spawn_with(small, quick()).await;
    let body = app.get_json("/readyz", StatusCode::OK).await;
    assert_eq!(body["postgres"], "ok");
    drop(held);
}

/// `/metrics` counts the orders once per TTL, not on every scrape.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn order_counts_are_not_recounted_per_scrape(pool: PgPool) {
    let app = TestApp::spawn_with(
        pool.clone(),
        Settings {
            order_counts_ttl: Duration::from_secs(2),
            ..quick()
        },
    )
    .await;
    let fulfilled = || async {
        let text = app.get("/metrics").await.text().await.unwrap();
        sample(
            &parse_prometheus(&text),
            "lockstock_orders",
            &[("status", "fulfilled"), ("reason", "")],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(fulfilled().await, 0.0);
    sqlx::query(
        "INSERT INTO orders (id, product_id, quantity, status) VALUES (gen_random_uuid(), 1, 1, 'fulfilled')",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(fulfilled().await, 0.0, "the cached count is reused");
    wait_for(
        "the count refreshes after its TTL",
        Duration::from_secs(10),
        || async { fulfilled().await == 1.0 },
    )
    .await;
}

/// `GET /orders` (newest decisions first) reads an index, never sorts the whole table.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn recent_orders_read_an_index(pool: PgPool) {
    sqlx::query(
        "INSERT INTO orders (id, product_id, quantity, status, decided_at)
         SELECT gen_random_uuid(), 1, 1, 'fulfilled', now() - make_interval(secs => n)
           FROM generate_series(1, 20000) AS n",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE orders").execute(&pool).await.unwrap();
    let plan: Vec<(String,)> = sqlx::query_as(
        "EXPLAIN SELECT id, product_id, quantity, status, reason, fence, worker, attempts,
                        created_at, decided_at
                   FROM orders ORDER BY decided_at DESC, id LIMIT 20",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let plan: Vec<String> = plan.into_iter().map(|(line,)| line).collect();
    let plan = plan.join("\n");
    assert!(plan.contains("Index Scan"), "{plan}");
    assert!(!plan.contains("Sort"), "{plan}");
}
