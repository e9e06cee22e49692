//! Fair lock: strict FIFO of arrival, dead and impatient waiters leave, prompt hand-off.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use lockstock_lock::{FairLock, Heartbeat, LockError, LockOptions, ReleaseOutcome};

use crate::helpers::{TestRedis, wait_for};

async fn queue_len(lock: &FairLock) -> usize {
    lock.queue_len().await.unwrap()
}

/// Invariant: FIFO order. Eight waiters on their own connections queue one after another behind
/// a holder; each takes the lock, records its number and releases: the record is 0..8 in order,
/// and every hand-off is prompt.
#[tokio::test]
async fn waiters_acquire_in_arrival_order() {
    let redis = TestRedis::new();
    let lock = FairLock::new(&redis.client("holder").await, "r").unwrap();
    let held = lock
        .try_acquire(&LockOptions::default())
        .await
        .unwrap()
        .unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for i in 0..8 {
        let mine = FairLock::new(&redis.client(&format!("w{i}")).await, "r").unwrap();
        let order = order.clone();
        waiters.push(tokio::spawn(async move {
            let guard = mine
                .acquire(&LockOptions::default(), Duration::from_secs(10))
                .await
                .unwrap();
            order.lock().unwrap().push((i, Instant::now()));
            guard.release().await.unwrap();
        }));
        wait_for("the waiter to queue", Duration::from_secs(2), || async {
            queue_len(&lock).await == i + 1
        })
        .await;
    }
    let released_at = Instant::now();
    assert_eq!(held.release().await.unwrap(), ReleaseOutcome::HandedOff);
    for waiter in waiters {
        waiter.await.unwrap();
    }
    let order = order.lock().unwrap().clone();
    let ids: Vec<usize> = order.iter().map(|(i, _)| *i).collect();
    assert_eq!(ids, (0..8).collect::<Vec<_>>());
    let total = order.last().unwrap().1.duration_since(released_at);
    assert!(
        total < Duration::from_millis(400),
        "8 hand-offs took {total:?}"
    );
}

/// When the holder dies with waiters queued, a newcomer arriving after its TTL ran out does not
/// take the free lock: the queued waiters go first, in order, then the newcomer.
#[tokio::test]
async fn a_newcomer_does_not_pass_waiters_left_by_an_expired_holder() {
    let redis = TestRedis::new();
    let lock = FairLock::new(&redis.client("holder").await, "r").unwrap();
    let ttl = Duration::from_millis(300);
    let crashed = lock
        .try_acquire(&LockOptions::with_ttl(ttl).heartbeat(Heartbeat::Off))
        .await
        .unwrap()
        .unwrap();
    std::mem::forget(crashed);
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..3 {
        let mine = FairLock::new(&redis.client(&format!("w{i}")).await, "r").unwrap();
        let order = order.clone();
        tasks.push(tokio::spawn(async move {
            let guard = mine
                .acquire(&LockOptions::default(), Duration::from_secs(10))
                .await
                .unwrap();
            order.lock().unwrap().push(format!("w{i}"));
            tokio::time::sleep(Duration::from_millis(10)).await;
            guard.release().await.unwrap();
        }));
        wait_for("the waiter to queue", Duration::from_secs(2), || async {
            queue_len(&lock).await == i + 1
        })
        .await;
    }
    // The newcomer arrives once the holder's key has expired (but before the waiters could have
    // noticed, in the worst case): it must queue behind them.
    wait_for(
        "the holder's TTL to run out",
        Duration::from_secs(2),
        || async {
            lock.inspect()
                .await
                .unwrap()
                .is_none_or(|info| info.owner.unwrap().id != "holder")
        },
    )
    .await;
    let newcomer = FairLock::new(&redis.client("newcomer").await, "r").unwrap();
    let guard = newcomer
        .acquire(&LockOptions::default(), Duration::from_secs(10))
        .await
        .unwrap();
    order.lock().unwrap().push("newcomer".to_owned());
    guard.release().await.unwrap();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        order.lock().unwrap().clone(),
        vec!["w0", "w1", "w2", "newcomer"]
    );
}

/// A waiter that dies while queued (its entry is never renewed again) blocks the queue only for
/// its lease; one that gives up at its deadline leaves at once. The waiter behind both gets the
/// lock once the holder releases.
#[tokio::test]
async fn dead_and_impatient_waiters_leave_the_queue() {
    let redis = TestRedis::new();
    let lease = Duration::from_millis(300);
    let lock = FairLock::new(&redis.client("holder").await, "r")
        .unwrap()
        .with_waiter_lease(lease)
        .unwrap();
    let held = lock
        .try_acquire(&LockOptions::default())
        .await
        .unwrap()
        .unwrap();

    // The dead waiter: its future is polled into the queue, then its task is frozen forever
    // (never renewed, never cancelled) — as a process that stopped would leave it.
    let dead = lock.clone();
    let frozen = tokio::spawn(async move {
        let options = LockOptions::default();
        let mut pending = Box::pin(dead.acquire(&options, Duration::from_secs(60)));
        let _ = tokio::time::timeout(Duration::from_millis(50), &mut pending).await;
        std::mem::forget(pending);
        std::future::pending::<()>().await;
    });
    wait_for(
        "the doomed waiter to queue",
        Duration::from_secs(2),
        || async { queue_len(&lock).await == 1 },
    )
    .await;

    let impatient = FairLock::new(&redis.client("impatient").await, "r").unwrap();
    let error = impatient
        .acquire(&LockOptions::default(), Duration::from_millis(150))
        .await
        .unwrap_err();
    assert!(matches!(error, LockError::Timeout { .. }), "{error}");

    let patient = FairLock::new(&redis.client("patient").await, "r")
        .unwrap()
        .with_waiter_lease(lease)
        .unwrap();
    let waiter = tokio::spawn(async move {
        patient
            .acquire(&LockOptions::default(), Duration::from_secs(10))
            .await
            .unwrap()
    });
    wait_for(
        "the patient waiter to queue",
        Duration::from_secs(2),
        || async { queue_len(&lock).await == 2 },
    )
    .await;
    let released_at = Instant::now();
    assert_eq!(held.release().await.unwrap(), ReleaseOutcome::HandedOff);
    let guard = waiter.await.unwrap();
    // The dead waiter, still inside its lease, may have been handed the lock: it keeps it for
    // one lease at most, then the patient waiter's next renewal (a third of its lease) takes it.
    let waited = released_at.elapsed();
    assert!(
        waited < lease * 2 + Duration::from_millis(300),
        "{waited:?}"
    );
    assert_eq!(
        lock.inspect().await.unwrap().unwrap().owner.unwrap().id,
        "patient"
    );
    guard.release().await.unwrap();
    frozen.abort();
}

/// Hand-off to the next waiter is prompt: from release to the waiter's grant well under the
/// fallback renewal period.
#[tokio::test]
async fn hand_off_is_prompt() {
    let redis = TestRedis::new();
    let lock = FairLock::new(&redis.client("a").await, "r").unwrap();
    let mut switches = Vec::new();
    for _ in 0..5 {
        let held = lock
            .try_acquire(&LockOptions::default())
            .await
            .unwrap()
            .unwrap();
        let waiting = FairLock::new(&redis.client("b").await, "r").unwrap();
        let waiter = tokio::spawn(async move {
            let guard = waiting
                .acquire(&LockOptions::default(), Duration::from_secs(10))
                .await
                .unwrap();
            (Instant::now(), guard)
        });
        wait_for("the waiter to queue", Duration::from_secs(2), || async {
            queue_len(&lock).await == 1
        })
        .await;
        let released_at = Instant::now();
        held.release().await.unwrap();
        let (at, guard) = waiter.await.unwrap();
        switches.push(at.duration_since(released_at));
        guard.release().await.unwrap();
    }
    switches.sort();
    assert!(switches[2] < Duration::from_millis(20), "{switches:?}");
}
