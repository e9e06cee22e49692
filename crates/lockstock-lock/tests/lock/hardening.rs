//! The protocol holes of the hardening review (issue 12), each reproduced deterministically: the
//! exact Redis state is set up with plain commands, a stale hand-off is published by hand, a
//! "dead" waiter is a future that is never polled again (`mem::forget`: no clean-up runs).
//! Holes 2 (Redlock re-grant) and 6 (idempotent re-queue) have unit tests beside their code.

use std::time::Duration;

use lockstock_lock::{
    DEFAULT_WAITER_LEASE, FairLock, Heartbeat, LockClient, LockGuard, LockOptions, ReleaseOutcome,
    Result, RwLock, Semaphore,
};
use redis::AsyncCommands;

use redis::aio::ConnectionManager;
use tokio::task::JoinHandle;

use crate::helpers::{TestRedis, llen, wait_for};

/// The token and hand-off channel of the mutex waiter queued at `index` (its queue entry is
/// `token\nttl_ms\nexpires_ms\nchannel\nowner`).
async fn queued_waiter(redis: &TestRedis, resource: &str, index: isize) -> (String, String) {
    let mut raw = redis.raw().await;
    let entry: String = raw.lindex(redis.queue_key(resource), index).await.unwrap();
    let parts: Vec<&str> = entry.split('\n').collect();
    (parts[0].to_owned(), parts[3].to_owned())
}

/// Waits until the list at `key` holds `n` waiters.
async fn queued(raw: &ConnectionManager, key: &str, n: usize) {
    wait_for("the waiters to queue", Duration::from_secs(5), || async {
        llen(raw, key).await == n
    })
    .await;
}

/// Waits until the exclusive hold at `key` was extended past its hand-off's short TTL (to the
/// full 10 s asked for): the first extension came and succeeded.
async fn extended_to_full_ttl(raw: &ConnectionManager, key: &str) {
    wait_for(
        "the first extension to the full TTL",
        Duration::from_secs(2),
        || async {
            let mut raw = raw.clone();
            let pttl: i64 = raw.pttl(key).await.unwrap();
            pttl > 1000
        },
    )
    .await;
}

/// `client` waiting for the mutex on `r` (up to 10 s) in a spawned task.
fn spawn_mutex_waiter(client: LockClient, options: &LockOptions) -> JoinHandle<Result<LockGuard>> {
    let options = options.clone();
    tokio::spawn(async move { client.acquire("r", &options, Duration::from_secs(10)).await })
}

/// Hole 3: a semaphore permit handed over with the waiter's lease (3 s) as its TTL, for a TTL of
/// 200 s, must survive until its first extension: the safety deadline counts from the TTL
/// actually granted, not the full TTL's drift allowance (2 s, which put it before the extension).
#[tokio::test]
async fn a_handed_over_permit_with_a_long_ttl_survives_to_its_first_extension() {
    let redis = TestRedis::new();
    let raw = redis.raw().await;
    let client = redis.client("sem").await;
    let semaphore = Semaphore::new(&client, "s", 1).unwrap();
    let options = LockOptions::with_ttl(Duration::from_secs(200));
    let held = semaphore
        .acquire(&options, Duration::from_secs(1))
        .await
        .unwrap();
    let waiting = {
        let semaphore = semaphore.clone();
        let options = options.clone();
        tokio::spawn(async move { semaphore.acquire(&options, Duration::from_secs(10)).await })
    };
    let queue = format!("{}:{{s}}:sem:queue", redis.prefix);
    queued(&raw, &queue, 1).await;
    held.release().await.unwrap();
    let permit = waiting.await.unwrap().unwrap();
    assert!(!permit.is_lost(), "lost at once");

    // Handed over for one lease (3 s): the first extension is due a third of that later.
    let holders = format!("{}:{{s}}:sem:holders", redis.prefix);
    let token_expiry_far = || async {
        let mut raw = raw.clone();
        let top: Vec<(String, f64)> = raw.zrange_withscores(&holders, 0, 0).await.unwrap();
        let now: (u64, u64) = redis::cmd("TIME").query_async(&mut raw).await.unwrap();
        let now_ms = now.0 * 1000 + now.1 / 1000;
        top.first().is_some_and(|(_, expiry)| {
            *expiry as u64 > now_ms + DEFAULT_WAITER_LEASE.as_millis() as u64
        })
    };
    wait_for(
        "the first extension to the full TTL",
        Duration::from_secs(3),
        token_expiry_far,
    )
    .await;
    assert!(
        !permit.is_lost(),
        "the hand-off was lost before its first extension"
    );
    assert_eq!(permit.release().await.unwrap(), ReleaseOutcome::Released);
}

/// Hole 3, short lease: a fair lock handed over with a 100 ms lease (TTL 10 s, whose drift
/// allowance is 102 ms) must not be lost at once; it is extended to the full TTL.
#[tokio::test]
async fn a_fair_lock_handed_over_with_a_short_lease_is_extended_not_lost() {
    let redis = TestRedis::new();
    let raw = redis.raw().await;
    let client = redis.client("fair").await;
    let fair = FairLock::new(&client, "f")
        .unwrap()
        .with_waiter_lease(Duration::from_millis(100))
        .unwrap();
    let options = LockOptions::with_ttl(Duration::from_secs(10));
    let held = fair
        .acquire(&options, Duration::from_secs(1))
        .await
        .unwrap();
    let waiting = {
        let fair = fair.clone();
        let options = options.clone();
        tokio::spawn(async move { fair.acquire(&options, Duration::from_secs(10)).await })
    };
    wait_for("the waiter to queue", Duration::from_secs(5), || async {
        fair.queue_len().await.unwrap() == 1
    })
    .await;
    held.release().await.unwrap();
    let guard = waiting.await.unwrap().unwrap();
    let lock = format!("{}:{{f}}:fair:lock", redis.prefix);
    extended_to_full_ttl(&raw, &lock).await;
    assert!(
        !guard.is_lost(),
        "the hand-off was lost before its first extension"
    );
    assert_eq!(guard.release().await.unwrap(), ReleaseOutcome::Released);
}

/// Hole 3, read/write lock: a write lock handed over with a 100 ms lease (TTL 10 s) is extended
/// to the full TTL, not lost.
#[tokio::test]
async fn a_write_lock_handed_over_with_a_short_lease_is_extended_not_lost() {
    let redis = TestRedis::new();
    let raw = redis.raw().await;
    let client = redis.client("rw").await;
    let rw = RwLock::new(&client, "w")
        .unwrap()
        .with_waiter_lease(Duration::from_millis(100))
        .unwrap();
    let options = LockOptions::with_ttl(Duration::from_secs(10));
    let held = rw.write(&options, Duration::from_secs(1)).await.unwrap();
    let waiting = {
        let rw = rw.clone();
        let options = options.clone();
        tokio::spawn(async move { rw.write(&options, Duration::from_secs(10)).await })
    };
    queued(&raw, &format!("{}:{{w}}:rw:queue", redis.prefix), 1).await;
    held.release().await.unwrap();
    let guard = waiting.await.unwrap().unwrap();
    extended_to_full_ttl(&raw, &format!("{}:{{w}}:rw:writer", redis.prefix)).await;
    assert!(
        !guard.is_lost(),
        "the hand-off was lost before its first extension"
    );
    assert_eq!(guard.release().await.unwrap(), ReleaseOutcome::Released);
}

/// Hole 1: a hand-off message older than a server time the waiter has already seen (its later
/// registration call found the lock held by another) is stale: the hold it announced is gone. It
/// must be discarded, never turned into a guard; the waiter keeps waiting for a real hand-off.
#[tokio::test]
async fn a_stale_handoff_message_is_discarded_not_turned_into_a_guard() {
    let redis = TestRedis::new();
    let raw = redis.raw().await;
    let holder = redis.client("holder").await;
    let waiter_client = redis.client("waiter").await;
    let options = LockOptions::with_ttl(Duration::from_secs(10));
    let held = holder
        .acquire("r", &options, Duration::from_secs(1))
        .await
        .unwrap();

    let waiting = spawn_mutex_waiter(waiter_client, &options);
    // A fresh client listens before its first queued call, so once its entry is in the queue
    // it is registered for hand-offs and has seen the server's clock.
    queued(&raw, &redis.queue_key("r"), 1).await;
    let (token, channel) = queued_waiter(&redis, "r", 0).await;

    // A hand-off "at server time 1 ms" with a fence nobody was given: older than anything the
    // waiter saw, as after a pause in which the real hand-off expired and someone else took it.
    let mut conn = raw.clone();
    let _: i64 = conn
        .publish(&channel, format!("{token}\n999999\n1\n10000"))
        .await
        .unwrap();

    assert_eq!(held.release().await.unwrap(), ReleaseOutcome::HandedOff);
    let guard = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("waiter stuck")
        .unwrap()
        .unwrap();
    let stored = holder.inspect("r").await.unwrap().expect("held");
    assert_ne!(
        guard.fence().get(),
        999_999,
        "a stale hand-off became a guard"
    );
    assert_eq!(guard.fence().get(), stored.fence);
    assert_eq!(guard.token().to_string(), token);
    assert_eq!(guard.release().await.unwrap(), ReleaseOutcome::Released);
}

/// Hole 1, second half (found by the model in `tests/model/`): a hand-off message that is not
/// older than what the waiter has seen, but whose hold already ran out when it is read (the reply
/// that would have shown a later server time was lost), is discarded too: a guard born expired
/// is never handed out; the waiter keeps waiting for a real hand-off.
#[tokio::test]
async fn an_expired_handoff_message_is_discarded_not_turned_into_a_guard() {
    let redis = TestRedis::new();
    let raw = redis.raw().await;
    let holder = redis.client("holder").await;
    let waiter_client = redis.client("waiter").await;
    let options = LockOptions::with_ttl(Duration::from_secs(10));
    let held = holder
        .acquire("r", &options, Duration::from_secs(1))
        .await
        .unwrap();

    let waiting = spawn_mutex_waiter(waiter_client, &options);
    queued(&raw, &redis.queue_key("r"), 1).await;
    let (token, channel) = queued_waiter(&redis, "r", 0).await;

    // A hand-off at the server's current time (not older than anything the waiter saw) whose
    // hold has no time left: the announced hold is over by the time it is read.
    let mut conn = raw.clone();
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await.unwrap();
    let now_ms = secs * 1_000 + micros / 1_000;
    let _: i64 = conn
        .publish(&channel, format!("{token}\n999999\n{now_ms}\n0"))
        .await
        .unwrap();

    assert_eq!(held.release().await.unwrap(), ReleaseOutcome::HandedOff);
    let guard = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("waiter stuck")
        .unwrap()
        .unwrap();
    assert_ne!(
        guard.fence().get(),
        999_999,
        "an expired hand-off became a guard"
    );
    let stored = holder.inspect("r").await.unwrap().expect("held");
    assert_eq!(guard.fence().get(), stored.fence);
    assert_eq!(guard.release().await.unwrap(), ReleaseOutcome::Released);
}

/// Hole 7: a mutex waiter that died while queued (its future is never polled again and never
/// cleaned up) is handed the lock for at most its lease, not a whole TTL; the next waiter gets it
/// within about one lease.
#[tokio::test]
async fn a_dead_mutex_waiter_is_handed_the_lock_for_one_lease_at_most() {
    let redis = TestRedis::new();
    let raw = redis.raw().await;
    let holder = redis.client("holder").await;
    let dead_client = redis.client("dead").await;
    let next = redis.client("next").await;
    let options = LockOptions::with_ttl(Duration::from_secs(30));
    let held = holder
        .acquire("r", &options, Duration::from_secs(1))
        .await
        .unwrap();

    let queue = redis.queue_key("r");
    let mut dead = Box::pin(dead_client.acquire("r", &options, Duration::from_secs(60)));
    tokio::select! {
        _ = &mut dead => panic!("the waiter was granted while the lock was held"),
        () = queued(&raw, &queue, 1) => {}
    }
    std::mem::forget(dead); // never polled again, never cleaned up: as if its process died

    assert_eq!(held.release().await.unwrap(), ReleaseOutcome::HandedOff);
    let mut conn = raw.clone();
    let pttl: i64 = conn.pttl(redis.lock_key("r")).await.unwrap();
    assert!(
        pttl <= DEFAULT_WAITER_LEASE.as_millis() as i64,
        "the dead waiter was handed the lock for {pttl} ms, more than one waiter lease"
    );
    let guard = next
        .acquire("r", &options, DEFAULT_WAITER_LEASE + Duration::from_secs(2))
        .await
        .expect("the next waiter gets the lock within one lease");
    assert_eq!(guard.release().await.unwrap(), ReleaseOutcome::Released);
}

/// Hole 7, the live side: a mutex waiter renews its lease while it waits, so waiting many leases
/// keeps its place in line; the hand-off it then gets (granted for one lease) is extended to the
/// full TTL, not lost.
#[tokio::test]
async fn a_live_mutex_waiter_keeps_its_place_past_its_lease_and_extends_the_handoff() {
    let redis = TestRedis::new();
    let raw = redis.raw().await;
    let holder = redis.client("holder").await;
    let mut config = redis.config("waiter");
    config.waiter_lease = Duration::from_millis(100);
    let first = LockClient::connect(&redis.url, config.clone())
        .await
        .unwrap();
    let second = LockClient::connect(&redis.url, config).await.unwrap();
    let options = LockOptions::with_ttl(Duration::from_secs(10));
    let held = holder
        .acquire("r", &options, Duration::from_secs(1))
        .await
        .unwrap();

    let first_waiting = spawn_mutex_waiter(first, &options);
    queued(&raw, &redis.queue_key("r"), 1).await;
    // Five leases: a waiter that did not renew would have lost its place by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (first_token, _) = queued_waiter(&redis, "r", 0).await;
    let second_waiting = spawn_mutex_waiter(second, &options);
    queued(&raw, &redis.queue_key("r"), 2).await;
    assert_eq!(queued_waiter(&redis, "r", 0).await.0, first_token);

    assert_eq!(held.release().await.unwrap(), ReleaseOutcome::HandedOff);
    let guard = first_waiting.await.unwrap().unwrap();
    assert_eq!(guard.token().to_string(), first_token);
    extended_to_full_ttl(&raw, &redis.lock_key("r")).await;
    assert!(
        !guard.is_lost(),
        "the hand-off was lost before its first extension"
    );
    assert_eq!(guard.release().await.unwrap(), ReleaseOutcome::HandedOff);
    let next = second_waiting.await.unwrap().unwrap();
    assert_eq!(next.release().await.unwrap(), ReleaseOutcome::Released);
}

/// With the heartbeat off, a mutex hand-off (granted for the waiter's lease) is still extended
/// once to the TTL asked for, so it lasts one TTL as `Heartbeat::Off` promises.
#[tokio::test]
async fn a_handoff_without_heartbeat_is_claimed_for_the_full_ttl_once() {
    let redis = TestRedis::new();
    let raw = redis.raw().await;
    let holder = redis.client("holder").await;
    let mut config = redis.config("waiter");
    config.waiter_lease = Duration::from_millis(100);
    let waiter = LockClient::connect(&redis.url, config).await.unwrap();
    let options = LockOptions::with_ttl(Duration::from_secs(10)).heartbeat(Heartbeat::Off);
    let held = holder
        .acquire("r", &options, Duration::from_secs(1))
        .await
        .unwrap();
    let waiting = spawn_mutex_waiter(waiter, &options);
    queued(&raw, &redis.queue_key("r"), 1).await;
    assert_eq!(held.release().await.unwrap(), ReleaseOutcome::HandedOff);
    let guard = waiting.await.unwrap().unwrap();
    extended_to_full_ttl(&raw, &redis.lock_key("r")).await;
    // The server applies the extension before the client reads its reply and moves the guard's
    // deadline: wait for the client too.
    wait_for(
        "the guard to count its deadline from the extension",
        Duration::from_secs(2),
        || async { guard.remaining() > Duration::from_secs(5) },
    )
    .await;
    assert!(!guard.is_lost());
    assert_eq!(guard.release().await.unwrap(), ReleaseOutcome::Released);
}
