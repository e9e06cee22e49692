//! Mutual exclusion, ownership checks and release outcomes.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use lockstock_lock::{Heartbeat, LockOptions, ReleaseOutcome};

use crate::helpers::{TestRedis, wait_for};

/// Invariant: 32 tasks over 4 connections doing a deliberately non-atomic read-sleep-write on a
/// shared Redis counter under the lock lose no increment, and the fencing tokens, in acquisition
/// order, strictly increase.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contended_read_modify_write_is_exact_and_fences_increase() {
    let redis = TestRedis::new();
    let mut clients = Vec::new();
    for i in 0..4 {
        clients.push(redis.client(&format!("c{i}")).await);
    }
    let counter = format!("{}:counter", redis.prefix);
    let fences = format!("{}:fences", redis.prefix);
    let tickets = Arc::new(AtomicUsize::new(1_000));

    let mut tasks = Vec::new();
    for task in 0..32 {
        let client = clients[task % clients.len()].clone();
        let (counter, fences, tickets) = (counter.clone(), fences.clone(), tickets.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = client.connection();
            while tickets
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| t.checked_sub(1))
                .is_ok()
            {
                let guard = client
                    .acquire("counter", &LockOptions::default(), Duration::from_secs(30))
                    .await
                    .expect("acquire");
                let value: i64 = redis::cmd("GET")
                    .arg(&counter)
                    .query_async(&mut conn)
                    .await
                    .unwrap_or(0);
                tokio::task::yield_now().await;
                let _: () = redis::cmd("SET")
                    .arg(&counter)
                    .arg(value + 1)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                let _: () = redis::cmd("RPUSH")
                    .arg(&fences)
                    .arg(guard.fence().get())
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                assert_ne!(guard.release().await.unwrap(), ReleaseOutcome::NotHeld);
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }

    let mut conn = redis.raw().await;
    let total: i64 = redis::cmd("GET")
        .arg(&counter)
        .query_async(&mut conn)
        .await
        .unwrap();
    let fences: Vec<u64> = redis::cmd("LRANGE")
        .arg(&fences)
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        total, 1_000,
        "an increment was lost: mutual exclusion failed"
    );
    assert_eq!(fences.len(), 1_000);
    assert!(
        fences.windows(2).all(|w| w[0] < w[1]),
        "fences not strictly increasing: {fences:?}"
    );
}

/// A holder whose lock expired and was taken by another cannot release or extend it, and its
/// release is reported as `NotHeld` while the new holder keeps the lock.
#[tokio::test]
async fn a_stale_holder_cannot_release_or_extend_the_new_holders_lock() {
    let redis = TestRedis::new();
    let (a, b) = (redis.client("a").await, redis.client("b").await);
    let short = LockOptions::with_ttl(Duration::from_millis(150)).heartbeat(Heartbeat::Off);

    let stale = a.try_acquire("res", &short).await.unwrap().expect("free");
    wait_for(
        "the first lock to expire",
        Duration::from_secs(2),
        || async { !b.is_locked("res").await.unwrap() },
    )
    .await;
    let fresh = b
        .try_acquire("res", &LockOptions::default())
        .await
        .unwrap()
        .expect("expired lock is free");

    assert!(
        !stale.extend().await.unwrap(),
        "a stale holder extended someone else's lock"
    );
    assert!(
        stale.is_lost(),
        "a refused extension must fire the lost signal"
    );
    assert_eq!(stale.release().await.unwrap(), ReleaseOutcome::NotHeld);
    let info = b.inspect("res").await.unwrap().expect("still locked by b");
    assert_eq!(info.fence, fresh.fence().get());
    assert_eq!(info.owner.unwrap().id, "b");
    assert_eq!(fresh.release().await.unwrap(), ReleaseOutcome::Released);
}

/// Releasing after the TTL ran out (nobody else took it) is a normal `NotHeld` outcome.
#[tokio::test]
async fn release_after_expiry_is_reported_as_not_held() {
    let redis = TestRedis::new();
    let client = redis.client("a").await;
    let guard = client
        .try_acquire(
            "res",
            &LockOptions::with_ttl(Duration::from_millis(60)).heartbeat(Heartbeat::Off),
        )
        .await
        .unwrap()
        .expect("free");
    wait_for("expiry", Duration::from_secs(2), || async {
        !client.is_locked("res").await.unwrap()
    })
    .await;
    assert_eq!(guard.release().await.unwrap(), ReleaseOutcome::NotHeld);
}

/// `try_acquire` on a held lock answers `None` at once; inspect shows the holder's record.
#[tokio::test]
async fn try_acquire_on_a_held_lock_returns_none_and_inspect_shows_the_owner() {
    let redis = TestRedis::new();
    let (a, b) = (
        redis.client("worker-a").await,
        redis.client("worker-b").await,
    );
    let held = a
        .try_acquire("res", &LockOptions::default())
        .await
        .unwrap()
        .expect("free");
    assert!(
        b.try_acquire("res", &LockOptions::default())
            .await
            .unwrap()
            .is_none()
    );

    let info = b.inspect("res").await.unwrap().expect("locked");
    let owner = info.owner.expect("owner record");
    assert_eq!(owner.id, "worker-a");
    assert_eq!(owner.pid, std::process::id());
    assert_eq!(info.fence, held.fence().get());
    assert!(
        info.ttl_left_ms > 9_000 && info.ttl_left_ms <= 10_000,
        "{}",
        info.ttl_left_ms
    );
    assert!(info.since_unix_ms > 1_600_000_000_000);
    let listed = b.list_held().await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|i| i.resource.as_str())
            .collect::<Vec<_>>(),
        vec!["res"]
    );
    held.release().await.unwrap();
    assert!(b.list_held().await.unwrap().is_empty());
}

/// `with_lock` releases the lock when the closure panics, and the panic reaches the caller.
#[tokio::test]
async fn with_lock_releases_on_panic() {
    let redis = TestRedis::new();
    let client = redis.client("a").await;
    let inner = client.clone();
    let outcome = tokio::spawn(async move {
        inner
            .with_lock(
                "res",
                &LockOptions::default(),
                Duration::from_secs(1),
                |_lease| async { panic!("boom inside the critical section") },
            )
            .await
    })
    .await;
    assert!(outcome.unwrap_err().is_panic());
    assert!(
        !client.is_locked("res").await.unwrap(),
        "lock left behind after a panic"
    );

    let value = client
        .with_lock(
            "res",
            &LockOptions::default(),
            Duration::from_secs(1),
            |lease| async move { lease.fence().get() },
        )
        .await
        .unwrap();
    assert!(value >= 2);
    assert!(!client.is_locked("res").await.unwrap());
}

/// A guard dropped without `release` is released in the background.
#[tokio::test]
async fn a_dropped_guard_is_released_in_the_background() {
    let redis = TestRedis::new();
    let client = redis.client("a").await;
    drop(
        client
            .try_acquire("res", &LockOptions::default())
            .await
            .unwrap()
            .expect("free"),
    );
    wait_for("background release", Duration::from_secs(2), || async {
        !client.is_locked("res").await.unwrap()
    })
    .await;
}
