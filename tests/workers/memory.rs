//! Bounded memory with real worker processes: the bytes a worker reserves stay under its budget
//! however large the messages, and reconciling a very long processing list reads a bounded
//! window per pass while its orphans are still adopted.

use std::time::{Duration, Instant};

use lockstock::{order::PurchaseOrder, queue::QueueKeys};
use sqlx::PgPool;

use crate::{
    helpers::{Env, order, wait_for},
    redis_server::free_port,
};

/// An order for `product` as JSON with an unknown field padding it to about `bytes`.
fn padded(product: i32, bytes: usize) -> Vec<u8> {
    let order: PurchaseOrder = order(product, 1);
    format!(
        r#"{{"id":"{}","product_id":{product},"quantity":1,"note":"{}"}}"#,
        order.id,
        "x".repeat(bytes)
    )
    .into_bytes()
}

/// The resident set of a process, in bytes (Linux `/proc`).
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// A gauge's value from a worker's `/metrics`.
async fn gauge(port: u16, name: &str) -> Option<u64> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// 400 orders of 60 KB (24 MB) wait while the worker is busy: with a count prefetch of 4,000 it
/// would reserve them all, but its 2 MB byte budget stops it at about 33 (plus one pull's
/// estimate); the reserved-bytes gauge, the processing list and the process's RSS agree.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn a_worker_reserves_no_more_bytes_than_its_budget(pool: PgPool) {
    const SIZE: usize = 60_000;
    const BUDGET: u64 = 2_000_000;
    let env = Env::new(pool).await;
    env.products(8, 1_000).await;
    let port = free_port();
    let metrics = format!("127.0.0.1:{port}");
    let budget = BUDGET.to_string();
    let worker = env.worker(
        "bytes",
        &[
            "--concurrency",
            "1",
            "--work-ms",
            "60000",
            "--prefetch",
            "4000",
            "--batch-limit",
            "4000",
            "--max-reserved-bytes",
            &budget,
            "--metrics-addr",
            &metrics,
        ],
    );
    wait_for("the worker's metrics", Duration::from_secs(20), || async {
        gauge(port, "lockstock_worker_reserved_bytes").await == Some(0)
    })
    .await;
    let before = rss(worker.pid());
    let payloads: Vec<Vec<u8>> = (0..400).map(|i| padded(i % 8 + 1, SIZE)).collect();
    env.push_raw(&payloads).await;
    wait_for("the budget to fill", Duration::from_secs(20), || async {
        gauge(port, "lockstock_worker_reserved_bytes")
            .await
            .is_some_and(|bytes| bytes + SIZE as u64 >= BUDGET)
    })
    .await;
    // Watch for a while: the puller must not go on reserving.
    let bound = BUDGET + 2 * SIZE as u64;
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(2) {
        let reserved = gauge(port, "lockstock_worker_reserved_bytes")
            .await
            .unwrap();
        assert!(reserved <= bound, "{reserved} bytes reserved");
        let listed = env.processing_total().await as u64;
        assert!(listed * SIZE as u64 <= bound, "{listed} messages reserved");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(env.llen(&env.pending_key()).await >= 360);
    let grown = rss(worker.pid()).saturating_sub(before);
    eprintln!("RSS grew by {grown} bytes with a {BUDGET}-byte budget");
    // Every message reserved, held twice (the old in-flight copy) would be 48 MB.
    assert!(grown < 16 << 20, "RSS grew by {grown} bytes");
}

/// A processing list of 100,000 messages (a crashed worker's, taken over by reusing its id):
/// each reconciliation pass reads at most the window (1,024 messages) from its tail, not the
/// whole list, and the orphans are adopted and decided all the same (the first 1,000 here, to
/// keep the test light beside the others).
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn reconciling_a_long_processing_list_reads_a_bounded_window(pool: PgPool) {
    const COUNT: usize = 100_000;
    const SIZE: usize = 200;
    let env = Env::new(pool).await;
    env.products(10, 1_000_000).await;
    let worker_id = format!("{}-big", env.prefix);
    let processing = QueueKeys::new(env.pending_key(), env.dead_key()).processing(&worker_id);
    let mut conn = env.raw().await;
    for chunk in (0..COUNT).collect::<Vec<_>>().chunks(5_000) {
        let mut lpush = redis::cmd("LPUSH");
        lpush.arg(&processing);
        for i in chunk {
            lpush.arg(padded((i % 10) as i32 + 1, SIZE));
        }
        let _: usize = lpush.query_async(&mut conn).await.unwrap();
    }
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut conn)
        .await
        .unwrap();

    let _worker = env.worker("big", &[]);
    env.wait_decided(1_000, Duration::from_secs(90)).await;

    let info: String = redis::cmd("INFO")
        .arg("all")
        .query_async(&mut conn)
        .await
        .unwrap();
    let stat = |key: &str| -> u64 {
        info.lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{key} missing from INFO"))
    };
    let passes = stat("cmdstat_lrange:calls=");
    let sent = stat("total_net_output_bytes:");
    let per_pass = sent / passes.max(1);
    let window = 1_024 * (SIZE as u64 + 100);
    eprintln!("{passes} passes sent {sent} bytes, {per_pass} per pass");
    assert!(passes >= 2, "{passes} passes");
    assert!(
        per_pass <= window,
        "{per_pass} bytes sent per pass ({sent} in {passes}); the window is {window}"
    );
    // Acknowledging follows the commit: the last batch may still be on its way out.
    wait_for(
        "the decided orders to leave the list",
        Duration::from_secs(10),
        || async { env.llen(&processing).await <= COUNT - 1_000 },
    )
    .await;
}
