//! `Idempotency-Key` (issue 12, hole 8): one key, one order, one answer; and a purchase whose
//! commit reply is lost answers from the stored outcome instead of 5xx.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::{
    PgPool,
    postgres::{PgPoolOptions, PgSslMode},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::helpers::{Settings, TestApp, json_of};

fn quick() -> Settings {
    Settings {
        work: std::time::Duration::ZERO,
        ..Settings::default()
    }
}

async fn post_keyed(app: &TestApp, path: &str, key: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Retrying a purchase with the same key after it succeeded returns the same answer and sells
/// once; another request under that key is refused.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn a_repeated_key_gets_the_same_purchase_answer(pool: PgPool) {
    let app = TestApp::spawn_with(pool, quick()).await;
    let first = post_keyed(
        &app,
        "/purchase/with-lock/1",
        "k-1",
        json!({ "quantity": 2 }),
    )
    .await;
    assert_eq!(first.status(), StatusCode::OK);
    let first = first.text().await.unwrap();
    for _ in 0..3 {
        let again = post_keyed(
            &app,
            "/purchase/with-lock/1",
            "k-1",
            json!({ "quantity": 2 }),
        )
        .await;
        assert_eq!(again.status(), StatusCode::OK);
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        assert_eq!(
            again.text().await.unwrap(),
            first,
            "the same answer, byte for byte"
        );
    }
    assert_eq!(app.stock(1).await, 8, "sold once");
    let other = post_keyed(
        &app,
        "/purchase/with-lock/1",
        "k-1",
        json!({ "quantity": 3 }),
    )
    .await;
    assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.stock(1).await, 8);
    // Out of stock is a decided answer too.
    app.reset_stock(2, 0).await;
    let refused = post_keyed(&app, "/purchase/with-lock/2", "k-2", json!({})).await;
    let refused = json_of(refused, StatusCode::BAD_REQUEST).await;
    app.reset_stock(2, 5).await;
    let again = post_keyed(&app, "/purchase/with-lock/2", "k-2", json!({})).await;
    assert_eq!(json_of(again, StatusCode::BAD_REQUEST).await, refused);
    assert_eq!(app.stock(2).await, 5);
    let bad = post_keyed(&app, "/purchase/with-lock/1", "", json!({})).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

/// `POST /orders` with a repeated key enqueues once and answers with the same order id.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn a_repeated_key_enqueues_one_order(pool: PgPool) {
    let app = TestApp::spawn_with(pool, quick()).await;
    let body = json!({ "product_id": 1, "quantity": 1 });
    let first = post_keyed(&app, "/orders", "order-key", body.clone()).await;
    let location = first.headers()["location"].clone();
    let first = json_of(first, StatusCode::ACCEPTED).await;
    let again = post_keyed(&app, "/orders", "order-key", body).await;
    assert_eq!(again.headers()["location"], location);
    assert_eq!(json_of(again, StatusCode::ACCEPTED).await, first);
    assert_eq!(app.queue("inspector").await.depth().await.unwrap(), 1);
}

/// A TCP proxy in front of Postgres that, once armed, lets the statement that records an order
/// run and commit but swallows its reply and cuts the connection: a lost reply to a commit.
struct LossyProxy {
    addr: SocketAddr,
    armed: Arc<AtomicBool>,
}

impl LossyProxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let armed = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&armed);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = TcpStream::connect(upstream).await.unwrap();
                tokio::spawn(relay(client, server, Arc::clone(&flag)));
            }
        });
        Self { addr, armed }
    }
}

/// Relays one connection; when armed and the client sends the order-recording statement, the
/// server's messages up to the next `ReadyForQuery` (the statement has then committed) are
/// dropped and both sides closed.
async fn relay(client: TcpStream, server: TcpStream, armed: Arc<AtomicBool>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let cutting = Arc::new(AtomicBool::new(false));
    let upstream = {
        let cutting = Arc::clone(&cutting);
        tokio::spawn(async move {
            let mut buffer = vec![0_u8; 64 * 1024];
            loop {
                let n = match client_read.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let chunk = &buffer[..n];
                if chunk.windows(18).any(|w| w == b"INSERT INTO orders")
                    && armed.swap(false, Ordering::SeqCst)
                {
                    cutting.store(true, Ordering::SeqCst);
                }
                if server_write.write_all(chunk).await.is_err() {
                    return;
                }
            }
        })
    };
    // Server to client, message by message (type byte, 4-byte length including itself).
    let mut pending: Vec<u8> = Vec::new();
    let mut buffer = vec![0_u8; 64 * 1024];
    let mut seen_result = false;
    loop {
        let n = match server_read.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buffer[..n]);
        let mut forward = Vec::new();
        while pending.len() >= 5 {
            let length = u32::from_be_bytes(pending[1..5].try_into().unwrap()) as usize + 1;
            if pending.len() < length {
                break;
            }
            let message: Vec<u8> = pending.drain(..length).collect();
            if cutting.load(Ordering::SeqCst) {
                seen_result |= message[0] == b'C';
                if seen_result && message[0] == b'Z' {
                    // Committed; the client never hears of it.
                    upstream.abort();
                    return;
                }
                if seen_result {
                    continue;
                }
            }
            forward.extend_from_slice(&message);
        }
        if client_write.write_all(&forward).await.is_err() {
            break;
        }
    }
    upstream.abort();
}

/// The reply to the sale's commit is lost: the API answers from the stored outcome (200 with
/// the order id) instead of 5xx, and a retry with the same key gets the same order and sells
/// nothing more.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn a_lost_commit_reply_is_answered_from_the_stored_outcome(pool: PgPool) {
    let options = (*pool.connect_options()).clone();
    let upstream: SocketAddr =
        tokio::net::lookup_host(format!("{}:{}", options.get_host(), options.get_port()))
            .await
            .unwrap()
            .next()
            .unwrap();
    let proxy = LossyProxy::start(upstream).await;
    let through_proxy = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(
            options
                .host("127.0.0.1")
                .port(proxy.addr.port())
                .ssl_mode(PgSslMode::Disable),
        )
        .await
        .unwrap();
    let app = TestApp::spawn_with(through_proxy, quick()).await;

    proxy.armed.store(true, Ordering::SeqCst);
    let response = post_keyed(&app, "/purchase/with-lock/1", "lost-reply", json!({})).await;
    assert!(
        !proxy.armed.load(Ordering::SeqCst),
        "the fault was injected"
    );
    let first = json_of(response, StatusCode::OK).await;
    assert_eq!(first["remaining_stock"], 9);
    let order_id = first["order_id"].as_str().unwrap().to_owned();
    let stored = app
        .get_json(&format!("/orders/{order_id}"), StatusCode::OK)
        .await;
    assert_eq!(stored["status"], "fulfilled");

    let again = post_keyed(&app, "/purchase/with-lock/1", "lost-reply", json!({})).await;
    let again = json_of(again, StatusCode::OK).await;
    assert_eq!(again, first);
    assert_eq!(app.stock(1).await, 9, "sold once");
}
