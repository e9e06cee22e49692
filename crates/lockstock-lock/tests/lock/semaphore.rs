//! Counting semaphore: at most N holders, crashed holders' permits return, prompt hand-off.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use lockstock_lock::{Heartbeat, LockError, LockOptions, ReleaseOutcome, Semaphore};

use crate::helpers::{TestRedis, llen, wait_for};

/// Invariant: never more than N holders. 12 contenders on 4 connections take and give back
/// permits of a 3-permit semaphore; a shared counter of current holders (incremented after the
/// grant, decremented before the release) never exceeds 3, every permit is used at once at some
/// point, and Redis never lists more than 3 holders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_more_than_n_holders_under_contention() {
    let redis = TestRedis::new();
    let mut semaphores = Vec::new();
    for i in 0..4 {
        let client = redis.client(&format!("c{i}")).await;
        semaphores.push(Semaphore::new(&client, "pool", 3).unwrap());
    }
    let inside = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for task in 0..12 {
        let semaphore = semaphores[task % semaphores.len()].clone();
        let (inside, most) = (inside.clone(), most.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..15 {
                let permit = semaphore
                    .acquire(&LockOptions::default(), Duration::from_secs(30))
                    .await
                    .expect("acquire a permit");
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                assert!(now <= 3, "{now} holders of a 3-permit semaphore");
                let holders = semaphore.holders().await.unwrap().len();
                assert!(holders <= 3, "Redis lists {holders} holders");
                tokio::time::sleep(Duration::from_millis(2)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                assert_ne!(permit.release().await.unwrap(), ReleaseOutcome::NotHeld);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        most.load(Ordering::SeqCst),
        3,
        "the permits were never all in use"
    );
}

/// A holder that crashes (no release, no heartbeat) keeps its permit only until its TTL: a
/// waiter blocked on it gets the permit right after, without a release.
#[tokio::test]
async fn a_crashed_holders_permit_returns_after_its_ttl() {
    let redis = TestRedis::new();
    let client = redis.client("a").await;
    let semaphore = Semaphore::new(&client, "one", 1).unwrap();
    let ttl = Duration::from_millis(300);
    let crashed = semaphore
        .acquire(
            &LockOptions::with_ttl(ttl).heartbeat(Heartbeat::Off),
            Duration::ZERO,
        )
        .await
        .unwrap();
    let crashed_at = Instant::now();
    std::mem::forget(crashed); // as if the process died: no release is ever sent

    let other = redis.client("b").await;
    let permit = Semaphore::new(&other, "one", 1)
        .unwrap()
        .acquire(&LockOptions::default(), Duration::from_secs(5))
        .await
        .unwrap();
    let waited = crashed_at.elapsed();
    assert!(
        waited >= ttl - Duration::from_millis(20),
        "got it after {waited:?}"
    );
    assert!(
        waited < ttl + Duration::from_millis(250),
        "got it only after {waited:?}"
    );
    permit.release().await.unwrap();
}

/// A released permit goes straight to the oldest waiter, who wakes on the hand-off message.
#[tokio::test]
async fn a_released_permit_reaches_a_waiter_promptly() {
    let redis = TestRedis::new();
    let (a, b) = (redis.client("a").await, redis.client("b").await);
    let semaphore = Semaphore::new(&a, "r", 1).unwrap();
    let held = semaphore
        .try_acquire(&LockOptions::default())
        .await
        .unwrap()
        .unwrap();
    let waiting = Semaphore::new(&b, "r", 1).unwrap();
    let waiter = tokio::spawn(async move {
        let permit = waiting
            .acquire(&LockOptions::default(), Duration::from_secs(10))
            .await
            .unwrap();
        (Instant::now(), permit)
    });
    let raw = redis.raw().await;
    let queue = format!("{}:{{r}}:sem:queue", redis.prefix);
    wait_for("the waiter to queue", Duration::from_secs(2), || async {
        llen(&raw, &queue).await == 1
    })
    .await;
    let released_at = Instant::now();
    assert_eq!(held.release().await.unwrap(), ReleaseOutcome::HandedOff);
    let (acquired_at, permit) = waiter.await.unwrap();
    let switch = acquired_at.duration_since(released_at);
    assert!(
        switch < Duration::from_millis(50),
        "hand-off took {switch:?}"
    );
    assert!(permit.fence().get() > 1);
    permit.release().await.unwrap();
}

/// A waiter that runs out of time gets `Timeout` and leaves no queue entry behind; a zero-permit
/// semaphore and a too-short waiter lease are refused with `InvalidArgument`.
#[tokio::test]
async fn timeouts_and_bad_arguments_give_clear_errors() {
    let redis = TestRedis::new();
    let client = redis.client("a").await;
    let zero = Semaphore::new(&client, "r", 0).unwrap_err();
    assert!(
        matches!(&zero, LockError::InvalidArgument(m) if m.contains("at least 1 permit")),
        "{zero}"
    );
    assert!(matches!(
        Semaphore::new(&client, "r", 1)
            .unwrap()
            .with_waiter_lease(Duration::from_millis(1)),
        Err(LockError::InvalidArgument(_))
    ));
    let semaphore = Semaphore::new(&client, "r", 1).unwrap();
    let held = semaphore
        .try_acquire(&LockOptions::default())
        .await
        .unwrap()
        .unwrap();
    assert!(
        semaphore
            .try_acquire(&LockOptions::default())
            .await
            .unwrap()
            .is_none()
    );
    let started = Instant::now();
    let error = semaphore
        .acquire(&LockOptions::default(), Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(error, LockError::Timeout { .. }), "{error}");
    assert!(started.elapsed() < Duration::from_secs(1));
    let raw = redis.raw().await;
    assert_eq!(
        llen(&raw, &format!("{}:{{r}}:sem:queue", redis.prefix)).await,
        0
    );
    held.release().await.unwrap();
}
