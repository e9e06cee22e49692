//! The guard's heartbeat, lost signal and hold-time alert.

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use lockstock_lock::{Heartbeat, LockClient, LockOptions, ReleaseOutcome};

use crate::{
    helpers::{TestRedis, wait_for},
    redis_server::RedisServer,
};

/// The heartbeat keeps a lock alive for well over 5× its TTL.
#[tokio::test]
async fn the_heartbeat_keeps_a_lock_alive_past_five_ttls() {
    let redis = TestRedis::new();
    let client = redis.client("a").await;
    let ttl = Duration::from_millis(200);
    let guard = client
        .try_acquire("r", &LockOptions::with_ttl(ttl))
        .await
        .unwrap()
        .unwrap();
    let held_since = Instant::now();
    while held_since.elapsed() < ttl * 6 {
        let info = client
            .inspect("r")
            .await
            .unwrap()
            .expect("lock expired despite the heartbeat");
        assert_eq!(info.fence, guard.fence().get());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!guard.is_lost());
    assert_eq!(guard.release().await.unwrap(), ReleaseOutcome::Released);
}

/// When the key is deleted behind the holder's back, the lost signal fires within about one
/// heartbeat period.
#[tokio::test]
async fn the_lost_signal_fires_when_the_key_is_deleted() {
    let redis = TestRedis::new();
    let client = redis.client("a").await;
    let period = Duration::from_millis(100);
    let guard = client
        .try_acquire(
            "r",
            &LockOptions::with_ttl(Duration::from_secs(3)).heartbeat(Heartbeat::Every(period)),
        )
        .await
        .unwrap()
        .unwrap();
    let mut raw = redis.raw().await;
    let _: () = redis::cmd("DEL")
        .arg(redis.lock_key("r"))
        .query_async(&mut raw)
        .await
        .unwrap();
    let deleted_at = Instant::now();
    tokio::time::timeout(period * 3, guard.lost().cancelled())
        .await
        .expect("lost signal did not fire");
    assert!(
        deleted_at.elapsed() <= period * 2,
        "took {:?}",
        deleted_at.elapsed()
    );
    assert_eq!(guard.release().await.unwrap(), ReleaseOutcome::NotHeld);
}

/// When Redis goes away, the lost signal fires by the local safety deadline: before the TTL
/// would have run out in Redis, without any answer from Redis.
#[tokio::test]
async fn the_lost_signal_fires_before_the_ttl_when_redis_is_unreachable() {
    let mut server = RedisServer::start();
    let redis = TestRedis::on(server.url());
    let client = redis.client("a").await;
    let ttl = Duration::from_millis(600);
    let guard = client
        .try_acquire(
            "r",
            &LockOptions::with_ttl(ttl).heartbeat(Heartbeat::Every(Duration::from_millis(150))),
        )
        .await
        .unwrap()
        .unwrap();
    server.stop();
    let stopped_at = Instant::now();
    tokio::time::timeout(ttl * 2, guard.lost().cancelled())
        .await
        .expect("lost signal did not fire");
    assert!(
        stopped_at.elapsed() < ttl,
        "lost fired {:?} after Redis stopped; TTL {ttl:?}",
        stopped_at.elapsed()
    );
    drop(guard);
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A lock held past `warn_after` logs a warning naming the resource and owner, again at each
/// further multiple of the threshold.
#[tokio::test]
async fn holding_past_the_threshold_logs_a_warning_at_each_multiple() {
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);

    let redis = TestRedis::new();
    let client: LockClient = redis.client("slow-worker").await;
    let guard = client
        .try_acquire(
            "r",
            &LockOptions::default().warn_after(Duration::from_millis(80)),
        )
        .await
        .unwrap()
        .unwrap();
    let count = || {
        String::from_utf8_lossy(&captured.0.lock().unwrap())
            .matches("held longer than the warning threshold")
            .count()
    };
    wait_for("two warnings", Duration::from_secs(2), || async {
        count() >= 2
    })
    .await;
    let text = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(text.contains("resource=r"), "{text}");
    assert!(text.contains("slow-worker"), "{text}");
    guard.release().await.unwrap();
}

/// With `max_hold`, a holder stops extending and loses the lock, as a wedged holder should.
#[tokio::test]
async fn max_hold_stops_renewal_and_the_lock_is_lost() {
    let redis = TestRedis::new();
    let client = redis.client("a").await;
    let guard = client
        .try_acquire(
            "r",
            &LockOptions::with_ttl(Duration::from_millis(150)).max_hold(Duration::from_millis(300)),
        )
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(2), guard.lost().cancelled())
        .await
        .expect("never lost");
    assert!(guard.held_for() >= Duration::from_millis(300));
    wait_for("the key to expire", Duration::from_secs(1), || async {
        !client.is_locked("r").await.unwrap()
    })
    .await;
}
