//! Waiting acquisition: prompt hand-off, FIFO order, timeouts, vanished holders, lost messages.

use std::time::{Duration, Instant};

use lockstock_lock::{Heartbeat, LockError, LockOptions, ReleaseOutcome};

use crate::helpers::{TestRedis, held_with_a_queued_waiter, llen, wait_for};

/// A queued waiter gets the lock promptly when the holder releases it (the release hands it over
/// and announces it; no polling). The bound is generous; the real figure is in the benchmark.
#[tokio::test]
async fn a_waiter_acquires_promptly_after_release() {
    let redis = TestRedis::new();
    let (a, b) = (redis.client("a").await, redis.client("b").await);
    let raw = redis.raw().await;
    let queue = redis.queue_key("r");
    let held = a
        .try_acquire("r", &LockOptions::default())
        .await
        .unwrap()
        .unwrap();

    let waiter = tokio::spawn(async move {
        let guard = b
            .acquire("r", &LockOptions::default(), Duration::from_secs(10))
            .await
            .unwrap();
        (Instant::now(), guard)
    });
    wait_for("b to queue", Duration::from_secs(2), || async {
        llen(&raw, &queue).await == 1
    })
    .await;
    let released_at = Instant::now();
    assert_eq!(held.release().await.unwrap(), ReleaseOutcome::HandedOff);
    let (acquired_at, guard) = waiter.await.unwrap();

    let switch = acquired_at.duration_since(released_at);
    assert!(
        switch < Duration::from_millis(50),
        "hand-off took {switch:?}"
    );
    assert_eq!(
        a.inspect("r").await.unwrap().unwrap().owner.unwrap().id,
        "b"
    );
    guard.release().await.unwrap();
}

/// Waiters that found the lock held get it in arrival order.
#[tokio::test]
async fn waiters_are_served_in_fifo_order() {
    let redis = TestRedis::new();
    let holder = redis.client("holder").await;
    let raw = redis.raw().await;
    let queue = redis.queue_key("r");
    let held = holder
        .try_acquire("r", &LockOptions::default())
        .await
        .unwrap()
        .unwrap();

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..6 {
        let client = redis.client(&format!("w{i}")).await;
        let tx = tx.clone();
        tokio::spawn(async move {
            let guard = client
                .acquire("r", &LockOptions::default(), Duration::from_secs(10))
                .await
                .unwrap();
            tx.send(i).unwrap();
            guard.release().await.unwrap();
        });
        wait_for("the waiter to queue", Duration::from_secs(2), || async {
            llen(&raw, &queue).await == i + 1
        })
        .await;
    }
    held.release().await.unwrap();
    let mut order = Vec::new();
    for _ in 0..6 {
        order.push(rx.recv().await.unwrap());
    }
    assert_eq!(order, vec![0, 1, 2, 3, 4, 5]);
}

/// A holder that vanishes (never releases, never extends) stops blocking waiters once its TTL
/// runs out: the waiter's fallback never sleeps past the holder's remaining TTL.
#[tokio::test]
async fn a_waiter_gets_the_lock_no_later_than_the_ttl_after_a_vanished_holder() {
    let redis = TestRedis::new();
    let (a, b) = (redis.client("a").await, redis.client("b").await);
    let ttl = Duration::from_millis(400);
    let vanished = a
        .try_acquire("r", &LockOptions::with_ttl(ttl).heartbeat(Heartbeat::Off))
        .await
        .unwrap()
        .unwrap();
    let acquired_at = Instant::now();
    std::mem::forget(vanished); // never released, never extended: as if the process died

    let guard = b
        .acquire("r", &LockOptions::default(), Duration::from_secs(5))
        .await
        .unwrap();
    let waited = acquired_at.elapsed();
    assert!(
        waited <= ttl + Duration::from_millis(150),
        "waited {waited:?} for a {ttl:?} lock"
    );
    guard.release().await.unwrap();
}

/// A waiter that gives up gets `Timeout` near its deadline and leaves the queue, so no lock is
/// ever handed to it afterwards.
#[tokio::test]
async fn a_timed_out_waiter_reports_timeout_and_leaves_the_queue() {
    let redis = TestRedis::new();
    let (a, b) = (redis.client("a").await, redis.client("b").await);
    let raw = redis.raw().await;
    let held = a
        .try_acquire("r", &LockOptions::default())
        .await
        .unwrap()
        .unwrap();

    let started = Instant::now();
    let error = b
        .acquire("r", &LockOptions::default(), Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(error, LockError::Timeout { .. }), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(llen(&raw, &redis.queue_key("r")).await, 0);
    assert_eq!(held.release().await.unwrap(), ReleaseOutcome::Released);
}

/// A waiting acquire that is cancelled (future dropped) leaves the queue in the background.
#[tokio::test]
async fn a_cancelled_waiter_leaves_the_queue() {
    let redis = TestRedis::new();
    let raw = redis.raw().await;
    let queue = redis.queue_key("r");
    let (held, waiter) = held_with_a_queued_waiter(&redis, "r", Duration::from_secs(30)).await;
    waiter.abort();
    wait_for(
        "the cancelled waiter to leave",
        Duration::from_secs(2),
        || async { llen(&raw, &queue).await == 0 },
    )
    .await;
    assert_eq!(held.release().await.unwrap(), ReleaseOutcome::Released);
}

/// When the hand-off message is lost (the pub/sub connection was killed), the waiter still gets
/// the lock through its fallback retry: re-acquiring with its own token counts as success.
#[tokio::test]
async fn a_lost_handoff_message_is_recovered_by_the_fallback_retry() {
    let redis = TestRedis::new();
    let a = redis.client("observer").await;
    let raw = redis.raw().await;
    let (held, waiter) = held_with_a_queued_waiter(&redis, "r", Duration::from_secs(10)).await;
    let mut conn = raw.clone();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(killed >= 1, "no pub/sub connection to kill");
    assert_eq!(held.release().await.unwrap(), ReleaseOutcome::HandedOff);

    let guard = tokio::time::timeout(Duration::from_secs(3), waiter)
        .await
        .expect("waiter stuck")
        .unwrap()
        .unwrap();
    assert_eq!(
        a.inspect("r").await.unwrap().unwrap().fence,
        guard.fence().get()
    );
    assert_eq!(guard.release().await.unwrap(), ReleaseOutcome::Released);
}
