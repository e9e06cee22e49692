//! Fencing tokens: strictly increasing across releases, expiries and hand-offs; a floor.

use std::time::Duration;

use lockstock_lock::{Heartbeat, LockOptions};

use crate::helpers::{TestRedis, wait_for};

/// Invariant: each acquisition's token is above every earlier one, whether the lock was
/// released, expired, or handed over to a waiter.
#[tokio::test]
async fn fences_increase_across_release_expiry_and_handoff() {
    let redis = TestRedis::new();
    let (a, b) = (redis.client("a").await, redis.client("b").await);
    let mut seen = Vec::new();

    let g = a
        .try_acquire("r", &LockOptions::default())
        .await
        .unwrap()
        .unwrap();
    seen.push(g.fence().get());
    g.release().await.unwrap();

    let g = a
        .try_acquire(
            "r",
            &LockOptions::with_ttl(Duration::from_millis(50)).heartbeat(Heartbeat::Off),
        )
        .await
        .unwrap()
        .unwrap();
    seen.push(g.fence().get());
    wait_for("expiry", Duration::from_secs(2), || async {
        !a.is_locked("r").await.unwrap()
    })
    .await;
    drop(g);

    let g = a
        .try_acquire("r", &LockOptions::default())
        .await
        .unwrap()
        .unwrap();
    seen.push(g.fence().get());
    let waiter = tokio::spawn(async move {
        b.acquire("r", &LockOptions::default(), Duration::from_secs(5))
            .await
    });
    let raw = redis.raw().await;
    let queue = redis.queue_key("r");
    wait_for("b to queue", Duration::from_secs(2), || async {
        crate::helpers::llen(&raw, &queue).await == 1
    })
    .await;
    g.release().await.unwrap();
    let handed = waiter.await.unwrap().unwrap();
    seen.push(handed.fence().get());
    handed.release().await.unwrap();

    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "fences not strictly increasing: {seen:?}"
    );
}

/// After Redis lost the counter, `raise_fence_floor` lifts it so the next token passes the
/// resource's high-water mark; it never lowers the counter.
#[tokio::test]
async fn raise_fence_floor_lifts_but_never_lowers_the_counter() {
    let redis = TestRedis::new();
    let client = redis.client("a").await;
    assert_eq!(client.raise_fence_floor("r", 500).await.unwrap().get(), 500);
    assert_eq!(client.raise_fence_floor("r", 100).await.unwrap().get(), 500);
    let g = client
        .try_acquire("r", &LockOptions::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(g.fence().get(), 501);
    g.release().await.unwrap();
}
