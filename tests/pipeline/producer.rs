//! The order producer: library and binary, against a throwaway redis-server per test.

use std::{collections::HashSet, process::Stdio, time::Duration};

use lockstock::{
    order::{Quantity, decode},
    producer::{OrderProducer, parse_json_lines},
};
use tokio::{io::AsyncWriteExt, process::Command};

use crate::helpers::{TestRedis, product_id};

/// Runs the real `producer` binary with `args` and `stdin`; returns (exit code, stdout, stderr).
async fn run_producer(redis: &TestRedis, args: &[&str], stdin: &str) -> (i32, String, String) {
    // Redis only: these tests have no database of their own (the intake is tested in
    // tests/workers/intake.rs).
    let mut child = Command::new(env!("CARGO_BIN_EXE_producer"))
        .args(args)
        .arg("--no-intake")
        .env("REDIS_URL", redis.url())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("producer finished within 30 s")
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Generated orders go out in pipelined batches with progress after each, and every message
/// decodes to an order for the product with a distinct id.
#[tokio::test]
async fn generated_orders_are_pushed_in_batches_and_decode() {
    let redis = TestRedis::start();
    let producer = OrderProducer::new(redis.queue("producer").await).with_batch_size(500);
    let mut progress = Vec::new();
    let pushed = producer
        .push_generated(product_id(2), 1234, Quantity::new(3).unwrap(), |n| {
            progress.push(n)
        })
        .await
        .unwrap();
    assert_eq!(pushed, 1234);
    assert_eq!(progress, vec![500, 1000, 1234]);

    let consumer = redis.queue("consumer").await;
    assert_eq!(consumer.depth().await.unwrap(), 1234);
    let mut ids = HashSet::new();
    while let Some(message) = consumer.reserve(Duration::ZERO).await.unwrap() {
        let order = decode(&message).unwrap();
        assert_eq!((order.product_id.get(), order.quantity.get()), (2, 3));
        assert!(ids.insert(order.id), "ids are unique");
    }
    assert_eq!(ids.len(), 1234);
}

/// Orders read from JSON lines are pushed in input order with their own ids.
#[tokio::test]
async fn listed_orders_are_pushed_in_input_order() {
    let redis = TestRedis::start();
    let input = (1..=7)
        .map(|i| format!(r#"{{"product_id":{i},"quantity":{i}}}"#))
        .collect::<Vec<_>>()
        .join("\n");
    let orders = parse_json_lines(input.as_bytes()).unwrap();
    let producer = OrderProducer::new(redis.queue("producer").await).with_batch_size(3);
    assert_eq!(producer.push_orders(&orders, |_| {}).await.unwrap(), 7);

    let consumer = redis.queue("consumer").await;
    let mut received = Vec::new();
    while let Some(message) = consumer.reserve(Duration::ZERO).await.unwrap() {
        received.push(decode(&message).unwrap());
    }
    assert_eq!(received, orders);
}

/// The binary enqueues `--count` orders and says so, naming the queue.
#[tokio::test]
async fn the_binary_enqueues_generated_orders_and_reports_the_count() {
    let redis = TestRedis::start();
    let key = format!("{}:orders:pending", redis.prefix);
    let (code, stdout, stderr) = run_producer(
        &redis,
        &[
            "--queue-key",
            &key,
            "--product",
            "1",
            "--count",
            "25",
            "--quantity",
            "2",
        ],
        "",
    )
    .await;
    assert_eq!(code, 0, "stderr: {stderr}");
    assert_eq!(stdout.trim(), format!("enqueued 25 orders to {key}"));
    let queue = redis.queue("consumer").await;
    assert_eq!(queue.depth().await.unwrap(), 25);
    let first = decode(&queue.reserve(Duration::ZERO).await.unwrap().unwrap()).unwrap();
    assert_eq!((first.product_id.get(), first.quantity.get()), (1, 2));
}

/// The binary reads JSON lines from stdin; a bad line fails the run with its line number and a
/// non-zero exit, and nothing at all is enqueued.
#[tokio::test]
async fn the_binary_reads_stdin_and_refuses_bad_lines_without_enqueueing() {
    let redis = TestRedis::start();
    let key = format!("{}:orders:pending", redis.prefix);
    let good = "{\"product_id\":1,\"quantity\":1}\n{\"product_id\":3,\"quantity\":2,\"id\":\"6f1c1c8e-3b5e-4a55-9a1e-0c7d2b4e8f10\"}\n";
    let (code, stdout, stderr) =
        run_producer(&redis, &["--queue-key", &key, "--file", "-"], good).await;
    assert_eq!(code, 0, "stderr: {stderr}");
    assert_eq!(stdout.trim(), format!("enqueued 2 orders to {key}"));

    let bad = format!("{good}{{\"product_id\":1,\"quantity\":0}}\n");
    let (code, stdout, stderr) =
        run_producer(&redis, &["--queue-key", &key, "--file", "-"], &bad).await;
    assert_ne!(code, 0);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("line 3"), "{stderr}");
    assert!(stderr.contains("quantity"), "{stderr}");
    assert_eq!(
        redis.queue("consumer").await.depth().await.unwrap(),
        2,
        "only the first run's orders"
    );
}

/// Bad flags are refused by the command line itself with a usage error (exit 2), before Redis is
/// touched.
#[tokio::test]
async fn the_binary_refuses_bad_flags() {
    let redis = TestRedis::start();
    for args in [
        &["--product", "1", "--count", "1", "--quantity", "0"][..],
        &["--product", "0", "--count", "1"],
        &["--product", "1"],
        &["--product", "1", "--count", "1", "--file", "-"],
        &["--count", "5"],
        &["--product", "1", "--count", "1", "--bogus"],
        &[],
    ] {
        let (code, _, stderr) = run_producer(&redis, args, "").await;
        assert_eq!(code, 2, "{args:?} -> {stderr}");
    }
    let (code, _, stderr) =
        run_producer(&redis, &["--file", "/nonexistent/orders.jsonl"], "").await;
    assert_eq!(code, 1);
    assert!(stderr.contains("/nonexistent/orders.jsonl"), "{stderr}");
}
