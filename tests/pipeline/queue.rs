//! The job queue against a throwaway redis-server per test.

use std::time::{Duration, Instant};

use lockstock::queue::QueueError;
use redis::aio::ConnectionManager;

use crate::helpers::{TestRedis, wait_for};

fn payloads(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("message-{i}").into_bytes())
        .collect()
}

async fn reserve_all(queue: &lockstock::queue::JobQueue) -> Vec<Vec<u8>> {
    let mut taken = Vec::new();
    while let Some(item) = queue.reserve(Duration::ZERO).await.unwrap() {
        taken.push(item);
    }
    taken
}

async fn list(conn: &mut ConnectionManager, key: &str) -> Vec<Vec<u8>> {
    redis::cmd("LRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query_async(conn)
        .await
        .unwrap()
}

async fn blocked_clients(conn: &mut ConnectionManager) -> usize {
    let info: String = redis::cmd("INFO")
        .arg("clients")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("blocked_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

/// Messages are reserved in the order they were pushed, across batches larger than one `LPUSH`
/// chunk and single pushes, and a blocking reserve takes them in the same order.
#[tokio::test]
async fn messages_are_reserved_in_the_order_they_were_pushed() {
    let redis = TestRedis::start();
    let queue = redis.queue("w1").await;
    let sent = payloads(250);
    assert_eq!(queue.push_batch(&sent[..230]).await.unwrap(), 230);
    for item in &sent[230..] {
        queue.push(item).await.unwrap();
    }
    assert_eq!(queue.depth().await.unwrap(), 250);

    let mut taken = Vec::new();
    for _ in 0..10 {
        taken.push(
            queue
                .reserve(Duration::from_secs(1))
                .await
                .unwrap()
                .unwrap(),
        );
    }
    taken.extend(reserve_all(&queue).await);
    assert_eq!(taken, sent);
    assert_eq!(
        queue.processing_items().await.unwrap(),
        sent,
        "processing list, oldest first"
    );
}

/// A reserved message sits in the worker's own processing list until acknowledged, and a second
/// acknowledgement finds nothing.
#[tokio::test]
async fn a_reserved_message_stays_in_processing_until_acknowledged() {
    let redis = TestRedis::start();
    let queue = redis.queue("w1").await;
    queue.push(b"job").await.unwrap();

    let job = queue
        .reserve(Duration::from_secs(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job, b"job");
    assert_eq!(queue.depth().await.unwrap(), 0);
    assert_eq!(
        queue.processing_items().await.unwrap(),
        vec![b"job".to_vec()]
    );

    assert!(queue.ack(&job).await.unwrap());
    assert!(queue.processing_items().await.unwrap().is_empty());
    assert!(
        !queue.ack(&job).await.unwrap(),
        "nothing left to acknowledge"
    );
    assert_eq!(queue.reserve(Duration::ZERO).await.unwrap(), None);
}

/// Dead-lettering moves the message out of processing and records payload, reason, worker and
/// time in one step; a message no longer in processing is not dead-lettered twice.
#[tokio::test]
async fn dead_lettering_moves_the_message_and_records_why() {
    let redis = TestRedis::start();
    let queue = redis.queue("w1").await;
    queue.push(b"{not json").await.unwrap();
    let job = queue
        .reserve(Duration::from_secs(1))
        .await
        .unwrap()
        .unwrap();

    let before = chrono::Utc::now().timestamp_millis();
    assert!(queue.dead_letter(&job, "not_json").await.unwrap());
    assert!(queue.processing_items().await.unwrap().is_empty());
    let dead = queue.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (
            dead[0].payload.as_str(),
            dead[0].reason.as_str(),
            dead[0].worker.as_str()
        ),
        ("{not json", "not_json", "w1")
    );
    assert!(dead[0].at >= before);

    // The stored entry is the documented JSON object.
    let mut raw = redis.raw().await;
    let stored = list(&mut raw, queue.keys().dead()).await;
    let entry: serde_json::Value = serde_json::from_slice(&stored[0]).unwrap();
    assert_eq!(entry["payload"], "{not json");
    assert_eq!(entry["reason"], "not_json");

    assert!(!queue.dead_letter(&job, "not_json").await.unwrap());
    assert_eq!(queue.dead_depth().await.unwrap(), 1);
}

/// Requeue moves a message from processing to the back of the queue: everything already waiting
/// goes first.
#[tokio::test]
async fn requeue_puts_the_message_at_the_back_of_the_queue() {
    let redis = TestRedis::start();
    let queue = redis.queue("w1").await;
    queue
        .push_batch(&[b"a".to_vec(), b"b".to_vec()])
        .await
        .unwrap();
    let a = queue
        .reserve(Duration::from_secs(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a, b"a");

    assert!(queue.requeue(&a).await.unwrap());
    assert!(queue.processing_items().await.unwrap().is_empty());
    assert!(!queue.requeue(&a).await.unwrap(), "no longer in processing");
    assert_eq!(
        reserve_all(&queue).await,
        vec![b"b".to_vec(), b"a".to_vec()]
    );
}

/// When a worker's liveness key expires, a live worker moves its whole processing list back to the
/// front of the queue (oldest first, before messages pushed later) and unregisters it; while the
/// worker is alive, nothing is touched.
#[tokio::test]
async fn a_dead_workers_processing_list_is_recovered_by_a_live_worker() {
    let redis = TestRedis::start();
    let doomed = redis.queue("doomed").await;
    let survivor = redis.queue("survivor").await;
    doomed
        .heartbeat_liveness(Duration::from_millis(300))
        .await
        .unwrap();
    survivor
        .heartbeat_liveness(Duration::from_secs(30))
        .await
        .unwrap();
    doomed.push_batch(&payloads(3)).await.unwrap();
    for _ in 0..3 {
        doomed
            .reserve(Duration::from_secs(1))
            .await
            .unwrap()
            .unwrap();
    }
    doomed.push(b"later").await.unwrap();

    assert_eq!(
        survivor.recover_dead_workers().await.unwrap(),
        0,
        "the doomed worker is still alive"
    );
    assert_eq!(doomed.processing_items().await.unwrap().len(), 3);
    let stats = survivor.stats().await.unwrap();
    assert_eq!(
        (
            stats.pending,
            stats.processing,
            stats.workers,
            stats.live_workers
        ),
        (1, 3, 2, 2)
    );

    // The doomed worker stops heartbeating (as if killed); wait for its liveness to expire.
    let mut raw = redis.raw().await;
    let alive_key = doomed.keys().alive("doomed");
    wait_for(
        "the doomed worker's liveness key to expire",
        Duration::from_secs(5),
        || {
            let mut raw = raw.clone();
            let key = alive_key.clone();
            async move {
                !redis::cmd("EXISTS")
                    .arg(key)
                    .query_async::<bool>(&mut raw)
                    .await
                    .unwrap()
            }
        },
    )
    .await;

    assert_eq!(survivor.recover_dead_workers().await.unwrap(), 3);
    assert!(doomed.processing_items().await.unwrap().is_empty());
    let mut expected = payloads(3);
    expected.push(b"later".to_vec());
    assert_eq!(reserve_all(&survivor).await, expected);
    let workers: Vec<String> = redis::cmd("SMEMBERS")
        .arg(survivor.keys().workers())
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(workers, vec!["survivor".to_owned()]);
}

/// A processing list whose worker never registered (or was unregistered) is still recovered once
/// no liveness key protects it.
#[tokio::test]
async fn an_unregistered_workers_processing_list_is_recovered_too() {
    let redis = TestRedis::start();
    let ghost = redis.queue("ghost").await;
    let survivor = redis.queue("survivor").await;
    ghost.push(b"orphan").await.unwrap();
    ghost
        .reserve(Duration::from_secs(1))
        .await
        .unwrap()
        .unwrap();

    assert_eq!(survivor.recover_dead_workers().await.unwrap(), 1);
    assert_eq!(reserve_all(&survivor).await, vec![b"orphan".to_vec()]);
}

/// Deregistering on a clean shutdown deletes the liveness key, leaves the registry and returns
/// anything still in processing to the queue.
#[tokio::test]
async fn deregister_returns_leftovers_and_unregisters() {
    let redis = TestRedis::start();
    let queue = redis.queue("w1").await;
    queue
        .heartbeat_liveness(Duration::from_secs(30))
        .await
        .unwrap();
    queue.push_batch(&payloads(2)).await.unwrap();
    queue
        .reserve(Duration::from_secs(1))
        .await
        .unwrap()
        .unwrap();

    assert_eq!(queue.deregister().await.unwrap(), 1);
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.pending, stats.processing, stats.workers), (2, 0, 0));
    let mut raw = redis.raw().await;
    let alive: bool = redis::cmd("EXISTS")
        .arg(queue.keys().alive("w1"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(!alive);
    assert_eq!(
        reserve_all(&queue).await,
        payloads(2),
        "the leftover goes first"
    );
}

/// A reserve that blocks longer than redis-rs's default 500 ms response timeout still returns the
/// message pushed later (the blocking connection has no response timeout), and while it blocks
/// the shared connection keeps serving other commands.
#[tokio::test]
async fn a_reserve_blocking_past_500ms_returns_a_message_pushed_later() {
    let redis = TestRedis::start();
    let consumer = redis.queue("w1").await;
    let producer = redis.queue("producer").await;
    let started = Instant::now();
    let reserve = tokio::spawn({
        let consumer = consumer.clone();
        async move { consumer.reserve(Duration::from_secs(10)).await }
    });

    let mut raw = redis.raw().await;
    wait_for(
        "the reserve to block on the server",
        Duration::from_secs(5),
        || {
            let mut raw = raw.clone();
            async move { blocked_clients(&mut raw).await == 1 }
        },
    )
    .await;
    // Not synchronisation: holding the block past 500 ms is the behaviour under test. Meanwhile
    // the consumer's shared connection answers (a stall would last the whole 10 s block; the
    // bound is loose so a loaded machine does not flake).
    while started.elapsed() < Duration::from_millis(900) {
        let asked = Instant::now();
        consumer.depth().await.unwrap();
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "shared connection stalled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!reserve.is_finished(), "still blocked after 900 ms");
    assert_eq!(blocked_clients(&mut raw).await, 1);

    producer.push(b"late").await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), reserve)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got, Some(b"late".to_vec()));
    assert!(started.elapsed() > Duration::from_millis(500));
}

/// Dropping a reserve while it blocks drops its connection, so the server stops blocking for it
/// and a message pushed afterwards stays pending instead of vanishing into processing.
#[tokio::test]
async fn an_abandoned_reserve_does_not_swallow_a_later_message() {
    let redis = TestRedis::start();
    let consumer = redis.queue("w1").await;
    let reserve = tokio::spawn({
        let consumer = consumer.clone();
        async move { consumer.reserve(Duration::from_secs(30)).await }
    });
    let raw = redis.raw().await;
    wait_for("the reserve to block", Duration::from_secs(5), || {
        let mut raw = raw.clone();
        async move { blocked_clients(&mut raw).await == 1 }
    })
    .await;

    reserve.abort();
    wait_for(
        "the server to stop blocking",
        Duration::from_secs(5),
        || {
            let mut raw = raw.clone();
            async move { blocked_clients(&mut raw).await == 0 }
        },
    )
    .await;
    consumer.push(b"kept").await.unwrap();
    assert_eq!(consumer.depth().await.unwrap(), 1);
    assert!(consumer.processing_items().await.unwrap().is_empty());
    assert_eq!(
        consumer.reserve(Duration::from_secs(1)).await.unwrap(),
        Some(b"kept".to_vec())
    );
}

/// A reserve whose timeout passes with nothing pending returns `None` (the server's timeout, not a
/// client-side cut-off), and a zero timeout does not block at all.
#[tokio::test]
async fn a_reserve_on_an_empty_queue_returns_none_after_its_timeout() {
    let redis = TestRedis::start();
    let queue = redis.queue("w1").await;
    let started = Instant::now();
    assert_eq!(
        queue.reserve(Duration::from_millis(700)).await.unwrap(),
        None
    );
    assert!(started.elapsed() >= Duration::from_millis(650));
    let started = Instant::now();
    assert_eq!(queue.reserve(Duration::ZERO).await.unwrap(), None);
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// After Redis restarts, reserve reports the broken connection, then reconnects by itself and
/// serves new messages.
#[tokio::test]
async fn reserve_reconnects_after_redis_restarts() {
    let mut redis = TestRedis::start();
    let queue = redis.queue("w1").await;
    queue.push(b"before").await.unwrap();
    assert_eq!(
        queue.reserve(Duration::from_secs(1)).await.unwrap(),
        Some(b"before".to_vec())
    );

    redis.server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pushed = queue.push(b"after").await;
        if pushed.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "push never recovered: {pushed:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut errors = 0;
    let got = loop {
        match queue.reserve(Duration::from_secs(1)).await {
            Ok(item) => break item,
            Err(QueueError::Redis(_)) if errors < 3 => errors += 1,
            Err(e) => panic!("reserve did not recover: {e:?}"),
        }
    };
    assert_eq!(got, Some(b"after".to_vec()));
}

/// Requeueing dead letters puts their original payloads back on the queue, oldest first, and
/// leaves entries it cannot read where they are.
#[tokio::test]
async fn dead_letters_can_be_requeued() {
    let redis = TestRedis::start();
    let queue = redis.queue("w1").await;
    queue.push_batch(&payloads(2)).await.unwrap();
    for _ in 0..2 {
        let job = queue
            .reserve(Duration::from_secs(1))
            .await
            .unwrap()
            .unwrap();
        assert!(queue.dead_letter(&job, "malformed").await.unwrap());
    }
    let mut raw = redis.raw().await;
    redis::cmd("LPUSH")
        .arg(queue.keys().dead())
        .arg("garbage")
        .query_async::<()>(&mut raw)
        .await
        .unwrap();
    assert_eq!(
        queue.dead_letters(10).await.unwrap()[0].reason,
        "unreadable"
    );

    assert_eq!(queue.requeue_dead_letters().await.unwrap(), 2);
    assert_eq!(reserve_all(&queue).await, payloads(2));
    let left = queue.dead_letters(10).await.unwrap();
    assert_eq!((left.len(), left[0].payload.as_str()), (1, "garbage"));
}
